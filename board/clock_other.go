//go:build !linux

package board

// ClockSynced reports false: on this platform keyframe cannot tell whether the
// clock is synchronised.
func ClockSynced() bool { return false }
