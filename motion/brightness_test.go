package motion

import (
	"image"
	"testing"
)

// TestObjectAfterUnsettledStep: a brightness step too small to be global
// (below BrightnessStep) leaves the background that far from every frame
// for dozens of frames, as it learns the new level at BackgroundRate. Only
// the offset matching (the median difference of frame and background) keeps
// the step out of the change mask; an object crossing right after the step
// must be found, box and all, on at least 90 % of its frames, and no frame
// may be judged global.
func TestObjectAfterUnsettledStep(t *testing.T) {
	const size, speed = 20, 4
	c := DefaultConfig()
	for _, step := range []int{15, -15, 12} {
		if step >= c.BrightnessStep || -step >= c.BrightnessStep {
			t.Fatalf("step %+d is a global step under BrightnessStep %d: the test needs one that is not", step, c.BrightnessStep)
		}
		s := newScene(160, 120, 21, 2.5)
		d := newTestDetector(t, c)
		buf := warm(t, d, s, nil)
		frames, found := 0, 0
		// The step and the object's entry are the same frame.
		for x := -size + speed; x < s.w; x += speed {
			obj := image.Rect(x, 50, x+size, 50+size)
			buf = s.frame(buf, step, obj)
			r := d.Step(buf, s.w, s.h)
			if r.Global {
				t.Fatalf("step %+d, object at %v: judged global %+v", step, obj, r)
			}
			vis := obj.Intersect(image.Rect(0, 0, s.w, s.h))
			if vis.Dx() < size/2 {
				continue // a sliver may or may not be enough
			}
			frames++
			if r.Motion && near(r.Box, vis, 2) {
				found++
			} else {
				t.Logf("step %+d, object at %v (visible %v): %+v", step, obj, vis, r)
			}
		}
		if frames < 35 {
			t.Fatalf("step %+d: only %d frames with the object in view; the test is too short", step, frames)
		}
		if found*10 < frames*9 {
			t.Errorf("step %+d: object boxed on %d of %d frames, want at least 90 %%", step, found, frames)
		}
		if g := d.Stats().Globals; g != 0 {
			t.Errorf("step %+d: %d global frames", step, g)
		}
	}
}
