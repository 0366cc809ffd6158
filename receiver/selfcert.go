package receiver

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keyframe-cam/keyframe/internal/atomicfile"
	"github.com/keyframe-cam/keyframe/internal/clock"
)

// The receiver's HTTPS modes (ServeConfig.TLS).
const (
	// TLSAuto serves the given certificate and key files if any; else, on a
	// non-loopback listen address, TLSSelf; else plain HTTP on loopback.
	TLSAuto = "auto"
	// TLSSelf serves a certificate from the receiver's own CA (SelfCert).
	TLSSelf = "self"
	// TLSOff serves plain HTTP.
	TLSOff = "off"
)

// The receiver's own CA and server certificate live in SelfCertDir under the
// data directory: the CA's certificate and key, the server's, and a lock
// file for the process that makes or renews them.
const (
	SelfCertDir    = "tls"
	selfCAFile     = "ca.pem"
	selfCAKeyFile  = "ca.key"
	selfCertFile   = "server.pem"
	selfKeyFile    = "server.key"
	selfLockFile   = "tls.lock"
	selfCALifetime = 20 * 365 * 24 * time.Hour
	// SelfCertLifetime is how long a server certificate the receiver's CA
	// issues is valid (under the 825 days some clients allow), and
	// SelfCertRenew how long before its end it is renewed.
	SelfCertLifetime = 397 * 24 * time.Hour
	SelfCertRenew    = 30 * 24 * time.Hour
	// selfBackdate covers a client whose clock is a little behind.
	selfBackdate = time.Hour
)

// SelfCert is the receiver's own certificate authority and the server
// certificate it issues for the receiver's host names and addresses: HTTPS
// on a LAN without a private PKI. The CA is made once and kept (its key
// mode 0600): claim codes pin it (docs/claim.md), so a camera that joined
// keeps trusting the receiver through every renewal of the server
// certificate, which is renewed when the names change or its end nears.
type SelfCert struct {
	dir   string
	names []string // DNS names, sorted
	ips   []net.IP // addresses, sorted by their text
	clk   clock.Clock
	rand  io.Reader
	log   *slog.Logger

	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey

	mu   sync.Mutex
	cert *tls.Certificate // server leaf, then the CA
}

// LoadSelfCert opens the receiver's own CA in dir (the data directory's
// SelfCertDir), making it on first use, and a server certificate for hosts
// (host names and IP addresses; at least one), issuing a new one when there
// is none, it is not for exactly these hosts, or it ends within
// SelfCertRenew. Files are written atomically, under a lock. A CA whose
// certificate or key is missing, unreadable or not a pair is an error, never
// replaced: cameras pin it.
func LoadSelfCert(dir string, hosts []string, clk clock.Clock, rnd io.Reader, log *slog.Logger) (*SelfCert, error) {
	s := &SelfCert{dir: dir, clk: clock.Or(clk), rand: rnd, log: log}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	var err error
	if s.names, s.ips, err = ParseTLSNames(hosts); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("receiver: tls: %w", err)
	}
	unlock, err := lockFile(filepath.Join(dir, selfLockFile), true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := s.loadCA(); err != nil {
		return nil, err
	}
	if cert, ok := s.loadServer(); ok {
		s.cert = cert
		return s, nil
	}
	if err := s.issue(); err != nil {
		return nil, err
	}
	return s, nil
}

// ParseTLSNames splits hosts into DNS names and IP addresses, each sorted
// and without repeats; a name that is neither is an error naming it.
func ParseTLSNames(hosts []string) (names []string, ips []net.IP, err error) {
	for _, h := range hosts {
		h = strings.TrimSuffix(strings.Trim(strings.TrimSpace(h), "[]"), ".")
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
			continue
		}
		if !validDNSName(h) {
			return nil, nil, &ConfigError{fmt.Errorf("receiver: TLS name %q is neither a host name nor an IP address", clip(h))}
		}
		h = strings.ToLower(h)
		if !slices.Contains(names, h) {
			names = append(names, h)
		}
	}
	if len(names) == 0 && len(ips) == 0 {
		return nil, nil, &ConfigError{errors.New("receiver: no TLS names: the certificate must name at least one host name or address")}
	}
	slices.Sort(names)
	slices.SortFunc(ips, func(a, b net.IP) int { return strings.Compare(a.String(), b.String()) })
	return names, ips, nil
}

// validDNSName reports whether name is a host name: dot-separated labels
// of letters, digits and inner hyphens, each 1-63 bytes, 253 in all.
func validDNSName(name string) bool {
	if len(name) > 253 {
		return false
	}
	for _, l := range strings.Split(name, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// DefaultTLSNames are the names a LAN reaches this machine by: its host
// name (and HOST.local, the mDNS name, when the host name has no dot),
// localhost, and the addresses of its interfaces that are up, but for
// IPv6 link-local ones (a URL cannot carry their zone).
func DefaultTLSNames() []string {
	out := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && validDNSName(h) {
		out = append(out, h)
		if !strings.Contains(h, ".") {
			out = append(out, h+".local")
		}
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return out
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLinkLocalUnicast() && !n.IP.IsLoopback() {
				out = append(out, n.IP.String())
			}
		}
	}
	return out
}

// CA returns the receiver's CA certificate: what claim codes pin.
func (s *SelfCert) CA() *x509.Certificate { return s.ca }

// Hosts returns the host names and addresses the server certificate names.
func (s *SelfCert) Hosts() []string {
	out := slices.Clone(s.names)
	for _, ip := range s.ips {
		out = append(out, ip.String())
	}
	return out
}

// Certificate returns the server certificate (with the CA after it), first
// renewing it if it ends within SelfCertRenew: a receiver that runs for a
// year keeps serving a valid one. A failed renewal is logged and the
// current certificate served while it is valid.
func (s *SelfCert) Certificate() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clk.Now()
	if !needsRenewal(s.cert.Leaf, now) {
		return s.cert, nil
	}
	err := func() error {
		unlock, err := lockFile(filepath.Join(s.dir, selfLockFile), true)
		if err != nil {
			return err
		}
		defer unlock()
		return s.issue()
	}()
	if err != nil {
		s.log.Error("receiver: renewing the TLS certificate failed", "err", err)
		if now.After(s.cert.Leaf.NotAfter) {
			return nil, err
		}
	}
	return s.cert, nil
}

// GetCertificate is Certificate for tls.Config.GetCertificate.
func (s *SelfCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.Certificate()
}

func needsRenewal(leaf *x509.Certificate, now time.Time) bool {
	return now.Before(leaf.NotBefore) || now.Add(SelfCertRenew).After(leaf.NotAfter)
}

// loadCA reads the CA, or makes it when neither of its files exists.
func (s *SelfCert) loadCA() error {
	certPath, keyPath := filepath.Join(s.dir, selfCAFile), filepath.Join(s.dir, selfCAKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	if errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist) {
		return s.makeCA(certPath, keyPath)
	}
	if certErr != nil {
		return fmt.Errorf("receiver: tls: the receiver's CA: %w (cameras pin this CA: restore it from a backup; remove both %s and %s only to make a new one, then join every camera again)", certErr, selfCAFile, selfCAKeyFile)
	}
	if keyErr != nil {
		return fmt.Errorf("receiver: tls: the receiver's CA key: %w (cameras pin this CA: restore it from a backup; remove both %s and %s only to make a new one, then join every camera again)", keyErr, selfCAFile, selfCAKeyFile)
	}
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("receiver: tls: the receiver's CA in %s: %w", s.dir, err)
	}
	key, ok := kp.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !kp.Leaf.IsCA {
		return fmt.Errorf("receiver: tls: %s is not an ECDSA CA certificate", certPath)
	}
	s.ca, s.caKey = kp.Leaf, key
	return nil
}

func (s *SelfCert) makeCA(certPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), s.rand)
	if err != nil {
		return fmt.Errorf("receiver: tls: CA key: %w", err)
	}
	serial, err := s.serial()
	if err != nil {
		return err
	}
	now := s.clk.Now()
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: strings.TrimSpace("keyframe receiver CA " + host), Organization: []string{"keyframe"}},
		NotBefore:             now.Add(-selfBackdate),
		NotAfter:              now.Add(selfCALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(s.rand, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("receiver: tls: CA certificate: %w", err)
	}
	if s.ca, err = x509.ParseCertificate(der); err != nil {
		return fmt.Errorf("receiver: tls: CA certificate: %w", err)
	}
	s.caKey = key
	// The key first: a certificate on disk always has its key.
	if err := writeKey(keyPath, key); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(certPath, pemCert(der), 0o644); err != nil {
		return fmt.Errorf("receiver: tls: %w", err)
	}
	s.log.Info("receiver: made the receiver's own CA for HTTPS", "file", certPath, "sha256", fingerprint(der))
	return nil
}

// loadServer reads the server certificate and reports whether it can be
// served: issued by the CA, for exactly the wanted names, not due for
// renewal.
func (s *SelfCert) loadServer() (*tls.Certificate, bool) {
	certPEM, err := os.ReadFile(filepath.Join(s.dir, selfCertFile))
	if err != nil {
		return nil, false
	}
	keyPEM, err := os.ReadFile(filepath.Join(s.dir, selfKeyFile))
	if err != nil {
		return nil, false
	}
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		s.log.Warn("receiver: tls: the server certificate is unusable; issuing a new one", "dir", s.dir, "err", err)
		return nil, false
	}
	leaf := kp.Leaf
	if leaf.CheckSignatureFrom(s.ca) != nil || needsRenewal(leaf, s.clk.Now()) || !s.sameHosts(leaf) {
		return nil, false
	}
	kp.Certificate = [][]byte{leaf.Raw, s.ca.Raw}
	return &kp, true
}

func (s *SelfCert) sameHosts(leaf *x509.Certificate) bool {
	names := slices.Clone(leaf.DNSNames)
	slices.Sort(names)
	if !slices.Equal(names, s.names) || len(leaf.IPAddresses) != len(s.ips) {
		return false
	}
	for _, ip := range leaf.IPAddresses {
		if !slices.ContainsFunc(s.ips, ip.Equal) {
			return false
		}
	}
	return true
}

// issue makes a new server key and certificate for the names, writes them
// and serves them.
func (s *SelfCert) issue() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), s.rand)
	if err != nil {
		return fmt.Errorf("receiver: tls: server key: %w", err)
	}
	serial, err := s.serial()
	if err != nil {
		return err
	}
	now := s.clk.Now()
	cn := "keyframe receiver"
	if len(s.names) > 0 {
		cn = s.names[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"keyframe"}},
		NotBefore:    now.Add(-selfBackdate),
		NotAfter:     now.Add(SelfCertLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     s.names,
		IPAddresses:  s.ips,
	}
	der, err := x509.CreateCertificate(s.rand, tmpl, s.ca, key.Public(), s.caKey)
	if err != nil {
		return fmt.Errorf("receiver: tls: server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("receiver: tls: server certificate: %w", err)
	}
	// The key first, then the certificate: a crash between the two leaves
	// a pair that does not match, which the next start replaces.
	if err := writeKey(filepath.Join(s.dir, selfKeyFile), key); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(s.dir, selfCertFile), pemCert(der), 0o644); err != nil {
		return fmt.Errorf("receiver: tls: %w", err)
	}
	s.cert = &tls.Certificate{Certificate: [][]byte{der, s.ca.Raw}, PrivateKey: key, Leaf: leaf}
	s.log.Info("receiver: issued the TLS certificate", "hosts", s.Hosts(), "until", leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// serial is a random positive serial number of up to 128 bits.
func (s *SelfCert) serial() (*big.Int, error) {
	n, err := rand.Int(s.rand, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("receiver: tls: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("receiver: tls: %w", err)
	}
	if err := atomicfile.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("receiver: tls: %w", err)
	}
	return nil
}

func pemCert(der []byte) []byte {
	var b bytes.Buffer
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	return b.Bytes()
}
