package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const vectors = "../../provenance/testdata/vectors"

// writeClipDir lays out the clip test vector (ok-clip-start, -segment-0,
// -segment-1, -end) as docs/envelope.md §8.2 describes: end.cose, and each
// segment's record with its frames in a directory, or as a bundle.
func writeClipDir(t *testing.T, bundles bool) string {
	t.Helper()
	dir := t.TempDir()
	cp := func(from, to string) {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(vectors, from))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, to)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, to), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cp("ok-clip-end.cose", "end.cose")
	for s, frames := range [][]string{{"0", "1", "2"}, {"3", "4", "5"}} {
		name := "segment-000" + string(rune('0'+s))
		if bundles {
			cp("ok-clip-segment-"+string(rune('0'+s))+".bundle", name+".bundle")
			continue
		}
		cp("ok-clip-segment-"+string(rune('0'+s))+".cose", name+".cose")
		for i, f := range frames {
			cp("clip/frame-"+f+".jpg", filepath.Join(name, "frame-000"+string(rune('0'+i))+".jpg"))
		}
	}
	return dir
}

func runVerify(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := dispatch(append([]string{"verify"}, args...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestVerifyClipDir(t *testing.T) {
	for _, bundles := range []bool{false, true} {
		dir := writeClipDir(t, bundles)
		code, out, errOut := runVerify(t, "-clip", dir, "-key", filepath.Join(vectors, "keys/device-b.pub.pem"))
		if code != 0 || !strings.Contains(out, "ok clip") || !strings.Contains(out, "2 segments, 6 frames, -0.200s to +0.300s from the trigger") {
			t.Fatalf("bundles %v: exit %d, %q %q", bundles, code, out, errOut)
		}
	}
	// Signed by another key than the one given.
	code, out, _ := runVerify(t, "-clip", writeClipDir(t, false), "-key", filepath.Join(vectors, "keys/device-a.pub.pem"))
	if code != 1 || !strings.Contains(out, "FAILED clip") || !strings.Contains(out, "not the expected key") {
		t.Fatalf("another key: exit %d, %q", code, out)
	}
	// An interrupted event: no end record.
	dir := writeClipDir(t, false)
	if err := os.Remove(filepath.Join(dir, "end.cose")); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runVerify(t, "-clip", dir)
	if code != 0 || !strings.Contains(out, "no end record") {
		t.Fatalf("no end record: exit %d, %q", code, out)
	}
}

// TestVerifyClipDirTampering drops, reorders, duplicates and alters one
// frame of a stored clip, and drops a segment: verify names each.
func TestVerifyClipDirTampering(t *testing.T) {
	seg1 := func(dir string) string { return filepath.Join(dir, "segment-0001") }
	for _, c := range []struct {
		name   string
		tamper func(t *testing.T, dir string) error
		want   string
	}{
		{"drop", func(t *testing.T, dir string) error {
			return os.Remove(filepath.Join(seg1(dir), "frame-0001.jpg"))
		}, "segment 1 frame 1: missing"},
		{"reorder", func(t *testing.T, dir string) error {
			a, b := filepath.Join(seg1(dir), "frame-0000.jpg"), filepath.Join(seg1(dir), "frame-0002.jpg")
			if err := os.Rename(a, a+".tmp"); err != nil {
				return err
			}
			if err := os.Rename(b, a); err != nil {
				return err
			}
			return os.Rename(a+".tmp", b)
		}, "segment 1 frame 0: reordered (holds frame 2) [segment-0001.cose]"},
		{"duplicate", func(t *testing.T, dir string) error {
			data, err := os.ReadFile(filepath.Join(seg1(dir), "frame-0001.jpg"))
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(seg1(dir), "frame-0001a.jpg"), data, 0o644)
		}, "segment 1 frame 2: duplicate (a second copy of frame 1)"},
		{"alter", func(t *testing.T, dir string) error {
			p := filepath.Join(dir, "segment-0000", "frame-0002.jpg")
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			data[100] ^= 0x04
			return os.WriteFile(p, data, 0o644)
		}, "segment 0 frame 2: altered"},
		{"drop segment", func(t *testing.T, dir string) error {
			return os.Remove(filepath.Join(dir, "segment-0000.cose"))
		}, "segment 0: missing"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := writeClipDir(t, false)
			if err := c.tamper(t, dir); err != nil {
				t.Fatal(err)
			}
			code, out, errOut := runVerify(t, "-clip", dir)
			if code != 1 || !strings.Contains(out, "FAILED clip "+dir+": "+c.want) {
				t.Fatalf("exit %d, %q %q; want exit 1 and %q", code, out, errOut, c.want)
			}
		})
	}
}

func TestVerifyClipDirUsage(t *testing.T) {
	if code, _, errOut := runVerify(t, "-clip", filepath.Join(t.TempDir(), "nothing")); code != 2 || errOut == "" {
		t.Fatalf("a missing directory: exit %d, %q", code, errOut)
	}
	if code, _, errOut := runVerify(t, "-clip", t.TempDir()); code != 2 || !strings.Contains(errOut, "no end record") {
		t.Fatalf("an empty directory: exit %d, %q", code, errOut)
	}
	if code, _, errOut := runVerify(t, "-key", "x.pem"); code != 2 || !strings.Contains(errOut, "-key goes with -clip") {
		t.Fatalf("-key without -clip: exit %d, %q", code, errOut)
	}
	dir := writeClipDir(t, false)
	bad := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(bad, []byte("not a key"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runVerify(t, "-clip", dir, "-key", bad); code != 2 || !strings.Contains(errOut, "no PEM PUBLIC KEY") {
		t.Fatalf("a bad key file: exit %d, %q", code, errOut)
	}
}
