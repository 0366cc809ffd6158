package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/receiver"
)

// newDeviceKey returns a fresh device key and its public key as the PEM
// "PUBLIC KEY" block `keyframe identity -pubout` writes.
func newDeviceKey(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return k, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki})
}

// newReceiverStore makes a receiver data directory holding the start and
// end record of one event ("ev-1") of one enrolled device, stored the way
// an upload stores them (Server.Ingest), and returns the directory and the
// device ID.
func newReceiverStore(t *testing.T) (dir, id string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "recv")
	key, pub := newDeviceKey(t)
	id, err := receiver.Enroll(dir, pub)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := receiver.Open(receiver.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var prev []byte
	for i, kind := range []string{provenance.KindStart, provenance.KindEnd} {
		thumb := bytes.Repeat([]byte(fmt.Sprintf("thumbnail %s ", kind)), 20)
		seq := uint64(i + 1)
		p := &provenance.Payload{
			Device:   id,
			Event:    "ev-1",
			Kind:     kind,
			Seq:      seq,
			Boot:     "boot-1",
			Prev:     prev,
			Time:     provenance.Time{UnixMs: 1_764_000_000_000 + int64(seq)*1000, BootMs: seq * 1000, Clock: provenance.ClockSynced},
			Motion:   provenance.Motion{DurationMs: 1500, Frames: 12, PeakAreaPPM: 40000, Box: [4]int32{1, 2, 30, 40}, Width: 320, Height: 240},
			Media:    []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", thumb)},
			KeyStore: "file",
		}
		env, err := provenance.Sign(rand.Reader, key, p)
		if err != nil {
			t.Fatal(err)
		}
		h := provenance.HashEnvelope(env)
		prev = h[:]
		b, err := (&provenance.Bundle{Envelope: env, Media: [][]byte{thumb}}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if res := srv.Ingest(b, receiver.Claim{Device: id}); !res.Stored() {
			t.Fatalf("ingest %s: %+v", kind, res)
		}
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, id
}

// TestVerifyExitCodes runs `keyframe-receiver verify` as a script would: exit 0 on a
// good store, 1 with the failed event named when a stored media byte is
// flipped, 2 with the path named for a directory that is not there. CI's
// scripts rely on the code, not on the text.
func TestVerifyExitCodes(t *testing.T) {
	dir, id := newReceiverStore(t)
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := dispatch(args, &out, &errb)
		return code, out.String(), errb.String()
	}

	if code, out, errs := run("verify", "-data", dir); code != 0 || !strings.Contains(out, "ok 2 records verified") {
		t.Fatalf("verify of a good store: code %d, stdout %q, stderr %q; want 0 and 2 verified", code, out, errs)
	}

	victim := filepath.Join(dir, "events", id, "ev-1-end.0.jpg")
	data, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x01
	if err := os.WriteFile(victim, data, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := run("verify", "-data", dir)
	if code != 1 {
		t.Errorf("verify after a flipped media byte: code %d, want 1 (stdout %q, stderr %q)", code, out, errs)
	}
	if !strings.Contains(out, "FAILED event=ev-1 kind=end device="+id) || !strings.Contains(out, "1 of 2 records failed verification") {
		t.Errorf("verify after a flipped media byte: stdout %q, want the failed record named", out)
	}
	if strings.Contains(out, "kind=start") {
		t.Errorf("the intact start record was reported: %q", out)
	}

	missing := filepath.Join(t.TempDir(), "no-such-receiver")
	code, out, errs = run("verify", "-data", missing)
	if code != 2 || !strings.Contains(errs, "keyframe-receiver verify: ") || !strings.Contains(errs, missing) || !strings.Contains(errs, "no such file or directory") {
		t.Errorf("verify of a missing directory: code %d, stderr %q; want 2 and the path named", code, errs)
	}
	if out != "" {
		t.Errorf("verify of a missing directory printed %q", out)
	}

	if code, _, errs := run("verify", "-data", dir, "extra"); code != 2 || !strings.Contains(errs, `unexpected argument "extra"`) {
		t.Errorf("verify with an extra argument: code %d, stderr %q", code, errs)
	}
}
