// Package capture produces camera frames for keyframe: from a V4L2 device
// (its own MMAP streaming over golang.org/x/sys/unix), from the output of a
// command (exec: MJPEG or raw YUV, e.g. rpicam-vid for a Raspberry Pi camera
// module), from a directory of still images, or from a synthetic scene that
// runs on any machine.
// [Reopening] keeps a source alive across unplugs, driver errors and stalls.
//
// Every source fills a caller-owned [Frame] and reuses its buffers, so a
// frame loop allocates nothing in steady state. A frame carries its luma plane
// (what the motion detector reads), the image in its native pixel format (what
// thumbnails are made from), a capture time and a sequence number.
//
// The package knows nothing about events, keys or the network.
package capture

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"runtime"
	"time"

	"github.com/keyframe-cam/keyframe/internal/clock"
)

// PixelFormat is a V4L2 pixel format code (FourCC, little-endian).
type PixelFormat uint32

// Pixel formats a [Frame] can carry.
const (
	// FormatYUYV is packed YUV 4:2:2: Y0 U Y1 V, two bytes per pixel.
	FormatYUYV PixelFormat = 0x56595559 // 'YUYV'
	// FormatGrey is 8-bit luma only, one byte per pixel.
	FormatGrey PixelFormat = 0x59455247 // 'GREY'
	// FormatRGB24 is packed R G B, three bytes per pixel.
	FormatRGB24 PixelFormat = 0x33424752 // 'RGB3'
	// FormatNV12 is YUV 4:2:0 in two planes: Height lines of Y, then
	// (Height+1)/2 lines of interleaved Cb Cr, every line Stride bytes.
	FormatNV12 PixelFormat = 0x3231564e // 'NV12'
	// FormatYU12 (I420) is YUV 4:2:0 in three planes: Height lines of Y
	// (Stride bytes each), then (Height+1)/2 lines of Cb and as many of Cr,
	// Stride/2 bytes each.
	FormatYU12 PixelFormat = 0x32315559 // 'YU12'
	// FormatMJPEG is Motion-JPEG: each frame's Data is one JPEG image (with
	// its Huffman tables, which this package inserts when the camera left
	// them out) and Stride is 0.
	FormatMJPEG PixelFormat = 0x47504a4d // 'MJPG'
	// FormatH264 is H.264: each frame's Data is one access unit (one coded
	// picture, with the parameter sets and SEI that precede it) as an
	// Annex B byte stream (start codes), and Stride is 0. It carries an
	// encoder's output (docs/clips.md); the detector cannot read it.
	FormatH264 PixelFormat = 0x34363248 // 'H264'
)

// String returns the FourCC ("YUYV", "GREY", "RGB3", ...) when it is printable
// ASCII, and the code in hex otherwise.
func (p PixelFormat) String() string {
	b := [4]byte{byte(p), byte(p >> 8), byte(p >> 16), byte(p >> 24)}
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return fmt.Sprintf("0x%08x", uint32(p))
		}
	}
	return string(b[:])
}

// Compressed reports whether frames of this format are compressed (MJPEG).
func (p PixelFormat) Compressed() bool { return p == FormatMJPEG }

// bytesPerPixel is the size of one pixel in the packed formats, or 0 for
// any other format.
func (p PixelFormat) bytesPerPixel() int {
	switch p {
	case FormatYUYV:
		return 2
	case FormatGrey:
		return 1
	case FormatRGB24:
		return 3
	}
	return 0
}

// Image size limits: a larger frame is refused as malformed.
const (
	maxFrameSide  = 1 << 15
	maxFrameBytes = 1 << 30
)

// imageLayout checks the geometry of an uncompressed image of format p and
// returns need, the smallest buffer that holds it (the last line may stop
// after its pixels), and full, its size with every line padded to the
// stride. Sizes are computed in 64 bits, so a bad stride cannot overflow on
// 32-bit ARM.
func imageLayout(p PixelFormat, w, h, stride int) (need, full int, err error) {
	if w < 1 || h < 1 || w > maxFrameSide || h > maxFrameSide {
		return 0, 0, fmt.Errorf("size %dx%d, want 1..%d per side", w, h, maxFrameSide)
	}
	W, H, S := int64(w), int64(h), int64(stride)
	cw, ch := (W+1)/2, (H+1)/2 // 4:2:0 chroma plane size
	var n, f int64
	switch p {
	case FormatYUYV, FormatGrey, FormatRGB24:
		bpp := int64(p.bytesPerPixel())
		if p == FormatYUYV && w%2 != 0 {
			return 0, 0, fmt.Errorf("YUYV width %d is odd", w)
		}
		if S < W*bpp {
			return 0, 0, fmt.Errorf("stride %d below %d bytes per line of %dx%d %v", stride, W*bpp, w, h, p)
		}
		n, f = S*(H-1)+W*bpp, S*H
	case FormatNV12:
		if S < 2*cw {
			return 0, 0, fmt.Errorf("stride %d below %d bytes per line of %dx%d %v", stride, 2*cw, w, h, p)
		}
		n, f = S*H+S*(ch-1)+2*cw, S*(H+ch)
	case FormatYU12:
		cs := S / 2
		if S < W || cs < cw {
			return 0, 0, fmt.Errorf("stride %d below %d bytes per line of %dx%d %v", stride, 2*cw, w, h, p)
		}
		n, f = S*H+cs*ch+cs*(ch-1)+cw, S*H+2*cs*ch
	default:
		return 0, 0, fmt.Errorf("format %v: %w", p, ErrUnsupportedFormat)
	}
	if f > maxFrameBytes {
		return 0, 0, fmt.Errorf("%v frame %dx%d stride %d needs %d bytes, above %d", p, w, h, stride, f, maxFrameBytes)
	}
	return int(n), int(f), nil
}

// Frame is one captured image. Sources fill a caller-owned Frame and reuse
// its slices, so keep a frame past the next call to Next with [Frame.CopyTo].
type Frame struct {
	Width, Height int
	// Luma is the 8-bit luma plane, Width*Height bytes, stride Width, for
	// frames whose Data has none in place: RGB24 (BT.601 full-range luma,
	// the JPEG/JFIF definition) and MJPEG (decoded). For YUYV, GREY, NV12 and
	// YU12 sources leave it empty, since Data holds the luma: read it with
	// LumaPlane, or make it with FillLuma.
	Luma []byte
	// Format is the pixel format of Data.
	Format PixelFormat
	// Data is the image in its native format: the pixels (see the Format
	// constants for the layout of each), or the JPEG of an MJPEG frame.
	Data []byte
	// Stride is the number of bytes per line of Data (of its first plane for
	// NV12 and YU12); 0 for MJPEG.
	Stride int
	// Time is the capture time: the source's timeline (synthetic and
	// directory sources), or for V4L2 the driver's timestamp of the frame
	// mapped onto the source's clock (see [V4L2]).
	Time time.Time
	// Sequence is the frame's number: from 0 on the source's timeline, or
	// the driver's frame counter for V4L2, where a gap is a dropped frame.
	Sequence uint64
}

// CopyTo makes dst a deep copy of f, reusing dst's buffers: once dst has held
// a frame of this size, CopyTo allocates nothing.
func (f *Frame) CopyTo(dst *Frame) {
	luma, data := dst.Luma, dst.Data
	*dst = *f
	dst.Luma = append(luma[:0], f.Luma...)
	dst.Data = append(data[:0], f.Data...)
}

// validate reports whether the frame's geometry and buffers are consistent.
// It does not decode an MJPEG frame.
func (f *Frame) validate() error {
	if f.Width <= 0 || f.Height <= 0 || f.Width > maxFrameSide || f.Height > maxFrameSide {
		return fmt.Errorf("capture: frame size %dx%d", f.Width, f.Height)
	}
	if !f.Format.lumaInData() && len(f.Luma) < f.Width*f.Height {
		return fmt.Errorf("capture: frame %dx%d has %d luma bytes, want %d", f.Width, f.Height, len(f.Luma), f.Width*f.Height)
	}
	if f.Format == FormatMJPEG {
		if len(f.Data) == 0 {
			return fmt.Errorf("capture: MJPEG frame %dx%d has no data", f.Width, f.Height)
		}
		return nil
	}
	need, _, err := imageLayout(f.Format, f.Width, f.Height, f.Stride)
	if err != nil {
		return fmt.Errorf("capture: frame: %w", err)
	}
	if len(f.Data) < need {
		return fmt.Errorf("capture: %v frame %dx%d stride %d has %d bytes, want %d", f.Format, f.Width, f.Height, f.Stride, len(f.Data), need)
	}
	return nil
}

// Image returns a colour image of the frame for thumbnails and debugging:
// YCbCr for YUYV, NV12, YU12 and MJPEG, Gray for GREY (sharing the frame's
// data), RGBA for RGB24. It allocates (and decodes an MJPEG frame); it is not
// for the per-frame path. A frame whose native data is inconsistent or does
// not decode is shown from its luma plane, and a frame without a usable luma
// plane is an empty image.
func (f *Frame) Image() image.Image {
	img, err := f.image()
	if err != nil {
		if f.Width > 0 && f.Height > 0 && f.Width <= maxFrameSide && f.Height <= maxFrameSide && len(f.Luma) >= f.Width*f.Height {
			return &image.Gray{Pix: f.Luma[:f.Width*f.Height], Stride: f.Width, Rect: image.Rect(0, 0, f.Width, f.Height)}
		}
		return image.NewGray(image.Rectangle{})
	}
	return img
}

// image converts the native data, or says why it cannot.
func (f *Frame) image() (image.Image, error) {
	if err := f.validate(); err != nil {
		return nil, err
	}
	w, h := f.Width, f.Height
	switch f.Format {
	case FormatGrey:
		return &image.Gray{Pix: f.Data, Stride: f.Stride, Rect: image.Rect(0, 0, w, h)}, nil
	case FormatMJPEG:
		img, err := decodeJPEG(f.Data)
		if err != nil {
			return nil, err
		}
		if b := img.Bounds(); b.Dx() != w || b.Dy() != h {
			return nil, fmt.Errorf("capture: MJPEG frame is %dx%d, frame says %dx%d", b.Dx(), b.Dy(), w, h)
		}
		return img, nil
	case FormatYUYV:
		img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio422)
		for y := range h {
			row := f.Data[y*f.Stride : y*f.Stride+2*w]
			yp := img.Y[y*img.YStride:]
			cb := img.Cb[y*img.CStride:]
			cr := img.Cr[y*img.CStride:]
			for i := range w / 2 {
				yp[2*i] = row[4*i]
				cb[i] = row[4*i+1]
				yp[2*i+1] = row[4*i+2]
				cr[i] = row[4*i+3]
			}
		}
		return img, nil
	case FormatNV12, FormatYU12:
		img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
		for y := range h {
			copy(img.Y[y*img.YStride:y*img.YStride+w], f.Data[y*f.Stride:])
		}
		cw, ch := (w+1)/2, (h+1)/2
		chroma := f.Data[f.Stride*h:]
		for y := range ch {
			cb := img.Cb[y*img.CStride : y*img.CStride+cw]
			cr := img.Cr[y*img.CStride : y*img.CStride+cw]
			if f.Format == FormatNV12 {
				row := chroma[y*f.Stride:]
				for x := range cw {
					cb[x], cr[x] = row[2*x], row[2*x+1]
				}
			} else {
				cs := f.Stride / 2
				copy(cb, chroma[y*cs:])
				copy(cr, chroma[cs*ch+y*cs:])
			}
		}
		return img, nil
	default: // FormatRGB24
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		for y := range h {
			row := f.Data[y*f.Stride : y*f.Stride+3*w]
			out := img.Pix[y*img.Stride:]
			for x := range w {
				out[4*x] = row[3*x]
				out[4*x+1] = row[3*x+1]
				out[4*x+2] = row[3*x+2]
				out[4*x+3] = 0xff
			}
		}
		return img, nil
	}
}

// Source produces frames. Next fills f (reusing its buffers) with the next
// frame; it returns [ErrEndOfStream] when a finite source is exhausted, and
// ctx.Err() when ctx ends first. Next and Close must not be called
// concurrently unless the source says otherwise.
type Source interface {
	Next(ctx context.Context, f *Frame) error
	Close() error
}

// Sentinel errors.
var (
	// ErrEndOfStream is returned by Next when a finite source has no more frames.
	ErrEndOfStream = errors.New("capture: end of stream")
	// ErrNoDevice means the camera is absent: no such device node, a node
	// that is not a video capture device, or a device that went away while
	// streaming (ENODEV, ENXIO, EIO).
	ErrNoDevice = errors.New("capture: no such camera")
	// ErrUnsupported means V4L2 capture is not available on this platform.
	ErrUnsupported = errors.New("capture: V4L2 is not supported on this platform")
	// ErrUnsupportedFormat means a pixel format this package cannot handle.
	ErrUnsupportedFormat = errors.New("capture: unsupported pixel format")
	// ErrClosed is returned by Next after Close.
	ErrClosed = errors.New("capture: source closed")
)

// NominalFPS is the frame rate of the timeline of a source configured with
// FPS 0 ("as fast as possible"): frames are produced without waiting, but
// their Time still advances by 1/NominalFPS per frame, so a fast run has
// realistic frame times.
const NominalFPS = 10

// timeline maps sequence numbers to frame times and paces a source.
type timeline struct {
	clk   clock.Clock
	start time.Time
	fps   float64 // 0: as fast as possible on the nominal timeline
}

func newTimeline(clk clock.Clock, fps float64) timeline {
	clk = clock.Or(clk)
	return timeline{clk: clk, start: clk.Now(), fps: fps}
}

// rate is the frame rate of the timeline.
func (t *timeline) rate() float64 {
	if t.fps > 0 {
		return t.fps
	}
	return NominalFPS
}

// offset is frame seq's time since the start.
func (t *timeline) offset(seq uint64) time.Duration {
	return offsetAt(seq, t.rate())
}

func offsetAt(seq uint64, rate float64) time.Duration {
	return time.Duration(float64(seq) / rate * float64(time.Second))
}

// wait blocks until frame seq is due (FPS > 0) or ctx ends; it returns at
// once with FPS 0 or when the frame is already late (late frames are not
// dropped: their Time stays on the timeline).
func (t *timeline) wait(ctx context.Context, seq uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if t.fps <= 0 {
		return nil
	}
	d := t.start.Add(t.offset(seq)).Sub(t.clk.Now())
	if d <= 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.clk.After(d):
		return nil
	}
}

// grow returns b resized to n bytes, reusing its array when it is big enough.
func grow(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:n]
	}
	return make([]byte, n)
}

// lumaFromYUYV writes the Y bytes of a YUYV image into dst (stride w).
func lumaFromYUYV(dst, src []byte, w, h, stride int) {
	for y := range h {
		row := src[y*stride : y*stride+2*w]
		out := dst[y*w : y*w+w]
		if yuyvWords {
			yuyvLumaRowWords(out, row)
		} else {
			yuyvLumaRowBytes(out, row)
		}
	}
}

// yuyvWords picks the row loop of lumaFromYUYV at compile time: 64-bit
// loads and shifts where binary.LittleEndian.Uint64 compiles to one
// (unaligned) load and 64-bit arithmetic is native, byte moves elsewhere. On
// 32-bit ARM the compiler splits every wide load and store into byte
// accesses and a 64-bit shift into several instructions, so there the words
// would only add work to the byte moves.
const yuyvWords = runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64"

// yuyvLumaRowWords writes the Y bytes of one YUYV line, row (at least
// 2*len(out) bytes), into out: 32 bytes in, 16 out per step.
func yuyvLumaRowWords(out, row []byte) {
	row = row[:2*len(out)]
	for len(out) >= 16 && len(row) >= 32 {
		o, r := (*[16]byte)(out), (*[32]byte)(row)
		le := binary.LittleEndian
		le.PutUint64(o[0:8], yuyvEvenBytes(le.Uint64(r[0:8]), le.Uint64(r[8:16])))
		le.PutUint64(o[8:16], yuyvEvenBytes(le.Uint64(r[16:24]), le.Uint64(r[24:32])))
		out, row = out[16:], row[32:]
	}
	for x := range out {
		out[x] = row[2*x]
	}
}

// yuyvEvenBytes returns the even bytes of a then those of b (little-endian
// words: the four Y of a's two YUYV pixel pairs, then b's).
func yuyvEvenBytes(a, b uint64) uint64 {
	const (
		even8  = 0x00ff00ff00ff00ff // bytes Y0 _ Y1 _ Y2 _ Y3 _
		even16 = 0x0000ffff0000ffff // bytes Y0 Y1 _ _ Y2 Y3 _ _
	)
	a, b = a&even8, b&even8
	a, b = (a|a>>8)&even16, (b|b>>8)&even16
	return uint64(uint32(a|a>>16)) | (b|b>>16)<<32
}

// yuyvLumaRowBytes is yuyvLumaRowWords with byte moves, 16 to a step
// without bounds checks.
func yuyvLumaRowBytes(out, row []byte) {
	row = row[:2*len(out)]
	for len(out) >= 16 && len(row) >= 32 {
		o, r := (*[16]byte)(out), (*[32]byte)(row)
		o[0], o[1], o[2], o[3] = r[0], r[2], r[4], r[6]
		o[4], o[5], o[6], o[7] = r[8], r[10], r[12], r[14]
		o[8], o[9], o[10], o[11] = r[16], r[18], r[20], r[22]
		o[12], o[13], o[14], o[15] = r[24], r[26], r[28], r[30]
		out, row = out[16:], row[32:]
	}
	for x := range out {
		out[x] = row[2*x]
	}
}

// lumaFromGrey copies a GREY image into dst (stride w).
func lumaFromGrey(dst, src []byte, w, h, stride int) {
	for y := range h {
		copy(dst[y*w:y*w+w], src[y*stride:y*stride+w])
	}
}

// lumaFromRGB24 writes BT.601 full-range luma of an RGB24 image into dst
// (stride w), with the same arithmetic as [color.RGBToYCbCr].
func lumaFromRGB24(dst, src []byte, w, h, stride int) {
	for y := range h {
		row := src[y*stride : y*stride+3*w]
		out := dst[y*w : y*w+w]
		for x := range out {
			out[x] = rgbLuma(row[3*x], row[3*x+1], row[3*x+2])
		}
	}
}

func rgbLuma(r, g, b uint8) uint8 {
	return uint8((19595*uint32(r) + 38470*uint32(g) + 7471*uint32(b) + 1<<15) >> 16)
}

// lumaInData reports whether Data holds the luma plane in place (so
// sources leave Frame.Luma empty).
func (p PixelFormat) lumaInData() bool {
	switch p {
	case FormatYUYV, FormatGrey, FormatNV12, FormatYU12:
		return true
	}
	return false
}

// LumaPlane returns the frame's luma plane without copying it: pixel (x, y)
// is pix[y*stride+x*step]. It is Data itself for YUYV (step 2: the Y bytes),
// GREY, NV12 and YU12 (step 1), and Luma for the others (or when Luma is
// already filled). The plane is as valid as the frame.
func (f *Frame) LumaPlane() (pix []byte, stride, step int) {
	if len(f.Luma) >= f.Width*f.Height && f.Width > 0 || !f.Format.lumaInData() {
		return f.Luma, f.Width, 1
	}
	if f.Format == FormatYUYV {
		return f.Data, f.Stride, 2
	}
	return f.Data, f.Stride, 1
}

// FillLuma sets f.Luma (stride Width) from f.Data of an uncompressed frame,
// reusing f.Luma's buffer, for consumers that want a packed plane (the motion
// detector reads LumaPlane in place instead). Compressed frames (MJPEG) are
// left to their decoder.
func (f *Frame) FillLuma() { fillLuma(f) }

// fillLuma sets f.Luma from f.Data of an uncompressed frame.
func fillLuma(f *Frame) {
	f.Luma = grow(f.Luma, f.Width*f.Height)
	switch f.Format {
	case FormatYUYV:
		lumaFromYUYV(f.Luma, f.Data, f.Width, f.Height, f.Stride)
	case FormatGrey, FormatNV12, FormatYU12: // the Y plane comes first
		lumaFromGrey(f.Luma, f.Data, f.Width, f.Height, f.Stride)
	case FormatRGB24:
		lumaFromRGB24(f.Luma, f.Data, f.Width, f.Height, f.Stride)
	}
}
