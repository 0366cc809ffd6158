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
// driver set and what it delivered). The device code is in v4l2_linux.go.

// V4L2 defaults.
const (
	v4l2DefaultDevice  = "/dev/video0"
	v4l2DefaultWidth   = 640
	v4l2DefaultHeight  = 480
	v4l2DefaultBuffers = 3
	v4l2DefaultStall   = 5 * time.Second
	v4l2MaxSide        = 16384
	// v4l2MaxBadBuffers is how many unusable buffers in a row end Next with
	// an error instead of skipping on.
	v4l2MaxBadBuffers = 100
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
	// FPS is the requested frame rate; 0 leaves the driver's default. A
	// driver that cannot set it is logged, not fatal.
	FPS float64
	// Buffers is the number of driver buffers, 2..4; 0 means 3.
	Buffers int
	// Stall is how long Next waits without a usable frame before it returns
	// [ErrStalled]; 0 means 5 s. It is counted in whole seconds (at least 1).
	Stall time.Duration
	// Logger receives warnings (frame rate not set); nil means slog.Default().
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
	}
	return c, nil
}

// V4L2Stats counts what a V4L2 source saw.
type V4L2Stats struct {
	Frames   uint64 // frames delivered
	Empty    uint64 // buffers dequeued with no data (bytesused 0): skipped
	Short    uint64 // buffers shorter than the format needs: skipped
	Timeouts uint64 // one-second waits that ended without a frame
	Again    uint64 // dequeues that found no frame (EAGAIN) after a wakeup
}

// v4l2Counters are the live counters; Stats may read them while Next runs.
type v4l2Counters struct {
	frames, empty, short, timeouts, again atomic.Uint64
}

func (c *v4l2Counters) snapshot() V4L2Stats {
	return V4L2Stats{
		Frames:   c.frames.Load(),
		Empty:    c.empty.Load(),
		Short:    c.short.Load(),
		Timeouts: c.timeouts.Load(),
		Again:    c.again.Load(),
	}
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
	// Err is why the node could not be (fully) probed.
	Err error
}

// FormatInfo is one pixel format of a capture node.
type FormatInfo struct {
	Format      PixelFormat
	Description string
	// Sizes are the frame sizes: "640x480" (discrete), "16x16-1920x1080"
	// (continuous) or "16x16-1920x1080/8x8" (stepwise, with the step).
	Sizes []string
	// Supported reports whether OpenV4L2 can capture this format.
	Supported bool
}

// v4l2Formats are the formats OpenV4L2 captures, best first.
func v4l2Formats() [2]PixelFormat { return [...]PixelFormat{FormatYUYV, FormatGrey} }

func v4l2Supported(p PixelFormat) bool {
	f := v4l2Formats()
	return slices.Contains(f[:], p)
}

// chooseFormat picks the capture format among those a device offers.
func chooseFormat(offered []PixelFormat) (PixelFormat, error) {
	for _, p := range v4l2Formats() {
		if slices.Contains(offered, p) {
			return p, nil
		}
	}
	names := make([]string, len(offered))
	for i, p := range offered {
		names[i] = p.String()
	}
	slices.Sort(names)
	return 0, fmt.Errorf("device offers %s, want YUYV or GREY: %w", strings.Join(names, ", "), ErrUnsupportedFormat)
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
	stride        int // bytes per line
}

// need is the smallest buffer that holds a whole frame.
func (g geometry) need() int {
	return g.stride*(g.height-1) + g.width*g.format.bytesPerPixel()
}

// geometryOf checks the format the driver set against the one asked for.
func geometryOf(p pixFormat, want PixelFormat) (geometry, error) {
	g := geometry{format: PixelFormat(p.PixelFormat), width: int(p.Width), height: int(p.Height), stride: int(p.BytesPerLine)}
	if g.format != want {
		return g, fmt.Errorf("driver set format %v, asked for %v: %w", g.format, want, ErrUnsupportedFormat)
	}
	if g.width < 1 || g.height < 1 || g.width > v4l2MaxSide || g.height > v4l2MaxSide {
		return g, fmt.Errorf("driver set size %dx%d", g.width, g.height)
	}
	if g.format == FormatYUYV && g.width%2 != 0 {
		return g, fmt.Errorf("driver set odd YUYV width %d", g.width)
	}
	if p.Field == v4l2FieldAlternate {
		return g, errors.New("driver delivers alternating fields, want whole frames")
	}
	line := g.width * g.format.bytesPerPixel()
	if g.stride == 0 {
		g.stride = line
	}
	if g.stride < line {
		return g, fmt.Errorf("driver set %d bytes per line for %d pixels of %v", g.stride, g.width, g.format)
	}
	return g, nil
}

var (
	errEmptyBuffer = errors.New("capture: empty buffer")
	errShortBuffer = errors.New("capture: short buffer")
)

// fillFromBuffer copies a dequeued driver buffer into f. An empty or short
// buffer leaves f's image unchanged and returns errEmptyBuffer or
// errShortBuffer; the caller skips and counts it.
func fillFromBuffer(f *Frame, buf []byte, g geometry) error {
	if len(buf) == 0 {
		return errEmptyBuffer
	}
	need := g.need()
	if len(buf) < need {
		return fmt.Errorf("%w: %d bytes, want %d", errShortBuffer, len(buf), need)
	}
	n := min(len(buf), g.stride*g.height)
	f.Width, f.Height = g.width, g.height
	f.Format = g.format
	f.Stride = g.stride
	f.Data = grow(f.Data, n)
	copy(f.Data, buf[:n])
	fillLuma(f)
	return nil
}

// V4L2 frame size enumeration types.
const (
	frmsizeDiscrete   = 1
	frmsizeContinuous = 2
	frmsizeStepwise   = 3
)

// sizeString renders one VIDIOC_ENUM_FRAMESIZES answer; v is the union as
// min width, max width, step width, min height, max height, step height
// (discrete: width, height).
func sizeString(typ uint32, v [6]uint32) string {
	switch typ {
	case frmsizeDiscrete:
		return fmt.Sprintf("%dx%d", v[0], v[1])
	case frmsizeContinuous:
		return fmt.Sprintf("%dx%d-%dx%d", v[0], v[3], v[1], v[4])
	case frmsizeStepwise:
		return fmt.Sprintf("%dx%d-%dx%d/%dx%d", v[0], v[3], v[1], v[4], v[2], v[5])
	}
	return "size type " + strconv.FormatUint(uint64(typ), 10)
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
