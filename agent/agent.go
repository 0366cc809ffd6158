// Package agent wires keyframe's subsystems into the daemon: configuration,
// the frame source, the motion detector and event lifecycle, thumbnails,
// signing, the spool and the uploader.
//
// It is the one package that imports capture, motion, provenance, board and
// uploader; nothing else may import agent except cmd/keyframe. Logic that
// belongs to a subsystem stays there: agent only decides what goes where.
package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/internal/clock"
	"github.com/keyframe-cam/keyframe/internal/logthrottle"
	"github.com/keyframe-cam/keyframe/motion"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/recorder"
	"github.com/keyframe-cam/keyframe/recorder/rotation"
	"github.com/keyframe-cam/keyframe/uploader"
)

// Deps are the parts of the machine the agent uses; tests replace them.
type Deps struct {
	Clock clock.Clock // the time source of the agent and its subsystems; nil: the system clock
	// SinceBoot reads the time since boot per recorded frame (no wall
	// clock step moves it); nil means board.SinceBoot (CLOCK_BOOTTIME).
	SinceBoot func() (time.Duration, error)
	Rand      io.Reader      // key generation, event IDs, signatures
	Board     *board.FS      // machine root
	Synced    func() bool    // whether the wall clock is synchronised
	Logger    *slog.Logger   // agent and subsystem logs
	Source    capture.Source // if not nil, used instead of opening one from the config
	// SourceInfo is what records name as the source of an injected Source;
	// nil: records name none.
	SourceInfo *provenance.Source
	// Watchdog, if not nil, is used instead of opening watchdog.device.
	Watchdog *board.Watchdog
	// Service is the service manager the agent reports to (systemd's
	// notification socket, internal/sdnotify); nil: none.
	Service ServiceManager
	// LiveH264, if not nil, feeds the WebRTC live view (livertc.go; only
	// in a binary built with -tags webrtc).
	LiveH264 H264Source
}

// ServiceManager is what the agent tells the service manager that started
// it (sd_notify(3); *sdnotify.Notifier): that it is ready, keepalives for
// the service watchdog while healthy, and that it is stopping.
type ServiceManager interface {
	Ready(status string) error
	Watchdog() error
	Stopping() error
	// WatchdogTimeout is the service watchdog's timeout; 0: none.
	WatchdogTimeout() time.Duration
}

// Identity loads (or creates) the device key named by the configuration.
func Identity(c *Config, rnd io.Reader) (board.Key, string, bool, error) {
	var (
		k       board.Key
		created bool
		err     error
	)
	switch c.KeyBackend {
	case board.BackendTPM:
		k, created, err = tpmIdentity(c)
	default:
		k, created, err = board.LoadOrCreateFileKey(KeyPath(c), rnd)
	}
	if err != nil {
		return nil, "", false, err
	}
	id, err := provenance.DeviceID(k.Public())
	if err != nil {
		closeKey(k)
		return nil, "", false, fmt.Errorf("agent: %w", err)
	}
	return k, id, created, nil
}

// tpmKey is a TPM-held device key with the TPM connection it signs
// through; Close closes the connection.
type tpmKey struct {
	board.Key
	tpm *board.TPM
}

func (k tpmKey) Close() error { return k.tpm.Close() }

// tpmIdentity opens the configured TPM and loads (or creates) the device key
// at the configured persistent handle.
func tpmIdentity(c *Config) (board.Key, bool, error) {
	fs, err := board.NewFS("/")
	if err != nil {
		return nil, false, err
	}
	t, err := fs.OpenTPM(c.TPM)
	if err != nil {
		if errors.Is(err, board.ErrNoTPM) {
			return nil, false, fmt.Errorf("agent: device.key_backend is tpm but there is no TPM at %s: %w", c.TPM, err)
		}
		return nil, false, err
	}
	k, created, err := board.LoadOrCreateTPMKey(t, c.TPMHandle)
	if err != nil {
		t.Close()
		return nil, false, err
	}
	return tpmKey{Key: k, tpm: t}, created, nil
}

// closeKey closes what a key holds open (a TPM connection), if anything.
func closeKey(k board.Key) {
	if c, ok := k.(io.Closer); ok {
		c.Close()
	}
}

// KeyLocation says where the configured device key lives, for logs:
// the key file, or the TPM and handle.
func KeyLocation(c *Config) string {
	if c.KeyBackend == board.BackendTPM {
		return fmt.Sprintf("%s handle %#x", c.TPM, c.TPMHandle)
	}
	return KeyPath(c)
}

// Layout is where the configured device keeps its key, certificate, chain
// state, spool and a pending key rotation.
func Layout(c *Config) recorder.Layout {
	return recorder.NewLayout(c.DataDir, c.KeyFile, c.CertFile, c.SpoolDir)
}

// KeyPath is the device key file the configuration names (Layout(c).Key).
func KeyPath(c *Config) string { return Layout(c).Key }

func spoolDir(c *Config) string { return Layout(c).Spool }

// Agent is the running daemon.
type Agent struct {
	cfg    Config
	deps   Deps
	log    *slog.Logger
	key    board.Key
	device string
	stamp  *recorder.Stamper // boot ID, clock quality and time since boot of each record
	start  time.Time         // clock reading when the agent started
	spool  *uploader.Spool
	up     *uploader.Uploader
	rec    *recorder.Recorder // signs, advances the chain, then spools
	recs   *recordQueue       // the frame loop's records (and snapshots), made off the frame path
	clips  *clipper           // events' clips; nil with clip.enabled = false
	thumb  bytes.Buffer       // the record worker's thumbnail buffer

	health health
	mqtt   *uploader.MQTT // nil unless upload.url is an MQTT broker
	// rotation is the key rotation whose rotate record is not yet
	// delivered (nil: none); certMu guards cert, which a completed
	// rotation drops.
	rotation *rotation.Pending
	certMu   sync.Mutex
	cert     *tls.Certificate
	pub      *publisher
	// src is what records name as their frames' source: set when a
	// source opens (by the frame loop's goroutine, which alone reads it).
	src    *provenance.Source
	frames atomic.Uint64 // frames analysed
	events atomic.Uint64 // events started
	seqs   frameSeqs     // gaps in the frames' sequence numbers, lateness
	// live hands frames to the live view (live.go); nil when it is off.
	live    *liveFeed
	liveURL string
	liveRTC liveRTC   // answers WebRTC offers (livertc.go); nil without -tags webrtc or an H.264 source
	lan     *lanView  // the LAN view (lan.go); nil when it is off
	e2ee    *e2eeKeys // the owner's key set pictures are sealed to (e2ee.go); nil when e2ee is off
}

// health is what the watchdog loop reads from the frame loop.
type health struct {
	mu        sync.Mutex
	lastFrame time.Time
	spoolErr  error // the last spool write's failure (not a full spool: that is policy), nil once one succeeds
}

func (h *health) frame(t time.Time) {
	h.mu.Lock()
	h.lastFrame = t
	h.mu.Unlock()
}

// frameSeqs is what the frame loop learns of frames lost before it: gaps
// in Frame.Sequence (a V4L2 driver's frame counter, whose gaps are frames
// it dropped, mostly because the loop had not given a buffer back in time)
// and the most a frame was taken up after its capture time (the measure
// for sources that deliver late frames late rather than drop them:
// synthetic, dir; a V4L2 frame is stamped when dequeued, so its lateness
// says nothing). A frame taken up more than two frame intervals (at
// capture.fps) after its capture time is counted late: a driver with three
// buffers would have dropped it. last and seen are the frame loop's alone.
type frameSeqs struct {
	last     uint64
	seen     bool
	lateOver time.Duration // 0: capture.fps 0, nothing counts as late
	lost     atomic.Uint64
	late     atomic.Uint64
	lateMax  atomic.Int64 // nanoseconds
}

// observe notes frame seq taken up late after its capture time. The
// first frame's number counts the frames before it as lost (a driver's
// counter starts at 0), as does a number not after the last one's: a
// source reopened (capture.Reopening restarts the sequence).
func (s *frameSeqs) observe(seq uint64, late time.Duration) {
	switch {
	case !s.seen || seq <= s.last:
		s.lost.Add(seq)
	case seq > s.last+1:
		s.lost.Add(seq - s.last - 1)
	}
	s.last, s.seen = seq, true
	if s.lateOver > 0 && late > s.lateOver {
		s.late.Add(1)
	}
	if int64(late) > s.lateMax.Load() {
		s.lateMax.Store(int64(late))
	}
}

func (h *health) lastFrameAt() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastFrame
}

func (h *health) spooled(err error) {
	if errors.Is(err, uploader.ErrFull) {
		err = nil
	}
	h.mu.Lock()
	h.spoolErr = err
	h.mu.Unlock()
}

func (h *health) spoolCheck(time.Time) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.spoolErr
}

// New prepares an agent: identity, chain state and spool. Nothing runs until Run.
func New(cfg Config, deps Deps) (*Agent, error) {
	if deps.Clock == nil {
		deps.Clock = clock.System{}
	}
	if deps.Rand == nil {
		deps.Rand = rand.Reader
	}
	if deps.Synced == nil {
		deps.Synced = board.ClockSynced
	}
	if deps.SinceBoot == nil {
		deps.SinceBoot = board.SinceBoot
	}
	if deps.Logger == nil {
		deps.Logger, _ = logthrottle.NewText(os.Stderr, slog.LevelInfo)
	}
	if deps.Board == nil {
		fs, err := board.NewFS("/")
		if err != nil {
			return nil, err
		}
		deps.Board = fs
	}
	a := &Agent{cfg: cfg, deps: deps, log: deps.Logger, start: deps.Clock.Now()}
	if cfg.FPS > 0 {
		a.seqs.lateOver = time.Duration(2 * float64(time.Second) / cfg.FPS)
	}
	a.recs = newRecordQueue(a.work)
	if cfg.ClipEnabled {
		c, err := newClipper(&cfg, deps.Clock, deps.Logger)
		if err != nil {
			return nil, fmt.Errorf("agent: clips: %w", err)
		}
		a.clips = c
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: data dir: %w", err)
	}
	key, id, created, err := Identity(&cfg, deps.Rand)
	if err != nil {
		return nil, err
	}
	made := false
	defer func() {
		if !made {
			closeKey(key) // New failed: let go of the TPM
		}
	}()
	// A key rotation prepared by `keyframe identity rotate`: sign with the
	// new key from now on; the rotate record goes out first (below).
	layout := Layout(&cfg)
	pending, err := rotation.Load(layout)
	if err != nil {
		return nil, fmt.Errorf("agent: pending key rotation: %w", err)
	}
	if pending != nil {
		if cfg.KeyBackend != board.BackendFile {
			return nil, fmt.Errorf("agent: a key rotation is pending in %s but device.key_backend is %s", cfg.DataDir, cfg.KeyBackend)
		}
		next, _, err := board.LoadOrCreateFileKey(pending.NewKeyPath, deps.Rand)
		if err != nil {
			return nil, fmt.Errorf("agent: new key of the pending rotation: %w", err)
		}
		if nid, err := provenance.DeviceID(next.Public()); err != nil || nid != pending.NewDevice {
			return nil, fmt.Errorf("agent: %s does not hold the new key %s the pending rotation names", pending.NewKeyPath, pending.NewDevice)
		}
		key, id = next, pending.NewDevice
		a.rotation = pending
		a.log.Info("key rotation pending: signing with the new key; the rotate record goes first",
			"old_device", pending.OldDevice, "device", id, "seq", pending.Seq)
	}
	a.key, a.device = key, id
	if created {
		a.log.Info("created device key", "device", id, "backend", key.Backend(), "where", KeyLocation(&cfg))
	}
	a.stamp, err = recorder.NewStamper(recorder.StampConfig{
		Board: deps.Board, Rand: deps.Rand, Synced: deps.Synced, SinceBoot: deps.SinceBoot,
		Now: deps.Clock.Now, Logger: a.log,
	})
	if err != nil {
		return nil, err
	}
	a.spool, err = uploader.OpenSpool(uploader.SpoolConfig{
		Dir:             layout.Spool,
		MaxBytes:        cfg.SpoolMaxBytes,
		SegmentMaxBytes: cfg.SpoolSegBytes,
		Policy:          uploader.Policy(cfg.SpoolPolicy),
		Logger:          a.log,
	})
	if err != nil {
		return nil, err
	}
	a.loadCert()
	rc := recorder.Config{
		Chain: recorder.ChainFile(layout.Chain), Spool: healthSpool{a}, Key: a.key,
		CertChain: a.x5chain, Rand: deps.Rand,
	}
	if a.rotation != nil {
		// The rotate record goes first.
		rc.Pending = []uploader.Record{a.rotation.Record()}
	}
	if a.rec, err = recorder.Open(rc); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	tr, m, err := a.transport(a.cert)
	if err != nil {
		return nil, err
	}
	a.mqtt, a.pub = m, newPublisher()
	a.setupE2EE()
	a.setupLive()
	if err := a.setupLAN(); err != nil {
		return nil, err
	}
	seed := make([]byte, 16)
	if _, err := io.ReadFull(deps.Rand, seed); err != nil {
		return nil, fmt.Errorf("agent: seed: %w", err)
	}
	rnd := mrand.New(mrand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])))
	a.up = uploader.New(uploader.Config{
		BackoffBase:   cfg.BackoffBase,
		BackoffCap:    cfg.BackoffCap,
		RetryWindow:   cfg.RetryWindow,
		QuickRetry:    cfg.QuickRetry,
		RetryAfterCap: cfg.RetryAfterCap,
		StableAfter:   cfg.StableAfter,
		Rate:          cfg.UploadRate,
		MaxRate:       cfg.UploadMaxRate,
		Delivered:     a.delivered,
	}, a.spool, tr, deps.Clock, rnd, a.log)
	made = true
	return a, nil
}

// DeviceID is the device's ID, derived from its public key.
func (a *Agent) DeviceID() string { return a.device }

// Frames is the number of frames the frame loop has processed.
func (a *Agent) Frames() uint64 { return a.frames.Load() }

// FramesLost is the number of frames missing from the sequence numbers the
// frame loop saw: for a V4L2 camera, the frames its driver dropped.
func (a *Agent) FramesLost() uint64 { return a.seqs.lost.Load() }

// FrameLateMax is the longest a frame waited after its capture time before
// the frame loop took it up (see frameSeqs).
func (a *Agent) FrameLateMax() time.Duration { return time.Duration(a.seqs.lateMax.Load()) }

// FramesLate is the number of frames the frame loop took up more than two
// frame intervals after their capture time (see frameSeqs).
func (a *Agent) FramesLate() uint64 { return a.seqs.late.Load() }

// Run captures, detects, signs, spools and uploads until ctx is cancelled or
// the source ends (an image-sequence directory without loop). Pending records
// stay in the spool for the next start. Run is called once: it closes the
// device key's TPM connection, if any, when it returns.
func (a *Agent) Run(ctx context.Context) error {
	defer closeKey(a.key)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := a.up.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error("uploader stopped", "err", err)
		}
	}()
	if a.mqtt != nil {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := a.mqtt.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				a.log.Error("mqtt stopped", "err", err)
			}
		}()
		go func() {
			defer wg.Done()
			a.publish(ctx)
		}()
	}
	a.startLive(ctx, &wg)
	a.startKeyset(ctx, &wg)
	if err := a.startLAN(ctx, &wg); err != nil {
		cancel()
		wg.Wait()
		return err
	}
	startDog, werr := a.startWatchdog(ctx, &wg)
	if werr != nil {
		cancel()
		wg.Wait()
		return werr
	}
	if a.deps.Service != nil {
		if err := a.deps.Service.Ready("device " + a.device); err != nil {
			a.log.Warn("cannot tell the service manager the agent is ready", "err", err)
		}
		defer func() {
			if err := a.deps.Service.Stopping(); err != nil {
				a.log.Warn("cannot tell the service manager the agent is stopping", "err", err)
			}
		}()
	}
	// The keepalives begin once the service manager was told the agent is
	// ready: READY first, then WATCHDOG.
	startDog()
	if a.clips != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.clips.feeder.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				a.log.Error("clip encoder stopped", "err", err)
			}
			if a.clips.enc != nil {
				_ = a.clips.enc.Close() // stops the encoder's command
			}
		}()
	}
	go a.recs.run()
	err := a.capture(ctx)
	// Every record the frame loop handed over is made and spooled before
	// the agent stops or waits for the spool to drain.
	a.recs.close()
	if errors.Is(err, capture.ErrEndOfStream) {
		a.log.Info("source ended; waiting for the spool to drain")
		a.drain(ctx)
		err = nil
	}
	cancel()
	wg.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// startWatchdog opens the configured hardware watchdog and pets it from its
// own goroutine only while frames arrive and the spool can be written, so a
// stalled pipeline resets the board. An orderly stop disarms it (magic close).
// The service manager's watchdog (systemd's WatchdogSec=) is fed on the same
// ticks under the same checks, with or without a hardware watchdog. It
// arms the watchdog and returns start, which starts the loop (Run calls it
// after READY).
func (a *Agent) startWatchdog(ctx context.Context, wg *sync.WaitGroup) (start func(), err error) {
	none := func() {}
	dog, err := a.openWatchdog()
	if err != nil {
		return none, err
	}
	var service time.Duration
	if a.deps.Service != nil {
		service = a.deps.Service.WatchdogTimeout()
	}
	if dog == nil && service == 0 {
		return none, nil
	}
	var interval time.Duration
	if dog != nil {
		timeout, err := dog.SetTimeout(a.cfg.WatchdogTimeout)
		if err != nil {
			dog.Close()
			return none, fmt.Errorf("agent: watchdog: %w", err)
		}
		boot, _ := dog.BootStatus()
		a.log.Info("watchdog armed", "device", a.cfg.WatchdogDevice, "identity", dog.Identity(), "timeout", timeout, "bootstatus", boot.String())
		interval = max(timeout/4, 250*time.Millisecond)
	}
	var keepalive func() error
	if service > 0 {
		a.log.Info("service watchdog: keepalives while healthy", "timeout", service)
		keepalive = a.deps.Service.Watchdog
		if iv := service / 4; interval == 0 || iv < interval {
			interval = iv
		}
	}
	a.health.frame(a.deps.Clock.Now())
	loop := &board.WatchdogLoop{
		Dog:       dog,
		Keepalive: keepalive,
		Interval:  interval,
		Checks: []board.HealthCheck{
			board.StallCheck("frames", a.cfg.WatchdogStall, a.health.lastFrameAt),
			{Name: "spool", Check: a.health.spoolCheck},
		},
		Clock:  a.deps.Clock,
		Logger: a.log,
	}
	return func() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := loop.Run(ctx); err != nil {
				a.log.Error("watchdog loop stopped", "err", err)
			}
		}()
	}, nil
}

// openWatchdog opens the hardware watchdog (Deps.Watchdog, else
// watchdog.device); nil without one.
func (a *Agent) openWatchdog() (*board.Watchdog, error) {
	if a.deps.Watchdog != nil {
		return a.deps.Watchdog, nil
	}
	if a.cfg.WatchdogDevice == "" {
		return nil, nil
	}
	dog, err := a.deps.Board.OpenWatchdog(a.cfg.WatchdogDevice)
	if err != nil {
		if errors.Is(err, board.ErrAbsent) {
			a.log.Warn("no hardware watchdog; running without one", "device", a.cfg.WatchdogDevice, "err", err)
			return nil, nil
		}
		return nil, fmt.Errorf("agent: watchdog: %w", err)
	}
	return dog, nil
}

// drain waits until the spool is empty or ctx ends.
func (a *Agent) drain(ctx context.Context) {
	for len(a.spool.Pending()) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-a.deps.Clock.After(100 * time.Millisecond):
		}
	}
}

func (a *Agent) openSource() (capture.Source, string, error) {
	c := &a.cfg
	switch c.Source {
	case "auto", "v4l2":
		src, err := a.openV4L2()
		return src, "v4l2", err
	case "exec":
		src, err := a.openExec()
		return src, "exec", err
	case "synthetic":
		src, err := capture.NewSynthetic(capture.SyntheticConfig{Width: c.Width, Height: c.Height, FPS: c.FPS, Seed: c.Seed}, a.deps.Clock)
		if err == nil {
			a.src = &provenance.Source{Kind: provenance.SourceSynthetic}
			a.log.Warn("capture.source = synthetic: frames come from a generated scene, not a camera; every record says so (source synthetic)")
		}
		return src, "synthetic", err
	case "dir":
		src, err := capture.OpenDir(capture.DirConfig{Dir: c.Dir, FPS: c.FPS, Loop: c.LoopDir, Logger: a.log}, a.deps.Clock)
		if err == nil {
			a.src = &provenance.Source{Kind: provenance.SourceImages, Name: sourceText(filepath.Base(filepath.Clean(c.Dir)))}
			a.log.Warn("capture.source = dir: frames come from still images, not a camera; every record says so (source images)", "dir", c.Dir)
		}
		return src, "dir", err
	}
	return nil, c.Source, fmt.Errorf("agent: unknown source %q", c.Source)
}

// sourceText cuts s to what a record's source may hold (valid UTF-8).
func sourceText(s string) string {
	s = strings.ToValidUTF8(s, "?")
	for len(s) > provenance.MaxSourceText {
		_, n := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-n]
	}
	return s
}

// v4l2Source is what records name for an open camera: its card and bus.
func v4l2Source(v *capture.V4L2) *provenance.Source {
	g := v.Geometry()
	return &provenance.Source{Kind: provenance.SourceV4L2, Name: sourceText(g.Card), Bus: sourceText(g.Bus)}
}

// openExec starts the frame command once (so a command that cannot start
// fails at start, naming itself), then keeps it running: a command that
// exits or stalls is stopped and started again with backoff.
func (a *Agent) openExec() (capture.Source, error) {
	c := &a.cfg
	argv, err := capture.ParseCommand(c.Exec)
	if err != nil {
		return nil, fmt.Errorf("agent: capture.exec: %w", err)
	}
	format, err := capture.ParseExecFormat(c.ExecFormat)
	if err != nil {
		return nil, fmt.Errorf("agent: capture.exec_format: %w", err)
	}
	ec := capture.ExecConfig{Argv: argv, Format: format, Width: c.Width, Height: c.Height, MaxJPEG: c.ExecMaxJPEG, Logger: a.log}
	first, err := capture.OpenExec(ec, a.deps.Clock)
	if err != nil {
		return nil, fmt.Errorf("agent: capture.exec: %w", err)
	}
	a.src = &provenance.Source{Kind: provenance.SourceExec, Name: sourceText(first.Name())}
	var pending capture.Source = first
	open := func() (capture.Source, error) {
		if pending != nil {
			s := pending
			pending = nil
			return s, nil
		}
		e, err := capture.OpenExec(ec, a.deps.Clock)
		if err != nil {
			return nil, err
		}
		a.src = &provenance.Source{Kind: provenance.SourceExec, Name: sourceText(e.Name())}
		return e, nil
	}
	return capture.Reopening(open, capture.ReopenConfig{Base: c.SourceRetry, Cap: c.RetryCap, Stall: c.Stall}, a.deps.Clock, a.log), nil
}

// openV4L2 opens the camera once (so a wrong setting fails at start, naming
// itself), then wraps it so that a camera that disappears, errors or stalls is
// closed and reopened with backoff while the agent keeps running.
func (a *Agent) openV4L2() (capture.Source, error) {
	c := &a.cfg
	format, err := capture.ParsePixelFormat(c.Format)
	if err != nil {
		return nil, fmt.Errorf("agent: capture.format: %w", err)
	}
	controls, err := capture.ParseControls(c.Controls)
	if err != nil {
		return nil, fmt.Errorf("agent: capture.controls: %w", err)
	}
	vc := capture.V4L2Config{Device: c.Device, Width: c.Width, Height: c.Height, FPS: c.FPS, Buffers: c.Buffers,
		Stall: c.Stall, Format: format, Controls: controls, Logger: a.log}
	var pending capture.Source
	first, absent := capture.OpenV4L2(vc, a.deps.Clock)
	switch {
	case absent == nil:
		g := first.Geometry()
		a.log.Info("camera format negotiated", "device", c.Device, "card", g.Card, "bus", g.Bus, "format", g.Format.String(), "width", g.Width, "height", g.Height,
			"stride", g.Stride, "fps", g.FPS, "buffers", g.Buffers)
		a.src = v4l2Source(first)
		pending = first
	case errors.Is(absent, capture.ErrNoDevice):
		// Never a made-up scene in place of a camera: wait for it.
		a.log.Warn("no camera: waiting for it; nothing is recorded or uploaded until it appears "+
			"(keyframe never substitutes a synthetic scene; set capture.source = synthetic for a demo, or exec for a Raspberry Pi camera module)",
			"device", c.Device, "source", c.Source, "err", absent)
	default:
		return nil, absent
	}
	open := func() (capture.Source, error) {
		if pending != nil {
			s := pending
			pending = nil
			return s, nil
		}
		v, err := capture.OpenV4L2(vc, a.deps.Clock)
		if err != nil {
			return nil, err
		}
		g := v.Geometry()
		a.log.Info("camera opened", "device", c.Device, "card", g.Card, "bus", g.Bus, "format", g.Format.String(), "width", g.Width, "height", g.Height)
		a.src = v4l2Source(v)
		return v, nil
	}
	return capture.Reopening(open, capture.ReopenConfig{Base: c.SourceRetry, Cap: c.RetryCap, Stall: c.Stall, Absent: absent}, a.deps.Clock, a.log), nil
}

// capture is the frame loop: one frame in, at most a detector step, a lifecycle
// step and (rarely) a record handed to the record worker. The frame buffers
// are reused.
func (a *Agent) capture(ctx context.Context) error {
	src := a.deps.Source
	kind := "injected"
	a.src = a.deps.SourceInfo
	if src == nil {
		var err error
		src, kind, err = a.openSource()
		if err != nil {
			return err
		}
	}
	defer src.Close()
	det, err := motion.NewDetector(a.cfg.Motion)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	life := motion.NewLifecycle(a.cfg.Motion)
	a.log.Info("capturing", "source", kind, "device", a.device, "upload", a.cfg.UploadURL)

	var frame, best capture.Frame
	var bestStamp recorder.Stamp
	var bestSrc *provenance.Source
	var event string
	var last, nextCut time.Time
	var clk, prevClk clipTime // the clock at the last frame and the one before, for clips
	for {
		err := src.Next(ctx, &frame)
		if err != nil {
			if event != "" {
				a.finish(life.Flush(last), event, &best, bestStamp, bestSrc, clk)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		last = frame.Time
		now := a.deps.Clock.Now()
		a.health.frame(now)
		a.frames.Add(1)
		a.seqs.observe(frame.Sequence, now.Sub(frame.Time))
		a.snapshot(&frame)
		if a.clips != nil {
			// Errors are counted by the feeder (bad frames); the
			// detector goes on.
			_ = a.clips.feeder.Offer(&frame)
			prevClk = clk
			clk.read(a.stamp.Now(), frame.Time)
		}
		a.live.offer(&frame)
		a.lan.offer(&frame)
		pix, stride, step := frame.LumaPlane()
		res := det.StepPlane(pix, frame.Width, frame.Height, stride, step)
		d := life.Observe(frame.Time, res)
		if d.End && event != "" {
			// The clock as read at the event's last frame: the frame
			// that ends it may come after a wall-clock step (frames
			// stamped by the clock jump with it), and the clip's last
			// frames are timed against this reading.
			a.finish(d, event, &best, bestStamp, bestSrc, prevClk)
			event = ""
		}
		if d.Start {
			if event, err = newEventID(frame.Time, a.deps.Rand); err != nil {
				return err
			}
			j := job{kind: provenance.KindStart, event: event, sum: d.Summary, stamp: a.stamp.Now(), src: a.src}
			if a.clips != nil {
				// The run-up is in the ring now: the worker may come to
				// this job seconds later.
				j.cursor, j.clock = a.clips.ring.Cursor(d.Summary.Start), clk
				nextCut = frame.Time.Add(a.clips.segment)
				// H.264: a key frame now, from an encoder that can
				// force one (the ring keeps the run-up's group anyway).
				a.clips.feeder.RequestKey()
			}
			a.hand(j, &frame)
		} else if event != "" && a.clips != nil && !frame.Time.Before(nextCut) {
			a.recs.cut(job{kind: jobCut, event: event, until: frame.Time, clock: clk})
			nextCut = frame.Time.Add(a.clips.segment)
		}
		if d.Best {
			frame.CopyTo(&best)
			// The clock quality and boot time of the capture, not of the
			// moment the end record is signed (an NTP step may come in
			// between).
			bestStamp, bestSrc = a.stamp.Now(), a.src
		}
	}
}

func (a *Agent) finish(d motion.Decision, event string, best *capture.Frame, st recorder.Stamp, src *provenance.Source, clk clipTime) {
	if !d.End {
		return
	}
	a.hand(job{kind: provenance.KindEnd, event: event, sum: d.Summary, stamp: st, src: src, clock: clk}, best)
}

// hand gives j and a copy of f to the record worker (recordQueue), and logs
// what a full queue made it do.
func (a *Agent) hand(j job, f *capture.Frame) {
	dropped, waited := a.recs.hand(j, f)
	if dropped.kind != "" {
		a.log.Warn("record queue full: oldest droppable job dropped (records never are)",
			"kind", dropped.kind, "event", dropped.event, "dropped", a.recs.dropped.Load())
	}
	if waited {
		a.log.Warn("record queue full of records: the frame loop waited for the record worker (signing or spooling is slower than events come; frames may be lost)",
			"kind", j.kind, "event", j.event, "slots", recordSlots, "waits", a.recs.waits.Load())
	}
}

// work does one job of the record worker, on its goroutine.
func (a *Agent) work(j job, f *capture.Frame) {
	switch {
	case j.kind == jobSnapshot:
		a.publishSnapshot(f)
	case j.kind == jobCut:
		a.clipCut(j.event, j.until, j.clock)
	case j.kind == provenance.KindEnd && a.clips != nil:
		a.emit(j.event, j.kind, f, j.sum, j.stamp, j.src, a.clipEnd(j.event, j.sum.End, j.clock))
	default:
		a.emit(j.event, j.kind, f, j.sum, j.stamp, j.src, nil)
		if j.cursor != nil {
			a.clipBegin(j, f.Time, f.Width, f.Height)
		}
	}
}

// emit makes one signed record of the event from frame and spools it. Errors
// are logged: a record that cannot be made is lost, and says so. It runs on
// the record worker.
func (a *Agent) emit(event, kind string, f *capture.Frame, s motion.Summary, st recorder.Stamp, src *provenance.Source, segments [][]byte) {
	thumb, err := a.record(event, kind, f, s, st, src, segments)
	if err != nil {
		a.log.Error("event record lost", "event", event, "kind", kind, "err", err)
		return
	}
	if kind == provenance.KindStart {
		a.events.Add(1)
	}
	if a.mqtt != nil {
		// Home Assistant: motion on at the start, off at the end, and
		// the record's thumbnail as the camera picture.
		a.pub.offer(notice{hasMotion: true, motion: kind == provenance.KindStart, thumb: thumb})
	}
	attrs := []any{"event", event, "seq", a.rec.Chain().Next - 1, "area_ppm", s.PeakAreaPPM, "frames", s.MotionFrames, "duration", s.End.Sub(s.Trigger).Round(time.Millisecond)}
	if len(segments) > 0 {
		attrs = append(attrs, "clip_segments", len(segments))
	}
	if zones := a.cfg.Motion.Zones; len(zones) > 0 {
		attrs = append(attrs, "zones", strings.Join(motion.ZoneNames(zones, s.Zones), ","))
	}
	a.log.Info("event "+kind, attrs...)
}

// record signs and spools one record of frame f, captured at st from src.
// It returns the thumbnail to show in the clear (MQTT), nil with e2ee on.
func (a *Agent) record(event, kind string, f *capture.Frame, s motion.Summary, st recorder.Stamp, src *provenance.Source, segments [][]byte) ([]byte, error) {
	var thumb []byte
	sealer := a.e2ee.current()
	if a.e2ee == nil || sealer != nil {
		a.thumb.Reset()
		region := image.Rect(0, 0, f.Width, f.Height)
		if a.cfg.ThumbCrop {
			region = capture.ThumbnailCrop(s.Box, f.Width, f.Height)
		}
		if err := capture.EncodeThumbnailRect(&a.thumb, f, region, a.cfg.ThumbMaxSide, a.cfg.ThumbQuality); err != nil {
			return nil, err
		}
		thumb = bytes.Clone(a.thumb.Bytes())
	}
	dur := time.Duration(0)
	if kind == provenance.KindEnd {
		// From the trigger: the pre-roll is the clip's run-up, not
		// the event (docs/envelope.md, motion.duration_ms).
		dur = s.End.Sub(s.Trigger)
	}
	p := &provenance.Payload{
		Device: a.device,
		Event:  event,
		Kind:   kind,
		Boot:   a.stamp.Boot(),
		Time:   st.Time(f.Time),
		Motion: provenance.Motion{
			DurationMs:  uint64(dur / time.Millisecond),
			Frames:      uint32(s.MotionFrames),
			PeakAreaPPM: s.PeakAreaPPM,
			Box:         [4]int32{int32(s.Box.Min.X), int32(s.Box.Min.Y), int32(s.Box.Max.X), int32(s.Box.Max.Y)},
			Width:       uint32(f.Width),
			Height:      uint32(f.Height),
		},
		KeyStore: a.key.Backend(),
		Source:   src,
		Segments: segments,
	}
	media := func(*provenance.Payload) ([][]byte, error) { return nil, nil }
	switch {
	case a.e2ee == nil:
		p.Media = []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", thumb)}
		media = func(*provenance.Payload) ([][]byte, error) { return [][]byte{thumb}, nil }
	case sealer != nil:
		media, thumb = sealed(sealer, provenance.RoleThumbnail, thumb), nil
	default:
		a.e2ee.withoutPictures()
	}
	// Seq and Prev come from the chain, which advances durably before the
	// record is spooled (and before the thumbnail is sealed to its seq).
	if _, _, err := a.rec.RecordWith(p, media); err != nil {
		return nil, err
	}
	return thumb, nil
}

// healthSpool is the agent's spool as the recorder sees it: each write's
// outcome goes to the watchdog's spool check.
type healthSpool struct{ a *Agent }

func (s healthSpool) Put(r uploader.Record) error {
	err := s.a.spool.Put(r)
	s.a.health.spooled(err)
	return err
}

// newEventID makes a sortable, unique event ID: the frame time in milliseconds
// and 8 random bytes.
func newEventID(t time.Time, rnd io.Reader) (string, error) {
	r, err := recorder.RandomID(rnd)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%013d-%s", max(t.UnixMilli(), 0), r), nil
}
