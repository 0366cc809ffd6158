package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestWatchdogStatusFixtures(t *testing.T) {
	var out, errb bytes.Buffer
	code := cmdWatchdog([]string{"status", "-root", "../../board/testdata/fixtures", "-dev", "/dev/watchdog"}, &out, &errb)
	if code != 0 {
		t.Fatalf("code %d, stderr %q", code, errb.String())
	}
	want := `device:     /dev/watchdog (watchdog0)
identity:   i6300ESB timer
state:      inactive
timeout:    30s (driver range 1s to 34m6s)
nowayout:   false
bootstatus: 32 (CARDRESET)
last boot:  reset by the watchdog
`
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}

	out.Reset()
	code = cmdWatchdog([]string{"status", "-root", "../../board/testdata/fixtures", "-dev", "/dev/watchdog1"}, &out, &errb)
	if code != 0 || !strings.Contains(out.String(), "state:      active\n") || !strings.Contains(out.String(), "nowayout:   true\n") ||
		!strings.Contains(out.String(), "bootstatus: 0 (0)\n") ||
		!strings.Contains(out.String(), "options:    SETTIMEOUT|MAGICCLOSE|KEEPALIVEPING\n") || strings.Contains(out.String(), "last boot") {
		t.Fatalf("watchdog1: code %d, output:\n%s", code, out.String())
	}
}

func TestWatchdogStatusErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"status", "-root", t.TempDir()}, 1, "no watchdog watchdog0"},
		{[]string{"status", "-dev", "/dev/video0"}, 2, "not a watchdog device node"},
		{[]string{"status", "extra"}, 2, "unexpected arguments"},
		{nil, 2, "usage: keyframe watchdog status"},
		{[]string{"arm"}, 2, "usage: keyframe watchdog status"},
	} {
		var out, errb bytes.Buffer
		if code := cmdWatchdog(c.args, &out, &errb); code != c.code || !strings.Contains(errb.String(), c.msg) {
			t.Errorf("%q: code %d, stderr %q; want %d and %q", c.args, code, errb.String(), c.code, c.msg)
		}
	}
}
