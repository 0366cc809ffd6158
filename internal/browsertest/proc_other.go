//go:build !linux

package browsertest

import (
	"errors"
	"time"
)

// errUnsupported: finding a browser's processes by their command line needs
// Linux's /proc.
var errUnsupported = errors.New("browsertest: listing the browser's processes is not supported on this platform")

// processesUsing is not supported here: it returns errUnsupported.
func processesUsing(string) ([]int, error) { return nil, errUnsupported }

// killUsing kills nothing here (chromedp kills the browser's main process).
func killUsing(string, time.Duration) []int { return nil }

// memory is not supported here: it returns errUnsupported.
func memory([]int) (rss, pss int64, err error) { return 0, 0, errUnsupported }
