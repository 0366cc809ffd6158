package capture

import (
	"context"
	"fmt"
	"image"
	"math"
	"math/bits"
	"math/rand/v2"
	"time"

	"github.com/keyframe-cam/keyframe/internal/clock"
)

// The synthetic scene's script. It repeats every SyntheticCycle of frame
// time (at the configured FPS, or at [NominalFPS] when FPS is 0); times are
// offsets from the start of each cycle.
//
//	0 s    ..  2 s   quiet warm-up: static background and sensor noise only
//	2 s    ..  7 s   an object crosses the frame; it enters at one edge, is
//	                 fully in view for about 3 s and has left at 7 s; its
//	                 direction alternates: left to right in even cycles,
//	                 right to left in odd ones
//	7 s    ..  9 s   quiet
//	9 s    .. 12 s   brightness step, no object: the whole frame is brighter
//	                 by SyntheticStepLevel in even cycles, darker in odd ones
//	12 s   .. 15 s   quiet
const (
	SyntheticCycle       = 15 * time.Second
	SyntheticObjectEnter = 2 * time.Second
	SyntheticObjectLeave = 7 * time.Second
	SyntheticStepOn      = 9 * time.Second
	SyntheticStepOff     = 12 * time.Second
	// SyntheticStepLevel is the size of the brightness step in luma levels.
	SyntheticStepLevel = 35
	// SyntheticNoiseSigma is the standard deviation of the per-pixel luma
	// noise; the noise is bounded to ±4 sigma.
	SyntheticNoiseSigma = 2
)

// Default synthetic frame size.
const (
	syntheticDefaultWidth  = 640
	syntheticDefaultHeight = 480
	syntheticMinSide       = 16
	syntheticMaxSide       = 4096
)

// SyntheticConfig configures [NewSynthetic].
type SyntheticConfig struct {
	// Width and Height of the frames; 0 means 640 and 480. Width must be
	// even (YUYV), both 16..4096.
	Width, Height int
	// FPS paces the frames with the clock; 0 produces them as fast as
	// possible on a [NominalFPS] timeline.
	FPS float64
	// Seed makes the background texture and the noise; the same seed gives
	// the same frames.
	Seed int64
}

// Synthetic is a [Source] of a scripted scene in YUYV: a textured static
// background with per-pixel sensor noise, an object crossing the frame and
// a global brightness step, repeating as described at [SyntheticCycle].
// Frame Time is the open time plus Sequence/FPS. Next allocates nothing once
// the caller's frame has grown.
type Synthetic struct {
	w, h int
	tl   timeline
	seed uint64
	seq  uint64

	bgY      []byte // w*h static background luma
	bgU, bgV []byte // (w/2)*h background chroma

	objW, objH, objTop int
	objY               []byte // objW*objH object luma texture
	objU, objV         byte

	row      []byte // scratch: base luma of the row being rendered
	rowU     []byte // scratch: chroma of the row being rendered
	rowV     []byte
	isClosed bool
}

// NewSynthetic makes a synthetic scene. A nil clk means the system clock;
// the timeline starts at clk.Now().
func NewSynthetic(cfg SyntheticConfig, clk clock.Clock) (*Synthetic, error) {
	if cfg.Width == 0 {
		cfg.Width = syntheticDefaultWidth
	}
	if cfg.Height == 0 {
		cfg.Height = syntheticDefaultHeight
	}
	if cfg.Width < syntheticMinSide || cfg.Width > syntheticMaxSide || cfg.Width%2 != 0 {
		return nil, fmt.Errorf("capture: synthetic width %d, want an even number in %d..%d", cfg.Width, syntheticMinSide, syntheticMaxSide)
	}
	if cfg.Height < syntheticMinSide || cfg.Height > syntheticMaxSide {
		return nil, fmt.Errorf("capture: synthetic height %d, want %d..%d", cfg.Height, syntheticMinSide, syntheticMaxSide)
	}
	if err := checkFPS(cfg.FPS); err != nil {
		return nil, fmt.Errorf("capture: synthetic: %w", err)
	}
	s := &Synthetic{
		w:    cfg.Width,
		h:    cfg.Height,
		seed: uint64(cfg.Seed),
		tl:   newTimeline(clk, cfg.FPS),
	}
	s.paint(rand.New(rand.NewPCG(uint64(cfg.Seed), 0x6b657966_72616d65)))
	return s, nil
}

func checkFPS(fps float64) error {
	if math.IsNaN(fps) || math.IsInf(fps, 0) || fps < 0 || fps > 1000 {
		return fmt.Errorf("fps %v, want 0..1000", fps)
	}
	return nil
}

// paint draws the static background and the object texture.
func (s *Synthetic) paint(rng *rand.Rand) {
	w, h := s.w, s.h
	cw := w / 2
	s.bgY = make([]byte, w*h)
	s.bgU = make([]byte, cw*h)
	s.bgV = make([]byte, cw*h)
	// A soft gradient, warm and a little dim.
	for y := range h {
		for x := range w {
			s.bgY[y*w+x] = uint8(80 + 40*y/h + 20*x/w)
		}
		for x := range cw {
			s.bgU[y*cw+x], s.bgV[y*cw+x] = 120, 136
		}
	}
	// "Furniture": flat rectangles of other levels and colours.
	for range 12 {
		rw := w/20 + rng.IntN(w/4)
		rh := h/20 + rng.IntN(h/4)
		x0, y0 := rng.IntN(w-rw+1), rng.IntN(h-rh+1)
		lv := uint8(55 + rng.IntN(111))
		u, v := uint8(100+rng.IntN(57)), uint8(100+rng.IntN(57))
		for y := y0; y < y0+rh; y++ {
			for x := x0; x < x0+rw; x++ {
				s.bgY[y*w+x] = lv
			}
			for x := x0 / 2; x < (x0+rw)/2; x++ {
				s.bgU[y*cw+x], s.bgV[y*cw+x] = u, v
			}
		}
	}
	// Fine static texture, kept within 50..170 so a step never clips.
	for i, v := range s.bgY {
		s.bgY[i] = uint8(min(170, max(50, int(v)+rng.IntN(13)-6)))
	}

	// The object: a bright textured box, a quarter of the width and two
	// fifths of the height (10% of the frame), luma 200..250: at least 30
	// levels above any background pixel.
	s.objW, s.objH = max(2, w/4), max(2, 2*h/5)
	s.objTop = h/3 - s.objH/4 + rng.IntN(h/8+1)
	s.objTop = min(max(0, s.objTop), h-s.objH)
	s.objY = make([]byte, s.objW*s.objH)
	for y := range s.objH {
		for x := range s.objW {
			lv := 208
			if (x/6+y/6)%2 == 1 {
				lv = 236
			}
			s.objY[y*s.objW+x] = uint8(lv + rng.IntN(9) - 4)
		}
	}
	s.objU, s.objV = 96, 176 // reddish

	s.row = make([]byte, w)
	s.rowU = make([]byte, cw)
	s.rowV = make([]byte, cw)
}

// Size is the frame size.
func (s *Synthetic) Size() (width, height int) { return s.w, s.h }

// Offset is frame seq's time since the source opened.
func (s *Synthetic) Offset(seq uint64) time.Duration { return s.tl.offset(seq) }

// phase is frame seq's position in its cycle and the cycle's number.
func (s *Synthetic) phase(seq uint64) (time.Duration, uint64) {
	t := s.tl.offset(seq)
	return t % SyntheticCycle, uint64(t / SyntheticCycle)
}

// objectX is the object's left edge in frame seq (possibly outside the
// frame) and whether frame seq is within the crossing.
func (s *Synthetic) objectX(seq uint64) (int, bool) {
	t, cycle := s.phase(seq)
	if t < SyntheticObjectEnter || t >= SyntheticObjectLeave {
		return 0, false
	}
	p := float64(t-SyntheticObjectEnter) / float64(SyntheticObjectLeave-SyntheticObjectEnter)
	travel := int(math.Round(p * float64(s.w+s.objW)))
	if cycle%2 == 0 {
		return travel - s.objW, true // left to right
	}
	return s.w - travel, true // right to left
}

// ObjectRect is the part of frame seq the object covers; it is empty when the
// object is not in view.
func (s *Synthetic) ObjectRect(seq uint64) image.Rectangle {
	x, ok := s.objectX(seq)
	if !ok {
		return image.Rectangle{}
	}
	r := image.Rect(x, s.objTop, x+s.objW, s.objTop+s.objH)
	return r.Intersect(image.Rect(0, 0, s.w, s.h))
}

// ObjectVisible reports whether any part of the object is in frame seq.
func (s *Synthetic) ObjectVisible(seq uint64) bool { return !s.ObjectRect(seq).Empty() }

// ObjectFullyVisible reports whether the whole object is in frame seq.
func (s *Synthetic) ObjectFullyVisible(seq uint64) bool {
	r := s.ObjectRect(seq)
	return r.Dx() == s.objW && r.Dy() == s.objH
}

// ObjectSize is the object's full size in pixels.
func (s *Synthetic) ObjectSize() (width, height int) { return s.objW, s.objH }

// Brightness is the global luma offset of frame seq: 0, +SyntheticStepLevel
// or -SyntheticStepLevel.
func (s *Synthetic) Brightness(seq uint64) int {
	t, cycle := s.phase(seq)
	if t < SyntheticStepOn || t >= SyntheticStepOff {
		return 0
	}
	if cycle%2 == 0 {
		return SyntheticStepLevel
	}
	return -SyntheticStepLevel
}

// BrightnessStep reports whether frame seq is within a brightness step.
func (s *Synthetic) BrightnessStep(seq uint64) bool { return s.Brightness(seq) != 0 }

// Next renders the next frame into f. It waits for the frame's time when FPS
// is set.
func (s *Synthetic) Next(ctx context.Context, f *Frame) error {
	if s.isClosed {
		return ErrClosed
	}
	if err := s.tl.wait(ctx, s.seq); err != nil {
		return err
	}
	s.render(f, s.seq)
	f.Time = s.tl.start.Add(s.tl.offset(s.seq))
	f.Sequence = s.seq
	s.seq++
	return nil
}

// Close ends the source; Next then returns [ErrClosed].
func (s *Synthetic) Close() error {
	s.isClosed = true
	return nil
}

// render draws frame seq into f.
func (s *Synthetic) render(f *Frame, seq uint64) {
	w, h, cw := s.w, s.h, s.w/2
	f.Width, f.Height = w, h
	f.Format = FormatYUYV
	f.Stride = 2 * w
	f.Data = grow(f.Data, 2*w*h)
	f.Luma = grow(f.Luma, w*h)

	off := s.Brightness(seq)
	ox, inCrossing := s.objectX(seq)
	obj := s.ObjectRect(seq)
	if !inCrossing {
		obj = image.Rectangle{}
	}
	rng := splitmix{state: s.seed ^ (seq+1)*0x9e3779b97f4a7c15}
	var word uint64
	left := 0 // unused 16-bit chunks in word

	for y := range h {
		copy(s.row, s.bgY[y*w:(y+1)*w])
		copy(s.rowU, s.bgU[y*cw:(y+1)*cw])
		copy(s.rowV, s.bgV[y*cw:(y+1)*cw])
		if y >= obj.Min.Y && y < obj.Max.Y {
			src := s.objY[(y-s.objTop)*s.objW:]
			copy(s.row[obj.Min.X:obj.Max.X], src[obj.Min.X-ox:])
			for x := obj.Min.X / 2; x < (obj.Max.X+1)/2; x++ {
				s.rowU[x], s.rowV[x] = s.objU, s.objV
			}
		}
		luma := f.Luma[y*w : (y+1)*w]
		data := f.Data[y*2*w : (y+1)*2*w]
		for i := range cw {
			if left == 0 {
				word, left = rng.next(), 2
			}
			left--
			n := uint32(word)
			word >>= 32
			y0 := clampByte(int(s.row[2*i]) + off + bits.OnesCount16(uint16(n)) - 8)
			y1 := clampByte(int(s.row[2*i+1]) + off + bits.OnesCount16(uint16(n>>16)) - 8)
			luma[2*i], luma[2*i+1] = y0, y1
			data[4*i] = y0
			data[4*i+1] = s.rowU[i]
			data[4*i+2] = y1
			data[4*i+3] = s.rowV[i]
		}
	}
}

func clampByte(v int) byte {
	return byte(min(255, max(0, v)))
}

// splitmix is SplitMix64: a tiny, fast generator for the per-frame noise.
type splitmix struct{ state uint64 }

func (r *splitmix) next() uint64 {
	r.state += 0x9e3779b97f4a7c15
	z := r.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
