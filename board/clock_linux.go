//go:build linux

package board

import "golang.org/x/sys/unix"

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
