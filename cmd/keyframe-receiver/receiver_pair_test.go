package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/receiver"
)

// TestReceiverPairUnpair drives `keyframe-receiver enroll|pair|unpair` on a
// data directory a running receiver serves, and reads each change back
// through the receiver (Server.PairedOwner reads the registry on disk): pair
// sets the owner, pairing again replaces it, unpair clears it; bad input is
// refused with a message naming what is wrong, and leaves the pairing as it
// was.
func TestReceiverPairUnpair(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "recv")
	_, pub := newDeviceKey(t)
	keyFile := filepath.Join(t.TempDir(), "device.pub.pem")
	if err := os.WriteFile(keyFile, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := dispatch(args, &out, &errb)
		return code, out.String(), errb.String()
	}

	code, out, errs := run("enroll", "-data", dir, "-key", keyFile)
	id := strings.TrimSpace(out)
	if code != 0 || !receiver.ValidDeviceID(id) {
		t.Fatalf("enroll: code %d, stdout %q, stderr %q", code, out, errs)
	}
	srv, err := receiver.Open(receiver.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	owner := func() string {
		t.Helper()
		o, err := srv.PairedOwner(id)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	if o := owner(); o != "" {
		t.Fatalf("enrolled without -owner: paired to %q", o)
	}

	if code, out, errs := run("pair", "-data", dir, "-device", id, "-owner", "alice"); code != 0 || out != "paired "+id+" to alice\n" {
		t.Fatalf("pair: code %d, stdout %q, stderr %q", code, out, errs)
	}
	if o := owner(); o != "alice" {
		t.Fatalf("after pair: owner %q, want alice", o)
	}
	if code, _, errs := run("pair", "-data", dir, "-device", id, "-owner", "bob"); code != 0 {
		t.Fatalf("pair again: code %d, stderr %q", code, errs)
	}
	if o := owner(); o != "bob" {
		t.Fatalf("after pairing again: owner %q, want bob (the new pairing replaces the old)", o)
	}

	// Refusals: each leaves bob paired.
	other, _ := newDeviceKey(t)
	stranger, err := provenance.DeviceID(other.Public()) // never enrolled here
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		code int // 0: any failure
		msg  string
	}{
		{[]string{"pair", "-data", dir, "-device", id, "-owner", "Mallory!"}, 0, `"Mallory!": invalid owner name`},
		{[]string{"pair", "-data", dir, "-device", stranger, "-owner", "mallory"}, 0, stranger + ": device not enrolled"},
		{[]string{"pair", "-data", dir, "-device", id}, 2, "-device and -owner are required"},
		{[]string{"pair", "-data", dir, "-owner", "mallory"}, 2, "-device and -owner are required"},
		{[]string{"pair", "-data", dir, "-device", id, "-owner", "mallory", "extra"}, 2, "-device and -owner are required"},
		{[]string{"unpair", "-data", dir, "-device", stranger}, 0, stranger + ": device not enrolled"},
		{[]string{"unpair", "-data", dir}, 2, "keyframe-receiver unpair: -device is required"},
		{[]string{"revoke", "-data", dir, id}, 2, "keyframe-receiver revoke: -device is required"},
		{[]string{"enroll", "-data", dir}, 2, "keyframe-receiver enroll: -key is required"},
	} {
		code, out, errs := run(c.args...)
		if code == 0 || (c.code != 0 && code != c.code) || !strings.Contains(errs, c.msg) {
			t.Errorf("receiver %q: code %d, stderr %q; want a failure (code %d if not 0) naming %q", c.args, code, errs, c.code, c.msg)
		}
		if out != "" {
			t.Errorf("receiver %q: printed %q on failure", c.args, out)
		}
		if o := owner(); o != "bob" {
			t.Fatalf("receiver %q changed the pairing to %q", c.args, o)
		}
	}

	if code, out, errs := run("unpair", "-data", dir, "-device", id); code != 0 || out != "unpaired "+id+"\n" {
		t.Fatalf("unpair: code %d, stdout %q, stderr %q", code, out, errs)
	}
	if o := owner(); o != "" {
		t.Fatalf("after unpair: owner %q, want none", o)
	}
	// Unpairing is not revoking: the device can be paired again.
	if code, _, errs := run("pair", "-data", dir, "-device", id, "-owner", "carol"); code != 0 || owner() != "carol" {
		t.Fatalf("pair after unpair: code %d, stderr %q, owner %q", code, errs, owner())
	}
}
