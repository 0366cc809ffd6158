//go:build linux

package m2m

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/keyframe-cam/keyframe/capture"
)

// Kernel structures (include/uapi/linux/videodev2.h); their sizes on 64-bit
// and 32-bit targets are pinned in TestKernelABI.

// v4l2Capability is struct v4l2_capability (104 bytes).
type v4l2Capability struct {
	Driver       [16]byte
	Card         [32]byte
	BusInfo      [32]byte
	Version      uint32
	Capabilities uint32
	DeviceCaps   uint32
	Reserved     [3]uint32
}

// v4l2FmtDesc is struct v4l2_fmtdesc (64 bytes).
type v4l2FmtDesc struct {
	Index       uint32
	Type        uint32
	Flags       uint32
	Description [32]byte
	PixelFormat uint32
	MbusCode    uint32
	Reserved    [3]uint32
}

// v4l2Format is struct v4l2_format: a type and a 200-byte union aligned like
// a pointer (208 bytes on 64-bit targets, 204 on 32-bit ones). The union is
// struct v4l2_pix_format (single-planar) or v4l2_pix_format_mplane.
type v4l2Format struct {
	Type uint32
	Fmt  struct {
		Raw [200 - unsafe.Sizeof(uintptr(0))]byte
		_   uintptr
	}
}

// v4l2RequestBuffers is struct v4l2_requestbuffers (20 bytes).
type v4l2RequestBuffers struct {
	Count        uint32
	Type         uint32
	Memory       uint32
	Capabilities uint32
	Flags        uint8
	Reserved     [3]uint8
}

// v4l2Buffer is struct v4l2_buffer (88 bytes on 64-bit targets, 68 on 32-bit
// ones; the timestamp is the classic struct timeval of two longs). M is the
// union m: the mmap offset (first 4 bytes) for a single-planar buffer, a
// pointer to the struct v4l2_plane array for a multi-planar one, whose
// Length is then the number of planes.
type v4l2Buffer struct {
	Index     uint32
	Type      uint32
	BytesUsed uint32
	Flags     uint32
	Field     uint32
	Timestamp unix.Timeval
	Timecode  [16]byte
	Sequence  uint32
	Memory    uint32
	M         uintptr
	Length    uint32
	Reserved2 uint32
	RequestFD int32
}

func (b *v4l2Buffer) offset() uint32 { return *(*uint32)(unsafe.Pointer(&b.M)) }

// v4l2Plane is struct v4l2_plane (64 bytes on 64-bit targets, 60 on 32-bit
// ones): M is the union m, the mmap offset in its first 4 bytes.
type v4l2Plane struct {
	BytesUsed  uint32
	Length     uint32
	M          uintptr
	DataOffset uint32
	Reserved   [11]uint32
}

func (p *v4l2Plane) offset() uint32 { return *(*uint32)(unsafe.Pointer(&p.M)) }

// v4l2StreamParm is struct v4l2_streamparm (204 bytes); for OUTPUT the union
// is struct v4l2_outputparm: capability, outputmode, timeperframe
// (numerator, denominator), ...
type v4l2StreamParm struct {
	Type uint32
	Parm [200]byte
}

// v4l2QueryCtrl is struct v4l2_queryctrl (68 bytes).
type v4l2QueryCtrl struct {
	ID           uint32
	Type         uint32
	Name         [32]byte
	Minimum      int32
	Maximum      int32
	Step         int32
	DefaultValue int32
	Flags        uint32
	Reserved     [2]uint32
}

// v4l2Control is struct v4l2_control (8 bytes).
type v4l2Control struct {
	ID    uint32
	Value int32
}

// v4l2EncoderCmd is struct v4l2_encoder_cmd (40 bytes).
type v4l2EncoderCmd struct {
	Cmd   uint32
	Flags uint32
	Data  [8]uint32
}

// v4l2Selection is struct v4l2_selection (64 bytes): type, target, flags,
// the rectangle (left, top, width, height), reserved words.
type v4l2Selection struct {
	Type, Target, Flags uint32
	Left, Top           int32
	Width, Height       uint32
	Reserved            [9]uint32
}

// ioctl request codes, _IOC(dir, 'V', nr, size) in the generic layout of
// arm, arm64, 386 and amd64.
const (
	iocW  = 1
	iocR  = 2
	iocRW = iocR | iocW

	vidiocQuerycap   = iocR<<30 | unsafe.Sizeof(v4l2Capability{})<<16 | 'V'<<8 // nr 0
	vidiocEnumFmt    = iocRW<<30 | unsafe.Sizeof(v4l2FmtDesc{})<<16 | 'V'<<8 | 2
	vidiocGFmt       = iocRW<<30 | unsafe.Sizeof(v4l2Format{})<<16 | 'V'<<8 | 4
	vidiocSFmt       = iocRW<<30 | unsafe.Sizeof(v4l2Format{})<<16 | 'V'<<8 | 5
	vidiocReqbufs    = iocRW<<30 | unsafe.Sizeof(v4l2RequestBuffers{})<<16 | 'V'<<8 | 8
	vidiocQuerybuf   = iocRW<<30 | unsafe.Sizeof(v4l2Buffer{})<<16 | 'V'<<8 | 9
	vidiocQbuf       = iocRW<<30 | unsafe.Sizeof(v4l2Buffer{})<<16 | 'V'<<8 | 15
	vidiocDqbuf      = iocRW<<30 | unsafe.Sizeof(v4l2Buffer{})<<16 | 'V'<<8 | 17
	vidiocStreamon   = iocW<<30 | unsafe.Sizeof(int32(0))<<16 | 'V'<<8 | 18
	vidiocStreamoff  = iocW<<30 | unsafe.Sizeof(int32(0))<<16 | 'V'<<8 | 19
	vidiocGParm      = iocRW<<30 | unsafe.Sizeof(v4l2StreamParm{})<<16 | 'V'<<8 | 21
	vidiocSParm      = iocRW<<30 | unsafe.Sizeof(v4l2StreamParm{})<<16 | 'V'<<8 | 22
	vidiocSCtrl      = iocRW<<30 | unsafe.Sizeof(v4l2Control{})<<16 | 'V'<<8 | 28
	vidiocQueryctrl  = iocRW<<30 | unsafe.Sizeof(v4l2QueryCtrl{})<<16 | 'V'<<8 | 36
	vidiocEncoderCmd = iocRW<<30 | unsafe.Sizeof(v4l2EncoderCmd{})<<16 | 'V'<<8 | 77
	vidiocSSelection = iocRW<<30 | unsafe.Sizeof(v4l2Selection{})<<16 | 'V'<<8 | 95
)

// Constants of videodev2.h and v4l2-controls.h.
const (
	bufTypeCapture       = 1
	bufTypeOutput        = 2
	bufTypeCaptureMPlane = 9
	bufTypeOutputMPlane  = 10
	memoryMMAP           = 1
	fieldNone            = 1

	capVideoM2MMPlane = 0x00004000
	capVideoM2M       = 0x00008000
	capStreaming      = 0x04000000
	capDeviceCaps     = 0x80000000

	bufFlagKeyframe = 0x00000008
	bufFlagError    = 0x00000040
	bufFlagLast     = 0x00100000

	fmtFlagCompressed = 0x0001
	capTimePerFrame   = 0x1000

	encCmdStop = 1
	selTgtCrop = 0

	ctrlFlagDisabled = 0x0001

	cidCodecBase         = 0x00990900
	cidGOPSize           = cidCodecBase + 203
	cidBitrate           = cidCodecBase + 207
	cidRepeatSeqHeader   = cidCodecBase + 226
	cidForceKeyFrame     = cidCodecBase + 229
	cidH264IPeriod       = cidCodecBase + 358
	mplaneNumPlanesOff   = 180 // v4l2_pix_format_mplane.num_planes
	mplanePlane0SizeOff  = 20  // plane_fmt[0].sizeimage
	mplanePlane0StrideOf = 24  // plane_fmt[0].bytesperline
)

// device is the seam between the encoder and the kernel: the system calls
// it makes on an open node. fdDevice makes them; the tests script a fake
// encoder. arg points to the request's structure; for the per-frame calls
// it is a field of the Encoder (heap), so the calls allocate nothing.
// poll is called concurrently for POLLIN (Receive) and POLLOUT (Encode).
type device interface {
	ioctl(req uintptr, arg unsafe.Pointer) error
	mmap(offset int64, length int) ([]byte, error)
	munmap(b []byte) error
	// poll waits up to timeout for events (POLLIN or POLLOUT) and returns
	// the revents, 0 on timeout.
	poll(events int16, timeout time.Duration) (int16, error)
	close() error
}

// fdDevice is a node opened in non-blocking mode. Each of the two events
// polled for has its own pollfd and timeout, so Encode and Receive can
// wait at once without allocating.
type fdDevice struct {
	fd          int
	pin, pout   [1]unix.PollFd
	tsIn, tsOut unix.Timespec
	inMu, outMu sync.Mutex
}

func openFD(path string, flags int) (*fdDevice, error) {
	fd, err := unix.Open(path, flags|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &fdDevice{fd: fd}, nil
}

func (d *fdDevice) ioctl(req uintptr, arg unsafe.Pointer) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(d.fd), req, uintptr(arg))
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return e
	}
}

func (d *fdDevice) mmap(offset int64, length int) ([]byte, error) {
	return unix.Mmap(d.fd, offset, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
}

func (d *fdDevice) munmap(b []byte) error { return unix.Munmap(b) }

func (d *fdDevice) poll(events int16, timeout time.Duration) (int16, error) {
	pfd, ts, mu := &d.pin, &d.tsIn, &d.inMu
	if events&unix.POLLOUT != 0 {
		pfd, ts, mu = &d.pout, &d.tsOut, &d.outMu
	}
	mu.Lock()
	defer mu.Unlock()
	pfd[0] = unix.PollFd{Fd: int32(d.fd), Events: events}
	*ts = unix.NsecToTimespec(int64(timeout))
	n, err := unix.Ppoll(pfd[:], ts, nil)
	if err != nil || n == 0 {
		return 0, err
	}
	return pfd[0].Revents, nil
}

func (d *fdDevice) close() error { return unix.Close(d.fd) }

// absent reports whether err means the node or its hardware is gone.
func absent(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.EIO)
}

// devErr wraps an error of operation op on path, marking an absent device
// with ErrNoDevice.
func devErr(path, op string, err error) error {
	if absent(err) {
		return fmt.Errorf("%w: %s: %s: %w", ErrNoDevice, path, op, err)
	}
	return fmt.Errorf("m2m: %s: %s: %w", path, op, err)
}

// pollSlice bounds each wait, so Close and a cancelled context are noticed.
const pollSlice = 250 * time.Millisecond

// maxAgain bounds the wakeups in a row that find no buffer.
const maxAgain = 1000

// queue is one of the two buffer queues.
type queue struct {
	typ    uint32
	bufs   [][]byte // the mmapped buffers
	reqbuf bool     // buffers were requested and must be freed
	on     bool     // streaming
	b      v4l2Buffer
	planes [1]v4l2Plane // the multi-planar buffer's plane, which b.M points to
}

// Encoder is an open stateful encoder: see the package documentation.
type Encoder struct {
	dev    device
	path   string
	info   Info
	mplane bool
	raw    layout // the driver's OUTPUT buffer layout
	need   int    // bytes used of an OUTPUT buffer

	closing atomic.Bool
	broken  atomic.Pointer[error] // the device is gone: every call returns this

	// Encode's side (the OUTPUT queue).
	inMu     sync.Mutex
	in       queue
	free     []uint32 // OUTPUT buffers the encoder may fill
	frameSrc layout   // the layout of the frames (Config's size and format, the frame's stride)
	nextID   uint64
	draining bool
	keyCtl   v4l2Control

	// Receive's side (the CAPTURE queue).
	outMu   sync.Mutex
	out     queue
	pending []byte // H.264 parameter sets waiting for their picture
	eos     bool

	stampMu  sync.Mutex
	stamps   [stampRing]stamp
	needKey  atomic.Bool // a coded buffer was lost: ask for a key frame
	count    counters
	released bool
}

type counters struct {
	framesIn, packetsOut, keyFrames, bytes, errors, empty, keyForced, keyIgnored, unmapped atomic.Uint64
}

// Open opens the encoder node, sets its formats, frame rate and controls,
// allocates and maps the buffers on both queues and starts streaming. A
// missing node, or one that is no memory-to-memory device, is ErrNoDevice;
// a codec or raw format the node does not offer wraps
// capture.ErrUnsupportedFormat.
func Open(cfg Config) (*Encoder, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	dev, err := openFD(cfg.Device, unix.O_RDWR)
	if err != nil {
		return nil, devErr(cfg.Device, "open", err)
	}
	return open(dev, cfg)
}

// open sets up an open device; cfg has its defaults. On error the device is
// released and closed.
func open(dev device, cfg Config) (*Encoder, error) {
	e := &Encoder{dev: dev, path: cfg.Device}
	e.info.Path, e.info.Codec, e.info.Input = cfg.Device, cfg.Codec, cfg.Input
	ok := false
	defer func() {
		if !ok {
			_ = e.release() // already failing; the release error adds nothing
		}
	}()
	var c v4l2Capability
	if err := dev.ioctl(vidiocQuerycap, unsafe.Pointer(&c)); err != nil {
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.ENOSYS) {
			return nil, fmt.Errorf("%w: %s: not a V4L2 device", ErrNoDevice, e.path)
		}
		return nil, devErr(e.path, "query capabilities", err)
	}
	e.info.Driver, e.info.Card = cString(c.Driver[:]), cString(c.Card[:])
	caps := nodeCaps(&c)
	switch {
	case caps&capVideoM2MMPlane != 0:
		e.mplane = true
	case caps&capVideoM2M != 0:
	default:
		return nil, fmt.Errorf("%w: %s (%s): not a memory-to-memory device (capabilities %#x)", ErrNoDevice, e.path, e.info.Driver, caps)
	}
	if caps&capStreaming == 0 {
		return nil, fmt.Errorf("m2m: %s (%s): no streaming I/O", e.path, e.info.Driver)
	}
	e.info.MPlane = e.mplane
	e.in.typ, e.out.typ = bufTypeOutput, bufTypeCapture
	if e.mplane {
		e.in.typ, e.out.typ = bufTypeOutputMPlane, bufTypeCaptureMPlane
	}
	if err := e.setFormats(cfg); err != nil {
		return nil, err
	}
	e.setRate(cfg.FPS)
	e.setControls(cfg)
	if err := e.start(cfg); err != nil {
		return nil, err
	}
	ok = true
	cfg.Logger.Info("m2m: encoder open", "device", e.path, "driver", e.info.Driver,
		"api", e.info.API(),
		"in", cfg.Input.String(), "out", cfg.Codec.String(),
		"width", e.info.Width, "height", e.info.Height, "stride", e.info.Stride,
		"in_buffers", e.info.InBuffers, "out_buffers", e.info.OutBuffers, "force_key", e.info.ForceKey)
	return e, nil
}

func nodeCaps(c *v4l2Capability) uint32 {
	if c.Capabilities&capDeviceCaps != 0 {
		return c.DeviceCaps
	}
	return c.Capabilities
}

func cString(b []byte) string {
	if i := slices.Index(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// enumFormats lists a queue's pixel formats; compressed selects the
// compressed (true) or the raw (false) ones.
func enumFormats(dev device, typ uint32, compressed bool) ([]capture.PixelFormat, error) {
	var out []capture.PixelFormat
	for i := range uint32(64) {
		d := v4l2FmtDesc{Index: i, Type: typ}
		err := dev.ioctl(vidiocEnumFmt, unsafe.Pointer(&d))
		if errors.Is(err, unix.EINVAL) {
			break
		}
		if err != nil {
			return out, err
		}
		if (d.Flags&fmtFlagCompressed != 0) == compressed {
			out = append(out, capture.PixelFormat(d.PixelFormat))
		}
	}
	return out, nil
}

func formatList(ps []capture.PixelFormat) string {
	if len(ps) == 0 {
		return "none"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// pixFormat is the part of a format the encoder reads back.
type pixFormat struct {
	width, height, format, stride, size uint32
	planes                              uint8
}

// setFmt sets (or with set false, reads) a queue's format.
func (e *Encoder) setFmt(typ uint32, set bool, p capture.PixelFormat, w, h int) (pixFormat, error) {
	f := v4l2Format{Type: typ}
	raw, ne := f.Fmt.Raw[:], binary.NativeEndian
	req := uintptr(vidiocGFmt)
	if set {
		req = vidiocSFmt
		ne.PutUint32(raw[0:], uint32(w))
		ne.PutUint32(raw[4:], uint32(h))
		ne.PutUint32(raw[8:], uint32(p))
		ne.PutUint32(raw[12:], fieldNone)
		if e.mplane {
			raw[mplaneNumPlanesOff] = 1
		}
	}
	if err := e.dev.ioctl(req, unsafe.Pointer(&f)); err != nil {
		return pixFormat{}, err
	}
	pf := pixFormat{width: ne.Uint32(raw[0:]), height: ne.Uint32(raw[4:]), format: ne.Uint32(raw[8:]), planes: 1}
	if e.mplane {
		pf.size, pf.stride = ne.Uint32(raw[mplanePlane0SizeOff:]), ne.Uint32(raw[mplanePlane0StrideOf:])
		pf.planes = raw[mplaneNumPlanesOff]
	} else {
		pf.stride, pf.size = ne.Uint32(raw[16:]), ne.Uint32(raw[20:])
	}
	return pf, nil
}

// setFormats sets the coded format on CAPTURE, then the raw one on OUTPUT
// (the order dev-encoder.rst prescribes: the coded format decides which raw
// formats the encoder takes), and reads back the coded buffer size, which
// the raw format may have changed.
func (e *Encoder) setFormats(cfg Config) error {
	coded, err := enumFormats(e.dev, e.out.typ, true)
	if err != nil {
		return devErr(e.path, "list coded formats", err)
	}
	if !has(coded, cfg.Codec) {
		return fmt.Errorf("m2m: %s (%s): codec %v not offered (CAPTURE offers %s): %w", e.path, e.info.Driver, cfg.Codec, formatList(coded), capture.ErrUnsupportedFormat)
	}
	cf, err := e.setFmt(e.out.typ, true, cfg.Codec, cfg.Width, cfg.Height)
	if err != nil {
		return devErr(e.path, fmt.Sprintf("set CAPTURE format %v %dx%d", cfg.Codec, cfg.Width, cfg.Height), err)
	}
	if capture.PixelFormat(cf.format) != cfg.Codec {
		return fmt.Errorf("m2m: %s: CAPTURE format: asked for %v, driver set %v: %w", e.path, cfg.Codec, capture.PixelFormat(cf.format), capture.ErrUnsupportedFormat)
	}
	raws, err := enumFormats(e.dev, e.in.typ, false)
	if err != nil {
		return devErr(e.path, "list raw formats", err)
	}
	if !has(raws, cfg.Input) {
		return fmt.Errorf("m2m: %s (%s): input format %v not offered for %v (OUTPUT offers %s): %w", e.path, e.info.Driver, cfg.Input, cfg.Codec, formatList(raws), capture.ErrUnsupportedFormat)
	}
	rf, err := e.setFmt(e.in.typ, true, cfg.Input, cfg.Width, cfg.Height)
	if err != nil {
		return devErr(e.path, fmt.Sprintf("set OUTPUT format %v %dx%d", cfg.Input, cfg.Width, cfg.Height), err)
	}
	switch {
	case capture.PixelFormat(rf.format) != cfg.Input:
		return fmt.Errorf("m2m: %s: OUTPUT format: asked for %v, driver set %v: %w", e.path, cfg.Input, capture.PixelFormat(rf.format), capture.ErrUnsupportedFormat)
	case rf.planes != 1:
		return fmt.Errorf("m2m: %s: OUTPUT format %v has %d memory planes; only contiguous (1-plane) formats are supported", e.path, cfg.Input, rf.planes)
	case int(rf.width) < cfg.Width || int(rf.height) < cfg.Height:
		return fmt.Errorf("m2m: %s: OUTPUT size: asked for %dx%d, driver set %dx%d (the encoder does not scale)", e.path, cfg.Width, cfg.Height, rf.width, rf.height)
	}
	e.raw, err = rawLayout(cfg.Input, cfg.Width, cfg.Height, int(rf.stride), int(rf.height))
	if err != nil {
		return fmt.Errorf("m2m: %s: OUTPUT format: %w", e.path, err)
	}
	e.need = max(e.raw.end(), int(rf.size))
	e.info.Width, e.info.Height, e.info.Stride, e.info.SizeImage = int(rf.width), int(rf.height), int(rf.stride), int(rf.size)
	if int(rf.width) > cfg.Width || int(rf.height) > cfg.Height {
		// The driver padded the frame (H.264 codes 16x16 macroblocks: 1080
		// lines become 1088): the visible size goes in the stream's
		// metadata through the OUTPUT crop rectangle (dev-encoder.rst). The
		// selection API takes the single-planar type on both APIs.
		sel := v4l2Selection{Type: bufTypeOutput, Target: selTgtCrop, Width: uint32(cfg.Width), Height: uint32(cfg.Height)}
		if err := e.dev.ioctl(vidiocSSelection, unsafe.Pointer(&sel)); err != nil {
			e.info.Unsupported = append(e.info.Unsupported, fmt.Sprintf("crop to %dx%d of %dx%d (VIDIOC_S_SELECTION): %v", cfg.Width, cfg.Height, rf.width, rf.height, err))
		}
	}
	cf, err = e.setFmt(e.out.typ, false, 0, 0, 0)
	if err != nil {
		return devErr(e.path, "read back CAPTURE format", err)
	}
	e.info.CodedSize = int(cf.size)
	return nil
}

// setRate tells the encoder the frame rate (VIDIOC_S_PARM on OUTPUT). A
// driver that cannot take it (vicodec has no S_PARM) is reported, not fatal.
func (e *Encoder) setRate(fps float64) {
	if fps <= 0 {
		return
	}
	p := v4l2StreamParm{Type: e.in.typ}
	ne := binary.NativeEndian
	num, den := uint32(1000), uint32(fps*1000+0.5)
	if fps == float64(int(fps)) {
		num, den = 1, uint32(fps)
	}
	ne.PutUint32(p.Parm[8:], num)
	ne.PutUint32(p.Parm[12:], den)
	if err := e.dev.ioctl(vidiocSParm, unsafe.Pointer(&p)); err != nil {
		e.info.Unsupported = append(e.info.Unsupported, fmt.Sprintf("frame rate %v (VIDIOC_S_PARM): %v", fps, err))
		return
	}
	if n, d := ne.Uint32(p.Parm[8:]), ne.Uint32(p.Parm[12:]); n > 0 && d > 0 {
		e.info.FPS = float64(d) / float64(n)
	}
}

// setControls sets the bit rate, the GOP and (H.264) repeated sequence
// headers, and finds whether key frames can be forced. A control the
// driver lacks or refuses is listed in Info.Unsupported and logged.
func (e *Encoder) setControls(cfg Config) {
	set := func(name string, id uint32, v int) {
		c := v4l2Control{ID: id, Value: int32(v)}
		if err := e.dev.ioctl(vidiocSCtrl, unsafe.Pointer(&c)); err != nil {
			e.info.Unsupported = append(e.info.Unsupported, fmt.Sprintf("%s=%d: %v", name, v, err))
		}
	}
	if cfg.Bitrate > 0 {
		set("bitrate", cidBitrate, cfg.Bitrate)
	}
	if cfg.GOP > 0 {
		set("gop_size", cidGOPSize, cfg.GOP)
		if cfg.Codec == capture.FormatH264 {
			set("h264_i_period", cidH264IPeriod, cfg.GOP)
		}
	}
	if cfg.Codec == capture.FormatH264 {
		set("repeat_sequence_header", cidRepeatSeqHeader, 1)
	}
	q := v4l2QueryCtrl{ID: cidForceKeyFrame}
	if err := e.dev.ioctl(vidiocQueryctrl, unsafe.Pointer(&q)); err == nil && q.Flags&ctrlFlagDisabled == 0 {
		e.info.ForceKey = true
	} else {
		e.info.Unsupported = append(e.info.Unsupported, "force_key_frame: not offered (key frames come from the GOP only)")
	}
	for _, u := range e.info.Unsupported {
		cfg.Logger.Warn("m2m: encoder setting not applied", "device", e.path, "driver", e.info.Driver, "setting", u)
	}
}

// start requests and maps the buffers of both queues, queues the CAPTURE
// buffers and starts streaming on both.
func (e *Encoder) start(cfg Config) error {
	for _, s := range []struct {
		q    *queue
		n    int
		name string
		need int
	}{{&e.in, cfg.InBuffers, "OUTPUT", e.need}, {&e.out, cfg.OutBuffers, "CAPTURE", 1}} {
		rb := v4l2RequestBuffers{Count: uint32(s.n), Type: s.q.typ, Memory: memoryMMAP}
		if err := e.dev.ioctl(vidiocReqbufs, unsafe.Pointer(&rb)); err != nil {
			if errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("m2m: %s: request %s buffers: device busy: %w", e.path, s.name, err)
			}
			return devErr(e.path, "request "+s.name+" buffers", err)
		}
		s.q.reqbuf = true
		if rb.Count < 1 || rb.Count > maxBuffers {
			return fmt.Errorf("m2m: %s: asked for %d %s buffers, driver gave %d", e.path, s.n, s.name, rb.Count)
		}
		s.q.bufs = make([][]byte, rb.Count)
		for i := range s.q.bufs {
			b := e.prepare(s.q, uint32(i))
			if err := e.dev.ioctl(vidiocQuerybuf, unsafe.Pointer(b)); err != nil {
				return devErr(e.path, fmt.Sprintf("query %s buffer %d", s.name, i), err)
			}
			off, length := b.offset(), b.Length
			if e.mplane {
				off, length = s.q.planes[0].offset(), s.q.planes[0].Length
			}
			if length == 0 || int(length) < s.need || length > 1<<30 {
				return fmt.Errorf("m2m: %s: %s buffer %d has %d bytes, want at least %d", e.path, s.name, i, length, s.need)
			}
			m, err := e.dev.mmap(int64(off), int(length))
			if err != nil {
				return devErr(e.path, fmt.Sprintf("map %s buffer %d", s.name, i), err)
			}
			s.q.bufs[i] = m
		}
	}
	e.info.InBuffers, e.info.OutBuffers = len(e.in.bufs), len(e.out.bufs)
	e.free = make([]uint32, 0, len(e.in.bufs))
	for i := range e.in.bufs {
		e.free = append(e.free, uint32(len(e.in.bufs)-1-i))
	}
	for i := range e.out.bufs {
		if err := e.queueCapture(uint32(i)); err != nil {
			return devErr(e.path, fmt.Sprintf("queue CAPTURE buffer %d", i), err)
		}
	}
	for _, q := range []*queue{&e.in, &e.out} {
		typ := int32(q.typ)
		if err := e.dev.ioctl(vidiocStreamon, unsafe.Pointer(&typ)); err != nil {
			return devErr(e.path, "start streaming", err)
		}
		q.on = true
	}
	return nil
}

// prepare resets q's buffer argument for buffer i and returns it.
func (e *Encoder) prepare(q *queue, i uint32) *v4l2Buffer {
	q.b = v4l2Buffer{Index: i, Type: q.typ, Memory: memoryMMAP, Field: fieldNone}
	if e.mplane {
		q.planes[0] = v4l2Plane{}
		q.b.M = uintptr(unsafe.Pointer(&q.planes[0]))
		q.b.Length = 1
	}
	return &q.b
}

// queueCapture gives CAPTURE buffer i to the driver.
func (e *Encoder) queueCapture(i uint32) error {
	b := e.prepare(&e.out, i)
	if e.mplane {
		e.out.planes[0].Length = uint32(len(e.out.bufs[i]))
	}
	err := e.dev.ioctl(vidiocQbuf, unsafe.Pointer(b))
	runtime.KeepAlive(e)
	return err
}

// Info describes the encoder as the driver set it up.
func (e *Encoder) Info() Info {
	i := e.info
	i.Unsupported = slices.Clone(i.Unsupported)
	return i
}

// Stats returns the counters. It is safe to call at any time.
func (e *Encoder) Stats() Stats {
	c := &e.count
	return Stats{
		FramesIn: c.framesIn.Load(), PacketsOut: c.packetsOut.Load(), KeyFrames: c.keyFrames.Load(),
		Bytes: c.bytes.Load(), Errors: c.errors.Load(), Empty: c.empty.Load(),
		KeyForced: c.keyForced.Load(), KeyIgnored: c.keyIgnored.Load(), Unmapped: c.unmapped.Load(),
	}
}

// fail wraps a streaming error; a device that is gone stays failed.
func (e *Encoder) fail(op string, err error) error {
	err = devErr(e.path, op, err)
	if errors.Is(err, ErrNoDevice) {
		e.broken.CompareAndSwap(nil, &err)
	}
	return err
}

func (e *Encoder) state() error {
	if e.closing.Load() {
		return ErrClosed
	}
	if p := e.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// Encode copies fr into a free OUTPUT buffer and queues it; fr is not kept.
// forceKey asks the driver to make this frame a key frame (counted in
// Stats.KeyIgnored when it cannot). When every OUTPUT buffer is with the
// driver, Encode waits for one until ctx ends: someone must be calling
// Receive, or the encoder runs out of CAPTURE buffers and stops. fr must
// have the configured size and format; its stride may differ from the
// driver's (lines are copied one by one then).
func (e *Encoder) Encode(ctx context.Context, fr *capture.Frame, forceKey bool) error {
	e.inMu.Lock()
	defer e.inMu.Unlock()
	if err := e.state(); err != nil {
		return err
	}
	if e.draining {
		return ErrEndOfStream
	}
	if err := e.checkFrame(fr); err != nil {
		return err
	}
	idx, err := e.freeBuffer(ctx)
	if err != nil {
		return err
	}
	if forceKey || e.needKey.Load() {
		if e.info.ForceKey {
			e.keyCtl = v4l2Control{ID: cidForceKeyFrame, Value: 1}
			if err := e.dev.ioctl(vidiocSCtrl, unsafe.Pointer(&e.keyCtl)); err != nil {
				return e.fail("force key frame", err)
			}
			e.count.keyForced.Add(1)
			e.needKey.Store(false)
		} else if forceKey {
			e.count.keyIgnored.Add(1)
		}
	}
	mem := e.in.bufs[idx]
	copyImage(mem, &e.raw, fr.Data, &e.frameSrc)
	e.nextID++
	id := e.nextID
	e.stampMu.Lock()
	e.stamps[id%stampRing] = stamp{id: id, time: fr.Time, seq: fr.Sequence}
	e.stampMu.Unlock()

	b := e.prepare(&e.in, idx)
	b.Timestamp = unix.NsecToTimeval(int64(id) * 1000)
	used := uint32(min(e.need, len(mem)))
	if e.mplane {
		e.in.planes[0].BytesUsed = used
		e.in.planes[0].Length = uint32(len(mem))
	} else {
		b.BytesUsed = used
	}
	err = e.dev.ioctl(vidiocQbuf, unsafe.Pointer(b))
	runtime.KeepAlive(e)
	if err != nil {
		return e.fail("queue OUTPUT buffer", err)
	}
	e.free = e.free[:len(e.free)-1]
	e.count.framesIn.Add(1)
	return nil
}

// checkFrame checks fr against the configuration and sets e.frameSrc.
func (e *Encoder) checkFrame(fr *capture.Frame) error {
	if fr == nil {
		return fmt.Errorf("m2m: %s: frame: nil", e.path)
	}
	if fr.Format != e.info.Input {
		return fmt.Errorf("m2m: %s: frame format %v, the encoder takes %v: %w", e.path, fr.Format, e.info.Input, capture.ErrUnsupportedFormat)
	}
	w, h := e.raw.planes[0].width, e.raw.planes[0].rows
	if fr.Format == capture.FormatYUYV {
		w /= 2
	}
	if fr.Width != w || fr.Height != h {
		return fmt.Errorf("m2m: %s: frame size %dx%d, the encoder takes %dx%d", e.path, fr.Width, fr.Height, w, h)
	}
	if e.frameSrc.n == 0 || e.frameSrc.planes[0].stride != fr.Stride {
		l, err := rawLayout(fr.Format, fr.Width, fr.Height, fr.Stride, fr.Height)
		if err != nil {
			return fmt.Errorf("m2m: %s: frame: %w", e.path, err)
		}
		e.frameSrc = l
	}
	if n := e.frameSrc.end(); len(fr.Data) < n {
		return fmt.Errorf("m2m: %s: frame data: %d bytes, a %v frame %dx%d of stride %d needs %d", e.path, len(fr.Data), fr.Format, fr.Width, fr.Height, fr.Stride, n)
	}
	return nil
}

// freeBuffer returns the index of an OUTPUT buffer the encoder may fill (the
// last of e.free), taking back the buffers the driver is done with and
// waiting for one when none is free.
func (e *Encoder) freeBuffer(ctx context.Context) (uint32, error) {
	again := 0
	for {
		// Take back every buffer the driver has finished with.
		for {
			b := e.prepare(&e.in, 0)
			err := e.dev.ioctl(vidiocDqbuf, unsafe.Pointer(b))
			if errors.Is(err, unix.EAGAIN) {
				break
			}
			if err != nil {
				return 0, e.fail("dequeue OUTPUT buffer", err)
			}
			if int(b.Index) >= len(e.in.bufs) {
				return 0, e.fail("dequeue OUTPUT buffer", fmt.Errorf("driver returned buffer %d of %d", b.Index, len(e.in.bufs)))
			}
			if !slices.Contains(e.free, b.Index) {
				e.free = append(e.free, b.Index)
			}
		}
		if len(e.free) > 0 {
			return e.free[len(e.free)-1], nil
		}
		if err := e.state(); err != nil {
			return 0, err
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		revents, err := e.dev.poll(unix.POLLOUT, pollSlice)
		switch {
		case errors.Is(err, unix.EINTR):
		case err != nil:
			return 0, e.fail("wait for an OUTPUT buffer", err)
		case revents&unix.POLLNVAL != 0:
			return 0, e.fail("wait for an OUTPUT buffer", unix.EBADF)
		case revents != 0:
			if again++; again >= maxAgain {
				return 0, e.fail("wait for an OUTPUT buffer", fmt.Errorf("%d wakeups without a buffer (revents %#x): %w", again, revents, unix.EAGAIN))
			}
		}
	}
}

// Receive waits for the next coded frame and copies it into dst (grown when
// too small; the packet's Data). It returns ErrEndOfStream once a drain is
// complete, an error wrapping ErrNoDevice when the device went away (and
// from then on), ctx.Err() when ctx ends and ErrClosed after Close. Coded
// buffers the driver flags as errors, and empty ones, are skipped and
// counted; after an error the next frame is made a key frame when the
// driver takes key-frame requests.
func (e *Encoder) Receive(ctx context.Context, dst []byte) (Packet, error) {
	e.outMu.Lock()
	defer e.outMu.Unlock()
	again := 0
	for {
		if err := e.state(); err != nil {
			return Packet{}, err
		}
		if e.eos {
			return Packet{}, ErrEndOfStream
		}
		if err := ctx.Err(); err != nil {
			return Packet{}, err
		}
		b := e.prepare(&e.out, 0)
		err := e.dev.ioctl(vidiocDqbuf, unsafe.Pointer(b))
		runtime.KeepAlive(e)
		switch {
		case errors.Is(err, unix.EAGAIN):
			revents, err := e.dev.poll(unix.POLLIN, pollSlice)
			switch {
			case errors.Is(err, unix.EINTR):
			case err != nil:
				return Packet{}, e.fail("wait for a coded buffer", err)
			case revents&unix.POLLNVAL != 0:
				return Packet{}, e.fail("wait for a coded buffer", unix.EBADF)
			case revents != 0:
				if again++; again >= maxAgain {
					return Packet{}, e.fail("dequeue CAPTURE buffer", fmt.Errorf("%d wakeups without a buffer (revents %#x): %w", again, revents, unix.EAGAIN))
				}
			}
			continue
		case errors.Is(err, unix.EPIPE):
			// The LAST buffer was dequeued already.
			e.eos = true
			return Packet{}, ErrEndOfStream
		case err != nil:
			return Packet{}, e.fail("dequeue CAPTURE buffer", err)
		}
		again = 0
		p, ok, err := e.take(dst)
		if err != nil || ok {
			return p, err
		}
		if e.eos {
			return Packet{}, ErrEndOfStream
		}
	}
}

// take handles the CAPTURE buffer just dequeued into e.out.b: it copies the
// coded data into dst, requeues the buffer and says whether there is a
// packet (ok false: the buffer was skipped or held).
func (e *Encoder) take(dst []byte) (p Packet, ok bool, err error) {
	b := &e.out.b
	idx := b.Index
	if int(idx) >= len(e.out.bufs) {
		return p, false, e.fail("dequeue CAPTURE buffer", fmt.Errorf("driver returned buffer %d of %d", idx, len(e.out.bufs)))
	}
	mem := e.out.bufs[idx]
	start, end := 0, int(b.BytesUsed)
	if e.mplane {
		start, end = int(e.out.planes[0].DataOffset), int(e.out.planes[0].BytesUsed)
	}
	end = min(end, len(mem))
	start = min(start, end)
	flags := b.Flags
	id := uint64(b.Timestamp.Nano() / 1000)
	last := flags&bufFlagLast != 0
	data := mem[start:end]

	switch {
	case flags&bufFlagError != 0:
		e.count.errors.Add(1)
		e.needKey.Store(true)
		e.pending = e.pending[:0]
	case len(data) == 0:
		if !last {
			e.count.empty.Add(1)
		}
	case e.info.Codec == capture.FormatH264:
		idr, picture := h264Info(data)
		if !picture {
			// Parameter sets alone: hold them for the next picture.
			e.pending = append(e.pending, data...)
			break
		}
		p.Data = append(append(dst[:0], e.pending...), data...)
		e.pending = e.pending[:0]
		p.Key = flags&bufFlagKeyframe != 0 || idr
		ok = true
	default:
		p.Data = append(dst[:0], data...)
		p.Key = flags&bufFlagKeyframe != 0 || (e.info.Codec == FormatFWHT && fwhtKey(data))
		ok = true
	}
	if last {
		e.eos = true
		p.Last = true
	}
	// The copy is made: the driver may have the buffer back. After LAST it
	// stays with the encoder until the next session.
	if !last {
		if err := e.queueCapture(idx); err != nil {
			return Packet{}, false, e.fail("requeue CAPTURE buffer", err)
		}
	}
	if !ok {
		return Packet{}, false, nil
	}
	e.stampMu.Lock()
	s := e.stamps[id%stampRing]
	e.stampMu.Unlock()
	if s.id == id && id != 0 {
		p.Time, p.Sequence, p.Mapped = s.time, s.seq, true
	} else {
		e.count.unmapped.Add(1)
	}
	e.count.packetsOut.Add(1)
	e.count.bytes.Add(uint64(len(p.Data)))
	if p.Key {
		e.count.keyFrames.Add(1)
	}
	return p, true, nil
}

// Drain asks the encoder to finish (V4L2_ENC_CMD_STOP): it encodes the
// frames queued so far, and Receive returns their packets, the last one
// flagged Last (or, when the driver's last buffer is empty, no packet),
// then ErrEndOfStream. Encode returns ErrEndOfStream after Drain; to encode
// again, Close and Open.
func (e *Encoder) Drain() error {
	e.inMu.Lock()
	defer e.inMu.Unlock()
	if err := e.state(); err != nil {
		return err
	}
	if e.draining {
		return nil
	}
	c := v4l2EncoderCmd{Cmd: encCmdStop}
	if err := e.dev.ioctl(vidiocEncoderCmd, unsafe.Pointer(&c)); err != nil {
		return e.fail("stop command (drain)", err)
	}
	e.draining = true
	return nil
}

// Close stops streaming on both queues, unmaps and frees the buffers and
// closes the node. A running Encode or Receive returns ErrClosed first
// (within a quarter second). Closing twice is not an error.
func (e *Encoder) Close() error {
	e.closing.Store(true)
	e.inMu.Lock()
	defer e.inMu.Unlock()
	e.outMu.Lock()
	defer e.outMu.Unlock()
	if e.released {
		return nil
	}
	if err := e.release(); err != nil {
		return fmt.Errorf("m2m: close %s: %w", e.path, err)
	}
	return nil
}

// release stops streaming, unmaps and frees the buffers and closes the
// device, in that order. Errors of a device already gone are not reported.
func (e *Encoder) release() error {
	e.released = true
	var errs []error
	for _, q := range []*queue{&e.in, &e.out} {
		if q.on {
			typ := int32(q.typ)
			if err := e.dev.ioctl(vidiocStreamoff, unsafe.Pointer(&typ)); err != nil && !absent(err) {
				errs = append(errs, fmt.Errorf("stop streaming: %w", err))
			}
			q.on = false
		}
	}
	for _, q := range []*queue{&e.in, &e.out} {
		for i, b := range q.bufs {
			if b == nil {
				continue
			}
			if err := e.dev.munmap(b); err != nil {
				errs = append(errs, fmt.Errorf("unmap buffer %d: %w", i, err))
			}
		}
		q.bufs = nil
		if q.reqbuf {
			rb := v4l2RequestBuffers{Type: q.typ, Memory: memoryMMAP}
			if err := e.dev.ioctl(vidiocReqbufs, unsafe.Pointer(&rb)); err != nil && !absent(err) && !errors.Is(err, unix.EINVAL) {
				errs = append(errs, fmt.Errorf("free buffers: %w", err))
			}
			q.reqbuf = false
		}
	}
	if err := e.dev.close(); err != nil {
		errs = append(errs, fmt.Errorf("close: %w", err))
	}
	return errors.Join(errs...)
}

// Probe lists the memory-to-memory nodes (videoN) under devDir with the
// formats of their queues. Each node is opened read-write (codec nodes
// answer format queries per open file) and queried; nodes that are not
// memory-to-memory devices are left out, nodes that cannot be opened or
// queried are listed with Err set.
func Probe(devDir string) ([]Node, error) {
	entries, err := os.ReadDir(devDir)
	if err != nil {
		return nil, fmt.Errorf("m2m: probe: %w", err)
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	nodes := []Node{}
	for _, name := range videoNodes(names) {
		path := filepath.Join(devDir, name)
		dev, err := openFD(path, unix.O_RDWR)
		if err != nil {
			nodes = append(nodes, Node{Path: path, Err: devErr(path, "open", err)})
			continue
		}
		n, ok := probeNode(dev, path)
		_ = dev.close() // queries only
		if ok {
			nodes = append(nodes, n)
		}
	}
	return nodes, nil
}

// probeNode describes one open node; ok is false for a node that is not a
// memory-to-memory device.
func probeNode(dev device, path string) (Node, bool) {
	n := Node{Path: path}
	var c v4l2Capability
	if err := dev.ioctl(vidiocQuerycap, unsafe.Pointer(&c)); err != nil {
		return n, false
	}
	caps := nodeCaps(&c)
	capT, outT := uint32(bufTypeCapture), uint32(bufTypeOutput)
	switch {
	case caps&capVideoM2MMPlane != 0:
		n.MPlane, capT, outT = true, bufTypeCaptureMPlane, bufTypeOutputMPlane
	case caps&capVideoM2M != 0:
	default:
		return n, false
	}
	n.Driver, n.Card = cString(c.Driver[:]), cString(c.Card[:])
	var err error
	if n.Coded, err = enumFormats(dev, capT, true); err != nil {
		n.Err = devErr(path, "list CAPTURE formats", err)
		return n, true
	}
	if n.Raw, err = enumFormats(dev, outT, false); err != nil {
		n.Err = devErr(path, "list OUTPUT formats", err)
	}
	return n, true
}

// Find returns the first encoder node under devDir that encodes one of
// codecs from raw (0: any raw format), trying the codecs in order of
// preference, with the codec it offers; no such node is ErrNoEncoder.
func Find(devDir string, raw capture.PixelFormat, codecs ...capture.PixelFormat) (Node, capture.PixelFormat, error) {
	nodes, err := Probe(devDir)
	if err != nil {
		return Node{}, 0, err
	}
	return pick(nodes, raw, codecs...)
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
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(num, 10, 32); err == nil {
			nodes = append(nodes, node{name, n})
		}
	}
	slices.SortFunc(nodes, func(a, b node) int { return int(a.n) - int(b.n) })
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.name
	}
	return out
}
