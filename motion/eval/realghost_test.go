package eval

import (
	"image"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/keyframe-cam/keyframe/motion"
)

// TestRealGhost plays the issue-14 cases on real footage: the data set has
// no moment where an object that became background leaves, so one is made
// from its frames. The empty room of sbi_HumanBody2_zone (frame 40, labelled
// without motion) is the scene, with sensor noise added per frame; the
// person of frame 14 (cut out by that frame's ground-truth mask) stands in
// it without moving. With the default configuration:
//
//   - the standing person is motion until AbsorbFrames takes them in (a
//     real object that stopped is no ghost), and
//   - when they vanish, the place they leave is motion for at most a second
//     (the frame they vanish on, then a ghost), and nothing remains after
//     a second; with ghost detection off it stays motion until absorbed.
func TestRealGhost(t *testing.T) {
	seq := filepath.Join(motionData(t), "sbi_HumanBody2_zone")
	room := readLuma(t, filepath.Join(seq, inputDir, "in000040.png"))
	person := readLuma(t, filepath.Join(seq, inputDir, "in000014.png"))
	mask := readLuma(t, filepath.Join(seq, truthDir, "gt000014.png"))
	w, h := room.Rect.Dx(), room.Rect.Dy()
	fg := 0
	for _, m := range mask.Pix {
		if m == 255 {
			fg++
		}
	}
	if fg < w*h/50 {
		t.Fatalf("frame 14's mask has %d foreground pixels: not the person this test expects", fg)
	}
	for _, ghostFrames := range []int{motion.DefaultConfig().GhostFrames, 0} {
		c := motion.DefaultConfig()
		c.GhostFrames = ghostFrames
		d, err := motion.NewDetector(c)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(14, uint64(ghostFrames)))
		buf := make([]byte, w*h)
		frame := func(withPerson bool) motion.Result {
			for i, v := range room.Pix {
				if withPerson && mask.Pix[i] == 255 {
					v = person.Pix[i]
				}
				buf[i] = byte(min(255, max(0, int(v)+int(rng.NormFloat64()*2))))
			}
			return d.Step(buf, w, h)
		}
		for range 30 { // warm-up on the empty room
			frame(false)
		}
		for i := range c.AbsorbFrames + 30 { // the person stands still
			r := frame(true)
			if i < c.AbsorbFrames-5 && !r.Motion {
				t.Fatalf("ghost_frames %d: %d frames after the person appeared: no motion, want them foreground until absorb_frames (%d)", ghostFrames, i, c.AbsorbFrames)
			}
			if i > c.AbsorbFrames+5 && r.Motion {
				t.Fatalf("ghost_frames %d: %d frames after the person appeared: still motion after absorb_frames", ghostFrames, i)
			}
		}
		motionAfter, last := 0, -1
		for i := range 40 { // gone
			if frame(false).Motion {
				motionAfter++
				last = i
			}
		}
		t.Logf("ghost_frames %d: motion on %d of the 40 frames after the person vanished (last at %d)", ghostFrames, motionAfter, last)
		if ghostFrames > 0 && last >= 10 {
			t.Errorf("ghost_frames %d: motion %d frames after the person vanished, want none after a second (10 frames)", ghostFrames, last)
		}
		if ghostFrames == 0 && motionAfter < 30 {
			t.Errorf("no ghost detection: motion on %d of 40 frames after the person vanished, want most (else the test sees no ghost)", motionAfter)
		}
	}
}

// readLuma decodes a PNG as 8-bit luma (BT.601 weights).
func readLuma(t *testing.T, path string) *image.Gray {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("%v (the data set's layout changed?)", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b := img.Bounds()
	g := image.NewGray(image.Rect(0, 0, b.Dx(), b.Dy()))
	for y := range b.Dy() {
		for x := range b.Dx() {
			r, gg, bb, _ := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
			g.Pix[y*g.Stride+x] = uint8((299*r + 587*gg + 114*bb) / 1000 >> 8)
		}
	}
	return g
}
