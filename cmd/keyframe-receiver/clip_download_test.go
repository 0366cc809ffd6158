package main

import (
	"archive/zip"
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/receiver"
)

// TestClipRecordsRoundTrip: the clip test vector uploaded to a receiver
// through its upload route comes back from the event page's records
// download as a zip that, unpacked, `verify -clip` verifies (docs/envelope.md
// §8.2) with the device's key; and a frame edited after unpacking is named.
func TestClipRecordsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	srv, err := receiver.Open(receiver.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	pub, err := os.ReadFile(filepath.Join(vectors, "keys/device-b.pub.pem"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := receiver.Enroll(dir, pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := receiver.Pair(dir, id, "alice"); err != nil {
		t.Fatal(err)
	}
	const event = "0mz4kg3j5l7n9q1s3u5w7y"
	for _, r := range []struct{ file, kind string }{{"ok-clip-start", "start"}, {"ok-clip-segment-0", "segment"}, {"ok-clip-segment-1", "segment"}, {"ok-clip-end", "end"}} {
		body, err := os.ReadFile(filepath.Join(vectors, r.file+".bundle"))
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequest(http.MethodPut, hs.URL+"/v1/events/"+event+"/"+r.kind, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		reply, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("upload %s: %d %s", r.file, resp.StatusCode, reply)
		}
	}
	if _, err := (receiver.Accounts{Dir: dir}).Add("alice", receiver.RoleOwner); err != nil {
		t.Fatal(err)
	}
	cookie, err := srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, hs.URL+"/events/"+id+"/"+event+"/records.zip", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(cookie)
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	zb, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("records.zip: %d %v", resp.StatusCode, err)
	}

	// Unpack as an owner would, and verify.
	out := t.TempDir()
	zr, err := zip.NewReader(bytes.NewReader(zb), int64(len(zb)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(out, filepath.FromSlash(f.Name))
		if !strings.HasPrefix(p, out+string(filepath.Separator)) {
			t.Fatalf("zip entry %q leaves its directory", f.Name)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("records.zip: %d bytes: %s", len(zb), strings.Join(names, " "))
	clipDir := filepath.Join(out, event)
	key := filepath.Join(vectors, "keys/device-b.pub.pem")
	code, stdout, stderr := runVerify(t, "-clip", clipDir, "-key", key)
	if code != 0 || !strings.Contains(stdout, "2 segments, 6 frames, -0.200s to +0.300s from the trigger") {
		t.Fatalf("verify -clip of the downloaded records: exit %d, %q %q", code, stdout, stderr)
	}
	frame := filepath.Join(clipDir, "segment-0000", "frame-0002.jpg")
	data, err := os.ReadFile(frame)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 1
	if err := os.WriteFile(frame, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, stdout, _ := runVerify(t, "-clip", clipDir, "-key", key); code != 1 || !strings.Contains(stdout, "segment 0 frame 2: altered") {
		t.Errorf("verify -clip with a frame edited: exit %d, %q", code, stdout)
	}
}
