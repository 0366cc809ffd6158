package provenance_test

import (
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/internal/depstest"
)

// TestImports guards provenance's dependencies (like tailscale's TestDeps for
// tailcfg): clouds import this package, so its transitive imports hold the
// standard library, go-cose and fxamacker/cbor (with its x448/float16) and
// nothing device-side.
func TestImports(t *testing.T) {
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
			list := depstest.List(t, self, depstest.Target{GOOS: target.goos, GOARCH: target.goarch, GOARM: target.goarm})
			for _, p := range list {
				for _, f := range forbidden {
					prefix := depstest.Module + "/" + f
					if p.ImportPath == prefix || strings.HasPrefix(p.ImportPath, prefix+"/") {
						t.Errorf("provenance imports %s", p.ImportPath)
					}
				}
				switch {
				case p.Standard:
				case p.Module == nil:
					t.Errorf("%s belongs to no module", p.ImportPath)
				case p.Module.Path == depstest.Module:
					// The project's own packages: allowed unless forbidden above.
				case !allowedModules[p.Module.Path]:
					t.Errorf("provenance depends on %s (module %s), outside the allowed list", p.ImportPath, p.Module.Path)
				}
			}
			depstest.Require(t, list, self, "github.com/veraison/go-cose", "github.com/fxamacker/cbor/v2", "crypto/ecdsa")
		})
	}
}
