package agent

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/receiver"
	"github.com/keyframe-cam/keyframe/recorder"
	"github.com/keyframe-cam/keyframe/recorder/rotation"
)

// TestKeyRotation: a device uploads with its first key; a rotation is
// prepared while it is stopped; on the next start the agent signs with the
// new key, sends the rotate record first, completes the rotation once the
// receiver accepted it, and its new records are stored under the same owner.
func TestKeyRotation(t *testing.T) {
	dir := t.TempDir()
	quiet := quietLogger()
	cfg := testConfig(dir, 320, 240)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	oldKey, oldID, _, err := Identity(&cfg, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := board.PublicKeyPEM(oldKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	rdir := filepath.Join(dir, "receiver")
	pairDevice(t, rdir, pub, oldID)
	srv, lines := openReceiver(t, rdir, quiet)
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	cfg.UploadURL = hs.URL

	run := func(want func() bool, what string) *Agent {
		t.Helper()
		a, err := New(cfg, Deps{Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		for !want() {
			select {
			case <-lines.ch:
			case err := <-done:
				t.Fatalf("agent stopped before %s: %v; lines %q", what, err, lines.lines)
			case <-ctx.Done():
				t.Fatalf("no %s; lines %q", what, lines.lines)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return a
	}
	run(func() bool { return lines.count("kind=end device="+oldID) >= 1 }, "verified records of the first key")

	// keyframe identity rotate, while the agent is stopped.
	next, _, err := board.LoadOrCreateFileKey(Layout(&cfg).NextKey, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p, err := rotation.Prepare(rotation.Request{
		Layout: Layout(&cfg), Old: oldKey, New: next, KeyStore: oldKey.Backend(),
		Boot: "test-boot", Time: provenance.Time{UnixMs: time.Now().UnixMilli(), Clock: provenance.ClockUnsynced},
		Chain: recorder.ChainFile(Layout(&cfg).Chain), Rand: rand.Reader,
	})
	if err != nil {
		t.Fatal(err)
	}
	newID := p.NewDevice
	if newID == oldID {
		t.Fatal("the rotation kept the device ID")
	}

	a := run(func() bool {
		return lines.count("kind=rotate device="+oldID) >= 1 && lines.count("kind=end device="+newID) >= 1
	}, "the rotate record and records of the new key")
	if a.DeviceID() != newID {
		t.Fatalf("agent device %s, want the new %s", a.DeviceID(), newID)
	}
	// Completed: the new key is the key file, the old one retired, no bundle.
	if _, id, _, err := Identity(&cfg, rand.Reader); err != nil || id != newID {
		t.Fatalf("key file now holds %s (%v), want the new %s", id, err, newID)
	}
	if _, err := os.Stat(Layout(&cfg).RetiredKey); err != nil {
		t.Fatalf("old key not kept: %v", err)
	}
	if _, err := os.Stat(Layout(&cfg).Rotation); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("rotation bundle still there: %v", err)
	}
	// The receiver took the new device for the same owner, and its records
	// verify offline.
	rep, err := receiver.CheckStore(rdir)
	if err != nil || !rep.OK() {
		t.Fatalf("CheckStore: %+v, %v", rep, err)
	}
	if _, err := (receiver.Accounts{Dir: rdir}).Add("alice", receiver.RoleOwner); err != nil {
		t.Fatal(err)
	}
	cookie, err := srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, hs.URL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(cookie)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(page), newID) {
		t.Fatalf("alice's page (%d, %v) does not show the new device %s", resp.StatusCode, err, newID)
	}
}
