// Package tune is the tuning aid behind `keyframe tune`: it plays an image
// sequence or a camera through a [motion.Detector] and a [motion.Lifecycle]
// and writes, per frame, the frame in grey with what the detector saw drawn
// over it, so a user can see why it fired, or why it did not.
//
// Colours (see [Render]): motion red, blobs below MinArea orange, changes
// removed by the despeckle filter yellow, changes ignored because the pixel
// keeps changing (flicker: leaves, water) blue, changes ignored as shadows
// violet, masked pixels dimmed and hatched, the boxes of the blobs that counted as motion green. A text band
// below the image gives the frame number, the detector's status (WARMING,
// GLOBAL, MOTION, still), the motion area in ppm, the per-pixel threshold,
// the event lifecycle (EVENT n START, in event, EVENT n END) and the share of
// the analysed pixels in each state.
//
// Like motion/eval, this package reads and writes files: it is a harness, not
// part of the agent's path.
package tune

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"strconv"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/motion"
)

// Layout of the rendered image.
const (
	// minOutWidth: small inputs are upscaled (nearest neighbour, by a whole
	// factor) to at least this width, so the image and the text band are
	// readable; maxScale bounds the factor.
	minOutWidth = 384
	maxScale    = 8
	// maxSide bounds the frame sides Render accepts (the detector's own
	// bound), so the canvas size cannot overflow.
	maxSide = 1 << 14
	// The text band below the image: bandLines lines of basicfont's 7x13
	// face, lineHeight apart, bandPad above and below.
	bandLines  = 4
	lineHeight = 14
	bandPad    = 4
	bandHeight = bandLines*lineHeight + 2*bandPad
	charWidth  = 7 // basicfont.Face7x13's advance
	// overlayAlpha is the weight, out of 256, of a state's colour over the
	// frame's grey.
	overlayAlpha = 150
	// Masked pixels: the grey is dimmed to maskDim/256 and every hatchStep-th
	// diagonal of the output is drawn in hatchGrey.
	maskDim   = 96
	hatchStep = 6
	hatchGrey = 128
)

// Colours of the overlay and the text.
var (
	colMotion  = color.RGBA{255, 0, 0, 255}
	colSmall   = color.RGBA{255, 140, 0, 255}
	colNoise   = color.RGBA{255, 230, 0, 255}
	colFlicker = color.RGBA{30, 100, 255, 255}
	colShadow  = color.RGBA{190, 60, 255, 255}
	colMasked  = color.RGBA{160, 160, 160, 255}
	colBox     = color.RGBA{0, 230, 0, 255}
	colBand    = color.RGBA{20, 20, 20, 255}
	colText    = color.RGBA{235, 235, 235, 255}
	colDimText = color.RGBA{150, 150, 150, 255}
)

// Status words of the text line, also used by Run to find state changes.
const (
	StatusWarming = "WARMING" // the background is being seeded
	StatusGlobal  = "GLOBAL"  // a global change (light switch) was absorbed
	StatusMotion  = "MOTION"  // a blob of at least MinArea changed
	StatusStill   = "still"   // analysed, no motion
	StatusBad     = "BAD FRAME"
	StatusNone    = "no analysis" // Render was given no View
)

// Status is the status word of a frame's result.
func Status(r motion.Result) string {
	switch {
	case r.Err != nil:
		return StatusBad
	case r.Warming:
		return StatusWarming
	case r.Global:
		return StatusGlobal
	case r.Motion:
		return StatusMotion
	}
	return StatusStill
}

// Info is what the text band says besides the detector's own result.
type Info struct {
	// Frame is the frame's number in the played sequence.
	Frame int
	// File is the source file's name, if any.
	File string
	// Event is the lifecycle's word on this frame ("EVENT 1 START",
	// "in event 1", "EVENT 1 END (gap)"), or empty.
	Event string
}

// Scale is the whole factor Render upscales a frame of width w by: enough to
// make it at least 384 pixels wide (2 for 192, 4 for 96), at most 8, at
// least 1.
func Scale(w int) int {
	if w <= 0 {
		return 1
	}
	return min(maxScale, max(1, (minOutWidth+w-1)/w))
}

// Bounds is the size of the image Render draws for a w×h frame: the frame
// upscaled by Scale(w), and the text band below it.
func Bounds(w, h int) image.Rectangle {
	s := Scale(w)
	return image.Rect(0, 0, w*s, h*s+bandHeight)
}

// ImageArea is the part of Bounds(w, h) that shows the frame (above the
// text band).
func ImageArea(w, h int) image.Rectangle {
	s := Scale(w)
	return image.Rect(0, 0, w*s, h*s)
}

// Render draws frame f into dst, whose bounds must be Bounds(f.Width,
// f.Height): the luma plane in grey, upscaled by Scale (nearest neighbour);
// over it each analysed pixel's state from v (motion red, small orange,
// noise yellow, flicker blue, shadow violet, all translucent; masked
// dimmed with grey hatching; still left grey); v's blob boxes as green
// rectangles; and the text band. v must be the Detector's View of this
// frame. A nil v, or one whose Result has an Err (the detector rejected the
// frame), draws the frame without states. A frame without a usable luma
// plane, or a v that does not fit the frame, is an error.
func Render(dst *image.RGBA, f *capture.Frame, v *motion.View, info Info) error {
	w, h := f.Width, f.Height
	if w <= 0 || h <= 0 || w > maxSide || h > maxSide {
		return fmt.Errorf("tune: frame size %dx%d, want sides in [1, %d]", w, h, maxSide)
	}
	pix, stride, step := f.LumaPlane()
	if need := (h-1)*stride + (w-1)*step + 1; stride < (w-1)*step+1 || len(pix) < need {
		return fmt.Errorf("tune: frame %dx%d has %d bytes of luma (stride %d, step %d), want %d", w, h, len(pix), stride, step, need)
	}
	if want := Bounds(w, h); dst == nil || dst.Bounds() != want {
		return fmt.Errorf("tune: canvas for a %dx%d frame must be %v", w, h, want)
	}
	states := v != nil && v.Result.Err == nil && v.Width > 0 && v.Height > 0
	if states {
		if err := checkView(v, w, h); err != nil {
			return err
		}
	}
	s := Scale(w)
	var count [motion.StateMotion + 1]int
	for y := range h {
		ay := 0
		if states {
			ay = min(y/v.Scale, v.Height-1) // rows beyond the analysed ones: the nearest
		}
		for x := range w {
			l := pix[y*stride+x*step]
			st := motion.StateStill
			if states {
				st = v.State[ay*v.Width+min(x/v.Scale, v.Width-1)]
			}
			c := pixelColor(l, st)
			for dy := range s {
				oy := y*s + dy
				row := dst.Pix[oy*dst.Stride+x*s*4:]
				for dx := range s {
					p := c
					if st == motion.StateMasked && (x*s+dx+oy)%hatchStep == 0 {
						p = color.RGBA{hatchGrey, hatchGrey, hatchGrey, 255}
					}
					row[4*dx], row[4*dx+1], row[4*dx+2], row[4*dx+3] = p.R, p.G, p.B, 255
				}
			}
		}
	}
	if states {
		for _, st := range v.State[:v.Width*v.Height] {
			if int(st) < len(count) {
				count[st]++
			}
		}
		for _, r := range v.Blobs {
			drawBox(dst, image.Rect(r.Min.X*s, r.Min.Y*s, r.Max.X*s, r.Max.Y*s).Intersect(ImageArea(w, h)), max(1, s/2))
		}
	}
	drawBand(dst, h*s, v, info, states, count[:])
	return nil
}

// checkView reports whether v's geometry fits a w×h frame.
func checkView(v *motion.View, w, h int) error {
	if v.Scale < 1 || v.Width > w/v.Scale || v.Height > h/v.Scale || len(v.State) < v.Width*v.Height {
		return fmt.Errorf("tune: view %dx%d at 1/%d with %d states does not fit frame %dx%d",
			v.Width, v.Height, v.Scale, len(v.State), w, h)
	}
	return nil
}

// pixelColor is the colour of an input pixel of luma l in state st (the
// masked hatching aside).
func pixelColor(l uint8, st uint8) color.RGBA {
	var c color.RGBA
	switch st {
	case motion.StateMasked:
		g := uint8(uint32(l) * maskDim >> 8)
		return color.RGBA{g, g, g, 255}
	case motion.StateFlicker:
		c = colFlicker
	case motion.StateShadow:
		c = colShadow
	case motion.StateNoise:
		c = colNoise
	case motion.StateSmall:
		c = colSmall
	case motion.StateMotion:
		c = colMotion
	default: // still, or a state this version does not know
		return color.RGBA{l, l, l, 255}
	}
	mix := func(a uint8) uint8 {
		return uint8((uint32(l)*(256-overlayAlpha) + uint32(a)*overlayAlpha) >> 8)
	}
	return color.RGBA{mix(c.R), mix(c.G), mix(c.B), 255}
}

// drawBox draws the outline of r, t pixels thick, inside r.
func drawBox(dst *image.RGBA, r image.Rectangle, t int) {
	if r.Empty() {
		return
	}
	u := image.NewUniform(colBox)
	for _, e := range []image.Rectangle{
		image.Rect(r.Min.X, r.Min.Y, r.Max.X, r.Min.Y+t),
		image.Rect(r.Min.X, r.Max.Y-t, r.Max.X, r.Max.Y),
		image.Rect(r.Min.X, r.Min.Y, r.Min.X+t, r.Max.Y),
		image.Rect(r.Max.X-t, r.Min.Y, r.Max.X, r.Max.Y),
	} {
		draw.Draw(dst, e.Intersect(r), u, image.Point{}, draw.Src)
	}
}

// drawBand draws the text band starting at row top.
func drawBand(dst *image.RGBA, top int, v *motion.View, info Info, states bool, count []int) {
	band := image.Rect(0, top, dst.Bounds().Dx(), dst.Bounds().Dy())
	draw.Draw(dst, band, image.NewUniform(colBand), image.Point{}, draw.Src)
	line := func(n int) *textLine {
		return &textLine{dst: dst, x: bandPad, y: top + bandPad + n*lineHeight + 11} // 11: the face's ascent
	}

	// Line 1: frame, status, area, threshold.
	l := line(0)
	l.text("#"+pad6(info.Frame)+"  ", colText)
	var r motion.Result
	status := StatusNone
	if v != nil {
		r = v.Result
		status = Status(r)
	}
	statusCol := colText
	switch status {
	case StatusMotion, StatusBad:
		statusCol = colMotion
	case StatusWarming, StatusGlobal:
		statusCol = colNoise
	}
	l.text(status, statusCol)
	if v != nil && r.Err == nil {
		l.text(fmt.Sprintf("  area %d ppm  thr %.1f", r.AreaPPM, v.Threshold), colText)
	}

	// Line 2: the event and the file.
	l = line(1)
	if info.Event != "" {
		l.text(info.Event+"  ", colBox)
	}
	n := 0
	for _, c := range count {
		n += c
	}
	if info.File != "" {
		l.text(info.File, colDimText)
	}
	if v != nil && r.Err != nil {
		l.text(r.Err.Error(), colDimText)
	}

	// Lines 3 and 4: the legend, with each state's share of the analysed
	// pixels.
	for i, e := range []struct {
		name string
		st   uint8
		col  color.RGBA
	}{
		{"motion", motion.StateMotion, colMotion},
		{"small", motion.StateSmall, colSmall},
		{"noise", motion.StateNoise, colNoise},
		{"flicker", motion.StateFlicker, colFlicker},
		{"shadow", motion.StateShadow, colShadow},
		{"masked", motion.StateMasked, colMasked},
	} {
		if i%3 == 0 {
			l = line(2 + i/3)
		}
		s := e.name
		if states && n > 0 {
			s += " " + pct(count[e.st], n)
		}
		l.text(s+"  ", e.col)
	}
	l.text("box", colBox)
}

// textLine draws text left to right from (x, y), y being the baseline.
type textLine struct {
	dst  *image.RGBA
	x, y int
}

func (t *textLine) text(s string, c color.RGBA) {
	d := font.Drawer{Dst: t.dst, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(t.x, t.y)}
	d.DrawString(s)
	t.x += len(s) * charWidth
}

func pad6(n int) string {
	s := strconv.Itoa(n)
	for len(s) < 6 {
		s = "0" + s
	}
	return s
}

// pct formats part/whole as a percentage with one decimal.
func pct(part, whole int) string {
	return strconv.FormatFloat(100*float64(part)/float64(whole), 'f', 1, 64) + "%"
}
