// Package motion finds motion in a stream of luma planes and turns it into
// events.
//
// A [Detector] compares each frame with an adaptive background:
//
//  1. The luma plane is reduced by an integer box average to about
//     [Config.AnalysisWidth] pixels wide, kept in 8.8 fixed point.
//  2. Brightness and contrast are matched: the contrast gain is the spread
//     of the frame's levels over the background's dark and bright quarters
//     (medians, so noise and a passing object hardly move it), the offset
//     the median difference. Whichever of "same light, something in front"
//     and "new light" leaves fewer pixels changed is taken; a contrast
//     change beyond ±25% or a brightness step is global (step 4).
//  3. A pixel has changed when its difference from the matched background
//     exceeds both the global threshold max(NoiseFloor, NoiseK × noise),
//     where noise is the running mean absolute difference of still pixels,
//     and its own threshold FlickerK × its variability: the running mean
//     of its differences while still and when it turns changed, so leaves,
//     water and on-screen clocks raise their own bar within a few frames
//     while an object that stays changed teaches nothing.
//  4. If more than [Config.LightSwitch] of the pixels changed, or step 2
//     said so, the change is global (light switch, IR switch): the
//     background is re-seeded from the frame (and from the next few, while
//     the light settles), Global is reported and Motion is not.
//  5. Shadows are removed: a changed pixel darkened to between
//     [Config.Shadow] and 0.92 of its background, with its neighbours
//     darkened by the same ratio (the texture shows through), and the
//     penumbra next to such pixels.
//  6. The change mask is despeckled by a 3×3 majority filter, and
//     8-connected blobs are labelled (union-find, no recursion). Motion is a
//     blob of at least [Config.MinArea] of the frame (and, with
//     [Config.Zones], with pixels in a zone).
//  7. Blobs are classified: moved (some pixels changed by more than twice
//     the threshold since the previous frame, or near a blob that did), a
//     ghost (with [Config.GhostFrames]: still, and at least half its pixels
//     show again the background they had before an object was absorbed
//     over them; never motion), or still.
//  8. The background learns at [Config.BackgroundRate] where the pixel has
//     not changed; a changed pixel whose blob has not moved for
//     [Config.AbsorbFrames] frames (a parked car), or that has been changed
//     for [Config.HoldFrames] frames in all (a person sitting, moving a
//     little now and then), is taken into the background, and so is a
//     ghost's after GhostFrames frames.
//
// The first frames seed the background (Result.Warming). All buffers are
// sized on the first frame and on a size change, so Step allocates nothing
// in steady state.
//
// A [Lifecycle] turns the per-frame results, with each frame's capture time,
// into events: start, best frame, end. Neither type reads a clock, touches
// files or the network: time arrives with the frame.
package motion

import (
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"math"
	"math/bits"
	"runtime"
)

// ErrBadFrame is wrapped by Result.Err when Step is given a plane it cannot
// analyse (sizes out of range, a buffer shorter than w*h).
var ErrBadFrame = errors.New("bad frame")

// Internal constants of the model.
const (
	// warmFrames frames seed the background; the detector reports Warming
	// during them.
	warmFrames = 8
	// settleFrames after a global change are also used to re-seed the
	// background (the light settles over a few frames: exposure, rolling
	// shutter) and report Global.
	settleFrames = 2
	// noiseShift sets the noise estimate's smoothing: it moves 1/16 of the
	// way to each frame's measurement.
	noiseShift = 4
	// minAnalysisSide is the smallest analysed width and height, and
	// minInputSide the smallest input side.
	minAnalysisSide = 4
	minInputSide    = 8
	// maxInputSide bounds w and h (and so w*h and the labels) on any target;
	// maxPixelStep bounds the bytes from one pixel to the next of a plane.
	maxInputSide = 1 << 14
	maxPixelStep = 4
	// devShift sets how fast a still pixel's variability follows its
	// differences (1/16 per frame), onsetShift how much of the difference
	// a pixel learns when it turns changed (1/8).
	devShift   = 4
	onsetShift = 3
	// A shadow darkens a pixel to at most shadowHi/256 of its background,
	// and its neighbours by the same ratio within shadowTol/256.
	shadowHi  = 235
	shadowTol = 20
	// sampleStep: the brightness and contrast histograms take every
	// sampleStep-th pixel (a median of thousands of samples is as good).
	sampleStep = 3
	// Values of Detector.over.
	overChanged  = 1
	overShadow   = 2
	overPenumbra = 3 // shadow found by the second pass of Detector.shadows
	// penumbraNeighbours: shadow neighbours that make a darkened pixel
	// shadow in the second pass.
	penumbraNeighbours = 3
	// Within gainIgnore of 1 the measured contrast gain is taken as 1 (a
	// ratio num/den); beyond Config.ContrastStep the change is global.
	gainIgnoreNum, gainIgnoreDen = 107, 100
	// minSpreadLevels: a scene whose interquartile range is below this
	// many levels is too flat to measure contrast on.
	minSpreadLevels = 6
	// A blob within 1/nearMarginDiv of the analysed width (at least 2
	// pixels) of a moving blob moves with it; at most maxMovers moving
	// blobs are compared (Detector.nearMotion).
	nearMarginDiv = 40
	maxMovers     = 64
)

// Result is what Step found in one frame.
type Result struct {
	// Motion: a blob of at least MinArea of the frame changed (with
	// Config.Zones, a blob with pixels in a zone).
	Motion bool
	// AreaPPM is the area of the largest qualifying blob, in parts per
	// million of the frame (0 without motion). It is not the total moving
	// area: several small blobs that each fail MinArea do not add up.
	AreaPPM uint32
	// Zones has bit i set when a qualifying blob has pixels in
	// Config.Zones[i] (0 without zones).
	Zones uint32
	// Box bounds all qualifying blobs, in the input frame's pixel
	// coordinates (empty without motion).
	Box image.Rectangle
	// TouchesEdge: Box touches the frame's edge (the object may be cut off).
	TouchesEdge bool
	// Global: a global change (light switch, brightness step, IR switch) was
	// detected and absorbed into the background; Motion is false.
	Global bool
	// Warming: the background is still being seeded; Motion is false.
	Warming bool
	// Err is set (wrapping ErrBadFrame) when the plane could not be
	// analysed; the model is left untouched and the frame is counted in
	// Stats.BadFrames.
	Err error
}

// Stats describes the detector's state, for logs and tuning.
type Stats struct {
	Frames    uint64  // frames analysed (including warm-up)
	BadFrames uint64  // frames rejected with Result.Err
	Globals   uint64  // frames reported as a global change
	Noise     float64 // current noise estimate, in luma levels
	Threshold float64 // current per-pixel threshold, in luma levels
}

// blob is one connected component: its area and inclusive bounding box in
// padded analysis coordinates.
type blob struct {
	area           int32
	x0, y0, x1, y1 int32
	zones          uint32 // Config.Zones the blob has pixels in (bit i: Zones[i])
	// moving counts the pixels that changed by more than twice the
	// threshold since the previous frame.
	moving int32
	// uncovered counts the pixels whose frame level is within the threshold
	// of the background they had before they last absorbed a changed
	// level (Detector.old): the object absorbed there has gone.
	uncovered int32
	kind      uint8 // blobMoved, blobGhost (set for every label of a blob)
}

// Values of blob.kind.
const (
	blobMoved = 1 // some of its pixels moved since the previous frame
	blobGhost = 2 // a ghost: see Detector.classify
)

// Detector finds motion in a stream of luma planes. Make it with
// NewDetector (the zero Detector rejects every frame). It is not safe for
// concurrent use.
type Detector struct {
	cfg Config

	// Geometry, set by resize.
	w, h     int    // input size the buffers are for (0 before the first frame)
	f        int    // box size of the downscale
	sw, sh   int    // analysed size
	pw       int    // padded width sw+2 of the masks and labels
	mul      uint64 // 2^32/(f*f): box sum to 8.8 fixed point
	minPix   int32  // MinArea in analysed pixels
	maxPix   int    // LightSwitch in analysed pixels
	rateQ    int32  // BackgroundRate in 0.16 fixed point
	flickQ   int32  // FlickerK in 8.8 fixed point
	shadowLo int64  // Shadow in 8.8 fixed point (0: no shadow detection)
	stepQ    int32  // BrightnessStep in 8.8 fixed point
	gainLo   int32  // 1/ContrastStep and ContrastStep in 8.8 fixed point
	gainHi   int32
	absorb   uint16 // AbsorbFrames
	hold     uint16 // max(HoldFrames, AbsorbFrames)
	ghostN   uint8  // GhostFrames (0: no ghost detection)

	// Buffers, sized by resize.
	acc    []uint32 // one output row of box sums
	cur    []uint16 // analysed frame, 8.8 fixed point
	bg     []uint16 // background, 8.8 fixed point
	before []uint16 // the previous analysed frame (swapped with cur)
	age    []uint16 // consecutive frames each pixel has been changed
	still  []uint16 // of those, frames since its blob last moved
	ghost  []uint8  // consecutive frames each pixel has been in a ghost blob
	old    []uint16 // the background before the pixel last absorbed a changed level, 8.8 fixed point (noOld: none since the last seeding)
	dev    []uint16 // per-pixel variability: mean absolute difference, 8.8 fixed point
	over   []uint8  // overChanged where the pixel passed the global threshold (before the per-pixel one), overShadow where it was then found to be shadow
	prev   []uint8  // 1 where the pixel was changed in the previous frame
	keep   []uint8  // 0 where Config.Mask hides the pixel, else 1
	zone   []uint32 // per pixel, the Config.Zones it lies in (nil without zones)
	raw    []uint8  // padded change mask
	mask   []uint8  // padded despeckled mask
	colSum []uint8  // scratch of the majority filter
	labels []int32  // padded provisional blob labels
	parent []int32  // union-find over labels
	blobs  []blob   // per provisional label
	hist   [511]int32
	histB  [256]int32 // luma histogram of the background
	histC  [256]int32 // of the frame where the background is in its dark quarter
	histH  [256]int32 // and in its bright quarter

	// Model state.
	warm      int   // warm-up frames seen
	settle    int   // frames still to re-seed after a global change
	noise     int32 // noise estimate, 8.8 fixed point
	pivot     int32 // the background's median level (8.8), measured by gain
	nextLabel int32 // labels used in the last findBlobs
	labelled  bool  // findBlobs ran on this frame (labels and blobs are current)
	last      Result
	stats     Stats
}

// NewDetector returns a detector for c, or an error naming the bad field.
func NewDetector(c Config) (*Detector, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &Detector{
		cfg:      c,
		rateQ:    int32(math.Round(c.BackgroundRate * 65536)),
		flickQ:   int32(math.Round(c.FlickerK * 256)),
		shadowLo: int64(math.Round(c.Shadow * 256)),
		stepQ:    int32(c.BrightnessStep) << 8,
		gainLo:   int32(math.Round(256 / c.ContrastStep)),
		gainHi:   int32(math.Round(256 * c.ContrastStep)),
		absorb:   uint16(c.AbsorbFrames),
		hold:     uint16(max(c.HoldFrames, c.AbsorbFrames)),
		ghostN:   uint8(c.GhostFrames),
	}, nil
}

// Stats returns the detector's counters and current noise estimate.
func (d *Detector) Stats() Stats {
	s := d.stats
	s.Noise = float64(d.noise) / 256
	s.Threshold = float64(d.threshold()) / 256
	return s
}

// Step analyses one luma plane of w×h pixels (stride w). It allocates
// nothing once the buffers have the frame's size; a size change restarts the
// model (and its warm-up).
func (d *Detector) Step(luma []byte, w, h int) Result {
	return d.StepPlane(luma, w, h, w, 1)
}

// StepPlane is Step for a luma plane read in place: pixel (x, y) is
// pix[y*stride+x*step]. Step 2 with the stride of YUYV data analyses a YUYV
// frame without extracting its luma first (capture.Frame.LumaPlane).
func (d *Detector) StepPlane(pix []byte, w, h, stride, step int) Result {
	d.last = d.step(plane{pix, stride, step}, w, h)
	return d.last
}

func (d *Detector) step(p plane, w, h int) Result {
	if err := checkFrame(p, w, h, d.cfg.AnalysisWidth); err != nil {
		d.stats.BadFrames++
		return Result{Err: err}
	}
	if w != d.w || h != d.h {
		d.resize(w, h)
	}
	d.stats.Frames++
	d.cur, d.before = d.before, d.cur
	d.downscale(p)

	if d.warm < warmFrames {
		d.warmUp()
		return Result{Warming: true}
	}
	if d.settle > 0 {
		d.settle--
		d.reseed()
		return Result{Global: true}
	}
	thr := d.threshold()
	gain, off := int32(256), d.offset(256)
	if g := d.gain(); g != 256 {
		// Two explanations of the frame: the background as it was, with
		// something in front of it, or the background under a new
		// contrast. The one that leaves fewer pixels changed wins: a car
		// filling a quarter of the frame also moves the quartiles.
		if offG := d.offset(g); d.count(offG, g, thr) < d.count(off, 256, thr) {
			if g > d.gainHi || g < d.gainLo {
				return d.global()
			}
			gain, off = g, offG
		}
	}
	// The brightness step is the offset at the background's median level
	// (off is the offset at level 0 of gain × background + off).
	step := off - d.pivot + (d.pivot*gain)>>8
	if abs32(step) >= max(2*thr, d.stepQ) {
		return d.global()
	}
	if changed := d.diff(off, gain, thr); changed > d.maxPix {
		return d.global()
	}
	if d.shadowLo > 0 {
		d.shadows(off, gain)
	}
	var res Result
	d.nextLabel = 1
	d.labelled = false
	if kept := d.despeckle(); kept >= int(d.minPix) {
		res = d.findBlobs(thr)
		d.labelled = true
	}
	d.update(off, gain, thr)
	return res
}

func checkFrame(p plane, w, h, aw int) error {
	if aw <= 0 {
		return errors.New("motion: Detector not made by NewDetector")
	}
	if w < minInputSide || h < minInputSide || w > maxInputSide || h > maxInputSide {
		return fmt.Errorf("motion: frame %dx%d, want sides in [%d, %d]: %w", w, h, minInputSide, maxInputSide, ErrBadFrame)
	}
	if p.step < 1 || p.step > maxPixelStep || p.stride < (w-1)*p.step+1 || p.stride > maxInputSide*maxPixelStep*2 {
		return fmt.Errorf("motion: frame %dx%d with stride %d and pixel step %d: %w", w, h, p.stride, p.step, ErrBadFrame)
	}
	if need := (h-1)*p.stride + (w-1)*p.step + 1; len(p.pix) < need {
		return fmt.Errorf("motion: frame %dx%d with %d bytes of luma, want %d: %w", w, h, len(p.pix), need, ErrBadFrame)
	}
	if f := boxSize(w, aw); w/f < minAnalysisSide || h/f < minAnalysisSide {
		return fmt.Errorf("motion: frame %dx%d too small to analyse at 1/%d: %w", w, h, f, ErrBadFrame)
	}
	return nil
}

// boxSize is the downscale factor that brings width w nearest to aw.
func boxSize(w, aw int) int {
	return max(1, (w+aw/2)/aw)
}

// resize sizes the buffers for a w×h input and restarts the model.
func (d *Detector) resize(w, h int) {
	d.w, d.h = w, h
	d.f = boxSize(w, d.cfg.AnalysisWidth)
	d.sw, d.sh = w/d.f, h/d.f
	d.pw = d.sw + 2
	d.mul = uint64(math.Round(float64(uint64(1)<<32) / float64(d.f*d.f)))
	n := d.sw * d.sh
	d.minPix = int32(max(1, math.Ceil(d.cfg.MinArea*float64(n))))
	d.maxPix = int(d.cfg.LightSwitch * float64(n))

	padded := d.pw * (d.sh + 2)
	// In a raster scan with 8-connectivity, pixels that open a new label
	// are never neighbours, so there are at most ceil(sw/2)*ceil(sh/2).
	maxLabels := (d.sw+1)/2*((d.sh+1)/2) + 1
	d.acc = make([]uint32, d.sw)
	d.cur = make([]uint16, n)
	d.before = make([]uint16, n)
	d.bg = make([]uint16, n)
	d.age = make([]uint16, n)
	d.still = make([]uint16, n)
	d.ghost = make([]uint8, n)
	d.old = make([]uint16, n)
	fill16(d.old, noOld)
	d.dev = make([]uint16, n)
	d.over = make([]uint8, n)
	d.prev = make([]uint8, n)
	d.keep = make([]uint8, n)
	rasterMask(d.keep, d.sw, d.sh, d.cfg.Mask)
	d.zone = nil
	if len(d.cfg.Zones) > 0 {
		d.zone = make([]uint32, n)
		rasterZones(d.zone, d.sw, d.sh, d.cfg.Zones)
	}
	d.raw = make([]uint8, padded)
	d.mask = make([]uint8, padded)
	d.colSum = make([]uint8, d.pw)
	d.labels = make([]int32, padded)
	d.parent = make([]int32, maxLabels)
	d.blobs = make([]blob, maxLabels)
	d.warm, d.settle, d.noise = 0, 0, 0
}

// plane is a luma plane: pixel (x, y) is pix[y*stride+x*step] (step 2 is
// the Y of YUYV data, read in place).
type plane struct {
	pix          []byte
	stride, step int
}

// downscale box-averages the input into d.cur (8.8 fixed point). Columns
// and rows beyond sw*f and sh*f are left out.
func (d *Detector) downscale(p plane) {
	if wordLoads && (d.f == 2 || d.f == 4) && (p.step == 1 || p.step == 2) {
		d.downscaleWords(p)
		return
	}
	d.downscaleBytes(p, 0)
}

// downscaleBytes is downscale one byte at a time, from analysed column x0
// on.
func (d *Detector) downscaleBytes(p plane, x0 int) {
	f, sw, step := d.f, d.sw, p.step
	acc := d.acc[x0:sw]
	span := (sw*f-1)*step + 1
	for oy := range d.sh {
		clear(acc)
		for k := range f {
			row := p.pix[(oy*f+k)*p.stride:][:span]
			switch {
			case step == 1 && f == 1:
				for x := range acc {
					acc[x] += uint32(row[x0+x])
				}
			case step == 1 && f == 2:
				for x := range acc {
					q := row[2*(x0+x) : 2*(x0+x)+2 : 2*(x0+x)+2]
					acc[x] += uint32(q[0]) + uint32(q[1])
				}
			case step == 1 && f == 4:
				for x := range acc {
					q := row[4*(x0+x) : 4*(x0+x)+4 : 4*(x0+x)+4]
					acc[x] += uint32(q[0]) + uint32(q[1]) + uint32(q[2]) + uint32(q[3])
				}
			default:
				for x := range acc {
					var s uint32
					for j := range f {
						s += uint32(row[((x0+x)*f+j)*step])
					}
					acc[x] += s
				}
			}
		}
		out := d.cur[oy*sw+x0:][:len(acc)]
		for x, a := range acc {
			out[x] = uint16((uint64(a)*d.mul + 1<<23) >> 24)
		}
	}
}

// wordLoads picks downscaleWords for box sizes 2 and 4 where
// binary.LittleEndian.Uint64 compiles to one load and 64-bit arithmetic is
// native; 32-bit ARM splits wide loads into bytes, so it keeps the byte
// loops.
const wordLoads = runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64"

// downscaleWords is downscale for f 2 and 4 and pixel steps 1 and 2: eight
// input bytes of each of the f rows at a time are added into four 16-bit
// lanes (pairwise for step 1; the even bytes, YUYV's Y, for step 2), at
// most 4 rows × 2 × 255 per lane, so lanes never carry. The columns the
// whole words do not cover are left to downscaleBytes.
func (d *Detector) downscaleWords(p plane) {
	const (
		even8  = 0x00ff00ff00ff00ff
		even16 = 0x0000ffff0000ffff
	)
	f, sw, stride := d.f, d.sw, p.stride
	perWord := 8 / (f * p.step) // analysed pixels per 8-byte word
	words := min(((sw*f-1)*p.step+1)/8, sw/perWord)
	n := words * 8
	for oy := range d.sh {
		out := d.cur[oy*sw:][: words*perWord : words*perWord]
		base := oy * f * stride
		r0 := p.pix[base:][:n:n]
		r1 := p.pix[base+stride:][:n:n]
		switch {
		case f == 2 && p.step == 1: // a lane is one 2×2 sum
			for j := 0; j+8 <= len(r0) && j+8 <= len(r1) && 4*(j/8)+4 <= len(out); j += 8 {
				v0 := binary.LittleEndian.Uint64(r0[j : j+8])
				v1 := binary.LittleEndian.Uint64(r1[j : j+8])
				t := v0&even8 + (v0>>8)&even8 + v1&even8 + (v1>>8)&even8
				o := out[4*(j/8) : 4*(j/8)+4]
				o[0] = uint16(t&0xffff) << 6 // ×256/4
				o[1] = uint16(t>>16&0xffff) << 6
				o[2] = uint16(t>>32&0xffff) << 6
				o[3] = uint16(t>>48) << 6
			}
		case f == 2: // step 2: lanes hold Y0..Y3, pairs of lanes are one 2×2 sum
			for j := 0; j+8 <= len(r0) && j+8 <= len(r1) && 2*(j/8)+2 <= len(out); j += 8 {
				t := binary.LittleEndian.Uint64(r0[j:j+8])&even8 + binary.LittleEndian.Uint64(r1[j:j+8])&even8
				u := t + t>>16
				o := out[2*(j/8) : 2*(j/8)+2]
				o[0] = uint16(u&0xffff) << 6
				o[1] = uint16(u>>32&0xffff) << 6
			}
		case p.step == 1: // f 4: pairs of lanes are one 4×4 sum
			r2 := p.pix[base+2*stride:][:n:n]
			r3 := p.pix[base+3*stride:][:n:n]
			for j := 0; j+8 <= len(r0) && j+8 <= len(r1) && j+8 <= len(r2) && j+8 <= len(r3) && 2*(j/8)+2 <= len(out); j += 8 {
				v0 := binary.LittleEndian.Uint64(r0[j : j+8])
				v1 := binary.LittleEndian.Uint64(r1[j : j+8])
				v2 := binary.LittleEndian.Uint64(r2[j : j+8])
				v3 := binary.LittleEndian.Uint64(r3[j : j+8])
				t := v0&even8 + (v0>>8)&even8 + v1&even8 + (v1>>8)&even8 +
					v2&even8 + (v2>>8)&even8 + v3&even8 + (v3>>8)&even8
				u := t&even16 + (t>>16)&even16
				o := out[2*(j/8) : 2*(j/8)+2]
				o[0] = uint16(u&0xffffffff) << 4 // ×256/16
				o[1] = uint16(u>>32) << 4
			}
		default: // f 4, step 2: the four lanes are one 4×4 sum
			r2 := p.pix[base+2*stride:][:n:n]
			r3 := p.pix[base+3*stride:][:n:n]
			for j := range out {
				k := 8 * j
				if k+8 > len(r0) || k+8 > len(r1) || k+8 > len(r2) || k+8 > len(r3) {
					break
				}
				t := binary.LittleEndian.Uint64(r0[k:k+8])&even8 + binary.LittleEndian.Uint64(r1[k:k+8])&even8 +
					binary.LittleEndian.Uint64(r2[k:k+8])&even8 + binary.LittleEndian.Uint64(r3[k:k+8])&even8
				u := t + t>>16
				out[j] = uint16(u&0xffff+u>>32&0xffff) << 4
			}
		}
	}
	if x0 := words * perWord; x0 < sw {
		d.downscaleBytes(p, x0)
	}
}

// warmUp seeds the background with the running mean of the first frames
// and the noise estimate with their mean absolute difference from it.
func (d *Detector) warmUp() {
	if d.warm == 0 {
		copy(d.bg, d.cur)
		clear(d.age)
		clear(d.still)
		clear(d.ghost)
		fill16(d.old, noOld)
		clear(d.dev)
		clear(d.prev)
	} else {
		clear(d.hist[:])
		rate := int32(65536 / (d.warm + 1))
		for i, c := range d.cur {
			r := int32(c) - int32(d.bg[i])
			a := abs32(r)
			d.hist[min(a>>8, 510)]++
			d.bg[i] = uint16(int32(d.bg[i]) + (r*rate+1<<15)>>16)
			// The variability starts as the mean absolute difference of
			// the warm-up frames from their running mean.
			d.dev[i] = uint16(int32(d.dev[i]) + ((a-int32(d.dev[i]))*(65536/int32(d.warm))+1<<15)>>16)
		}
		// The noise is the median absolute difference scaled to a mean
		// (0.8σ/0.674σ for Gaussian noise): things that move during
		// warm-up must not pass for noise.
		d.noise = (median(&d.hist, int32(len(d.cur)))*256 + 128) * 119 / 100
	}
	d.warm++
}

// threshold is the per-pixel change threshold in 8.8 fixed point.
func (d *Detector) threshold() int32 {
	return max(int32(d.cfg.NoiseFloor)<<8, int32(d.cfg.NoiseK*float64(d.noise)))
}

// gain estimates the frame's contrast relative to the background, in 8.8
// fixed point: the background's pixels are split at its quartiles, and the
// gain is the distance between the median frame levels of the dark and the
// bright quarter over the distance between their median background levels.
// Sensor noise does not bias a median, and a moving object must cover half
// of a quarter to move one. A gain within gainIgnore of 1 is taken as 1 (the
// medians are whole levels: a small difference is as likely rounding).
func (d *Detector) gain() int32 {
	clear(d.histB[:])
	cur, bg := d.cur, d.bg[:len(d.cur)]
	for i := 0; i < len(bg); i += sampleStep {
		d.histB[(bg[i]+128)>>8&255]++
	}
	n := int32((len(bg) + sampleStep - 1) / sampleStep)
	lo, hi := quantile(&d.histB, n/4), quantile(&d.histB, n-1-n/4)
	d.pivot = quantile(&d.histB, n/2) << 8
	sb := quantile(&d.histB, n-1-n/8) - quantile(&d.histB, n/8)
	if sb < minSpreadLevels || hi <= lo {
		return 256 // a flat scene says nothing about contrast
	}
	clear(d.histC[:])
	clear(d.histH[:])
	var nLo, nHi int32
	for i := 0; i < len(bg); i += sampleStep {
		switch l := int32(bg[i]+128) >> 8; {
		case l <= lo:
			d.histC[(cur[i]+128)>>8&255]++
			nLo++
		case l >= hi:
			d.histH[(cur[i]+128)>>8&255]++
			nHi++
		}
	}
	sc := quantile(&d.histH, nHi/2) - quantile(&d.histC, nLo/2)
	g := int32(max(sc, 0) * 256 / sb)
	if g*gainIgnoreDen <= 256*gainIgnoreNum && g*gainIgnoreNum >= 256*gainIgnoreDen {
		return 256
	}
	return g
}

// count returns the number of unmasked pixels, of every sampleStep-th,
// whose difference from gain × background + off exceeds thr (to compare two
// explanations of a frame, a sample is as good as all).
func (d *Detector) count(off, gain, thr int32) int {
	n := 0
	cur, bg, keep := d.cur, d.bg[:len(d.cur)], d.keep[:len(d.cur)]
	for i := 0; i < len(cur); i += sampleStep {
		r := abs32(int32(cur[i]) - (int32(bg[i])*gain)>>8 - off)
		n += int(uint32(thr-r)>>31) & int(keep[i])
	}
	return n
}

// median returns the median bin of a histogram of n counts.
func median(h *[511]int32, n int32) int32 {
	var c int32
	for i, v := range h {
		if c += v; c > n/2 {
			return int32(i)
		}
	}
	return int32(len(h) - 1)
}

// quantile returns the histogram bin below which fewer than k counts lie.
func quantile(h *[256]int32, k int32) int32 {
	var n int32
	for i, c := range h {
		if n += c; n > k {
			return int32(i)
		}
	}
	return 255
}

// offset is the median of frame minus gain × background, in whole luma
// levels, returned in 8.8 fixed point.
func (d *Detector) offset(gain int32) int32 {
	clear(d.hist[:])
	cur, bg := d.cur, d.bg[:len(d.cur)]
	for i := 0; i < len(cur); i += sampleStep {
		l := (int32(cur[i]) - (int32(bg[i])*gain)>>8 + 128) >> 8 // -255..255 (clamped below)
		d.hist[min(max(l, -255), 255)+255]++
	}
	half := int32((len(cur) + sampleStep - 1) / sampleStep / 2)
	var n int32
	for i, c := range d.hist {
		n += c
		if n > half {
			return int32(i-255) << 8
		}
	}
	return 0 // not reached: the histogram holds every pixel
}

// global re-seeds the background after a global change.
func (d *Detector) global() Result {
	d.reseed()
	d.settle = settleFrames
	return Result{Global: true}
}

func (d *Detector) reseed() {
	copy(d.bg, d.cur)
	clear(d.age)
	clear(d.still)
	clear(d.ghost)
	fill16(d.old, noOld)
	clear(d.prev)
	d.stats.Globals++
}

// diff fills d.over (pixels past the global threshold thr) and the padded
// change mask d.raw (also past their own variability threshold), comparing
// the frame with gain × background + off, and returns the number of changed
// pixels.
func (d *Detector) diff(off, gain, thr int32) int {
	changed, sw := 0, d.sw
	k := d.flickQ
	for y := range d.sh {
		cur := d.cur[y*sw:][:sw]
		bg := d.bg[y*sw:][:sw]
		dev := d.dev[y*sw:][:sw]
		over := d.over[y*sw:][:sw]
		raw := d.raw[(y+1)*d.pw+1:][:sw]
		keep := d.keep[y*sw:][:sw]
		if gain == 256 {
			// The usual case: no contrast change, no multiply.
			for x, c := range cur {
				r := abs32(int32(c) - int32(bg[x]) - off)
				o := uint8(uint32(thr-r)>>31) & keep[x] // 1 when r > thr and not masked
				t := max(thr, (int32(dev[x])*k)>>8)
				m := uint8(uint32(t-r)>>31) & o
				over[x] = o
				raw[x] = m
				changed += int(o)
			}
			continue
		}
		for x, c := range cur {
			r := abs32(int32(c) - (int32(bg[x])*gain)>>8 - off)
			o := uint8(uint32(thr-r)>>31) & keep[x]
			t := max(thr, (int32(dev[x])*k)>>8)
			m := uint8(uint32(t-r)>>31) & o
			over[x] = o
			raw[x] = m
			changed += int(o)
		}
	}
	return changed
}

// shadows clears the changed pixels of d.raw that are shadow: darkened to
// between Shadow and shadowHi of their expected level, with every
// neighbour darkened by the same ratio (a shadow keeps the texture under it;
// an object brings its own), and marks them overShadow in d.over; then the
// changed pixels darkened within the same range next to at least
// penumbraNeighbours of those (the penumbra), marked overPenumbra.
func (d *Detector) shadows(off, gain int32) {
	sw, sh, pw := d.sw, d.sh, d.pw
	lo := d.shadowLo
	exp := func(i int) int64 { return max(1, int64(int32(d.bg[i])*gain>>8+off)) }
	for y := range sh {
		raw := d.raw[(y+1)*pw+1:][:sw]
		for x, m := range raw {
			if m == 0 {
				continue
			}
			i := y*sw + x
			c, e := int64(d.cur[i]), exp(i)
			// c/e in [Shadow, shadowHi/256]
			if c*256 < lo*e || c*256 > shadowHi*e {
				continue
			}
			shadow := true
		scan:
			for ny := max(0, y-1); ny <= min(sh-1, y+1); ny++ {
				for nx := max(0, x-1); nx <= min(sw-1, x+1); nx++ {
					j := ny*sw + nx
					cn, en := int64(d.cur[j]), exp(j)
					// |cn/en - c/e| <= shadowTol/256
					if diff := cn*e - c*en; diff*256 > shadowTol*en*e || -diff*256 > shadowTol*en*e {
						shadow = false
						break scan
					}
				}
			}
			if shadow {
				raw[x] = 0
				d.over[i] = overShadow
			}
		}
	}
	for y := range sh {
		raw := d.raw[(y+1)*pw+1:][:sw]
		for x, m := range raw {
			if m == 0 {
				continue
			}
			i := y*sw + x
			if c, e := int64(d.cur[i]), exp(i); c*256 < lo*e || c >= e {
				continue
			}
			n := 0
			for ny := max(0, y-1); ny <= min(sh-1, y+1); ny++ {
				for _, o := range d.over[ny*sw+max(0, x-1) : ny*sw+min(sw-1, x+1)+1] {
					if o == overShadow {
						n++
					}
				}
			}
			if n >= penumbraNeighbours {
				raw[x] = 0
				d.over[i] = overPenumbra
			}
		}
	}
}

// despeckle sets d.mask to the 3×3 majority (at least 5 of 9) of d.raw, so
// isolated pixels and thin noise vanish and pinholes close. It returns the
// number of pixels set.
func (d *Detector) despeckle() int {
	pw, sw := d.pw, d.sw
	kept := 0
	cs := d.colSum[:pw]
	for y := 1; y <= d.sh; y++ {
		up := d.raw[(y-1)*pw:][:pw]
		mid := d.raw[y*pw:][:pw]
		dn := d.raw[(y+1)*pw:][:pw]
		for x := range cs {
			cs[x] = up[x] + mid[x] + dn[x]
		}
		out := d.mask[y*pw:][:pw]
		x := 1
		if wordLoads {
			// Eight pixels at a time: column sums are at most 3 and
			// window sums at most 9 per byte, so bytes never carry, and
			// s+123 has its top bit set exactly when s >= 5.
			const bias, top = 0x7b7b7b7b7b7b7b7b, 0x8080808080808080
			for ; x+8 <= sw+1; x += 8 {
				s := binary.LittleEndian.Uint64(cs[x-1:]) + binary.LittleEndian.Uint64(cs[x:]) + binary.LittleEndian.Uint64(cs[x+1:])
				m := (s + bias) & top >> 7
				binary.LittleEndian.PutUint64(out[x:], m)
				kept += bits.OnesCount64(m)
			}
		}
		for ; x <= sw; x++ {
			m := uint8(0)
			if cs[x-1]+cs[x]+cs[x+1] >= 5 {
				m = 1
			}
			out[x] = m
			kept += int(m)
		}
	}
	return kept
}

// findBlobs labels the 8-connected blobs of d.mask, classifies them
// (Detector.classify) and reports those of at least MinArea that are not
// ghosts; thr is the global threshold.
func (d *Detector) findBlobs(thr int32) Result {
	pw, sw := d.pw, d.sw
	move := 2 * thr
	next := int32(1)
	for y := 1; y <= d.sh; y++ {
		for x := 1; x <= d.sw; x++ {
			p := y*pw + x
			if d.mask[p] == 0 {
				d.labels[p] = 0
				continue
			}
			// NW and NE touch N, and W touches N: when N is labelled,
			// they are already joined to it.
			l := d.labels[p-pw]
			if l == 0 {
				a := d.labels[p-1]
				if a == 0 {
					a = d.labels[p-pw-1]
				}
				b := d.labels[p-pw+1]
				switch {
				case a != 0 && b != 0:
					l = d.union(a, b)
				case a != 0:
					l = a
				case b != 0:
					l = b
				default:
					l = next
					next++
					d.parent[l] = l
					d.blobs[l] = blob{x0: int32(x), y0: int32(y), x1: int32(x), y1: int32(y)}
				}
			}
			d.labels[p] = l
			b := &d.blobs[l]
			b.area++
			i := (y-1)*sw + x - 1
			if d.zone != nil {
				b.zones |= d.zone[i]
			}
			if abs32(int32(d.cur[i])-int32(d.before[i])) > move {
				b.moving++
			}
			if o := d.old[i]; o != noOld && abs32(int32(d.cur[i])-int32(o)) <= thr {
				b.uncovered++
			}
			// y0 needs no update: a label's first pixel is its topmost.
			b.x0, b.x1 = min(b.x0, int32(x)), max(b.x1, int32(x))
			b.y1 = max(b.y1, int32(y))
		}
	}

	d.nextLabel = next
	// Roots are the smallest label of their set, so merging in label order
	// always adds into a root.
	var res Result
	var box blob
	for l := int32(1); l < next; l++ {
		if r := d.find(l); r != l {
			b, into := &d.blobs[l], &d.blobs[r]
			into.area += b.area
			into.x0, into.y0 = min(into.x0, b.x0), min(into.y0, b.y0)
			into.x1, into.y1 = max(into.x1, b.x1), max(into.y1, b.y1)
			into.zones |= b.zones
			into.moving += b.moving
			into.uncovered += b.uncovered
		}
	}
	for l := int32(1); l < next; l++ {
		if d.parent[l] == l {
			d.blobs[l].kind = d.classify(&d.blobs[l])
		}
	}
	d.nearMotion(next)
	for l := int32(1); l < next; l++ {
		// Every label carries its blob's kind, for Detector.update.
		if r := d.find(l); r != l {
			d.blobs[l].kind = d.blobs[r].kind
		}
	}
	for l := int32(1); l < next; l++ {
		b := d.blobs[l]
		if d.parent[l] != l || !d.counts(b) {
			continue
		}
		res.Zones |= b.zones
		if !res.Motion {
			box = b
		} else {
			box.x0, box.y0 = min(box.x0, b.x0), min(box.y0, b.y0)
			box.x1, box.y1 = max(box.x1, b.x1), max(box.y1, b.y1)
		}
		res.Motion = true
		res.AreaPPM = max(res.AreaPPM, uint32(int64(b.area)*1_000_000/int64(d.sw*d.sh)))
	}
	if res.Motion {
		res.Box, res.TouchesEdge = d.inputBox(box)
	}
	return res
}

// classify returns the kind of a root blob:
//
//   - blobMoved when at least max(2, 1 %) of its pixels changed by more
//     than twice the threshold thr since the previous frame: something in
//     it moves (a walking person, or a sitting one moving a hand);
//   - blobGhost when it did not move and at least half its pixels are
//     uncovered: the frame shows again, within thr, the level the
//     background had before an object was absorbed there. Ghosts are left
//     where an object that had become background (a parked car, a box put
//     down, a person who sat still) went away: the background still holds
//     the object, the frame shows what was there before it. A still
//     object in front of the background is not uncovered (the frame shows
//     the object, not what it hides), nor is anything over a background
//     that was learnt without absorbing (no old level is known);
//   - 0 otherwise (a still object).
func (d *Detector) classify(b *blob) uint8 {
	if b.moving >= max(2, b.area/100) {
		return blobMoved
	}
	if d.ghostN > 0 && 2*b.uncovered >= b.area {
		return blobGhost
	}
	return 0
}

// nearMotion makes a still or ghost root blob moved when its box, grown by
// nearMargin, overlaps the grown box of a moved blob: one object often
// falls apart into several blobs (a person whose legs stand still while the
// arms move, a car and the shadow of its roof), and the parts that do not
// move belong to one that does. Only the first maxMovers moved blobs are
// compared, so a frame of many blobs costs a bounded time.
func (d *Detector) nearMotion(next int32) {
	m := int32(max(2, d.sw/nearMarginDiv))
	var movers [maxMovers]blob
	n := 0
	for l := int32(1); l < next && n < maxMovers; l++ {
		if b := d.blobs[l]; d.parent[l] == l && b.kind == blobMoved {
			movers[n] = b
			n++
		}
	}
	if n == 0 {
		return
	}
	for l := int32(1); l < next; l++ {
		b := &d.blobs[l]
		if d.parent[l] != l || b.kind == blobMoved {
			continue
		}
		for _, o := range movers[:n] {
			if b.x0-m <= o.x1+m && o.x0-m <= b.x1+m && b.y0-m <= o.y1+m && o.y0-m <= b.y1+m {
				b.kind = blobMoved
				break
			}
		}
	}
}

// counts reports whether a root blob is motion: at least MinArea, not a
// ghost, and in a zone when there are zones.
func (d *Detector) counts(b blob) bool {
	return b.area >= d.minPix && b.kind != blobGhost && (d.zone == nil || b.zones != 0)
}

// inputBox scales an inclusive padded analysis box to input pixels; a box
// on the analysed edge extends to the input's edge (the columns and rows the
// downscale left out).
func (d *Detector) inputBox(b blob) (image.Rectangle, bool) {
	r := image.Rect(int(b.x0-1)*d.f, int(b.y0-1)*d.f, int(b.x1)*d.f, int(b.y1)*d.f)
	if int(b.x1) == d.sw {
		r.Max.X = d.w
	}
	if int(b.y1) == d.sh {
		r.Max.Y = d.h
	}
	edge := r.Min.X == 0 || r.Min.Y == 0 || r.Max.X == d.w || r.Max.Y == d.h
	return r, edge
}

func (d *Detector) find(x int32) int32 {
	for d.parent[x] != x {
		d.parent[x] = d.parent[d.parent[x]]
		x = d.parent[x]
	}
	return x
}

// union joins the sets of a and b and returns the root, the smaller label.
func (d *Detector) union(a, b int32) int32 {
	ra, rb := d.find(a), d.find(b)
	if ra < rb {
		d.parent[rb] = ra
		return ra
	}
	d.parent[ra] = rb
	return rb
}

// update teaches the background the frame: still pixels learn at
// BackgroundRate, changed ones are held out until they have been changed
// for AbsorbFrames frames since their blob last moved, or for
// max(HoldFrames, AbsorbFrames) frames in all; pixels of a ghost blob are
// re-seeded from the frame after GhostFrames frames (with GhostFrames, an
// absorbed pixel keeps the level it replaces in d.old, which is how a ghost
// is recognised). Each pixel's variability learns from still frames
// and from the frames where it turns changed (flicker turns on and off;
// an object that stays changed teaches nothing). The noise estimate moves
// toward the mean absolute difference of the pixels outside the despeckled
// mask (noise speckles count, blobs do not).
func (d *Detector) update(off, gain, thr int32) {
	rate, absorb, hold, ghostN, sw := d.rateQ, d.absorb, d.hold, d.ghostN, d.sw
	track := ghostN > 0 // keep the old levels ghosts are recognised by
	labelled := d.labelled
	var sum int64
	var cnt int
	for y := range d.sh {
		cur := d.cur[y*sw:][:sw]
		bg := d.bg[y*sw:][:sw]
		age := d.age[y*sw:][:sw]
		calm := d.still[y*sw:][:sw]
		ghost := d.ghost[y*sw:][:sw]
		old := d.old[y*sw:][:sw]
		dev := d.dev[y*sw:][:sw]
		prev := d.prev[y*sw:][:sw]
		over := d.over[y*sw:][:sw]
		raw := d.raw[(y+1)*d.pw+1:][:sw]
		mask := d.mask[(y+1)*d.pw+1:][:sw]
		labels := d.labels[(y+1)*d.pw+1:][:sw]
		for x, c := range cur {
			b := int32(bg[x])
			if gain != 256 {
				b = b * gain >> 8
			}
			e := abs32(int32(c) - b - off)
			still := int32(1 - mask[x]) // mask is 0 or 1
			sum += int64(e * still)
			cnt += int(still)
			dv := int32(dev[x])
			if over[x] == 0 {
				// Most pixels: unchanged (raw is a subset of over).
				prev[x], age[x], calm[x], ghost[x] = 0, 0, 0, 0
				dev[x] = uint16(dv + (e-dv)>>devShift)
				bg[x] = uint16(int32(bg[x]) + ((int32(c)-int32(bg[x]))*rate+1<<15)>>16)
				continue
			}
			// uncovered: the pixel shows again the level it had before
			// an object was absorbed over it.
			uncovered := track && old[x] != noOld && abs32(int32(c)-int32(old[x])) <= thr
			if over[x] >= overShadow {
				// Held out like a changed pixel (a lasting shadow is
				// absorbed), teaching no variability. An uncovered one is
				// part of a ghost whose darker half passes for a shadow.
				prev[x], calm[x] = 0, 0
				if !uncovered {
					ghost[x] = 0
				} else if ghost[x]++; ghost[x] >= ghostN {
					bg[x], age[x], ghost[x], old[x] = c, 0, 0, noOld
					continue
				}
				if age[x]++; age[x] >= absorb {
					if track {
						old[x] = bg[x]
					}
					bg[x], age[x] = c, 0
				}
				continue
			}
			if raw[x] != 0 {
				if prev[x] == 0 {
					dev[x] = uint16(min(dv+(e-dv)>>onsetShift, 65535))
				}
				prev[x] = 1
				var kind uint8
				if labelled && mask[x] != 0 {
					kind = d.blobs[labels[x]].kind
				}
				// A ghost's pixels, and uncovered ones the despeckle
				// filter left out of any blob, are re-seeded.
				if kind == blobGhost || (uncovered && mask[x] == 0) {
					if ghost[x]++; ghost[x] >= ghostN {
						bg[x], age[x], calm[x], ghost[x], old[x] = c, 0, 0, 0, noOld
					}
					continue
				}
				ghost[x] = 0
				if kind == blobMoved {
					calm[x] = 0
				} else {
					calm[x]++ // at most absorb: reset below
				}
				if age[x]++; calm[x] >= absorb || age[x] >= hold {
					if track {
						old[x] = bg[x]
					}
					bg[x], age[x], calm[x] = c, 0, 0
				}
				continue
			}
			prev[x] = 0
			dev[x] = uint16(dv + (e-dv)>>devShift)
			age[x], calm[x], ghost[x] = 0, 0, 0
			r := int32(c) - int32(bg[x])
			bg[x] = uint16(int32(bg[x]) + (r*rate+1<<15)>>16)
		}
	}
	// Too few still pixels say more about the motion than the noise.
	if cnt >= len(d.cur)/4 {
		m := int32(sum / int64(cnt))
		d.noise += (m - d.noise) / (1 << noiseShift)
	}
}

// noOld marks a pixel of Detector.old with no old level: levels are 8.8
// box averages of 8-bit samples, at most 255<<8.
const noOld = 0xFFFF

func fill16(s []uint16, v uint16) {
	for i := range s {
		s[i] = v
	}
}

func abs32(v int32) int32 {
	if v < 0 {
		return -v
	}
	return v
}
