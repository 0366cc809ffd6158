package clip

import (
	"fmt"
	"image"
	"image/jpeg"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
)

// Largest frame side the feeder takes: capture's limit, within JPEG's 65535.
const maxSide = 1 << 15

// rawLayout checks the geometry of a raw frame and returns how many bytes of
// its Data the image spans (the last line may stop after its pixels). Sizes
// are computed in 64 bits, so a bad stride cannot overflow on 32-bit ARM.
func rawLayout(p capture.PixelFormat, w, h, stride int) (int, error) {
	if w < 1 || h < 1 || w > maxSide || h > maxSide {
		return 0, fmt.Errorf("size %dx%d, want 1..%d per side", w, h, maxSide)
	}
	W, H, S := int64(w), int64(h), int64(stride)
	cw, ch := (W+1)/2, (H+1)/2
	var line, n int64
	switch p {
	case capture.FormatYUYV:
		if w%2 != 0 {
			return 0, fmt.Errorf("YUYV width %d is odd", w)
		}
		line, n = 2*W, S*(H-1)+2*W
	case capture.FormatGrey:
		line, n = W, S*(H-1)+W
	case capture.FormatRGB24:
		line, n = 3*W, S*(H-1)+3*W
	case capture.FormatNV12:
		line, n = 2*cw, S*H+S*(ch-1)+2*cw
	case capture.FormatYU12:
		line, n = 2*cw, S*H+(S/2)*ch+(S/2)*(ch-1)+cw // the chroma lines are S/2 >= cw bytes
	default:
		return 0, fmt.Errorf("pixel format %v is not one the feeder encodes", p)
	}
	if S < line {
		return 0, fmt.Errorf("stride %d below %d bytes per line of %dx%d %v", stride, line, w, h, p)
	}
	if n > 1<<30 {
		return 0, fmt.Errorf("%v frame %dx%d stride %d spans %d bytes, above 1 GiB", p, w, h, stride, n)
	}
	return int(n), nil
}

// raw is the feeder's copy of a raw frame: what the encoder goroutine works
// on while the caller's frame moves on.
type raw struct {
	w, h, stride int
	format       capture.PixelFormat
	time         time.Time
	sequence     uint64
	data         []byte
}

// fill copies the n bytes of f's image into r, reusing r's buffer.
func (r *raw) fill(f *capture.Frame, n int) {
	r.w, r.h, r.stride, r.format = f.Width, f.Height, f.Stride, f.Format
	r.time, r.sequence = f.Time, f.Sequence
	r.data = append(r.data[:0], f.Data[:n]...)
}

// jpegBuffer is the encoder's output: an io.Writer with WriteByte and Flush,
// so image/jpeg writes to it without a bufio.Writer of its own.
type jpegBuffer struct{ b []byte }

func (w *jpegBuffer) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

func (w *jpegBuffer) WriteByte(c byte) error {
	w.b = append(w.b, c)
	return nil
}

func (w *jpegBuffer) Flush() error { return nil }

// encoder JPEG-encodes raw frames, reusing its image planes and output
// buffer from one frame to the next. GREY and YU12 frames are encoded from
// the raw data in place; YUYV, NV12 and RGB24 are first rearranged into a
// plane layout image/jpeg reads (it has fast paths for *image.YCbCr,
// *image.Gray and *image.RGBA).
type encoder struct {
	opts jpeg.Options
	out  jpegBuffer
	pix  []byte // planes rearranged from YUYV, NV12 or RGB24
	ycc  image.YCbCr
	gray image.Gray
	rgba image.RGBA
}

func newEncoder(quality int) *encoder {
	return &encoder{opts: jpeg.Options{Quality: quality}}
}

// encode returns the JPEG of r, in a buffer the next call reuses. r's
// geometry must have passed rawLayout.
func (e *encoder) encode(r *raw) ([]byte, error) {
	w, h, s := r.w, r.h, r.stride
	rect := image.Rect(0, 0, w, h)
	var img image.Image
	switch r.format {
	case capture.FormatGrey:
		e.gray = image.Gray{Pix: r.data, Stride: s, Rect: rect}
		img = &e.gray
	case capture.FormatYU12:
		cs, ch := s/2, (h+1)/2
		e.ycc = image.YCbCr{
			Y: r.data[:s*h], Cb: r.data[s*h : s*h+cs*ch], Cr: r.data[s*h+cs*ch:],
			YStride: s, CStride: cs, SubsampleRatio: image.YCbCrSubsampleRatio420, Rect: rect,
		}
		img = &e.ycc
	case capture.FormatNV12:
		cw, ch := (w+1)/2, (h+1)/2
		e.pix = grow(e.pix, 2*cw*ch)
		cb, cr := e.pix[:cw*ch], e.pix[cw*ch:]
		chroma := r.data[s*h:]
		for y := range ch {
			row := chroma[y*s : y*s+2*cw]
			b, c := cb[y*cw:y*cw+cw], cr[y*cw:y*cw+cw]
			for x := range b {
				b[x], c[x] = row[2*x], row[2*x+1]
			}
		}
		e.ycc = image.YCbCr{
			Y: r.data[:s*h], Cb: cb, Cr: cr,
			YStride: s, CStride: cw, SubsampleRatio: image.YCbCrSubsampleRatio420, Rect: rect,
		}
		img = &e.ycc
	case capture.FormatYUYV:
		cw := w / 2
		e.pix = grow(e.pix, 2*w*h)
		yp, cb, cr := e.pix[:w*h], e.pix[w*h:w*h+cw*h], e.pix[w*h+cw*h:]
		for y := range h {
			row := r.data[y*s : y*s+2*w]
			yo, b, c := yp[y*w:y*w+w], cb[y*cw:y*cw+cw], cr[y*cw:y*cw+cw]
			for i := range b {
				p := row[4*i : 4*i+4 : 4*i+4]
				yo[2*i], b[i], yo[2*i+1], c[i] = p[0], p[1], p[2], p[3]
			}
		}
		e.ycc = image.YCbCr{
			Y: yp, Cb: cb, Cr: cr,
			YStride: w, CStride: cw, SubsampleRatio: image.YCbCrSubsampleRatio422, Rect: rect,
		}
		img = &e.ycc
	case capture.FormatRGB24:
		e.pix = grow(e.pix, 4*w*h)
		for y := range h {
			row := r.data[y*s : y*s+3*w]
			out := e.pix[4*w*y : 4*w*(y+1)]
			for x := range w {
				out[4*x], out[4*x+1], out[4*x+2], out[4*x+3] = row[3*x], row[3*x+1], row[3*x+2], 0xff
			}
		}
		e.rgba = image.RGBA{Pix: e.pix[:4*w*h], Stride: 4 * w, Rect: rect}
		img = &e.rgba
	default:
		return nil, fmt.Errorf("clip: encode: pixel format %v", r.format)
	}
	e.out.b = e.out.b[:0]
	if err := jpeg.Encode(&e.out, img, &e.opts); err != nil {
		return nil, fmt.Errorf("clip: encode %dx%d %v: %w", w, h, r.format, err)
	}
	return e.out.b, nil
}

// grow returns b resized to n bytes, reusing its array when it is big enough.
func grow(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:n]
	}
	return make([]byte, n)
}
