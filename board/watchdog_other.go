//go:build !linux

package board

import (
	"errors"
	"fmt"
)

// openWatchdogDevice reports that this platform has no Linux watchdog API:
// the error wraps ErrAbsent (the agent runs without a watchdog, as on a board
// without one) and errors.ErrUnsupported.
func (fs *FS) openWatchdogDevice(path string) (WatchdogDevice, error) {
	return nil, fmt.Errorf("board: watchdog %s: not supported on this platform: %w (%w)", path, ErrAbsent, errors.ErrUnsupported)
}
