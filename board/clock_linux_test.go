//go:build linux

package board

import (
	"testing"
	"time"
)

// TestSinceBootMatchesUptime: the boot-time clock and the kernel's
// /proc/uptime count the same thing; read in between two clock readings the
// file's value (10 ms resolution) lies between them.
func TestSinceBootMatchesUptime(t *testing.T) {
	fs, err := NewFS("/")
	if err != nil {
		t.Fatal(err)
	}
	before, err := SinceBoot()
	if err != nil {
		t.Fatal(err)
	}
	up, err := fs.Uptime()
	if err != nil {
		t.Skipf("no /proc/uptime on this machine: %v", err)
	}
	after, err := SinceBoot()
	if err != nil {
		t.Fatal(err)
	}
	if before <= 0 || after < before {
		t.Fatalf("SinceBoot went %v then %v", before, after)
	}
	if up < before-10*time.Millisecond || up > after+10*time.Millisecond {
		t.Fatalf("/proc/uptime %v outside [%v, %v] of CLOCK_BOOTTIME", up, before, after)
	}
}
