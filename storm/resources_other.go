//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package storm

import (
	"errors"
	"time"
)

var errPlatform = errors.New("storm: not supported on this platform")

// processCPU is not implemented here.
func processCPU() (user, sys time.Duration, err error) { return 0, 0, errPlatform }

// raiseFileLimit is not implemented here.
func raiseFileLimit() (uint64, error) { return 0, errPlatform }
