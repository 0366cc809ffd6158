package mqttlink

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keyframe-cam/keyframe/internal/backoff/backofftest"
	"github.com/keyframe-cam/keyframe/internal/clock"
)

// fakeSession is a connection that is lost after upFor (never if upFor < 0).
type fakeSession struct {
	lost   chan error
	closes int
	mu     *sync.Mutex
}

func (s *fakeSession) Lost() <-chan error { return s.lost }
func (s *fakeSession) Close() {
	s.mu.Lock()
	s.closes++
	s.mu.Unlock()
}

// dialStep is one scripted dial: an error, or a session up for upFor.
type dialStep struct {
	err   error
	upFor time.Duration
}

func fail(msg string) dialStep           { return dialStep{err: errors.New(msg)} }
func up(d time.Duration) dialStep        { return dialStep{upFor: d} }
func upForever() dialStep                { return dialStep{upFor: -1} }
func failN(n int, msg string) []dialStep { return slices.Repeat([]dialStep{fail(msg)}, n) }

// scriptDial answers dials from a script and records when each happened.
type scriptDial struct {
	mu       sync.Mutex
	steps    []dialStep
	at       []time.Time
	sessions []*fakeSession
	last     chan struct{} // closed when the last step was dialled
}

func newScript(steps ...[]dialStep) *scriptDial {
	return &scriptDial{steps: slices.Concat(steps...), last: make(chan struct{})}
}

func (d *scriptDial) dial(ctx context.Context) (Session, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	i := len(d.at)
	if i >= len(d.steps) {
		panic("dialled past the script")
	}
	d.at = append(d.at, time.Now())
	if i == len(d.steps)-1 {
		close(d.last)
	}
	st := d.steps[i]
	if st.err != nil {
		return nil, st.err
	}
	s := &fakeSession{lost: make(chan error, 1), mu: &d.mu}
	d.sessions = append(d.sessions, s)
	if st.upFor >= 0 {
		time.AfterFunc(st.upFor, func() { s.lost <- errors.New("broker went away") })
	}
	return s, nil
}

// runScript runs a Redialer over the script until the last step, then
// stops it, and returns the dial times.
func runScript(t *testing.T, r *Redialer, d *scriptDial) []time.Time {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, d.dial) }()
	<-d.last
	synctest.Wait()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v, want context.Canceled", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, s := range d.sessions {
		if s.closes != 1 {
			t.Errorf("session %d closed %d times, want 1", i, s.closes)
		}
	}
	return slices.Clone(d.at)
}

// checkSchedule checks the asked ceilings and that each gap between dials is
// the time the previous session was up plus exactly the drawn delay.
func checkSchedule(t *testing.T, steps []dialStep, at []time.Time, rnd *backofftest.Rand, wantCeil []time.Duration) {
	t.Helper()
	asked, drawn := rnd.Asked(), rnd.Drawn()
	var gotCeil []time.Duration
	for _, n := range asked {
		gotCeil = append(gotCeil, time.Duration(n-1))
	}
	if !slices.Equal(gotCeil, wantCeil) {
		t.Fatalf("jitter ceilings asked of Rand = %v, want %v", gotCeil, wantCeil)
	}
	if len(at) != len(drawn)+1 {
		t.Fatalf("%d dials for %d drawn delays", len(at), len(drawn))
	}
	allZero := true
	for i := 1; i < len(at); i++ {
		want := time.Duration(drawn[i-1])
		if want != 0 {
			allZero = false
		}
		if st := steps[i-1]; st.err == nil {
			want += st.upFor
		}
		if got := at[i].Sub(at[i-1]); got != want {
			t.Errorf("gap before dial %d = %v, want %v (up time + drawn delay)", i, got, want)
		}
	}
	if allZero {
		t.Error("every drawn delay was 0: the schedule test proves nothing")
	}
}

func TestRedialerDelaysAreFullJitterOverTheWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rnd := backofftest.Seeded(42)
		r := NewRedialer(RedialConfig{
			Schedule: Schedule{BackoffBase: time.Second, BackoffCap: 8 * time.Second,
				RetryWindow: 3 * time.Second, QuickRetry: 500 * time.Millisecond, StableAfter: time.Minute},
			Clock: clock.System{}, Rand: rnd,
		})
		d := newScript(
			failN(5, "connection refused"),   // start-up outage
			[]dialStep{up(10 * time.Second)}, // not stable: the count is kept
			failN(1, "connection refused"),
			[]dialStep{up(61 * time.Second)}, // stable: the count is reset
			failN(1, "connection refused"),
			[]dialStep{upForever()},
		)
		at := runScript(t, r, d)
		s := time.Second
		checkSchedule(t, d.steps, at, rnd, []time.Duration{
			s / 2, 3 * s, 4 * s, 8 * s, 8 * s, // a quick retry, then max(RetryWindow, 2^n), capped
			8 * s, 8 * s, // loss after 10 s: the kept count (capped), no quick retry
			s / 2, 3 * s, // loss after a stable minute: count reset, a quick retry again
		})
		st := r.Stats()
		if st.Connects != 3 || st.Losses != 2 || st.Failures != 7 || st.Connected {
			t.Errorf("stats = %+v, want 3 connects, 2 losses, 7 failures, not connected after Run", st)
		}
	})
}

func TestRedialerFlappingConnectionBacksOffFurther(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rnd := backofftest.Seeded(7)
		r := NewRedialer(RedialConfig{
			Schedule: Schedule{BackoffBase: time.Second, BackoffCap: time.Minute,
				RetryWindow: 3 * time.Second, QuickRetry: 500 * time.Millisecond, StableAfter: time.Minute},
			Clock: clock.System{}, Rand: rnd,
		})
		d := newScript(
			slices.Repeat([]dialStep{up(time.Second)}, 5), // accepted, dropped at once
			[]dialStep{up(2 * time.Minute)},
			[]dialStep{upForever()},
		)
		at := runScript(t, r, d)
		s := time.Second
		checkSchedule(t, d.steps, at, rnd, []time.Duration{
			s / 2, 3 * s, 4 * s, 8 * s, 16 * s, // a quick retry, then each loss: max(RetryWindow, growing ceiling)
			s / 2, // after a stable connection: a quick retry again
		})
	})
}

func TestRedialerTwoClientsDoNotRetryInLockStep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ats [2][]time.Time
		for i, seed := range []uint64{1, 2} {
			r := NewRedialer(RedialConfig{Clock: clock.System{}, Rand: backofftest.Seeded(seed)})
			ats[i] = runScript(t, r, newScript(failN(4, "refused"), []dialStep{upForever()}))
		}
		same := 0
		for i := 1; i < len(ats[0]); i++ {
			if ats[0][i].Sub(ats[0][0]) == ats[1][i].Sub(ats[1][0]) {
				same++
			}
		}
		if same == len(ats[0])-1 {
			t.Errorf("two clients with different random sources retried at the same offsets: %v", ats)
		}
	})
}

// logRecords captures log records.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r)
	return nil
}
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecords) WithGroup(string) slog.Handler      { return l }

// count returns how many records contain substr in their message.
func (l *logRecords) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.recs {
		if strings.Contains(r.Message, substr) {
			n++
		}
	}
	return n
}

func TestRedialerLogsLossAndRecoveryOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := &logRecords{}
		r := NewRedialer(RedialConfig{
			Name: "test broker", Clock: clock.System{}, Rand: backofftest.Seeded(3), Logger: slog.New(logs),
		})
		d := newScript(
			failN(4, "connection refused"),
			failN(3, "tls: bad certificate"),
			[]dialStep{up(time.Hour)}, // recovery, then one loss
			failN(6, "connection refused"),
			[]dialStep{upForever()},
		)
		runScript(t, r, d)
		for msg, want := range map[string]int{
			"cannot connect to test broker":  3, // one per distinct error per outage: refused, bad cert; refused again after the loss
			"connected to test broker again": 2,
			"lost; will reconnect":           1,
		} {
			if got := logs.count(msg); got != want {
				t.Errorf("%d log lines with %q, want %d", got, msg, want)
			}
		}
	})
}
