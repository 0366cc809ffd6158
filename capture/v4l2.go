package capture

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The platform-independent half of the V4L2 source: configuration, counters,
// probe results, and the pure helpers (format choice, validating what the
// driver set and what it delivered, sequence numbers, timestamps). The device
// code is in v4l2_linux.go.

// V4L2 defaults and limits.
const (
	v4l2DefaultDevice  = "/dev/video0"
	v4l2DefaultWidth   = 640
	v4l2DefaultHeight  = 480
	v4l2DefaultBuffers = 3
	v4l2DefaultStall   = 5 * time.Second
	v4l2MaxSide        = 16384
	v4l2MaxBuffers     = 32 // more than a driver may hand back for a request of 2..4
	// v4l2PollSlice is the longest single wait for a frame: Next checks its
	// context and Close between waits.
	v4l2PollSlice = 250 * time.Millisecond
	// v4l2MaxAgain is how many wakeups in a row without a frame to dequeue
	// (EAGAIN) end Next with an error instead of spinning.
	v4l2MaxAgain = 100
)

// ErrStalled means a camera delivered no usable frame for the stall timeout.
var ErrStalled = errors.New("capture: camera stalled")

// V4L2Config configures [OpenV4L2].
type V4L2Config struct {
	// Device is the capture node; "" means /dev/video0.
	Device string
	// Width and Height are the requested size; 0 means 640 and 480. The
	// driver may choose another size: the frames carry the one it set.
	Width, Height int
	// FPS is the requested frame rate; 0 leaves the driver's default. It is
	// set with VIDIOC_S_PARM when the driver supports that; the rate the
	// driver chose is in [V4L2.Geometry]. A driver that cannot set it is
	// logged, not fatal.
	FPS float64
	// Format is the pixel format to capture: FormatYUYV, FormatNV12,
	// FormatYU12, FormatGrey, FormatRGB24 or FormatMJPEG ([ParsePixelFormat]
	// reads config values). 0 picks the best the camera offers for the size
	// and rate: an uncompressed format when one offers both, else MJPEG when
	// it does, else an uncompressed format offering the size, and so on.
	Format PixelFormat
	// Buffers is the number of driver buffers, 2..4; 0 means 3.
	Buffers int
	// Stall is how long Next waits without a usable frame before it returns
	// [ErrStalled]; 0 means 5 s.
	Stall time.Duration
	// Controls are set, in order, on every open, after the format and frame
	// rate (set auto modes off before the manual values they unlock, e.g.
	// exposure_auto=1 before exposure_absolute). An unknown control, a value
	// out of range or a read-only control fails the open.
	Controls []Control
	// Logger receives the open summary and warnings (frame rate not set);
	// nil means slog.Default().
	Logger *slog.Logger
}

// withDefaults fills in the zero fields and checks the others.
func (c V4L2Config) withDefaults() (V4L2Config, error) {
	if c.Device == "" {
		c.Device = v4l2DefaultDevice
	}
	if c.Width == 0 {
		c.Width = v4l2DefaultWidth
	}
	if c.Height == 0 {
		c.Height = v4l2DefaultHeight
	}
	if c.Buffers == 0 {
		c.Buffers = v4l2DefaultBuffers
	}
	if c.Stall == 0 {
		c.Stall = v4l2DefaultStall
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.Width < 1 || c.Width > v4l2MaxSide:
		return c, fmt.Errorf("capture: %s: width %d, want 1..%d", c.Device, c.Width, v4l2MaxSide)
	case c.Height < 1 || c.Height > v4l2MaxSide:
		return c, fmt.Errorf("capture: %s: height %d, want 1..%d", c.Device, c.Height, v4l2MaxSide)
	case c.Buffers < 2 || c.Buffers > 4:
		return c, fmt.Errorf("capture: %s: buffers %d, want 2..4", c.Device, c.Buffers)
	case c.Stall < 0:
		return c, fmt.Errorf("capture: %s: stall timeout %v, want > 0", c.Device, c.Stall)
	case math.IsNaN(c.FPS) || math.IsInf(c.FPS, 0) || c.FPS < 0 || c.FPS > 1000:
		return c, fmt.Errorf("capture: %s: fps %v, want 0..1000", c.Device, c.FPS)
	case c.Format != 0 && !v4l2Supported(c.Format):
		return c, fmt.Errorf("capture: %s: format %v: %w (want %s)", c.Device, c.Format, ErrUnsupportedFormat, formatList(v4l2Formats()))
	}
	controls, err := checkControls(c.Controls)
	if err != nil {
		return c, fmt.Errorf("capture: %s: %w", c.Device, err)
	}
	c.Controls = controls
	return c, nil
}

// v4l2Formats are the formats OpenV4L2 captures, in the order it prefers
// them: uncompressed first (no decoding, no allocation per frame), the
// 4:2:x YUV ones before GREY (colour thumbnails) and RGB24 (3 bytes a pixel).
func v4l2Formats() []PixelFormat {
	return []PixelFormat{FormatYUYV, FormatNV12, FormatYU12, FormatGrey, FormatRGB24, FormatMJPEG}
}

func v4l2Supported(p PixelFormat) bool { return slices.Contains(v4l2Formats(), p) }

// ParsePixelFormat reads a capture.format config value: "" or "auto" (0,
// let OpenV4L2 choose), or a FourCC OpenV4L2 captures: YUYV, NV12, YU12 (or
// I420), GREY, RGB3, MJPG (or MJPEG). Case is ignored.
func ParsePixelFormat(s string) (PixelFormat, error) {
	switch u := strings.ToUpper(strings.TrimSpace(s)); u {
	case "", "AUTO":
		return 0, nil
	case "MJPEG":
		return FormatMJPEG, nil
	case "I420":
		return FormatYU12, nil
	default:
		for _, p := range v4l2Formats() {
			if p.String() == u {
				return p, nil
			}
		}
	}
	return 0, fmt.Errorf("capture: pixel format %q: want auto, %s", s, formatList(v4l2Formats()))
}

func formatList(ps []PixelFormat) string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.String()
	}
	return strings.Join(names, ", ")
}

// V4L2Stats counts what a V4L2 source saw.
type V4L2Stats struct {
	Frames   uint64 // frames delivered
	Dropped  uint64 // frames the driver lost: gaps in its sequence numbers
	Errors   uint64 // buffers the driver flagged V4L2_BUF_FLAG_ERROR: skipped
	Empty    uint64 // buffers dequeued with no data (bytesused 0): skipped
	Short    uint64 // buffers shorter than the format needs: skipped
	Corrupt  uint64 // MJPEG frames that did not decode or had the wrong size: skipped
	Timeouts uint64 // waits (of up to 250 ms) that ended without a frame
	Again    uint64 // dequeues that found no frame (EAGAIN) after a wakeup
	Stalls   uint64 // Next calls that ended with ErrStalled
}

// v4l2Counters are the live counters; Stats may read them while Next runs.
type v4l2Counters struct {
	frames, dropped, errors, empty, short, corrupt, timeouts, again, stalls atomic.Uint64
}

func (c *v4l2Counters) snapshot() V4L2Stats {
	return V4L2Stats{
		Frames:   c.frames.Load(),
		Dropped:  c.dropped.Load(),
		Errors:   c.errors.Load(),
		Empty:    c.empty.Load(),
		Short:    c.short.Load(),
		Corrupt:  c.corrupt.Load(),
		Timeouts: c.timeouts.Load(),
		Again:    c.again.Load(),
		Stalls:   c.stalls.Load(),
	}
}

// V4L2Geometry is what the driver actually set (VIDIOC_G_FMT and
// VIDIOC_G_PARM), which may differ from what was asked.
type V4L2Geometry struct {
	Format        PixelFormat
	Width, Height int
	Stride        int // bytes per line (of the first plane); 0 for MJPEG
	SizeImage     int // the driver's buffer size for one frame
	// Interval is the frame interval the driver reports, {0, 0} when it
	// reports none; FPS is its inverse (0 when unknown).
	Interval Interval
	FPS      float64
	Buffers  int // driver buffers in use
	// Card and Bus are the driver's device name and bus location
	// (VIDIOC_QUERYCAP), e.g. "HD Pro Webcam C920" and
	// "usb-0000:01:00.0-1.2": what a record names as its source.
	Card, Bus string
}

// DeviceInfo describes one V4L2 capture node found by [Probe].
type DeviceInfo struct {
	Path   string // e.g. /dev/video0
	Name   string // the node's name, e.g. video0
	Driver string // driver name, e.g. uvcvideo
	Card   string // device name, e.g. "HD Pro Webcam C920"
	Bus    string // bus location, e.g. usb-0000:01:00.0-1.2
	// Formats are the pixel formats the node offers; those this package can
	// capture are marked in FormatInfo.Supported.
	Formats []FormatInfo
	// Controls are the node's controls, with their current values.
	Controls []ControlInfo
	// Err is why the node could not be (fully) probed.
	Err error
}

// FormatInfo is one pixel format of a capture node.
type FormatInfo struct {
	Format      PixelFormat
	Description string
	Compressed  bool // the driver flags it compressed
	Emulated    bool // converted in software by the driver
	// Sizes are the frame sizes, each with its frame rates.
	Sizes []FrameSize
	// Supported reports whether OpenV4L2 can capture this format.
	Supported bool
}

// FrameSize is one answer of VIDIOC_ENUM_FRAMESIZES: a discrete size
// (StepWidth 0), or a range MinWidth..Width by StepWidth (and the same for
// heights; continuous ranges have steps of 1).
type FrameSize struct {
	Width, Height         int // the size, or the largest of a range
	MinWidth, MinHeight   int // a range's smallest size; equal to Width, Height for a discrete size
	StepWidth, StepHeight int
	// Rates are the frame rates at Width x Height.
	Rates FrameRates
}

// Discrete reports whether s is one size rather than a range.
func (s FrameSize) Discrete() bool { return s.StepWidth == 0 && s.StepHeight == 0 }

// String renders "640x480", "16x16-1920x1080" (continuous) or
// "16x16-1920x1080/8x8" (stepwise, with the step).
func (s FrameSize) String() string {
	switch {
	case s.Discrete():
		return fmt.Sprintf("%dx%d", s.Width, s.Height)
	case s.StepWidth == 1 && s.StepHeight == 1:
		return fmt.Sprintf("%dx%d-%dx%d", s.MinWidth, s.MinHeight, s.Width, s.Height)
	}
	return fmt.Sprintf("%dx%d-%dx%d/%dx%d", s.MinWidth, s.MinHeight, s.Width, s.Height, s.StepWidth, s.StepHeight)
}

// Contains reports whether the driver offers w x h within s.
func (s FrameSize) Contains(w, h int) bool {
	if s.Discrete() {
		return w == s.Width && h == s.Height
	}
	in := func(v, lo, hi, step int) bool {
		return v >= lo && v <= hi && (step <= 1 || (v-lo)%step == 0)
	}
	return in(w, s.MinWidth, s.Width, s.StepWidth) && in(h, s.MinHeight, s.Height, s.StepHeight)
}

// Interval is a frame interval in seconds, the fraction Num/Den.
type Interval struct{ Num, Den uint32 }

// FPS is the rate of the interval: Den/Num frames per second; 0 for a zero
// interval.
func (i Interval) FPS() float64 {
	if i.Num == 0 || i.Den == 0 {
		return 0
	}
	return float64(i.Den) / float64(i.Num)
}

// String renders the rate in frames per second, e.g. "30", "7.5", "29.97".
func (i Interval) String() string {
	return strconv.FormatFloat(math.Round(i.FPS()*100)/100, 'f', -1, 64)
}

// FrameRates are the frame intervals a format offers at one size
// (VIDIOC_ENUM_FRAMEINTERVALS): a list, or a range from Min (fastest) to Max
// (slowest) by Step. No rates at all means the driver does not say.
type FrameRates struct {
	Discrete       []Interval
	Min, Max, Step Interval
}

// Known reports whether the driver listed any rate.
func (r FrameRates) Known() bool { return len(r.Discrete) > 0 || r.Min.FPS() > 0 }

// MaxFPS is the fastest rate offered, 0 when unknown.
func (r FrameRates) MaxFPS() float64 {
	best := r.Min.FPS()
	for _, i := range r.Discrete {
		best = max(best, i.FPS())
	}
	return best
}

// String renders the rates, fastest first: "30 25 15 fps", "1-60 fps", or
// "" when unknown.
func (r FrameRates) String() string {
	if len(r.Discrete) > 0 {
		d := slices.Clone(r.Discrete)
		slices.SortStableFunc(d, func(a, b Interval) int {
			switch fa, fb := a.FPS(), b.FPS(); {
			case fa > fb:
				return -1
			case fa < fb:
				return 1
			}
			return 0
		})
		parts := make([]string, len(d))
		for i, iv := range d {
			parts[i] = iv.String()
		}
		return strings.Join(parts, " ") + " fps"
	}
	if r.Min.FPS() > 0 {
		return r.Max.String() + "-" + r.Min.String() + " fps"
	}
	return ""
}

// rateTolerance is how far below the requested rate an offered one may be
// and still count as reaching it (29.97 for 30).
const rateTolerance = 0.98

// offerMatch says whether a format offers the requested size or rate; the
// driver may not say.
type offerMatch int8

const (
	matchNo offerMatch = iota
	matchYes
	matchUnknown // the driver does not enumerate: assume it does
)

func (m offerMatch) ok() bool { return m != matchNo }

// formatOffer is what a camera offers in one pixel format for the requested
// size and rate.
type formatOffer struct {
	format     PixelFormat
	size, rate offerMatch
}

// sizeOffer reports whether sizes (the answers of VIDIOC_ENUM_FRAMESIZES)
// include w x h.
func sizeOffer(sizes []FrameSize, w, h int) offerMatch {
	if len(sizes) == 0 {
		return matchUnknown
	}
	if slices.ContainsFunc(sizes, func(s FrameSize) bool { return s.Contains(w, h) }) {
		return matchYes
	}
	return matchNo
}

// rateOffer reports whether rates reach fps (0: any rate will do).
func rateOffer(r FrameRates, fps float64) offerMatch {
	switch {
	case fps <= 0:
		return matchYes
	case !r.Known():
		return matchUnknown
	case r.MaxFPS() >= fps*rateTolerance:
		return matchYes
	}
	return matchNo
}

// rank orders offers: uncompressed with size and rate, MJPEG with size and
// rate, uncompressed with the size, MJPEG with the size, then any.
func (o formatOffer) rank() int {
	r := 4
	switch {
	case o.size.ok() && o.rate.ok():
		r = 0
	case o.size.ok():
		r = 2
	}
	if o.format.Compressed() {
		r++
	}
	return r
}

// chooseFormat picks the capture format among what a device offers (in
// any order; formats this package cannot capture are ignored). Equal ranks
// go by the order of v4l2Formats.
func chooseFormat(offers []formatOffer) (PixelFormat, error) {
	formats := v4l2Formats()
	best, bestRank, bestPref := PixelFormat(0), math.MaxInt, math.MaxInt
	for _, o := range offers {
		pref := slices.Index(formats, o.format)
		if pref < 0 {
			continue
		}
		if r := o.rank(); r < bestRank || (r == bestRank && pref < bestPref) {
			best, bestRank, bestPref = o.format, r, pref
		}
	}
	if bestRank == math.MaxInt {
		names := make([]string, len(offers))
		for i, o := range offers {
			names[i] = o.format.String()
		}
		slices.Sort(names)
		return 0, fmt.Errorf("device offers %s, want one of %s: %w", strings.Join(names, ", "), formatList(v4l2Formats()), ErrUnsupportedFormat)
	}
	return best, nil
}

// pixFormat is struct v4l2_pix_format, as the driver reports it (VIDIOC_G_FMT).
type pixFormat struct {
	Width, Height, PixelFormat, Field, BytesPerLine, SizeImage uint32
}

const v4l2FieldAlternate = 7

// geometry is the layout of the frames a device delivers.
type geometry struct {
	format        PixelFormat
	width, height int
	stride        int // bytes per line; 0 for MJPEG
	sizeImage     int
	need          int // the smallest buffer holding a whole frame
	full          int // a whole frame with its line padding
}

// geometryOf checks the format the driver set against the one asked for.
func geometryOf(p pixFormat, want PixelFormat) (geometry, error) {
	g := geometry{
		format: PixelFormat(p.PixelFormat),
		width:  int(p.Width), height: int(p.Height),
		stride: int(p.BytesPerLine), sizeImage: int(p.SizeImage),
	}
	if g.format != want {
		return g, fmt.Errorf("driver set format %v, asked for %v: %w", g.format, want, ErrUnsupportedFormat)
	}
	if g.width < 1 || g.height < 1 || g.width > v4l2MaxSide || g.height > v4l2MaxSide {
		return g, fmt.Errorf("driver set size %dx%d", g.width, g.height)
	}
	if p.Field == v4l2FieldAlternate {
		return g, errors.New("driver delivers alternating fields, want whole frames")
	}
	if g.sizeImage < 0 || g.sizeImage > maxFrameBytes {
		return g, fmt.Errorf("driver set image size %d", p.SizeImage)
	}
	if g.format == FormatMJPEG {
		g.stride, g.need, g.full = 0, 1, g.sizeImage
		return g, nil
	}
	if g.stride == 0 {
		g.stride = g.width * max(1, g.format.bytesPerPixel())
	}
	need, full, err := imageLayout(g.format, g.width, g.height, g.stride)
	if err != nil {
		return g, fmt.Errorf("driver set %w", err)
	}
	g.need, g.full = need, full
	return g, nil
}

var (
	errEmptyBuffer = errors.New("capture: empty buffer")
	errShortBuffer = errors.New("capture: short buffer")
)

// fillFromBuffer copies a dequeued driver buffer of an uncompressed format
// into f. An empty or short buffer leaves f unchanged and returns
// errEmptyBuffer or errShortBuffer; the caller skips and counts it.
func fillFromBuffer(f *Frame, buf []byte, g geometry) error {
	if len(buf) == 0 {
		return errEmptyBuffer
	}
	if len(buf) < g.need {
		return errShortBuffer
	}
	n := min(len(buf), g.full)
	f.Width, f.Height = g.width, g.height
	f.Format = g.format
	f.Stride = g.stride
	f.Data = grow(f.Data, n)
	copy(f.Data, buf[:n])
	f.Luma = f.Luma[:0]
	if !f.Format.lumaInData() {
		fillLuma(f)
	}
	return nil
}

// fpsInterval is the frame interval to ask for fps: 1/fps for whole rates,
// else a fraction with a denominator of up to 1000·fps, reduced.
func fpsInterval(fps float64) Interval {
	if fps <= 0 || math.IsNaN(fps) || math.IsInf(fps, 0) {
		return Interval{}
	}
	if r := math.Round(fps); math.Abs(fps-r) < 1e-9 && r >= 1 {
		return Interval{Num: 1, Den: uint32(r)}
	}
	num, den := uint64(1000), uint64(math.Round(fps*1000))
	if den == 0 {
		den = 1
	}
	a, b := num, den
	for b != 0 {
		a, b = b, a%b
	}
	return Interval{Num: uint32(num / a), Den: uint32(den / a)}
}

// seqTracker turns the driver's 32-bit frame counter into Frame.Sequence and
// counts the frames the driver dropped.
type seqTracker struct {
	started bool
	last    uint32
	ext     uint64
}

// next records the sequence number of a dequeued buffer (usable or not) and
// returns its 64-bit value and how many frames the driver lost before it. The
// counter starts at 0 on STREAMON, so a first buffer numbered n follows n lost
// frames. A number that repeats or goes back (a driver restarting its count)
// loses nothing and still advances the sequence, which only ever increases.
func (s *seqTracker) next(seq uint32) (ext, dropped uint64) {
	if !s.started {
		s.started, s.last, s.ext = true, seq, uint64(seq)
		return s.ext, uint64(seq)
	}
	d := seq - s.last // modulo 2^32: wraps around cleanly
	s.last = seq
	if d == 0 || d >= 1<<31 {
		s.ext++
		return s.ext, 0
	}
	s.ext += uint64(d)
	return s.ext, uint64(d - 1)
}

// frameTime maps a driver timestamp on CLOCK_MONOTONIC onto the source's
// clock: now (the clock) and mono (CLOCK_MONOTONIC) are read together, and
// the frame is as old on the clock as it is on the monotonic clock. It is
// computed per frame, so a wall clock stepped by NTP (a board without RTC
// boots in 1970) is followed at once. A stamp from the future counts as now.
func frameTime(now time.Time, mono, stamp time.Duration) time.Time {
	return now.Add(-max(0, mono-stamp))
}

// V4L2 capability bits (struct v4l2_capability).
const (
	capVideoCapture = 0x00000001
	capStreaming    = 0x04000000
	capDeviceCaps   = 0x80000000
)

// nodeCaps are the capabilities of this node: device_caps when the driver
// fills it, else the whole device's capabilities.
func nodeCaps(capabilities, deviceCaps uint32) uint32 {
	if capabilities&capDeviceCaps != 0 {
		return deviceCaps
	}
	return capabilities
}

// videoNodes picks the videoN names and sorts them by N.
func videoNodes(names []string) []string {
	type node struct {
		name string
		n    uint64
	}
	var nodes []node
	for _, name := range names {
		num, ok := strings.CutPrefix(name, "video")
		if !ok || num == "" {
			continue
		}
		n, err := strconv.ParseUint(num, 10, 32)
		if err != nil {
			continue
		}
		nodes = append(nodes, node{name, n})
	}
	slices.SortFunc(nodes, func(a, b node) int {
		switch {
		case a.n < b.n:
			return -1
		case a.n > b.n:
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.name
	}
	return out
}

// cString is a NUL-terminated C string in a fixed array.
func cString(b []byte) string {
	if i := slices.Index(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
