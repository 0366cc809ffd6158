package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeSource delivers frames, then fails with err (or, with block, waits for
// its context to end, as a stalled camera whose driver never answers).
type fakeSource struct {
	name   string
	frames int           // frames before failing; -1: forever
	every  time.Duration // time each frame takes
	err    error
	block  bool

	mu     sync.Mutex
	served int
	closed int
}

func (s *fakeSource) Next(ctx context.Context, f *Frame) error {
	if s.every > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(s.every):
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed > 0 {
		return ErrClosed
	}
	if s.frames < 0 || s.served < s.frames {
		s.served++
		f.Sequence = uint64(s.served)
		return nil
	}
	if s.block {
		s.mu.Unlock()
		<-ctx.Done()
		s.mu.Lock()
		return ctx.Err()
	}
	return s.err
}

func (s *fakeSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed++
	return nil
}

// opener hands out a script of open results and records when each open
// happened (synctest's clock).
type opener struct {
	mu      sync.Mutex
	results []any // *fakeSource or error; the last one repeats
	times   []time.Time
}

func (o *opener) open() (Source, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.times = append(o.times, time.Now())
	r := o.results[0]
	if len(o.results) > 1 {
		o.results = o.results[1:]
	}
	if err, ok := r.(error); ok {
		return nil, err
	}
	return r.(*fakeSource), nil
}

// recordingRand draws from a seeded generator and records each bound.
type recordingRand struct {
	r      *rand.Rand
	bounds []int64
	draws  []time.Duration
}

func newRecordingRand() *recordingRand { return &recordingRand{r: rand.New(rand.NewPCG(1, 2))} }

func (r *recordingRand) Int64N(n int64) int64 {
	v := r.r.Int64N(n)
	r.bounds = append(r.bounds, n)
	r.draws = append(r.draws, time.Duration(v))
	return v
}

func debugLogger(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

var errGone = fmt.Errorf("%w: /dev/video0: dequeue buffer: no such device", ErrNoDevice)

func TestReopeningRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		first := &fakeSource{name: "first", frames: 2, err: errGone}
		second := &fakeSource{name: "second", frames: 10, every: time.Second, err: errors.New("capture: EIO")} // runs 10 s, then fails
		third := &fakeSource{name: "third", frames: -1}
		openErr := fmt.Errorf("%w: open /dev/video0: no such file", ErrNoDevice)
		o := &opener{results: []any{first, openErr, openErr, openErr, openErr, second, third}}
		rnd := newRecordingRand()
		var logs bytes.Buffer
		r := Reopening(o.open, ReopenConfig{Base: time.Second, Cap: 8 * time.Second, Rand: rnd}, nil, debugLogger(&logs))
		defer r.Close()

		var f Frame
		next := func() {
			t.Helper()
			if err := r.Next(t.Context(), &f); err != nil {
				t.Fatalf("Next: %v", err)
			}
		}
		next()
		next()
		if st := r.Stats(); st != (ReopenStats{Opens: 1}) {
			t.Errorf("stats before the failure %+v", st)
		}
		failedAt := time.Now()
		next() // first fails; four failed opens; second opens
		if f.Sequence != 1 || first.closed != 1 {
			t.Fatalf("after recovery: sequence %d, first closed %d times", f.Sequence, first.closed)
		}
		// Full jitter: a wait before every attempt, drawn below a ceiling that
		// doubles from Base up to Cap.
		want := []int64{1e9 + 1, 2e9 + 1, 4e9 + 1, 8e9 + 1, 8e9 + 1}
		if fmt.Sprint(rnd.bounds) != fmt.Sprint(want) {
			t.Errorf("backoff bounds %v, want %v", rnd.bounds, want)
		}
		prev := failedAt
		for i, at := range o.times[1:] {
			if got := at.Sub(prev); got != rnd.draws[i] {
				t.Errorf("wait %d: %v, drawn %v", i, got, rnd.draws[i])
			}
			prev = at
		}
		if st := r.Stats(); st != (ReopenStats{Opens: 2, Reopens: 1, Failures: 1, OpenFailures: 4}) {
			t.Errorf("stats %+v", st)
		}
		down := o.times[5].Sub(failedAt).Round(time.Millisecond)
		for _, line := range []string{
			`level=WARN msg="capture: camera failed; reopening" err="capture: no such camera: /dev/video0: dequeue buffer: no such device"`,
			`level=WARN msg="capture: camera still not available" attempt=1 err="capture: no such camera: open /dev/video0: no such file"`,
			fmt.Sprintf(`level=INFO msg="capture: camera back after 5 attempts, down for %v" attempts=5`, down),
		} {
			if strings.Count(logs.String(), line) != 1 {
				t.Errorf("logs lack (once) %s\n%s", line, logs.String())
			}
		}
		if n := strings.Count(logs.String(), "level=WARN"); n != 2 {
			t.Errorf("%d warnings, want 2 (the failure, the first distinct open error): %s", n, logs.String())
		}

		// The second source runs 10 s (more than Cap), then fails: the waits
		// start over from Base.
		for range 9 {
			next()
		}
		rnd.bounds = nil
		next()
		if f.Sequence != 1 || third.served != 1 || second.closed != 1 {
			t.Errorf("third source: sequence %d served %d; second closed %d", f.Sequence, third.served, second.closed)
		}
		if fmt.Sprint(rnd.bounds) != fmt.Sprint([]int64{1e9 + 1}) {
			t.Errorf("after a stable run, bounds %v, want [1s]", rnd.bounds)
		}
		if st := r.Stats(); st.Reopens != 2 || st.Failures != 2 || st.Opens != 3 {
			t.Errorf("stats %+v", st)
		}
	})
}

func TestReopeningBackoffKeepsGrowingWhileFlapping(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Each source delivers one frame, then fails at once.
		var results []any
		for i := range 6 {
			results = append(results, &fakeSource{name: fmt.Sprint(i), frames: 1, err: errGone})
		}
		o := &opener{results: results}
		rnd := newRecordingRand()
		r := Reopening(o.open, ReopenConfig{Base: time.Second, Cap: 4 * time.Second, Rand: rnd}, nil, debugLogger(new(bytes.Buffer)))
		defer r.Close()
		var f Frame
		for range 6 {
			if err := r.Next(t.Context(), &f); err != nil {
				t.Fatal(err)
			}
		}
		if want := []int64{1e9 + 1, 2e9 + 1, 4e9 + 1, 4e9 + 1, 4e9 + 1}; fmt.Sprint(rnd.bounds) != fmt.Sprint(want) {
			t.Errorf("bounds %v, want %v: a source that fails at once must not reset the backoff", rnd.bounds, want)
		}
	})
}

func TestReopeningFirstOpenFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{frames: -1}
		o := &opener{results: []any{errors.New("capture: busy"), src}}
		var logs bytes.Buffer
		r := Reopening(o.open, ReopenConfig{Base: 100 * time.Millisecond}, nil, debugLogger(&logs))
		defer r.Close()
		var f Frame
		if err := r.Next(t.Context(), &f); err != nil {
			t.Fatal(err)
		}
		if len(o.times) != 2 {
			t.Fatalf("opens at %v", o.times)
		}
		if w := o.times[1].Sub(o.times[0]); w < 0 || w > 100*time.Millisecond {
			t.Errorf("waited %v between the first attempts, want 0..100ms", w)
		}
		if !strings.Contains(logs.String(), `msg="capture: camera not available; retrying" err="capture: busy"`) ||
			!strings.Contains(logs.String(), "camera back after 2 attempts") {
			t.Errorf("logs:\n%s", logs.String())
		}
		if st := r.Stats(); st != (ReopenStats{Opens: 1, Reopens: 1, OpenFailures: 1}) {
			t.Errorf("stats %+v", st)
		}
	})
}

func TestReopeningCancelDuringBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := &opener{results: []any{errors.New("capture: absent")}}
		r := Reopening(o.open, ReopenConfig{Base: time.Hour, Cap: time.Hour}, nil, debugLogger(new(bytes.Buffer)))
		ctx, cancel := context.WithCancel(t.Context())
		start := time.Now()
		errc := make(chan error)
		go func() {
			var f Frame
			errc <- r.Next(ctx, &f)
		}()
		synctest.Wait() // Next is waiting to retry
		if st := r.Stats(); !st.Down || st.OpenFailures != 1 {
			t.Errorf("stats while down %+v", st)
		}
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("Next = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("Next returned %v after the cancel, want at once", d)
		}

		// Close ends a wait too.
		go func() {
			var f Frame
			errc <- r.Next(t.Context(), &f)
		}()
		synctest.Wait()
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Errorf("Next during Close = %v, want ErrClosed", err)
		}
		var f Frame
		if err := r.Next(t.Context(), &f); !errors.Is(err, ErrClosed) {
			t.Errorf("Next after Close = %v", err)
		}
		if err := r.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

func TestReopeningStallWatchdog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stuck := &fakeSource{frames: 1, block: true}
		good := &fakeSource{frames: -1}
		o := &opener{results: []any{stuck, good}}
		rnd := newRecordingRand()
		var logs bytes.Buffer
		r := Reopening(o.open, ReopenConfig{Base: time.Second, Stall: 3 * time.Second, Rand: rnd}, nil, debugLogger(&logs))
		var f Frame
		if err := r.Next(t.Context(), &f); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Second) // the consumer is slow: no stall while it is not waiting
		start := time.Now()
		if err := r.Next(t.Context(), &f); err != nil {
			t.Fatal(err)
		}
		if got, want := time.Since(start), 3*time.Second+rnd.draws[0]; got != want {
			t.Errorf("recovered after %v, want the 3 s stall plus the %v wait", got, rnd.draws[0])
		}
		if st := r.Stats(); st.Stalls != 1 || st.Failures != 1 || st.Reopens != 1 || stuck.closed != 1 || good.served != 1 {
			t.Errorf("stats %+v, stuck closed %d, good served %d", st, stuck.closed, good.served)
		}
		if !strings.Contains(logs.String(), "no frame for 3s: capture: camera stalled") {
			t.Errorf("logs:\n%s", logs.String())
		}
		// Frames keep flowing without further stalls.
		for range 5 {
			if err := r.Next(t.Context(), &f); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if st := r.Stats(); st.Stalls != 1 {
			t.Errorf("stats %+v", st)
		}
		// The watchdog goroutine ends with Close (synctest fails on a leak).
	})
}

func TestReopeningPassesThrough(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{frames: 1, err: ErrEndOfStream}
		o := &opener{results: []any{src}}
		r := Reopening(o.open, ReopenConfig{}, nil, debugLogger(new(bytes.Buffer)))
		defer r.Close()
		var f Frame
		if err := r.Next(t.Context(), &f); err != nil {
			t.Fatal(err)
		}
		if err := r.Next(t.Context(), &f); !errors.Is(err, ErrEndOfStream) {
			t.Errorf("Next = %v, want ErrEndOfStream passed through", err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := r.Next(ctx, &f); !errors.Is(err, context.Canceled) {
			t.Errorf("Next with a cancelled context = %v", err)
		}
		if st := r.Stats(); st.Failures != 0 || st.Opens != 1 || len(o.times) != 1 {
			t.Errorf("stats %+v, %d opens: end of stream and cancellation are not failures", st, len(o.times))
		}
	})
}

// TestReopeningDoesNotAllocate checks the steady state with the watchdog on:
// the child context is made once per caller context, not per frame.
func TestReopeningDoesNotAllocate(t *testing.T) {
	src := &fakeSource{frames: -1}
	r := Reopening(func() (Source, error) { return src, nil }, ReopenConfig{Stall: time.Hour}, nil, debugLogger(new(bytes.Buffer)))
	defer r.Close()
	ctx := context.Background()
	var f Frame
	if err := r.Next(ctx, &f); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if err := r.Next(ctx, &f); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Reopener.Next: %v allocations per frame", n)
	}
}

var _ Source = (*Reopener)(nil)

// TestReopeningAbsent: a caller that found the camera absent and said so
// hands the error over: the Reopener waits before its first attempt, logs
// no second warning for the same error, and logs the camera's arrival
// (counting the caller's attempt).
func TestReopeningAbsent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		absent := fmt.Errorf("%w: open /dev/video0: no such file or directory", ErrNoDevice)
		cam := &fakeSource{name: "cam", frames: -1}
		o := &opener{results: []any{absent, absent, cam}}
		var logs bytes.Buffer
		start := time.Now()
		r := Reopening(o.open, ReopenConfig{Base: time.Second, Cap: 4 * time.Second, Absent: absent, Rand: newRecordingRand()}, nil, debugLogger(&logs))
		defer r.Close()
		if !r.Stats().Down {
			t.Error("a Reopener told the camera is absent is not down")
		}
		var f Frame
		if err := r.Next(context.Background(), &f); err != nil {
			t.Fatal(err)
		}
		if len(o.times) != 3 {
			t.Fatalf("%d opens, want 3", len(o.times))
		}
		if !o.times[0].After(start) {
			t.Error("the first attempt did not wait: the caller had just tried")
		}
		if n := strings.Count(logs.String(), "level=WARN"); n != 0 {
			t.Errorf("%d warnings for the absence the caller reported:\n%s", n, logs.String())
		}
		if !strings.Contains(logs.String(), "camera back after 4 attempts") {
			t.Errorf("no recovery line:\n%s", logs.String())
		}
	})
}
