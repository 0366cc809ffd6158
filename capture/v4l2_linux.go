//go:build linux

package capture

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"unsafe"

	"github.com/blackjack/webcam"
	"golang.org/x/sys/unix"
)

// Kernel structures (include/uapi/linux/videodev2.h) this file reads with
// its own ioctls; blackjack/webcam does the streaming.

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
	Union       [6]uint32
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

// ioctl request codes, _IOC(dir, 'V', nr, size) in the generic layout that
// arm, arm64, 386 and amd64 share.
const (
	iocWrite = 1
	iocRead  = 2

	vidiocQuerycap       = iocRead<<30 | unsafe.Sizeof(v4l2Capability{})<<16 | 'V'<<8 // nr 0
	vidiocEnumFmt        = (iocRead|iocWrite)<<30 | unsafe.Sizeof(v4l2FmtDesc{})<<16 | 'V'<<8 | 2
	vidiocGFmt           = (iocRead|iocWrite)<<30 | unsafe.Sizeof(v4l2Format{})<<16 | 'V'<<8 | 4
	vidiocEnumFramesizes = (iocRead|iocWrite)<<30 | unsafe.Sizeof(v4l2FrmSizeEnum{})<<16 | 'V'<<8 | 74

	bufTypeVideoCapture = 1
)

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return e
	}
}

func queryCap(fd int) (v4l2Capability, error) {
	var c v4l2Capability
	err := ioctl(fd, vidiocQuerycap, unsafe.Pointer(&c))
	return c, err
}

// getFormat reads back the capture format the driver set (VIDIOC_G_FMT).
func getFormat(fd int) (pixFormat, error) {
	f := v4l2Format{Type: bufTypeVideoCapture}
	if err := ioctl(fd, vidiocGFmt, unsafe.Pointer(&f)); err != nil {
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

// isTimeout reports whether err is webcam's poll timeout. webcam returns it
// unwrapped; a type assertion, unlike errors.As, does not allocate.
func isTimeout(err error) bool {
	_, ok := err.(*webcam.Timeout)
	return ok
}

// absent reports whether err means the device node or its hardware is gone.
func absent(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO)
}

// deviceErr wraps an error of operation op on path, marking an absent
// device with ErrNoDevice.
func deviceErr(path, op string, err error) error {
	if absent(err) {
		return fmt.Errorf("%w: %s: %s: %w", ErrNoDevice, path, op, err)
	}
	return fmt.Errorf("capture: %s: %s: %w", path, op, err)
}

// camera is the part of *webcam.Webcam a streaming V4L2 source uses; tests
// script it.
type camera interface {
	WaitForFrame(timeoutSeconds uint32) error
	GetFrame() ([]byte, uint32, error)
	ReleaseFrame(index uint32) error
	StopStreaming() error
	Close() error
}

// V4L2 is a [Source] reading a V4L2 camera through blackjack/webcam (MMAP
// streaming). It captures YUYV, or GREY when the camera has no YUYV, at the
// size the driver actually set (read back with VIDIOC_G_FMT on a second file
// descriptor, since webcam does not expose its own; the format is device
// state, so both agree for capture devices).
//
// Each frame is dequeued (GetFrame), copied into the caller's Frame and
// requeued (ReleaseFrame) at once; Next allocates nothing once the frame has
// grown. Empty and short buffers are skipped and counted ([V4L2.Stats]).
//
// Limits of blackjack/webcam v0.6.1 this type lives with: GetFrame exposes
// neither the driver timestamp, the driver sequence nor V4L2_BUF_FLAG_ERROR,
// so Frame.Time is clk.Now() when the frame is dequeued, Frame.Sequence
// counts delivered frames from 0 (driver drops do not show as gaps), and a
// buffer flagged as corrupt is only caught when it is short.
//
// Next and Close may be called from different goroutines: Close waits for a
// running Next (at most about a second), because stopping the stream unmaps
// the buffers Next reads.
type V4L2 struct {
	mu    sync.Mutex
	cam   camera // nil once closed
	path  string
	clk   Clock
	geo   geometry
	stall uint64 // one-second waits without a usable frame before ErrStalled
	seq   uint64
	count v4l2Counters
}

// OpenV4L2 opens the camera, sets its format and starts streaming. A missing
// device, or a node that is not a video capture node, is [ErrNoDevice]. A nil
// clk means the system clock.
func OpenV4L2(cfg V4L2Config, clk Clock) (*V4L2, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	path := cfg.Device
	ctl, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, deviceErr(path, "open", err)
	}
	// ctl only queries; an error closing it changes nothing.
	defer unix.Close(ctl)
	c, err := queryCap(ctl)
	if errors.Is(err, unix.ENOTTY) {
		return nil, fmt.Errorf("%w: %s: not a V4L2 device", ErrNoDevice, path)
	}
	if err != nil {
		return nil, deviceErr(path, "query capabilities", err)
	}
	caps := nodeCaps(c.Capabilities, c.DeviceCaps)
	card := cString(c.Card[:])
	if caps&capVideoCapture == 0 {
		return nil, fmt.Errorf("%w: %s (%s): not a video capture node", ErrNoDevice, path, card)
	}
	if caps&capStreaming == 0 {
		return nil, fmt.Errorf("capture: %s (%s): no streaming I/O", path, card)
	}

	cam, err := webcam.Open(path)
	if err != nil {
		return nil, deviceErr(path, "open", err)
	}
	ok := false
	defer func() {
		if !ok {
			// Already failing; the close error adds nothing.
			_ = cam.Close()
		}
	}()
	supported := cam.GetSupportedFormats()
	offered := make([]PixelFormat, 0, len(supported))
	for p := range supported {
		offered = append(offered, PixelFormat(p))
	}
	format, err := chooseFormat(offered)
	if err != nil {
		return nil, fmt.Errorf("capture: %s (%s): %w", path, card, err)
	}
	if _, _, _, err := cam.SetImageFormat(webcam.PixelFormat(format), uint32(cfg.Width), uint32(cfg.Height)); err != nil {
		return nil, deviceErr(path, fmt.Sprintf("set format %v %dx%d", format, cfg.Width, cfg.Height), err)
	}
	pix, err := getFormat(ctl)
	if err != nil {
		return nil, deviceErr(path, "read back format", err)
	}
	geo, err := geometryOf(pix, format)
	if err != nil {
		return nil, fmt.Errorf("capture: %s (%s): %w", path, card, err)
	}
	if cfg.FPS > 0 {
		if err := cam.SetFramerate(float32(cfg.FPS)); err != nil {
			cfg.Logger.Warn("capture: frame rate not set; using the driver's", "device", path, "fps", cfg.FPS, "err", err)
		}
	}
	if err := cam.SetBufferCount(uint32(cfg.Buffers)); err != nil {
		return nil, deviceErr(path, "set buffer count", err)
	}
	if err := cam.StartStreaming(); err != nil {
		// blackjack/webcam#70: the device may stay busy until this process exits.
		return nil, deviceErr(path, "start streaming", err)
	}
	ok = true
	return &V4L2{
		cam:   cam,
		path:  path,
		clk:   orSystemClock(clk),
		geo:   geo,
		stall: uint64(max(1, int64(cfg.Stall.Seconds()+0.5))),
	}, nil
}

// Geometry is the format the driver set: pixel format, size and bytes per line.
func (v *V4L2) Geometry() (format PixelFormat, width, height, stride int) {
	return v.geo.format, v.geo.width, v.geo.height, v.geo.stride
}

// Stats returns the counters. It is safe to call while Next runs.
func (v *V4L2) Stats() V4L2Stats { return v.count.snapshot() }

// Next waits for the next usable frame and copies it into f. It returns
// [ErrStalled] when no usable frame came for the configured stall time, an
// error wrapping [ErrNoDevice] when the camera went away, and [ErrClosed]
// after Close.
func (v *V4L2) Next(ctx context.Context, f *Frame) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	var timeouts, bad uint64
	for {
		if v.cam == nil {
			return ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		err := v.cam.WaitForFrame(1) // seconds
		switch {
		case isTimeout(err):
			v.count.timeouts.Add(1)
			if timeouts++; timeouts >= v.stall {
				return fmt.Errorf("capture: %s: no frame for %d s: %w", v.path, timeouts, ErrStalled)
			}
			continue
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return deviceErr(v.path, "wait for frame", err)
		}
		buf, idx, err := v.cam.GetFrame()
		if errors.Is(err, unix.EAGAIN) {
			v.count.again.Add(1)
			if bad++; bad >= v4l2MaxBadBuffers {
				return fmt.Errorf("capture: %s: %d wakeups in a row without a frame: %w", v.path, bad, ErrStalled)
			}
			continue
		}
		if err != nil {
			return deviceErr(v.path, "dequeue buffer", err)
		}
		ferr := fillFromBuffer(f, buf, v.geo)
		if err := v.cam.ReleaseFrame(idx); err != nil {
			return deviceErr(v.path, "requeue buffer", err)
		}
		if ferr != nil {
			if errors.Is(ferr, errEmptyBuffer) {
				v.count.empty.Add(1)
			} else {
				v.count.short.Add(1)
			}
			if bad++; bad >= v4l2MaxBadBuffers {
				return fmt.Errorf("capture: %s: %d unusable buffers in a row (last: %w)", v.path, bad, ferr)
			}
			continue
		}
		f.Time = v.clk.Now()
		f.Sequence = v.seq
		v.seq++
		v.count.frames.Add(1)
		return nil
	}
}

// Close stops streaming and closes the device. It waits for a running Next.
// Closing twice is not an error.
func (v *V4L2) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cam == nil {
		return nil
	}
	cam := v.cam
	v.cam = nil
	serr := cam.StopStreaming()
	cerr := cam.Close()
	if err := errors.Join(serr, cerr); err != nil {
		return fmt.Errorf("capture: close %s: %w", v.path, err)
	}
	return nil
}

// Probe lists the V4L2 video capture nodes (videoN) under devDir, with their
// formats and frame sizes. Each node is opened read-only and queried; nodes
// that are not video capture nodes (metadata nodes, codecs) are left out. A
// node that cannot be opened or queried is listed with Err set. No node is an
// empty list and a nil error.
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
		if info, ok := probeNode(filepath.Join(devDir, name)); ok {
			devs = append(devs, info)
		}
	}
	return devs, nil
}

// probeNode describes one node; ok is false for a V4L2 node that is not a
// video capture node.
func probeNode(path string) (info DeviceInfo, ok bool) {
	info = DeviceInfo{Path: path, Name: filepath.Base(path)}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		info.Err = deviceErr(path, "open", err)
		return info, true
	}
	// Read-only queries; an error closing the node changes nothing.
	defer unix.Close(fd)
	c, err := queryCap(fd)
	if err != nil {
		if errors.Is(err, unix.ENOTTY) {
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
	info.Formats, info.Err = enumFormats(fd, path)
	if info.Err == nil && caps&capStreaming == 0 {
		info.Err = fmt.Errorf("capture: %s: no streaming I/O, which capture needs", path)
	}
	return info, true
}

// enumFormats lists a capture node's pixel formats and their frame sizes.
func enumFormats(fd int, path string) ([]FormatInfo, error) {
	var out []FormatInfo
	for i := range uint32(64) {
		d := v4l2FmtDesc{Index: i, Type: bufTypeVideoCapture}
		err := ioctl(fd, vidiocEnumFmt, unsafe.Pointer(&d))
		if errors.Is(err, unix.EINVAL) {
			break
		}
		if err != nil {
			return out, deviceErr(path, "list formats", err)
		}
		p := PixelFormat(d.PixelFormat)
		sizes, err := enumSizes(fd, p)
		if err != nil {
			return out, deviceErr(path, "list sizes of "+p.String(), err)
		}
		out = append(out, FormatInfo{Format: p, Description: cString(d.Description[:]), Sizes: sizes, Supported: v4l2Supported(p)})
	}
	return out, nil
}

func enumSizes(fd int, p PixelFormat) ([]string, error) {
	var sizes []string
	for i := range uint32(256) {
		e := v4l2FrmSizeEnum{Index: i, PixelFormat: uint32(p)}
		err := ioctl(fd, vidiocEnumFramesizes, unsafe.Pointer(&e))
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
			break
		}
		if err != nil {
			return sizes, err
		}
		sizes = append(sizes, sizeString(e.Type, e.Union))
		if e.Type != frmsizeDiscrete {
			break // continuous and stepwise have one entry
		}
	}
	return sizes, nil
}
