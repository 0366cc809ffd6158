package receiver_test

import (
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
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keyframe-cam/keyframe/agent"
	"github.com/keyframe-cam/keyframe/internal/browsertest"
	"github.com/keyframe-cam/keyframe/join"
	"github.com/keyframe-cam/keyframe/receiver"
	"github.com/keyframe-cam/keyframe/recorder"
)

// claimFlowTimeout bounds the whole claim flow test (the browser's steps
// are bounded each by browsertest.ActionTimeout besides).
const claimFlowTimeout = 60 * time.Second

// tlsFiles writes a self-signed certificate for localhost and 127.0.0.1 and
// its key as PEM under dir, and returns their paths and the certificate.
func tlsFiles(t *testing.T, dir string) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
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
	return certFile, keyFile, cert
}

// serveTLS runs receiver.Serve over TLS on 127.0.0.1 until the test ends
// and returns its URL (https://127.0.0.1:PORT/).
func serveTLS(t *testing.T, ctx context.Context, dir, certFile, keyFile string) string {
	t.Helper()
	sctx, stop := context.WithCancel(ctx)
	ready := make(chan string, 1)
	served := make(chan error, 1)
	go func() {
		served <- receiver.Serve(sctx, receiver.ServeConfig{
			Options: receiver.Options{Dir: dir, Logger: slog.New(slog.DiscardHandler)},
			Listen:  "127.0.0.1:0", TLSCertFile: certFile, TLSKeyFile: keyFile,
			Ready: func(url string) { ready <- url },
		})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	select {
	case url := <-ready:
		return url
	case err := <-served:
		served <- err // for the cleanup
		t.Fatalf("Serve: %v", err)
	case <-ctx.Done():
		t.Fatal("Serve did not start in time")
	}
	return ""
}

// signInByLink makes the owner account name and signs the tab in with a
// one-time sign-in link, as `keyframe-receiver owner add` then `owner link`
// would give.
func signInByLink(t *testing.T, ctx context.Context, dir, base, name string) {
	t.Helper()
	acc := receiver.Accounts{Dir: dir}
	if _, err := acc.Add(name, receiver.RoleOwner); err != nil {
		t.Fatal(err)
	}
	l, err := acc.SignInLink(name)
	if err != nil {
		t.Fatal(err)
	}
	browsertest.Do(t, ctx, chromedp.Navigate(strings.TrimSuffix(base, "/")+l.Path), chromedp.WaitVisible(chromedp.CSS(`form[action="/claims"]`)))
}

// joinCamera does what `keyframe join URL CODE` does, in process: the
// camera's key (made now), its next sequence number, the join, and the
// joined configuration written into its data directory. It returns the
// device ID.
func joinCamera(t *testing.T, ctx context.Context, cfgFile, url, code string) string {
	t.Helper()
	c, err := agent.LoadConfig(cfgFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	key, id, _, err := agent.Identity(&c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if cl, ok := key.(io.Closer); ok {
		defer cl.Close()
	}
	chain, err := recorder.ChainFile(agent.Layout(&c).Chain).Load()
	if err != nil {
		t.Fatal(err)
	}
	res, err := join.Join(ctx, join.Request{URL: url, Code: code, Key: key, Seq: chain.Next})
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	if res.Device != id || res.Owner != "alice" {
		t.Fatalf("joined %s to %s, want %s to alice", res.Device, res.Owner, id)
	}
	if _, err := agent.WriteJoined(&c, res.UploadURL, res.Cert); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestBrowserClaimFlow: the claim flow end to end. A TLS receiver; alice,
// signed in in a browser (which trusts the receiver's self-signed
// certificate by its key: browsertest.TrustKey), clicks "Add a camera" and
// the claim code is read off the page; `keyframe join URL CODE` (the join
// package and the agent's files, in process) claims a camera with it; a
// real agent on the synthetic scene, configured with nothing but its data
// directory and what join wrote, uploads; alice's page, reloaded, shows the
// camera and its verified events with thumbnails that load. bob, signed in
// in another browser context, sees none of it, and not her thumbnail by
// its URL. Screenshots of the claim code page and both owners' pages.
func TestBrowserClaimFlow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), claimFlowTimeout)
	defer cancel()
	dir := t.TempDir()
	certFile, keyFile, cert := tlsFiles(t, dir)
	rdir := filepath.Join(dir, "receiver")
	url := serveTLS(t, ctx, rdir, certFile, keyFile)
	base := strings.TrimSuffix(url, "/")

	tab := browsertest.New(t, browsertest.TrustKey(cert.RawSubjectPublicKeyInfo))
	signInByLink(t, tab, rdir, url, "alice")
	if txt := browsertest.Run(t, tab, chromedp.Evaluate[string](`document.body.innerText`)); !strings.Contains(txt, "No cameras yet") {
		t.Errorf("alice's page before the claim:\n%s", txt)
	}
	if resp := browsertest.Response(t, tab, chromedp.Click(chromedp.CSS(`form[action="/claims"] button`))); resp.Status != http.StatusOK {
		t.Fatalf("Add a camera: %d", resp.Status)
	}
	cmd := strings.Fields(browsertest.Run(t, tab, chromedp.Text(chromedp.CSS(".code"))))
	if len(cmd) != 4 || cmd[0] != "keyframe" || cmd[1] != "join" || cmd[2] != url {
		t.Fatalf("the claim page shows %q, want keyframe join %s CODE", cmd, url)
	}
	browsertest.Screenshot(t, tab, "claim-code")

	// The camera: its configuration names its data directory and the
	// synthetic scene, nothing about the receiver.
	camDir := filepath.Join(dir, "camera")
	cfgFile := filepath.Join(dir, "camera.conf")
	conf := fmt.Sprintf("device.data_dir = %s\ncapture.source = synthetic\ncapture.width = 320\ncapture.height = 240\ncapture.fps = 0\n"+
		"upload.retry_window = 10ms\nupload.quick_retry = 10ms\nupload.backoff_base = 10ms\nupload.backoff_cap = 100ms\nupload.rate = 1000\n", camDir)
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	device := joinCamera(t, ctx, cfgFile, cmd[2], cmd[3])
	c, err := agent.LoadConfig(cfgFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.UploadURL != url {
		t.Fatalf("the agent's upload.url %q, want what join wrote, %q", c.UploadURL, url)
	}
	a, err := agent.New(c, agent.Deps{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	actx, stopAgent := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- a.Run(actx) }()
	defer func() {
		stopAgent()
		if err := <-ran; err != nil {
			t.Errorf("agent: %v", err)
		}
	}()

	// alice's page, reloaded until her camera's events are there with
	// their thumbnails (bounded by ctx).
	var events int
	for {
		browsertest.Do(t, tab, chromedp.Navigate(url), chromedp.WaitReady(chromedp.CSS("body")))
		events = browsertest.Run(t, tab, chromedp.Evaluate[int](`document.querySelectorAll("#events tr").length - 1`))
		if events >= 2 {
			break
		}
		select {
		case err := <-ran:
			ran <- err
			t.Fatalf("the agent stopped before alice saw 2 events: %v", err)
		case <-ctx.Done():
			t.Fatalf("alice's page shows %d events after %s", events, claimFlowTimeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
	txt := browsertest.Run(t, tab, chromedp.Evaluate[string](`document.body.innerText`))
	// Read in one evaluation: the live list swaps #cameras in as records arrive.
	cameras := browsertest.Run(t, tab, chromedp.Evaluate[string](`document.getElementById("cameras").innerText`))
	if !strings.Contains(cameras, device) || !strings.Contains(cameras, "enrolled key") || strings.Contains(cameras, "never") {
		t.Errorf("alice's cameras table:\n%s\nwant %s, enrolled, seen", cameras, device)
	}
	if n := strings.Count(txt, "verified"); n < events {
		t.Errorf("alice's page: %d events, %d marked verified", events, n)
	}
	// One snapshot of the list's pictures once each has loaded or failed
	// (the list refreshes itself as events arrive, so sources and loaded
	// counts must come from the same moment).
	type pictures struct {
		Srcs   []string `json:"srcs"`
		Loaded int      `json:"loaded"`
	}
	pics := browsertest.Run(t, tab, chromedp.Poll[pictures](`(() => {
		const im = [...document.querySelectorAll("#events img")];
		if (im.length === 0 || !im.every(i => i.complete)) return null;
		return {srcs: im.map(i => i.getAttribute("src")), loaded: im.filter(i => i.naturalWidth > 0).length};
	})()`, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second)))
	srcs, loaded := pics.Srcs, pics.Loaded
	if len(srcs) == 0 {
		t.Fatal("no thumbnails on alice's page")
	}
	for _, s := range srcs {
		if !strings.HasPrefix(s, "/media/"+device+"/") {
			t.Errorf("a thumbnail of another device on alice's page: %s", s)
		}
	}
	if loaded != len(srcs) {
		t.Errorf("%d of %d thumbnails loaded on alice's page", loaded, len(srcs))
	}
	browsertest.Screenshot(t, tab, "owner-with-camera")

	// bob, in another browser context (his own cookies), sees none of it.
	bobTab := browsertest.NewBrowserContext(t, tab)
	signInByLink(t, bobTab, rdir, url, "bob")
	bobTxt := browsertest.Run(t, bobTab, chromedp.Evaluate[string](`document.body.innerText`))
	if !strings.Contains(bobTxt, "Signed in as bob") || strings.Contains(bobTxt, device) || !strings.Contains(bobTxt, "No cameras yet") || !strings.Contains(bobTxt, "No events") {
		t.Errorf("bob's page:\n%s", bobTxt)
	}
	browsertest.Screenshot(t, bobTab, "other-owner")
	if resp := browsertest.Response(t, bobTab, chromedp.Navigate(base+srcs[0])); resp.Status != http.StatusNotFound {
		t.Errorf("alice's thumbnail in bob's browser: %d, want 404", resp.Status)
	}
	t.Logf("claimed %s for alice; her page shows %d verified events with %d thumbnails loaded", device, events, loaded)
}
