package livestream_test

import (
	"testing"

	"github.com/keyframe-cam/keyframe/internal/depstest"
)

// TestImports: the wire format both sides share imports nothing of the
// module, so neither side pulls in the other through it.
func TestImports(t *testing.T) {
	const self = depstest.Module + "/internal/livestream"
	for _, p := range depstest.List(t, self, depstest.Target{}) {
		if p.Own() && p.ImportPath != self {
			t.Errorf("livestream imports %s", p.ImportPath)
		}
	}
}
