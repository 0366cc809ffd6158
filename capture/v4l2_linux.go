//go:build linux

package capture

// V4L2 capture with this package's own MMAP streaming over
// golang.org/x/sys/unix.
//
// Why not github.com/blackjack/webcam, which the design card names (and which
// this file used at first): its streaming API (GetFrame/ReleaseFrame) returns
// only the bytes and a buffer index. struct v4l2_buffer stays inside it, so
// there is no driver timestamp, no driver sequence number (no count of
// dropped frames) and no V4L2_BUF_FLAG_ERROR; it has no Fd() for the ioctls it
// lacks (reading back the format, the frame rate, controls); a failed
// StartStreaming leaves the device busy until the process exits (webcam#70);
// and format enumeration was already done here with plain ioctls. The
// streaming itself is a dozen ioctls, below, and owning them lets a test drive
// the whole open/stream/close cycle through a fake device (v4l2Device). So
// capture no longer imports webcam.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/keyframe-cam/keyframe/internal/clock"
)

// Kernel structures (include/uapi/linux/videodev2.h). Their sizes and the
// request codes are pinned for 64-bit and 32-bit targets in TestKernelABI.

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

// v4l2FrmSizeEnum is struct v4l2_frmsizeenum (44 bytes).
type v4l2FrmSizeEnum struct {
	Index       uint32
	PixelFormat uint32
	Type        uint32
	Union       [6]uint32 // discrete: width, height; stepwise: min_w, max_w, step_w, min_h, max_h, step_h
	Reserved    [2]uint32
}

// v4l2FrmIvalEnum is struct v4l2_frmivalenum (52 bytes).
type v4l2FrmIvalEnum struct {
	Index       uint32
	PixelFormat uint32
	Width       uint32
	Height      uint32
	Type        uint32
	Union       [6]uint32 // discrete: num, den; stepwise: min, max, step (num, den each)
	Reserved    [2]uint32
}

// v4l2Format is struct v4l2_format: a type and a 200-byte union aligned like
// a pointer (it holds struct v4l2_window), so 208 bytes on 64-bit targets and
// 204 on 32-bit ones. A uintptr gives the alignment without a pointer the
// garbage collector would look at.
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

// v4l2Timecode is struct v4l2_timecode (16 bytes).
type v4l2Timecode struct {
	Type     uint32
	Flags    uint32
	Frames   uint8
	Seconds  uint8
	Minutes  uint8
	Hours    uint8
	Userbits [4]uint8
}

// v4l2Buffer is struct v4l2_buffer: 88 bytes on 64-bit targets, 68 on
// 32-bit ones. Its timestamp is a struct timeval of two longs, which
// unix.Timeval is on every Linux target (2x32 bits on arm and 386): the
// classic 32-bit layout every kernel accepts. (A C program built with 64-bit
// time_t on 32-bit ARM sends an 80-byte buffer instead, which kernels since
// 5.6 translate; this one does not need that.)
type v4l2Buffer struct {
	Index     uint32
	Type      uint32
	BytesUsed uint32
	Flags     uint32
	Field     uint32
	Timestamp unix.Timeval
	Timecode  v4l2Timecode
	Sequence  uint32
	Memory    uint32
	M         uintptr // union m: for MMAP the offset, in its first 4 bytes
	Length    uint32
	Reserved2 uint32
	RequestFD int32
}

// offset is m.offset, the mmap offset of an MMAP buffer.
func (b *v4l2Buffer) offset() uint32 { return *(*uint32)(unsafe.Pointer(&b.M)) }

// v4l2StreamParm is struct v4l2_streamparm (204 bytes); for capture the
// union is struct v4l2_captureparm: capability, capturemode, timeperframe
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

// v4l2QueryMenu is struct v4l2_querymenu (44 bytes, packed): for an integer
// menu the name union holds an s64 value.
type v4l2QueryMenu struct {
	ID       uint32
	Index    uint32
	Name     [32]byte
	Reserved uint32
}

// v4l2Control is struct v4l2_control (8 bytes).
type v4l2Control struct {
	ID    uint32
	Value int32
}

// v4l2ExtControl is struct v4l2_ext_control, packed (20 bytes): id, size,
// reserved2, then the value union (value or value64) at offset 12.
type v4l2ExtControl [20]byte

// v4l2ExtControls is struct v4l2_ext_controls: 32 bytes on 64-bit targets,
// 24 on 32-bit ones.
type v4l2ExtControls struct {
	Which     uint32 // the control class (ctrl_class) or V4L2_CTRL_WHICH_*
	Count     uint32
	ErrorIdx  uint32
	RequestFD int32
	Reserved  uint32
	Controls  unsafe.Pointer // *v4l2ExtControl
}

// ioctl request codes, _IOC(dir, 'V', nr, size) in the generic layout that
// arm, arm64, 386 and amd64 share.
const (
	iocWrite = 1
	iocRead  = 2
	iocRW    = iocRead | iocWrite

	vidiocQuerycap           = iocRead<<30 | unsafe.Sizeof(v4l2Capability{})<<16 | 'V'<<8 // nr 0
	vidiocEnumFmt            = iocRW<<30 | unsafe.Sizeof(v4l2FmtDesc{})<<16 | 'V'<<8 | 2
	vidiocGFmt               = iocRW<<30 | unsafe.Sizeof(v4l2Format{})<<16 | 'V'<<8 | 4
	vidiocSFmt               = iocRW<<30 | unsafe.Sizeof(v4l2Format{})<<16 | 'V'<<8 | 5
	vidiocReqbufs            = iocRW<<30 | unsafe.Sizeof(v4l2RequestBuffers{})<<16 | 'V'<<8 | 8
	vidiocQuerybuf           = iocRW<<30 | unsafe.Sizeof(v4l2Buffer{})<<16 | 'V'<<8 | 9
	vidiocQbuf               = iocRW<<30 | unsafe.Sizeof(v4l2Buffer{})<<16 | 'V'<<8 | 15
	vidiocDqbuf              = iocRW<<30 | unsafe.Sizeof(v4l2Buffer{})<<16 | 'V'<<8 | 17
	vidiocStreamon           = iocWrite<<30 | unsafe.Sizeof(int32(0))<<16 | 'V'<<8 | 18
	vidiocStreamoff          = iocWrite<<30 | unsafe.Sizeof(int32(0))<<16 | 'V'<<8 | 19
	vidiocGParm              = iocRW<<30 | unsafe.Sizeof(v4l2StreamParm{})<<16 | 'V'<<8 | 21
	vidiocSParm              = iocRW<<30 | unsafe.Sizeof(v4l2StreamParm{})<<16 | 'V'<<8 | 22
	vidiocGCtrl              = iocRW<<30 | unsafe.Sizeof(v4l2Control{})<<16 | 'V'<<8 | 27
	vidiocSCtrl              = iocRW<<30 | unsafe.Sizeof(v4l2Control{})<<16 | 'V'<<8 | 28
	vidiocQueryctrl          = iocRW<<30 | unsafe.Sizeof(v4l2QueryCtrl{})<<16 | 'V'<<8 | 36
	vidiocQuerymenu          = iocRW<<30 | unsafe.Sizeof(v4l2QueryMenu{})<<16 | 'V'<<8 | 37
	vidiocGExtCtrls          = iocRW<<30 | unsafe.Sizeof(v4l2ExtControls{})<<16 | 'V'<<8 | 71
	vidiocSExtCtrls          = iocRW<<30 | unsafe.Sizeof(v4l2ExtControls{})<<16 | 'V'<<8 | 72
	vidiocEnumFramesizes     = iocRW<<30 | unsafe.Sizeof(v4l2FrmSizeEnum{})<<16 | 'V'<<8 | 74
	vidiocEnumFrameintervals = iocRW<<30 | unsafe.Sizeof(v4l2FrmIvalEnum{})<<16 | 'V'<<8 | 75
)

// Constants of videodev2.h.
const (
	bufTypeVideoCapture = 1
	memoryMMAP          = 1
	fieldNone           = 1

	bufFlagError             = 0x00000040
	bufFlagTimestampMask     = 0x0000e000
	bufFlagTimestampMonotone = 0x00002000

	fmtFlagCompressed = 0x0001
	fmtFlagEmulated   = 0x0002

	frmivalDiscrete = 1

	capTimePerFrame = 0x1000

	ctrlFlagDisabled  = 0x0001
	ctrlFlagGrabbed   = 0x0002
	ctrlFlagReadOnly  = 0x0004
	ctrlFlagInactive  = 0x0010
	ctrlFlagWriteOnly = 0x0040
	ctrlFlagNextCtrl  = 0x80000000
	ctrlClassMask     = 0x0fff0000
)

// V4L2 frame size enumeration types.
const (
	frmsizeDiscrete   = 1
	frmsizeContinuous = 2
	frmsizeStepwise   = 3
)

// v4l2Device is the kernel side of a V4L2 node: the system calls the source
// makes. fdDevice makes them on a file descriptor; tests script a fake. arg
// points to the request's structure, which must not be on the goroutine
// stack of a caller that needs Next to stay allocation-free (use a field of
// a heap object).
type v4l2Device interface {
	ioctl(req uintptr, arg unsafe.Pointer) error
	mmap(offset int64, length int) ([]byte, error)
	munmap(b []byte) error
	// poll waits up to timeout for the node to become readable; it returns
	// the revents (0 on timeout).
	poll(timeout time.Duration) (revents int16, err error)
	close() error
}

// fdDevice is a V4L2 node opened in non-blocking mode.
type fdDevice struct {
	fd  int
	pfd [1]unix.PollFd
	ts  unix.Timespec
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

func (d *fdDevice) poll(timeout time.Duration) (int16, error) {
	d.pfd[0] = unix.PollFd{Fd: int32(d.fd), Events: unix.POLLIN}
	d.ts = unix.NsecToTimespec(int64(timeout))
	n, err := unix.Ppoll(d.pfd[:], &d.ts, nil)
	if err != nil || n == 0 {
		return 0, err
	}
	return d.pfd[0].Revents, nil
}

func (d *fdDevice) close() error { return unix.Close(d.fd) }

// monoClock reads CLOCK_MONOTONIC, the clock of V4L2 timestamps.
type monoClock struct{ ts unix.Timespec }

func (m *monoClock) now() time.Duration {
	// clock_gettime(CLOCK_MONOTONIC) cannot fail on Linux; on the impossible
	// error the frame is stamped with the clock instead (age 0).
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &m.ts) != nil {
		return 0
	}
	return time.Duration(m.ts.Nano())
}

// absent reports whether err means the device node or its hardware is gone:
// ENOENT (no node), ENODEV and ENXIO (unplugged), EIO (vb2 marks a queue in
// error when its device disconnects).
func absent(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.EIO)
}

// deviceErr wraps an error of operation op on path, marking an absent
// device with ErrNoDevice.
func deviceErr(path, op string, err error) error {
	if absent(err) {
		return fmt.Errorf("%w: %s: %s: %w", ErrNoDevice, path, op, err)
	}
	return fmt.Errorf("capture: %s: %s: %w", path, op, err)
}

// V4L2 is a [Source] reading a V4L2 camera with MMAP streaming: 2..4 driver
// buffers, each dequeued (VIDIOC_DQBUF), copied into the caller's Frame and
// queued back (VIDIOC_QBUF) at once, so no slice of driver memory outlives
// the call. It captures YUYV, NV12, YU12 (I420), GREY, RGB24 or MJPEG (see
// [V4L2Config].Format) at the size, stride and rate the driver actually set
// ([V4L2.Geometry]).
//
// Frame.Time is the driver's timestamp when the buffer says it is on
// CLOCK_MONOTONIC (V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC, all vb2 drivers),
// mapped per frame onto the source's clock: Time = clk.Now() minus the
// frame's age on CLOCK_MONOTONIC. A buffer without a monotonic timestamp is
// stamped clk.Now() when dequeued. Frame.Sequence is the driver's frame
// counter (extended to 64 bits); its gaps are counted in Stats().Dropped.
//
// Buffers the driver flags V4L2_BUF_FLAG_ERROR, empty ones (bytesused 0),
// short ones and MJPEG frames that do not decode are requeued, counted
// ([V4L2.Stats]) and skipped. Next allocates nothing for uncompressed formats
// once the frame has grown; MJPEG frames are decoded with image/jpeg, which
// allocates the image.
//
// Close may be called while Next runs (from another goroutine): Next returns
// [ErrClosed] within a quarter second and Close then releases the device.
type V4L2 struct {
	mu        sync.Mutex
	closing   atomic.Bool
	dev       v4l2Device // nil once closed
	path      string
	clk       clock.Clock
	mono      func() time.Duration // CLOCK_MONOTONIC
	log       *slog.Logger
	geo       geometry
	interval  Interval
	stall     time.Duration
	bufs      [][]byte // the mmapped driver buffers
	nbufs     int      // len(bufs) once streaming, for Geometry
	reqbufs   bool     // buffers were requested and must be freed
	streaming bool
	dq, q     v4l2Buffer // DQBUF and QBUF arguments, here so Next does not allocate
	seq       seqTracker
	jpeg      []byte // an MJPEG frame between requeue and decoding
	broken    error  // the device is gone: every Next returns this
	count     v4l2Counters
	card, bus string // VIDIOC_QUERYCAP's card name and bus info
}

// OpenV4L2 opens the camera, chooses and sets its format, frame rate and
// controls, and starts streaming. A missing device, or a node that is not a
// video capture node, is [ErrNoDevice]. A nil clk means the system clock.
func OpenV4L2(cfg V4L2Config, clk clock.Clock) (*V4L2, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	dev, err := openFD(cfg.Device, unix.O_RDWR)
	if err != nil {
		return nil, deviceErr(cfg.Device, "open", err)
	}
	return openV4L2(dev, cfg, clk, (&monoClock{}).now)
}

// openV4L2 sets up and starts streaming on an open device; cfg has its
// defaults. On error the device is closed.
func openV4L2(dev v4l2Device, cfg V4L2Config, clk clock.Clock, mono func() time.Duration) (*V4L2, error) {
	v := &V4L2{dev: dev, path: cfg.Device, clk: clock.Or(clk), mono: mono, log: cfg.Logger, stall: cfg.Stall}
	ok := false
	defer func() {
		if !ok {
			// Already failing; what release reports adds nothing.
			_ = v.release()
			v.dev = nil
		}
	}()
	c, err := queryCap(dev)
	if notV4L2(err) {
		return nil, fmt.Errorf("%w: %s: not a V4L2 device", ErrNoDevice, v.path)
	}
	if err != nil {
		return nil, deviceErr(v.path, "query capabilities", err)
	}
	caps := nodeCaps(c.Capabilities, c.DeviceCaps)
	card := cString(c.Card[:])
	v.card, v.bus = card, cString(c.BusInfo[:])
	if caps&capVideoCapture == 0 {
		return nil, fmt.Errorf("%w: %s (%s): not a video capture node", ErrNoDevice, v.path, card)
	}
	if caps&capStreaming == 0 {
		return nil, fmt.Errorf("capture: %s (%s): no streaming I/O", v.path, card)
	}
	if err := v.setFormat(cfg, card); err != nil {
		return nil, err
	}
	v.setRate(cfg.FPS)
	if err := v.setControls(cfg.Controls); err != nil {
		return nil, err
	}
	if err := v.start(cfg.Buffers); err != nil {
		return nil, err
	}
	ok = true
	g := v.Geometry()
	v.log.Info("capture: camera open", "device", v.path, "card", card, "format", g.Format.String(),
		"width", g.Width, "height", g.Height, "stride", g.Stride, "fps", g.FPS, "buffers", g.Buffers)
	return v, nil
}

// notV4L2 reports whether VIDIOC_QUERYCAP's error means the node is no V4L2
// device: ENOTTY from the kernel, or ENOSYS from an emulator (qemu-user)
// that passes no unknown ioctl on.
func notV4L2(err error) bool { return errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.ENOSYS) }

func queryCap(dev v4l2Device) (v4l2Capability, error) {
	var c v4l2Capability
	err := dev.ioctl(vidiocQuerycap, unsafe.Pointer(&c))
	return c, err
}

// setFormat chooses the pixel format (cfg.Format, or the best offer for the
// size and rate), sets it with the size, and reads back what the driver set.
func (v *V4L2) setFormat(cfg V4L2Config, card string) error {
	formats, err := listFormats(v.dev)
	if err != nil {
		return deviceErr(v.path, "list formats", err)
	}
	format := cfg.Format
	if format != 0 {
		offered := make([]PixelFormat, len(formats))
		for i, f := range formats {
			offered[i] = f.Format
		}
		if !slices.Contains(offered, format) {
			return fmt.Errorf("capture: %s (%s): format %v not offered (the camera offers %s): %w", v.path, card, format, formatList(offered), ErrUnsupportedFormat)
		}
	} else {
		offers := make([]formatOffer, 0, len(formats))
		for _, f := range formats {
			o := formatOffer{format: f.Format}
			if v4l2Supported(f.Format) {
				sizes, err := listSizes(v.dev, f.Format)
				if err != nil {
					return deviceErr(v.path, "list sizes of "+f.Format.String(), err)
				}
				o.size = sizeOffer(sizes, cfg.Width, cfg.Height)
				o.rate = matchUnknown
				if o.size == matchYes {
					rates, err := listRates(v.dev, f.Format, cfg.Width, cfg.Height)
					if err != nil {
						return deviceErr(v.path, "list frame rates of "+f.Format.String(), err)
					}
					o.rate = rateOffer(rates, cfg.FPS)
				}
			}
			offers = append(offers, o)
		}
		if format, err = chooseFormat(offers); err != nil {
			return fmt.Errorf("capture: %s (%s): %w", v.path, card, err)
		}
	}
	f := v4l2Format{Type: bufTypeVideoCapture}
	ne := binary.NativeEndian
	ne.PutUint32(f.Fmt.Raw[0:], uint32(cfg.Width))
	ne.PutUint32(f.Fmt.Raw[4:], uint32(cfg.Height))
	ne.PutUint32(f.Fmt.Raw[8:], uint32(format))
	ne.PutUint32(f.Fmt.Raw[12:], fieldNone)
	if err := v.dev.ioctl(vidiocSFmt, unsafe.Pointer(&f)); err != nil {
		return deviceErr(v.path, fmt.Sprintf("set format %v %dx%d", format, cfg.Width, cfg.Height), err)
	}
	pix, err := getFormat(v.dev)
	if err != nil {
		return deviceErr(v.path, "read back format", err)
	}
	if v.geo, err = geometryOf(pix, format); err != nil {
		return fmt.Errorf("capture: %s (%s): %w", v.path, card, err)
	}
	if v.geo.width != cfg.Width || v.geo.height != cfg.Height {
		v.log.Info("capture: driver chose another frame size", "device", v.path,
			"asked", strconv.Itoa(cfg.Width)+"x"+strconv.Itoa(cfg.Height),
			"set", strconv.Itoa(v.geo.width)+"x"+strconv.Itoa(v.geo.height))
	}
	return nil
}

// getFormat reads back the capture format the driver set (VIDIOC_G_FMT).
func getFormat(dev v4l2Device) (pixFormat, error) {
	f := v4l2Format{Type: bufTypeVideoCapture}
	if err := dev.ioctl(vidiocGFmt, unsafe.Pointer(&f)); err != nil {
		return pixFormat{}, err
	}
	raw, ne := f.Fmt.Raw[:], binary.NativeEndian
	return pixFormat{
		Width:        ne.Uint32(raw[0:]),
		Height:       ne.Uint32(raw[4:]),
		PixelFormat:  ne.Uint32(raw[8:]),
		Field:        ne.Uint32(raw[12:]),
		BytesPerLine: ne.Uint32(raw[16:]),
		SizeImage:    ne.Uint32(raw[20:]),
	}, nil
}

// setRate asks for fps with VIDIOC_S_PARM when the driver can set it, and
// reads back the rate it set. Not getting the rate is logged, not fatal.
func (v *V4L2) setRate(fps float64) {
	p := v4l2StreamParm{Type: bufTypeVideoCapture}
	ne := binary.NativeEndian
	if err := v.dev.ioctl(vidiocGParm, unsafe.Pointer(&p)); err != nil {
		if fps > 0 {
			v.log.Warn("capture: cannot read the frame rate; using the driver's", "device", v.path, "fps", fps, "err", err)
		}
		return
	}
	if fps > 0 {
		if ne.Uint32(p.Parm[0:])&capTimePerFrame == 0 {
			v.log.Warn("capture: driver cannot set the frame rate; using its own", "device", v.path, "fps", fps)
		} else {
			want := fpsInterval(fps)
			ne.PutUint32(p.Parm[8:], want.Num)
			ne.PutUint32(p.Parm[12:], want.Den)
			if err := v.dev.ioctl(vidiocSParm, unsafe.Pointer(&p)); err != nil {
				v.log.Warn("capture: frame rate not set; using the driver's", "device", v.path, "fps", fps, "err", err)
				p = v4l2StreamParm{Type: bufTypeVideoCapture}
				if v.dev.ioctl(vidiocGParm, unsafe.Pointer(&p)) != nil {
					return
				}
			}
		}
	}
	v.interval = Interval{Num: ne.Uint32(p.Parm[8:]), Den: ne.Uint32(p.Parm[12:])}
	if got := v.interval.FPS(); fps > 0 && got > 0 && (got < fps*rateTolerance || got > fps/rateTolerance) {
		v.log.Info("capture: driver chose another frame rate", "device", v.path, "asked", fps, "set", got)
	}
}

// setControls applies the configured controls, in order.
func (v *V4L2) setControls(cs []Control) error {
	if len(cs) == 0 {
		return nil
	}
	infos, err := listControls(v.dev, false)
	if err != nil {
		return deviceErr(v.path, "list controls", err)
	}
	for _, c := range cs {
		info, err := findControl(infos, c.Name)
		if err != nil {
			return fmt.Errorf("capture: %s: %w", v.path, err)
		}
		if err := checkControlValue(c, info); err != nil {
			return fmt.Errorf("capture: %s: %w", v.path, err)
		}
		if err := setControl(v.dev, info, c.Value); err != nil {
			switch {
			case errors.Is(err, unix.EACCES), errors.Is(err, unix.EBUSY):
				return fmt.Errorf("capture: %s: control %s cannot be set now (read-only, or in use): %w", v.path, c, err)
			case errors.Is(err, unix.ERANGE), errors.Is(err, unix.EINVAL):
				return fmt.Errorf("capture: %s: control %s: the driver refused the value: %w", v.path, c, err)
			}
			return deviceErr(v.path, "set control "+c.String(), err)
		}
		if got, err := getControl(v.dev, info); err == nil && got != c.Value && info.Type != ControlButton {
			v.log.Info("capture: driver adjusted a control", "device", v.path, "control", c.Name, "asked", c.Value, "set", got)
		}
	}
	return nil
}

// start requests and maps the buffers, queues them and starts streaming.
func (v *V4L2) start(n int) error {
	rb := v4l2RequestBuffers{Count: uint32(n), Type: bufTypeVideoCapture, Memory: memoryMMAP}
	if err := v.dev.ioctl(vidiocReqbufs, unsafe.Pointer(&rb)); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("capture: %s: request buffers: device busy (is another program capturing?): %w", v.path, err)
		}
		return deviceErr(v.path, "request buffers", err)
	}
	v.reqbufs = true
	if rb.Count < 2 || rb.Count > v4l2MaxBuffers {
		return fmt.Errorf("capture: %s: asked for %d buffers, driver gave %d", v.path, n, rb.Count)
	}
	v.bufs = make([][]byte, rb.Count)
	for i := range v.bufs {
		b := v4l2Buffer{Index: uint32(i), Type: bufTypeVideoCapture, Memory: memoryMMAP}
		if err := v.dev.ioctl(vidiocQuerybuf, unsafe.Pointer(&b)); err != nil {
			return deviceErr(v.path, fmt.Sprintf("query buffer %d", i), err)
		}
		if b.Length == 0 || int(b.Length) < v.geo.need || b.Length > maxFrameBytes {
			return fmt.Errorf("capture: %s: buffer %d has %d bytes, a frame needs %d", v.path, i, b.Length, v.geo.need)
		}
		m, err := v.dev.mmap(int64(b.offset()), int(b.Length))
		if err != nil {
			return deviceErr(v.path, fmt.Sprintf("map buffer %d", i), err)
		}
		v.bufs[i] = m
	}
	for i := range v.bufs {
		if err := v.queue(uint32(i)); err != nil {
			return deviceErr(v.path, fmt.Sprintf("queue buffer %d", i), err)
		}
	}
	typ := int32(bufTypeVideoCapture)
	if err := v.dev.ioctl(vidiocStreamon, unsafe.Pointer(&typ)); err != nil {
		return deviceErr(v.path, "start streaming", err)
	}
	v.streaming = true
	v.nbufs = len(v.bufs)
	return nil
}

// queue gives buffer i back to the driver.
func (v *V4L2) queue(i uint32) error {
	v.q = v4l2Buffer{Index: i, Type: bufTypeVideoCapture, Memory: memoryMMAP}
	return v.dev.ioctl(vidiocQbuf, unsafe.Pointer(&v.q))
}

// release stops streaming, unmaps and frees the buffers and closes the
// device, in that order (no mapping may outlive STREAMOFF's return of the
// buffers, and the driver frees them only when they are unmapped). Errors of
// a device that is already gone are not reported.
func (v *V4L2) release() error {
	var errs []error
	if v.streaming {
		typ := int32(bufTypeVideoCapture)
		if err := v.dev.ioctl(vidiocStreamoff, unsafe.Pointer(&typ)); err != nil && !absent(err) {
			errs = append(errs, fmt.Errorf("stop streaming: %w", err))
		}
		v.streaming = false
	}
	for i, b := range v.bufs {
		if b == nil {
			continue
		}
		if err := v.dev.munmap(b); err != nil {
			errs = append(errs, fmt.Errorf("unmap buffer %d: %w", i, err))
		}
	}
	v.bufs = nil
	if v.reqbufs {
		rb := v4l2RequestBuffers{Count: 0, Type: bufTypeVideoCapture, Memory: memoryMMAP}
		if err := v.dev.ioctl(vidiocReqbufs, unsafe.Pointer(&rb)); err != nil && !absent(err) && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("free buffers: %w", err))
		}
		v.reqbufs = false
	}
	if err := v.dev.close(); err != nil {
		errs = append(errs, fmt.Errorf("close: %w", err))
	}
	return errors.Join(errs...)
}

// Geometry is the format the driver set: pixel format, size, bytes per line,
// buffer size, frame rate and buffer count. It is safe to call while Next
// runs.
func (v *V4L2) Geometry() V4L2Geometry {
	return V4L2Geometry{
		Format: v.geo.format, Width: v.geo.width, Height: v.geo.height,
		Stride: v.geo.stride, SizeImage: v.geo.sizeImage,
		Interval: v.interval, FPS: v.interval.FPS(), Buffers: v.nbufs,
		Card: v.card, Bus: v.bus,
	}
}

// Stats returns the counters. It is safe to call while Next runs.
func (v *V4L2) Stats() V4L2Stats { return v.count.snapshot() }

// skip reasons, for the stall error.
type skipReason uint8

const (
	skipNone skipReason = iota
	skipError
	skipEmpty
	skipShort
	skipCorrupt
)

func (r skipReason) String() string {
	return [...]string{"", "flagged as errors by the driver", "empty", "short", "undecodable MJPEG"}[r]
}

// Next waits for the next usable frame and copies it into f. It returns
// [ErrStalled] when no usable frame came for the configured stall time, an
// error wrapping [ErrNoDevice] when the camera went away (and from then on),
// ctx.Err() when ctx ends, and [ErrClosed] after Close. On an error f's
// contents are unspecified.
func (v *V4L2) Next(ctx context.Context, f *Frame) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.dev == nil || v.closing.Load() {
		return ErrClosed
	}
	if v.broken != nil {
		return v.broken
	}
	start := v.mono()
	var (
		again   int
		skipped uint64
		last    skipReason
	)
	for {
		if v.closing.Load() {
			return ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		waited := v.mono() - start
		if waited >= v.stall {
			v.count.stalls.Add(1)
			if skipped > 0 {
				return fmt.Errorf("capture: %s: no usable frame for %v (%d buffers skipped, the last %v): %w", v.path, waited, skipped, last, ErrStalled)
			}
			return fmt.Errorf("capture: %s: no frame for %v: %w", v.path, waited, ErrStalled)
		}
		revents, err := v.dev.poll(min(v.stall-waited, v4l2PollSlice))
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return v.fail("wait for frame", err)
		case revents == 0:
			v.count.timeouts.Add(1)
			continue
		case revents&unix.POLLNVAL != 0:
			return v.fail("wait for frame", unix.EBADF)
		}
		// POLLIN, or POLLERR: DQBUF says which (a queue in error gives EIO).
		v.dq = v4l2Buffer{Type: bufTypeVideoCapture, Memory: memoryMMAP}
		err = v.dev.ioctl(vidiocDqbuf, unsafe.Pointer(&v.dq))
		switch {
		case errors.Is(err, unix.EAGAIN):
			v.count.again.Add(1)
			if again++; again >= v4l2MaxAgain {
				return v.fail("dequeue buffer", fmt.Errorf("%d wakeups in a row without a frame (poll revents %#x): %w", again, revents, err))
			}
			continue
		case err != nil:
			return v.fail("dequeue buffer", err)
		}
		again = 0
		reason, err := v.take(f)
		if err != nil {
			return err
		}
		if reason != skipNone {
			skipped++
			last = reason
			continue
		}
		v.count.frames.Add(1)
		return nil
	}
}

// take handles the buffer just dequeued into v.dq: it copies the frame into
// f (or v.jpeg, decoded after the requeue), requeues the buffer, and says
// whether the frame was skipped. An error is a failed requeue.
func (v *V4L2) take(f *Frame) (skipReason, error) {
	b := &v.dq
	idx := b.Index
	if int(idx) >= len(v.bufs) {
		return skipNone, v.fail("dequeue buffer", fmt.Errorf("driver returned buffer %d of %d", idx, len(v.bufs)))
	}
	seq, dropped := v.seq.next(b.Sequence)
	v.count.dropped.Add(dropped)
	flags := b.Flags
	stamp := time.Duration(b.Timestamp.Nano())
	mem := v.bufs[idx]
	n := min(int(b.BytesUsed), len(mem))

	reason := skipNone
	switch {
	case flags&bufFlagError != 0:
		reason = skipError
	case v.geo.format == FormatMJPEG:
		if n == 0 {
			reason = skipEmpty
			break
		}
		var err error
		if v.jpeg, _, _, err = jpegWithHuffman(v.jpeg[:0], mem[:n]); err != nil {
			reason = skipCorrupt
		}
	default:
		switch err := fillFromBuffer(f, mem[:n], v.geo); {
		case errors.Is(err, errEmptyBuffer):
			reason = skipEmpty
		case err != nil:
			reason = skipShort
		}
	}
	// The copy is made: the driver may have the buffer back.
	if err := v.queue(idx); err != nil {
		return skipNone, v.fail("requeue buffer", err)
	}
	if reason == skipNone && v.geo.format == FormatMJPEG {
		if fillFromJPEG(f, v.jpeg, v.geo.width, v.geo.height) != nil {
			reason = skipCorrupt
		}
	}
	switch reason {
	case skipNone:
	case skipError:
		v.count.errors.Add(1)
		return reason, nil
	case skipEmpty:
		v.count.empty.Add(1)
		return reason, nil
	case skipShort:
		v.count.short.Add(1)
		return reason, nil
	case skipCorrupt:
		v.count.corrupt.Add(1)
		return reason, nil
	}
	now := v.clk.Now()
	if flags&bufFlagTimestampMask == bufFlagTimestampMonotone && stamp > 0 {
		f.Time = frameTime(now, v.mono(), stamp)
	} else {
		f.Time = now
	}
	f.Sequence = seq
	return skipNone, nil
}

// fail wraps a streaming error; a device that is gone stays failed.
func (v *V4L2) fail(op string, err error) error {
	err = deviceErr(v.path, op, err)
	if errors.Is(err, ErrNoDevice) || op == "requeue buffer" {
		v.broken = err
	}
	return err
}

// Close stops streaming, unmaps the buffers and closes the device. A running
// Next returns ErrClosed first (within a quarter second). Closing twice is
// not an error.
func (v *V4L2) Close() error {
	v.closing.Store(true)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.dev == nil {
		return nil
	}
	err := v.release()
	v.dev = nil
	if err != nil {
		return fmt.Errorf("capture: close %s: %w", v.path, err)
	}
	return nil
}

// Probe lists the V4L2 video capture nodes (videoN) under devDir, with their
// formats, frame sizes, frame rates and controls. Each node is opened
// read-only and queried; nodes that are not video capture nodes (metadata
// nodes, codecs) are left out. A node that cannot be opened or queried is
// listed with Err set. No node is an empty list and a nil error.
func Probe(devDir string) ([]DeviceInfo, error) {
	entries, err := os.ReadDir(devDir)
	if err != nil {
		return nil, fmt.Errorf("capture: probe: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	devs := []DeviceInfo{}
	for _, name := range videoNodes(names) {
		path := filepath.Join(devDir, name)
		dev, err := openFD(path, unix.O_RDONLY)
		if err != nil {
			devs = append(devs, DeviceInfo{Path: path, Name: name, Err: deviceErr(path, "open", err)})
			continue
		}
		info, ok := probeDevice(dev, path)
		// Read-only queries; an error closing the node changes nothing.
		_ = dev.close()
		if ok {
			devs = append(devs, info)
		}
	}
	return devs, nil
}

// probeDevice describes one open node; ok is false for a V4L2 node that is
// not a video capture node.
func probeDevice(dev v4l2Device, path string) (info DeviceInfo, ok bool) {
	info = DeviceInfo{Path: path, Name: filepath.Base(path)}
	c, err := queryCap(dev)
	if err != nil {
		if notV4L2(err) {
			info.Err = fmt.Errorf("capture: %s: not a V4L2 device: %w", path, err)
		} else {
			info.Err = deviceErr(path, "query capabilities", err)
		}
		return info, true
	}
	caps := nodeCaps(c.Capabilities, c.DeviceCaps)
	if caps&capVideoCapture == 0 {
		return info, false
	}
	info.Driver = cString(c.Driver[:])
	info.Card = cString(c.Card[:])
	info.Bus = cString(c.BusInfo[:])
	var errs []error
	formats, err := listFormats(dev)
	if err != nil {
		errs = append(errs, deviceErr(path, "list formats", err))
	}
	for i := range formats {
		f := &formats[i]
		if f.Sizes, err = listSizes(dev, f.Format); err != nil {
			errs = append(errs, deviceErr(path, "list sizes of "+f.Format.String(), err))
			continue
		}
		for j := range f.Sizes {
			s := &f.Sizes[j]
			if s.Rates, err = listRates(dev, f.Format, s.Width, s.Height); err != nil {
				errs = append(errs, deviceErr(path, fmt.Sprintf("list frame rates of %v %v", f.Format, s), err))
			}
		}
	}
	info.Formats = formats
	if info.Controls, err = listControls(dev, true); err != nil {
		errs = append(errs, deviceErr(path, "list controls", err))
	}
	if caps&capStreaming == 0 {
		errs = append(errs, fmt.Errorf("capture: %s: no streaming I/O, which capture needs", path))
	}
	info.Err = errors.Join(errs...)
	return info, true
}

// listFormats lists a capture node's pixel formats (VIDIOC_ENUM_FMT).
func listFormats(dev v4l2Device) ([]FormatInfo, error) {
	var out []FormatInfo
	for i := range uint32(64) {
		d := v4l2FmtDesc{Index: i, Type: bufTypeVideoCapture}
		err := dev.ioctl(vidiocEnumFmt, unsafe.Pointer(&d))
		if errors.Is(err, unix.EINVAL) {
			break
		}
		if err != nil {
			return out, err
		}
		p := PixelFormat(d.PixelFormat)
		out = append(out, FormatInfo{
			Format: p, Description: cString(d.Description[:]),
			Compressed: d.Flags&fmtFlagCompressed != 0, Emulated: d.Flags&fmtFlagEmulated != 0,
			Supported: v4l2Supported(p),
		})
	}
	return out, nil
}

// listSizes lists the frame sizes of a format (VIDIOC_ENUM_FRAMESIZES). A
// driver that does not enumerate them gives none and no error.
func listSizes(dev v4l2Device, p PixelFormat) ([]FrameSize, error) {
	var sizes []FrameSize
	for i := range uint32(256) {
		e := v4l2FrmSizeEnum{Index: i, PixelFormat: uint32(p)}
		err := dev.ioctl(vidiocEnumFramesizes, unsafe.Pointer(&e))
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
			break
		}
		if err != nil {
			return sizes, err
		}
		u := e.Union
		switch e.Type {
		case frmsizeDiscrete:
			sizes = append(sizes, FrameSize{Width: int(u[0]), Height: int(u[1]), MinWidth: int(u[0]), MinHeight: int(u[1])})
			continue
		case frmsizeContinuous:
			u[2], u[5] = 1, 1
		}
		// Continuous and stepwise have one entry.
		sizes = append(sizes, FrameSize{
			MinWidth: int(u[0]), Width: int(u[1]), StepWidth: max(1, int(u[2])),
			MinHeight: int(u[3]), Height: int(u[4]), StepHeight: max(1, int(u[5])),
		})
		break
	}
	return sizes, nil
}

// listRates lists the frame intervals of a format at one size
// (VIDIOC_ENUM_FRAMEINTERVALS). A driver that does not enumerate them gives
// none and no error.
func listRates(dev v4l2Device, p PixelFormat, w, h int) (FrameRates, error) {
	var r FrameRates
	for i := range uint32(256) {
		e := v4l2FrmIvalEnum{Index: i, PixelFormat: uint32(p), Width: uint32(w), Height: uint32(h)}
		err := dev.ioctl(vidiocEnumFrameintervals, unsafe.Pointer(&e))
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
			break
		}
		if err != nil {
			return r, err
		}
		u := e.Union
		if e.Type == frmivalDiscrete {
			r.Discrete = append(r.Discrete, Interval{Num: u[0], Den: u[1]})
			continue
		}
		r.Min, r.Max, r.Step = Interval{u[0], u[1]}, Interval{u[2], u[3]}, Interval{u[4], u[5]}
		break
	}
	return r, nil
}

// listControls enumerates the controls (VIDIOC_QUERYCTRL with
// V4L2_CTRL_FLAG_NEXT_CTRL), leaving out disabled ones and class headings.
// withValues also reads each control's current value.
func listControls(dev v4l2Device, withValues bool) ([]ControlInfo, error) {
	var out []ControlInfo
	id := uint32(0)
	for range 4096 {
		q := v4l2QueryCtrl{ID: id | ctrlFlagNextCtrl}
		err := dev.ioctl(vidiocQueryctrl, unsafe.Pointer(&q))
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
			break // the end, or a driver without controls
		}
		if err != nil {
			return out, err
		}
		if q.ID&^ctrlFlagNextCtrl <= id {
			return out, fmt.Errorf("control enumeration went from %#x back to %#x", id, q.ID)
		}
		id = q.ID
		typ := ControlType(q.Type)
		if q.Flags&ctrlFlagDisabled != 0 || typ == ControlClass {
			continue
		}
		label := cString(q.Name[:])
		info := ControlInfo{
			ID: q.ID, Name: controlName(label), Label: label, Type: typ,
			Min: int64(q.Minimum), Max: int64(q.Maximum), Step: int64(q.Step), Default: int64(q.DefaultValue),
			ReadOnly: q.Flags&(ctrlFlagReadOnly|ctrlFlagGrabbed) != 0,
			Inactive: q.Flags&ctrlFlagInactive != 0,
		}
		if typ == ControlBitmask { // a 32-bit mask: its fields are unsigned
			info.Min, info.Max, info.Default = 0, int64(uint32(q.Maximum)), int64(uint32(q.DefaultValue))
		}
		if typ == ControlMenu || typ == ControlIntegerMenu {
			info.Menu = listMenu(dev, q)
		}
		if withValues {
			if q.Flags&ctrlFlagWriteOnly != 0 || typ == ControlButton {
				info.ValueErr = errors.New("write-only")
			} else {
				info.Value, info.ValueErr = getControl(dev, info)
			}
		}
		out = append(out, info)
	}
	return out, nil
}

// listMenu lists the valid entries of a menu control (VIDIOC_QUERYMENU);
// drivers skip invalid indices with EINVAL.
func listMenu(dev v4l2Device, q v4l2QueryCtrl) []MenuItem {
	var items []MenuItem
	for i := q.Minimum; i <= q.Maximum && i-q.Minimum < 256 && i >= 0; i++ {
		m := v4l2QueryMenu{ID: q.ID, Index: uint32(i)}
		if dev.ioctl(vidiocQuerymenu, unsafe.Pointer(&m)) != nil {
			continue
		}
		name := cString(m.Name[:])
		if ControlType(q.Type) == ControlIntegerMenu {
			name = strconv.FormatInt(int64(binary.NativeEndian.Uint64(m.Name[:8])), 10)
		}
		items = append(items, MenuItem{Index: int64(i), Name: name})
	}
	return items
}

// getControl reads a control's value: VIDIOC_G_CTRL, or VIDIOC_G_EXT_CTRLS
// for a 64-bit control.
func getControl(dev v4l2Device, info ControlInfo) (int64, error) {
	if info.Type == ControlInteger64 {
		return extControl(dev, vidiocGExtCtrls, info.ID, 0)
	}
	c := v4l2Control{ID: info.ID}
	if err := dev.ioctl(vidiocGCtrl, unsafe.Pointer(&c)); err != nil {
		return 0, err
	}
	if info.Type == ControlBitmask {
		return int64(uint32(c.Value)), nil
	}
	return int64(c.Value), nil
}

// setControl sets a control: VIDIOC_S_CTRL, or VIDIOC_S_EXT_CTRLS for a
// 64-bit control.
func setControl(dev v4l2Device, info ControlInfo, value int64) error {
	if info.Type == ControlInteger64 {
		_, err := extControl(dev, vidiocSExtCtrls, info.ID, value)
		return err
	}
	lo, hi := int64(-1<<31), int64(1<<31-1)
	if info.Type == ControlBitmask {
		lo, hi = 0, 1<<32-1
	}
	if value < lo || value > hi {
		return fmt.Errorf("control %s=%d does not fit 32 bits: %w", info.Name, value, unix.ERANGE)
	}
	c := v4l2Control{ID: info.ID, Value: int32(uint32(value))}
	return dev.ioctl(vidiocSCtrl, unsafe.Pointer(&c))
}

// extControl gets or sets one 64-bit control with the extended-control
// ioctls, naming its class (which every kernel accepts).
func extControl(dev v4l2Device, req uintptr, id uint32, value int64) (int64, error) {
	c := new(v4l2ExtControl)
	ne := binary.NativeEndian
	ne.PutUint32(c[0:], id)
	ne.PutUint64(c[12:], uint64(value))
	x := v4l2ExtControls{Which: id & ctrlClassMask, Count: 1, Controls: unsafe.Pointer(c)}
	err := dev.ioctl(req, unsafe.Pointer(&x))
	runtime.KeepAlive(c)
	if err != nil {
		return 0, err
	}
	return int64(ne.Uint64(c[12:])), nil
}

// SetControls sets controls on the camera at path, by the names
// capture.controls takes, without capturing from it. Another program may be
// capturing: V4L2 controls belong to the device, not to an open file, so
// its picture changes at once. log receives the driver's adjustments of a
// value (nil: [slog.Default]).
func SetControls(path string, cs []Control, log *slog.Logger) error {
	dev, err := openFD(path, unix.O_RDWR)
	if err != nil {
		return deviceErr(path, "open", err)
	}
	return setDeviceControls(dev, path, cs, log)
}

// setDeviceControls sets cs on the open dev and closes it.
func setDeviceControls(dev v4l2Device, path string, cs []Control, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	v := &V4L2{dev: dev, path: path, log: log}
	err := v.setControls(cs)
	if cerr := dev.close(); err == nil && cerr != nil {
		err = deviceErr(path, "close", cerr)
	}
	return err
}
