package receiver_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestImports guards the layering: the receiver is the cloud side and
// imports nothing device-side. Of the project's own packages its transitive
// imports hold provenance (the wire format) and internal/... (the leaves
// both sides share: mqttlink, clock, backoff, netaddr, atomicfile) only.
func TestImports(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("the go tool is not on PATH; cannot list receiver's imports")
		}
		t.Skip("the go tool is not on PATH; cannot list receiver's imports")
	}
	const (
		module = "github.com/keyframe-cam/keyframe"
		self   = module + "/receiver"
	)
	cmd := exec.Command(goTool, "list", "-deps", "-json=ImportPath,Standard,Module,Error,DepsErrors", self)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	type pkg struct {
		ImportPath string
		Standard   bool
		Module     *struct{ Path string }
		Error      *struct{ Err string }
		DepsErrors []struct{ Err string }
	}
	seen := map[string]bool{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		seen[p.ImportPath] = true
		if p.Error != nil {
			t.Errorf("%s: %s", p.ImportPath, p.Error.Err)
		}
		for _, e := range p.DepsErrors {
			t.Errorf("%s: %s", p.ImportPath, e.Err)
		}
		if p.Standard || p.Module == nil || p.Module.Path != module || p.ImportPath == self {
			continue
		}
		rel := strings.TrimPrefix(p.ImportPath, module+"/")
		if rel != "provenance" && !strings.HasPrefix(rel, "internal/") {
			t.Errorf("receiver imports %s: only provenance and internal/... are allowed (nothing device-side)", p.ImportPath)
		}
	}
	// The listing must be real for the checks above to mean anything.
	for _, want := range []string{self, module + "/provenance", module + "/internal/mqttlink", "net/http"} {
		if !seen[want] {
			t.Errorf("go list did not report %s; output not understood", want)
		}
	}
}
