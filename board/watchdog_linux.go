//go:build linux

package board

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// linuxWatchdog is a /dev/watchdogN opened for writing. Every ioctl passes an
// int (4 bytes) or a struct watchdog_info, per include/uapi/linux/watchdog.h;
// the ioctl numbers are pinned in watchdog_linux_test.go.
type linuxWatchdog struct {
	fs       *FS
	path     string // machine path, for messages
	name     string // sysfs name ("watchdog0"), "" if the node is not named watchdog[N]
	f        *os.File
	rc       syscall.RawConn
	identity string
	options  WatchdogFlags
}

func (fs *FS) openWatchdogDevice(path string) (WatchdogDevice, error) {
	host := fs.Path(path)
	st, err := os.Stat(host)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("board: watchdog %s: %w", path, ErrAbsent)
	}
	if err != nil {
		return nil, fmt.Errorf("board: watchdog: %w", err)
	}
	if st.Mode()&os.ModeCharDevice == 0 {
		// Refuse before opening: writing the magic "V" into a regular file
		// (a test fixture, a mistyped path) would corrupt it.
		return nil, fmt.Errorf("board: watchdog %s: not a character device", path)
	}
	f, err := os.OpenFile(host, os.O_WRONLY, 0)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ENODEV), errors.Is(err, syscall.ENXIO):
			// The node exists but no driver is behind it (a static
			// /dev/watchdog with the module not loaded).
			return nil, fmt.Errorf("board: open watchdog %s: %w (%w)", path, ErrAbsent, err)
		case errors.Is(err, syscall.EBUSY):
			return nil, fmt.Errorf("board: open watchdog %s: held by another process (a watchdog has one opener): %w", path, err)
		}
		return nil, fmt.Errorf("board: open watchdog: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("board: open watchdog %s: %w", path, err)
	}
	name, _ := WatchdogName(path)
	d := &linuxWatchdog{fs: fs, path: path, name: name, f: f, rc: rc}
	var info *unix.WatchdogInfo
	err = d.control(func(fd int) (err error) {
		info, err = unix.IoctlGetWatchdogInfo(fd)
		return err
	})
	if err != nil {
		// Every watchdog driver answers WDIOC_GETSUPPORT (the watchdog core
		// does it for them): this is some other device, so close it without
		// the magic "V", which would be data to it.
		f.Close()
		return nil, fmt.Errorf("board: watchdog %s: WDIOC_GETSUPPORT: not a watchdog: %w", path, err)
	}
	d.identity = string(bytes.TrimRight(info.Identity[:], "\x00"))
	if d.identity == "" {
		d.identity = path
	}
	d.options = WatchdogFlags(info.Options)
	return d, nil
}

// control runs fn with the file descriptor, keeping the file open meanwhile.
func (d *linuxWatchdog) control(fn func(fd int) error) error {
	var ferr error
	if err := d.rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

func (d *linuxWatchdog) getInt(req uint, name string) (uint32, error) {
	var v uint32
	err := d.control(func(fd int) (err error) {
		// IoctlGetUint32, not IoctlGetInt: the kernel writes a 4-byte int.
		v, err = unix.IoctlGetUint32(fd, req)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return v, nil
}

func (d *linuxWatchdog) Identity() string { return d.identity }

// SetTimeout passes seconds as a 4-byte int (WDIOC_SETTIMEOUT, the mistake
// u-root made was passing a time.Duration) and reads back what the driver set.
// The kernel writes the value back into the same int; reading it with
// WDIOC_GETTIMEOUT returns the same number and needs no unsafe code.
func (d *linuxWatchdog) SetTimeout(seconds int) (int, error) {
	if seconds <= 0 || seconds > 1<<31-1 {
		return 0, fmt.Errorf("WDIOC_SETTIMEOUT: %d seconds out of range", seconds)
	}
	err := d.control(func(fd int) error {
		return unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, seconds)
	})
	if err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) {
			return 0, fmt.Errorf("WDIOC_SETTIMEOUT: the driver cannot change its timeout (options %v): %w", d.options, err)
		}
		return 0, fmt.Errorf("WDIOC_SETTIMEOUT %d: %w", seconds, err)
	}
	return d.Timeout()
}

func (d *linuxWatchdog) Timeout() (int, error) {
	v, err := d.getInt(unix.WDIOC_GETTIMEOUT, "WDIOC_GETTIMEOUT")
	return int(int32(v)), err
}

// Keepalive uses WDIOC_KEEPALIVE, or for drivers without WDIOF_KEEPALIVEPING
// a write of one character other than the magic "V", which also pets it.
func (d *linuxWatchdog) Keepalive() error {
	if d.options&WatchdogKeepalivePing == 0 {
		if _, err := d.f.Write([]byte{'k'}); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		return nil
	}
	err := d.control(unix.IoctlWatchdogKeepalive)
	if err != nil {
		return fmt.Errorf("WDIOC_KEEPALIVE: %w", err)
	}
	return nil
}

func (d *linuxWatchdog) Status() (WatchdogFlags, error) {
	v, err := d.getInt(unix.WDIOC_GETSTATUS, "WDIOC_GETSTATUS")
	return WatchdogFlags(v), err
}

func (d *linuxWatchdog) BootStatus() (WatchdogFlags, error) {
	v, err := d.getInt(unix.WDIOC_GETBOOTSTATUS, "WDIOC_GETBOOTSTATUS")
	return WatchdogFlags(v), err
}

func (d *linuxWatchdog) MagicClose() error {
	_, werr := d.f.Write([]byte{'V'})
	cerr := d.f.Close()
	if werr != nil || cerr != nil {
		return fmt.Errorf("magic close %s: %w", d.path, errors.Join(werr, cerr))
	}
	return d.checkStopped()
}

// checkStopped asks sysfs whether the watchdog still runs after the magic
// close: the kernel stops it in close(2) unless nowayout is set or the
// driver refuses. If sysfs cannot tell, it reports nothing.
func (d *linuxWatchdog) checkStopped() error {
	if d.name == "" {
		return nil
	}
	info, err := d.fs.WatchdogInfo(d.name)
	if err != nil || !info.Active {
		return nil
	}
	why := "the driver did not stop it"
	if info.NoWayOut {
		why = "nowayout is set"
	}
	return fmt.Errorf("%s: %w (%s): the board resets in %v", d.path, ErrStillArmed, why, info.Timeout)
}

func (d *linuxWatchdog) Close() error {
	if err := d.f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", d.path, err)
	}
	return nil
}
