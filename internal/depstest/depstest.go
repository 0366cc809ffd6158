// Package depstest lists a package's transitive imports with `go list -deps`
// for the tests that guard the layering (provenance's and receiver's
// TestImports), so each states only its rule.
package depstest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"testing"
)

// Module is the project's module path.
const Module = "github.com/keyframe-cam/keyframe"

// Package is one entry of the listing.
type Package struct {
	ImportPath string
	Standard   bool
	Module     *struct{ Path string }
}

// Own reports whether p is one of the project's own packages.
func (p Package) Own() bool { return !p.Standard && p.Module != nil && p.Module.Path == Module }

// Target is the platform to list for; the zero Target is the host. Build
// constraints can pull in different files on each.
type Target struct{ GOOS, GOARCH, GOARM string }

// List returns the transitive imports of pkg (pkg included) built for
// target with cgo off. It fails t on any listing or package error; without
// the go tool it skips (fails under CI=true).
func List(t testing.TB, pkg string, target Target) []Package {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the go tool is not on PATH; cannot list %s's imports", pkg)
		}
		t.Skipf("the go tool is not on PATH; cannot list %s's imports", pkg)
	}
	cmd := exec.Command(goTool, "list", "-deps", "-json=ImportPath,Standard,Module,Error,DepsErrors", pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if target.GOOS != "" {
		cmd.Env = append(cmd.Env, "GOOS="+target.GOOS, "GOARCH="+target.GOARCH, "GOARM="+target.GOARM)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", pkg, err, stderr.Bytes())
	}
	var list []Package
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			Package
			Error      *struct{ Err string }
			DepsErrors []struct{ Err string }
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list %s: output: %v", pkg, err)
		}
		if p.Error != nil {
			t.Errorf("%s: %s", p.ImportPath, p.Error.Err)
		}
		for _, e := range p.DepsErrors {
			t.Errorf("%s: %s", p.ImportPath, e.Err)
		}
		list = append(list, p.Package)
	}
	return list
}

// Require fails t unless list holds every one of want: the listing must be
// real for a test's checks of it to mean anything.
func Require(t testing.TB, list []Package, want ...string) {
	t.Helper()
	seen := map[string]bool{}
	for _, p := range list {
		seen[p.ImportPath] = true
	}
	for _, w := range want {
		if !seen[w] {
			t.Errorf("go list did not report %s; output not understood", w)
		}
	}
}
