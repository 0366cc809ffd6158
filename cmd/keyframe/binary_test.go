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

// TestDeviceBinarySize builds keyframe for linux/arm GOARM=6 as make cross
// and make build do (scripts/build-keyframe.sh) and fails above 8 MiB.
func TestDeviceBinarySize(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("-short: skipping the linux/arm build of the camera's binary (it runs under CI=true)")
	}
	out := filepath.Join(t.TempDir(), "keyframe-linux-armv6")
	cmd := exec.Command("scripts/build-keyframe.sh", out, "size-test")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm", "GOARM=6")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/build-keyframe.sh: %v\n%s", err, b)
	}
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("keyframe for linux/arm GOARM=6: %d bytes (budget %d, %d left)", st.Size(), deviceBudget, deviceBudget-st.Size())
	if st.Size() > deviceBudget {
		t.Errorf("keyframe for linux/arm GOARM=6 is %d bytes, above the camera's budget of %d (8 MiB) by %d", st.Size(), deviceBudget, st.Size()-deviceBudget)
	}
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
		"github.com/chromedp/", "html/template", "golang.org/x/net/http2"}
	for _, d := range deps {
		for _, p := range banned {
			if d == p || strings.HasPrefix(d, p+"/") || (strings.HasSuffix(p, "/") && strings.HasPrefix(d, p)) {
				t.Errorf("the camera's binary links %s", d)
			}
		}
	}
}
