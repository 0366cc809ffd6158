// Package boardtest holds fakes of board's hardware interfaces, with exported
// fields a test sets and inspects (like periph's gpiotest). They embed a
// sync.Mutex: lock it to touch the fields while code under test may be using
// the fake from another goroutine.
package boardtest

import (
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/keyframe-cam/keyframe/board"
)

// Watchdog is a fake board.WatchdogDevice that models the kernel's behaviour:
// it is armed when created, every keepalive or timeout change restarts its
// countdown, a magic close disarms it unless NoWayOut is set, and a plain
// close leaves it armed (a driver with magic close support).
type Watchdog struct {
	sync.Mutex

	// Set by the test.
	IdentityText string              // Identity()
	BootFlags    board.WatchdogFlags // BootStatus()
	StatusFlags  board.WatchdogFlags // Status()
	// MinTimeout and MaxTimeout, if not zero, bound SetTimeout like a
	// driver's min_timeout/max_timeout: outside them it fails with EINVAL.
	MinTimeout, MaxTimeout int
	// Granularity, if above 1, makes SetTimeout round the seconds up to a
	// multiple of it, as drivers with coarse counters do.
	Granularity int
	// NoWayOut makes MagicClose leave the watchdog armed and report
	// board.ErrStillArmed.
	NoWayOut bool
	// KeepaliveErr, SetTimeoutErr, TimeoutErr and BootStatusErr, if not nil,
	// are returned by those methods.
	KeepaliveErr, SetTimeoutErr, TimeoutErr, BootStatusErr error
	// Now is the clock for the countdown (nil: time.Now, which is the fake
	// clock inside a testing/synctest bubble).
	Now func() time.Time

	// Observed by the test.
	TimeoutSeconds  int       // the timeout in force, in seconds
	SetTimeoutCalls []int     // every value passed to SetTimeout
	Pets            int       // Keepalive calls that succeeded
	LastKick        time.Time // last keepalive, timeout change or the arming
	Armed           bool      // the watchdog is running
	MagicClosed     bool      // MagicClose was called
	Closed          bool      // the device is closed (either way)
}

var _ board.WatchdogDevice = (*Watchdog)(nil)

// NewWatchdog returns an armed fake watchdog with a timeout in seconds.
func NewWatchdog(timeoutSeconds int) *Watchdog {
	w := &Watchdog{IdentityText: "boardtest watchdog", TimeoutSeconds: timeoutSeconds, Armed: true}
	w.LastKick = w.now()
	return w
}

func (w *Watchdog) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// Expired reports whether the real watchdog would have reset the board by
// now: it is armed and was not kept alive for longer than its timeout.
func (w *Watchdog) Expired(now time.Time) bool {
	w.Lock()
	defer w.Unlock()
	return w.Armed && now.Sub(w.LastKick) > time.Duration(w.TimeoutSeconds)*time.Second
}

func (w *Watchdog) checkOpen() error {
	if w.Closed {
		return os.ErrClosed
	}
	return nil
}

// Identity implements board.WatchdogDevice.
func (w *Watchdog) Identity() string {
	w.Lock()
	defer w.Unlock()
	return w.IdentityText
}

// SetTimeout implements board.WatchdogDevice: it records seconds, applies
// MinTimeout, MaxTimeout and Granularity, and restarts the countdown.
func (w *Watchdog) SetTimeout(seconds int) (int, error) {
	w.Lock()
	defer w.Unlock()
	if err := w.checkOpen(); err != nil {
		return 0, err
	}
	w.SetTimeoutCalls = append(w.SetTimeoutCalls, seconds)
	if w.SetTimeoutErr != nil {
		return 0, w.SetTimeoutErr
	}
	if seconds <= 0 || (w.MinTimeout > 0 && seconds < w.MinTimeout) || (w.MaxTimeout > 0 && seconds > w.MaxTimeout) {
		return 0, fmt.Errorf("boardtest: timeout %ds outside [%d, %d]: %w", seconds, w.MinTimeout, w.MaxTimeout, syscall.EINVAL)
	}
	if g := w.Granularity; g > 1 {
		seconds = (seconds + g - 1) / g * g
	}
	w.TimeoutSeconds = seconds
	w.LastKick = w.now()
	return seconds, nil
}

// Timeout implements board.WatchdogDevice.
func (w *Watchdog) Timeout() (int, error) {
	w.Lock()
	defer w.Unlock()
	if err := w.checkOpen(); err != nil {
		return 0, err
	}
	if w.TimeoutErr != nil {
		return 0, w.TimeoutErr
	}
	return w.TimeoutSeconds, nil
}

// Keepalive implements board.WatchdogDevice.
func (w *Watchdog) Keepalive() error {
	w.Lock()
	defer w.Unlock()
	if err := w.checkOpen(); err != nil {
		return err
	}
	if w.KeepaliveErr != nil {
		return w.KeepaliveErr
	}
	w.Pets++
	w.LastKick = w.now()
	return nil
}

// Status implements board.WatchdogDevice.
func (w *Watchdog) Status() (board.WatchdogFlags, error) {
	w.Lock()
	defer w.Unlock()
	if err := w.checkOpen(); err != nil {
		return 0, err
	}
	return w.StatusFlags, nil
}

// BootStatus implements board.WatchdogDevice.
func (w *Watchdog) BootStatus() (board.WatchdogFlags, error) {
	w.Lock()
	defer w.Unlock()
	if err := w.checkOpen(); err != nil {
		return 0, err
	}
	if w.BootStatusErr != nil {
		return 0, w.BootStatusErr
	}
	return w.BootFlags, nil
}

// MagicClose implements board.WatchdogDevice.
func (w *Watchdog) MagicClose() error {
	w.Lock()
	defer w.Unlock()
	if err := w.checkOpen(); err != nil {
		return err
	}
	w.MagicClosed, w.Closed = true, true
	if w.NoWayOut {
		return fmt.Errorf("boardtest: nowayout is set: %w", board.ErrStillArmed)
	}
	w.Armed = false
	return nil
}

// Close implements board.WatchdogDevice: the watchdog stays armed.
func (w *Watchdog) Close() error {
	w.Lock()
	defer w.Unlock()
	if err := w.checkOpen(); err != nil {
		return err
	}
	w.Closed = true
	return nil
}
