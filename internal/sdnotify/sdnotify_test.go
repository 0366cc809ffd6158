package sdnotify_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/internal/sdnotify"
)

// listen opens a unixgram socket at addr, as systemd does for NOTIFY_SOCKET.
func listen(t *testing.T, addr string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// receive reads one datagram (the messages are sent before it is called, so
// the deadline only bounds a missing one).
func receive(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no datagram: %v", err)
	}
	return string(buf[:n])
}

// socketDir is short: a unix socket path has at most 107 bytes, and
// t.TempDir's can be longer.
func socketDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func TestNotifyPathSocket(t *testing.T) {
	addr := filepath.Join(socketDir(t), "notify")
	srv := listen(t, addr)
	n, err := sdnotify.New(addr, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Ready("capturing\nSTOPPING=1"); err != nil {
		t.Fatal(err)
	}
	if err := n.Watchdog(); err != nil {
		t.Fatal(err)
	}
	if err := n.Stopping(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"READY=1\nSTATUS=capturing STOPPING=1", "WATCHDOG=1", "STOPPING=1"} {
		if got := receive(t, srv); got != want {
			t.Fatalf("datagram %q, want %q", got, want)
		}
	}
}

// TestNotifyAbstractSocket: systemd may name an abstract socket ("@name"),
// which has no file; the datagram must reach it and not a path "@name".
func TestNotifyAbstractSocket(t *testing.T) {
	name := fmt.Sprintf("@keyframe-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	srv := listen(t, name)
	wd := t.TempDir()
	t.Chdir(wd)
	n, err := sdnotify.FromEnv(env(map[string]string{"NOTIFY_SOCKET": name}), 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Status("waiting for the camera"); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, srv); got != "STATUS=waiting for the camera" {
		t.Fatalf("datagram %q", got)
	}
	if _, err := os.Stat(filepath.Join(wd, name)); !os.IsNotExist(err) {
		t.Fatalf("a file %q appeared in the working directory (stat: %v): the name was not taken as abstract", name, err)
	}
}

func TestNotifyNoListener(t *testing.T) {
	addr := filepath.Join(socketDir(t), "gone")
	n, err := sdnotify.New(addr, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = n.Watchdog()
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("err = %v, want one naming %s", err, addr)
	}
}

func TestNilNotifierDoesNothing(t *testing.T) {
	var n *sdnotify.Notifier
	if err := n.Ready("x"); err != nil {
		t.Fatal(err)
	}
	if err := n.Watchdog(); err != nil {
		t.Fatal(err)
	}
	if d := n.WatchdogTimeout(); d != 0 {
		t.Fatalf("watchdog %v", d)
	}
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestFromEnv(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		nilN    bool
		wd      time.Duration
		wantErr string
	}{
		{name: "not under systemd", env: map[string]string{"WATCHDOG_USEC": "1000000"}, nilN: true},
		{name: "no watchdog", env: map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify"}},
		{name: "watchdog", env: map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}, wd: 30 * time.Second},
		{name: "watchdog for this pid", env: map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "500000", "WATCHDOG_PID": "42"}, wd: 500 * time.Millisecond},
		{name: "watchdog for another pid", env: map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "500000", "WATCHDOG_PID": "7"}},
		{name: "relative socket", env: map[string]string{"NOTIFY_SOCKET": "notify"}, wantErr: "NOTIFY_SOCKET"},
		{name: "bare @", env: map[string]string{"NOTIFY_SOCKET": "@"}, wantErr: "NOTIFY_SOCKET"},
		{name: "bad usec", env: map[string]string{"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "30s"}, wantErr: "WATCHDOG_USEC"},
		{name: "zero usec", env: map[string]string{"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "0"}, wantErr: "WATCHDOG_USEC"},
		{name: "huge usec", env: map[string]string{"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "18446744073709551615"}, wantErr: "WATCHDOG_USEC"},
		{name: "bad pid", env: map[string]string{"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "x"}, wantErr: "WATCHDOG_PID"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, err := sdnotify.FromEnv(env(c.env), 42)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (n == nil) != c.nilN {
				t.Fatalf("notifier %v, want nil: %v", n, c.nilN)
			}
			if got := n.WatchdogTimeout(); got != c.wd {
				t.Fatalf("watchdog %v, want %v", got, c.wd)
			}
		})
	}
}
