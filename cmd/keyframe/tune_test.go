package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/motion/motiontest"
)

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
	motiontest.WriteSquareFrames(t, filepath.Join(in, "input"), 20) // the data set's layout
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
