package agent

// Fault tests of the whole device: the agent with the synthetic scene, the
// real spool and uploader, and the real receiver on loopback. A board
// without RTC whose clock is set by NTP mid-run, an agent killed with
// SIGKILL at random moments, and spool files damaged while it was stopped.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/capture/capturetest"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/receiver"
	"github.com/keyframe-cam/keyframe/uploader"
)

// ---------------------------------------------------------------------------
// Shared pieces

// stored is one record a receiver stored, decoded from the bundle it got.
type stored struct {
	p    *provenance.Payload
	hash [32]byte // the envelope's hash: what the next record's Prev holds
}

// tap sits in front of the real receiver's handler and keeps a copy of what
// it was sent and what it stored (201), in order.
type tap struct {
	t *testing.T

	mu     sync.Mutex
	bodies [][]byte // every complete upload body, whatever the answer
	stored []stored // bodies answered 201, in store order
	status map[int]int
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// errAfter yields err once the bytes before it are read, so a body cut off
// by a dying client reaches the receiver as cut off.
type errAfter struct{ err error }

func (e errAfter) Read([]byte) (int, error) { return 0, e.err }

func (tp *tap) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), errAfter{err}))
		} else {
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(sw, r)
		tp.mu.Lock()
		defer tp.mu.Unlock()
		tp.status[sw.code]++
		if err != nil {
			return
		}
		tp.bodies = append(tp.bodies, body)
		if sw.code != http.StatusCreated {
			return
		}
		b, err := provenance.UnmarshalBundle(body)
		if err != nil {
			tp.t.Errorf("receiver stored a body that is not a bundle: %v", err)
			return
		}
		v, err := provenance.Verify(b.Envelope, b.Media, nil)
		if err != nil {
			tp.t.Errorf("receiver stored a record that does not verify: %v", err)
			return
		}
		tp.stored = append(tp.stored, stored{p: v.Payload, hash: v.Hash})
	})
}

func (tp *tap) Stored() []stored {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return slices.Clone(tp.stored)
}

// testBed is a device data directory with its key enrolled and paired at a
// real receiver behind a tap, on loopback.
type testBed struct {
	cfg    Config
	device string
	rdir   string
	srv    *receiver.Server
	hs     *httptest.Server
	tap    *tap
	root   *board.FS    // the board: boot ID and uptime under a test root
	upFile string       // its proc/uptime
	up     atomic.Int64 // its boot-time clock, ns
	bootID string
	uptime time.Duration
}

// setUptime keeps the board's time since boot, as the kernel counts it
// (its /proc/uptime and its boot-time clock).
func (tb *testBed) setUptime(t testing.TB, up time.Duration) {
	tb.up.Store(int64(up))
	if err := os.WriteFile(tb.upFile, []byte(fmt.Sprintf("%.3f 1.00\n", up.Seconds())), 0o644); err != nil {
		t.Fatal(err)
	}
}

// sinceBoot is the board's boot-time clock (Deps.SinceBoot).
func (tb *testBed) sinceBoot() (time.Duration, error) { return time.Duration(tb.up.Load()), nil }

func newTestBed(t *testing.T) *testBed {
	t.Helper()
	dir := t.TempDir()
	cfg := testConfig(dir, 160, 120)
	cfg.UploadTimeout = 5 * time.Second

	key, device, _, err := Identity(&cfg, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	closeKey(key)
	pub, err := board.PublicKeyPEM(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	tb := &testBed{cfg: cfg, device: device, rdir: filepath.Join(dir, "receiver"),
		bootID: "3f1c9a52-7e0b-4d8e-9a61-0c5b2d7e4f10", uptime: 12340 * time.Millisecond}
	if _, err := receiver.Enroll(tb.rdir, pub); err != nil {
		t.Fatal(err)
	}
	if err := receiver.Pair(tb.rdir, device, "alice"); err != nil {
		t.Fatal(err)
	}
	tb.srv, err = receiver.Open(receiver.Options{Dir: tb.rdir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.srv.Close() })
	tb.tap = &tap{t: t, status: map[int]int{}}
	tb.hs = httptest.NewServer(tb.tap.wrap(tb.srv.Handler()))
	t.Cleanup(tb.hs.Close)
	tb.cfg.UploadURL = tb.hs.URL

	root := filepath.Join(dir, "board")
	tb.upFile = filepath.Join(root, "proc/uptime")
	for p, v := range map[string]string{
		"proc/sys/kernel/random/boot_id": tb.bootID + "\n",
		"proc/uptime":                    fmt.Sprintf("%.2f 1.00\n", tb.uptime.Seconds()),
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if tb.root, err = board.NewFS(root); err != nil {
		t.Fatal(err)
	}
	return tb
}

// rejections returns the receiver's refusals by reason, leaving out zeros.
func (tb *testBed) rejections() map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range tb.srv.Stats().Rejected {
		if v > 0 {
			out[k] = v
		}
	}
	return out
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testConfig is the defaults with the device's data under dir, a synthetic
// scene of w x h as fast as possible, and retry delays and an upload rate
// scaled down for tests.
func testConfig(dir string, w, h int) Config {
	cfg := DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "device")
	cfg.Source = "synthetic"
	cfg.FPS = 0 // as fast as possible; frame times stay on the nominal timeline
	cfg.Width, cfg.Height = w, h
	cfg.RetryWindow = 10 * time.Millisecond
	cfg.QuickRetry = 10 * time.Millisecond
	cfg.BackoffBase = 10 * time.Millisecond
	cfg.BackoffCap = 100 * time.Millisecond
	cfg.UploadRate = 1000
	return cfg
}

// ---------------------------------------------------------------------------
// A board without RTC: the clock starts in 1970 and NTP sets it mid-run

// ntpClock is the wall clock of a board without RTC. It reads boot time
// since 1970 (1970-01-01 plus the uptime) until sync sets it, like an NTP
// step. Time only moves when the frame source moves it (advance), one frame
// interval a frame, so frame times, the agent's reading of the clock and
// the lifecycle agree however fast the test runs. After waits in real time.
type ntpClock struct {
	mu     sync.Mutex
	now    time.Time
	synced bool
}

func (c *ntpClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *ntpClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

func (c *ntpClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *ntpClock) sync(to time.Time) {
	c.mu.Lock()
	c.now, c.synced = to, true
	c.mu.Unlock()
}

func (c *ntpClock) Synced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced
}

// syncSource plays the synthetic scene for a fixed number of frames and
// sets the clock (NTP) when frame syncAt is captured. With stamp, each
// frame's time is read from the clock at capture, as the V4L2 source maps
// driver timestamps; without, frames keep the synthetic timeline.
type syncSource struct {
	src    capture.Source
	clk    *ntpClock
	syncAt uint64
	syncTo time.Time
	frames uint64
	stamp  bool
	chain  string // the chain state file: read at the sync
	// uptime keeps the board's uptime with the frames: the kernel's
	// count since boot, which the clock step does not move.
	uptime func(time.Duration)
	up0    time.Duration

	n          uint64
	nextAtSync uint64 // the sequence number the first record signed after the sync gets
	syncFrame  time.Time
}

func (s *syncSource) Next(ctx context.Context, f *capture.Frame) error {
	if s.n == s.frames {
		return capture.ErrEndOfStream
	}
	if err := s.src.Next(ctx, f); err != nil {
		return err
	}
	if s.n == s.syncAt {
		c, err := board.LoadChain(s.chain)
		if err != nil {
			return err
		}
		s.nextAtSync = c.Next
		s.clk.sync(s.syncTo)
	} else if s.n > 0 {
		s.clk.advance(time.Second / capture.NominalFPS)
	}
	if s.stamp {
		f.Time = s.clk.Now()
	}
	if s.uptime != nil {
		s.uptime(s.up0 + time.Duration(s.n)*time.Second/capture.NominalFPS)
	}
	if s.n == s.syncAt {
		s.syncFrame = f.Time
	}
	s.n++
	return nil
}

func (s *syncSource) Close() error { return s.src.Close() }

// TestFaultClockStepWithoutRTC boots the agent at 1970 + uptime with an
// unsynchronised clock and sets the clock to 2026 in the middle of an event
// (NTP), then checks every record the receiver stored.
func TestFaultClockStepWithoutRTC(t *testing.T) {
	t.Run("synthetic timeline", func(t *testing.T) { clockStep(t, false) })
	t.Run("frames stamped by the clock", func(t *testing.T) { clockStep(t, true) })
}

func clockStep(t *testing.T, stamp bool) {
	tb := newTestBed(t)
	boot := time.Unix(0, 0).UTC().Add(tb.uptime)
	clk := &ntpClock{now: boot}
	syncTo := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	syn, err := capture.NewSynthetic(capture.SyntheticConfig{Width: tb.cfg.Width, Height: tb.cfg.Height, Seed: 1}, clk)
	if err != nil {
		t.Fatal(err)
	}
	// Four cycles of the scene (one crossing each); the clock is set 4.5 s
	// into the second cycle, while the object is crossing.
	cycle := uint64(capture.SyntheticCycle / (time.Second / capture.NominalFPS))
	src := &syncSource{src: syn, clk: clk, syncAt: cycle + 45, syncTo: syncTo, frames: 4 * cycle, stamp: stamp,
		chain: filepath.Join(tb.cfg.DataDir, "chain"), up0: tb.uptime, uptime: func(d time.Duration) { tb.setUptime(t, d) }}
	a, err := New(tb.cfg, Deps{Clock: clk, Synced: clk.Synced, Board: tb.root, Logger: quietLogger(), Source: src,
		SinceBoot: tb.sinceBoot})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.Run(ctx); err != nil { // returns once the source ended and the spool drained
		t.Fatalf("Run: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the spool did not drain: %d pending", len(a.spool.Pending()))
	}

	recs := tb.tap.Stored()
	// Clip segments go after the records the spool holds (records first):
	// in chain order here.
	slices.SortFunc(recs, func(a, b stored) int { return cmp.Compare(a.p.Seq, b.p.Seq) })
	chain, err := board.LoadChain(filepath.Join(tb.cfg.DataDir, "chain"))
	if err != nil {
		t.Fatal(err)
	}
	// Nothing lost or refused because of its time: every sequence number the
	// chain handed out is stored, once, and nothing was rejected.
	if rej := tb.rejections(); len(rej) > 0 {
		t.Fatalf("receiver rejections: %v", rej)
	}
	if len(recs) == 0 || uint64(len(recs)) != chain.Next-1 {
		t.Fatalf("%d records stored, the chain handed out %d", len(recs), chain.Next-1)
	}
	var events int
	for i, r := range recs {
		if r.p.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d: sequence numbers must keep increasing across the step", i, r.p.Seq)
		}
		if i > 0 && !bytes.Equal(r.p.Prev, recs[i-1].hash[:]) {
			t.Fatalf("seq %d's prev is not seq %d's hash", r.p.Seq, recs[i-1].p.Seq)
		}
		if r.p.Boot != tb.bootID {
			t.Fatalf("seq %d: boot %q, want the board's %q", r.p.Seq, r.p.Boot, tb.bootID)
		}
		if r.p.Kind == provenance.KindStart {
			events++
		}
		// No event spans the step: the scene's crossings last 5 s, and
		// an event starts at most the pre-roll before its trigger.
		if d := time.Duration(r.p.Motion.DurationMs) * time.Millisecond; d > 10*time.Second+tb.cfg.Motion.PreRoll {
			t.Fatalf("seq %d (%s): an event of %v", r.p.Seq, r.p.Kind, d)
		}
	}
	if events < 4 {
		t.Fatalf("%d events for four crossings", events)
	}
	// Records signed before the step say unsynced; records of frames
	// captured after it say synced.
	if src.nextAtSync < 2 || src.nextAtSync > uint64(len(recs)) {
		t.Fatalf("the step came after seq %d of %d: want records on both sides", src.nextAtSync-1, len(recs))
	}
	stepMs := src.syncFrame.UnixMilli()
	for _, r := range recs {
		if r.p.Seq < src.nextAtSync && r.p.Time.Clock != provenance.ClockUnsynced {
			t.Fatalf("seq %d, signed before the step, says clock=%s", r.p.Seq, r.p.Time.Clock)
		}
		if r.p.Time.UnixMs >= stepMs && r.p.Time.Clock != provenance.ClockSynced {
			t.Fatalf("seq %d, captured after the step, says clock=%s", r.p.Seq, r.p.Time.Clock)
		}
	}
	t.Logf("%d records, %d events; the step came before seq %d", len(recs), events, src.nextAtSync)

	// boot_ms orders the records of the boot. A frame before the step is as
	// far from the boot on the monotonic count as on the 1970 clock.
	var prev uint64
	for _, r := range recs {
		captured := time.UnixMilli(r.p.Time.UnixMs)
		if captured.Before(src.syncFrame) {
			if diff := int64(r.p.Time.BootMs) - r.p.Time.UnixMs; diff < -1 || diff > 1 {
				t.Fatalf("seq %d captured %v after 1970 says boot_ms %d", r.p.Seq, captured.Sub(time.Unix(0, 0)), r.p.Time.BootMs)
			}
		}
		if !stamp && r.p.Kind != provenance.KindSegment {
			// (A segment's time is its first frame's: the pre-roll's is
			// before its start record's trigger.)
			if r.p.Time.BootMs < prev {
				t.Fatalf("seq %d: boot_ms %d before the previous record's %d", r.p.Seq, r.p.Time.BootMs, prev)
			}
			prev = r.p.Time.BootMs
		}
	}
	// A record of a frame captured before the step but signed after it (an
	// event's end whose best frame came first) must still say unsynced: the
	// clock quality is that of the capture time.
	t.Run("clock quality of the capture time", func(t *testing.T) {
		for _, r := range recs {
			if r.p.Time.UnixMs < stepMs && r.p.Time.Clock == provenance.ClockSynced {
				t.Fatalf("seq %d (%s) was captured before the clock was set (unix_ms %d, 1970) but says clock=synced", r.p.Seq, r.p.Kind, r.p.Time.UnixMs)
			}
		}
	})
	if !stamp {
		return
	}
	// boot_ms keeps counting from the boot across the step.
	t.Run("boot_ms across the step", func(t *testing.T) {
		var prev uint64
		for _, r := range recs {
			lim := uint64((tb.uptime + time.Hour) / time.Millisecond) // the run lasts minutes of frame time
			if r.p.Time.BootMs > lim || (r.p.Kind != provenance.KindSegment && r.p.Time.BootMs < prev) {
				t.Fatalf("seq %d: boot_ms %d (%v; previous record %d) after a clock step in a run of minutes", r.p.Seq, r.p.Time.BootMs, time.Duration(r.p.Time.BootMs)*time.Millisecond, prev)
			}
			if r.p.Kind != provenance.KindSegment {
				prev = r.p.Time.BootMs
			}
		}
	})
}

// ---------------------------------------------------------------------------
// SIGKILL at random moments

const (
	crashChildEnv = "KEYFRAME_AGENT_CRASH_CHILD" // "run" or "drain" in the child
	crashCfgEnv   = "KEYFRAME_AGENT_CRASH_CFG"   // the configuration file
	crashSeedEnv  = "KEYFRAME_AGENT_CRASH_SEED"  // optional, to replay a run
	crashRounds   = 10
)

// TestAgentCrashChild is the child process of TestFaultAgentSIGKILL: the
// agent on the synthetic scene, uploading, until it is killed ("run"), or
// with a source that ends at once, until the spool is empty ("drain").
func TestAgentCrashChild(t *testing.T) {
	mode := os.Getenv(crashChildEnv)
	if mode == "" {
		t.Skip("helper process for TestFaultAgentSIGKILL; runs only as its child")
	}
	cfg, err := LoadConfig(os.Getenv(crashCfgEnv), nil)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	deps := Deps{Logger: log}
	if mode == "drain" {
		deps.Source = &capturetest.Source{}
	}
	a, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	// Never outlive a parent that died without killing us.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fmt.Println("ready")
	if err := a.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatalf("ran out of time with %d records pending", len(a.spool.Pending()))
	}
	fmt.Printf("drained %+v\n", a.up.Stats())
}

// TestFaultAgentSIGKILL kills the agent with SIGKILL at random moments while
// it makes, spools and uploads records, restarts it each time, and finally
// lets it drain. Every record the chain state says was made is stored once;
// a sequence number skipped by a kill between saving the chain and spooling
// is the only loss the contract allows, and no number is ever reused.
func TestFaultAgentSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary 11 times; skipped in -short mode")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(crashSeedEnv); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (replay with %s=%d)", seed, crashSeedEnv, seed)
	rng := mrand.New(mrand.NewPCG(seed, 3))
	tb := newTestBed(t)
	cfgPath := filepath.Join(t.TempDir(), "keyframe.conf")
	var buf bytes.Buffer
	if err := WriteConfig(&buf, &tb.cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	start := func(mode string) (*exec.Cmd, chan struct{}, *lockedBuffer) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestAgentCrashChild$", "-test.count=1", "-test.timeout=60s")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+mode, crashCfgEnv+"="+cfgPath)
		stderr := &lockedBuffer{}
		cmd.Stderr = stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		})
		ready := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(stdout)
			once := sync.OnceFunc(func() { close(ready) })
			defer once()
			for sc.Scan() {
				if sc.Text() == "ready" {
					once()
				}
			}
		}()
		return cmd, ready, stderr
	}

	var kills int
	prevNext := uint64(1)
	for round := range crashRounds {
		cmd, ready, stderr := start("run")
		select {
		case <-ready:
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: child not ready:\n%s", round, stderr)
		}
		// Kill at a random moment once this run has made a record, so every
		// round interrupts work however slow the machine: mid-frame,
		// mid-signing, between saving the chain and spooling, mid-upload.
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			c, err := board.LoadChain(filepath.Join(tb.cfg.DataDir, "chain"))
			if err != nil {
				t.Fatal(err)
			}
			if c.Next > prevNext {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: no record made:\n%s", round, stderr)
			}
		}
		time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("round %d: kill: %v\n%s", round, err, stderr)
		}
		err := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended by itself (%v), not by SIGKILL:\n%s", round, err, stderr)
		}
		kills++
		c, err := board.LoadChain(filepath.Join(tb.cfg.DataDir, "chain"))
		if err != nil {
			t.Fatalf("round %d: chain state after SIGKILL: %v", round, err)
		}
		if c.Next < prevNext {
			t.Fatalf("round %d: chain went back from %d to %d", round, prevNext, c.Next)
		}
		t.Logf("round %d: killed with %d records made so far, %d stored", round, c.Next-1, len(tb.tap.Stored()))
		prevNext = c.Next
	}

	cmd, _, stderr := start("drain")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("draining agent failed: %v\n%s", err, stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("draining agent did not finish:\n%s", stderr)
	}

	chain, err := board.LoadChain(filepath.Join(tb.cfg.DataDir, "chain"))
	if err != nil {
		t.Fatal(err)
	}
	made := chain.Next - 1
	recs := tb.tap.Stored()
	st := tb.srv.Stats()
	t.Logf("%d kills; %d records made, %d stored, %d identical re-sends, rejected %v",
		kills, made, len(recs), st.Duplicates, tb.rejections())
	// No sequence number reused, nothing refused but bodies cut off by a kill.
	for reason, n := range tb.rejections() {
		if reason != receiver.ReasonMalformed || n > uint64(kills) {
			t.Fatalf("receiver rejected %d uploads as %s (replay must be 0; only a kill mid-upload may cut a body)", n, reason)
		}
	}
	// Each stored once, within what the chain handed out; records other
	// than clip segments in sequence order (segments go after them).
	seen := map[uint64]bool{}
	var last uint64
	for _, r := range recs {
		if seen[r.p.Seq] || r.p.Seq > made || (r.p.Kind != provenance.KindSegment && r.p.Seq <= last) {
			t.Fatalf("stored seq %d (%s, after %d) twice, out of order or beyond the chain's %d", r.p.Seq, r.p.Kind, last, made)
		}
		seen[r.p.Seq] = true
		if r.p.Kind != provenance.KindSegment {
			last = r.p.Seq
		}
	}
	slices.SortFunc(recs, func(a, b stored) int { return cmp.Compare(a.p.Seq, b.p.Seq) })
	for i, r := range recs {
		// Consecutive numbers are chained: nothing was signed between them.
		if i > 0 && r.p.Seq == recs[i-1].p.Seq+1 && !bytes.Equal(r.p.Prev, recs[i-1].hash[:]) {
			t.Fatalf("seq %d's prev is not seq %d's hash", r.p.Seq, recs[i-1].p.Seq)
		}
	}
	var gaps []uint64
	for s := uint64(1); s <= made; s++ {
		if !seen[s] {
			gaps = append(gaps, s)
		}
	}
	// A kill between saving the chain and spooling skips one number: at
	// most one per kill.
	if len(gaps) > kills {
		t.Fatalf("%d sequence numbers made but never stored (%v), more than the %d kills can explain", len(gaps), gaps, kills)
	}
	// The spool is empty; nothing was quarantined.
	sp, err := uploader.OpenSpool(uploader.SpoolConfig{Dir: spoolDir(&tb.cfg)})
	if err != nil {
		t.Fatal(err)
	}
	if s := sp.Stats(); s.Pending != 0 || s.Quarantined != 0 || s.Corrupt != 0 {
		t.Fatalf("spool after the drain: %+v", s)
	}
	if q, _ := os.ReadDir(filepath.Join(spoolDir(&tb.cfg), uploader.QuarantineDir)); len(q) != 0 {
		t.Fatalf("quarantine holds %d files", len(q))
	}
}

// lockedBuffer is a log sink written by one goroutine (a child's stderr
// copied by exec, the agent's logger) and read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// ---------------------------------------------------------------------------
// Spool files damaged while the agent was stopped

// stopAfter is the synthetic scene for a fixed number of frames, then the
// end of the stream.
type stopAfter struct {
	capture.Source
	frames, n uint64
}

func (s *stopAfter) Next(ctx context.Context, f *capture.Frame) error {
	if s.n == s.frames {
		return capture.ErrEndOfStream
	}
	s.n++
	return s.Source.Next(ctx, f)
}

// TestFaultCorruptSpoolAtStart: the agent makes records while the receiver
// is unreachable and stops; its spool files are then damaged (bit flips, a
// truncation, a wrong header, a file renamed to another sequence number,
// garbage and empty files). Restarted against the receiver, the agent
// quarantines and counts every damaged file, the receiver never sees one of
// their bytes, and every intact record is stored.
func TestFaultCorruptSpoolAtStart(t *testing.T) {
	tb := newTestBed(t)
	// Start and end records only: a clip's segments whose start record was
	// damaged are refused by the receiver (nothing anchors them), which
	// is another test's matter (receiver's late segments).
	tb.cfg.ClipEnabled = false
	offline := tb.cfg
	offline.UploadURL = "http://127.0.0.1:1" // nothing listens there
	syn, err := capture.NewSynthetic(capture.SyntheticConfig{Width: offline.Width, Height: offline.Height, Seed: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cycle := uint64(capture.SyntheticCycle / (time.Second / capture.NominalFPS))
	a, err := New(offline, Deps{Board: tb.root, Logger: quietLogger(), Source: &stopAfter{Source: syn, frames: 6 * cycle}})
	if err != nil {
		t.Fatal(err)
	}
	// The source ends, the spool cannot drain: stop once every frame is in.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	for deadline := time.Now().Add(30 * time.Second); a.frames.Load() < 6*cycle && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	dir := spoolDir(&tb.cfg)
	ents := a.spool.Pending()
	if len(ents) < 10 {
		t.Fatalf("%d records spooled, want at least 10", len(ents))
	}
	name := func(e uploader.Entry) string {
		return fmt.Sprintf("%020d-%s-%s.kfr", e.Seq, e.Event, e.Kind)
	}
	original := map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, name(e)))
		if err != nil {
			t.Fatal(err)
		}
		original[name(e)] = b
	}
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 4))
	write := func(n string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The bytes that must never reach the receiver: every damaged file's
	// data, whole.
	var damaged []string
	flip := func(e uploader.Entry, bits int) {
		b := bytes.Clone(original[name(e)])
		for _, bit := range rng.Perm(8 * len(b))[:bits] {
			b[bit/8] ^= 1 << (bit % 8)
		}
		write(name(e), b)
		damaged = append(damaged, name(e))
	}
	flip(ents[0], 1) // the oldest: the first one the uploader would send
	flip(ents[3], 3)
	b := original[name(ents[4])]
	write(name(ents[4]), b[:len(b)/2])
	damaged = append(damaged, name(ents[4]))
	b = bytes.Clone(original[name(ents[5])])
	b[4] = 9 // version 9
	write(name(ents[5]), b)
	damaged = append(damaged, name(ents[5]))
	// An intact record under another sequence number (past the last one, so
	// it would be sent last and look new to the receiver).
	moved := uploader.Entry{Seq: ents[len(ents)-1].Seq + 5, Event: ents[6].Event, Kind: ents[6].Kind}
	if err := os.Rename(filepath.Join(dir, name(ents[6])), filepath.Join(dir, name(moved))); err != nil {
		t.Fatal(err)
	}
	damaged = append(damaged, name(moved))
	// Garbage and empty files under record names, garbage under others.
	g := make([]byte, 3000)
	for i := range g {
		g[i] = byte(rng.Uint32())
	}
	garbage := uploader.Entry{Seq: ents[len(ents)-1].Seq + 7, Event: "0000000000000-garbage", Kind: provenance.KindStart}
	write(name(garbage), g)
	empty := uploader.Entry{Seq: ents[len(ents)-1].Seq + 8, Event: ents[2].Event, Kind: provenance.KindEnd}
	write(name(empty), nil)
	damaged = append(damaged, name(garbage), name(empty))
	write("garbage.bin", g)
	write("empty", nil)
	var good []uint64
	for i, e := range ents {
		if i != 0 && (i < 3 || i > 6) {
			good = append(good, e.Seq)
		}
	}

	// Restart against the receiver, with a source that ends at once: Run
	// returns when the spool has drained.
	a2, err := New(tb.cfg, Deps{Board: tb.root, Logger: quietLogger(), Source: &capturetest.Source{}})
	if err != nil {
		t.Fatal(err)
	}
	st := a2.spool.Stats()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if err := a2.Run(ctx2); err != nil || ctx2.Err() != nil {
		t.Fatalf("Run: %v (%d pending)", err, len(a2.spool.Pending()))
	}
	if st.Corrupt != len(damaged) || st.Quarantined != len(damaged) || st.Unknown != 2 || st.Pending != len(good) {
		t.Fatalf("spool at start: %+v, want %d damaged files quarantined, 2 unknown, %d pending", st, len(damaged), len(good))
	}
	for _, n := range damaged {
		reason, err := os.ReadFile(filepath.Join(dir, uploader.QuarantineDir, n+".reason"))
		if err != nil || !strings.Contains(string(reason), "corrupt") {
			t.Errorf("%s: reason %q, %v", n, reason, err)
		}
	}
	// The receiver got each intact record once and nothing else.
	recs := tb.tap.Stored()
	var got []uint64
	for _, r := range recs {
		got = append(got, r.p.Seq)
	}
	if !slices.Equal(got, good) {
		t.Fatalf("stored %v, want the intact records %v", got, good)
	}
	tb.tap.mu.Lock()
	bodies := len(tb.tap.bodies)
	tb.tap.mu.Unlock()
	if rej := tb.rejections(); len(rej) > 0 || bodies != len(good) {
		t.Fatalf("receiver got %d bodies for %d records and rejected %v: a damaged file was sent", bodies, len(good), rej)
	}
	if up := a2.up.Stats(); up.Sent != len(good) || up.Quarantined != 0 || up.Corrupt != 0 {
		t.Fatalf("uploader %+v", up)
	}
}
