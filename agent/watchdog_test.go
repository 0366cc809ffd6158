package agent

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/board/boardtest"
	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/capture/capturetest"
)

// gatedSource delivers a still grey scene at 10 fps until stop is closed and
// then blocks, as a camera that stopped delivering does. (A still scene raises
// no event, so nothing is uploaded inside the synctest bubble.)
type gatedSource struct {
	stop <-chan struct{}
	seq  uint64
}

func (g *gatedSource) Next(ctx context.Context, f *capture.Frame) error {
	select {
	case <-g.stop:
		<-ctx.Done()
		return ctx.Err()
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(100 * time.Millisecond):
	}
	g.seq++
	fr := capturetest.GreyFrame(160, 120, 90, g.seq, time.Now())
	fr.CopyTo(f)
	return nil
}

func (g *gatedSource) Close() error { return nil }

// TestWatchdogPettedOnlyWhileFramesArrive runs the agent with a fake watchdog:
// it is petted while frames flow, and once they stop it is left to expire (the
// board would reset); an orderly stop disarms it with the magic close.
func TestWatchdogPettedOnlyWhileFramesArrive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.DataDir = filepath.Join(t.TempDir(), "device")
		cfg.Width, cfg.Height, cfg.FPS = 160, 120, 10
		cfg.WatchdogTimeout = 4 * time.Second
		cfg.WatchdogStall = 2 * time.Second
		stop := make(chan struct{})
		dev := boardtest.NewWatchdog(60)
		a, err := New(cfg, Deps{
			Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
			Source:   &gatedSource{stop: stop},
			Watchdog: board.NewWatchdog(dev),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel() // a failed check stops the agent too, or the bubble deadlocks
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()

		time.Sleep(12 * time.Second) // three timeouts of healthy pipeline
		expired := dev.Expired(time.Now())
		dev.Lock()
		healthyPets, timeout := dev.Pets, dev.TimeoutSeconds
		dev.Unlock()
		if timeout != 4 {
			t.Fatalf("driver timeout %d s, want 4", timeout)
		}
		if healthyPets < 3 || expired {
			t.Fatalf("healthy pipeline: %d pets, expired=%v; want it kept alive", healthyPets, expired)
		}

		close(stop) // the camera stops delivering
		time.Sleep(10 * time.Second)
		stalledExpired := dev.Expired(time.Now())
		dev.Lock()
		sinceKick := time.Since(dev.LastKick)
		dev.Unlock()
		if !stalledExpired {
			t.Fatalf("stalled pipeline: watchdog still petted (last kick %v ago)", sinceKick)
		}
		if sinceKick < 6*time.Second {
			t.Fatalf("petted %v ago although frames stopped 10 s ago", sinceKick)
		}

		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		dev.Lock()
		defer dev.Unlock()
		if !dev.MagicClosed || dev.Armed {
			t.Fatalf("orderly stop: magic closed %v, armed %v; want disarmed", dev.MagicClosed, dev.Armed)
		}
	})
}

// TestWatchdogNotPettedWhileSpoolFails runs the agent on the synthetic scene
// (an object crosses every cycle, so records are spooled) with a fake
// watchdog. While spool writes fail the frames keep flowing, yet the watchdog
// is left to expire; once writes succeed again it is petted again.
func TestWatchdogNotPettedWhileSpoolFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.DataDir = filepath.Join(t.TempDir(), "device")
		cfg.Source = "synthetic"
		cfg.Width, cfg.Height, cfg.FPS = 160, 120, 10
		cfg.UploadURL = "http://127.0.0.1:1" // nothing listens: records stay spooled
		cfg.WatchdogTimeout = 4 * time.Second
		cfg.WatchdogStall = 2 * time.Second
		dev := boardtest.NewWatchdog(60)
		logs := &lockedBuffer{}
		a, err := New(cfg, Deps{
			Logger:   slog.New(slog.NewTextHandler(logs, nil)),
			Watchdog: board.NewWatchdog(dev),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()

		// Spool writes fail from before the first record (the object enters
		// 2 s into the scene): the spool directory is not a directory.
		time.Sleep(time.Second)
		dir := spoolDir(&cfg)
		if err := os.Rename(dir, dir+".away"); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		frames := a.frames.Load()
		time.Sleep(13 * time.Second) // the start and end records fail; over three timeouts
		dev.Lock()
		sinceKick := time.Since(dev.LastKick)
		dev.Unlock()
		if got := a.frames.Load() - frames; got < 100 {
			t.Fatalf("%d frames in 13 s, want the frames to keep flowing", got)
		}
		if n := len(a.spool.Pending()); n != 0 {
			t.Fatalf("%d records spooled although the spool could not be written", n)
		}
		if !strings.Contains(logs.String(), "event record lost") {
			t.Fatalf("no record failed to spool; log:\n%s", logs)
		}
		if !dev.Expired(time.Now()) {
			t.Fatalf("spool failing: watchdog still petted (last kick %v ago)", sinceKick)
		}

		// Writes work again: the next record (next cycle, 17 s) is spooled.
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(dir+".away", dir); err != nil {
			t.Fatal(err)
		}
		dev.Lock()
		failingPets := dev.Pets
		dev.Unlock()
		time.Sleep(8 * time.Second)
		if n := len(a.spool.Pending()); n == 0 {
			t.Fatal("no record spooled after the spool recovered")
		}
		dev.Lock()
		pets := dev.Pets - failingPets
		dev.Unlock()
		if pets == 0 || dev.Expired(time.Now()) {
			t.Fatalf("spool writable again: %d pets since, expired=%v; want it petted again", pets, dev.Expired(time.Now()))
		}
	})
}

// fakeService records what the agent tells the service manager, with the
// time of each message.
type fakeService struct {
	timeout time.Duration
	mu      sync.Mutex
	log     []string
	at      []time.Time
}

func (s *fakeService) add(m string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = append(s.log, m)
	s.at = append(s.at, time.Now())
	return nil
}

func (s *fakeService) Ready(status string) error      { return s.add("READY " + status) }
func (s *fakeService) Watchdog() error                { return s.add("WATCHDOG") }
func (s *fakeService) Stopping() error                { return s.add("STOPPING") }
func (s *fakeService) WatchdogTimeout() time.Duration { return s.timeout }

// count returns how many messages m were sent, and the time of the last.
func (s *fakeService) count(m string) (int, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, last := 0, time.Time{}
	for i, x := range s.log {
		if x == m {
			n, last = n+1, s.at[i]
		}
	}
	return n, last
}

// TestServiceWatchdogFedOnlyWhileFramesArrive: without a hardware watchdog,
// systemd's service watchdog (WatchdogSec=) gets keepalives under the same
// checks: while frames flow, and none once they stop, so systemd restarts a
// stalled agent. READY comes first, STOPPING on an orderly stop.
func TestServiceWatchdogFedOnlyWhileFramesArrive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.DataDir = filepath.Join(t.TempDir(), "device")
		cfg.Width, cfg.Height, cfg.FPS = 160, 120, 10
		cfg.WatchdogStall = 2 * time.Second
		stop := make(chan struct{})
		svc := &fakeService{timeout: 4 * time.Second}
		a, err := New(cfg, Deps{
			Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
			Source:  &gatedSource{stop: stop},
			Service: svc,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()

		time.Sleep(12 * time.Second)
		healthy, last := svc.count("WATCHDOG")
		if healthy < 11 || time.Since(last) > 2*time.Second {
			t.Fatalf("healthy pipeline: %d keepalives, the last %v ago; want one every second (timeout 4 s)", healthy, time.Since(last))
		}
		svc.mu.Lock()
		first := svc.log[0]
		svc.mu.Unlock()
		if first != "READY device "+a.device {
			t.Fatalf("first message %q, want READY with the device ID", first)
		}

		close(stop) // the camera stops delivering
		stopped := time.Now()
		time.Sleep(10 * time.Second)
		n, last := svc.count("WATCHDOG")
		if since := last.Sub(stopped); since > 3*time.Second {
			t.Fatalf("keepalive %v after the frames stopped (stall limit 2 s)", since)
		}
		if n-healthy > 3 {
			t.Fatalf("%d keepalives after the frames stopped", n-healthy)
		}

		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if n, _ := svc.count("STOPPING"); n != 1 {
			t.Fatalf("STOPPING sent %d times, want once; log %v", n, svc.log)
		}
	})
}
