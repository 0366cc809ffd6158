package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/recorder"
	"github.com/keyframe-cam/keyframe/recorder/rotation"
)

// identityEnv is a configuration file naming a data directory.
type identityEnv struct {
	t    *testing.T
	dir  string // the data directory
	conf string
}

func newIdentityEnv(t *testing.T) *identityEnv {
	t.Helper()
	root := t.TempDir()
	e := &identityEnv{t: t, dir: filepath.Join(root, "data"), conf: filepath.Join(root, "k.conf")}
	if err := os.WriteFile(e.conf, []byte("device.data_dir = "+e.dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// run runs keyframe with args and returns the exit code, stdout and stderr.
func (e *identityEnv) run(args ...string) (int, string, string) {
	e.t.Helper()
	var out, errb bytes.Buffer
	code := dispatch(args, &out, &errb)
	return code, out.String(), errb.String()
}

// id creates (or reads) the device key and returns its ID.
func (e *identityEnv) id() string {
	e.t.Helper()
	code, out, errs := e.run("identity", "-config", e.conf, "-id")
	if code != 0 {
		e.t.Fatalf("identity -id: %d %s", code, errs)
	}
	return strings.TrimSpace(out)
}

// csr runs identity csr and returns the parsed request.
func (e *identityEnv) csr() *x509.CertificateRequest {
	e.t.Helper()
	out := filepath.Join(e.t.TempDir(), "device.csr")
	if code, _, errs := e.run("identity", "csr", "-config", e.conf, "-out", out); code != 0 {
		e.t.Fatalf("identity csr: %d %s", code, errs)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		e.t.Fatal(err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		e.t.Fatalf("CSR file is not a PEM CERTIFICATE REQUEST:\n%s", data)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		e.t.Fatal(err)
	}
	return csr
}

func TestIdentityCSR(t *testing.T) {
	e := newIdentityEnv(t)
	id := e.id()
	csr := e.csr()
	if err := csr.CheckSignature(); err != nil {
		t.Errorf("CSR signature: %v", err)
	}
	if csr.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("signature algorithm %v", csr.SignatureAlgorithm)
	}
	if csr.Subject.CommonName != id || len(csr.URIs) != 1 || csr.URIs[0].String() != "keyframe:device:"+id {
		t.Errorf("CSR names CN %q URIs %v, want device %s", csr.Subject.CommonName, csr.URIs, id)
	}
	if got, err := provenance.DeviceID(csr.PublicKey); err != nil || got != id {
		t.Errorf("CSR key is device %s (%v), want %s", got, err, id)
	}
	// Without -out it goes to standard output.
	code, out, _ := e.run("identity", "csr", "-config", e.conf)
	if code != 0 || !strings.HasPrefix(out, "-----BEGIN CERTIFICATE REQUEST-----") {
		t.Errorf("csr to stdout: %d %q", code, out)
	}
}

// cmdCA is a throwaway certificate authority.
type cmdCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCmdCA(t *testing.T) *cmdCA {
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
	return &cmdCA{cert: c, key: k}
}

// sign issues a certificate for pub naming id, valid from..to, and writes
// it with the CA's certificate as a PEM chain; it returns the file.
func (ca *cmdCA) sign(t *testing.T, pub crypto.PublicKey, id string, from, to time.Time) string {
	t.Helper()
	sum := sha256.Sum256([]byte(id + from.String() + to.String()))
	tmpl := &x509.Certificate{
		SerialNumber: new(big.Int).SetBytes(sum[:8]), Subject: pkix.Name{CommonName: id},
		URIs:      []*url.URL{{Scheme: "keyframe", Opaque: "device:" + id}},
		NotBefore: from, NotAfter: to,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(path, provenance.EncodeCertChain([][]byte{der, ca.cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

var (
	longAgo = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	farOff  = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
)

func TestIdentityCertInstall(t *testing.T) {
	e := newIdentityEnv(t)
	id := e.id()
	csr := e.csr()
	ca := newCmdCA(t)
	installed := filepath.Join(e.dir, "device-cert.pem")

	good := ca.sign(t, csr.PublicKey, id, longAgo, farOff)
	code, out, errs := e.run("identity", "cert", "install", "-config", e.conf, good)
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, installed) {
		t.Fatalf("install: %d %q %q", code, out, errs)
	}
	chain, err := provenance.LoadCertChain(installed)
	if err != nil || len(chain) != 2 || !bytes.Equal(chain[1], ca.cert.Raw) {
		t.Fatalf("installed chain: %d certificates, %v", len(chain), err)
	}
	before, err := os.ReadFile(installed)
	if err != nil {
		t.Fatal(err)
	}

	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherID, err := provenance.DeviceID(other.Public())
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		file string
		want string
	}{
		"another key":          {ca.sign(t, other.Public(), id, longAgo, farOff), "another key"},
		"expired":              {ca.sign(t, csr.PublicKey, id, longAgo, longAgo.AddDate(1, 0, 0)), "expired"},
		"names another device": {ca.sign(t, csr.PublicKey, otherID, longAgo, farOff), "names another device"},
		"not a certificate":    {e.conf, "no PEM CERTIFICATE"},
	} {
		t.Run(name, func(t *testing.T) {
			code, _, errs := e.run("identity", "cert", "install", "-config", e.conf, c.file)
			if code != 1 || !strings.Contains(errs, c.want) {
				t.Fatalf("got %d %q, want 1 saying %q", code, errs, c.want)
			}
			if now, err := os.ReadFile(installed); err != nil || !bytes.Equal(now, before) {
				t.Error("a refused certificate replaced the installed one")
			}
		})
	}
	if code, _, _ := e.run("identity", "cert", "install", "-config", e.conf); code != 2 {
		t.Errorf("install without a file: %d, want 2", code)
	}
	if code, _, _ := e.run("identity", "cert", "-config", e.conf, good); code != 2 {
		t.Errorf("cert without install: %d, want 2", code)
	}
	// -cert puts it elsewhere.
	elsewhere := filepath.Join(t.TempDir(), "mine.pem")
	if code, _, errs := e.run("identity", "cert", "install", "-config", e.conf, "-cert", elsewhere, good); code != 0 {
		t.Fatalf("install -cert: %d %s", code, errs)
	}
	if _, err := provenance.LoadCertChain(elsewhere); err != nil {
		t.Error(err)
	}
}

func TestIdentityRotate(t *testing.T) {
	e := newIdentityEnv(t)
	oldID := e.id()
	// A device that has signed 4 records.
	prev := sha256.Sum256([]byte("record 4"))
	chainPath := filepath.Join(e.dir, "chain")
	if err := board.SaveChain(chainPath, board.Chain{Next: 5, Prev: prev[:]}); err != nil {
		t.Fatal(err)
	}
	// With a certificate installed, the rotate record carries it.
	csr := e.csr()
	if code, _, errs := e.run("identity", "cert", "install", "-config", e.conf, newCmdCA(t).sign(t, csr.PublicKey, oldID, longAgo, farOff)); code != 0 {
		t.Fatal(errs)
	}
	keyFile := filepath.Join(e.dir, "device.key")
	oldKey, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}

	code, out, errs := e.run("identity", "rotate", "-config", e.conf)
	if code != 0 {
		t.Fatalf("rotate: %d %s", code, errs)
	}
	layout := recorder.NewLayout(e.dir, keyFile, filepath.Join(e.dir, "device-cert.pem"), "")
	p, err := rotation.Load(layout)
	if err != nil || p == nil {
		t.Fatalf("no pending rotation after rotate: %v", err)
	}
	if p.OldDevice != oldID || p.Seq != 5 || p.NewKeyPath != keyFile+".next" || p.Switched {
		t.Errorf("pending %+v", p)
	}
	for _, want := range []string{"old device: " + oldID, "new device: " + p.NewDevice, p.BundlePath, keyFile + ".next"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	b, err := provenance.UnmarshalBundle(p.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	v, err := provenance.Verify(b.Envelope, b.Media, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v.Payload.Prev, prev[:]) || len(v.Chain) != 2 || v.Payload.KeyStore != "file" {
		t.Errorf("rotate record prev %x, chain %d, keystore %q", v.Payload.Prev, len(v.Chain), v.Payload.KeyStore)
	}
	c, err := board.LoadChain(chainPath)
	h := provenance.HashEnvelope(b.Envelope)
	if err != nil || c.Next != 6 || !bytes.Equal(c.Prev, h[:]) {
		t.Errorf("chain after rotate: %+v %v", c, err)
	}
	if now, err := os.ReadFile(keyFile); err != nil || !bytes.Equal(now, oldKey) {
		t.Error("rotate changed the key file before the rotation was accepted")
	}
	if st, err := os.Stat(keyFile + ".next"); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("new key file: %v, %v", st, err)
	}
	if e.id() != oldID {
		t.Error("the device signs with the new key before the rotation completed")
	}
	// One rotation at a time.
	code, _, errs = e.run("identity", "rotate", "-config", e.conf)
	if code != 1 || !strings.Contains(errs, "already pending") {
		t.Errorf("second rotate: %d %q", code, errs)
	}

	// What the agent does once the receiver accepted the bundle.
	if err := rotation.Complete(layout); err != nil {
		t.Fatal(err)
	}
	if got := e.id(); got != p.NewDevice {
		t.Errorf("device ID after completion %s, want %s", got, p.NewDevice)
	}
	if retired, err := os.ReadFile(keyFile + ".retired"); err != nil || !bytes.Equal(retired, oldKey) {
		t.Error("old key not kept as .retired")
	}
}

func TestIdentityRotateRefuses(t *testing.T) {
	e := newIdentityEnv(t)
	code, _, errs := e.run("identity", "rotate", "-config", e.conf)
	if code != 1 || !strings.Contains(errs, "no device key") {
		t.Errorf("rotate without a key: %d %q", code, errs)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "device.key")); err == nil {
		t.Error("rotate created a key")
	}
	if code, _, _ := e.run("identity", "rotate", "-config", e.conf, "extra"); code != 2 {
		t.Errorf("rotate with an argument: %d", code)
	}
	tpm := filepath.Join(t.TempDir(), "tpm.conf")
	if err := os.WriteFile(tpm, []byte("device.data_dir = "+e.dir+"\ndevice.key_backend = tpm\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs = e.run("identity", "rotate", "-config", tpm)
	if code != 1 || !strings.Contains(errs, "tpm") {
		t.Errorf("rotate with the tpm backend: %d %q", code, errs)
	}
}
