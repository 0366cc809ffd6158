//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package receiver

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// errLocked reports a lock another process holds (non-blocking attempts only).
var errLocked = errors.New("locked by another process")

// lockFile takes an exclusive flock on path, creating it if needed. With wait
// it blocks until the lock is free; without, it fails with errLocked. The lock
// is released by the returned function, or when the process exits.
func lockFile(path string, wait bool) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("receiver: lock %s: %w", path, err)
	}
	how := unix.LOCK_EX
	if !wait {
		how |= unix.LOCK_NB
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("receiver: lock %s: %w", path, errLocked)
		}
		return nil, fmt.Errorf("receiver: lock %s: %w", path, err)
	}
	return func() {
		// Closing the descriptor releases the flock.
		f.Close()
	}, nil
}
