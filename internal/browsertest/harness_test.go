package browsertest

import (
	"fmt"
	"strings"
	"testing"
)

// recordTB records a skip or a fatal failure instead of ending the test.
type recordTB struct {
	testing.TB
	skipped, fatal string
}

func (r *recordTB) Helper()           {}
func (r *recordTB) Skip(args ...any)  { r.skipped = fmt.Sprint(args...) }
func (r *recordTB) Fatal(args ...any) { r.fatal = fmt.Sprint(args...) }

func TestMissingBinarySkipsOutsideCIAndFailsInCI(t *testing.T) {
	r := &recordTB{TB: t}
	if haveBinary(r, "", "") || r.fatal != "" || !strings.Contains(r.skipped, "not installed") {
		t.Errorf("without CI: skipped %q, fatal %q; want a skip", r.skipped, r.fatal)
	}
	r = &recordTB{TB: t}
	if haveBinary(r, "", "true") || r.skipped != "" || !strings.Contains(r.fatal, "CI is set") {
		t.Errorf("with CI: skipped %q, fatal %q; want a failure", r.skipped, r.fatal)
	}
	r = &recordTB{TB: t}
	if !haveBinary(r, DebianBinary, "true") || r.skipped != "" || r.fatal != "" {
		t.Errorf("with a binary: skipped %q, fatal %q", r.skipped, r.fatal)
	}
}

// TestSanitize: a test's name becomes one file name, never a path that
// leaves the artifact directory.
func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"TestX/sub case#01": "TestX_sub_case_01",
		"../../etc/passwd":  ".._.._etc_passwd",
		"..":                "_..",
		"":                  "_",
		"ok-name_1.png":     "ok-name_1.png",
		"héllo":             "h_llo",
	} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestArtifactsDir: the environment variable wins; else a directory under
// the system's temporary directory.
func TestArtifactsDir(t *testing.T) {
	if got := artifactsDir("/x/y"); got != "/x/y" {
		t.Errorf("artifactsDir(/x/y) = %q", got)
	}
	if got := artifactsDir(""); !strings.HasSuffix(got, defaultArtifacts) {
		t.Errorf("artifactsDir() = %q, want …/%s", got, defaultArtifacts)
	}
}
