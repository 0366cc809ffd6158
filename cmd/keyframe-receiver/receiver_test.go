package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/receiver"
)

func TestReceiverTrustCA(t *testing.T) {
	data := filepath.Join(t.TempDir(), "recv")
	ca := newFleetCA(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, provenance.EncodeCertChain([][]byte{ca.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	fp := receiver.CertFingerprint(ca.Raw)
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := dispatch(args, &out, &errb)
		return code, out.String(), errb.String()
	}

	if code, out, errs := run("trust-ca", "-data", data, caFile); code != 0 || !strings.Contains(out, fp) {
		t.Fatalf("trust-ca: %d %q %q", code, out, errs)
	}
	if code, out, _ := run("cas", "-dir", data); code != 0 || !strings.Contains(out, fp) || !strings.Contains(out, "test fleet CA") {
		t.Fatalf("cas: %d %q", code, out)
	}
	if cas, err := receiver.TrustedCAs(data); err != nil || len(cas) != 1 || cas[0].Fingerprint != fp {
		t.Fatalf("registry CAs %v, %v", cas, err)
	}
	if code, out, _ := run("untrust-ca", "-data", data, caFile); code != 0 || !strings.Contains(out, fp) {
		t.Fatalf("untrust-ca: %d %q", code, out)
	}
	if code, _, errs := run("untrust-ca", "-data", data, "-fingerprint", fp); code != 1 || !strings.Contains(errs, "no trusted fleet CA") {
		t.Errorf("untrusting an unknown CA: %d %q", code, errs)
	}
	if code, _, _ := run("trust-ca", "-data", data); code != 2 {
		t.Errorf("trust-ca without a file: %d", code)
	}
	if code, _, _ := run("trust-ca", "-data", data, filepath.Join(data, "registry.json")); code != 1 {
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
	if code, out, errs := run("revoke", "-data", data, "-device", id); code != 0 || !strings.Contains(out, id) {
		t.Fatalf("revoke of a never-seen device: %d %q %q", code, out, errs)
	}
}

// newFleetCA returns a throwaway self-signed CA certificate named "test fleet CA".
func newFleetCA(t *testing.T) *x509.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test fleet CA"},
		NotBefore: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestReceiverHelp: -h exits 0 and lists the subcommands; a camera command
// names the binary it is in.
func TestReceiverHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"help"}, {"owner", "-h"}, {"enroll", "-h"}, {"verify", "-h"}, {"eval", "-h"}} {
		var out, errb bytes.Buffer
		if code := dispatch(args, &out, &errb); code != 0 || !strings.Contains(out.String(), "keyframe-") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := dispatch([]string{"-h"}, &out, &errb); !strings.Contains(out.String(), "keyframe-receiver owner link") || !strings.Contains(out.String(), "-listen") {
		t.Errorf("-h: exit %d, stdout lacks the subcommands or the flags: %q", code, out.String())
	}
	errb.Reset()
	if code := dispatch([]string{"run"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "keyframe run") {
		t.Errorf("run: exit %d, stderr %q", code, errb.String())
	}
}
