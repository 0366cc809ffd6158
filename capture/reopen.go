package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyframe-cam/keyframe/internal/backoff"
	"github.com/keyframe-cam/keyframe/internal/clock"
)

// ReopenConfig configures [Reopening].
type ReopenConfig struct {
	// Base is the ceiling of the first wait before reopening; each failed
	// attempt doubles it, up to Cap. 0 means 1 s.
	Base time.Duration
	// Cap is the largest ceiling; 0 means 30 s (never below Base). The waits
	// reset to Base once a reopened source has run for Cap.
	Cap time.Duration
	// Stall is how long a Next may wait for a frame before the source counts
	// as stalled and is reopened; 0 leaves stall detection to the source
	// (V4L2 has its own, V4L2Config.Stall).
	Stall time.Duration
	// Rand draws the jittered waits; nil means a randomly seeded generator.
	Rand backoff.Rand
	// Absent, if not nil, is why the caller's own first open failed, which
	// the caller has already said: the Reopener starts in an outage, waits
	// before its first attempt, and logs a failure only when its message
	// differs from Absent's (the recovery is logged as usual).
	Absent error
}

// Reopening defaults.
const (
	reopenDefaultBase = time.Second
	reopenDefaultCap  = 30 * time.Second
)

// ReopenStats counts what a [Reopener] did.
type ReopenStats struct {
	Opens        uint64 // sources opened, the first one included
	Reopens      uint64 // sources opened again after a failure
	Failures     uint64 // failures of an open source (a Next error or a stall) that made it reopen
	Stalls       uint64 // of the Failures, those found by the Stall watchdog
	OpenFailures uint64 // open attempts that failed
	Down         bool   // no source is open and the next one is being waited for
}

// errWatchdog is the cause the Stall watchdog cancels a Next with.
var errWatchdog = errors.New("capture: stall watchdog")

// Reopener is a [Source] that keeps another one running: see [Reopening].
type Reopener struct {
	open  func() (Source, error)
	cap   time.Duration
	stall time.Duration
	clk   clock.Clock
	log   *slog.Logger

	mu      sync.Mutex // guards src, closed and the watchdog context
	src     Source
	closed  bool
	done    chan struct{} // closed by Close
	parent  context.Context
	derived context.Context // parent with the watchdog's cancel, when Stall > 0
	cancel  context.CancelCauseFunc
	watched bool // the watchdog goroutine runs

	// The source's Next in progress, for the watchdog: waitGen is odd while
	// one runs, and waitSince (clock UnixNano) is when it began.
	waitGen   atomic.Uint64
	waitSince atomic.Int64

	// Next's own state (Next is not called concurrently with itself).
	bo        backoff.Backoff // the waits between open attempts
	down      bool            // in an outage: the next open waits first
	downSince time.Time       // when the outage began
	attempts  int             // open attempts in this outage
	upSince   time.Time       // when the current source opened
	lastErr   string          // the last open error logged

	opens, reopens, failures, stalls, openFailures atomic.Uint64
	isDown                                         atomic.Bool
}

// Reopening returns a Source that opens a source with open on the first Next
// and keeps it running: on any error of its Next other than ctx's end and
// [ErrEndOfStream] (a camera unplugged, ErrNoDevice, ENODEV/EIO, ErrStalled,
// a stall found by the cfg.Stall watchdog), it logs once, closes the source
// and opens a new one, waiting before each attempt a random time between 0
// and min(Cap, Base·2^n) (full jitter; n counts the attempts since the
// source last ran for Cap), until one opens or ctx ends; the caller does not
// see the error. A failing first open is retried the same way. Recovery is
// logged once ("capture: camera back after N attempts, down for D").
//
// Frame.Sequence restarts with each new source. A nil clk means the system
// clock, a nil log slog.Default(). Close may be called while Next runs if the
// wrapped source allows it (V4L2 does): a Next waiting to reopen returns
// [ErrClosed] at once.
func Reopening(open func() (Source, error), cfg ReopenConfig, clk clock.Clock, log *slog.Logger) *Reopener {
	base := cfg.Base
	if base <= 0 {
		base = reopenDefaultBase
	}
	r := &Reopener{
		open: open, cap: cfg.Cap, stall: cfg.Stall,
		clk: clock.Or(clk), log: log, done: make(chan struct{}),
	}
	if r.cap <= 0 {
		r.cap = reopenDefaultCap
	}
	r.cap = max(r.cap, base)
	r.bo = backoff.Backoff{Base: base, Cap: r.cap, Rand: backoff.OrRandom(cfg.Rand)}
	if r.log == nil {
		r.log = slog.Default()
	}
	if cfg.Absent != nil {
		r.startOutage()
		r.attempts, r.lastErr = 1, cfg.Absent.Error()
	}
	return r
}

// Stats returns the counters. It is safe to call while Next runs.
func (r *Reopener) Stats() ReopenStats {
	return ReopenStats{
		Opens: r.opens.Load(), Reopens: r.reopens.Load(), Failures: r.failures.Load(),
		Stalls: r.stalls.Load(), OpenFailures: r.openFailures.Load(), Down: r.isDown.Load(),
	}
}

// Next fills f from the current source, reopening it as needed. It returns
// only ctx.Err(), [ErrEndOfStream] from the source, or [ErrClosed].
func (r *Reopener) Next(ctx context.Context, f *Frame) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		src, err := r.current(ctx)
		if err != nil {
			return err
		}
		cctx := r.callContext(ctx)
		r.waitSince.Store(r.clk.Now().UnixNano())
		r.waitGen.Add(1) // odd: waiting
		err = src.Next(cctx, f)
		r.waitGen.Add(1)
		if err == nil {
			return nil
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if errors.Is(err, ErrEndOfStream) {
			return err
		}
		if r.isClosed() {
			return ErrClosed
		}
		stalled := cctx != ctx && context.Cause(cctx) == errWatchdog
		if stalled {
			err = fmt.Errorf("capture: no frame for %v: %w", r.stall, ErrStalled)
		}
		r.failed(src, err, stalled)
	}
}

// current returns the open source, opening one (after a backoff wait in an
// outage) when there is none.
func (r *Reopener) current(ctx context.Context) (Source, error) {
	r.mu.Lock()
	closed, src := r.closed, r.src
	r.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if src != nil {
		return src, nil
	}
	for {
		if r.down {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-r.done:
				return nil, ErrClosed
			case <-r.clk.After(r.bo.Next()):
			}
		}
		r.attempts++
		src, err := r.open()
		if err == nil {
			return r.opened(src)
		}
		r.openFailures.Add(1)
		msg := err.Error()
		switch {
		case !r.down:
			r.startOutage()
			r.attempts = 1
			r.log.Warn("capture: camera not available; retrying", "err", err)
		case msg != r.lastErr:
			r.log.Warn("capture: camera still not available", "attempt", r.attempts, "err", err)
		default:
			r.log.Debug("capture: camera still not available", "attempt", r.attempts, "err", err)
		}
		r.lastErr = msg
	}
}

// opened installs a newly opened source.
func (r *Reopener) opened(src Source) (Source, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		// Closed while opening: this source was never handed out.
		_ = src.Close()
		return nil, ErrClosed
	}
	r.src = src
	if r.stall > 0 && !r.watched {
		r.watched = true
		go r.watch()
	}
	r.mu.Unlock()
	r.opens.Add(1)
	now := r.clk.Now()
	if r.down {
		r.reopens.Add(1)
		d := now.Sub(r.downSince)
		word := "attempts"
		if r.attempts == 1 {
			word = "attempt"
		}
		r.log.Info(fmt.Sprintf("capture: camera back after %d %s, down for %v", r.attempts, word, d.Round(time.Millisecond)),
			"attempts", r.attempts, "down", d)
		r.down = false
		r.isDown.Store(false)
	}
	r.attempts, r.lastErr = 0, ""
	r.upSince = now
	return src, nil
}

// startOutage marks the source down.
func (r *Reopener) startOutage() {
	r.down = true
	r.isDown.Store(true)
	r.downSince = r.clk.Now()
	r.attempts = 0
}

// failed closes a source whose Next failed and starts an outage.
func (r *Reopener) failed(src Source, err error, stalled bool) {
	r.failures.Add(1)
	if stalled {
		r.stalls.Add(1)
	}
	if r.clk.Now().Sub(r.upSince) >= r.cap {
		r.bo.Reset() // it ran long enough: back to short waits
	}
	r.startOutage()
	r.log.Warn("capture: camera failed; reopening", "err", err)
	r.mu.Lock()
	if r.src == src {
		r.src = nil
	}
	r.mu.Unlock()
	if cerr := src.Close(); cerr != nil {
		r.log.Debug("capture: closing the failed source", "err", cerr)
	}
}

// callContext is the context for the source's Next: ctx itself, or with a
// Stall watchdog a child of it the watchdog can cancel. The child is made
// once per parent, so a frame loop with one ctx allocates nothing.
func (r *Reopener) callContext(ctx context.Context) context.Context {
	if r.stall <= 0 {
		return ctx
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.derived == nil || r.parent != ctx || r.derived.Err() != nil {
		if r.cancel != nil {
			r.cancel(nil)
		}
		r.parent = ctx
		r.derived, r.cancel = context.WithCancelCause(ctx)
	}
	return r.derived
}

// watch cancels the source's Next when it has waited for Stall. It runs from
// the first open with Stall > 0 until Close.
func (r *Reopener) watch() {
	for {
		d := r.stall
		if gen := r.waitGen.Load(); gen%2 == 1 {
			d = time.Unix(0, r.waitSince.Load()).Add(r.stall).Sub(r.clk.Now())
			if d <= 0 {
				r.mu.Lock()
				if r.cancel != nil && r.waitGen.Load() == gen {
					r.cancel(errWatchdog)
				}
				r.mu.Unlock()
				d = r.stall
			}
		}
		select {
		case <-r.done:
			return
		case <-r.clk.After(d):
		}
	}
}

func (r *Reopener) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// Close closes the current source, ends any wait to reopen and stops the
// Stall watchdog's goroutine. Closing twice is not an error.
func (r *Reopener) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.done)
	src := r.src
	r.src = nil
	if r.cancel != nil {
		r.cancel(ErrClosed)
	}
	r.mu.Unlock()
	if src != nil {
		return src.Close()
	}
	return nil
}
