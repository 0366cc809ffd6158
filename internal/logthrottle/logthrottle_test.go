package logthrottle

import (
	"bytes"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeClock moves only when Advance moves it.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []waiter
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waits = append(c.waits, waiter{c.now.Add(d), ch})
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waits[:0]
	for _, w := range c.waits {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.now
	}
	c.waits = kept
}

// lines is a concurrency-safe log destination.
type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.TrimSpace(l.buf.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// matching returns the lines containing sub.
func (l *lines) matching(sub string) []string {
	var out []string
	for _, s := range l.all() {
		if strings.Contains(s, sub) {
			out = append(out, s)
		}
	}
	return out
}

var suppressedRE = regexp.MustCompile(`suppressed=(\d+)`)

// suppressedSum adds up the suppressed=N of the lines.
func suppressedSum(t *testing.T, ls []string) uint64 {
	t.Helper()
	var sum uint64
	for _, l := range ls {
		if m := suppressedRE.FindStringSubmatch(l); m != nil {
			n, err := strconv.ParseUint(m[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			sum += n
		}
	}
	return sum
}

func newTest(cfg Config) (*slog.Logger, *Handler, *lines, *fakeClock) {
	out := &lines{}
	clk := newFakeClock()
	cfg.Clock = clk
	noTime := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	h := New(slog.NewTextHandler(out, &slog.HandlerOptions{ReplaceAttr: noTime}), cfg)
	return slog.New(h), h, out, clk
}

func TestBurstPassesThenCountsAndWritesTheCountAtTheWindowsEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, h, out, clk := newTest(Config{})
		log = log.With("sub", "mqtt")
		for i := range 20 {
			log.Warn("command queue full; command dropped", "command", fmt.Sprintf("c%d", i))
		}
		got := out.all()
		if len(got) != DefaultBurst {
			t.Fatalf("%d lines after 20 records, want the burst of %d:\n%s", len(got), DefaultBurst, strings.Join(got, "\n"))
		}
		for i, l := range got {
			if !strings.Contains(l, fmt.Sprintf("command=c%d", i)) || !strings.Contains(l, "sub=mqtt") {
				t.Errorf("line %d = %q: want the record's own attrs and the logger's", i, l)
			}
		}
		if st := h.Stats(); st.Passed != 5 || st.Suppressed != 15 || st.Summaries != 0 || st.Keys != 1 {
			t.Errorf("stats %+v, want 5 passed, 15 suppressed, no summary yet, 1 key", st)
		}

		synctest.Wait() // the count goroutine waits on the clock before it moves
		clk.Advance(DefaultWindow - time.Second)
		synctest.Wait()
		if n := len(out.all()); n != DefaultBurst {
			t.Fatalf("%d lines before the window ended, want %d", n, DefaultBurst)
		}
		synctest.Wait() // the count goroutine waits on the clock before it moves
		clk.Advance(time.Second)
		synctest.Wait()
		got = out.all()
		if len(got) != DefaultBurst+1 {
			t.Fatalf("%d lines at the window's end, want the burst and one count:\n%s", len(got), strings.Join(got, "\n"))
		}
		want := `level=WARN msg="command queue full; command dropped" sub=mqtt suppressed=15 window=1m0s`
		if got[DefaultBurst] != want {
			t.Errorf("count line\n got %q\nwant %q", got[DefaultBurst], want)
		}
		t.Logf("20 records: %d lines, the last %q", len(got), got[len(got)-1])

		// A new window: the burst passes again.
		log.Warn("command queue full; command dropped", "command", "next")
		if n := len(out.all()); n != DefaultBurst+2 {
			t.Errorf("%d lines after a record in a new window, want %d", n, DefaultBurst+2)
		}
		if st := h.Stats(); st.Summaries != 1 || st.Passed != 6 {
			t.Errorf("stats %+v, want 1 summary and 6 passed", st)
		}
	})
}

// neverClock is a fakeClock whose After never fires: the goroutine that
// writes counts at a window's end never runs.
type neverClock struct{ *fakeClock }

func (neverClock) After(time.Duration) <-chan time.Time { return nil }

func TestCountWrittenBeforeTheNextWindowsFirstRecord(t *testing.T) {
	out := &lines{}
	clk := newFakeClock()
	h := New(slog.NewTextHandler(out, nil), Config{Burst: 2, Window: time.Minute, Clock: neverClock{clk}})
	log := slog.New(h)
	for range 7 {
		log.Error("disk full")
	}
	clk.Advance(time.Minute)
	log.Error("disk full", "try", 8)
	got := out.all()
	if len(got) != 4 || !strings.Contains(got[2], "suppressed=5") || !strings.Contains(got[3], "try=8") {
		t.Fatalf("lines %q: want 2 passed, the count of 5, then the new window's first record", got)
	}
	if st := h.Stats(); st.Summaries != 1 || st.Passed != 3 || st.Suppressed != 5 {
		t.Errorf("stats %+v", st)
	}
}

func TestKeyIsLevelAndMessageNotAttrs(t *testing.T) {
	log, h, out, _ := newTest(Config{Burst: 1})
	log.Info("command handled", "command", "a")
	log.Info("command handled", "command", "b")        // same key: other attrs do not open a new one
	log.Warn("command handled", "command", "c")        // another level: another key
	log.With("x", 1).Info("command handled")           // attrs of the logger: same key
	log.WithGroup("g").Info("command handled", "y", 2) // a group: same key
	log.Info("another message")
	if got := out.all(); len(got) != 3 {
		t.Errorf("lines %q: want 3 (one per key)", got)
	}
	if st := h.Stats(); st.Keys != 3 || st.Suppressed != 3 {
		t.Errorf("stats %+v: want 3 keys, 3 suppressed", st)
	}
}

func TestWithAttrsAndWithGroupPreserved(t *testing.T) {
	log, _, out, _ := newTest(Config{})
	log.With("device", "d1").WithGroup("mqtt").With("broker", "b").Info("connected", "tries", 3)
	want := `level=INFO msg=connected device=d1 mqtt.broker=b mqtt.tries=3`
	if got := out.all(); len(got) != 1 || got[0] != want {
		t.Errorf("lines %q, want [%q]", got, want)
	}
}

func TestDisabledLevelsAreNotCounted(t *testing.T) {
	log, h, out, _ := newTest(Config{})
	for range 100 {
		log.Debug("noise")
	}
	if st := h.Stats(); st.Passed+st.Suppressed != 0 || st.Keys != 0 || len(out.all()) != 0 {
		t.Errorf("stats %+v, %d lines: a record the level filters out must not reach the throttle", st, len(out.all()))
	}
}

func TestKeyTableBoundedAndOverflowCounted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxKeys, burst, distinct = 4, 2, 1000
		log, h, out, clk := newTest(Config{MaxKeys: maxKeys, Burst: burst})
		for i := range distinct {
			for range 3 {
				if i == distinct-1 {
					log.Error(fmt.Sprintf("refused %d", i))
				} else {
					log.Warn(fmt.Sprintf("refused %d", i))
				}
			}
		}
		st := h.Stats()
		if st.Keys != maxKeys {
			t.Errorf("%d keys, want the bound %d", st.Keys, maxKeys)
		}
		// Each of the 4 keys passes 2; the overflow key passes 2 of the
		// other 2,988.
		wantLines := (maxKeys + 1) * burst
		if n := len(out.all()); n != wantLines {
			t.Errorf("%d lines for %d distinct messages ×3, want %d", n, distinct, wantLines)
		}
		if st.Overflowed != 3*(distinct-maxKeys) || st.Passed+st.Suppressed != 3*distinct {
			t.Errorf("stats %+v: want %d overflowed, %d records", st, 3*(distinct-maxKeys), 3*distinct)
		}
		synctest.Wait() // the count goroutine waits on the clock before it moves
		clk.Advance(DefaultWindow)
		synctest.Wait()
		over := out.matching(OverflowMessage)
		if len(over) != 1 || !strings.HasPrefix(over[0], "level=ERROR ") {
			t.Errorf("overflow count lines %q: want one, at the highest level suppressed (ERROR)", over)
		}
		if got := suppressedSum(t, out.all()); got != h.Stats().Suppressed {
			t.Errorf("counts written add up to %d, want every suppressed record (%d)", got, h.Stats().Suppressed)
		}
		if st := h.Stats(); st.Keys != 0 {
			t.Errorf("%d keys after every window ended, want 0", st.Keys)
		}
		// The table has room again.
		log.Warn("refused 999999")
		if st := h.Stats(); st.Keys != 1 || st.Overflowed != 3*(distinct-maxKeys) {
			t.Errorf("stats %+v: a new key after the windows ended goes in the table", st)
		}
		t.Logf("%d distinct messages ×3 with %d keys, burst %d: %d lines; %d overflowed, %d suppressed",
			distinct, maxKeys, burst, len(out.all()), st.Overflowed, st.Suppressed)
	})
}

func TestFlushWritesPendingCounts(t *testing.T) {
	log, h, out, _ := newTest(Config{Burst: 1})
	for range 10 {
		log.Error("cannot write spool")
		log.Info("command handled")
	}
	if err := h.Flush(); err != nil {
		t.Fatal(err)
	}
	got := out.all()
	if len(got) != 4 || suppressedSum(t, got) != 18 {
		t.Fatalf("lines %q: want 2 passed and 2 counts adding up to 18", got)
	}
	if err := h.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := len(out.all()); n != 4 {
		t.Errorf("a second Flush wrote %d more lines, want none", n-4)
	}
	log.Error("cannot write spool") // the window is still open: its burst stays used
	if err := h.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := out.matching("suppressed=1 "); len(got) != 1 {
		t.Errorf("lines %q: the record after a Flush in the same window is counted", out.all())
	}
}

func TestConcurrentUse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, h, out, clk := newTest(Config{})
		const workers, each = 8, 1000
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				l := log.With("worker", w).WithGroup("g")
				for i := range each {
					switch i % 3 {
					case 0:
						l.Warn("command queue full; command dropped", "i", i)
					case 1:
						l.Info("command handled", "i", i)
					default:
						l.Error(fmt.Sprintf("message %d", i%50))
					}
				}
			})
		}
		wg.Wait()
		st := h.Stats()
		if st.Passed+st.Suppressed != workers*each {
			t.Errorf("stats %+v: want %d records in all", st, workers*each)
		}
		synctest.Wait() // the count goroutine waits on the clock before it moves
		clk.Advance(DefaultWindow)
		synctest.Wait()
		if err := h.Flush(); err != nil {
			t.Fatal(err)
		}
		all := out.all()
		// 52 keys (2 + 50 messages): 5 each, one count each.
		if want := 52 * (DefaultBurst + 1); len(all) != want {
			t.Errorf("%d lines, want %d", len(all), want)
		}
		if got := suppressedSum(t, all); got != h.Stats().Suppressed {
			t.Errorf("counts add up to %d, want %d", got, h.Stats().Suppressed)
		}
		t.Logf("%d records from %d goroutines: %d lines, %d suppressed", workers*each, workers, len(all), h.Stats().Suppressed)
	})
}
