package board

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrStillArmed reports that a watchdog was closed in an orderly way but is
// still running (the driver has nowayout set, or it cannot be stopped): the
// board will reset when its timeout runs out.
var ErrStillArmed = errors.New("board: watchdog still armed after close")

// WatchdogFlags are the WDIOF_* bits of include/uapi/linux/watchdog.h, as the
// kernel reports them for a watchdog's options (WDIOC_GETSUPPORT), status
// (WDIOC_GETSTATUS) and boot status (WDIOC_GETBOOTSTATUS, sysfs bootstatus).
type WatchdogFlags uint32

// The WDIOF_* bits. In a boot status, WatchdogCardReset means the watchdog
// reset the board (i6300esb in QEMU reports 32 after a watchdog reset).
const (
	WatchdogOverheat      WatchdogFlags = 0x0001 // reset due to CPU overheat
	WatchdogFanFault      WatchdogFlags = 0x0002 // fan failed
	WatchdogExtern1       WatchdogFlags = 0x0004 // external relay 1
	WatchdogExtern2       WatchdogFlags = 0x0008 // external relay 2
	WatchdogPowerUnder    WatchdogFlags = 0x0010 // power bad/power fault
	WatchdogCardReset     WatchdogFlags = 0x0020 // card previously reset the CPU
	WatchdogPowerOver     WatchdogFlags = 0x0040 // power over voltage
	WatchdogSetTimeout    WatchdogFlags = 0x0080 // option: set timeout (in seconds)
	WatchdogMagicClose    WatchdogFlags = 0x0100 // option: supports magic close char
	WatchdogPreTimeout    WatchdogFlags = 0x0200 // option: pretimeout (in seconds)
	WatchdogAlarmOnly     WatchdogFlags = 0x0400 // option: not a reboot watchdog
	WatchdogKeepalivePing WatchdogFlags = 0x8000 // option: keepalive ping reply
)

var watchdogFlagNames = []struct {
	f    WatchdogFlags
	name string
}{
	{WatchdogOverheat, "OVERHEAT"},
	{WatchdogFanFault, "FANFAULT"},
	{WatchdogExtern1, "EXTERN1"},
	{WatchdogExtern2, "EXTERN2"},
	{WatchdogPowerUnder, "POWERUNDER"},
	{WatchdogCardReset, "CARDRESET"},
	{WatchdogPowerOver, "POWEROVER"},
	{WatchdogSetTimeout, "SETTIMEOUT"},
	{WatchdogMagicClose, "MAGICCLOSE"},
	{WatchdogPreTimeout, "PRETIMEOUT"},
	{WatchdogAlarmOnly, "ALARMONLY"},
	{WatchdogKeepalivePing, "KEEPALIVEPING"},
}

// String names the set bits ("CARDRESET", "SETTIMEOUT|MAGICCLOSE"); unknown
// bits are shown in hex, and no bits as "0".
func (f WatchdogFlags) String() string {
	if f == 0 {
		return "0"
	}
	var parts []string
	rest := f
	for _, n := range watchdogFlagNames {
		if f&n.f != 0 {
			parts = append(parts, n.name)
			rest &^= n.f
		}
	}
	if rest != 0 {
		parts = append(parts, fmt.Sprintf("%#x", uint32(rest)))
	}
	return strings.Join(parts, "|")
}

// WatchdogDevice is one open hardware watchdog timer, in the units of the
// Linux watchdog API. Opening the device armed it: from then on it must be
// kept alive more often than its timeout, or the board resets. FS.OpenWatchdog
// returns the Linux one; board/boardtest has a fake.
type WatchdogDevice interface {
	// Identity is the driver's name for the timer ("i6300ESB timer").
	Identity() string
	// SetTimeout asks for a timeout of seconds (WDIOC_SETTIMEOUT takes an int
	// of seconds) and returns the timeout the driver actually set, which it
	// may have rounded. Setting the timeout also keeps the watchdog alive.
	SetTimeout(seconds int) (int, error)
	// Timeout returns the current timeout in seconds (WDIOC_GETTIMEOUT).
	Timeout() (int, error)
	// Keepalive pets the watchdog (WDIOC_KEEPALIVE).
	Keepalive() error
	// Status returns the driver's current status bits (WDIOC_GETSTATUS).
	Status() (WatchdogFlags, error)
	// BootStatus returns the status bits of the last reboot
	// (WDIOC_GETBOOTSTATUS); WatchdogCardReset means the watchdog did it.
	BootStatus() (WatchdogFlags, error)
	// MagicClose writes the magic character "V" and closes the device, which
	// disarms the watchdog unless the driver has nowayout set. If the device
	// can tell that it is still armed afterwards it returns an error wrapping
	// ErrStillArmed; it is closed either way.
	MagicClose() error
	// Close closes the device without the magic character: a driver that
	// supports magic close keeps running and the board resets after the
	// timeout. This is what a crash does.
	Close() error
}

// Watchdog is a hardware watchdog timer. Its methods are safe for concurrent
// use; after Close they return an error wrapping os.ErrClosed.
type Watchdog struct {
	mu     sync.Mutex
	dev    WatchdogDevice
	closed bool
}

// NewWatchdog wraps an open watchdog device (a fake, or another backend).
func NewWatchdog(dev WatchdogDevice) *Watchdog {
	return &Watchdog{dev: dev}
}

// OpenWatchdog opens the watchdog device node at path (for example
// /dev/watchdog0) under the root. Opening it arms the watchdog: pet it with
// Pet, or run a WatchdogLoop, and Close it to disarm it. A missing node, or a
// node without a driver behind it, gives an error wrapping ErrAbsent; another
// process holding the device gives one wrapping syscall.EBUSY. On platforms
// other than Linux the error wraps both ErrAbsent and errors.ErrUnsupported.
func (fs *FS) OpenWatchdog(path string) (*Watchdog, error) {
	dev, err := fs.openWatchdogDevice(path)
	if err != nil {
		return nil, err
	}
	return NewWatchdog(dev), nil
}

func (w *Watchdog) errClosed(op string) error {
	return fmt.Errorf("board: watchdog %s: %s: %w", w.dev.Identity(), op, os.ErrClosed)
}

// Identity is the driver's name for the timer.
func (w *Watchdog) Identity() string { return w.dev.Identity() }

// SetTimeout sets the watchdog timeout. The kernel counts it in whole seconds:
// d is rounded up to the next whole second (1500ms asks for 2s, 300ms for 1s)
// so the board is never given less time than asked for; d must be positive.
// It returns the timeout the driver set, which may differ (drivers round to
// what their hardware can count, or refuse values outside their range).
func (w *Watchdog) SetTimeout(d time.Duration) (time.Duration, error) {
	if d <= 0 {
		return 0, fmt.Errorf("board: watchdog timeout %v: must be positive", d)
	}
	secs := (d + time.Second - 1) / time.Second
	if secs > math.MaxInt32 {
		return 0, fmt.Errorf("board: watchdog timeout %v: too long", d)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, w.errClosed("set timeout")
	}
	got, err := w.dev.SetTimeout(int(secs))
	if err != nil {
		return 0, fmt.Errorf("board: watchdog %s: set timeout %ds: %w", w.dev.Identity(), secs, err)
	}
	if got <= 0 {
		return 0, fmt.Errorf("board: watchdog %s: set timeout %ds: driver reports %ds", w.dev.Identity(), secs, got)
	}
	return time.Duration(got) * time.Second, nil
}

// Timeout returns the current timeout as the driver reports it.
func (w *Watchdog) Timeout() (time.Duration, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, w.errClosed("get timeout")
	}
	s, err := w.dev.Timeout()
	if err != nil {
		return 0, fmt.Errorf("board: watchdog %s: get timeout: %w", w.dev.Identity(), err)
	}
	if s <= 0 {
		return 0, fmt.Errorf("board: watchdog %s: driver reports timeout %ds", w.dev.Identity(), s)
	}
	return time.Duration(s) * time.Second, nil
}

// Pet keeps the watchdog alive for another timeout.
func (w *Watchdog) Pet() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.errClosed("keepalive")
	}
	if err := w.dev.Keepalive(); err != nil {
		return fmt.Errorf("board: watchdog %s: keepalive: %w", w.dev.Identity(), err)
	}
	return nil
}

// Status returns the driver's current status bits.
func (w *Watchdog) Status() (WatchdogFlags, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, w.errClosed("get status")
	}
	f, err := w.dev.Status()
	if err != nil {
		return 0, fmt.Errorf("board: watchdog %s: get status: %w", w.dev.Identity(), err)
	}
	return f, nil
}

// BootStatus returns the status bits of the last reboot: WatchdogCardReset
// means the watchdog reset the board. FS.WatchdogBootStatus reads the same
// value from sysfs without opening (and arming) the device.
func (w *Watchdog) BootStatus() (WatchdogFlags, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, w.errClosed("get boot status")
	}
	f, err := w.dev.BootStatus()
	if err != nil {
		return 0, fmt.Errorf("board: watchdog %s: get boot status: %w", w.dev.Identity(), err)
	}
	return f, nil
}

// Close shuts the watchdog down in an orderly way: it writes the magic close
// character and closes the device, which disarms it. If the driver has
// nowayout set (or cannot be stopped) the device is closed but the board
// will still reset after the timeout, and the error wraps ErrStillArmed.
// Closing an already closed Watchdog does nothing.
func (w *Watchdog) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	if err := w.dev.MagicClose(); err != nil {
		return fmt.Errorf("board: watchdog %s: close: %w", w.dev.Identity(), err)
	}
	return nil
}

// WatchdogInfo is what sysfs (/sys/class/watchdog/NAME) says about a watchdog.
// Reading it does not open the device, so it does not arm it.
type WatchdogInfo struct {
	Name       string        // sysfs name: "watchdog0"
	Identity   string        // the driver's name for the timer
	Active     bool          // state is "active": the watchdog is running
	Timeout    time.Duration // current timeout
	BootStatus WatchdogFlags // status of the last reboot
	NoWayOut   bool          // once started it cannot be stopped
	// MinTimeout and MaxTimeout bound what SetTimeout accepts; 0 where the
	// kernel does not publish them.
	MinTimeout, MaxTimeout time.Duration
	// Options are the driver's WDIOF_* capabilities, or 0 where the kernel
	// does not publish them (the sysfs "options" file appeared in Linux 5.x).
	Options WatchdogFlags
}

// isWatchdogName reports whether name is "watchdog" followed by one or more
// decimal digits (the kernel's watchdogN).
func isWatchdogName(name string) bool {
	n, ok := strings.CutPrefix(name, "watchdog")
	if !ok || n == "" {
		return false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// WatchdogName returns the sysfs name of the watchdog behind a device node
// path: "watchdog1" for /dev/watchdog1, and "watchdog0" for the legacy
// /dev/watchdog, which the kernel always gives to the first watchdog.
func WatchdogName(devPath string) (string, error) {
	base := path.Base(devPath)
	if base == "watchdog" {
		return "watchdog0", nil
	}
	if !isWatchdogName(base) {
		return "", fmt.Errorf("board: %q is not a watchdog device node (want /dev/watchdog or /dev/watchdogN)", devPath)
	}
	return base, nil
}

func watchdogSysDir(name string) (string, error) {
	if !isWatchdogName(name) {
		return "", fmt.Errorf("board: %q is not a watchdog name (want watchdogN)", name)
	}
	return "/sys/class/watchdog/" + name, nil
}

// WatchdogNames lists the watchdogs the kernel knows (/sys/class/watchdog),
// sorted; ErrAbsent if there are none.
func (fs *FS) WatchdogNames() ([]string, error) {
	ents, err := os.ReadDir(fs.Path("/sys/class/watchdog"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("board: list watchdogs: %w", err)
	}
	var names []string
	for _, e := range ents {
		if isWatchdogName(e.Name()) {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("board: /sys/class/watchdog: %w", ErrAbsent)
	}
	sort.Slice(names, func(i, j int) bool {
		a, _ := strconv.Atoi(strings.TrimPrefix(names[i], "watchdog"))
		b, _ := strconv.Atoi(strings.TrimPrefix(names[j], "watchdog"))
		return a < b
	})
	return names, nil
}

func (fs *FS) readUint(p string, base int) (uint64, error) {
	s, err := fs.readTrimmed(p)
	if err != nil {
		return 0, err
	}
	if base == 16 {
		s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	}
	v, err := strconv.ParseUint(s, base, 32)
	if err != nil {
		return 0, fmt.Errorf("board: parse %s: %w", p, err)
	}
	return v, nil
}

// WatchdogBootStatus reads the boot status of watchdog name ("watchdog0")
// from sysfs, without opening the device.
func (fs *FS) WatchdogBootStatus(name string) (WatchdogFlags, error) {
	dir, err := watchdogSysDir(name)
	if err != nil {
		return 0, err
	}
	v, err := fs.readUint(dir+"/bootstatus", 10)
	if err != nil {
		return 0, err
	}
	return WatchdogFlags(v), nil
}

// WatchdogInfo reads what sysfs says about watchdog name ("watchdog0"),
// without opening the device. A watchdog the kernel does not know gives an
// error wrapping ErrAbsent; a malformed attribute gives a parse error.
func (fs *FS) WatchdogInfo(name string) (WatchdogInfo, error) {
	dir, err := watchdogSysDir(name)
	if err != nil {
		return WatchdogInfo{}, err
	}
	info := WatchdogInfo{Name: name}
	if info.Identity, err = fs.readTrimmed(dir + "/identity"); err != nil {
		return WatchdogInfo{}, err
	}
	if info.BootStatus, err = fs.WatchdogBootStatus(name); err != nil {
		return WatchdogInfo{}, err
	}
	secs, err := fs.readUint(dir+"/timeout", 10)
	if err != nil {
		return WatchdogInfo{}, err
	}
	info.Timeout = time.Duration(secs) * time.Second
	// The other attributes are newer or optional: absent means unknown.
	for _, a := range []struct {
		file string
		d    *time.Duration
	}{{"min_timeout", &info.MinTimeout}, {"max_timeout", &info.MaxTimeout}} {
		v, err := fs.readUint(dir+"/"+a.file, 10)
		if err != nil && !errors.Is(err, ErrAbsent) {
			return WatchdogInfo{}, err
		}
		*a.d = time.Duration(v) * time.Second
	}
	if s, err := fs.readTrimmed(dir + "/state"); err == nil {
		if s != "active" && s != "inactive" {
			return WatchdogInfo{}, fmt.Errorf("board: parse %s/state: %q", dir, s)
		}
		info.Active = s == "active"
	} else if !errors.Is(err, ErrAbsent) {
		return WatchdogInfo{}, err
	}
	if s, err := fs.readTrimmed(dir + "/nowayout"); err == nil {
		if s != "0" && s != "1" {
			return WatchdogInfo{}, fmt.Errorf("board: parse %s/nowayout: %q", dir, s)
		}
		info.NoWayOut = s == "1"
	} else if !errors.Is(err, ErrAbsent) {
		return WatchdogInfo{}, err
	}
	if v, err := fs.readUint(dir+"/options", 16); err == nil {
		info.Options = WatchdogFlags(v)
	} else if !errors.Is(err, ErrAbsent) {
		return WatchdogInfo{}, err
	}
	return info, nil
}
