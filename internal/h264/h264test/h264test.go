// Package h264test makes H.264 streams for tests with ffmpeg's libx264
// (Debian's ffmpeg; scripts/ensure-test-deps.sh installs it): a test
// without ffmpeg skips with a clear message, and fails under CI=true.
package h264test

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// Tool returns the path of ffmpeg or ffprobe (name), or skips the test
// (fails it under CI=true) when it is not installed.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		msg := name + " not installed (Debian: apt-get install ffmpeg; scripts/ensure-test-deps.sh installs it): the H.264 tests need libx264 streams and ffprobe"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// Encode runs ffmpeg on its test source (testsrc2, size w×h at rate frames
// a second) for n frames with libx264 (no B frames, a key frame every gop
// frames) and returns the raw H.264 stream (-f h264). extra are further
// output options (e.g. -pix_fmt yuv422p, -x264-params cqm=jvt).
func Encode(t testing.TB, w, h, rate, n, gop int, extra ...string) []byte {
	t.Helper()
	ff := Tool(t, "ffmpeg")
	args := []string{"-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
		"testsrc2=size=" + strconv.Itoa(w) + "x" + strconv.Itoa(h) + ":rate=" + strconv.Itoa(rate),
		"-frames:v", strconv.Itoa(n), "-c:v", "libx264", "-bf", "0", "-g", strconv.Itoa(gop)}
	args = append(args, extra...)
	args = append(args, "-f", "h264", "-")
	var out, stderr bytes.Buffer
	cmd := exec.Command(ff, args...)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ffmpeg %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out.Bytes()
}

// Probe runs ffprobe -v error on file with args and returns its stdout and
// stderr.
func Probe(t testing.TB, file string, args ...string) (stdout, stderr string) {
	t.Helper()
	fp := Tool(t, "ffprobe")
	var out, errb bytes.Buffer
	cmd := exec.Command(fp, append(append([]string{"-v", "error"}, args...), file)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("ffprobe %s: %v: %s", file, err, errb.String())
	}
	return out.String(), errb.String()
}
