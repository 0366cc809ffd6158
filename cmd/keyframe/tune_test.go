package main

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeTuneFrames writes n small grey PNG frames, a square moving over a
// gradient, into dir.
func writeTuneFrames(t *testing.T, dir string, n int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		img := image.NewGray(image.Rect(0, 0, 64, 48))
		for y := range 48 {
			for x := range 64 {
				img.Pix[y*img.Stride+x] = byte(60 + x + y)
			}
		}
		for y := 18; y < 30 && i >= 10; y++ {
			for x := 4 * (i - 10); x < 4*(i-10)+10 && x < 64; x++ {
				img.Pix[y*img.Stride+x] = 250
			}
		}
		var b bytes.Buffer
		if err := png.Encode(&b, img); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d.png", i)), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func countPNG(t *testing.T, dir string) int {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "[0-9][0-9][0-9][0-9][0-9][0-9].png"))
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

func TestTune(t *testing.T) {
	in := filepath.Join(t.TempDir(), "seq")
	writeTuneFrames(t, filepath.Join(in, "input"), 20) // the data set's layout
	out := filepath.Join(t.TempDir(), "out")
	var stdout, stderr bytes.Buffer
	if code := dispatch([]string{"tune", "-out", out, "-from", "2", "-every", "3", "-sheet", in}, &stdout, &stderr); code != 0 {
		t.Fatalf("tune: code %d, stderr %q", code, stderr.String())
	}
	if n := countPNG(t, out); n != 6 { // frames 2, 5, ..., 17
		t.Errorf("%d images, want 6", n)
	}
	if _, err := os.Stat(filepath.Join(out, "sheet.png")); err != nil {
		t.Error(err)
	}
	if s := stdout.String(); !strings.Contains(s, "wrote 6 images to "+out) || !strings.Contains(s, "20 frames played") {
		t.Errorf("stdout %q", s)
	}

	// The same output again: refused, with the hint; -force and -max.
	stdout.Reset()
	stderr.Reset()
	if code := dispatch([]string{"tune", "-out", out, in}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "-force") {
		t.Errorf("non-empty output: code %d, stderr %q", code, stderr.String())
	}
	stderr.Reset()
	if code := dispatch([]string{"tune", "-out", out, "-force", "-max", "9", in}, &stdout, &stderr); code != 0 || countPNG(t, out) != 6+9-3 {
		t.Errorf("-force -max 9: code %d, %d images, stderr %q", code, countPNG(t, out), stderr.String())
	}
}

func TestTuneErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope")
	out := filepath.Join(dir, "out")
	for _, c := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"tune"}, 2, "give a directory or -device"},
		{[]string{"tune", "-device", "/dev/video0", dir}, 2, "not both"},
		{[]string{"tune", dir, dir}, 2, "one directory"},
		{[]string{"tune", "-every", "0", dir}, 2, "-every"},
		{[]string{"tune", "-from", "5", "-to", "2", dir}, 2, "-from"},
		{[]string{"tune", "-max", "0", dir}, 2, "-max"},
		{[]string{"tune", "-out", out, missing}, 1, missing + " does not exist"},
		{[]string{"tune", "-out", out, "-device", missing}, 1, missing},
	} {
		var stdout, stderr bytes.Buffer
		if code := dispatch(c.args, &stdout, &stderr); code != c.code || !strings.Contains(stderr.String(), c.stderr) {
			t.Errorf("%q: code %d, stderr %q; want %d and %q", c.args, code, stderr.String(), c.code, c.stderr)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a failed run created the output directory")
	}
}
