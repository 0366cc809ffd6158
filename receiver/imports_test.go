package receiver_test

import (
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/internal/depstest"
)

// TestImports guards the layering: the receiver is the cloud side and
// imports nothing device-side. Of the project's own packages its transitive
// imports hold provenance (the wire format), e2ee (the owner's key set,
// which the receiver checks) and internal/... (the leaves
// both sides share: mqttlink, clock, backoff, netaddr, atomicfile) only.
func TestImports(t *testing.T) {
	const self = depstest.Module + "/receiver"
	list := depstest.List(t, self, depstest.Target{})
	for _, p := range list {
		if !p.Own() || p.ImportPath == self {
			continue
		}
		rel := strings.TrimPrefix(p.ImportPath, depstest.Module+"/")
		if rel != "provenance" && rel != "e2ee" && !strings.HasPrefix(rel, "internal/") {
			t.Errorf("receiver imports %s: only provenance, e2ee and internal/... are allowed (nothing device-side)", p.ImportPath)
		}
	}
	depstest.Require(t, list, self, depstest.Module+"/provenance", depstest.Module+"/internal/mqttlink", "net/http")
}
