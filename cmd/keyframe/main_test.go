package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestDispatch(t *testing.T) {
	var out, errb bytes.Buffer
	if code := dispatch([]string{"frobnicate"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "unknown command") {
		t.Fatalf("unknown command: code %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := dispatch([]string{"receiver", "enroll", "-data", "d"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "keyframe-receiver enroll -data d") {
		t.Fatalf("receiver on the camera's binary: code %d, stderr %q", code, errb.String())
	}
	out.Reset()
	if code := dispatch([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "keyframe ") {
		t.Fatalf("version: code %d, out %q", code, out.String())
	}
}

// TestIdentityStable runs `keyframe identity` twice on one data directory: the
// key is created once, reused, and the printed ID is the key's.
func TestIdentityStable(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "k.conf")
	if err := os.WriteFile(conf, []byte("device.data_dir = "+filepath.Join(dir, "data")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var first, second, errb bytes.Buffer
	if code := dispatch([]string{"identity", "-config", conf, "-pubout", filepath.Join(dir, "pub.pem")}, &first, &errb); code != 0 {
		t.Fatalf("identity: %d %s", code, errb.String())
	}
	if !strings.Contains(first.String(), "created a new device key") || !strings.Contains(first.String(), "BEGIN PUBLIC KEY") {
		t.Fatalf("first identity output: %q", first.String())
	}
	if code := dispatch([]string{"identity", "-config", conf, "-id"}, &second, &errb); code != 0 {
		t.Fatalf("identity -id: %d %s", code, errb.String())
	}
	id := strings.TrimSpace(second.String())
	if len(id) != 26 || !strings.Contains(first.String(), "device:  "+id) {
		t.Fatalf("id %q not the one first printed: %q", id, first.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "pub.pem")); err != nil {
		t.Fatal(err)
	}
}

// TestSubcommandHelp: -h is a request, not a mistake: exit 0, the usage
// (with the subcommands of a command that has them) and the flags on stdout.
func TestSubcommandHelp(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"run", "-h"}, []string{"usage: keyframe run", "-config"}},
		{[]string{"identity", "-h"}, []string{"keyframe identity csr", "keyframe identity rotate", "-pubout"}},
		{[]string{"identity", "rotate", "-h"}, []string{"keyframe identity cert install"}},
		{[]string{"join", "-help"}, []string{"usage: keyframe join", "-timeout"}},
		{[]string{"config", "-h"}, []string{"usage: keyframe config"}},
		{[]string{"probe", "-h"}, []string{"-dev"}},
		{[]string{"tune", "-h"}, []string{"-motion-only"}},
		{[]string{"watchdog", "status", "-h"}, []string{"keyframe watchdog status", "-root"}},
	} {
		var out, errb bytes.Buffer
		if code := dispatch(c.args, &out, &errb); code != 0 {
			t.Errorf("%v: exit %d, want 0 (stderr %q)", c.args, code, errb.String())
		}
		for _, w := range c.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v: stdout lacks %q:\n%s", c.args, w, out.String())
			}
		}
	}
	var out, errb bytes.Buffer
	if code := dispatch([]string{"run", "-nonsense"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "-nonsense") || !strings.Contains(errb.String(), "keyframe run -h") {
		t.Errorf("a bad flag: exit %d, stderr %q", code, errb.String())
	}
}

func TestConfigErrorExits2(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "bad.conf")
	if err := os.WriteFile(conf, []byte("capture.width = huge\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := dispatch([]string{"run", "-config", conf}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "capture.width") {
		t.Fatalf("bad config: code %d, stderr %q", code, errb.String())
	}
}

// TestConfigErrorsOneALine: every mistake of a file is printed, one line
// each, prefixed with the command.
func TestConfigErrorsOneALine(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "bad.conf")
	if err := os.WriteFile(conf, []byte("capture.width = huge\ncapture.widht = 1\nmotion.noise_floor = 999\nnonsense\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := dispatch([]string{"config", "-config", conf}, &out, &errb)
	lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
	if code != 2 || out.Len() != 0 || len(lines) != 4 {
		t.Fatalf("config with four mistakes: code %d, stdout %d bytes, stderr %q", code, out.Len(), errb.String())
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, "keyframe: agent: config "+conf+":"+strconv.Itoa(i+1)+":") {
			t.Errorf("line %d: %q", i+1, l)
		}
	}
}

// TestConfigFlagDefault: identity and join default -config to the packages'
// file when it exists (so the service's key is the one joined), else to none.
func TestConfigFlagDefault(t *testing.T) {
	dir := t.TempDir()
	system := filepath.Join(dir, "keyframe.conf")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	if got := *configFlag(fs, system, "configuration file"); got != "" {
		t.Fatalf("without %s: default %q, want none", system, got)
	}
	if err := os.WriteFile(system, []byte("device.key_backend = tpm\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	p := configFlag(fs, system, "configuration file")
	if *p != system {
		t.Fatalf("with %s: default %q", system, *p)
	}
	if err := fs.Parse([]string{"-config", "other.conf"}); err != nil || *p != "other.conf" {
		t.Fatalf("-config other.conf: %q, %v", *p, err)
	}
}
