package receiver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// verifyLeaf checks that c's leaf verifies for host at now with ca as the
// only root, and that the CA is sent after it.
func verifyLeaf(t *testing.T, c *tls.Certificate, ca *x509.Certificate, host string, now time.Time) {
	t.Helper()
	if len(c.Certificate) != 2 || !bytes.Equal(c.Certificate[1], ca.Raw) {
		t.Fatalf("the served chain has %d certificates, want the leaf then the CA", len(c.Certificate))
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, CurrentTime: now}); err != nil {
		t.Errorf("the certificate for %s does not verify with the receiver's CA: %v", host, err)
	}
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestSelfCert: the first load makes the CA (key 0600) and a certificate for
// the names; the next load serves the same ones; other names get a new
// certificate from the same CA; near its end the certificate is renewed
// while serving, and the renewal is kept on disk.
func TestSelfCert(t *testing.T) {
	dir := filepath.Join(t.TempDir(), SelfCertDir)
	clk := &stepClock{t: testNow}
	names := []string{"kf.lan", "127.0.0.1", "KF.lan", "fd00::2"}
	s, err := LoadSelfCert(dir, names, clk, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ca := s.CA()
	if !ca.IsCA || ca.NotAfter.Sub(testNow) < 19*365*24*time.Hour {
		t.Errorf("CA: IsCA %v, until %v; want a CA valid for about 20 years", ca.IsCA, ca.NotAfter)
	}
	if got, want := s.Hosts(), []string{"kf.lan", "127.0.0.1", "fd00::2"}; !slices.Equal(got, want) {
		t.Errorf("Hosts() = %q, want %q", got, want)
	}
	for _, f := range []string{selfCAKeyFile, selfKeyFile} {
		if m := fileMode(t, filepath.Join(dir, f)); m != 0o600 {
			t.Errorf("%s: mode %04o, want 0600", f, m)
		}
	}
	c1, err := s.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"kf.lan", "127.0.0.1", "fd00::2"} {
		verifyLeaf(t, c1, ca, h, testNow)
	}

	again, err := LoadSelfCert(dir, []string{"127.0.0.1", "fd00::2", "kf.lan"}, clk, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := again.Certificate()
	if !bytes.Equal(again.CA().Raw, ca.Raw) || !bytes.Equal(c2.Certificate[0], c1.Certificate[0]) {
		t.Error("a second load with the same names made a new CA or certificate")
	}

	other, err := LoadSelfCert(dir, []string{"kf.lan", "192.168.1.9"}, clk, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c3, _ := other.Certificate()
	if !bytes.Equal(other.CA().Raw, ca.Raw) || bytes.Equal(c3.Certificate[0], c1.Certificate[0]) {
		t.Error("new names: want a new certificate from the same CA")
	}
	verifyLeaf(t, c3, ca, "192.168.1.9", testNow)

	// 31 days before its end it is served as is; 29 days before, renewed.
	clk.add(SelfCertLifetime - SelfCertRenew - 24*time.Hour)
	if c, _ := other.Certificate(); !bytes.Equal(c.Certificate[0], c3.Certificate[0]) {
		t.Error("renewed a certificate with 31 days left")
	}
	clk.add(2 * 24 * time.Hour)
	c4, err := other.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(c4.Certificate[0], c3.Certificate[0]) {
		t.Fatal("not renewed 29 days before its end")
	}
	verifyLeaf(t, c4, ca, "192.168.1.9", clk.Now().Add(300*24*time.Hour))
	reload, err := LoadSelfCert(dir, []string{"kf.lan", "192.168.1.9"}, clk, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c5, _ := reload.Certificate(); !bytes.Equal(c5.Certificate[0], c4.Certificate[0]) {
		t.Error("the renewed certificate was not kept on disk")
	}
}

// TestSelfCertKeepsTheCA: a CA with a file missing, or whose certificate
// and key do not match, is an error and left as it is: cameras pin it.
func TestSelfCertKeepsTheCA(t *testing.T) {
	for name, damage := range map[string]func(dir string) error{
		"key missing":         func(dir string) error { return os.Remove(filepath.Join(dir, selfCAKeyFile)) },
		"certificate missing": func(dir string) error { return os.Remove(filepath.Join(dir, selfCAFile)) },
		"key of another CA": func(dir string) error {
			other := filepath.Join(t.TempDir(), SelfCertDir)
			if _, err := LoadSelfCert(other, []string{"localhost"}, nil, nil, nil); err != nil {
				return err
			}
			b, err := os.ReadFile(filepath.Join(other, selfCAKeyFile))
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, selfCAKeyFile), b, 0o600)
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), SelfCertDir)
			if _, err := LoadSelfCert(dir, []string{"localhost"}, nil, nil, nil); err != nil {
				t.Fatal(err)
			}
			if err := damage(dir); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(filepath.Join(dir, selfCAFile))
			if _, err := LoadSelfCert(dir, []string{"localhost"}, nil, nil, nil); err == nil {
				t.Fatal("loaded a damaged CA")
			}
			if after, _ := os.ReadFile(filepath.Join(dir, selfCAFile)); !bytes.Equal(before, after) {
				t.Error("the CA certificate was replaced")
			}
		})
	}
}

func TestParseTLSNames(t *testing.T) {
	names, ips, err := ParseTLSNames([]string{" Cam.LAN. ", "[::1]", "10.0.0.2", "cam.lan", "", "10.0.0.2"})
	if err != nil || !slices.Equal(names, []string{"cam.lan"}) || len(ips) != 2 {
		t.Errorf("ParseTLSNames = %q, %v, %v", names, ips, err)
	}
	for _, bad := range [][]string{{"bad_name"}, {"-x.lan"}, {"a..b"}, {"http://x"}, {}, {" "}} {
		if _, _, err := ParseTLSNames(bad); err == nil || !errors.As(err, new(*ConfigError)) {
			t.Errorf("ParseTLSNames(%q) = %v, want a *ConfigError", bad, err)
		}
	}
	for _, h := range DefaultTLSNames() {
		if _, _, err := ParseTLSNames([]string{h}); err != nil {
			t.Errorf("a default name does not parse: %v", err)
		}
	}
}

// TestServeSelfTLS: with -tls self the receiver serves HTTPS with its own
// CA's certificate for its names (sent with the CA), answers the pages at
// those names, and pins the CA in claim codes; auto on a loopback address
// without files stays plain HTTP; modes that do not go together are a
// *ConfigError.
func TestServeSelfTLS(t *testing.T) {
	dir := t.TempDir()
	s := startServe(t, ServeConfig{Options: Options{Dir: dir}, Listen: "127.0.0.1:0", TLS: TLSSelf, TLSNames: []string{"127.0.0.1", "kf.test"}})
	if !strings.HasPrefix(s.url, "https://127.0.0.1:") {
		t.Fatalf("Ready URL %q, want https://127.0.0.1:PORT/", s.url)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, SelfCertDir, selfCAFile))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA certificate in ca.pem")
	}
	_, port, _ := net.SplitHostPort(strings.TrimSuffix(strings.TrimPrefix(s.url, "https://"), "/"))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "kf.test"}}}
	defer client.CloseIdleConnections()
	for _, host := range []string{"127.0.0.1:" + port, "kf.test:" + port} {
		req, _ := http.NewRequest(http.MethodGet, s.url+"signin", nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("HTTPS with only the receiver's CA trusted: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusMisdirectedRequest {
			t.Errorf("Host %s: 421, want the pages to answer a name of the certificate", host)
		}
	}
	if err := s.wait(); err != nil {
		t.Fatal(err)
	}
	// The claim code pins the CA.
	cc, err := IssueClaim(dir, mustCA(t, caPEM).Raw, "alice", testNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := fingerprintSPKI(mustCA(t, caPEM)); cc.Pin != want {
		t.Errorf("claim pin %s, want the CA key's %s", cc.Pin, want)
	}

	auto := startServe(t, ServeConfig{Options: Options{Dir: t.TempDir()}, Listen: "127.0.0.1:0"})
	if !strings.HasPrefix(auto.url, "http://") {
		t.Errorf("auto on loopback without files: %q, want plain HTTP", auto.url)
	}

	done, cancel := context.WithCancel(t.Context())
	cancel()
	certFile, keyFile := serverFiles(t, newCA(t, "server", nil))
	for name, cfg := range map[string]ServeConfig{
		"unknown mode":           {TLS: "on"},
		"self with files":        {TLS: TLSSelf, TLSCertFile: certFile, TLSKeyFile: keyFile},
		"off with files":         {TLS: TLSOff, TLSCertFile: certFile, TLSKeyFile: keyFile},
		"client CAs with off":    {TLS: TLSOff, ClientCAs: x509.NewCertPool()},
		"bad TLS name":           {TLS: TLSSelf, TLSNames: []string{"not a name"}},
		"client CAs on loopback": {ClientCAs: x509.NewCertPool()},
	} {
		cfg.Options = Options{Dir: t.TempDir()}
		cfg.Listen = "127.0.0.1:0"
		if err := Serve(done, cfg); !errors.As(err, new(*ConfigError)) {
			t.Errorf("%s: Serve returned %v, want a *ConfigError", name, err)
		}
	}
}

func mustCA(t *testing.T, caPEM []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(caPEM)
	if blk == nil {
		t.Fatal("ca.pem: no PEM block")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func fingerprintSPKI(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}
