// Package sdnotify tells systemd how a Type=notify service is doing
// (sd_notify(3)): READY=1 once it has started, WATCHDOG=1 keepalives for
// WatchdogSec=, STOPPING=1 on an orderly stop. Each message is one datagram
// to the unix socket systemd names in $NOTIFY_SOCKET; a name starting with
// '@' is in the abstract namespace. It has no dependency beyond the standard
// library, and a nil *Notifier (not started by systemd) does nothing.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Notifier sends state changes to systemd's notification socket.
type Notifier struct {
	addr     string
	watchdog time.Duration
}

// New returns a notifier for the socket addr: an absolute path, or '@'
// followed by an abstract socket name. watchdog is the service's watchdog
// timeout (0: none); it is only reported by WatchdogTimeout.
func New(addr string, watchdog time.Duration) (*Notifier, error) {
	switch {
	case len(addr) < 2 || (addr[0] != '/' && addr[0] != '@'):
		return nil, fmt.Errorf("sdnotify: NOTIFY_SOCKET %q: want an absolute path or @abstract-name", addr)
	case watchdog < 0:
		return nil, fmt.Errorf("sdnotify: watchdog timeout %v is negative", watchdog)
	}
	return &Notifier{addr: addr, watchdog: watchdog}, nil
}

// FromEnv returns the notifier systemd set up through the environment
// (getenv is os.Getenv; pid the process's ID), or nil and no error when
// NOTIFY_SOCKET is unset (not a Type=notify service of systemd). The
// watchdog timeout comes from WATCHDOG_USEC, and applies only if
// WATCHDOG_PID is unset or names pid.
func FromEnv(getenv func(string) string, pid int) (*Notifier, error) {
	addr := getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil, nil
	}
	var wd time.Duration
	if s := getenv("WATCHDOG_USEC"); s != "" {
		us, err := strconv.ParseUint(s, 10, 63)
		if err != nil || us == 0 || us > uint64(1<<63-1)/uint64(time.Microsecond) {
			return nil, fmt.Errorf("sdnotify: WATCHDOG_USEC %q: want a positive number of microseconds", s)
		}
		wd = time.Duration(us) * time.Microsecond
		if p := getenv("WATCHDOG_PID"); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("sdnotify: WATCHDOG_PID %q: want a process ID", p)
			}
			if n != pid {
				wd = 0 // the watchdog is another process's
			}
		}
	}
	return New(addr, wd)
}

// WatchdogTimeout is the service's watchdog timeout (WatchdogSec=), or 0
// when systemd expects no keepalives (and for a nil Notifier). sd_watchdog_enabled(3)
// recommends a keepalive every half of it.
func (n *Notifier) WatchdogTimeout() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog
}

// Notify sends state, newline-separated VARIABLE=value assignments, as one
// datagram. A nil Notifier sends nothing and returns nil.
func (n *Notifier) Notify(state string) error {
	if n == nil {
		return nil
	}
	if state == "" {
		return errors.New("sdnotify: empty state")
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sdnotify: %s: %w", n.addr, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sdnotify: %s: %w", n.addr, err)
	}
	return nil
}

// Ready tells systemd the service has started (READY=1), with a status line.
func (n *Notifier) Ready(status string) error {
	return n.Notify("READY=1\nSTATUS=" + oneLine(status))
}

// Watchdog sends one keepalive (WATCHDOG=1).
func (n *Notifier) Watchdog() error { return n.Notify("WATCHDOG=1") }

// Stopping tells systemd the service is shutting down (STOPPING=1).
func (n *Notifier) Stopping() error { return n.Notify("STOPPING=1") }

// Status sets the status line systemctl status shows (STATUS=...).
func (n *Notifier) Status(status string) error { return n.Notify("STATUS=" + oneLine(status)) }

// oneLine keeps a status from adding assignments of its own.
func oneLine(s string) string { return strings.NewReplacer("\n", " ", "\r", " ").Replace(s) }
