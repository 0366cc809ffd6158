package receiver

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/provenance"
)

func caPool(ca *testCA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// clientCert is a client certificate of ca for d, valid now (real TLS
// checks it against the wall clock, not testNow).
func clientCert(t *testing.T, ca *testCA, d *testDevice) tls.Certificate {
	t.Helper()
	der := ca.issue(t, d.key.Public(), d.id, leafOpts{from: time.Now().Add(-time.Hour), to: time.Now().Add(time.Hour)})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: d.key}
}

// serverFiles writes a server certificate of ca for 127.0.0.1, valid now,
// and its key as PEM files.
func serverFiles(t *testing.T, ca *testCA) (certFile, keyFile string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: "receiver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, k.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// served is a Serve running in the background.
type served struct {
	url  string
	done chan error
	stop context.CancelFunc
}

// startServe runs Serve with cfg until the test ends (or wait is called)
// and waits until it listens.
func startServe(t *testing.T, cfg ServeConfig) *served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	cfg.Ready = func(url string) { ready <- url }
	s := &served{done: make(chan error, 1), stop: cancel}
	go func() { s.done <- Serve(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	select {
	case s.url = <-ready:
	case err := <-s.done:
		s.done <- err
		t.Fatalf("Serve returned before listening: %v", err)
	}
	return s
}

// wait stops Serve and returns what it returned.
func (s *served) wait() error {
	s.stop()
	err := <-s.done
	s.done <- err // for the cleanup
	return err
}

// do sends a request and returns the status and the body.
func do(t *testing.T, c *http.Client, method, url string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// storedRecords opens dir after Serve released it and returns its record
// count.
func storedRecords(t *testing.T, dir string) int {
	t.Helper()
	srv, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("reopen after Serve: %v", err)
	}
	defer srv.Close()
	return srv.Stats().Records
}

// TestServeRequiresClientCertForUploads: with ClientCAs, Serve answers an
// upload without a fleet certificate 401 (never 403: the device keeps the
// record and retries) before the upload reaches the Server, serves the
// pages without one (they need a session), and stores the upload of a
// device with one. /v1/stats needs both: a certificate (under /v1/) and an
// admin's session.
func TestServeRequiresClientCertForUploads(t *testing.T) {
	dir := t.TempDir()
	d := newDevice(t)
	if _, err := Enroll(dir, d.pem); err != nil {
		t.Fatal(err)
	}
	if err := Pair(dir, d.id, "alice"); err != nil {
		t.Fatal(err)
	}
	serverCA, fleetCA := newCA(t, "server CA", nil), newCA(t, "fleet CA", nil)
	certFile, keyFile := serverFiles(t, serverCA)
	s := startServe(t, ServeConfig{
		Options: Options{Dir: dir},
		Listen:  "127.0.0.1:0", TLSCertFile: certFile, TLSKeyFile: keyFile, ClientCAs: caPool(fleetCA),
	})
	if !strings.HasPrefix(s.url, "https://127.0.0.1:") {
		t.Fatalf("Ready URL %q, want https://127.0.0.1:PORT/", s.url)
	}
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool(serverCA), Certificates: certs}}}
	}
	anon, fleet := client(), client(clientCert(t, fleetCA, d))
	r := d.record(t, "ev-1", provenance.KindStart, 1)
	upload := strings.TrimSuffix(s.url, "/") + r.path()

	if code, body := do(t, anon, http.MethodPut, upload, r.body); code != http.StatusUnauthorized || !strings.Contains(body, "client certificate") {
		t.Errorf("upload without a client certificate: %d %q, want 401 naming the client certificate", code, body)
	}
	if code, body := do(t, anon, http.MethodGet, s.url, nil); code != http.StatusOK || !strings.Contains(body, `action="/signin"`) {
		t.Errorf("home page without a client certificate: %d, want 200 and the sign-in form", code)
	}
	if code, _ := do(t, anon, http.MethodGet, s.url+"v1/stats", nil); code != http.StatusUnauthorized {
		t.Errorf("/v1/stats without a client certificate: %d, want 401", code)
	}
	if code, body := do(t, fleet, http.MethodPut, upload, r.body); code != http.StatusCreated {
		t.Errorf("upload with the fleet certificate: %d %q, want 201", code, body)
	}
	if code, _ := do(t, fleet, http.MethodGet, s.url+"v1/stats", nil); code != http.StatusUnauthorized {
		t.Errorf("/v1/stats with the fleet certificate, not signed in: %d, want 401", code)
	}
	if _, err := (Accounts{Dir: dir}).Add("ops", RoleAdmin); err != nil {
		t.Fatal(err)
	}
	link, err := Accounts{Dir: dir}.SignInLink("ops")
	if err != nil {
		t.Fatal(err)
	}
	if fleet.Jar, err = cookiejar.New(nil); err != nil {
		t.Fatal(err)
	}
	if code, body := do(t, fleet, http.MethodPost, strings.TrimSuffix(s.url, "/")+link.Path, nil); code != http.StatusOK {
		t.Fatalf("admin sign-in link: %d %q", code, body)
	}
	code, body := do(t, fleet, http.MethodGet, s.url+"v1/stats", nil)
	var st Stats
	if err := json.Unmarshal([]byte(body), &st); code != http.StatusOK || err != nil {
		t.Fatalf("/v1/stats with the fleet certificate: %d %q (%v)", code, body, err)
	}
	if st.Stored != 1 || len(st.Rejected) != 0 {
		t.Errorf("stats %+v: want 1 stored and no rejection (the 401 never reached the server)", st)
	}
	// A certificate from another CA does not pass: a 401 or a failed
	// handshake, never the upload.
	other := client(clientCert(t, newCA(t, "other CA", nil), d))
	r2 := d.record(t, "ev-2", provenance.KindStart, 2)
	req, _ := http.NewRequest(http.MethodPut, strings.TrimSuffix(s.url, "/")+r2.path(), bytes.NewReader(r2.body))
	if resp, err := other.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("a certificate from another CA got %d, want 401 or a failed handshake", resp.StatusCode)
		}
	}

	if err := s.wait(); err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
	if n := storedRecords(t, dir); n != 1 {
		t.Errorf("%d records stored, want 1", n)
	}
}

// TestServeLoopbackGuard: Serve refuses an address that is not loopback
// (or not an address) unless Public, before it opens anything; a Public
// one serves HTTPS with the receiver's own CA, or plain HTTP with a warning
// when TLS is off.
func TestServeLoopbackGuard(t *testing.T) {
	// Done already: a Serve that wrongly starts returns at once.
	done, cancel := context.WithCancel(t.Context())
	cancel()
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:8417", "no-port"} {
		dir := filepath.Join(t.TempDir(), "recv")
		err := Serve(done, ServeConfig{Options: Options{Dir: dir}, Listen: addr})
		if ce := (*ConfigError)(nil); !errors.As(err, &ce) {
			t.Errorf("Listen %q: Serve returned %v, want a *ConfigError", addr, err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Listen %q: the data directory was created (%v)", addr, err)
		}
	}
	if err := Serve(done, ServeConfig{Options: Options{Dir: t.TempDir()}, Listen: "0.0.0.0:0"}); err == nil ||
		!strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("refusal %v does not say why", err)
	}

	// Public with TLS off: served, with a warning.
	var logs lineBuf
	dir := t.TempDir()
	s := startServe(t, ServeConfig{
		Options: Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))},
		Listen:  "0.0.0.0:0", Public: true, TLS: TLSOff,
	})
	if !strings.Contains(logs.buf.String(), "non-loopback") {
		t.Errorf("no warning for a public address:\n%s", logs.buf.String())
	}
	_, port, err := net.SplitHostPort(strings.TrimSuffix(strings.TrimPrefix(s.url, "http://"), "/"))
	if err != nil {
		t.Fatalf("Ready URL %q: %v", s.url, err)
	}
	if code, _ := do(t, http.DefaultClient, http.MethodGet, "http://127.0.0.1:"+port+"/", nil); code != http.StatusOK {
		t.Errorf("home page on a public address, by 127.0.0.1: %d", code)
	}
	if err := s.wait(); err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}

	// Public by default: HTTPS with the receiver's own CA, no warning.
	var tlsLogs lineBuf
	dir = t.TempDir()
	s = startServe(t, ServeConfig{
		Options: Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(&tlsLogs, nil))},
		Listen:  "0.0.0.0:0", Public: true,
	})
	if strings.Contains(tlsLogs.buf.String(), "non-loopback") {
		t.Errorf("a warning about clear text with HTTPS:\n%s", tlsLogs.buf.String())
	}
	if _, port, err = net.SplitHostPort(strings.TrimSuffix(strings.TrimPrefix(s.url, "https://"), "/")); err != nil {
		t.Fatalf("Ready URL %q: %v", s.url, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, SelfCertDir, selfCAFile))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer client.CloseIdleConnections()
	if code, _ := do(t, client, http.MethodGet, "https://127.0.0.1:"+port+"/", nil); code != http.StatusOK {
		t.Errorf("home page over HTTPS on a public address, by 127.0.0.1: %d", code)
	}
	if err := s.wait(); err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
}

// TestServeHTTP: without TLS Serve stores uploads over plain HTTP, writes
// the event line, and on cancel returns nil with the directory released.
func TestServeHTTP(t *testing.T) {
	dir := t.TempDir()
	d := newDevice(t)
	if _, err := Enroll(dir, d.pem); err != nil {
		t.Fatal(err)
	}
	var lines lineBuf
	s := startServe(t, ServeConfig{Options: Options{Dir: dir, Events: &lines}, Listen: "127.0.0.1:0"})
	if !strings.HasPrefix(s.url, "http://127.0.0.1:") {
		t.Fatalf("Ready URL %q, want http://127.0.0.1:PORT/", s.url)
	}
	r := d.record(t, "ev-1", provenance.KindStart, 1)
	if code, body := do(t, http.DefaultClient, http.MethodPut, strings.TrimSuffix(s.url, "/")+r.path(), r.body); code != http.StatusCreated {
		t.Fatalf("upload: %d %q", code, body)
	}
	if got := lines.lines(); len(got) != 1 || !strings.Contains(got[0], "verified event=ev-1") {
		t.Errorf("event lines %q", got)
	}
	if _, err := Open(Options{Dir: dir}); err == nil || !errors.Is(err, errLocked) {
		t.Errorf("a second Open while Serve runs: %v, want the directory locked", err)
	}
	if err := s.wait(); err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
	if n := storedRecords(t, dir); n != 1 {
		t.Errorf("%d records stored, want 1", n)
	}
}

// TestServeConfigErrors: settings that do not go together are a
// *ConfigError; a certificate that cannot be loaded is a serving error, and
// Serve releases the directory either way.
func TestServeConfigErrors(t *testing.T) {
	done, cancel := context.WithCancel(t.Context())
	cancel() // a Serve that wrongly starts returns at once
	pool := caPool(newCA(t, "fleet CA", nil))
	for name, cfg := range map[string]ServeConfig{
		"cert without key":       {TLSCertFile: "cert.pem"},
		"key without cert":       {TLSKeyFile: "key.pem"},
		"client CAs without TLS": {ClientCAs: pool},
		"bad MQTT broker":        {MQTT: &MQTTConfig{Broker: "http://broker.example", Username: "receiver"}},
	} {
		cfg.Options = Options{Dir: t.TempDir()}
		cfg.Listen = "127.0.0.1:0"
		err := Serve(done, cfg)
		if ce := (*ConfigError)(nil); !errors.As(err, &ce) {
			t.Errorf("%s: Serve returned %v, want a *ConfigError", name, err)
		}
		if srv, err := Open(cfg.Options); err != nil {
			t.Errorf("%s: directory not released: %v", name, err)
		} else {
			srv.Close()
		}
	}

	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	err := Serve(t.Context(), ServeConfig{Options: Options{Dir: dir}, Listen: "127.0.0.1:0", TLSCertFile: missing, TLSKeyFile: missing})
	if ce := (*ConfigError)(nil); err == nil || errors.As(err, &ce) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing certificate file: Serve returned %v, want the file error", err)
	}
	if n := storedRecords(t, dir); n != 0 {
		t.Errorf("%d records, want 0", n)
	}
}

// TestServeStopsMQTTIngest: with MQTT set, Serve runs the ingest (here
// redialing a broker that is not there) and stops it before it returns.
func TestServeStopsMQTTIngest(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	broker := "tcp://" + ln.Addr().String()
	ln.Close() // nothing listens there now: every dial fails
	var logs lineBuf
	dir := t.TempDir()
	s := startServe(t, ServeConfig{
		Options: Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))},
		Listen:  "127.0.0.1:0",
		MQTT:    &MQTTConfig{Broker: broker, Username: "receiver", ConnectTimeout: time.Second},
	})
	waitFor(t, "the ingest to try the broker", func() bool {
		logs.mu.Lock()
		defer logs.mu.Unlock()
		return strings.Contains(logs.buf.String(), "cannot connect")
	})
	if err := s.wait(); err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
	if storedRecords(t, dir) != 0 {
		t.Error("records stored from nowhere")
	}
}

// TestServeHTTPServerLimits: the server Serve builds has every timeout and
// the header limit set, and logs its errors.
func TestServeHTTPServerLimits(t *testing.T) {
	hs := newHTTPServer(http.NotFoundHandler(), slog.New(slog.DiscardHandler))
	if hs.ReadHeaderTimeout <= 0 || hs.ReadTimeout <= 0 || hs.WriteTimeout <= 0 || hs.IdleTimeout <= 0 {
		t.Errorf("timeouts: read header %v, read %v, write %v, idle %v; want all set",
			hs.ReadHeaderTimeout, hs.ReadTimeout, hs.WriteTimeout, hs.IdleTimeout)
	}
	if hs.ReadHeaderTimeout > hs.ReadTimeout {
		t.Errorf("read header timeout %v above the read timeout %v", hs.ReadHeaderTimeout, hs.ReadTimeout)
	}
	if hs.MaxHeaderBytes <= 0 || hs.MaxHeaderBytes > 1<<20 {
		t.Errorf("MaxHeaderBytes %d, want set, below http.DefaultMaxHeaderBytes", hs.MaxHeaderBytes)
	}
	if hs.ErrorLog == nil {
		t.Error("no ErrorLog: the server's errors would go to the standard logger")
	}
}
