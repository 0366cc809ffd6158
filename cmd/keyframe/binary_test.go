package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// deviceBudget is the most the camera's binary may weigh, static and
// stripped, for linux/arm GOARM=6 (every Raspberry Pi from the Zero on).
const deviceBudget = 8 << 20

// deviceBudgetWebRTC is the most the camera's binary with the WebRTC live
// view (-tags webrtc, pion/webrtc) may weigh for linux/arm GOARM=6.
const deviceBudgetWebRTC = 12 << 20

// TestDeviceBinarySize builds keyframe for linux/arm GOARM=6 as make cross
// and make build do (scripts/build-keyframe.sh) and fails above 8 MiB, or
// when it links pion (the WebRTC code is only in the tagged build).
func TestDeviceBinarySize(t *testing.T) {
	out := buildDevice(t, "")
	checkSize(t, out, "keyframe for linux/arm GOARM=6", deviceBudget)
	if pion := linked(t, out, "github.com/pion/"); pion != "" {
		t.Errorf("keyframe without -tags webrtc links %s", pion)
	}
}

// TestDeviceBinarySizeWebRTC: with -tags webrtc, at most 12 MiB, and it
// does link pion/webrtc.
func TestDeviceBinarySizeWebRTC(t *testing.T) {
	out := buildDevice(t, "webrtc")
	checkSize(t, out, "keyframe -tags webrtc for linux/arm GOARM=6", deviceBudgetWebRTC)
	if pion := linked(t, out, "github.com/pion/webrtc/v4"); pion == "" {
		t.Errorf("keyframe -tags webrtc does not link pion/webrtc")
	}
}

// buildDevice builds the camera's binary for linux/arm GOARM=6 with tags.
func buildDevice(t *testing.T, tags string) string {
	t.Helper()
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("-short: skipping the linux/arm build of the camera's binary (it runs under CI=true)")
	}
	out := filepath.Join(t.TempDir(), "keyframe-linux-armv6")
	cmd := exec.Command("scripts/build-keyframe.sh", out, "size-test")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm", "GOARM=6", "TAGS="+tags)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/build-keyframe.sh: %v\n%s", err, b)
	}
	return out
}

func checkSize(t *testing.T, out, what string, budget int64) {
	t.Helper()
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d bytes (budget %d, %d left)", what, st.Size(), budget, budget-st.Size())
	if st.Size() > budget {
		t.Errorf("%s is %d bytes, above the camera's budget of %d by %d", what, st.Size(), budget, st.Size()-budget)
	}
}

// linked returns the first module of bin's build information (go version
// -m) that starts with prefix, or "".
func linked(t *testing.T, bin, prefix string) string {
	t.Helper()
	gobin, err := exec.Command("../../scripts/ensure-go.sh").Output()
	if err != nil {
		t.Fatalf("scripts/ensure-go.sh: %v", err)
	}
	b, err := exec.Command(strings.TrimSpace(string(gobin)), "version", "-m", bin).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "dep" && strings.HasPrefix(f[1], prefix) {
			return f[1]
		}
	}
	return ""
}

// TestCameraBinaryImports: the camera's binary links none of the
// receiver's, the harnesses' or the browser tests' code (they are in
// keyframe-receiver).
func TestCameraBinaryImports(t *testing.T) {
	gobin, err := exec.Command("../../scripts/ensure-go.sh").Output()
	if err != nil {
		t.Fatalf("scripts/ensure-go.sh: %v", err)
	}
	cmd := exec.Command(strings.TrimSpace(string(gobin)), "list", "-deps", ".")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm", "GOARM=6", "CGO_ENABLED=0")
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(b))
	if len(deps) < 20 {
		t.Fatalf("go list -deps listed %d packages: %q", len(deps), deps)
	}
	const mod = "github.com/keyframe-cam/keyframe/"
	banned := []string{mod + "receiver", mod + "storm", mod + "motion/eval", mod + "motion/motiontest", mod + "internal/browsertest",
		"github.com/chromedp/", "html/template", "golang.org/x/net/http2", "github.com/pion/"}
	for _, d := range deps {
		for _, p := range banned {
			if d == p || strings.HasPrefix(d, p+"/") || (strings.HasSuffix(p, "/") && strings.HasPrefix(d, p)) {
				t.Errorf("the camera's binary links %s", d)
			}
		}
	}
}
