package clip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/capture/m2m"
	"github.com/keyframe-cam/keyframe/internal/clock"
)

// Bounds of the hardware encoder's adapter.
const (
	// m2mEncodeWait is how long one picture may wait for a free input
	// buffer of the hardware encoder; a driver that frees none for that
	// long is stuck, and is closed and opened again.
	m2mEncodeWait = 5 * time.Second
	// m2mBackoff and m2mBackoffCap bound the waits between openings after
	// a failure (an absent node, a lost device).
	m2mBackoff    = time.Second
	m2mBackoffCap = 30 * time.Second
)

// M2MEncoderConfig configures [NewM2MEncoder].
type M2MEncoderConfig struct {
	// Device is the encoder's node (e.g. /dev/video11 on a Raspberry Pi),
	// or "auto": the first V4L2 memory-to-memory node under DevDir that
	// encodes H.264 from YU12 (m2m.Find).
	Device string
	// DevDir is where auto looks; "" means /dev.
	DevDir string
	// FPS, GOP (frames between key frames) and Bitrate (bits per second)
	// are told to the driver; 0 leaves the driver's.
	FPS     float64
	GOP     int
	Bitrate int
	Logger  *slog.Logger
}

// hwEncoder is what the adapter uses of an open *m2m.Encoder (a seam for
// its unit tests; package m2m tests the device side against a fake driver
// and a real one).
type hwEncoder interface {
	Encode(ctx context.Context, fr *capture.Frame, forceKey bool) error
	Receive(ctx context.Context, dst []byte) (m2m.Packet, error)
	Info() m2m.Info
	Close() error
}

// M2MEncoderStats counts what an [M2MEncoder] did.
type M2MEncoderStats struct {
	Opens    uint64 // times the device was opened
	Failures uint64 // times it failed and was closed (lost, stuck, refused)
	Unmapped uint64 // access units the driver returned with a timestamp no picture had (dropped)
}

// M2MEncoder is an [Encoder] on the board's hardware H.264 encoder,
// reached through V4L2's stateful memory-to-memory interface (package
// capture/m2m, pure Go): a Raspberry Pi's bcm2835-codec (/dev/video11) or a
// camera SoC's. It opens the device with the first picture (its size is the
// encoder's), again when the size changes, and after a failure (a lost or
// stuck device) with the next picture once a backoff (1 s doubling to 30 s)
// is over; the pictures in flight at a failure are lost (the feeder counts
// them). Key-frame requests go to the driver (V4L2's FORCE_KEY_FRAME) when
// it has that control.
type M2MEncoder struct {
	cfg  M2MEncoderConfig
	clk  clock.Clock
	log  *slog.Logger
	open func(m2m.Config) (hwEncoder, error)

	mu        sync.Mutex
	enc       hwEncoder
	w, h      int
	changed   chan struct{} // closed when enc changes; Next waits on it
	nextOpen  time.Time
	backoff   time.Duration
	closed    bool
	quit      chan struct{}
	forcesKey atomic.Bool

	frame capture.Frame // Encode's view of the picture
	buf   []byte        // Next's access unit, reused
	stats struct{ opens, failures, unmapped atomic.Uint64 }
}

// NewM2MEncoder checks cfg; the device opens with the first picture.
func NewM2MEncoder(cfg M2MEncoderConfig, clk clock.Clock) (*M2MEncoder, error) {
	if cfg.Device == "" {
		return nil, errors.New("clip: hardware encoder: no device (want auto or a node such as /dev/video11)")
	}
	if cfg.DevDir == "" {
		cfg.DevDir = "/dev"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	e := &M2MEncoder{
		cfg: cfg, clk: clock.Or(clk), log: cfg.Logger,
		changed: make(chan struct{}), quit: make(chan struct{}), backoff: m2mBackoff,
		open: func(c m2m.Config) (hwEncoder, error) { return m2m.Open(c) },
	}
	return e, nil
}

// FindM2M reports the node auto would open in devDir ("" means /dev): the
// first memory-to-memory encoder of H.264 from YU12, or an error wrapping
// m2m.ErrNoEncoder.
func FindM2M(devDir string) (string, error) {
	if devDir == "" {
		devDir = "/dev"
	}
	n, _, err := m2m.Find(devDir, capture.FormatYU12, capture.FormatH264)
	if err != nil {
		return "", err
	}
	return n.Path, nil
}

// ForcesKey reports whether the open device takes key-frame requests (false
// until it is open).
func (e *M2MEncoder) ForcesKey() bool { return e.forcesKey.Load() }

// Stats returns the counters; safe to call at any time.
func (e *M2MEncoder) Stats() M2MEncoderStats {
	return M2MEncoderStats{Opens: e.stats.opens.Load(), Failures: e.stats.failures.Load(), Unmapped: e.stats.unmapped.Load()}
}

// Encode gives the picture to the device, opening it first if needed.
func (e *M2MEncoder) Encode(ctx context.Context, p *Picture, key bool) error {
	if p.Width < 2 || p.Height < 2 || p.Width%2 != 0 || p.Height%2 != 0 || len(p.Data) != p.Width*p.Height*3/2 {
		return fmt.Errorf("clip: hardware encoder: picture %dx%d of %d bytes: want even sides and %d bytes of YU12",
			p.Width, p.Height, len(p.Data), p.Width*p.Height*3/2)
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrEncoderClosed
	}
	if e.enc != nil && (e.w != p.Width || e.h != p.Height) {
		e.log.Info("clip: picture size changed: opening the hardware encoder again",
			"from", fmt.Sprintf("%dx%d", e.w, e.h), "to", fmt.Sprintf("%dx%d", p.Width, p.Height))
		e.dropLocked()
	}
	if e.enc == nil {
		if err := e.openLocked(p.Width, p.Height); err != nil {
			e.mu.Unlock()
			return err
		}
	}
	enc := e.enc
	e.mu.Unlock()

	e.frame = capture.Frame{Width: p.Width, Height: p.Height, Format: capture.FormatYU12, Stride: p.Width,
		Data: p.Data, Time: p.Time, Sequence: p.Sequence}
	ectx, cancel := context.WithTimeout(ctx, m2mEncodeWait)
	err := enc.Encode(ectx, &e.frame, key)
	cancel()
	e.frame.Data = nil
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if ectx.Err() != nil {
		err = fmt.Errorf("clip: hardware encoder: no input buffer free for %v: %w", m2mEncodeWait, err)
	}
	e.failed(enc, err)
	return err
}

// openLocked opens the device for pictures of w×h, unless a backoff after a
// failure is not over.
func (e *M2MEncoder) openLocked(w, h int) error {
	now := e.clk.Now()
	if now.Before(e.nextOpen) {
		return fmt.Errorf("%w (hardware encoder, for %v more)", ErrEncoderRestarting, e.nextOpen.Sub(now).Round(time.Millisecond))
	}
	dev := e.cfg.Device
	if dev == "auto" {
		var err error
		if dev, err = FindM2M(e.cfg.DevDir); err != nil {
			e.later(now)
			return fmt.Errorf("clip: hardware encoder: auto: %w", err)
		}
	}
	enc, err := e.open(m2m.Config{Device: dev, Width: w, Height: h, Input: capture.FormatYU12, Codec: capture.FormatH264,
		FPS: e.cfg.FPS, GOP: e.cfg.GOP, Bitrate: e.cfg.Bitrate, Logger: e.log})
	if err != nil {
		e.later(now)
		return fmt.Errorf("clip: hardware encoder: %w", err)
	}
	info := enc.Info()
	e.log.Info("clip: hardware encoder open", "device", dev, "driver", info.Driver, "api", info.API(),
		"size", fmt.Sprintf("%dx%d", w, h), "force_key", info.ForceKey)
	e.enc, e.w, e.h = enc, w, h
	e.forcesKey.Store(info.ForceKey)
	e.stats.opens.Add(1)
	e.backoff = m2mBackoff
	close(e.changed)
	e.changed = make(chan struct{})
	return nil
}

// later puts the next opening one backoff after now, and doubles it.
func (e *M2MEncoder) later(now time.Time) {
	e.nextOpen = now.Add(e.backoff)
	e.backoff = min(2*e.backoff, m2mBackoffCap)
}

// dropLocked closes the open device.
func (e *M2MEncoder) dropLocked() {
	if e.enc == nil {
		return
	}
	_ = e.enc.Close()
	e.enc = nil
	close(e.changed)
	e.changed = make(chan struct{})
}

// failed closes enc after err, if it is still the open device, and waits a
// backoff before the next opening.
func (e *M2MEncoder) failed(enc hwEncoder, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.enc != enc {
		return // already replaced
	}
	e.stats.failures.Add(1)
	e.log.Warn("clip: hardware encoder failed: closing it", "err", err, "retry_in", e.backoff)
	e.dropLocked()
	e.later(e.clk.Now())
}

// Next returns the next access unit. While no device is open it waits for
// one; a device that fails returns its error once (its pictures in flight
// are lost), and Next then waits for the next opening.
func (e *M2MEncoder) Next(ctx context.Context) (AccessUnit, error) {
	for {
		e.mu.Lock()
		enc, changed, closed := e.enc, e.changed, e.closed
		e.mu.Unlock()
		if closed {
			return AccessUnit{}, ErrEncoderClosed
		}
		if enc == nil {
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return AccessUnit{}, ctx.Err()
			case <-e.quit:
				return AccessUnit{}, ErrEncoderClosed
			}
		}
		p, err := enc.Receive(ctx, e.buf[:0])
		if err != nil {
			if ctx.Err() != nil {
				return AccessUnit{}, ctx.Err()
			}
			e.mu.Lock()
			replaced := e.enc != enc
			e.mu.Unlock()
			if replaced || errors.Is(err, m2m.ErrClosed) {
				continue // closed by Encode (a new size, a failure) or Close
			}
			e.failed(enc, err)
			return AccessUnit{}, fmt.Errorf("clip: hardware encoder: %w", err)
		}
		e.buf = p.Data
		if !p.Mapped {
			e.stats.unmapped.Add(1)
			continue
		}
		return AccessUnit{Time: p.Time, Sequence: p.Sequence, Key: p.Key, Data: p.Data}, nil
	}
}

// Close closes the device and ends a Next waiting. Closing twice does
// nothing.
func (e *M2MEncoder) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	close(e.quit)
	var err error
	if e.enc != nil {
		err = e.enc.Close()
		e.enc = nil
	}
	return err
}
