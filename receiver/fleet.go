package receiver

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/keyframe-cam/keyframe/provenance"
)

// Fleet certificate authorities. A device whose records carry an x5chain
// (provenance.SignWithChain) that verifies to a trusted fleet CA, and whose
// device certificate names it, is accepted without being enrolled one by
// one; the registry then records it with Via = "fleet-ca:<fingerprint>" so it
// can be paired, revoked and audited like any device. Its later uploads must
// keep carrying a chain that verifies, so untrusting the CA or letting the
// certificate expire cuts it off; enrolling its key with Enroll makes it an
// individually enrolled device instead.

// ErrNotTrusted reports a fingerprint that names no trusted fleet CA.
var ErrNotTrusted = errors.New("no trusted fleet CA has this fingerprint")

// TrustedCA describes a trusted fleet CA.
type TrustedCA struct {
	Fingerprint string // CertFingerprint of the certificate
	Subject     string
	NotAfter    time.Time
}

// CertFingerprint is how the receiver names a CA certificate: the lower-case
// hex SHA-256 of its DER.
func CertFingerprint(der []byte) string { return fingerprint(der) }

func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// TrustCA adds every PEM CERTIFICATE in caPEM to the fleet CAs the registry
// in dir trusts, and returns them. Each must be a CA certificate (basic
// constraints CA:TRUE, and certificate signing among its key usages if it
// lists any). Trusting a CA again is a no-op. Like every registry change it
// is in force from the next upload on.
func TrustCA(dir string, caPEM []byte) ([]TrustedCA, error) {
	var certs []*x509.Certificate
	rest := caPEM
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("receiver: trust CA: PEM block %q, want only CERTIFICATE blocks", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("receiver: trust CA: %w", err)
		}
		if !c.BasicConstraintsValid || !c.IsCA {
			return nil, fmt.Errorf("receiver: trust CA: %s is not a CA certificate (basic constraints CA:TRUE)", c.Subject)
		}
		if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
			return nil, fmt.Errorf("receiver: trust CA: %s may not sign certificates (key usage)", c.Subject)
		}
		certs = append(certs, c)
	}
	if bytes.Contains(rest, []byte("-----BEGIN")) {
		return nil, errors.New("receiver: trust CA: a PEM block does not decode")
	}
	if len(certs) == 0 {
		return nil, errors.New("receiver: trust CA: no PEM CERTIFICATE block")
	}
	err := updateRegistry(dir, func(r *registry) error {
		for _, c := range certs {
			if fp := fingerprint(c.Raw); r.FleetCAs[fp] == nil {
				r.putCA(fp, &fleetCA{Cert: c.Raw, Subject: c.Subject.String()})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]TrustedCA, len(certs))
	for i, c := range certs {
		out[i] = TrustedCA{Fingerprint: fingerprint(c.Raw), Subject: c.Subject.String(), NotAfter: c.NotAfter}
	}
	return out, nil
}

// UntrustCA removes the fleet CA with the given fingerprint (CertFingerprint)
// from the registry in dir. Devices admitted by it are refused from the next
// upload on, unless they were enrolled individually or by a rotation.
func UntrustCA(dir, fp string) error {
	return updateRegistry(dir, func(r *registry) error {
		if r.FleetCAs[fp] == nil {
			return fmt.Errorf("receiver: untrust CA %s: %w", fp, ErrNotTrusted)
		}
		r.putCA(fp, nil)
		return nil
	})
}

// TrustedCAs lists the fleet CAs the registry in dir trusts, by fingerprint.
func TrustedCAs(dir string) ([]TrustedCA, error) {
	reg, err := loadRegistry(dir)
	if err != nil {
		return nil, err
	}
	var out []TrustedCA
	for fp, ca := range reg.FleetCAs {
		c, err := x509.ParseCertificate(ca.Cert) // checked by loadRegistry
		if err != nil {
			return nil, fmt.Errorf("receiver: fleet CA %s: %w", fp, err)
		}
		out = append(out, TrustedCA{Fingerprint: fp, Subject: c.Subject.String(), NotAfter: c.NotAfter})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Fingerprint < out[j].Fingerprint })
	return out, nil
}

// verifyFleet checks a verified record's certificate chain against the
// trusted fleet CAs at time now: the chain verifies (crypto/x509, client
// authentication or any extended key usage), the device certificate is not
// a CA, may sign, and names the record's device. It returns the fingerprint
// of the CA the chain ends at.
func (r *registry) verifyFleet(v *provenance.Verified, now time.Time) (string, error) {
	if len(v.Chain) == 0 {
		return "", errors.New("no certificate chain (x5chain)")
	}
	if len(r.FleetCAs) == 0 {
		return "", errors.New("no fleet CA is trusted")
	}
	leaf := v.Chain[0]
	switch {
	case leaf.IsCA:
		return "", errors.New("the device certificate is a CA certificate")
	case leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0:
		return "", errors.New("the device certificate's key usage does not allow signatures")
	case !provenance.CertNamesDevice(leaf, v.Device):
		return "", fmt.Errorf("the device certificate names another device (CN %q)", clip(leaf.Subject.CommonName))
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, ca := range r.FleetCAs {
		c, err := x509.ParseCertificate(ca.Cert) // checked by loadRegistry
		if err != nil {
			return "", err
		}
		roots.AddCert(c)
	}
	for _, c := range v.Chain[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return "", err
	}
	chain := chains[0]
	return fingerprint(chain[len(chain)-1].Raw), nil
}
