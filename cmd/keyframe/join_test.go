package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/agent"
	"github.com/keyframe-cam/keyframe/receiver"
)

// receiverCert writes a self-signed certificate for 127.0.0.1 and its key as
// PEM files under dir and returns their paths and the certificate's DER.
func receiverCert(t *testing.T, dir string) (certFile, keyFile string, der []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "test receiver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "receiver.pem"), filepath.Join(dir, "receiver.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, der
}

// verifiedLines collects a receiver's "verified" lines.
type verifiedLines struct {
	mu    sync.Mutex
	lines []string
	ch    chan struct{}
}

func (v *verifiedLines) Write(p []byte) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	sc := bufio.NewScanner(bytes.NewReader(p))
	for sc.Scan() {
		v.lines = append(v.lines, sc.Text())
	}
	select {
	case v.ch <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (v *verifiedLines) count(substr ...string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
next:
	for _, l := range v.lines {
		for _, s := range substr {
			if !strings.Contains(l, s) {
				continue next
			}
		}
		n++
	}
	return n
}

// cameraConfig writes a camera's configuration file: its data directory and
// a fast synthetic scene, and nothing about the receiver.
func cameraConfig(t *testing.T, dir string) (cfgFile, dataDir string) {
	t.Helper()
	dataDir = filepath.Join(dir, "camera")
	cfgFile = filepath.Join(dir, "camera.conf")
	conf := fmt.Sprintf(`device.data_dir = %s
capture.source = synthetic
capture.width = 320
capture.height = 240
capture.fps = 0
upload.retry_window = 10ms
upload.quick_retry = 10ms
upload.backoff_base = 10ms
upload.backoff_cap = 100ms
upload.rate = 1000
`, dataDir)
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgFile, dataDir
}

// TestJoinEndToEnd: a real receiver (Serve, TLS with a self-signed
// certificate on 127.0.0.1) issues a claim code for alice; keyframe join
// claims a camera with it; a real agent on the synthetic scene, configured
// with nothing but what join wrote, uploads events that the receiver
// verifies, stores and shows to alice, and to no one else.
func TestJoinEndToEnd(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, certDER := receiverCert(t, dir)
	rdir := filepath.Join(dir, "receiver")
	lines := &verifiedLines{ch: make(chan struct{}, 1)}
	quiet := slog.New(slog.DiscardHandler)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sctx, stopServe := context.WithCancel(ctx)
	ready := make(chan string, 1)
	served := make(chan error, 1)
	go func() {
		served <- receiver.Serve(sctx, receiver.ServeConfig{
			Options: receiver.Options{Dir: rdir, Logger: quiet, Events: lines},
			Listen:  "127.0.0.1:0", TLSCertFile: certFile, TLSKeyFile: keyFile,
			Ready: func(url string) { ready <- url },
		})
	}()
	var url string
	select {
	case url = <-ready:
	case err := <-served:
		t.Fatalf("Serve: %v", err)
	}
	defer func() {
		stopServe()
		<-served
	}()
	cc, err := receiver.IssueClaim(rdir, certDER, "alice", time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}

	cfgFile, dataDir := cameraConfig(t, dir)
	var out, errb bytes.Buffer
	// Typed with spaces between the groups, as a person might.
	args := append([]string{"-config", cfgFile, url}, strings.Split(cc.Code, "-")...)
	if code := runJoin(ctx, args, nil, &out, &errb); code != 0 {
		t.Fatalf("keyframe join: exit %d\n%s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "is now alice's camera at "+url) || !strings.Contains(out.String(), "keyframe run") {
		t.Errorf("keyframe join said:\n%s", out.String())
	}

	// keyframe run's configuration: the file says nothing of the receiver.
	c, err := agent.LoadConfig(cfgFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.UploadURL != url || c.UploadCAFile != filepath.Join(dataDir, "receiver-ca.pem") {
		t.Fatalf("the agent's upload.url %q, upload.ca_file %q: not what join wrote", c.UploadURL, c.UploadCAFile)
	}
	a, err := agent.New(c, agent.Deps{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	device := a.DeviceID()
	actx, stopAgent := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- a.Run(actx) }()
	for lines.count("kind=start", "device="+device) < 1 || lines.count("kind=end", "device="+device) < 1 {
		select {
		case <-lines.ch:
		case err := <-ran:
			t.Fatalf("agent stopped before a start and an end were verified: %v", err)
		case <-ctx.Done():
			t.Fatalf("no verified start and end of %s in time; lines: %q", device, lines.lines)
		}
	}
	stopAgent()
	if err := <-ran; err != nil {
		t.Fatalf("agent: %v", err)
	}
	stopServe()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	served <- nil // for the deferred stop

	srv, err := receiver.Open(receiver.Options{Dir: rdir})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	evs, err := srv.OwnerEvents("alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) < 2 {
		t.Fatalf("alice sees %d events, want the start and end at least", len(evs))
	}
	for _, e := range evs {
		if e.Device != device {
			t.Errorf("alice sees an event of %s", e.Device)
		}
	}
	if evs, _ := srv.OwnerEvents("bob"); len(evs) != 0 {
		t.Errorf("bob sees %d events", len(evs))
	}
	t.Logf("joined %s to alice; alice sees %d verified records", device, len(evs))
}

// TestJoinCommandRefusals: keyframe join against a server with another
// certificate (a man in the middle) and with a mistyped code: a clear
// message, exit 1, and nothing written to the data directory.
func TestJoinCommandRefusals(t *testing.T) {
	dir := t.TempDir()
	_, _, certDER := receiverCert(t, dir)
	cc, err := receiver.IssueClaim(filepath.Join(dir, "receiver"), certDER, "alice", time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var reached atomic.Int64
	mitm := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }))
	defer mitm.Close()
	cfgFile, dataDir := cameraConfig(t, dir)
	typo := "0" + cc.Code[1:]
	if cc.Code[0] == '0' {
		typo = "1" + cc.Code[1:]
	}
	for _, tc := range []struct {
		code, want string
	}{
		{cc.Code, "does not match the claim code: wrong URL or someone in the middle"},
		{typo, "check character does not match"},
	} {
		var out, errb bytes.Buffer
		code := runJoin(context.Background(), []string{"-config", cfgFile, mitm.URL, tc.code}, nil, &out, &errb)
		if code != 1 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("exit %d, stderr %q; want 1 and %q", code, errb.String(), tc.want)
		}
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("%d requests reached the impostor", n)
	}
	for _, f := range []string{"joined.conf", "receiver-ca.pem"} {
		if _, err := os.Stat(filepath.Join(dataDir, f)); err == nil {
			t.Errorf("a refused join wrote %s", f)
		}
	}
	var errb bytes.Buffer
	if code := runJoin(context.Background(), []string{"-config", cfgFile, mitm.URL}, nil, io.Discard, &errb); code != 2 || !strings.Contains(errb.String(), "usage: keyframe join") {
		t.Errorf("without a code: exit %d, %q", code, errb.String())
	}
}
