package board

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/keyframe-cam/keyframe/internal/clock"
)

// HealthCheck is one condition the board must meet for the watchdog to be
// petted. Check returns nil when healthy; now is the loop clock's time.
type HealthCheck struct {
	Name  string
	Check func(now time.Time) error
}

// StallCheck returns a HealthCheck that fails when last() (the time of the
// latest sign of progress, such as the last captured frame) is more than max
// before now. Until last() reports a non-zero time, progress is measured from
// the first time the check runs, so a starting pipeline has max to get going.
func StallCheck(name string, max time.Duration, last func() time.Time) HealthCheck {
	var start time.Time
	return HealthCheck{Name: name, Check: func(now time.Time) error {
		if start.IsZero() {
			start = now
		}
		t := last()
		if t.IsZero() {
			t = start
		}
		if age := now.Sub(t); age > max {
			return fmt.Errorf("no progress for %v (limit %v)", age.Round(time.Millisecond), max)
		}
		return nil
	}}
}

// HealthFailure is one failed health check.
type HealthFailure struct {
	Check string    // HealthCheck.Name
	Err   error     // what Check returned
	At    time.Time // loop clock time of the check
}

// WatchdogStats counts what a WatchdogLoop did.
type WatchdogStats struct {
	Pets            uint64        // keepalives the driver accepted
	Skipped         uint64        // ticks with a failing check, on which the watchdog was not petted
	PetErrors       uint64        // keepalives the driver refused
	Keepalives      uint64        // Keepalive calls that succeeded
	KeepaliveErrors uint64        // Keepalive calls that failed
	Failing         []string      // names of the checks failing now
	LastFailure     HealthFailure // the latest failed check; zero if none ever failed
}

// WatchdogLoop pets a watchdog only while the board is healthy (u-root's
// watchdogd, not gokrazy's unconditional petting): every Interval it runs all
// Checks and pets Dog only if every one passes. While any check fails it does
// not pet, so a stalled board resets once the watchdog timeout runs out, and
// the resulting reboot shows WatchdogCardReset in the boot status.
//
// Keepalive, if set, is a second watchdog fed under the same rule: it is
// called on exactly the ticks on which Dog is petted (systemd's service
// watchdog, sd_notify WATCHDOG=1). Dog may then be nil: the loop runs for
// Keepalive alone.
//
// Set the fields, then call Run once; Stats may be called concurrently.
type WatchdogLoop struct {
	Dog       *Watchdog
	Keepalive func() error
	Interval  time.Duration // time between checks; must be below the watchdog timeout (and Keepalive's)
	Checks    []HealthCheck
	Clock     clock.Clock  // nil: the system clock
	Logger    *slog.Logger // nil: no logs

	mu    sync.Mutex
	stats WatchdogStats
}

// Stats returns a snapshot of the loop's counters.
func (l *WatchdogLoop) Stats() WatchdogStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats
	s.Failing = append([]string(nil), l.stats.Failing...)
	return s
}

// Run checks and pets until ctx is done, then closes Dog in an orderly way
// (magic close, which disarms it). Run owns Dog: it closes it whenever it
// returns, also on an invalid configuration (Interval not positive or not
// below the driver's timeout, a check without a function).
//
// A check that starts failing is logged once, with its error, and its
// recovery once; a keepalive the driver refuses likewise. Run returns nil
// after an orderly shutdown, including when the watchdog stays armed because
// of nowayout (that is logged: the board will reset); otherwise the error.
func (l *WatchdogLoop) Run(ctx context.Context) error {
	if l.Dog == nil && l.Keepalive == nil {
		return errors.New("board: watchdog loop: no watchdog")
	}
	log := l.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	clk := clock.Or(l.Clock)
	timeout, err := l.validate(log)
	if err != nil {
		return errors.Join(err, l.close(log))
	}
	identity := "none"
	if l.Dog != nil {
		identity = l.Dog.Identity()
	}
	log.Info("watchdog: petting while healthy", "watchdog", identity, "keepalive", l.Keepalive != nil,
		"interval", l.Interval, "timeout", timeout, "checks", len(l.Checks))

	failing := make([]bool, len(l.Checks))
	since := make([]time.Time, len(l.Checks))
	petFailing, keepaliveFailing := false, false
	for {
		if ctx.Err() != nil {
			return l.close(log)
		}
		now := clk.Now()
		healthy := true
		var names []string
		for i, c := range l.Checks {
			err := c.Check(now)
			if err == nil {
				if failing[i] {
					failing[i] = false
					log.Info("watchdog: health check recovered", "check", c.Name, "failed_for", now.Sub(since[i]))
				}
				continue
			}
			healthy = false
			names = append(names, c.Name)
			if !failing[i] {
				failing[i], since[i] = true, now
				log.Warn("watchdog: health check failing, not petting: the board resets if it does not recover",
					"check", c.Name, "err", err, "timeout", timeout)
			}
			l.mu.Lock()
			l.stats.LastFailure = HealthFailure{Check: c.Name, Err: err, At: now}
			l.mu.Unlock()
		}
		l.mu.Lock()
		l.stats.Failing = names
		if !healthy {
			l.stats.Skipped++
		}
		l.mu.Unlock()
		if healthy && l.Keepalive != nil {
			err := l.Keepalive()
			l.mu.Lock()
			if err != nil {
				l.stats.KeepaliveErrors++
			} else {
				l.stats.Keepalives++
			}
			l.mu.Unlock()
			switch {
			case err != nil && !keepaliveFailing:
				keepaliveFailing = true
				log.Error("watchdog: keepalive to the service manager failed: it restarts the service if this persists", "err", err)
			case err == nil && keepaliveFailing:
				keepaliveFailing = false
				log.Info("watchdog: keepalive to the service manager works again")
			}
		}
		if healthy && l.Dog != nil {
			err := l.Dog.Pet()
			l.mu.Lock()
			if err != nil {
				l.stats.PetErrors++
			} else {
				l.stats.Pets++
			}
			l.mu.Unlock()
			switch {
			case err != nil && !petFailing:
				petFailing = true
				log.Error("watchdog: keepalive failed: the board resets if this persists", "err", err)
			case err == nil && petFailing:
				petFailing = false
				log.Info("watchdog: keepalive works again")
			}
		}
		select {
		case <-ctx.Done():
			return l.close(log)
		case <-clk.After(l.Interval):
		}
	}
}

// validate checks the configuration and returns the driver's timeout (0 if
// the driver cannot report it).
func (l *WatchdogLoop) validate(log *slog.Logger) (time.Duration, error) {
	if l.Interval <= 0 {
		return 0, fmt.Errorf("board: watchdog loop: interval %v must be positive", l.Interval)
	}
	for i, c := range l.Checks {
		if c.Check == nil {
			return 0, fmt.Errorf("board: watchdog loop: check %d (%q) has no function", i, c.Name)
		}
	}
	if l.Dog == nil {
		return 0, nil
	}
	timeout, err := l.Dog.Timeout()
	switch {
	case err != nil:
		log.Warn("watchdog: cannot read the timeout, so the interval is not checked against it", "err", err)
		return 0, nil
	case l.Interval >= timeout:
		return 0, fmt.Errorf("board: watchdog loop: interval %v is not below the watchdog timeout %v: the board would reset while healthy", l.Interval, timeout)
	case l.Interval > timeout/2:
		log.Warn("watchdog: interval is more than half the timeout: one late tick resets the board",
			"interval", l.Interval, "timeout", timeout)
	}
	return timeout, nil
}

func (l *WatchdogLoop) close(log *slog.Logger) error {
	if l.Dog == nil {
		return nil
	}
	err := l.Dog.Close()
	switch {
	case err == nil:
		log.Info("watchdog: disarmed (magic close)")
		return nil
	case errors.Is(err, ErrStillArmed):
		log.Warn("watchdog: closed but still armed: the board will reset", "err", err)
		return nil
	}
	log.Error("watchdog: close failed", "err", err)
	return err
}
