package provenance_test

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

// TestImports guards provenance's dependencies (like tailscale's TestDeps for
// tailcfg): clouds import this package, so its transitive imports hold the
// standard library, go-cose and fxamacker/cbor (with its x448/float16) and
// nothing device-side.
func TestImports(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go tool is not on PATH; cannot list provenance's imports")
	}
	const self = "github.com/keyframe-cam/keyframe/provenance"
	forbidden := []string{"capture", "board", "uploader", "agent", "receiver", "motion", "recorder"}
	allowedModules := map[string]bool{
		"github.com/veraison/go-cose":  true,
		"github.com/fxamacker/cbor/v2": true,
		"github.com/x448/float16":      true,
	}

	// The device targets and the host: build constraints could pull in
	// different files on each.
	for _, target := range []struct{ goos, goarch, goarm string }{
		{"", "", ""},
		{"linux", "arm64", ""},
		{"linux", "arm", "6"},
	} {
		name := target.goos + "/" + target.goarch
		if target.goos == "" {
			name = "host"
		}
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(goTool, "list", "-deps", "-json=ImportPath,Standard,Module,Error,DepsErrors", self)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if target.goos != "" {
				cmd.Env = append(cmd.Env, "GOOS="+target.goos, "GOARCH="+target.goarch, "GOARM="+target.goarm)
			}
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
				for _, f := range forbidden {
					prefix := "github.com/keyframe-cam/keyframe/" + f
					if p.ImportPath == prefix || strings.HasPrefix(p.ImportPath, prefix+"/") {
						t.Errorf("provenance imports %s", p.ImportPath)
					}
				}
				switch {
				case p.Standard:
				case p.Module == nil:
					t.Errorf("%s belongs to no module", p.ImportPath)
				case p.Module.Path == "github.com/keyframe-cam/keyframe":
					// The project's own packages: allowed unless forbidden above.
				case !allowedModules[p.Module.Path]:
					t.Errorf("provenance depends on %s (module %s), outside the allowed list", p.ImportPath, p.Module.Path)
				}
			}
			// The listing must be real for the checks above to mean anything.
			for _, want := range []string{self, "github.com/veraison/go-cose", "github.com/fxamacker/cbor/v2", "crypto/ecdsa"} {
				if !seen[want] {
					t.Errorf("go list did not report %s; output not understood", want)
				}
			}
		})
	}
}
