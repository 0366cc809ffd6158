package receiver

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/provenance"
)

// testCA is a throwaway certificate authority made in the test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func nextSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		panic(err)
	}
	return n
}

// newCA makes a CA, self-signed when parent is nil.
func newCA(t testing.TB, name string, parent *testCA) *testCA {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             testNow.AddDate(-1, 0, 0),
		NotAfter:              testNow.AddDate(5, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	issuer, issuerKey := tmpl, k
	if parent != nil {
		issuer, issuerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, k.Public(), issuerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: c, key: k}
}

func (ca *testCA) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

// leafOpts shape a device certificate.
type leafOpts struct {
	cn       string // "" = the device ID
	uri      string // "" = keyframe:device:<id>; "-" = none
	from, to time.Time
	eku      []x509.ExtKeyUsage // nil = client auth
}

// issue makes a device certificate for pub.
func (ca *testCA) issue(t testing.TB, pub crypto.PublicKey, id string, o leafOpts) []byte {
	t.Helper()
	if o.cn == "" {
		o.cn = id
	}
	if o.from.IsZero() {
		o.from = testNow.AddDate(0, -1, 0)
	}
	if o.to.IsZero() {
		o.to = testNow.AddDate(1, 0, 0)
	}
	if o.eku == nil {
		o.eku = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: o.cn},
		NotBefore:    o.from,
		NotAfter:     o.to,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  o.eku,
	}
	switch o.uri {
	case "-":
	case "":
		tmpl.URIs = []*url.URL{{Scheme: "keyframe", Opaque: "device:" + id}}
	default:
		u, err := url.Parse(o.uri)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// fleetPKI is a root CA and an intermediate that issues device certificates.
type fleetPKI struct{ root, inter *testCA }

func newFleetPKI(t testing.TB, name string) *fleetPKI {
	root := newCA(t, name+" root", nil)
	return &fleetPKI{root: root, inter: newCA(t, name+" intermediate", root)}
}

// chainFor is d's certificate (shaped by o) and the intermediate.
func (f *fleetPKI) chainFor(t testing.TB, d *testDevice, o leafOpts) [][]byte {
	return [][]byte{f.inter.issue(t, d.key.Public(), d.id, o), f.inter.cert.Raw}
}

// recordWithChain is a record of d signed with an x5chain.
func (d *testDevice) recordWithChain(t testing.TB, event, kind string, seq uint64, chain [][]byte) *record {
	t.Helper()
	thumb := thumbFor(event + kind)
	env, err := provenance.SignWithChain(rand.Reader, d.key, d.payload(event, kind, seq, thumb), chain)
	if err != nil {
		t.Fatal(err)
	}
	return &record{event: event, kind: kind, seq: seq, thumb: thumb, env: env, body: bundle(t, env, thumb)}
}

func (e *testEnv) trust(ca *testCA) string {
	e.t.Helper()
	got, err := TrustCA(e.dir, ca.pem())
	if err != nil {
		e.t.Fatal(err)
	}
	return got[0].Fingerprint
}

func (e *testEnv) registry() *registry {
	e.t.Helper()
	reg, err := loadRegistry(e.dir)
	if err != nil {
		e.t.Fatal(err)
	}
	return reg
}

func TestFleetCADeviceAcceptedWithoutEnrolment(t *testing.T) {
	e := newEnv(t, Options{})
	f := newFleetPKI(t, "fleet")
	fp := e.trust(f.root)
	if fp != CertFingerprint(f.root.cert.Raw) {
		t.Fatalf("fingerprint %s", fp)
	}
	d := newDevice(t)
	chain := f.chainFor(t, d, leafOpts{})
	r1 := d.recordWithChain(t, "ev-1", provenance.KindStart, 1, chain)
	e.mustUpload(r1, http.StatusCreated)

	reg := e.registry()
	got := reg.Devices[d.id]
	if got == nil || !bytes.Equal(got.SPKI, d.spki) || got.Via != ViaFleetCA+fp || got.Revoked || len(got.Pairings) != 0 {
		t.Fatalf("registry entry after fleet admission: %+v", got)
	}
	if lines := e.lines.lines(); len(lines) != 1 || !strings.Contains(lines[0], "via=fleet-ca:"+fp) {
		t.Errorf("event lines %q", lines)
	}
	// Pairing comes from the registry only, and now works for the device.
	if code, page, _ := e.getAs("alice", "/"); code != http.StatusOK || bytes.Contains(page, []byte("ev-1")) {
		t.Errorf("unpaired fleet device shown to alice (%d)", code)
	}
	if err := Pair(e.dir, d.id, "alice"); err != nil {
		t.Fatal(err)
	}
	// Later records must keep their chain; they are alice's, the record
	// stored while the device was unpaired stays visible to no one.
	e.mustUpload(d.recordWithChain(t, "ev-2", provenance.KindStart, 2, chain), http.StatusCreated)
	if _, page, _ := e.getAs("alice", "/"); !bytes.Contains(page, []byte("ev-2")) || bytes.Contains(page, []byte("ev-1")) {
		t.Error("alice's page: want her fleet device's event after the pairing, and not the one before")
	}
	code, reply := e.upload(d.record(t, "ev-3", provenance.KindStart, 3))
	if code != http.StatusForbidden || !strings.Contains(reply, "certificate chain") {
		t.Errorf("fleet device without its chain: %d %q, want 403", code, reply)
	}
	// An identical re-send is still idempotent.
	e.mustUpload(r1, http.StatusOK)
	if st := e.srv.Stats(); st.Stored != 2 || st.Rejected[ReasonCertificate] != 1 {
		t.Errorf("stats %+v", st)
	}
	rep, err := CheckStore(e.dir)
	if err != nil || !rep.OK() || rep.Verified != 2 {
		t.Errorf("CheckStore: %+v %v", rep, err)
	}
}

func TestFleetCARefusals(t *testing.T) {
	f := newFleetPKI(t, "fleet")
	other := newFleetPKI(t, "another fleet")
	cases := []struct {
		name   string
		setup  func(e *testEnv, d *testDevice) // before the upload
		chain  func(d *testDevice) [][]byte
		reason string
		want   string // in the reply
	}{
		{name: "no CA trusted", chain: func(d *testDevice) [][]byte { return f.chainFor(t, d, leafOpts{}) },
			setup: func(*testEnv, *testDevice) {}, reason: ReasonCertificate, want: "no fleet CA"},
		{name: "chain to another CA", chain: func(d *testDevice) [][]byte { return other.chainFor(t, d, leafOpts{}) },
			reason: ReasonCertificate, want: "unknown authority"},
		{name: "expired", chain: func(d *testDevice) [][]byte {
			return f.chainFor(t, d, leafOpts{from: testNow.AddDate(-2, 0, 0), to: testNow.AddDate(0, 0, -1)})
		}, reason: ReasonCertificate, want: "expired"},
		{name: "not yet valid", chain: func(d *testDevice) [][]byte {
			return f.chainFor(t, d, leafOpts{from: testNow.AddDate(0, 0, 1)})
		}, reason: ReasonCertificate, want: "expired or is not yet valid"},
		{name: "leaf names another device", chain: func(d *testDevice) [][]byte {
			o := newDevice(t)
			return f.chainFor(t, d, leafOpts{cn: o.id, uri: provenance.DeviceURI(o.id)})
		}, reason: ReasonCertificate, want: "names another device"},
		{name: "leaf CN names another device", chain: func(d *testDevice) [][]byte {
			return f.chainFor(t, d, leafOpts{cn: newDevice(t).id, uri: "-"})
		}, reason: ReasonCertificate, want: "names another device"},
		{name: "server-only certificate", chain: func(d *testDevice) [][]byte {
			return f.chainFor(t, d, leafOpts{eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		}, reason: ReasonCertificate, want: "key usage"},
		{name: "intermediate missing", chain: func(d *testDevice) [][]byte { return f.chainFor(t, d, leafOpts{})[:1] },
			reason: ReasonCertificate, want: "unknown authority"},
		{name: "revoked before it ever uploaded", chain: func(d *testDevice) [][]byte { return f.chainFor(t, d, leafOpts{}) },
			setup: func(e *testEnv, d *testDevice) {
				e.trust(f.root)
				if err := Revoke(e.dir, d.id); err != nil {
					t.Fatal(err)
				}
			}, reason: ReasonRevoked, want: "revoked"},
		{name: "no chain, not enrolled", chain: func(*testDevice) [][]byte { return nil }, reason: ReasonNotEnrolled, want: "not enrolled"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			d := newDevice(t)
			if c.setup != nil {
				c.setup(e, d)
			} else {
				e.trust(f.root)
			}
			code, reply := e.upload(d.recordWithChain(t, "ev-1", provenance.KindStart, 1, c.chain(d)))
			if code != http.StatusForbidden || !strings.Contains(reply, c.want) {
				t.Fatalf("got %d %q, want 403 saying %q", code, reply, c.want)
			}
			if n := e.srv.Stats().Rejected[c.reason]; n != 1 {
				t.Errorf("%s count %d, want 1 (%v)", c.reason, n, e.srv.Stats().Rejected)
			}
			if reg := e.registry(); reg.Devices[d.id] != nil && !reg.Devices[d.id].Revoked {
				t.Errorf("refused device recorded in the registry: %+v", reg.Devices[d.id])
			}
			if st := e.srv.Stats(); st.Stored != 0 {
				t.Errorf("%d stored", st.Stored)
			}
		})
	}
}

// A device admitted by its certificate is cut off by revocation or by
// untrusting its CA; enrolling it individually frees it from the chain.
func TestFleetDeviceLaterChanges(t *testing.T) {
	f := newFleetPKI(t, "fleet")
	t.Run("revoked", func(t *testing.T) {
		e := newEnv(t, Options{})
		e.trust(f.root)
		d := newDevice(t)
		chain := f.chainFor(t, d, leafOpts{})
		e.mustUpload(d.recordWithChain(t, "ev-1", provenance.KindStart, 1, chain), http.StatusCreated)
		if err := Revoke(e.dir, d.id); err != nil {
			t.Fatal(err)
		}
		code, reply := e.upload(d.recordWithChain(t, "ev-2", provenance.KindStart, 2, chain))
		if code != http.StatusForbidden || !strings.Contains(reply, "revoked") {
			t.Fatalf("revoked fleet device: %d %q", code, reply)
		}
	})
	t.Run("CA untrusted", func(t *testing.T) {
		e := newEnv(t, Options{})
		fp := e.trust(f.root)
		d := newDevice(t)
		chain := f.chainFor(t, d, leafOpts{})
		e.mustUpload(d.recordWithChain(t, "ev-1", provenance.KindStart, 1, chain), http.StatusCreated)
		if err := UntrustCA(e.dir, fp); err != nil {
			t.Fatal(err)
		}
		code, reply := e.upload(d.recordWithChain(t, "ev-2", provenance.KindStart, 2, chain))
		if code != http.StatusForbidden || !strings.Contains(reply, "no fleet CA") {
			t.Fatalf("device of an untrusted CA: %d %q", code, reply)
		}
	})
	t.Run("enrolled individually", func(t *testing.T) {
		e := newEnv(t, Options{})
		e.trust(f.root)
		d := newDevice(t)
		e.mustUpload(d.recordWithChain(t, "ev-1", provenance.KindStart, 1, f.chainFor(t, d, leafOpts{})), http.StatusCreated)
		e.enroll(d, "")
		if via := e.registry().Devices[d.id].Via; via != "" {
			t.Errorf("via %q after Enroll", via)
		}
		e.mustUpload(d.record(t, "ev-2", provenance.KindStart, 2), http.StatusCreated)
	})
}

// Individually enrolled keys keep working whether or not a fleet CA is
// trusted, and whatever certificate they carry.
func TestEnrolledDeviceIgnoresFleet(t *testing.T) {
	e := newEnv(t, Options{})
	f, other := newFleetPKI(t, "fleet"), newFleetPKI(t, "another")
	e.trust(f.root)
	d := newDevice(t)
	e.enroll(d, "alice")
	e.mustUpload(d.record(t, "ev-1", provenance.KindStart, 1), http.StatusCreated)
	e.mustUpload(d.recordWithChain(t, "ev-2", provenance.KindStart, 2, other.chainFor(t, d, leafOpts{})), http.StatusCreated)
	if via := e.registry().Devices[d.id].Via; via != "" {
		t.Errorf("enrolled device's via became %q", via)
	}
}

func TestTrustCA(t *testing.T) {
	dir := t.TempDir()
	f := newFleetPKI(t, "fleet")
	both := append(f.root.pem(), f.inter.pem()...)
	got, err := TrustCA(dir, both)
	if err != nil || len(got) != 2 {
		t.Fatalf("TrustCA: %v, %v", got, err)
	}
	if _, err := TrustCA(dir, f.root.pem()); err != nil {
		t.Errorf("trusting again: %v", err)
	}
	list, err := TrustedCAs(dir)
	if err != nil || len(list) != 2 {
		t.Fatalf("TrustedCAs: %v, %v", list, err)
	}
	for _, ca := range list {
		if ca.Fingerprint != CertFingerprint(f.root.cert.Raw) && ca.Fingerprint != CertFingerprint(f.inter.cert.Raw) {
			t.Errorf("unexpected CA %+v", ca)
		}
	}
	d := newDevice(t)
	leaf := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.inter.issue(t, d.key.Public(), d.id, leafOpts{})})
	for name, in := range map[string][]byte{
		"device certificate": leaf,
		"empty":              nil,
		"garbage":            []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
		"private key":        pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}),
	} {
		if _, err := TrustCA(dir, in); err == nil {
			t.Errorf("%s trusted as a CA", name)
		}
	}
	if err := UntrustCA(dir, CertFingerprint(f.inter.cert.Raw)); err != nil {
		t.Fatal(err)
	}
	if err := UntrustCA(dir, CertFingerprint(f.inter.cert.Raw)); !errors.Is(err, ErrNotTrusted) {
		t.Errorf("untrusting twice: %v", err)
	}
	if list, _ := TrustedCAs(dir); len(list) != 1 || list[0].Fingerprint != CertFingerprint(f.root.cert.Raw) {
		t.Errorf("after untrust: %v", list)
	}
	// A registry whose CA entry does not match its fingerprint is refused.
	path := filepath.Join(dir, registryFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Replace(data, []byte(CertFingerprint(f.root.cert.Raw)), []byte(strings.Repeat("0", 64)), 1)
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadRegistry(dir); err == nil {
		t.Error("registry with a mismatched CA fingerprint loaded")
	}
}

func TestRevokeUnknownDevice(t *testing.T) {
	dir := t.TempDir()
	d := newDevice(t)
	if err := Revoke(dir, d.id); err != nil {
		t.Fatal(err)
	}
	if err := Revoke(dir, "not-an-id"); err == nil {
		t.Error("revoked a malformed ID")
	}
	if _, err := Enroll(dir, d.pem); !errors.Is(err, ErrRevoked) {
		t.Errorf("enrolling a revoked ID: %v", err)
	}
	if err := Pair(dir, d.id, "alice"); !errors.Is(err, ErrRevoked) {
		t.Errorf("pairing a revoked ID: %v", err)
	}
	srv, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("Open with a revocation-only entry: %v", err)
	}
	srv.Close()
}
