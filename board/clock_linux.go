//go:build linux

package board

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// ClockSynced reports whether the kernel considers the system clock
// synchronised (adjtimex: not TIME_ERROR and STA_UNSYNC clear). A board without
// an RTC that has not reached an NTP server reports false.
func ClockSynced() bool {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return false
	}
	return state != unix.TIME_ERROR && tx.Status&unix.STA_UNSYNC == 0
}

// SinceBoot returns the time since boot, suspend included (CLOCK_BOOTTIME,
// what /proc/uptime counts), from the kernel without file I/O or
// allocation: no setting of the wall clock moves it.
func SinceBoot() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, fmt.Errorf("board: clock_gettime(CLOCK_BOOTTIME): %w", err)
	}
	return time.Duration(ts.Nano()), nil
}
