package claimcode_test

import (
	"testing"

	"github.com/keyframe-cam/keyframe/internal/depstest"
)

// TestImports: the code format both sides share imports nothing of the
// module, so neither side pulls in the other through it.
func TestImports(t *testing.T) {
	const self = depstest.Module + "/internal/claimcode"
	for _, p := range depstest.List(t, self, depstest.Target{}) {
		if p.Own() && p.ImportPath != self {
			t.Errorf("claimcode imports %s", p.ImportPath)
		}
	}
}
