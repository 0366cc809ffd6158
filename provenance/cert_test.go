package provenance_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/veraison/go-cose"

	"github.com/keyframe-cam/keyframe/provenance"
)

// opaqueSigner hides the concrete key type: only Public and Sign are
// reachable, as with a TPM-held key.
type opaqueSigner struct{ s crypto.Signer }

func (o opaqueSigner) Public() crypto.PublicKey { return o.s.Public() }
func (o opaqueSigner) Sign(r io.Reader, d []byte, opts crypto.SignerOpts) ([]byte, error) {
	return o.s.Sign(r, d, opts)
}

func TestCreateCSR(t *testing.T) {
	for name, c := range map[string]struct {
		key crypto.Signer
		alg x509.SignatureAlgorithm
	}{
		"P-256":  {opaqueSigner{newP256(t)}, x509.ECDSAWithSHA256},
		"EdDSA":  {opaqueSigner{newEd25519(t)}, x509.PureEd25519},
		"direct": {newP256(t), x509.ECDSAWithSHA256},
	} {
		t.Run(name, func(t *testing.T) {
			der, err := provenance.CreateCSR(nil, c.key)
			if err != nil {
				t.Fatal(err)
			}
			csr, err := x509.ParseCertificateRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := csr.CheckSignature(); err != nil {
				t.Errorf("CSR signature: %v", err)
			}
			if csr.SignatureAlgorithm != c.alg {
				t.Errorf("signature algorithm %v, want %v", csr.SignatureAlgorithm, c.alg)
			}
			id := idOf(t, c.key)
			if csr.Subject.CommonName != id {
				t.Errorf("CN %q, want %q", csr.Subject.CommonName, id)
			}
			if len(csr.URIs) != 1 || csr.URIs[0].String() != "keyframe:device:"+id {
				t.Errorf("URIs %v, want [keyframe:device:%s]", csr.URIs, id)
			}
			if !bytes.Equal(csr.RawSubjectPublicKeyInfo, spkiOf(t, c.key)) {
				t.Error("CSR key is not the device key")
			}
		})
	}
	if _, err := provenance.CreateCSR(nil, opaqueSigner{newP384(t)}); err == nil {
		t.Error("CSR for a P-384 key")
	}
}

func TestCertNamesDevice(t *testing.T) {
	key, other := newP256(t), newP256(t)
	id, otherID := idOf(t, key), idOf(t, other)
	ca := newTestCA(t, "names CA", newP256(t), nil, certFrom, certTo)
	for name, c := range map[string]struct {
		cn   string
		uris []string
		want bool
	}{
		"CN and URI":                {id, []string{provenance.DeviceURI(id)}, true},
		"URI only":                  {"camera 7", []string{provenance.DeviceURI(id)}, true},
		"CN only":                   {id, nil, true},
		"CN only, other URI scheme": {id, []string{"https://example.com/cam"}, true},
		"other CN":                  {otherID, nil, false},
		"URI names another":         {id, []string{provenance.DeviceURI(otherID)}, false},
		"URI names two":             {id, []string{provenance.DeviceURI(id), provenance.DeviceURI(otherID)}, false},
		"upper-case URI":            {"x", []string{"KEYFRAME:device:" + otherID}, false},
		"nothing":                   {"", nil, false},
	} {
		t.Run(name, func(t *testing.T) {
			c2, err := x509.ParseCertificate(ca.issue(t, key.Public(), c.cn, c.uris, certFrom, certTo))
			if err != nil {
				t.Fatal(err)
			}
			if got := provenance.CertNamesDevice(c2, id); got != c.want {
				t.Errorf("CertNamesDevice = %v, want %v", got, c.want)
			}
		})
	}
}

// fleet is a root CA, an intermediate and a device key with its certificate.
type fleet struct {
	root, inter *testCA
	key         crypto.Signer
	leaf        []byte
}

func newFleet(t testing.TB) *fleet {
	t.Helper()
	root := newTestCA(t, "root", newP256(t), nil, certFrom, certTo)
	inter := newTestCA(t, "intermediate", newP256(t), root, certFrom, certTo)
	key := newP256(t)
	id := idOf(t, key)
	return &fleet{root: root, inter: inter, key: key, leaf: inter.issue(t, key.Public(), id, []string{provenance.DeviceURI(id)}, certFrom, certTo)}
}

func TestCheckCertChain(t *testing.T) {
	f := newFleet(t)
	id := idOf(t, f.key)
	now := time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC)
	other := newP256(t)
	short := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, c := range map[string]struct {
		chain [][]byte
		now   time.Time
		want  string // "" for success, else a word of the error
	}{
		"leaf and intermediate": {[][]byte{f.leaf, f.inter.der}, now, ""},
		"leaf only":             {[][]byte{f.leaf}, now, ""},
		"up to the root":        {[][]byte{f.leaf, f.inter.der, f.root.der}, now, ""},
		"other key":             {[][]byte{f.inter.issue(t, other.Public(), id, nil, certFrom, certTo), f.inter.der}, now, "another key"},
		"names another device":  {[][]byte{f.inter.issue(t, f.key.Public(), idOf(t, other), nil, certFrom, certTo)}, now, "names another device"},
		"expired":               {[][]byte{f.inter.issue(t, f.key.Public(), id, nil, certFrom, short), f.inter.der}, now, "expired"},
		"not yet valid":         {[][]byte{f.leaf}, certFrom.Add(-time.Hour), "not valid before"},
		"wrong order":           {[][]byte{f.leaf, f.root.der, f.inter.der}, now, "not issued by"},
		"garbage":               {[][]byte{[]byte("not a certificate")}, now, "malformed"},
		"empty":                 {nil, now, "malformed"},
		"too many":              {[][]byte{f.leaf, f.inter.der, f.root.der, f.root.der, f.root.der}, now, "malformed"},
	} {
		t.Run(name, func(t *testing.T) {
			certs, err := provenance.CheckCertChain(c.chain, f.key.Public(), c.now)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(certs) != len(c.chain) || !bytes.Equal(certs[0].Raw, f.leaf) {
					t.Error("certificates returned are not the chain's")
				}
				return
			}
			if !errors.Is(err, provenance.ErrCertificate) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrCertificate saying %q", err, c.want)
			}
		})
	}
}

func TestParseCertChain(t *testing.T) {
	f := newFleet(t)
	pemChain := provenance.EncodeCertChain([][]byte{f.leaf, f.inter.der})
	withText := append(append([]byte("device certificate for camera 7\n"), pemChain...), "\nend\n"...)
	chain, err := provenance.ParseCertChain(withText)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 || !bytes.Equal(chain[0], f.leaf) || !bytes.Equal(chain[1], f.inter.der) {
		t.Fatal("chain does not round-trip through PEM")
	}
	keyBlock := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})
	five := provenance.EncodeCertChain([][]byte{f.leaf, f.inter.der, f.root.der, f.root.der, f.root.der})
	for name, in := range map[string][]byte{
		"empty":         nil,
		"no PEM":        []byte("hello"),
		"private key":   append(bytes.Clone(pemChain), keyBlock...),
		"garbage DER":   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("nope")}),
		"broken base64": []byte("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
		"five":          five,
	} {
		if _, err := provenance.ParseCertChain(in); !errors.Is(err, provenance.ErrCertificate) {
			t.Errorf("%s: %v, want ErrCertificate", name, err)
		}
	}

	dir := t.TempDir()
	if _, err := provenance.LoadCertChain(filepath.Join(dir, "none.pem")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
	path := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(path, pemChain, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := provenance.LoadCertChain(path); err != nil || len(got) != 2 {
		t.Errorf("LoadCertChain: %d certificates, %v", len(got), err)
	}
}

func TestSignWithChain(t *testing.T) {
	f := newFleet(t)
	for name, chain := range map[string][][]byte{
		"one certificate (bstr)":   {f.leaf},
		"two certificates (array)": {f.leaf, f.inter.der},
	} {
		t.Run(name, func(t *testing.T) {
			p := samplePayload(idOf(t, f.key), thumb)
			env, err := provenance.SignWithChain(nil, f.key, p, chain)
			if err != nil {
				t.Fatal(err)
			}
			v, err := provenance.Verify(env, [][]byte{thumb}, f.key.Public())
			if err != nil {
				t.Fatal(err)
			}
			if len(v.Chain) != len(chain) {
				t.Fatalf("Verified.Chain has %d certificates, want %d", len(v.Chain), len(chain))
			}
			for i := range chain {
				if !bytes.Equal(v.Chain[i].Raw, chain[i]) {
					t.Errorf("certificate %d differs", i)
				}
			}
			var m cose.Sign1Message
			if err := m.UnmarshalCBOR(env); err != nil {
				t.Fatal(err)
			}
			x5 := m.Headers.Protected[provenance.HeaderLabelX5Chain]
			switch len(chain) {
			case 1:
				if b, ok := x5.([]byte); !ok || !bytes.Equal(b, f.leaf) {
					t.Errorf("x5chain of one is %T, want the bstr of the certificate", x5)
				}
			default:
				if a, ok := x5.([]any); !ok || len(a) != len(chain) {
					t.Errorf("x5chain of %d is %T", len(chain), x5)
				}
			}
			if len(m.Headers.Protected) != 5 || len(m.Headers.Unprotected) != 0 {
				t.Errorf("headers %d protected, %d unprotected", len(m.Headers.Protected), len(m.Headers.Unprotected))
			}
		})
	}
	// Without a chain, nothing changes: no header, no Chain.
	env, err := provenance.SignWithChain(nil, f.key, samplePayload(idOf(t, f.key), thumb), nil)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := provenance.Verify(env, [][]byte{thumb}, nil); err != nil || v.Chain != nil {
		t.Errorf("no chain: %v, Chain %v", err, v)
	}

	// SignWithChain refuses chains Verify would reject.
	other := newP256(t)
	for name, chain := range map[string][][]byte{
		"other key": {f.inter.issue(t, other.Public(), idOf(t, other), nil, certFrom, certTo)},
		"garbage":   {[]byte("junk")},
		"too many":  {f.leaf, f.inter.der, f.root.der, f.root.der, f.root.der},
		"too big":   {make([]byte, provenance.MaxCertSize+1)},
	} {
		if _, err := provenance.SignWithChain(nil, f.key, samplePayload(idOf(t, f.key), thumb), chain); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
}

func TestVerifyX5Chain(t *testing.T) {
	f := newFleet(t)
	key := f.key
	payload, err := provenance.MarshalPayload(samplePayload(idOf(t, key), thumb))
	if err != nil {
		t.Fatal(err)
	}
	std := stdHeaders(cose.AlgorithmES256, idOf(t, key), spkiOf(t, key))
	other := newP256(t)
	otherLeaf := f.inter.issue(t, other.Public(), idOf(t, other), nil, certFrom, certTo)
	big := make([]byte, provenance.MaxCertSize+1)
	copy(big, f.leaf)
	cases := []struct {
		name string
		x5   any
		want string
	}{
		{"leaf as bstr", f.leaf, "ok"},
		{"array of one (RFC 9360: bstr / [2* bstr])", []any{f.leaf}, "malformed"},
		{"array of four", []any{f.leaf, f.inter.der, f.root.der, f.root.der}, "ok"},
		{"leaf for another key", []any{otherLeaf, f.inter.der}, "key"},
		{"intermediate first", []any{f.inter.der, f.leaf}, "key"},
		{"garbage bstr", []byte("garbage"), "malformed"},
		{"garbage in array", []any{f.leaf, []byte{0x30, 0x03, 1, 2, 3}}, "malformed"},
		{"empty bstr", []byte{}, "malformed"},
		{"empty array", []any{}, "malformed"},
		{"array of five", []any{f.leaf, f.inter.der, f.root.der, f.root.der, f.root.der}, "malformed"},
		{"over 8 KiB", big, "malformed"},
		{"text", "MIIB...", "malformed"},
		{"integer", int64(7), "malformed"},
		{"array with text", []any{f.leaf, "x"}, "malformed"},
		{"nested array", []any{[]any{f.leaf}}, "malformed"},
		{"map", map[int64]any{1: f.leaf}, "malformed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env, err := rawEnvelope{protected: withHeader(std, provenance.HeaderLabelX5Chain, c.x5), payload: payload}.build(key)
			if err != nil {
				t.Fatal(err)
			}
			v, err := provenance.Verify(env, [][]byte{thumb}, nil)
			wantClass(t, err, c.want)
			if err == nil && !bytes.Equal(v.Chain[0].Raw, f.leaf) {
				t.Error("Chain[0] is not the leaf")
			}
		})
	}
	// The chain is signed: changing it after signing breaks the signature.
	env, err := provenance.SignWithChain(nil, key, samplePayload(idOf(t, key), thumb), [][]byte{f.leaf, f.inter.der})
	if err != nil {
		t.Fatal(err)
	}
	swapped := spliceEnvelope(t, env, func(m *cose.Sign1Message) {
		m.Headers.RawProtected = nil
		m.Headers.Protected[provenance.HeaderLabelX5Chain] = f.leaf
	})
	wantClass(t, verifyErr(swapped, [][]byte{thumb}), "signature")
	// x5chain in the unprotected header is refused like anything there.
	unprot := spliceEnvelope(t, signSample(t, key), func(m *cose.Sign1Message) {
		m.Headers.RawUnprotected = nil
		m.Headers.Unprotected[provenance.HeaderLabelX5Chain] = f.leaf
	})
	wantClass(t, verifyErr(unprot, [][]byte{thumb}), "malformed")
}
