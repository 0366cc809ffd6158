//go:build !linux

package board

import (
	"errors"
	"fmt"
	"time"
)

// ClockSynced reports false: on this platform keyframe cannot tell whether the
// clock is synchronised.
func ClockSynced() bool { return false }

// SinceBoot is not available on this platform.
func SinceBoot() (time.Duration, error) {
	return 0, fmt.Errorf("board: time since boot: %w", errors.ErrUnsupported)
}
