// Package m2m drives a V4L2 stateful memory-to-memory video encoder (the
// kernel's "stateful encoder interface", dev-encoder.rst) in pure Go over
// golang.org/x/sys/unix: a Raspberry Pi's bcm2835-codec (/dev/video11,
// H.264, multi-planar API) or the kernel's reference driver vicodec (FWHT,
// single-planar, or multi-planar with multiplanar=1).
//
// Raw frames (NV12, YU12 or YUYV [capture.Frame]s) are copied into the
// encoder's OUTPUT buffers by [Encoder.Encode]; coded buffers come back from
// the CAPTURE queue through [Encoder.Receive], each as one [Packet] carrying
// the capture time and sequence number of the frame it encodes (the
// driver copies the OUTPUT buffer's timestamp to the CAPTURE buffer; the
// encoder uses it as a frame id). For H.264 a packet is one access unit in
// Annex B form ([capture.FormatH264]): parameter sets that a driver returns in
// a buffer of their own are held and put in front of the next picture.
//
// Encode and Receive allocate nothing in steady state. Encode and Receive may
// run on two goroutines (the OUTPUT and the CAPTURE queue each have their own
// lock); Close may be called from a third and makes both return [ErrClosed]
// within a quarter second.
//
// Loss and recovery: a device that goes away (ENODEV, ENXIO, EIO) makes
// Encode and Receive return an error wrapping [ErrNoDevice], then and on
// every later call. The encoder does not reopen itself: the caller closes
// it and calls [Open] again, with the backoff the capture package's
// [capture.Reopening] uses between attempts. The new session starts from
// scratch: its first packet is a key frame (with the parameter sets), frame
// ids restart, and frames queued to the lost device are lost with it.
package m2m

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
)

// FormatFWHT is vicodec's codec (V4L2_PIX_FMT_FWHT): a Fast Walsh Hadamard
// Transform coded frame, each behind a 44-byte header.
const FormatFWHT capture.PixelFormat = 0x54485746 // 'FWHT'

// Sentinel errors.
var (
	// ErrNoDevice means the encoder is absent: no such node, a node that is
	// no memory-to-memory device, or one that went away while streaming.
	ErrNoDevice = errors.New("m2m: no such encoder")
	// ErrNoEncoder is returned by Find when no node encodes the wanted format.
	ErrNoEncoder = errors.New("m2m: no memory-to-memory encoder found")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("m2m: encoder closed")
	// ErrEndOfStream is returned by Receive once the drain started by
	// [Encoder.Drain] is complete (the driver's buffer flagged LAST has been
	// returned), and by Encode after Drain.
	ErrEndOfStream = errors.New("m2m: end of stream (drained)")
	// ErrUnsupported means V4L2 is not available on this platform.
	ErrUnsupported = errors.New("m2m: V4L2 memory-to-memory encoding is not supported on this platform")
)

// Config configures [Open].
type Config struct {
	// Device is the encoder's node, e.g. /dev/video11.
	Device string
	// Width and Height are the frames' size; the encoder does not scale.
	Width, Height int
	// Input is the frames' pixel format: capture.FormatNV12, FormatYU12 or
	// FormatYUYV.
	Input capture.PixelFormat
	// Codec is the coded format: capture.FormatH264 or FormatFWHT; 0 means
	// H.264.
	Codec capture.PixelFormat
	// FPS is the frame rate told to the encoder (VIDIOC_S_PARM on OUTPUT,
	// for its rate control); 0 leaves the driver's.
	FPS float64
	// Bitrate in bits per second; 0 leaves the driver's.
	Bitrate int
	// GOP is the distance between key frames in frames; 0 leaves the
	// driver's.
	GOP int
	// InBuffers and OutBuffers are the number of OUTPUT (raw) and CAPTURE
	// (coded) buffers to ask for; 0 means 4 each.
	InBuffers, OutBuffers int
	// Logger receives the controls a driver does not support; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Buffer counts.
const (
	defaultBuffers = 4
	maxBuffers     = 32
)

// withDefaults checks the configuration and fills in the defaults.
func (c Config) withDefaults() (Config, error) {
	if c.Device == "" {
		return c, errors.New("m2m: config: Device is empty")
	}
	if c.Width < 1 || c.Height < 1 || c.Width > 1<<14 || c.Height > 1<<14 {
		return c, fmt.Errorf("m2m: config: %s: size %dx%d, want 1..16384 per side", c.Device, c.Width, c.Height)
	}
	switch c.Input {
	case capture.FormatNV12, capture.FormatYU12, capture.FormatYUYV:
	default:
		return c, fmt.Errorf("m2m: config: %s: Input %v, want NV12, YU12 or YUYV: %w", c.Device, c.Input, capture.ErrUnsupportedFormat)
	}
	if c.Input == capture.FormatYUYV && c.Width%2 != 0 {
		return c, fmt.Errorf("m2m: config: %s: YUYV width %d is odd", c.Device, c.Width)
	}
	if c.Codec == 0 {
		c.Codec = capture.FormatH264
	}
	if c.Codec != capture.FormatH264 && c.Codec != FormatFWHT {
		return c, fmt.Errorf("m2m: config: %s: Codec %v, want H264 or FWHT: %w", c.Device, c.Codec, capture.ErrUnsupportedFormat)
	}
	if c.FPS < 0 || c.FPS > 1000 {
		return c, fmt.Errorf("m2m: config: %s: FPS %v, want 0..1000", c.Device, c.FPS)
	}
	if c.Bitrate < 0 || c.Bitrate > 1<<31-1 {
		return c, fmt.Errorf("m2m: config: %s: Bitrate %d, want 0..%d", c.Device, c.Bitrate, 1<<31-1)
	}
	if c.GOP < 0 || c.GOP > 1<<16 {
		return c, fmt.Errorf("m2m: config: %s: GOP %d, want 0..65536", c.Device, c.GOP)
	}
	for _, n := range []*int{&c.InBuffers, &c.OutBuffers} {
		if *n == 0 {
			*n = defaultBuffers
		}
		if *n < 1 || *n > maxBuffers {
			return c, fmt.Errorf("m2m: config: %s: buffer count %d, want 1..%d", c.Device, *n, maxBuffers)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// Packet is one coded frame.
type Packet struct {
	// Data is the coded frame, in the caller's buffer (Receive's dst, grown
	// when too small). For H.264, one access unit in Annex B form.
	Data []byte
	// Key says the frame decodes on its own (an IDR picture for H.264, an
	// I frame for FWHT): the driver's V4L2_BUF_FLAG_KEYFRAME, or for
	// drivers that do not set it, what the coded data says.
	Key bool
	// Time and Sequence are the capture time and sequence number of the
	// input frame this packet encodes. Mapped is false when the driver
	// returned a timestamp no queued frame had (Time and Sequence are then
	// zero).
	Time     time.Time
	Sequence uint64
	Mapped   bool
	// Last says the driver flagged this buffer as the last one of a drain
	// (V4L2_BUF_FLAG_LAST); the next Receive returns ErrEndOfStream.
	Last bool
}

// Info describes an open encoder: what the driver set.
type Info struct {
	Path, Driver, Card string
	// MPlane says the node uses the multi-planar API.
	MPlane bool
	Codec  capture.PixelFormat
	Input  capture.PixelFormat
	// Width and Height are the raw format's size as the driver set it (at
	// least the configured one: a driver may pad it to its alignment);
	// Stride and SizeImage its bytes per line and buffer size.
	Width, Height     int
	Stride, SizeImage int
	// CodedSize is the size of a CAPTURE (coded) buffer.
	CodedSize int
	// InBuffers and OutBuffers are the buffer counts the driver gave.
	InBuffers, OutBuffers int
	// FPS is the frame rate the driver took (0: unknown or not settable).
	FPS float64
	// ForceKey says the driver takes key-frame requests
	// (V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME).
	ForceKey bool
	// Unsupported lists the configured controls (and the frame rate) the
	// driver refused or lacks, with why.
	Unsupported []string
}

// API names the V4L2 API the node uses: "multi" (multi-planar) or "single".
func (i Info) API() string {
	if i.MPlane {
		return "multi"
	}
	return "single"
}

// Stats counts what an encoder did.
type Stats struct {
	FramesIn   uint64 // frames queued
	PacketsOut uint64 // packets returned by Receive
	KeyFrames  uint64 // of PacketsOut, key frames
	Bytes      uint64 // coded bytes returned
	Errors     uint64 // coded buffers the driver flagged V4L2_BUF_FLAG_ERROR (skipped)
	Empty      uint64 // coded buffers without data (skipped)
	KeyForced  uint64 // key frames requested of the driver
	KeyIgnored uint64 // key-frame requests the driver cannot take
	Unmapped   uint64 // packets whose timestamp matched no queued frame
}

// Node is a memory-to-memory node found by [Probe].
type Node struct {
	Path, Driver, Card string
	MPlane             bool
	// Coded lists the compressed formats of the CAPTURE queue (an encoder's
	// output), Raw the uncompressed formats of the OUTPUT queue.
	Coded, Raw []capture.PixelFormat
	// Err says why the node could not be queried.
	Err error
}

// Encoder reports whether the node encodes: compressed formats come out of
// raw ones.
func (n Node) Encoder() bool { return n.Err == nil && len(n.Coded) > 0 && len(n.Raw) > 0 }

// Offers reports whether the node encodes to codec from raw.
func (n Node) Offers(codec, raw capture.PixelFormat) bool {
	return n.Encoder() && has(n.Coded, codec) && (raw == 0 || has(n.Raw, raw))
}

func has(ps []capture.PixelFormat, p capture.PixelFormat) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// pick returns the first encoder node offering a codec, trying codecs in
// order of preference (for each codec, nodes in order), or ErrNoEncoder.
func pick(nodes []Node, raw capture.PixelFormat, codecs ...capture.PixelFormat) (Node, capture.PixelFormat, error) {
	for _, c := range codecs {
		for _, n := range nodes {
			if n.Offers(c, raw) {
				return n, c, nil
			}
		}
	}
	return Node{}, 0, fmt.Errorf("%w: none of %d nodes encodes %v from %v", ErrNoEncoder, len(nodes), codecs, raw)
}

// ---- coded data ----

// h264Info scans an Annex B buffer: whether it holds an IDR slice, and
// whether it holds any picture (VCL NAL unit, types 1..5) at all.
func h264Info(b []byte) (idr, picture bool) {
	zeros := 0
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c == 0 {
			zeros++
			continue
		}
		if c == 1 && zeros >= 2 && i+1 < len(b) {
			switch b[i+1] & 0x1f {
			case 5:
				return true, true
			case 1, 2, 3, 4:
				picture = true
			}
		}
		zeros = 0
	}
	return false, picture
}

// fwhtHeaderSize and the I-frame flag of struct fwht_cframe_hdr (big-endian
// words: magic1, magic2, version, width, height, flags, ...).
const (
	fwhtHeaderSize = 44
	fwhtFlagIFrame = 1 << 10
)

// fwhtKey reports whether an FWHT frame is an I frame (vicodec does not set
// V4L2_BUF_FLAG_KEYFRAME on its encoder's buffers).
func fwhtKey(b []byte) bool {
	if len(b) < fwhtHeaderSize {
		return false
	}
	flags := uint32(b[20])<<24 | uint32(b[21])<<16 | uint32(b[22])<<8 | uint32(b[23])
	return flags&fwhtFlagIFrame != 0
}

// ---- frame ids ----

// stampRing maps the frame ids the encoder writes as OUTPUT timestamps back
// to the frames' capture time and sequence. It holds more entries than
// buffers can be in flight (2*maxBuffers) with room for frames a driver
// holds inside.
const stampRing = 128

type stamp struct {
	id   uint64
	time time.Time
	seq  uint64
}

// ---- raw layout ----

// layout is where the planes of a raw image lie in a buffer: up to three
// planes, each rows lines of width bytes at offset off, stride bytes apart.
type layout struct {
	n      int
	planes [3]plane
}

type plane struct {
	off, stride, width, rows int
}

// end is the smallest buffer that holds the image.
func (l *layout) end() int {
	e := 0
	for _, p := range l.planes[:l.n] {
		if p.rows > 0 {
			e = max(e, p.off+p.stride*(p.rows-1)+p.width)
		}
	}
	return e
}

// rawLayout is the layout of a w x h image of format p whose first plane has
// the given stride and is allocated for allocH lines (a driver may pad the
// height: its chroma planes then start after allocH lines).
func rawLayout(p capture.PixelFormat, w, h, stride, allocH int) (layout, error) {
	cw, ch := (w+1)/2, (h+1)/2
	var l layout
	switch p {
	case capture.FormatYUYV:
		if stride < 2*w {
			return l, fmt.Errorf("stride %d below %d bytes per line of %dx%d %v", stride, 2*w, w, h, p)
		}
		l.n = 1
		l.planes[0] = plane{0, stride, 2 * w, h}
	case capture.FormatNV12:
		if stride < 2*cw || stride < w {
			return l, fmt.Errorf("stride %d below %d bytes per line of %dx%d %v", stride, max(w, 2*cw), w, h, p)
		}
		l.n = 2
		l.planes[0] = plane{0, stride, w, h}
		l.planes[1] = plane{stride * allocH, stride, 2 * cw, ch}
	case capture.FormatYU12:
		cs := stride / 2
		if stride < w || cs < cw {
			return l, fmt.Errorf("stride %d below %d bytes per line of %dx%d %v", stride, max(w, 2*cw), w, h, p)
		}
		ach := (allocH + 1) / 2
		l.n = 3
		l.planes[0] = plane{0, stride, w, h}
		l.planes[1] = plane{stride * allocH, cs, cw, ch}
		l.planes[2] = plane{stride*allocH + cs*ach, cs, cw, ch}
	default:
		return l, fmt.Errorf("format %v: %w", p, capture.ErrUnsupportedFormat)
	}
	return l, nil
}

// copyImage copies the planes of src (laid out as sl) into dst (laid out as
// dl); both layouts describe the same image, and both buffers were checked
// against their layout's end.
func copyImage(dst []byte, dl *layout, src []byte, sl *layout) {
	for i := range dl.n {
		d, s := dl.planes[i], sl.planes[i]
		if d.stride == s.stride {
			n := d.stride*(d.rows-1) + d.width
			copy(dst[d.off:d.off+n], src[s.off:s.off+n])
			continue
		}
		for y := range d.rows {
			do, so := d.off+y*d.stride, s.off+y*s.stride
			copy(dst[do:do+d.width], src[so:so+d.width])
		}
	}
}
