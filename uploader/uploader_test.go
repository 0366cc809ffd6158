package uploader

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keyframe-cam/keyframe/internal/backoff"
	"github.com/keyframe-cam/keyframe/internal/backoff/backofftest"
	"github.com/keyframe-cam/keyframe/internal/clock"
)

type attempt struct {
	at  time.Time
	seq uint64
	err error
}

// fakeTransport answers each attempt with script(seq, n), n counting that
// record's attempts from 1.
type fakeTransport struct {
	script func(seq uint64, n int) error

	mu       sync.Mutex
	attempts []attempt
	perSeq   map[uint64]int
}

func (f *fakeTransport) Send(ctx context.Context, r Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.perSeq == nil {
		f.perSeq = map[uint64]int{}
	}
	if want := testRecord(r.Seq, len(r.Data)); !slices.Equal(r.Data, want.Data) {
		return errors.New("fake transport: record data differs from what was spooled")
	}
	f.perSeq[r.Seq]++
	err := f.script(r.Seq, f.perSeq[r.Seq])
	f.attempts = append(f.attempts, attempt{at: time.Now(), seq: r.Seq, err: err})
	return err
}

func (f *fakeTransport) Attempts() []attempt {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.attempts)
}

func (f *fakeTransport) Count(seq uint64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.perSeq[seq]
}

// gaps returns the time between consecutive attempts.
func gaps(as []attempt) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(as); i++ {
		out = append(out, as[i].at.Sub(as[i-1].at))
	}
	return out
}

var errRefused = errors.New("dial tcp 127.0.0.1:8417: connect: connection refused")

// failFirst fails each record's first n attempts with err.
func failFirst(n int, err error) func(uint64, int) error {
	return func(_ uint64, k int) error {
		if k <= n {
			return err
		}
		return nil
	}
}

// harness runs an Uploader inside the current synctest bubble.
type harness struct {
	t    *testing.T
	dir  string
	sp   *Spool
	tr   *fakeTransport
	up   *Uploader
	logs *logBuffer
	stop func()
}

// noLimit is a Rate with no pacing, so delays measured are the backoff's.
const noLimit = 2e9

func testConfig() Config {
	return Config{
		BackoffBase:   time.Second,
		BackoffCap:    5 * time.Minute,
		RetryWindow:   30 * time.Second,
		QuickRetry:    2 * time.Second,
		RetryAfterCap: 10 * time.Minute,
		StableAfter:   time.Minute,
		Rate:          noLimit,
	}
}

func start(t *testing.T, cfg Config, rnd backoff.Rand, script func(uint64, int) error, seqs ...uint64) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), tr: &fakeTransport{script: script}, logs: &logBuffer{}}
	h.sp = openSpool(t, SpoolConfig{Dir: h.dir})
	for _, s := range seqs {
		mustPut(t, h.sp, testRecord(s, 64))
	}
	h.up = New(cfg, h.sp, h.tr, clock.System{}, rnd, newLogger(h.logs))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.up.Run(ctx) }()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		})
	}
	t.Cleanup(h.stop) // also when a check fails early
	return h
}

// settle lets the bubble's clock run far ahead, then waits for the loop to
// block (idle on Notify, or in a long backoff).
func settle(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func TestUploaderBackoffSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.BackoffCap = 10 * time.Second
		cfg.RetryWindow = 3 * time.Second
		rnd := backofftest.Ceil()
		h := start(t, cfg, rnd, failFirst(7, errRefused), 1)
		settle(time.Hour)
		h.stop()

		as := h.tr.Attempts()
		if len(as) != 8 || as[7].err != nil {
			t.Fatalf("%d attempts, want 7 failures then a success", len(as))
		}
		// First retry: the quick one (a refused connection after a stable
		// period); then full jitter at its ceiling, never below the window:
		// max(3s, 2s), 4s, 8s, then Cap.
		want := []time.Duration{2, 3, 4, 8, 10, 10, 10}
		for i := range want {
			want[i] *= time.Second
		}
		if got := gaps(as); !slices.Equal(got, want) {
			t.Fatalf("retry delays = %v, want %v", got, want)
		}
		st := h.up.Stats()
		if st.Sent != 1 || st.Failures != 7 || st.Backoff != 7 || !strings.Contains(st.LastError, "connection refused") {
			t.Fatalf("Stats = %+v", st)
		}
		if len(h.sp.Pending()) != 0 {
			t.Fatal("record not removed after it was sent")
		}
		// Each distinct error logged once, the recovery once.
		if n := h.logs.Count("upload failed"); n != 1 {
			t.Fatalf("the same error was logged %d times, want once:\n%s", n, h.logs)
		}
		if n := h.logs.Count("receiver reachable again after 7 failures"); n != 1 {
			t.Fatalf("recovery logged %d times, want once:\n%s", n, h.logs)
		}
	})
}

func TestUploaderZeroJitterRetriesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, testConfig(), backofftest.Zero(), failFirst(5, errRefused), 1)
		settle(time.Hour)
		h.stop()
		as := h.tr.Attempts()
		if len(as) != 6 {
			t.Fatalf("%d attempts, want 6", len(as))
		}
		for i, g := range gaps(as) {
			if g != 0 {
				t.Fatalf("gap %d = %v with the smallest draws, want 0", i, g)
			}
		}
	})
}

// Every outage's retry is drawn over [0, RetryWindow] when the receiver
// answered with a failure (no quick retry: it said it is busy).
func TestUploaderOutageRetryIsRandom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 300
		var all []uint64
		for s := uint64(1); s <= n; s++ {
			all = append(all, s)
		}
		rnd := backofftest.Seeded(7)
		// Each record fails once, then goes through: n separate outages.
		// The records follow each other with no stable period, so the
		// count keeps growing: the cap keeps the ceiling at the window.
		busy := &StatusError{Code: 503, Reason: "busy"}
		cfg := testConfig()
		cfg.BackoffCap = cfg.RetryWindow
		h := start(t, cfg, rnd, failFirst(1, busy), all...)
		settle(24 * time.Hour)
		h.stop()

		as := h.tr.Attempts()
		if len(as) != 2*n {
			t.Fatalf("%d attempts, want %d", len(as), 2*n)
		}
		asked, drawn := rnd.Asked(), rnd.Drawn()
		if len(asked) != n {
			t.Fatalf("%d random draws, want one per outage (%d)", len(asked), n)
		}
		var lo, hi time.Duration = time.Hour, 0
		var buckets [6]int
		for i := 0; i < n; i++ {
			if asked[i] != int64(30*time.Second)+1 {
				t.Fatalf("outage %d drew from [0, %v), want [0, 30s]", i, time.Duration(asked[i]))
			}
			fail, retry := as[2*i], as[2*i+1]
			if fail.seq != retry.seq || fail.err == nil || retry.err != nil {
				t.Fatalf("attempts %d,%d are not a failure and its retry", 2*i, 2*i+1)
			}
			d := retry.at.Sub(fail.at)
			if d != time.Duration(drawn[i]) {
				t.Fatalf("outage %d waited %v, drew %v", i, d, time.Duration(drawn[i]))
			}
			lo, hi = min(lo, d), max(hi, d)
			buckets[int(d/(5*time.Second))%6]++
		}
		if lo > 2*time.Second || hi < 28*time.Second {
			t.Fatalf("first retries span [%v, %v], want most of [0, 30s]", lo, hi)
		}
		for i, c := range buckets {
			if c < n/12 {
				t.Fatalf("first retries not spread: %v (bucket %d)", buckets, i)
			}
		}
		if n := h.logs.Count("receiver reachable again after 1 failures"); n != 300 {
			t.Fatalf("recovery logged %d times, want once per outage", n)
		}
	})
}

// A failure with no answer after a stable period is retried within
// QuickRetry; if that fails too the outage's window applies; once the
// receiver has been fine for StableAfter, the next such failure is retried
// quickly again. A receiver's failure answer is never retried quickly.
func TestUploaderQuickRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		script := func(seq uint64, n int) error {
			switch {
			case seq == 1 && n <= 2, seq == 2 && n == 1:
				return errRefused
			case seq == 3 && n == 1:
				return &StatusError{Code: 500, Reason: "oops"}
			}
			return nil
		}
		rnd := backofftest.Ceil()
		h := start(t, testConfig(), rnd, script, 1)
		settle(time.Hour) // record 1: quick 2s, then the window 30s
		mustPut(t, h.sp, testRecord(2, 64))
		settle(time.Hour) // record 2, after an hour of quiet: quick again
		time.Sleep(2 * time.Hour)
		mustPut(t, h.sp, testRecord(3, 64))
		settle(time.Hour) // record 3, answered 500: the window
		h.stop()
		var got []time.Duration
		for _, a := range rnd.Asked() {
			got = append(got, time.Duration(a-1))
		}
		want := []time.Duration{2 * time.Second, 30 * time.Second, 2 * time.Second, 30 * time.Second}
		if !slices.Equal(got, want) {
			t.Fatalf("retry ceilings %v, want %v", got, want)
		}
		if st := h.up.Stats(); st.Sent != 3 || st.Failures != 4 {
			t.Fatalf("Stats = %+v", st)
		}
	})
}

func TestUploaderRetryAfter(t *testing.T) {
	for _, code := range []int{429, 503} {
		for _, c := range []struct {
			name          string
			ra            time.Duration
			rnd           func() *backofftest.Rand
			first, second time.Duration // the waits before the two retries
		}{
			{"honoured", 45 * time.Second, backofftest.Zero, 45 * time.Second, 45 * time.Second},
			{"honoured over the jitter", 45 * time.Second, backofftest.Ceil, 45 * time.Second, 45 * time.Second},
			{"capped", 3 * time.Hour, backofftest.Zero, 10 * time.Minute, 10 * time.Minute},
			// The jitter (over the 30 s window: an answer is not retried
			// quickly) wins when larger.
			{"smaller than the jitter", time.Second, backofftest.Ceil, 30 * time.Second, 30 * time.Second},
		} {
			t.Run(strconv.Itoa(code)+"/"+c.name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					busy := &StatusError{Code: code, Reason: "busy", RetryAfter: c.ra}
					h := start(t, testConfig(), c.rnd(), failFirst(2, busy), 1)
					settle(24 * time.Hour)
					h.stop()
					as := h.tr.Attempts()
					if len(as) != 3 || as[2].err != nil {
						t.Fatalf("%d attempts, want 2 refusals then success", len(as))
					}
					if g := gaps(as); g[0] != c.first || g[1] != c.second {
						t.Fatalf("retries after %v, want [%v %v]", g, c.first, c.second)
					}
				})
			})
		}
	}
}

// The failure count survives successes until they have lasted StableAfter
// (or until StableAfter passed with no failure since the first success).
func TestUploaderResetsOnlyAfterStablePeriod(t *testing.T) {
	// Record 1 fails 3 times, then goes through at t0. More records may
	// succeed at given times after t0 (with the backoff count expected then).
	// Record 2, put at put2, fails twice: the wait before its second retry
	// shows whether the count was reset (2 s) or kept (Base·2^4 = 16 s).
	type success struct {
		at      time.Duration
		backoff int
	}
	for _, c := range []struct {
		name   string
		extra  []success
		put2   time.Duration
		second time.Duration
	}{
		{"not yet stable", nil, 30 * time.Second, 16 * time.Second},
		{"successes not long enough", []success{{20 * time.Second, 3}, {59 * time.Second, 3}}, 59*time.Second + time.Millisecond, 16 * time.Second},
		{"stable by successes", []success{{20 * time.Second, 3}, {61 * time.Second, 0}}, 62 * time.Second, 2 * time.Second},
		{"quiet just under StableAfter", nil, 59 * time.Second, 16 * time.Second},
		{"quiet for StableAfter", nil, 61 * time.Second, 2 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fails := map[uint64]int{1: 3, 2: 2}
				script := func(seq uint64, n int) error {
					if n <= fails[seq] {
						return errRefused
					}
					return nil
				}
				cfg := testConfig()
				cfg.RetryWindow = time.Second // below the ceilings: they show the count
				h := start(t, cfg, backofftest.Ceil(), script, 1)
				settle(40 * time.Second) // record 1: 2s (quick) + 2s + 4s, then sent at t0 = 8s
				if st := h.up.Stats(); st.Sent != 1 || st.Backoff != 3 {
					t.Fatalf("after record 1: %+v, want sent with 3 failures counted", st)
				}
				t0 := h.tr.Attempts()[3].at
				seq := uint64(10)
				for _, s := range c.extra {
					time.Sleep(time.Until(t0.Add(s.at)))
					mustPut(t, h.sp, testRecord(seq, 64))
					synctest.Wait()
					if h.tr.Count(seq) != 1 {
						t.Fatalf("record %d not sent at once", seq)
					}
					if st := h.up.Stats(); st.Backoff != s.backoff {
						t.Fatalf("after a success at t0+%v: backoff count %d, want %d", s.at, st.Backoff, s.backoff)
					}
					seq++
				}
				time.Sleep(time.Until(t0.Add(c.put2)))
				mustPut(t, h.sp, testRecord(2, 64))
				settle(time.Hour)
				h.stop()

				var rec2 []attempt
				for _, a := range h.tr.Attempts() {
					if a.seq == 2 {
						rec2 = append(rec2, a)
					}
				}
				if len(rec2) != 3 {
					t.Fatalf("record 2: %d attempts, want 3", len(rec2))
				}
				g := gaps(rec2)
				// Reset: a quick retry (2s), then Base·2 = 2s. Kept: the
				// count goes on from 3: 8s, then 16s.
				wantFirst := 8 * time.Second
				if c.second == 2*time.Second {
					wantFirst = 2 * time.Second
				}
				if g[0] != wantFirst {
					t.Fatalf("record 2's first retry after %v, want %v", g[0], wantFirst)
				}
				if g[1] != c.second {
					t.Fatalf("record 2's second retry after %v, want %v", g[1], c.second)
				}
			})
		})
	}
}

func TestUploaderQuarantinesPermanentRejections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		replies := map[uint64]*StatusError{
			1: {Code: 403, Reason: "unknown device"},
			2: {Code: 409, Reason: "replay: sequence 2 already seen"},
			3: {Code: 422, Reason: "media hash mismatch"},
			5: {Code: 400, Reason: "malformed bundle"},
		}
		script := func(seq uint64, n int) error {
			if e, ok := replies[seq]; ok {
				return e
			}
			if seq == 4 && n <= 2 {
				return &StatusError{Code: 500, Reason: "internal error"}
			}
			return nil
		}
		cfg := testConfig()
		var delivered []uint64
		cfg.Delivered = func(e Entry) { delivered = append(delivered, e.Seq) }
		h := start(t, cfg, backofftest.Seeded(1), script, 1, 2, 3, 4, 5)
		settle(time.Hour)
		h.stop()
		// Delivered hears of the acknowledged record only, after its retries.
		if !slices.Equal(delivered, []uint64{4}) {
			t.Errorf("Delivered called for %v, want [4]", delivered)
		}

		for seq, want := range map[uint64]int{1: 1, 2: 1, 3: 1, 4: 3, 5: 1} {
			if got := h.tr.Count(seq); got != want {
				t.Errorf("record %d: %d attempts, want %d", seq, got, want)
			}
		}
		// Sent in sequence order, one at a time.
		var order []uint64
		for _, a := range h.tr.Attempts() {
			if len(order) == 0 || order[len(order)-1] != a.seq {
				order = append(order, a.seq)
			}
		}
		if !slices.Equal(order, []uint64{1, 2, 3, 4, 5}) {
			t.Fatalf("attempt order %v", order)
		}
		if st := h.up.Stats(); st.Sent != 1 || st.Quarantined != 4 || st.Failures != 2 {
			t.Fatalf("Stats = %+v, want 1 sent, 4 quarantined, 2 failures", st)
		}
		if st := h.sp.Stats(); st.Pending != 0 || st.Quarantined != 4 {
			t.Fatalf("spool Stats = %+v", st)
		}
		for seq, e := range replies {
			name := fileName(entryFor(seq))
			if _, err := os.Stat(filepath.Join(h.dir, QuarantineDir, name)); err != nil {
				t.Fatalf("record %d not in quarantine: %v", seq, err)
			}
			reason, err := os.ReadFile(filepath.Join(h.dir, QuarantineDir, name+".reason"))
			if err != nil || !strings.Contains(string(reason), e.Reason) || !strings.Contains(string(reason), strconv.Itoa(e.Code)) {
				t.Fatalf("record %d reason = %q, %v", seq, reason, err)
			}
		}
		if n := h.logs.Count("will not retry"); n != 4 {
			t.Fatalf("%d rejections logged, want 4", n)
		}
	})
}

func TestUploaderSkipsCorruptRecord(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		sp := openSpool(t, SpoolConfig{Dir: dir})
		mustPut(t, sp, testRecord(1, 64))
		mustPut(t, sp, testRecord(2, 64))
		damage(t, filepath.Join(dir, fileName(sp.Pending()[0])), func(b []byte) []byte { b[30] ^= 4; return b })
		tr := &fakeTransport{script: func(uint64, int) error { return nil }}
		up := New(testConfig(), sp, tr, clock.System{}, backofftest.Seeded(1), nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- up.Run(ctx) }()
		settle(time.Minute)
		cancel()
		<-done
		if tr.Count(1) != 0 || tr.Count(2) != 1 {
			t.Fatalf("attempts: seq 1 %d, seq 2 %d; the corrupt record must never be sent", tr.Count(1), tr.Count(2))
		}
		if st := up.Stats(); st.Corrupt != 1 || st.Sent != 1 {
			t.Fatalf("Stats = %+v", st)
		}
		if st := sp.Stats(); st.Corrupt != 1 || st.Pending != 0 {
			t.Fatalf("spool Stats = %+v", st)
		}
	})
}

func TestUploaderWaitsForNotify(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, testConfig(), backofftest.Seeded(1), func(uint64, int) error { return nil })
		settle(time.Hour)
		if n := len(h.tr.Attempts()); n != 0 {
			t.Fatalf("%d attempts with an empty spool", n)
		}
		mustPut(t, h.sp, testRecord(1, 64))
		synctest.Wait() // no time passes: the Put alone wakes the loop
		if h.tr.Count(1) != 1 || len(h.sp.Pending()) != 0 {
			t.Fatalf("record put while idle was not sent at once (%d attempts)", h.tr.Count(1))
		}
		h.stop()
	})
}

func TestUploaderRateLimitsBacklog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.Rate = 5
		h := start(t, cfg, backofftest.Seeded(1), func(uint64, int) error { return nil }, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
		settle(time.Hour)
		as := h.tr.Attempts()
		if len(as) != 10 {
			t.Fatalf("%d attempts, want 10", len(as))
		}
		for i, g := range gaps(as) {
			if g != 200*time.Millisecond {
				t.Fatalf("gap %d = %v, want 200ms at 5 records/s", i, g)
			}
			if as[i+1].seq != as[i].seq+1 {
				t.Fatalf("sent out of order: %d after %d", as[i+1].seq, as[i].seq)
			}
		}
		// After a quiet spell a new record goes at once.
		putAt := time.Now()
		mustPut(t, h.sp, testRecord(11, 64))
		synctest.Wait()
		as = h.tr.Attempts()
		if len(as) != 11 || !as[10].at.Equal(putAt) {
			t.Fatalf("record after a quiet spell was delayed: %d attempts", len(as))
		}
		h.stop()
	})
}

func TestUploaderStopsOnCancelDuringBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, testConfig(), backofftest.Ceil(), func(uint64, int) error { return errRefused }, 1)
		settle(time.Second) // in the 30 s first-retry wait
		h.stop()            // must return, not wait the delay out
		if n := len(h.sp.Pending()); n != 1 {
			t.Fatalf("unsent record lost on stop: %d pending", n)
		}
	})
}
