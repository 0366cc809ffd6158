//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package storm

import (
	"fmt"
	"syscall"
	"time"
)

// processCPU returns the process's user and system CPU time so far.
func processCPU() (user, sys time.Duration, err error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0, fmt.Errorf("storm: getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano()), nil
}

// raiseFileLimit raises the soft limit on open files to the hard limit and
// returns the soft limit in force.
func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("storm: getrlimit: %w", err)
	}
	if lim.Cur < lim.Max {
		raised := lim
		raised.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			return uint64(lim.Cur), fmt.Errorf("storm: setrlimit: %w", err)
		}
		lim = raised
	}
	return uint64(lim.Cur), nil
}
