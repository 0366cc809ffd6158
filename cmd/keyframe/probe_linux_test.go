package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestProbeWithoutCamera runs `keyframe probe` on device directories built
// in a temporary directory, as on a machine without a camera: an empty one
// is "no cameras found" (exit 0), a videoN node that is not a V4L2 device or
// has vanished is listed with its error (exit 0: the other nodes are still
// listed), other names are ignored, and a directory that does not exist is
// an error (exit 1).
func TestProbeWithoutCamera(t *testing.T) {
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := dispatch(args, &out, &errb)
		return code, out.String(), errb.String()
	}

	empty := t.TempDir()
	if code, out, errs := run("probe", "-dev", empty); code != 0 || out != "no cameras found under "+empty+"\n" || errs != "" {
		t.Errorf("probe of an empty directory: code %d, stdout %q, stderr %q", code, out, errs)
	}

	dev := t.TempDir()
	for _, name := range []string{"video0", "video", "videox", "vbi0", "media0"} {
		if err := os.WriteFile(filepath.Join(dev, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dev, "video1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dev, "unplugged"), filepath.Join(dev, "video2")); err != nil {
		t.Fatal(err)
	}
	code, out, errs := run("probe", "-dev", dev)
	want := filepath.Join(dev, "video0") + "\n" +
		"  error:  capture: " + filepath.Join(dev, "video0") + ": not a V4L2 device: inappropriate ioctl for device\n" +
		"\n" +
		filepath.Join(dev, "video2") + "\n" +
		"  error:  capture: no such camera: " + filepath.Join(dev, "video2") + ": open: no such file or directory\n"
	if code != 0 || out != want || errs != "" {
		t.Errorf("probe of nodes that are no cameras: code %d, stderr %q, stdout\n%s\nwant\n%s", code, errs, out, want)
	}

	missing := filepath.Join(t.TempDir(), "no-dev")
	if code, out, errs := run("probe", "-dev", missing); code != 1 || out != "" || !strings.Contains(errs, "keyframe probe: ") || !strings.Contains(errs, missing+": no such file or directory") {
		t.Errorf("probe of a missing directory: code %d, stdout %q, stderr %q; want 1 and the path named", code, out, errs)
	}
	if code, _, errs := run("probe", "-dev", dev, "extra"); code != 2 || !strings.Contains(errs, "unexpected arguments") {
		t.Errorf("probe with an argument: code %d, stderr %q", code, errs)
	}
}
