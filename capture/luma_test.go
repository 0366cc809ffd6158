package capture

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// lumaFromYUYVRef is the plain loop lumaFromYUYV replaced: the reference
// the fast loops are checked and benchmarked against.
func lumaFromYUYVRef(dst, src []byte, w, h, stride int) {
	for y := range h {
		row := src[y*stride : y*stride+2*w]
		out := dst[y*w : y*w+w]
		for x := range out {
			out[x] = row[2*x]
		}
	}
}

// checkYUYVLuma runs conv on a random w×h YUYV image (stride 2w+pad, the
// buffer cut right after the last pixel so that any read past it panics)
// and compares the result with the reference loop. dst sits inside a larger
// array whose bytes around it must stay untouched.
func checkYUYVLuma(t *testing.T, rng *rand.Rand, name string, conv func(dst, src []byte, w, h, stride int), w, h, pad int) {
	t.Helper()
	stride := 2*w + pad
	src := make([]byte, stride*(h-1)+2*w)
	for i := range src {
		src[i] = byte(rng.Uint32())
	}
	const guard, fill = 8, 0xA5
	buf := bytes.Repeat([]byte{fill}, guard+w*h+guard)
	dst := buf[guard : guard+w*h]
	want := make([]byte, w*h)
	lumaFromYUYVRef(want, src, w, h, stride)
	conv(dst, src, w, h, stride)
	if !bytes.Equal(dst, want) {
		for i := range want {
			if dst[i] != want[i] {
				t.Fatalf("%s %dx%d stride %d: luma(%d,%d) = %#02x, want %#02x", name, w, h, stride, i%w, i/w, dst[i], want[i])
			}
		}
	}
	for i, b := range buf {
		if (i < guard || i >= guard+w*h) && b != fill {
			t.Fatalf("%s %dx%d stride %d: wrote byte %d outside the luma plane", name, w, h, stride, i-guard)
		}
	}
}

// rowConv runs a row loop over a whole image, as lumaFromYUYV does.
func rowConv(row func(out, row []byte)) func(dst, src []byte, w, h, stride int) {
	return func(dst, src []byte, w, h, stride int) {
		for y := range h {
			row(dst[y*w:y*w+w], src[y*stride:y*stride+2*w])
		}
	}
}

// TestLumaFromYUYVMatchesReference checks lumaFromYUYV and both row loops
// (whichever this architecture uses, and the other) against the plain loop
// on random images: every width from 1 to 67 (odd ones included, which the
// fast loops must finish byte by byte), several heights and stride paddings
// (odd paddings put rows at unaligned addresses).
func TestLumaFromYUYVMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(0x6b657966, 0x72616d65))
	convs := []struct {
		name string
		conv func(dst, src []byte, w, h, stride int)
	}{
		{"lumaFromYUYV", lumaFromYUYV},
		{"words", rowConv(yuyvLumaRowWords)},
		{"bytes", rowConv(yuyvLumaRowBytes)},
	}
	for _, c := range convs {
		for w := 1; w <= 67; w++ {
			for _, h := range []int{1, 2, 3, 5} {
				for _, pad := range []int{0, 1, 3, 8, 33} {
					checkYUYVLuma(t, rng, c.name, c.conv, w, h, pad)
				}
			}
		}
		for _, sz := range [][2]int{{160, 120}, {640, 2}, {1282, 3}} {
			checkYUYVLuma(t, rng, c.name, c.conv, sz[0], sz[1], 0)
			checkYUYVLuma(t, rng, c.name, c.conv, sz[0], sz[1], 7)
		}
	}
}

// TestLumaRowYUYVExact pins the row loops to hand-computed output, so a
// mistake shared with the reference loop cannot hide: Y bytes count up from
// 1 and chroma bytes are 0xC0 | index, 40 pixels (two full steps and a tail).
func TestLumaRowYUYVExact(t *testing.T) {
	const w = 40
	row := make([]byte, 2*w)
	want := make([]byte, w)
	for x := range w {
		row[2*x] = byte(x + 1)
		row[2*x+1] = 0xC0 | byte(x)
		want[x] = byte(x + 1)
	}
	for name, conv := range map[string]func(out, row []byte){"words": yuyvLumaRowWords, "bytes": yuyvLumaRowBytes} {
		out := make([]byte, w)
		conv(out, row)
		if !bytes.Equal(out, want) {
			t.Errorf("%s: luma %v, want %v", name, out, want)
		}
	}
}

// BenchmarkLumaFromYUYV measures luma extraction from a YUYV frame (bytes
// are the frame's): lumaFromYUYV, each of its row loops (the one this
// architecture does not use included, to check the choice on a board), the
// reference loop it replaced, and a plain copy of the frame for scale.
func BenchmarkLumaFromYUYV(b *testing.B) {
	for _, sz := range [][2]int{{640, 480}, {1280, 720}} {
		w, h := sz[0], sz[1]
		src := make([]byte, 2*w*h)
		for i := range src {
			src[i] = byte(i*7 + i>>11)
		}
		dst := make([]byte, w*h)
		for _, c := range []struct {
			name string
			conv func(dst, src []byte, w, h, stride int)
		}{
			{"lumaFromYUYV", lumaFromYUYV},
			{"words", rowConv(yuyvLumaRowWords)},
			{"bytes", rowConv(yuyvLumaRowBytes)},
			{"reference", lumaFromYUYVRef},
		} {
			b.Run(fmt.Sprintf("%dx%d/%s", w, h, c.name), func(b *testing.B) {
				b.SetBytes(int64(len(src)))
				for b.Loop() {
					c.conv(dst, src, w, h, 2*w)
				}
			})
		}
		b.Run(fmt.Sprintf("%dx%d/memmove", w, h), func(b *testing.B) {
			frame := make([]byte, len(src))
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				copy(frame, src)
			}
		})
	}
}

// lumaOf reads a frame's luma through LumaPlane into a packed plane.
func lumaOf(f *Frame) []byte {
	pix, stride, step := f.LumaPlane()
	if len(pix) == 0 {
		return nil
	}
	out := make([]byte, 0, f.Width*f.Height)
	for y := range f.Height {
		for x := range f.Width {
			out = append(out, pix[y*stride+x*step])
		}
	}
	return out
}

// TestLumaPlaneMatchesFillLuma: reading the plane in place gives what
// FillLuma extracts, for every uncompressed format, with padded strides.
func TestLumaPlaneMatchesFillLuma(t *testing.T) {
	const w, h = 8, 5
	for _, tc := range []struct {
		format PixelFormat
		stride int
		step   int
	}{
		{FormatYUYV, 2*w + 2, 2}, {FormatGrey, w + 3, 1}, {FormatNV12, w + 1, 1}, {FormatYU12, w + 3, 1}, {FormatRGB24, 3*w + 1, 1},
	} {
		_, full, err := imageLayout(tc.format, w, h, tc.stride)
		if err != nil {
			t.Fatal(err)
		}
		f := &Frame{Width: w, Height: h, Format: tc.format, Stride: tc.stride, Data: make([]byte, full)}
		for i := range f.Data {
			f.Data[i] = byte(i*37 + 11)
		}
		if tc.format != FormatRGB24 {
			if err := f.validate(); err != nil {
				t.Fatalf("%v without Luma: %v", tc.format, err)
			}
			if _, _, step := f.LumaPlane(); step != tc.step {
				t.Errorf("%v: step %d, want %d", tc.format, step, tc.step)
			}
		}
		inPlace := lumaOf(f)
		f.FillLuma()
		if !bytes.Equal(inPlace, f.Luma) && tc.format != FormatRGB24 {
			t.Errorf("%v: LumaPlane %v, FillLuma %v", tc.format, inPlace, f.Luma)
		}
		if pix, stride, step := f.LumaPlane(); stride != w || step != 1 || !bytes.Equal(pix[:w*h], f.Luma) {
			t.Errorf("%v: after FillLuma the plane is not Luma", tc.format)
		}
	}
}
