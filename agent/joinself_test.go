package agent

import (
	"context"
	"crypto/rand"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/join"
	"github.com/keyframe-cam/keyframe/receiver"
	"github.com/keyframe-cam/keyframe/recorder"
)

// serveReceiver runs the receiver over dir with HTTPS from its own CA for
// names, on listen, until the returned stop is called; it returns the URL.
func serveReceiver(t *testing.T, dir, listen string, events *lineWatcher, names ...string) (string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- receiver.Serve(ctx, receiver.ServeConfig{Options: receiver.Options{Dir: dir, Events: events, Logger: quietLogger()},
			Listen: listen, TLS: receiver.TLSSelf, TLSNames: names, Ready: func(u string) { ready <- u }})
	}()
	select {
	case u := <-ready:
		return u, func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("receiver: %v", err)
			}
		}
	case err := <-done:
		cancel()
		t.Fatalf("receiver: %v", err)
	}
	return "", nil
}

// TestJoinSelfTLSReceiver: a camera joins a receiver that serves HTTPS with
// its own CA (no PKI: the claim code pins the CA), keeps the CA, and
// uploads verified events with nothing else configured, also after the
// receiver issued itself a new certificate for other names.
func TestJoinSelfTLSReceiver(t *testing.T) {
	dir := t.TempDir()
	rdir := filepath.Join(dir, "receiver")
	lines := &lineWatcher{ch: make(chan struct{}, 1)}
	url, stop := serveReceiver(t, rdir, "127.0.0.1:0", lines, "127.0.0.1")

	cfg := testConfig(dir, 320, 240)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	key, device, _, err := Identity(&cfg, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := recorder.ChainFile(Layout(&cfg).Chain).Load()
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(rdir, receiver.SelfCertDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(caPEM)
	if blk == nil {
		t.Fatal("the receiver's ca.pem holds no certificate")
	}
	cc, err := receiver.IssueClaim(rdir, blk.Bytes, "alice", time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := join.Join(context.Background(), join.Request{URL: url, Code: cc.Code, Key: key, Seq: chain.Next})
	closeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WriteJoined(&cfg, res.UploadURL, res.Cert); err != nil {
		t.Fatal(err)
	}
	if kept, _ := os.ReadFile(Layout(&cfg).ReceiverCA); string(kept) != string(caPEM) {
		t.Errorf("the camera keeps %q, want the receiver's CA", kept)
	}
	// What LoadConfig takes from the joined file (TestJoinedDefaults).
	cfg.UploadURL, cfg.UploadCAFile = res.UploadURL, Layout(&cfg).ReceiverCA

	// The receiver comes back on the same address with a new certificate.
	stop()
	host := strings.TrimSuffix(strings.TrimPrefix(url, "https://"), "/")
	if _, _, err := net.SplitHostPort(host); err != nil {
		t.Fatal(err)
	}
	_, stop = serveReceiver(t, rdir, host, lines, "127.0.0.1", "kf.test")
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, err := New(cfg, Deps{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	for lines.count("kind=start") < 1 {
		select {
		case <-lines.ch:
		case err := <-done:
			t.Fatalf("agent stopped before a verified start: %v", err)
		case <-ctx.Done():
			t.Fatalf("no verified start over HTTPS to the joined receiver; lines %q", lines.lines)
		}
	}
	lines.mu.Lock()
	first := lines.lines[0]
	lines.mu.Unlock()
	if l := first; !strings.Contains(l, "device="+device) {
		t.Errorf("receiver line %q is not from device %s", l, device)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("agent: %v", err)
	}
}
