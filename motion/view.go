package motion

import "image"

// Pixel states in View.State, one per analysed pixel.
const (
	StateStill   uint8 = iota // no change from the background
	StateMasked               // hidden by Config.Mask
	StateFlicker              // changed, but the pixel keeps changing (leaves, water, an on-screen clock): ignored
	StateShadow               // darkened like a shadow: ignored
	StateNoise                // changed, removed by the despeckle filter
	StateSmall                // changed, in a blob smaller than MinArea (or, with zones, in no zone)
	StateMotion               // changed, in a blob that counts as motion
	StateGhost                // changed, in a ghost blob (where an object that had become background left): ignored, soon re-seeded
)

// View is what the detector saw in the last frame, for tuning aids (keyframe
// tune) and tests: a state per analysed pixel and the boxes of the blobs
// that counted as motion. Fill it with Detector.View.
type View struct {
	// Width and Height are the analysed size; Scale is the downscale factor
	// (analysed pixel x covers input columns x*Scale to x*Scale+Scale-1).
	Width, Height, Scale int
	// State holds Width*Height pixel states (StateStill...), row by row.
	State []uint8
	// Blobs are the boxes of the blobs that count as motion, in input
	// pixels.
	Blobs []image.Rectangle
	// Threshold is the global per-pixel threshold, in luma levels.
	Threshold float64
	// Result is the last frame's Result.
	Result Result
}

// View fills v with the last frame's analysis, reusing v's slices. Before
// the first frame, and while warming or after a global change, State is all
// StateStill or StateMasked and Blobs is empty.
func (d *Detector) View(v *View) {
	n := d.sw * d.sh
	v.Width, v.Height, v.Scale = d.sw, d.sh, d.f
	v.Threshold = float64(d.threshold()) / 256
	v.Result = d.last
	v.State = grow8(v.State, n)
	v.Blobs = v.Blobs[:0]
	if n == 0 {
		return
	}
	analysed := !d.last.Warming && !d.last.Global && d.last.Err == nil
	for y := range d.sh {
		for x := range d.sw {
			i := y*d.sw + x
			p := (y+1)*d.pw + x + 1
			s := StateStill
			switch {
			case d.keep[i] == 0:
				s = StateMasked
			case !analysed:
			case d.over[i] >= overShadow:
				s = StateShadow
			case d.over[i] != 0 && d.raw[p] == 0:
				s = StateFlicker
			case d.raw[p] == 0 && d.mask[p] == 0:
			case d.mask[p] == 0:
				s = StateNoise
			case d.blobs[d.find(d.labels[p])].kind == blobGhost:
				s = StateGhost
			case d.counts(d.blobs[d.find(d.labels[p])]):
				s = StateMotion
			default:
				s = StateSmall
			}
			v.State[i] = s
		}
	}
	if !analysed || !d.last.Motion {
		return
	}
	for l := int32(1); l < d.nextLabel; l++ {
		if b := d.blobs[l]; d.parent[l] == l && d.counts(b) {
			r, _ := d.inputBox(b)
			v.Blobs = append(v.Blobs, r)
		}
	}
}

func grow8(b []uint8, n int) []uint8 {
	if cap(b) < n {
		return make([]uint8, n)
	}
	return b[:n]
}
