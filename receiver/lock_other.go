//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package receiver

import (
	"errors"
	"fmt"
)

// errLocked reports a lock another process holds (non-blocking attempts only).
var errLocked = errors.New("locked by another process")

// lockFile is not implemented here: the registry and the store need flock.
func lockFile(path string, wait bool) (unlock func(), err error) {
	return nil, fmt.Errorf("receiver: lock %s: file locking is not supported on this platform", path)
}
