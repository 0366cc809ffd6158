//go:build linux

package board_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/keyframe-cam/keyframe/board"
)

// ioc encodes an ioctl number like the kernel's _IOC macro, for the
// architectures that use the generic layout or the powerpc/mips/sparc one.
func ioc(t *testing.T, dir string, typ byte, nr, size uintptr) uint64 {
	var read, write uint64 = 2, 1
	dirShift, sizeBits := uint64(30), uint64(14)
	switch runtime.GOARCH {
	case "ppc", "ppc64", "ppc64le", "mips", "mipsle", "mips64", "mips64le", "sparc64":
		read, write, dirShift, sizeBits = 2, 4, 29, 13
	}
	if uint64(size) >= 1<<sizeBits {
		t.Fatalf("size %d does not fit", size)
	}
	var d uint64
	switch dir {
	case "R":
		d = read
	case "WR":
		d = read | write
	}
	return d<<dirShift | uint64(size)<<16 | uint64(typ)<<8 | uint64(nr)
}

// TestWatchdogIoctlNumbers pins the ioctl numbers of include/uapi/linux/
// watchdog.h. Every argument but WDIOC_GETSUPPORT's is an int: 4 bytes, a
// count of seconds for the timeouts, never a Go int or a time.Duration.
func TestWatchdogIoctlNumbers(t *testing.T) {
	const intSize = 4
	if s := unsafe.Sizeof(unix.WatchdogInfo{}); s != 40 {
		t.Fatalf("sizeof(struct watchdog_info) = %d, want 40", s)
	}
	for _, c := range []struct {
		name string
		got  uint64
		dir  string
		nr   uintptr
		size uintptr
	}{
		{"WDIOC_GETSUPPORT", uint64(unix.WDIOC_GETSUPPORT), "R", 0, 40},
		{"WDIOC_GETSTATUS", uint64(unix.WDIOC_GETSTATUS), "R", 1, intSize},
		{"WDIOC_GETBOOTSTATUS", uint64(unix.WDIOC_GETBOOTSTATUS), "R", 2, intSize},
		{"WDIOC_KEEPALIVE", uint64(unix.WDIOC_KEEPALIVE), "R", 5, intSize},
		{"WDIOC_SETTIMEOUT", uint64(unix.WDIOC_SETTIMEOUT), "WR", 6, intSize},
		{"WDIOC_GETTIMEOUT", uint64(unix.WDIOC_GETTIMEOUT), "R", 7, intSize},
	} {
		if want := ioc(t, c.dir, 'W', c.nr, c.size); c.got != want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, want)
		}
	}
	switch runtime.GOARCH {
	case "amd64", "386", "arm", "arm64", "riscv64", "loong64", "s390x":
		// The literal values on the boards keyframe runs on.
		for name, p := range map[string][2]uint64{
			"WDIOC_GETSUPPORT":    {uint64(unix.WDIOC_GETSUPPORT), 0x80285700},
			"WDIOC_GETSTATUS":     {uint64(unix.WDIOC_GETSTATUS), 0x80045701},
			"WDIOC_GETBOOTSTATUS": {uint64(unix.WDIOC_GETBOOTSTATUS), 0x80045702},
			"WDIOC_KEEPALIVE":     {uint64(unix.WDIOC_KEEPALIVE), 0x80045705},
			"WDIOC_SETTIMEOUT":    {uint64(unix.WDIOC_SETTIMEOUT), 0xc0045706},
			"WDIOC_GETTIMEOUT":    {uint64(unix.WDIOC_GETTIMEOUT), 0x80045707},
		} {
			if p[0] != p[1] {
				t.Errorf("%s = %#x, want %#x", name, p[0], p[1])
			}
		}
	}
}

func TestWatchdogFlagsMatchKernel(t *testing.T) {
	for _, c := range []struct {
		ours   board.WatchdogFlags
		kernel int
	}{
		{board.WatchdogOverheat, unix.WDIOF_OVERHEAT},
		{board.WatchdogFanFault, unix.WDIOF_FANFAULT},
		{board.WatchdogExtern1, unix.WDIOF_EXTERN1},
		{board.WatchdogExtern2, unix.WDIOF_EXTERN2},
		{board.WatchdogPowerUnder, unix.WDIOF_POWERUNDER},
		{board.WatchdogCardReset, unix.WDIOF_CARDRESET},
		{board.WatchdogPowerOver, unix.WDIOF_POWEROVER},
		{board.WatchdogSetTimeout, unix.WDIOF_SETTIMEOUT},
		{board.WatchdogMagicClose, unix.WDIOF_MAGICCLOSE},
		{board.WatchdogPreTimeout, unix.WDIOF_PRETIMEOUT},
		{board.WatchdogAlarmOnly, unix.WDIOF_ALARMONLY},
		{board.WatchdogKeepalivePing, unix.WDIOF_KEEPALIVEPING},
	} {
		if uint32(c.ours) != uint32(c.kernel) {
			t.Errorf("%v = %#x, kernel has %#x", c.ours, uint32(c.ours), c.kernel)
		}
	}
}

// TestOpenWatchdogNotAWatchdog runs the real open and WDIOC_GETSUPPORT path
// against /dev/null, a character device that is no watchdog.
func TestOpenWatchdogNotAWatchdog(t *testing.T) {
	if st, err := os.Stat("/dev/null"); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		t.Skip("no /dev/null character device here")
	}
	fs, err := board.NewFS("/")
	if err != nil {
		t.Fatal(err)
	}
	_, err = fs.OpenWatchdog("/dev/null")
	// The kernel answers ENOTTY; qemu-user, which does not know the ioctl,
	// ENOSYS.
	if !(errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.ENOSYS)) || errors.Is(err, board.ErrAbsent) ||
		!strings.Contains(err.Error(), "WDIOC_GETSUPPORT: not a watchdog") {
		t.Fatalf("OpenWatchdog(/dev/null): %v, want WDIOC_GETSUPPORT to fail with ENOTTY", err)
	}
}

// TestRealWatchdog exercises the kernel ABI on a real watchdog. It arms it:
// run it only on a test board (the QEMU board test uses i6300esb), with
// KEYFRAME_TEST_WATCHDOG=/dev/watchdogN.
func TestRealWatchdog(t *testing.T) {
	dev := os.Getenv("KEYFRAME_TEST_WATCHDOG")
	if dev == "" {
		t.Skip("opening a watchdog arms it and can reset the machine: set KEYFRAME_TEST_WATCHDOG=/dev/watchdogN on a test board to run this")
	}
	name, err := board.WatchdogName(dev)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := board.NewFS("/")
	if err != nil {
		t.Fatal(err)
	}
	before, err := fs.WatchdogInfo(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sysfs before open: %+v", before)
	_, _, w := realWatchdog(t)
	closed := false
	defer func() {
		if !closed {
			w.Close()
		}
	}()
	if w.Identity() != before.Identity {
		t.Errorf("WDIOC_GETSUPPORT identity %q, sysfs %q", w.Identity(), before.Identity)
	}
	bs, err := w.BootStatus()
	if err != nil || bs != before.BootStatus {
		t.Errorf("WDIOC_GETBOOTSTATUS = %v, %v; sysfs says %v", bs, err, before.BootStatus)
	}
	t.Run("WDIOC_GETSTATUS", func(t *testing.T) {
		st, err := w.Status()
		if errors.Is(err, unix.ENOTTY) {
			// The kernel's watchdog core always answers it; only a legacy
			// driver outside the core may not.
			t.Skipf("driver %q does not implement WDIOC_GETSTATUS: %v", w.Identity(), err)
		}
		if err != nil {
			t.Fatalf("WDIOC_GETSTATUS: %v", err)
		}
		t.Logf("status %v", st)
	})
	if info, err := fs.WatchdogInfo(name); err != nil || !info.Active {
		t.Errorf("after open sysfs says %+v, %v; want active", info, err)
	}
	// 7s is within every driver's range we target, and differs from the
	// usual defaults (30, 60) so a unit mistake cannot pass by accident.
	got, err := w.SetTimeout(7 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := w.Timeout()
	if err != nil || cur != got {
		t.Errorf("SetTimeout returned %v, WDIOC_GETTIMEOUT says %v (%v)", got, cur, err)
	}
	info, err := fs.WatchdogInfo(name)
	if err != nil || info.Timeout != got {
		t.Errorf("SetTimeout returned %v, sysfs timeout says %v (%v): the ioctl got the wrong unit", got, info.Timeout, err)
	}
	t.Logf("asked 7s, driver set %v", got)
	for range 3 {
		if err := w.Pet(); err != nil {
			t.Fatal(err)
		}
	}
	err = w.Close()
	closed = true
	if errors.Is(err, board.ErrStillArmed) {
		t.Fatalf("magic close did not disarm (%v): this board resets in %v", err, got)
	}
	if err != nil {
		t.Fatal(err)
	}
	if info, err := fs.WatchdogInfo(name); err != nil || info.Active {
		t.Errorf("after magic close sysfs says %+v, %v; want inactive", info, err)
	}
}

// realWatchdog opens the watchdog named by KEYFRAME_TEST_WATCHDOG or skips.
func realWatchdog(t *testing.T) (*board.FS, string, *board.Watchdog) {
	t.Helper()
	dev := os.Getenv("KEYFRAME_TEST_WATCHDOG")
	if dev == "" {
		t.Skip("opening a watchdog arms it and can reset the machine: set KEYFRAME_TEST_WATCHDOG=/dev/watchdogN on a test board to run this")
	}
	fs, err := board.NewFS("/")
	if err != nil {
		t.Fatal(err)
	}
	name, err := board.WatchdogName(dev)
	if err != nil {
		t.Fatal(err)
	}
	w, err := fs.OpenWatchdog(dev)
	if err != nil {
		t.Fatal(err)
	}
	return fs, name, w
}

// TestRealWatchdogLoop keeps a real watchdog with a 3s timeout alive for
// three timeouts with a healthy loop, then shuts down in an orderly way and
// stays up for two more timeouts: if keepalive or magic close did not work
// the board resets and the test never reports. Real time: hardware counts it.
func TestRealWatchdogLoop(t *testing.T) {
	fs, name, w := realWatchdog(t)
	got, err := w.SetTimeout(3 * time.Second)
	if err != nil {
		w.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*got)
	defer cancel()
	l := &board.WatchdogLoop{
		Dog: w, Interval: time.Second, Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		Checks: []board.HealthCheck{{Name: "always", Check: func(time.Time) error { return nil }}},
	}
	if err := l.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Pets < 3 || st.PetErrors != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	if info, err := fs.WatchdogInfo(name); err != nil || info.Active {
		t.Fatalf("after the loop: %+v, %v; want inactive", info, err)
	}
	time.Sleep(2 * got)
	t.Logf("alive %v after the orderly shutdown", 2*got)
}

// TestRealWatchdogStallResets lets a health check fail on a real watchdog: the
// loop stops petting and the board must reset, which ends this test (and the
// next boot reports CARDRESET). Only with KEYFRAME_TEST_WATCHDOG_RESET=1.
func TestRealWatchdogStallResets(t *testing.T) {
	if os.Getenv("KEYFRAME_TEST_WATCHDOG_RESET") != "1" {
		t.Skip("resets the machine: set KEYFRAME_TEST_WATCHDOG_RESET=1 and KEYFRAME_TEST_WATCHDOG=/dev/watchdogN on a test board")
	}
	_, _, w := realWatchdog(t)
	got, err := w.SetTimeout(3 * time.Second)
	if err != nil {
		w.Close()
		t.Fatal(err)
	}
	start := time.Now()
	l := &board.WatchdogLoop{
		Dog: w, Interval: time.Second, Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		Checks: []board.HealthCheck{board.StallCheck("stall", 2*time.Second, func() time.Time { return start })},
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*got)
	defer cancel()
	t.Logf("timeout %v; the check fails after 2s; expecting a reset", got)
	err = l.Run(ctx)
	t.Fatalf("the board did not reset within %v of the check failing (Run: %v, stats %+v)", 10*got, err, l.Stats())
}
