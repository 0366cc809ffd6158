package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigCommand runs `keyframe config`: without -config it prints every
// key with its default; with a good file it prints the effective
// configuration, which is itself a configuration file that loads to the
// same; a bad value or an unknown key is refused (exit 2) with the file, the
// line and the key named, and nothing printed.
func TestConfigCommand(t *testing.T) {
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := dispatch(args, &out, &errb)
		return code, out.String(), errb.String()
	}
	write := func(name, text string) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	code, defaults, errs := run("config")
	if code != 0 || errs != "" {
		t.Fatalf("config: code %d, stderr %q", code, errs)
	}
	for _, line := range []string{"\ncapture.width = 640\n", "\nmotion.noise_floor = 10\n", "\ndevice.data_dir = /var/lib/keyframe\n"} {
		if !strings.Contains(defaults, line) {
			t.Errorf("config does not print the default %q", strings.TrimSpace(line))
		}
	}

	good := write("good.conf", "# a camera\ncapture.width = 320\nmotion.noise_floor = 12\n")
	code, effective, errs := run("config", "-config", good)
	if code != 0 || errs != "" {
		t.Fatalf("config -config good: code %d, stderr %q", code, errs)
	}
	for _, line := range []string{"\ncapture.width = 320\n", "\nmotion.noise_floor = 12\n", "\ncapture.height = 480\n"} {
		if !strings.Contains(effective, line) {
			t.Errorf("config -config good does not print %q:\n%s", strings.TrimSpace(line), effective)
		}
	}
	if effective == defaults {
		t.Error("config -config good printed the defaults")
	}
	again := write("again.conf", effective)
	if code, out, errs := run("config", "-config", again); code != 0 || out != effective {
		t.Errorf("the printed configuration does not load to itself: code %d, stderr %q", code, errs)
	}

	for _, c := range []struct{ text, want string }{
		{"capture.width = 320\nmotion.noise_floor = 999\n", ":2: motion.noise_floor: 999 is out of range [1, 128]"},
		{"capture.widht = 320\n", `:1: unknown key "capture.widht"`},
		{"capture.stall = soon\n", ":1: capture.stall"},
	} {
		bad := write("bad.conf", c.text)
		code, out, errs := run("config", "-config", bad)
		if code != 2 || out != "" || !strings.Contains(errs, bad+c.want) {
			t.Errorf("config -config with %q: code %d, stdout %d bytes, stderr %q; want 2 and %q", c.text, code, len(out), errs, bad+c.want)
		}
	}
	if code, _, errs := run("config", "-config", filepath.Join(t.TempDir(), "none.conf")); code != 2 || !strings.Contains(errs, "none.conf") {
		t.Errorf("config -config of a missing file: code %d, stderr %q", code, errs)
	}
}

// TestConfigTemplateCommand: `keyframe config -template` prints the
// commented-out template (the packages' conffile); with -config it is refused.
func TestConfigTemplateCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := dispatch([]string{"config", "-template"}, &out, &errb); code != 0 || errb.Len() != 0 {
		t.Fatalf("config -template: code %d, stderr %q", code, errb.String())
	}
	if !strings.Contains(out.String(), "\n#capture.width = 640\n") || strings.Contains(out.String(), "\ncapture.width = ") {
		t.Fatalf("config -template does not comment the keys out:\n%s", out.String())
	}
	out.Reset()
	errb.Reset()
	if code := dispatch([]string{"config", "-template", "-config", "x.conf"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "-template") {
		t.Fatalf("config -template -config: code %d, stderr %q", code, errb.String())
	}
}
