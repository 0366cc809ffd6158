package motion

import (
	"image"
	"math"
	"math/rand/v2"
)

// scene draws deterministic test frames: a static textured background with
// levels in 50..170 (so a ±40 step never clips), Gaussian sensor noise and
// bright textured objects.
type scene struct {
	w, h  int
	bg    []byte
	sigma float64
	rng   *rand.Rand
}

func newScene(w, h int, seed uint64, sigma float64) *scene {
	rng := rand.New(rand.NewPCG(seed, 0x6d6f74696f6e))
	s := &scene{w: w, h: h, bg: make([]byte, w*h), sigma: sigma, rng: rng}
	for y := range h {
		for x := range w {
			s.bg[y*w+x] = uint8(70 + 30*y/h + 20*x/w)
		}
	}
	// Flat "furniture" of other levels, then fine texture.
	for range 8 {
		rw, rh := w/16+rng.IntN(w/4), h/16+rng.IntN(h/4)
		x0, y0 := rng.IntN(w-rw+1), rng.IntN(h-rh+1)
		lv := uint8(55 + rng.IntN(100))
		for y := y0; y < y0+rh; y++ {
			for x := x0; x < x0+rw; x++ {
				s.bg[y*w+x] = lv
			}
		}
	}
	for i, v := range s.bg {
		s.bg[i] = uint8(min(170, max(50, int(v)+rng.IntN(13)-6)))
	}
	return s
}

// frame renders into dst (grown to w*h): background + bright, then the
// objects (clipped to the frame), then noise.
func (s *scene) frame(dst []byte, bright int, objs ...image.Rectangle) []byte {
	if cap(dst) < s.w*s.h {
		dst = make([]byte, s.w*s.h)
	}
	dst = dst[:s.w*s.h]
	for i, v := range s.bg {
		dst[i] = clampLevel(int(v) + bright)
	}
	for _, o := range objs {
		c := o.Intersect(image.Rect(0, 0, s.w, s.h))
		for y := c.Min.Y; y < c.Max.Y; y++ {
			for x := c.Min.X; x < c.Max.X; x++ {
				// A checker in object coordinates, so it moves with it.
				lv := 205
				if ((x-o.Min.X)/4+(y-o.Min.Y)/4)%2 == 1 {
					lv = 235
				}
				dst[y*s.w+x] = clampLevel(lv + bright)
			}
		}
	}
	if s.sigma > 0 {
		for i, v := range dst {
			dst[i] = clampLevel(int(v) + int(math.Round(s.rng.NormFloat64()*s.sigma)))
		}
	}
	return dst
}

func clampLevel(v int) byte { return byte(min(255, max(0, v))) }
