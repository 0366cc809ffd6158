package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/receiver"
)

func TestReceiverTrustCA(t *testing.T) {
	data := filepath.Join(t.TempDir(), "recv")
	ca := newCmdCA(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, provenance.EncodeCertChain([][]byte{ca.cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	fp := receiver.CertFingerprint(ca.cert.Raw)
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := dispatch(args, &out, &errb)
		return code, out.String(), errb.String()
	}

	if code, out, errs := run("receiver", "trust-ca", "-data", data, caFile); code != 0 || !strings.Contains(out, fp) {
		t.Fatalf("trust-ca: %d %q %q", code, out, errs)
	}
	if code, out, _ := run("receiver", "cas", "-dir", data); code != 0 || !strings.Contains(out, fp) || !strings.Contains(out, "test fleet CA") {
		t.Fatalf("cas: %d %q", code, out)
	}
	if cas, err := receiver.TrustedCAs(data); err != nil || len(cas) != 1 || cas[0].Fingerprint != fp {
		t.Fatalf("registry CAs %v, %v", cas, err)
	}
	if code, out, _ := run("receiver", "untrust-ca", "-data", data, caFile); code != 0 || !strings.Contains(out, fp) {
		t.Fatalf("untrust-ca: %d %q", code, out)
	}
	if code, _, errs := run("receiver", "untrust-ca", "-data", data, "-fingerprint", fp); code != 1 || !strings.Contains(errs, "no trusted fleet CA") {
		t.Errorf("untrusting an unknown CA: %d %q", code, errs)
	}
	if code, _, _ := run("receiver", "trust-ca", "-data", data); code != 2 {
		t.Errorf("trust-ca without a file: %d", code)
	}
	if code, _, _ := run("receiver", "trust-ca", "-data", data, filepath.Join(data, "registry.json")); code != 1 {
		t.Errorf("trust-ca of a file without a certificate: %d", code)
	}

	// A device revoked before it ever uploaded.
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := provenance.DeviceID(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	if code, out, errs := run("receiver", "revoke", "-data", data, "-device", id); code != 0 || !strings.Contains(out, id) {
		t.Fatalf("revoke of a never-seen device: %d %q %q", code, out, errs)
	}
}
