package provenance_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"
)

// Throwaway certificate authorities and device certificates for the tests and
// the vectors. Serial numbers derive from the subject, so with fixed keys and
// times (and the generator's fixed random seed) the bytes are reproducible.

// testCA is a certificate authority: its certificate and key.
type testCA struct {
	cert *x509.Certificate
	der  []byte
	key  crypto.Signer
}

var (
	certFrom = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	certTo   = time.Date(2045, 1, 1, 0, 0, 0, 0, time.UTC)
)

func serialFor(name string) *big.Int {
	sum := sha256.Sum256([]byte(name))
	return new(big.Int).SetBytes(sum[:8])
}

// newTestCA makes a CA named name with key, self-signed if parent is nil,
// otherwise issued by parent, valid from..to.
func newTestCA(t testing.TB, name string, key crypto.Signer, parent *testCA, from, to time.Time) *testCA {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          serialFor(name),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"keyframe test fleet"}},
		NotBefore:             from,
		NotAfter:              to,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	issuer, issuerKey := tmpl, key
	if parent != nil {
		issuer, issuerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), issuerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: c, der: der, key: key}
}

// issue makes a device certificate for pub with subject common name cn and
// the given URI SANs, valid from..to, for client authentication.
func (ca *testCA) issue(t testing.TB, pub crypto.PublicKey, cn string, uris []string, from, to time.Time) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: serialFor(ca.cert.Subject.CommonName + "/" + cn + "/" + from.String()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    from,
		NotAfter:     to,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func newP384(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
