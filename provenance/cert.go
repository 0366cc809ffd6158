package provenance

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"
)

// A device certificate binds a device key to its device ID under some
// certificate authority (a fleet CA). This file has what both sides need:
// the naming rule, the certificate request a device sends to its CA, the
// bounded parsing of a chain, and the check a device makes before it installs
// a certificate. Whether a CA is trusted is decided by the receiver, never
// here. The format is in docs/envelope.md, "Device certificates".

// Limits on a certificate chain, in an x5chain header or a device's
// certificate file.
const (
	MaxChainCerts = 4       // certificates in a chain, device certificate included
	MaxCertSize   = 8 << 10 // bytes of one DER certificate
)

// DeviceURIPrefix starts the URI subject alternative name that names a device
// in its certificate: "keyframe:device:" followed by the device ID.
const DeviceURIPrefix = "keyframe:device:"

// ErrCertificate is returned (wrapped) by ParseCertChain, LoadCertChain and
// CheckCertChain for a certificate file that cannot be used for the device.
// Verify never returns it.
var ErrCertificate = errors.New("device certificate unusable")

// DeviceURI returns the URI that names device id in its certificate.
func DeviceURI(id string) string { return DeviceURIPrefix + id }

// CertNamesDevice reports whether a device certificate names device id: if
// the certificate has any URI subject alternative name starting with
// DeviceURIPrefix, every such name must be DeviceURI(id); if it has none, its
// subject common name must be id. It does not look at the certificate's key
// (Verify and CheckCertChain compare that to the signer's).
func CertNamesDevice(cert *x509.Certificate, id string) bool {
	named := false
	for _, u := range cert.URIs {
		if !strings.HasPrefix(strings.ToLower(u.String()), DeviceURIPrefix) {
			continue
		}
		if u.String() != DeviceURI(id) {
			return false
		}
		named = true
	}
	return named || cert.Subject.CommonName == id
}

// CreateCSR returns a PKCS#10 certificate request (DER) for signer's key,
// signed by it (ECDSA with SHA-256 for a P-256 key, Ed25519 for an Ed25519
// key), with subject common name the device ID and the URI subject
// alternative name DeviceURI(id). rnd may be nil (crypto/rand). signer may be
// a key that cannot be exported (a TPM): only its Sign method is used.
func CreateCSR(rnd io.Reader, signer crypto.Signer) ([]byte, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	_, id, err := signerKey(signer)
	if err != nil {
		return nil, fmt.Errorf("provenance: certificate request: %w", err)
	}
	u, err := url.Parse(DeviceURI(id))
	if err != nil {
		return nil, fmt.Errorf("provenance: certificate request: %w", err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: id}, URIs: []*url.URL{u}}
	der, err := x509.CreateCertificateRequest(rnd, tmpl, signer)
	if err != nil {
		return nil, fmt.Errorf("provenance: certificate request: %w", err)
	}
	return der, nil
}

// ParseChain parses a certificate chain given as DER, device certificate
// first: 1 to MaxChainCerts certificates of 1 to MaxCertSize bytes each, each
// a well-formed X.509 certificate. Errors wrap ErrMalformed. It checks nothing
// about who issued what.
func ParseChain(chain [][]byte) ([]*x509.Certificate, error) {
	certs, err := parseChain(chain)
	if err != nil {
		return nil, fmt.Errorf("provenance: %w", err)
	}
	return certs, nil
}

func parseChain(chain [][]byte) ([]*x509.Certificate, error) {
	if len(chain) == 0 || len(chain) > MaxChainCerts {
		return nil, fmt.Errorf("%w: certificate chain of %d, want 1 to %d", ErrMalformed, len(chain), MaxChainCerts)
	}
	certs := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		if len(der) == 0 || len(der) > MaxCertSize {
			return nil, fmt.Errorf("%w: certificate %d is %d bytes, want 1 to %d", ErrMalformed, i, len(der), MaxCertSize)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %w", ErrMalformed, i, err)
		}
		certs[i] = c
	}
	return certs, nil
}

// ParseCertChain decodes a PEM certificate chain (CERTIFICATE blocks, the
// device certificate first, then intermediates) into DER, as SignWithChain
// takes it. Text around the blocks is ignored; any other PEM block (a private
// key pasted by mistake) is refused. Errors wrap ErrCertificate.
func ParseCertChain(pemData []byte) ([][]byte, error) {
	var chain [][]byte
	rest := pemData
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("provenance: %w: PEM block %q, want only CERTIFICATE blocks", ErrCertificate, blk.Type)
		}
		if len(chain) == MaxChainCerts {
			return nil, fmt.Errorf("provenance: %w: more than %d certificates", ErrCertificate, MaxChainCerts)
		}
		chain = append(chain, blk.Bytes)
	}
	if bytes.Contains(rest, []byte("-----BEGIN")) {
		return nil, fmt.Errorf("provenance: %w: a PEM block does not decode", ErrCertificate)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("provenance: %w: no PEM CERTIFICATE block", ErrCertificate)
	}
	if _, err := parseChain(chain); err != nil {
		return nil, fmt.Errorf("provenance: %w: %v", ErrCertificate, err)
	}
	return chain, nil
}

// EncodeCertChain encodes a DER chain as PEM CERTIFICATE blocks, in order.
func EncodeCertChain(chain [][]byte) []byte {
	var b bytes.Buffer
	for _, der := range chain {
		b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	return b.Bytes()
}

// LoadCertChain reads a device's certificate file (PEM, as ParseCertChain
// takes it). A missing file is an error that wraps fs.ErrNotExist, so a
// caller can treat "no certificate" as such.
func LoadCertChain(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("provenance: certificate file: %w", err)
	}
	chain, err := ParseCertChain(b)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return chain, nil
}

// CheckCertChain checks that chain (DER, device certificate first) can be
// installed for the device whose public key is pub, at time now: the chain
// parses (ParseChain's limits), the device certificate's key is pub, it names
// the device (CertNamesDevice), every certificate is valid at now, and each
// is signed by the next one. It does not decide whether the last one is
// trusted: that is the receiver's business. Errors wrap ErrCertificate.
func CheckCertChain(chain [][]byte, pub crypto.PublicKey, now time.Time) ([]*x509.Certificate, error) {
	certs, err := parseChain(chain)
	if err != nil {
		return nil, fmt.Errorf("provenance: %w: %v", ErrCertificate, err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("provenance: device key: %w", err)
	}
	id := deviceIDFromSPKI(spki)
	leaf := certs[0]
	if !bytes.Equal(leaf.RawSubjectPublicKeyInfo, spki) {
		return nil, fmt.Errorf("provenance: %w: the certificate is for another key than device %s's", ErrCertificate, id)
	}
	if !CertNamesDevice(leaf, id) {
		return nil, fmt.Errorf("provenance: %w: the certificate names another device (CN %q), want %s or the URI %s",
			ErrCertificate, leaf.Subject.CommonName, id, DeviceURI(id))
	}
	for i, c := range certs {
		switch {
		case now.Before(c.NotBefore):
			return nil, fmt.Errorf("provenance: %w: certificate %d (%s) is not valid before %s", ErrCertificate, i, c.Subject, c.NotBefore.UTC().Format(time.RFC3339))
		case now.After(c.NotAfter):
			return nil, fmt.Errorf("provenance: %w: certificate %d (%s) expired on %s", ErrCertificate, i, c.Subject, c.NotAfter.UTC().Format(time.RFC3339))
		}
		if i+1 < len(certs) {
			if err := c.CheckSignatureFrom(certs[i+1]); err != nil {
				return nil, fmt.Errorf("provenance: %w: certificate %d is not issued by certificate %d: %v", ErrCertificate, i, i+1, err)
			}
		}
	}
	return certs, nil
}
