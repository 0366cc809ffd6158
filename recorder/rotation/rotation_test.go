package rotation_test

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
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/recorder"
	"github.com/keyframe-cam/keyframe/recorder/rotation"
)

// memChain is an in-memory recorder.ChainStore.
type memChain struct {
	next    uint64
	prev    []byte
	failSav bool
}

func (m *memChain) Load() (board.Chain, error) { return board.Chain{Next: m.next, Prev: m.prev}, nil }
func (m *memChain) Save(c board.Chain) error {
	if m.failSav {
		return errors.New("disk full")
	}
	m.next, m.prev = c.Next, c.Prev
	return nil
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writeKey(t *testing.T, path string, k *ecdsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func keyInFile(t *testing.T, path string) crypto.PublicKey {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(crypto.Signer).Public()
}

func id(t *testing.T, k crypto.Signer) string {
	t.Helper()
	s, err := provenance.DeviceID(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// device is a data directory with a key file, a new key at the .next path
// and a chain state.
type device struct {
	dir, keyFile string
	layout       recorder.Layout // with no certificate file
	old, new     *ecdsa.PrivateKey
	chain        *memChain
}

func newDevice(t *testing.T) *device {
	d := &device{dir: t.TempDir(), old: newKey(t), new: newKey(t)}
	d.keyFile = filepath.Join(d.dir, "device.key")
	d.layout = recorder.NewLayout(d.dir, d.keyFile, "", "")
	d.layout.Cert = ""
	writeKey(t, d.keyFile, d.old)
	writeKey(t, d.layout.NextKey, d.new)
	prev := sha256.Sum256([]byte("last envelope"))
	d.chain = &memChain{next: 17, prev: prev[:]}
	return d
}

func (d *device) request() rotation.Request {
	return rotation.Request{
		Layout: d.layout, Old: d.old, New: d.new, KeyStore: "file", Boot: "boot-1",
		Time:  provenance.Time{UnixMs: 1764000000000, BootMs: 5000, Clock: provenance.ClockSynced},
		Chain: d.chain,
	}
}

func TestPrepareLoadComplete(t *testing.T) {
	d := newDevice(t)
	prevBefore := d.chain.prev
	p, err := rotation.Prepare(d.request())
	if err != nil {
		t.Fatal(err)
	}
	if p.Seq != 17 || p.OldDevice != id(t, d.old) || p.NewDevice != id(t, d.new) || p.Event != "rotate-"+id(t, d.new) {
		t.Errorf("pending %+v", p)
	}
	// The bundle on disk is the verified rotate record, next in the old chain.
	data, err := os.ReadFile(d.layout.Rotation)
	if err != nil || !bytes.Equal(data, p.Bundle) {
		t.Fatalf("bundle file: %v", err)
	}
	b, err := provenance.UnmarshalBundle(data)
	if err != nil {
		t.Fatal(err)
	}
	v, err := provenance.Verify(b.Envelope, b.Media, d.old.Public())
	if err != nil {
		t.Fatal(err)
	}
	if v.Payload.Kind != provenance.KindRotate || v.Payload.Seq != 17 || !bytes.Equal(v.Payload.Prev, prevBefore) || v.NextDevice != p.NewDevice {
		t.Errorf("rotate record %+v", v.Payload)
	}
	// The chain advanced past it: the new key's first record follows it.
	h := provenance.HashEnvelope(b.Envelope)
	if d.chain.next != 18 || !bytes.Equal(d.chain.prev, h[:]) {
		t.Errorf("chain %d %x after Prepare", d.chain.next, d.chain.prev)
	}
	if _, err := rotation.Prepare(d.request()); !errors.Is(err, rotation.ErrPending) {
		t.Errorf("second Prepare: %v, want ErrPending", err)
	}

	got, err := rotation.Load(d.layout)
	if err != nil || got == nil {
		t.Fatalf("Load: %v, %v", got, err)
	}
	if got.NewKeyPath != d.layout.NextKey || got.Switched || got.Seq != 17 || got.NewDevice != p.NewDevice || got.Event != p.Event {
		t.Errorf("Load %+v", got)
	}

	if err := rotation.Complete(d.layout); err != nil {
		t.Fatal(err)
	}
	if !d.new.PublicKey.Equal(keyInFile(t, d.keyFile)) {
		t.Error("key file does not hold the new key")
	}
	if !d.old.PublicKey.Equal(keyInFile(t, d.layout.RetiredKey)) {
		t.Error("retired key file does not hold the old key")
	}
	for _, gone := range []string{d.layout.Rotation, d.layout.NextKey} {
		if _, err := os.Stat(gone); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there (%v)", gone, err)
		}
	}
	if st, err := os.Stat(d.keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, %v", st, err)
	}
	if got, err := rotation.Load(d.layout); got != nil || err != nil {
		t.Errorf("Load after Complete: %+v, %v", got, err)
	}
	if err := rotation.Complete(d.layout); err != nil {
		t.Errorf("Complete with nothing pending: %v", err)
	}
}

// A Complete interrupted after the key switch (before the bundle went) is
// reported as Switched and finished by the next Complete.
func TestCompleteInterrupted(t *testing.T) {
	d := newDevice(t)
	if _, err := rotation.Prepare(d.request()); err != nil {
		t.Fatal(err)
	}
	// What Complete does up to the crash.
	old, err := os.ReadFile(d.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.layout.RetiredKey, old, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(d.layout.NextKey, d.keyFile); err != nil {
		t.Fatal(err)
	}
	p, err := rotation.Load(d.layout)
	if err != nil || p == nil || !p.Switched || p.NewKeyPath != d.keyFile {
		t.Fatalf("Load after an interrupted Complete: %+v, %v", p, err)
	}
	if err := rotation.Complete(d.layout); err != nil {
		t.Fatal(err)
	}
	if !d.old.PublicKey.Equal(keyInFile(t, d.layout.RetiredKey)) || !d.new.PublicKey.Equal(keyInFile(t, d.keyFile)) {
		t.Error("keys wrong after finishing an interrupted Complete")
	}
	if _, err := os.Stat(d.layout.Rotation); !errors.Is(err, os.ErrNotExist) {
		t.Error("bundle left")
	}
}

func TestLoadRefusesAMissingNewKey(t *testing.T) {
	d := newDevice(t)
	if _, err := rotation.Prepare(d.request()); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(d.layout.NextKey); err != nil {
		t.Fatal(err)
	}
	if p, err := rotation.Load(d.layout); err == nil {
		t.Errorf("Load with the new key gone: %+v", p)
	}
	if err := rotation.Complete(d.layout); err == nil {
		t.Error("Complete with the new key gone")
	}
	if !d.old.PublicKey.Equal(keyInFile(t, d.keyFile)) {
		t.Error("the old key was touched")
	}
	// Another key at the .next path is not the rotation's either.
	writeKey(t, d.layout.NextKey, newKey(t))
	if _, err := rotation.Load(d.layout); err == nil {
		t.Error("Load accepted a stranger key as the new key")
	}
	// A corrupt bundle is an error, not "nothing pending".
	if err := os.WriteFile(d.layout.Rotation, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := rotation.Load(d.layout); !errors.Is(err, provenance.ErrMalformed) {
		t.Errorf("Load of a corrupt bundle: %v", err)
	}
}

func TestPrepareRefuses(t *testing.T) {
	d := newDevice(t)
	req := d.request()
	req.New = newKey(t) // not the key at .next
	if _, err := rotation.Prepare(req); err == nil {
		t.Error("Prepare with a new key that is not on disk")
	}
	d.chain.failSav = true
	if _, err := rotation.Prepare(d.request()); err == nil {
		t.Error("Prepare despite a chain state that cannot be saved")
	}
	if _, err := os.Stat(d.layout.Rotation); !errors.Is(err, os.ErrNotExist) {
		t.Error("a bundle was written although the chain state was not saved")
	}
	req = d.request()
	req.Chain = nil
	if _, err := rotation.Prepare(req); err == nil {
		t.Error("Prepare without chain state")
	}
}

// With a certificate chain, the rotate record carries it, and Complete moves
// the old key's certificate aside (a certificate for the new key stays).
func TestRotationWithCertificate(t *testing.T) {
	d := newDevice(t)
	caKey := newKey(t)
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fleet"},
		NotBefore: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2045, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	issue := func(k *ecdsa.PrivateKey) []byte {
		oid := id(t, k)
		leaf := &x509.Certificate{
			SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: oid}, NotBefore: ca.NotBefore, NotAfter: ca.NotAfter,
			URIs: []*url.URL{{Scheme: "keyframe", Opaque: "device:" + oid}},
		}
		der, err := x509.CreateCertificate(rand.Reader, leaf, ca, k.Public(), caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	oldCert := issue(d.old)
	certFile := filepath.Join(d.dir, "device-cert.pem")
	if err := os.WriteFile(certFile, provenance.EncodeCertChain([][]byte{oldCert}), 0o644); err != nil {
		t.Fatal(err)
	}
	req := d.request()
	req.CertChain = [][]byte{oldCert}
	p, err := rotation.Prepare(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := provenance.UnmarshalBundle(p.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	v, err := provenance.Verify(b.Envelope, b.Media, nil)
	if err != nil || len(v.Chain) != 1 {
		t.Fatalf("rotate record's chain: %v, %v", v, err)
	}
	l := d.layout
	l.Cert = certFile
	if err := rotation.Complete(l); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(certFile); !errors.Is(err, os.ErrNotExist) {
		t.Error("the old key's certificate is still the device certificate")
	}
	if _, err := os.Stat(certFile + ".retired"); err != nil {
		t.Error("the old key's certificate was not kept")
	}

	// Second rotation, the new key's certificate already installed: it stays.
	d2 := newDevice(t)
	newCert := issue(d2.new)
	certFile2 := filepath.Join(d2.dir, "device-cert.pem")
	if err := os.WriteFile(certFile2, provenance.EncodeCertChain([][]byte{newCert}), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := rotation.Prepare(d2.request()); err != nil {
		t.Fatal(err)
	}
	l2 := d2.layout
	l2.Cert = certFile2
	if err := rotation.Complete(l2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(certFile2); err != nil {
		t.Error("the new key's certificate was moved")
	}
}

// TestPrepareRefusesAnUnusedKey: right after a completed rotation the new
// key has signed nothing; a second rotation then would be refused by the
// receiver (it stores a rotation of a key only once that key stored a record
// of its own) and strand the camera, so Prepare refuses it until the chain
// has moved past the rotate record.
func TestPrepareRefusesAnUnusedKey(t *testing.T) {
	d := newDevice(t)
	if _, err := rotation.Prepare(d.request()); err != nil {
		t.Fatal(err)
	}
	if err := rotation.Complete(d.layout); err != nil {
		t.Fatal(err)
	}
	// A third key for the next rotation, the second key now the device's.
	third := newKey(t)
	writeKey(t, d.layout.NextKey, third)
	req := d.request()
	req.Old, req.New = d.new, third
	if _, err := rotation.Prepare(req); !errors.Is(err, rotation.ErrUnused) {
		t.Fatalf("a rotation before the new key signed anything: %v, want ErrUnused", err)
	}
	if _, err := os.Stat(d.layout.Rotation); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused rotation left a bundle (%v)", err)
	}
	// The new key signs a record: the chain moves past the rotate record.
	next := sha256.Sum256([]byte("the new key's first event"))
	d.chain.next, d.chain.prev = d.chain.next+1, next[:]
	p, err := rotation.Prepare(req)
	if err != nil {
		t.Fatalf("a rotation after the new key signed a record: %v", err)
	}
	if p.OldDevice != id(t, d.new) || p.NewDevice != id(t, third) {
		t.Errorf("pending %+v", p)
	}
}
