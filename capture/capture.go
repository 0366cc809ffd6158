// Package capture produces camera frames for keyframe: from a V4L2 device
// (github.com/blackjack/webcam), from a directory of still images, or from a
// synthetic scene that runs on any machine.
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
	"errors"
	"fmt"
	"image"
	"time"
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

// bytesPerPixel is the size of one pixel in the packed formats this package
// handles, or 0 for any other format.
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

// Frame is one captured image. Sources fill a caller-owned Frame and reuse
// its slices, so keep a frame past the next call to Next with [Frame.CopyTo].
type Frame struct {
	Width, Height int
	// Luma is the 8-bit luma plane: Width*Height bytes, stride Width. For
	// RGB24 it is BT.601 full-range luma (the JPEG/JFIF definition).
	Luma []byte
	// Format is the pixel format of Data.
	Format PixelFormat
	// Data is the image in its native format.
	Data []byte
	// Stride is the number of bytes per line of Data.
	Stride int
	// Time is the capture time: the source's timeline (synthetic and
	// directory sources) or the clock reading when the frame was taken from
	// the driver (V4L2).
	Time time.Time
	// Sequence is the frame's number from the source, starting at 0.
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
func (f *Frame) validate() error {
	if f.Width <= 0 || f.Height <= 0 {
		return fmt.Errorf("capture: frame size %dx%d", f.Width, f.Height)
	}
	if len(f.Luma) < f.Width*f.Height {
		return fmt.Errorf("capture: frame %dx%d has %d luma bytes, want %d", f.Width, f.Height, len(f.Luma), f.Width*f.Height)
	}
	bpp := f.Format.bytesPerPixel()
	if bpp == 0 {
		return fmt.Errorf("capture: frame format %v: %w", f.Format, ErrUnsupportedFormat)
	}
	if f.Format == FormatYUYV && f.Width%2 != 0 {
		return fmt.Errorf("capture: YUYV frame width %d is odd", f.Width)
	}
	if f.Stride < f.Width*bpp {
		return fmt.Errorf("capture: frame stride %d below %d bytes per line", f.Stride, f.Width*bpp)
	}
	if need := f.Stride*(f.Height-1) + f.Width*bpp; len(f.Data) < need {
		return fmt.Errorf("capture: %v frame %dx%d stride %d has %d bytes, want %d", f.Format, f.Width, f.Height, f.Stride, len(f.Data), need)
	}
	return nil
}

// Image returns a colour image of the frame for thumbnails and debugging. It
// allocates; it is not for the per-frame path. A frame whose native data is
// inconsistent is shown from its luma plane, and a frame without a usable
// luma plane is an empty image.
func (f *Frame) Image() image.Image {
	if f.validate() != nil {
		if f.Width > 0 && f.Height > 0 && len(f.Luma) >= f.Width*f.Height {
			return &image.Gray{Pix: f.Luma[:f.Width*f.Height], Stride: f.Width, Rect: image.Rect(0, 0, f.Width, f.Height)}
		}
		return image.NewGray(image.Rectangle{})
	}
	w, h := f.Width, f.Height
	switch f.Format {
	case FormatGrey:
		return &image.Gray{Pix: f.Data, Stride: f.Stride, Rect: image.Rect(0, 0, w, h)}
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
		return img
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
		return img
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
	// ErrNoDevice means the camera is absent: no such device node, or a node
	// that is not a video capture device.
	ErrNoDevice = errors.New("capture: no such camera")
	// ErrUnsupported means V4L2 capture is not available on this platform.
	ErrUnsupported = errors.New("capture: V4L2 is not supported on this platform")
	// ErrUnsupportedFormat means a pixel format this package cannot handle.
	ErrUnsupportedFormat = errors.New("capture: unsupported pixel format")
	// ErrClosed is returned by Next after Close.
	ErrClosed = errors.New("capture: source closed")
)

// Clock is the time source of the paced sources. A nil Clock passed to a
// constructor means the system clock.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

func orSystemClock(c Clock) Clock {
	if c == nil {
		return systemClock{}
	}
	return c
}

// NominalFPS is the frame rate of the timeline of a source configured with
// FPS 0 ("as fast as possible"): frames are produced without waiting, but
// their Time still advances by 1/NominalFPS per frame, so a fast run has
// realistic frame times.
const NominalFPS = 10

// timeline maps sequence numbers to frame times and paces a source.
type timeline struct {
	clk   Clock
	start time.Time
	fps   float64 // 0: as fast as possible on the nominal timeline
}

func newTimeline(clk Clock, fps float64) timeline {
	clk = orSystemClock(clk)
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
		for x := range out {
			out[x] = row[2*x]
		}
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

// fillLuma sets f.Luma from f.Data.
func fillLuma(f *Frame) {
	f.Luma = grow(f.Luma, f.Width*f.Height)
	switch f.Format {
	case FormatYUYV:
		lumaFromYUYV(f.Luma, f.Data, f.Width, f.Height, f.Stride)
	case FormatGrey:
		lumaFromGrey(f.Luma, f.Data, f.Width, f.Height, f.Stride)
	case FormatRGB24:
		lumaFromRGB24(f.Luma, f.Data, f.Width, f.Height, f.Stride)
	}
}
