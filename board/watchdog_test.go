package board_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/board/boardtest"
)

func TestWatchdogSetTimeoutPassesSeconds(t *testing.T) {
	fake := boardtest.NewWatchdog(30)
	w := board.NewWatchdog(fake)
	cases := []struct {
		in       time.Duration
		wantSecs int // what the driver must be passed
	}{
		{time.Minute, 60},
		{1500 * time.Millisecond, 2}, // rounded up: never less time than asked
		{300 * time.Millisecond, 1},
		{2 * time.Second, 2},
		{2*time.Second + time.Nanosecond, 3},
	}
	for _, c := range cases {
		got, err := w.SetTimeout(c.in)
		if err != nil {
			t.Fatalf("SetTimeout(%v): %v", c.in, err)
		}
		fake.Lock()
		last := fake.SetTimeoutCalls[len(fake.SetTimeoutCalls)-1]
		fake.Unlock()
		if last != c.wantSecs {
			t.Errorf("SetTimeout(%v) passed %d to the driver, want %d seconds", c.in, last, c.wantSecs)
		}
		if got != time.Duration(c.wantSecs)*time.Second {
			t.Errorf("SetTimeout(%v) = %v, want %ds", c.in, got, c.wantSecs)
		}
	}
	n := len(fake.SetTimeoutCalls)
	for _, bad := range []time.Duration{0, -time.Second, time.Duration(1<<31) * time.Second} {
		if _, err := w.SetTimeout(bad); err == nil {
			t.Errorf("SetTimeout(%v): want error", bad)
		}
	}
	if len(fake.SetTimeoutCalls) != n {
		t.Errorf("invalid timeouts reached the driver: %v", fake.SetTimeoutCalls[n:])
	}
}

func TestWatchdogSetTimeoutReturnsDriverValue(t *testing.T) {
	fake := boardtest.NewWatchdog(30)
	fake.Granularity = 4
	fake.MaxTimeout = 20
	w := board.NewWatchdog(fake)
	got, err := w.SetTimeout(7 * time.Second)
	if err != nil || got != 8*time.Second {
		t.Fatalf("SetTimeout(7s) with a 4s-granular driver = %v, %v; want the driver's 8s", got, err)
	}
	if cur, err := w.Timeout(); err != nil || cur != 8*time.Second {
		t.Fatalf("Timeout = %v, %v; want 8s", cur, err)
	}
	_, err = w.SetTimeout(time.Minute)
	if !errors.Is(err, syscall.EINVAL) || !strings.HasPrefix(err.Error(), "board: watchdog boardtest watchdog: set timeout 60s: ") {
		t.Fatalf("SetTimeout above the driver's maximum: %v, want a prefixed EINVAL", err)
	}
}

func TestWatchdogPetBootStatusClose(t *testing.T) {
	fake := boardtest.NewWatchdog(10)
	fake.BootFlags = board.WatchdogCardReset
	w := board.NewWatchdog(fake)
	for range 3 {
		if err := w.Pet(); err != nil {
			t.Fatal(err)
		}
	}
	if fake.Pets != 3 {
		t.Fatalf("Pets = %d, want 3", fake.Pets)
	}
	bs, err := w.BootStatus()
	if err != nil || bs != board.WatchdogCardReset || bs.String() != "CARDRESET" {
		t.Fatalf("BootStatus = %v (%d), %v", bs, bs, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !fake.MagicClosed || fake.Armed || !fake.Closed {
		t.Fatalf("after Close: magic=%v armed=%v closed=%v, want an orderly disarm", fake.MagicClosed, fake.Armed, fake.Closed)
	}
	if err := w.Pet(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Pet after Close: %v, want os.ErrClosed", err)
	}
	if _, err := w.SetTimeout(time.Second); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("SetTimeout after Close: %v, want os.ErrClosed", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if fake.Pets != 3 {
		t.Fatalf("a closed watchdog was petted: Pets = %d", fake.Pets)
	}
}

func TestWatchdogCloseNoWayOut(t *testing.T) {
	fake := boardtest.NewWatchdog(10)
	fake.NoWayOut = true
	err := board.NewWatchdog(fake).Close()
	if !errors.Is(err, board.ErrStillArmed) {
		t.Fatalf("Close with nowayout: %v, want ErrStillArmed", err)
	}
	if !fake.Armed || !fake.Closed {
		t.Fatalf("nowayout: armed=%v closed=%v, want closed and still armed", fake.Armed, fake.Closed)
	}
}

func TestWatchdogFlagsString(t *testing.T) {
	for f, want := range map[board.WatchdogFlags]string{
		0:                               "0",
		32:                              "CARDRESET",
		0x8180:                          "SETTIMEOUT|MAGICCLOSE|KEEPALIVEPING",
		board.WatchdogOverheat | 0x1000: "OVERHEAT|0x1000",
	} {
		if got := f.String(); got != want {
			t.Errorf("WatchdogFlags(%#x) = %q, want %q", uint32(f), got, want)
		}
	}
}

// logBuf collects log records for assertions; safe for concurrent use.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuf) count(substr string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), substr)
}

func (b *logBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLogger(b *logBuf) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// snapshot reads the fake's counters under its lock.
func snapshot(f *boardtest.Watchdog) (pets int, armed, magic bool) {
	f.Lock()
	defer f.Unlock()
	return f.Pets, f.Armed, f.MagicClosed
}

// runLoop starts l.Run in the bubble and returns a function that cancels it
// and returns Run's result.
func runLoop(t *testing.T, l *board.WatchdogLoop) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	return func() error {
		cancel()
		return <-done
	}
}

func TestWatchdogLoopPetsWhileHealthy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := boardtest.NewWatchdog(5)
		var logs logBuf
		calls := 0
		l := &board.WatchdogLoop{
			Dog:      board.NewWatchdog(fake),
			Interval: time.Second,
			Checks:   []board.HealthCheck{{Name: "ok", Check: func(time.Time) error { calls++; return nil }}},
			Logger:   newLogger(&logs),
		}
		stop := runLoop(t, l)
		// Ticks at 0s, 1s, ... 30s: a healthy board is petted every time and
		// never comes near its 5s timeout. Look between ticks (at n+0.5s).
		time.Sleep(time.Second / 2)
		for range 30 {
			synctest.Wait()
			if fake.Expired(time.Now()) {
				t.Fatalf("healthy board's watchdog expired at %v", time.Now())
			}
			time.Sleep(time.Second)
		}
		synctest.Wait()
		pets, _, _ := snapshot(fake)
		if pets != 31 || calls != 31 {
			t.Fatalf("at 30.5s with 1s intervals: %d pets, %d checks; want 31 each (t=0..30s)", pets, calls)
		}
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		pets, armed, magic := snapshot(fake)
		if armed || !magic {
			t.Fatalf("after shutdown: armed=%v magic=%v; want a magic close", armed, magic)
		}
		st := l.Stats()
		if st.Pets != uint64(pets) || st.Skipped != 0 || st.PetErrors != 0 || len(st.Failing) != 0 || st.LastFailure.Check != "" {
			t.Fatalf("Stats = %+v", st)
		}
		if logs.count("failing") != 0 || logs.count("disarmed") != 1 {
			t.Fatalf("logs:\n%s", logs.String())
		}
	})
}

func TestWatchdogLoopStopsPettingWhileUnhealthy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		// "camera" fails during [3s, 10s) and [20s, 22s); "disk" always passes.
		badCamera := func(now time.Time) error {
			d := now.Sub(start)
			if (d >= 3*time.Second && d < 10*time.Second) || (d >= 20*time.Second && d < 22*time.Second) {
				return errors.New("no frame")
			}
			return nil
		}
		fake := boardtest.NewWatchdog(5)
		var logs logBuf
		l := &board.WatchdogLoop{
			Dog:      board.NewWatchdog(fake),
			Interval: time.Second,
			Checks: []board.HealthCheck{
				{Name: "disk", Check: func(time.Time) error { return nil }},
				{Name: "camera", Check: badCamera},
			},
			Logger: newLogger(&logs),
		}
		stop := runLoop(t, l)

		time.Sleep(2*time.Second + time.Second/2) // ticks 0,1,2: healthy
		synctest.Wait()
		if pets, _, _ := snapshot(fake); pets != 3 {
			t.Fatalf("t=2.5s: %d pets, want 3", pets)
		}
		time.Sleep(4 * time.Second) // t=6.5s: ticks 3..6 failed
		synctest.Wait()
		if pets, _, _ := snapshot(fake); pets != 3 {
			t.Fatalf("t=6.5s: %d pets while a check fails, want still 3", pets)
		}
		st := l.Stats()
		if st.Skipped != 4 || !reflect.DeepEqual(st.Failing, []string{"camera"}) ||
			st.LastFailure.Check != "camera" || st.LastFailure.Err == nil || !st.LastFailure.At.Equal(start.Add(6*time.Second)) {
			t.Fatalf("t=6.5s Stats = %+v", st)
		}
		if logs.count("health check failing") != 1 {
			t.Fatalf("want one failure log for the episode:\n%s", logs.String())
		}
		// Last pet at 2s, timeout 5s: a real board resets after 7s.
		if fake.Expired(start.Add(7 * time.Second)) {
			t.Fatal("expired before the timeout ran out")
		}
		time.Sleep(3 * time.Second) // t=9.5s
		synctest.Wait()
		if !fake.Expired(time.Now()) {
			t.Fatal("a stalled board's watchdog must expire: no pet for 7.5s with a 5s timeout")
		}
		time.Sleep(5 * time.Second) // t=14.5s: recovered at 10s, ticks 10..14 pet
		synctest.Wait()
		if pets, _, _ := snapshot(fake); pets != 8 {
			t.Fatalf("t=14.5s: %d pets, want 8 (3 before, 5 after recovery)", pets)
		}
		if logs.count("health check recovered") != 1 || !strings.Contains(logs.String(), "failed_for=7s") {
			t.Fatalf("want one recovery log after 7s:\n%s", logs.String())
		}
		if st := l.Stats(); len(st.Failing) != 0 || st.Skipped != 7 {
			t.Fatalf("t=14.5s Stats = %+v", st)
		}
		time.Sleep(10 * time.Second) // t=24.5s: second episode at ticks 20, 21
		synctest.Wait()
		if n := logs.count("health check failing"); n != 2 {
			t.Fatalf("two failure episodes logged %d times:\n%s", n, logs.String())
		}
		if n := logs.count("health check recovered"); n != 2 {
			t.Fatalf("two recoveries logged %d times:\n%s", n, logs.String())
		}
		if strings.Count(logs.String(), "check=disk") != 0 {
			t.Fatalf("a passing check was logged:\n%s", logs.String())
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		st = l.Stats()
		pets, armed, _ := snapshot(fake)
		if st.Skipped != 9 || st.Pets != uint64(pets) || pets != 16 || armed {
			t.Fatalf("end: Stats = %+v, fake pets %d armed %v", st, pets, armed)
		}
	})
}

func TestWatchdogLoopPetErrorsLoggedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := boardtest.NewWatchdog(10)
		fake.KeepaliveErr = syscall.EIO
		var logs logBuf
		l := &board.WatchdogLoop{Dog: board.NewWatchdog(fake), Interval: time.Second, Logger: newLogger(&logs)}
		stop := runLoop(t, l)
		time.Sleep(3*time.Second + time.Second/2)
		synctest.Wait()
		fake.Lock()
		fake.KeepaliveErr = nil
		fake.Unlock()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		st := l.Stats()
		if st.PetErrors != 4 || st.Pets != 2 || st.Skipped != 0 {
			t.Fatalf("Stats = %+v, want 4 refused keepalives then 2", st)
		}
		if logs.count("keepalive failed") != 1 || logs.count("keepalive works again") != 1 {
			t.Fatalf("logs:\n%s", logs.String())
		}
	})
}

func TestWatchdogLoopShutdownNoWayOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := boardtest.NewWatchdog(10)
		fake.NoWayOut = true
		var logs logBuf
		l := &board.WatchdogLoop{Dog: board.NewWatchdog(fake), Interval: time.Second, Logger: newLogger(&logs)}
		stop := runLoop(t, l)
		synctest.Wait()
		if err := stop(); err != nil {
			t.Fatalf("Run with nowayout: %v, want nil (logged)", err)
		}
		if _, armed, magic := snapshot(fake); !magic || !armed {
			t.Fatalf("magic=%v armed=%v", magic, armed)
		}
		if logs.count("closed but still armed") != 1 {
			t.Fatalf("nowayout not logged:\n%s", logs.String())
		}
	})
}

func TestWatchdogLoopCancelledBeforeStart(t *testing.T) {
	fake := boardtest.NewWatchdog(10)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	l := &board.WatchdogLoop{Dog: board.NewWatchdog(fake), Interval: time.Second}
	if err := l.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if pets, armed, magic := snapshot(fake); pets != 0 || armed || !magic {
		t.Fatalf("pets=%d armed=%v magic=%v", pets, armed, magic)
	}
}

func TestWatchdogLoopInvalidConfig(t *testing.T) {
	ok := []board.HealthCheck{{Name: "ok", Check: func(time.Time) error { return nil }}}
	for name, l := range map[string]func(*board.Watchdog) *board.WatchdogLoop{
		"zero interval": func(w *board.Watchdog) *board.WatchdogLoop { return &board.WatchdogLoop{Dog: w, Checks: ok} },
		"interval = timeout": func(w *board.Watchdog) *board.WatchdogLoop {
			return &board.WatchdogLoop{Dog: w, Interval: 10 * time.Second}
		},
		"interval above": func(w *board.Watchdog) *board.WatchdogLoop { return &board.WatchdogLoop{Dog: w, Interval: time.Minute} },
		"check without a func": func(w *board.Watchdog) *board.WatchdogLoop {
			return &board.WatchdogLoop{Dog: w, Interval: time.Second, Checks: []board.HealthCheck{{Name: "x"}}}
		},
		"negative interval too": func(w *board.Watchdog) *board.WatchdogLoop {
			return &board.WatchdogLoop{Dog: w, Interval: -time.Second}
		},
	} {
		synctest.Test(t, func(t *testing.T) {
			fake := boardtest.NewWatchdog(10)
			// Bounded in fake time, so a loop that wrongly starts ends.
			ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
			defer cancel()
			err := l(board.NewWatchdog(fake)).Run(ctx)
			if err == nil || !strings.HasPrefix(err.Error(), "board: watchdog loop: ") {
				t.Errorf("%s: Run = %v, want a configuration error", name, err)
			}
			if pets, armed, _ := snapshot(fake); pets != 0 || armed {
				t.Errorf("%s: pets=%d armed=%v; want never petted and disarmed", name, pets, armed)
			}
		})
	}
	if err := (&board.WatchdogLoop{Interval: time.Second}).Run(t.Context()); err == nil {
		t.Error("Run without a watchdog: want error")
	}
}

func TestWatchdogLoopUnknownTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := boardtest.NewWatchdog(10)
		fake.TimeoutErr = syscall.EOPNOTSUPP
		var logs logBuf
		l := &board.WatchdogLoop{Dog: board.NewWatchdog(fake), Interval: time.Second, Logger: newLogger(&logs)}
		stop := runLoop(t, l)
		time.Sleep(time.Second / 2)
		synctest.Wait()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if pets, _, _ := snapshot(fake); pets != 1 || logs.count("cannot read the timeout") != 1 {
			t.Fatalf("pets=%d logs:\n%s", pets, logs.String())
		}
	})
}

// fakeClock is a manual clock: After channels fire when Advance passes them.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	c  chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, waiter{c.now.Add(d), ch})
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.c <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

// TestWatchdogLoopInjectedClock drives the loop with an injected clock
// instead of the synctest bubble: checks see the clock's time.
func TestWatchdogLoopInjectedClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
		var seen []time.Time
		fake := boardtest.NewWatchdog(10)
		l := &board.WatchdogLoop{
			Dog: board.NewWatchdog(fake), Interval: 2 * time.Second, Clock: clk,
			Checks: []board.HealthCheck{{Name: "t", Check: func(now time.Time) error { seen = append(seen, now); return nil }}},
		}
		stop := runLoop(t, l)
		synctest.Wait()
		clk.Advance(time.Second) // not yet
		synctest.Wait()
		clk.Advance(time.Second)
		synctest.Wait()
		clk.Advance(2 * time.Second)
		synctest.Wait()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		want := []time.Time{clk.now.Add(-4 * time.Second), clk.now.Add(-2 * time.Second), clk.now}
		if !reflect.DeepEqual(seen, want) {
			t.Fatalf("checks ran at %v, want %v", seen, want)
		}
		if pets, _, _ := snapshot(fake); pets != 3 {
			t.Fatalf("pets = %d, want 3", pets)
		}
	})
}

func TestStallCheck(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var last time.Time
	c := board.StallCheck("frames", 10*time.Second, func() time.Time { return last })
	if c.Name != "frames" {
		t.Fatalf("Name = %q", c.Name)
	}
	if err := c.Check(t0); err != nil {
		t.Fatalf("first run: %v", err)
	}
	if err := c.Check(t0.Add(10 * time.Second)); err != nil {
		t.Fatalf("no frame yet, within the grace: %v", err)
	}
	if err := c.Check(t0.Add(11 * time.Second)); err == nil {
		t.Fatal("no frame 11s after start with a 10s limit: want failure")
	}
	last = t0.Add(9 * time.Second)
	if err := c.Check(t0.Add(11 * time.Second)); err != nil {
		t.Fatalf("frame 2s ago: %v", err)
	}
	err := c.Check(t0.Add(30 * time.Second))
	if err == nil || !strings.Contains(err.Error(), "21s") {
		t.Fatalf("frame 21s ago: %v", err)
	}
}

func TestOpenWatchdogAbsent(t *testing.T) {
	fs, err := board.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.OpenWatchdog("/dev/watchdog0"); !errors.Is(err, board.ErrAbsent) {
		t.Fatalf("OpenWatchdog on a root without the node: %v, want ErrAbsent", err)
	}
}

func TestOpenWatchdogRegularFile(t *testing.T) {
	root := t.TempDir()
	node := filepath.Join(root, "dev", "watchdog0")
	if err := os.MkdirAll(filepath.Dir(node), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(node, []byte("fixture"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs, err := board.NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.OpenWatchdog("/dev/watchdog0"); err == nil {
		t.Fatal("OpenWatchdog on a regular file: want error")
	}
	if b, _ := os.ReadFile(node); string(b) != "fixture" {
		t.Fatalf("the file was written to: %q", b)
	}
}

func TestWatchdogSysfsFixtures(t *testing.T) {
	fs, err := board.NewFS("testdata/fixtures")
	if err != nil {
		t.Fatal(err)
	}
	names, err := fs.WatchdogNames()
	if err != nil || !reflect.DeepEqual(names, []string{"watchdog0", "watchdog1"}) {
		t.Fatalf("WatchdogNames = %v, %v", names, err)
	}
	bs, err := fs.WatchdogBootStatus("watchdog0")
	if err != nil || bs != board.WatchdogCardReset {
		t.Fatalf("WatchdogBootStatus(watchdog0) = %v, %v; want CARDRESET (32)", bs, err)
	}
	info, err := fs.WatchdogInfo("watchdog0")
	want := board.WatchdogInfo{
		Name: "watchdog0", Identity: "i6300ESB timer", Timeout: 30 * time.Second,
		BootStatus: board.WatchdogCardReset, MinTimeout: time.Second, MaxTimeout: 2046 * time.Second,
		// recorded on Linux 6.1: no options file
	}
	if err != nil || info != want {
		t.Fatalf("WatchdogInfo(watchdog0) = %+v, %v\nwant %+v", info, err, want)
	}
	info, err = fs.WatchdogInfo("watchdog1")
	want = board.WatchdogInfo{
		Name: "watchdog1", Identity: "Software Watchdog", Timeout: time.Minute,
		Active: true, NoWayOut: true, MinTimeout: time.Second, MaxTimeout: 65535 * time.Second,
		Options: board.WatchdogSetTimeout | board.WatchdogMagicClose | board.WatchdogKeepalivePing,
	}
	if err != nil || info != want {
		t.Fatalf("WatchdogInfo(watchdog1) = %+v, %v\nwant %+v", info, err, want)
	}
	if _, err := fs.WatchdogInfo("watchdog7"); !errors.Is(err, board.ErrAbsent) {
		t.Fatalf("WatchdogInfo(watchdog7): %v, want ErrAbsent", err)
	}
	for _, bad := range []string{"../../proc", "watchdog0/..", "", "watchdogX"} {
		if _, err := fs.WatchdogInfo(bad); err == nil || errors.Is(err, board.ErrAbsent) {
			t.Errorf("WatchdogInfo(%q): %v, want a bad-name error", bad, err)
		}
	}
}

func TestWatchdogSysfsCorrupt(t *testing.T) {
	write := func(root string, files map[string]string) {
		for name, content := range files {
			p := filepath.Join(root, "sys", "class", "watchdog", "watchdog0", name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	good := map[string]string{"identity": "x\n", "timeout": "30\n", "bootstatus": "0\n", "state": "inactive\n", "nowayout": "0\n", "options": "0x8180\n"}
	for attr, junk := range map[string]string{
		"bootstatus": "thirty-two\n", "timeout": "-5\n", "state": "sleepy\n", "nowayout": "yes\n", "options": "0xzz\n",
		"max_timeout": "\n", "min_timeout": "99999999999\n",
	} {
		root := t.TempDir()
		write(root, good)
		write(root, map[string]string{attr: junk})
		fs, err := board.NewFS(root)
		if err != nil {
			t.Fatal(err)
		}
		_, err = fs.WatchdogInfo("watchdog0")
		if err == nil || errors.Is(err, board.ErrAbsent) || !strings.Contains(err.Error(), attr) {
			t.Errorf("corrupt %s: %v, want a parse error naming it", attr, err)
		}
	}
	fs, err := board.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.WatchdogNames(); !errors.Is(err, board.ErrAbsent) {
		t.Fatalf("WatchdogNames on an empty root: %v, want ErrAbsent", err)
	}
}

func TestWatchdogName(t *testing.T) {
	for in, want := range map[string]string{"/dev/watchdog": "watchdog0", "/dev/watchdog0": "watchdog0", "/dev/watchdog12": "watchdog12"} {
		if got, err := board.WatchdogName(in); err != nil || got != want {
			t.Errorf("WatchdogName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"/dev/video0", "/dev/watchdogs", "/dev/watchdog0/..", "/dev/watchdog1a", "/dev/watchdog-1", "/dev/awatchdog1", ""} {
		if got, err := board.WatchdogName(bad); err == nil {
			t.Errorf("WatchdogName(%q) = %q, want error", bad, got)
		}
	}
}

// TestWatchdogLoopKeepaliveFollowsPets: the second watchdog (systemd's) is
// fed on exactly the ticks on which the hardware one is petted, and not while
// a check fails.
func TestWatchdogLoopKeepaliveFollowsPets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		fake := boardtest.NewWatchdog(5)
		var ticks []time.Duration // when Keepalive was called, from start
		l := &board.WatchdogLoop{
			Dog:       board.NewWatchdog(fake),
			Keepalive: func() error { ticks = append(ticks, time.Since(start)); return nil },
			Interval:  time.Second,
			Checks: []board.HealthCheck{{Name: "camera", Check: func(now time.Time) error {
				if d := now.Sub(start); d >= 3*time.Second && d < 6*time.Second {
					return errors.New("no frame")
				}
				return nil
			}}},
		}
		stop := runLoop(t, l)
		time.Sleep(8*time.Second + time.Second/2)
		synctest.Wait()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		want := []time.Duration{0, time.Second, 2 * time.Second, 6 * time.Second, 7 * time.Second, 8 * time.Second}
		if !reflect.DeepEqual(ticks, want) {
			t.Fatalf("keepalives at %v, want %v (none while the camera check fails)", ticks, want)
		}
		st := l.Stats()
		if pets, _, _ := snapshot(fake); st.Keepalives != uint64(len(want)) || pets != len(want) || st.Skipped != 3 {
			t.Fatalf("Stats = %+v, pets = %d", st, pets)
		}
	})
}

// TestWatchdogLoopKeepaliveOnly runs the loop without a hardware watchdog:
// a failing keepalive is logged once, its recovery once.
func TestWatchdogLoopKeepaliveOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var logs logBuf
		l := &board.WatchdogLoop{
			Keepalive: func() error {
				if d := time.Since(start); d >= 2*time.Second && d < 5*time.Second {
					return errors.New("connection refused")
				}
				return nil
			},
			Interval: time.Second,
			Checks:   []board.HealthCheck{{Name: "ok", Check: func(time.Time) error { return nil }}},
			Logger:   newLogger(&logs),
		}
		stop := runLoop(t, l)
		time.Sleep(6*time.Second + time.Second/2)
		synctest.Wait()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		st := l.Stats()
		if st.Keepalives != 4 || st.KeepaliveErrors != 3 || st.Pets != 0 {
			t.Fatalf("Stats = %+v; want 4 keepalives (0,1,5,6s), 3 errors (2,3,4s)", st)
		}
		if logs.count("keepalive to the service manager failed") != 1 || logs.count("works again") != 1 {
			t.Fatalf("logs:\n%s", logs.String())
		}
	})
}
