// Package clock is the one time source interface of the tree: the agent, the
// capture sources, the upload loop, the watchdog loop and the MQTT links take
// a Clock so tests can drive time (with a fake, or testing/synctest) instead
// of sleeping. It imports nothing but the standard library.
package clock

import "time"

// Clock tells the time and waits.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// After returns a channel that receives the time once d has passed.
	After(d time.Duration) <-chan time.Time
}

// System is the system clock: time.Now and time.After.
type System struct{}

// Now returns time.Now().
func (System) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (System) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Or returns c, or the system clock when c is nil.
func Or(c Clock) Clock {
	if c == nil {
		return System{}
	}
	return c
}
