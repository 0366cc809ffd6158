//go:build linux

package capture

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestKernelABI pins the structure sizes, field offsets and request codes
// to linux/videodev2.h, for 64-bit targets (amd64, arm64) and 32-bit ones
// (arm with Debian armhf's 32-bit timeval, 386), so a layout mistake shows
// here and not as EINVAL on a board. The 64-bit values were checked against
// the C header with gcc; run the 32-bit ones with GOARCH=arm under
// qemu-arm (see the package report).
func TestKernelABI(t *testing.T) {
	ptr := unsafe.Sizeof(uintptr(0))
	pick := func(v64, v32 uintptr) uintptr {
		if ptr == 8 {
			return v64
		}
		return v32
	}
	var b v4l2Buffer
	var x v4l2ExtControls
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof v4l2_capability", unsafe.Sizeof(v4l2Capability{}), 104},
		{"sizeof v4l2_fmtdesc", unsafe.Sizeof(v4l2FmtDesc{}), 64},
		{"sizeof v4l2_frmsizeenum", unsafe.Sizeof(v4l2FrmSizeEnum{}), 44},
		{"sizeof v4l2_frmivalenum", unsafe.Sizeof(v4l2FrmIvalEnum{}), 52},
		{"sizeof v4l2_format", unsafe.Sizeof(v4l2Format{}), pick(208, 204)},
		{"offsetof v4l2_format.fmt", unsafe.Offsetof(v4l2Format{}.Fmt), ptr},
		{"sizeof v4l2_requestbuffers", unsafe.Sizeof(v4l2RequestBuffers{}), 20},
		{"sizeof v4l2_timecode", unsafe.Sizeof(v4l2Timecode{}), 16},
		{"sizeof v4l2_buffer", unsafe.Sizeof(b), pick(88, 68)},
		{"offsetof v4l2_buffer.timestamp", unsafe.Offsetof(b.Timestamp), pick(24, 20)},
		{"offsetof v4l2_buffer.sequence", unsafe.Offsetof(b.Sequence), pick(56, 44)},
		{"offsetof v4l2_buffer.m", unsafe.Offsetof(b.M), pick(64, 52)},
		{"offsetof v4l2_buffer.length", unsafe.Offsetof(b.Length), pick(72, 56)},
		{"sizeof v4l2_streamparm", unsafe.Sizeof(v4l2StreamParm{}), 204},
		{"sizeof v4l2_queryctrl", unsafe.Sizeof(v4l2QueryCtrl{}), 68},
		{"sizeof v4l2_querymenu", unsafe.Sizeof(v4l2QueryMenu{}), 44},
		{"sizeof v4l2_control", unsafe.Sizeof(v4l2Control{}), 8},
		{"sizeof v4l2_ext_control", unsafe.Sizeof(v4l2ExtControl{}), 20},
		{"sizeof v4l2_ext_controls", unsafe.Sizeof(x), pick(32, 24)},
		{"offsetof v4l2_ext_controls.controls", unsafe.Offsetof(x.Controls), pick(24, 20)},
		{"VIDIOC_QUERYCAP", vidiocQuerycap, 0x80685600},
		{"VIDIOC_ENUM_FMT", vidiocEnumFmt, 0xc0405602},
		{"VIDIOC_G_FMT", vidiocGFmt, pick(0xc0d05604, 0xc0cc5604)},
		{"VIDIOC_S_FMT", vidiocSFmt, pick(0xc0d05605, 0xc0cc5605)},
		{"VIDIOC_REQBUFS", vidiocReqbufs, 0xc0145608},
		{"VIDIOC_QUERYBUF", vidiocQuerybuf, pick(0xc0585609, 0xc0445609)},
		{"VIDIOC_QBUF", vidiocQbuf, pick(0xc058560f, 0xc044560f)},
		{"VIDIOC_DQBUF", vidiocDqbuf, pick(0xc0585611, 0xc0445611)},
		{"VIDIOC_STREAMON", vidiocStreamon, 0x40045612},
		{"VIDIOC_STREAMOFF", vidiocStreamoff, 0x40045613},
		{"VIDIOC_G_PARM", vidiocGParm, 0xc0cc5615},
		{"VIDIOC_S_PARM", vidiocSParm, 0xc0cc5616},
		{"VIDIOC_G_CTRL", vidiocGCtrl, 0xc008561b},
		{"VIDIOC_S_CTRL", vidiocSCtrl, 0xc008561c},
		{"VIDIOC_QUERYCTRL", vidiocQueryctrl, 0xc0445624},
		{"VIDIOC_QUERYMENU", vidiocQuerymenu, 0xc02c5625},
		{"VIDIOC_G_EXT_CTRLS", vidiocGExtCtrls, pick(0xc0205647, 0xc0185647)},
		{"VIDIOC_S_EXT_CTRLS", vidiocSExtCtrls, pick(0xc0205648, 0xc0185648)},
		{"VIDIOC_ENUM_FRAMESIZES", vidiocEnumFramesizes, 0xc02c564a},
		{"VIDIOC_ENUM_FRAMEINTERVALS", vidiocEnumFrameintervals, 0xc034564b},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
	// m.offset is the first 4 bytes of the union, whatever the endianness.
	b.M = 0
	*(*uint32)(unsafe.Pointer(&b.M)) = 0x12345000
	if b.offset() != 0x12345000 {
		t.Errorf("offset() = %#x", b.offset())
	}
}

// TestMonotonicClock checks the real CLOCK_MONOTONIC reader: it advances and
// allocates nothing.
func TestMonotonicClock(t *testing.T) {
	m := &monoClock{}
	a := m.now()
	b := m.now()
	if a <= 0 || b < a {
		t.Errorf("CLOCK_MONOTONIC went %v then %v", a, b)
	}
	if n := testing.AllocsPerRun(100, func() { m.now() }); n != 0 {
		t.Errorf("monoClock.now: %v allocations", n)
	}
}

// TestFDDeviceDoesNotAllocate runs the real system calls of the frame loop
// (ppoll, ioctl) on a pipe: a frame's worth of them allocates nothing, errors
// included.
func TestFDDeviceDoesNotAllocate(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	d := &fdDevice{fd: p[0]}
	defer d.close()
	revents, err := d.poll(time.Millisecond)
	if err != nil || revents != 0 {
		t.Fatalf("empty pipe: poll = %#x, %v; want a timeout", revents, err)
	}
	if _, err := unix.Write(p[1], []byte{1}); err != nil {
		t.Fatal(err)
	}
	var b v4l2Buffer
	if revents, err := d.poll(time.Second); err != nil || revents&unix.POLLIN == 0 {
		t.Fatalf("poll = %#x, %v; want POLLIN", revents, err)
	}
	if err := d.ioctl(vidiocDqbuf, unsafe.Pointer(&b)); !notV4L2(err) {
		t.Fatalf("DQBUF on a pipe = %v, want ENOTTY (ENOSYS under qemu-user)", err)
	}
	if n := testing.AllocsPerRun(100, func() {
		d.poll(time.Second)
		d.ioctl(vidiocDqbuf, unsafe.Pointer(&b))
		d.ioctl(vidiocQbuf, unsafe.Pointer(&b))
	}); n != 0 {
		t.Errorf("poll + DQBUF + QBUF: %v allocations", n)
	}
}

func TestProbeEmptyDir(t *testing.T) {
	devs, err := Probe(t.TempDir())
	if err != nil || devs == nil || len(devs) != 0 {
		t.Errorf("Probe(empty) = %v, %v; want an empty list and no error", devs, err)
	}
}

func TestProbeNonV4L2Node(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"video0", "media0", "null"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	devs, err := Probe(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 1 || devs[0].Path != filepath.Join(dir, "video0") || devs[0].Name != "video0" ||
		devs[0].Err == nil || !strings.Contains(devs[0].Err.Error(), "not a V4L2 device") {
		t.Errorf("Probe = %+v, want video0 listed as not a V4L2 device", devs)
	}
	if _, err := Probe(filepath.Join(dir, "missing")); err == nil {
		t.Error("Probe of a missing directory gave no error")
	}
}

func TestOpenV4L2Absent(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "video0")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, dev := range []string{filepath.Join(dir, "video9"), plain, "/dev/null"} {
		v, err := OpenV4L2(V4L2Config{Device: dev}, nil)
		if !errors.Is(err, ErrNoDevice) || !strings.Contains(err.Error(), dev) || v != nil {
			t.Errorf("OpenV4L2(%s) = %v, %v; want ErrNoDevice naming the path", dev, v, err)
		}
	}
	if _, err := OpenV4L2(V4L2Config{Device: plain, Buffers: 8}, nil); err == nil || !strings.Contains(err.Error(), "buffers") {
		t.Errorf("8 buffers: %v", err)
	}
}

// TestV4L2Camera captures from a real camera when this machine has one (a
// board, or a VM with the vivid driver); elsewhere it skips.
func TestV4L2Camera(t *testing.T) {
	dev := os.Getenv("KEYFRAME_TEST_VIDEO")
	if dev == "" {
		dev = "/dev/video0"
	}
	if _, err := os.Stat(dev); err != nil {
		t.Skipf("no camera at %s (set KEYFRAME_TEST_VIDEO to use another node): %v", dev, err)
	}
	v, err := OpenV4L2(V4L2Config{Device: dev, Width: 320, Height: 240, Buffers: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := v.Close(); err != nil {
			t.Error(err)
		}
	}()
	g := v.Geometry()
	var f Frame
	var last uint64
	for i := range 3 {
		before := time.Now()
		if err := v.Next(t.Context(), &f); err != nil {
			t.Fatal(err)
		}
		if f.Format != g.Format || f.Width != g.Width || f.Height != g.Height || f.Stride != g.Stride || len(f.Luma) != g.Width*g.Height {
			t.Fatalf("frame %d: %v %dx%d stride %d, driver set %+v", i, f.Format, f.Width, f.Height, f.Stride, g)
		}
		if i > 0 && f.Sequence <= last {
			t.Errorf("frame %d: sequence %d after %d", i, f.Sequence, last)
		}
		if f.Time.After(time.Now()) || f.Time.Before(before.Add(-g.Interval.duration()-time.Second)) {
			t.Errorf("frame %d: time %v, dequeued after %v", i, f.Time, before)
		}
		last = f.Sequence
	}
	if st := v.Stats(); st.Frames != 3 {
		t.Errorf("stats %+v", st)
	}
}

func (i Interval) duration() time.Duration {
	if i.Den == 0 {
		return 0
	}
	return time.Duration(uint64(i.Num) * uint64(time.Second) / uint64(i.Den))
}

// ---- the fake device ----

type fakeSize struct {
	w, h  int
	rates []Interval
}

type fakeFormat struct {
	format   PixelFormat
	desc     string
	sizes    []fakeSize
	stepwise *[6]uint32 // min_w, max_w, step_w, min_h, max_h, step_h
}

type fakeCtrl struct {
	id          uint32
	typ         ControlType
	name        string
	min, max    int32
	step, def   int32
	flags       uint32
	value       int64
	menu        map[uint32]string
	failWithErr error
}

// fakeEvent is one step of a streaming script: what poll and DQBUF see.
type fakeEvent struct {
	timeout   bool          // poll times out (the monotonic clock moves by the timeout)
	pollErr   error         // poll fails
	revents   int16         // poll's revents; 0 means POLLIN
	dqErr     error         // DQBUF fails with this (EAGAIN: a spurious wakeup)
	flags     uint32        // buffer flags; 0 means TIMESTAMP_MONOTONIC
	bytesused int           // -1: the whole frame (sizeimage)
	seq       uint32        // driver sequence
	age       time.Duration // how old the frame's timestamp is
	data      []byte        // written to the buffer; nil: the default frame
	qErr      error         // QBUF of this buffer fails
}

type fakeDev struct {
	t       *testing.T
	caps    uint32
	formats []fakeFormat
	padding int // bytes of padding per line the driver adds
	cur     pixFormat
	noParm  bool // G_PARM fails
	parmCap uint32
	ival    Interval
	ctrls   []*fakeCtrl
	give    int // buffers REQBUFS hands out; 0: what was asked

	mem       [][]byte
	mapped    []bool
	queued    [32]int // FIFO ring of queued buffer indices
	qHead     int
	qLen      int
	isQueued  []bool
	lastEv    []fakeEvent // the event each buffer was last dequeued with
	streaming bool
	closed    bool

	script  []fakeEvent
	steady  *fakeEvent // once the script is done: every poll gets a frame like this
	nextSeq uint32
	frame   []byte // the default frame data
	mono    time.Duration

	dequeues, queues int
	violations       []string
	calls            []string // ioctls outside the frame loop, and mmap/munmap/close
}

func newFakeDev(t *testing.T) *fakeDev {
	return &fakeDev{
		t:       t,
		caps:    capVideoCapture | capStreaming,
		parmCap: capTimePerFrame,
		ival:    Interval{1, 30},
		mono:    100 * time.Second,
		formats: []fakeFormat{{format: FormatYUYV, desc: "YUYV 4:2:2", sizes: []fakeSize{{4, 2, []Interval{{1, 30}, {1, 15}}}}}},
	}
}

func (d *fakeDev) violate(format string, args ...any) {
	d.violations = append(d.violations, fmt.Sprintf(format, args...))
}

func (d *fakeDev) format(p PixelFormat) *fakeFormat {
	for i := range d.formats {
		if d.formats[i].format == p {
			return &d.formats[i]
		}
	}
	return nil
}

func (d *fakeDev) ctrl(id uint32) *fakeCtrl {
	for _, c := range d.ctrls {
		if c.id == id {
			return c
		}
	}
	return nil
}

func (d *fakeDev) head() *fakeEvent {
	if len(d.script) > 0 {
		return &d.script[0]
	}
	return d.steady
}

func (d *fakeDev) consume() {
	if len(d.script) > 0 {
		d.script = d.script[1:]
	}
}

func (d *fakeDev) poll(timeout time.Duration) (int16, error) {
	if d.closed {
		return 0, unix.EBADF
	}
	if timeout <= 0 || timeout > v4l2PollSlice {
		d.violate("poll timeout %v", timeout)
	}
	ev := d.head()
	switch {
	case ev == nil || ev.timeout:
		d.mono += timeout
		d.consume()
		return 0, nil
	case ev.pollErr != nil:
		d.consume()
		return 0, ev.pollErr
	case ev.revents != 0:
		return ev.revents, nil
	}
	return unix.POLLIN, nil
}

func (d *fakeDev) mmap(offset int64, length int) ([]byte, error) {
	d.calls = append(d.calls, "mmap")
	i := int(offset / 4096)
	if offset%4096 != 0 || i >= len(d.mem) || length != len(d.mem[i]) || d.mapped[i] {
		d.violate("mmap(%d, %d)", offset, length)
		return nil, unix.EINVAL
	}
	d.mapped[i] = true
	return d.mem[i], nil
}

func (d *fakeDev) munmap(b []byte) error {
	d.calls = append(d.calls, "munmap")
	for i, m := range d.mem {
		if len(m) > 0 && len(b) > 0 && &m[0] == &b[0] && d.mapped[i] {
			d.mapped[i] = false
			return nil
		}
	}
	d.violate("munmap of an unmapped slice")
	return unix.EINVAL
}

func (d *fakeDev) close() error {
	d.calls = append(d.calls, "close")
	if d.closed {
		d.violate("closed twice")
	}
	d.closed = true
	return nil
}

func (d *fakeDev) setFmt(w, h int, p PixelFormat) {
	f := d.format(p)
	if f == nil {
		f = &d.formats[0]
	}
	if f.stepwise == nil && !slices.ContainsFunc(f.sizes, func(s fakeSize) bool { return s.w == w && s.h == h }) {
		w, h = f.sizes[0].w, f.sizes[0].h
	}
	stride := 0
	switch f.format {
	case FormatYUYV:
		stride = 2*w + d.padding
	case FormatRGB24:
		stride = 3*w + d.padding
	case FormatGrey, FormatNV12, FormatYU12:
		stride = w + d.padding
	}
	size := stride * h
	switch f.format {
	case FormatNV12, FormatYU12:
		size = stride * h * 3 / 2
	case FormatMJPEG:
		size = 4096
	}
	d.cur = pixFormat{Width: uint32(w), Height: uint32(h), PixelFormat: uint32(f.format), Field: fieldNone, BytesPerLine: uint32(stride), SizeImage: uint32(size)}
}

func (d *fakeDev) ioctl(req uintptr, arg unsafe.Pointer) error {
	if d.closed {
		return unix.EBADF
	}
	ne := binary.NativeEndian
	if req != vidiocDqbuf && req != vidiocQbuf {
		d.calls = append(d.calls, ioctlName(req))
	}
	switch req {
	case vidiocQuerycap:
		c := (*v4l2Capability)(arg)
		copy(c.Driver[:], "fake")
		copy(c.Card[:], "Fake Camera")
		copy(c.BusInfo[:], "platform:fake")
		c.Capabilities = d.caps | capDeviceCaps
		c.DeviceCaps = d.caps
	case vidiocEnumFmt:
		e := (*v4l2FmtDesc)(arg)
		if int(e.Index) >= len(d.formats) {
			return unix.EINVAL
		}
		f := d.formats[e.Index]
		e.PixelFormat = uint32(f.format)
		copy(e.Description[:], f.desc)
		if f.format == FormatMJPEG {
			e.Flags = fmtFlagCompressed
		}
	case vidiocEnumFramesizes:
		e := (*v4l2FrmSizeEnum)(arg)
		f := d.format(PixelFormat(e.PixelFormat))
		switch {
		case f == nil:
			return unix.EINVAL
		case f.stepwise != nil:
			if e.Index > 0 {
				return unix.EINVAL
			}
			e.Type, e.Union = frmsizeStepwise, *f.stepwise
		case len(f.sizes) == 0:
			return unix.ENOTTY
		case int(e.Index) >= len(f.sizes):
			return unix.EINVAL
		default:
			e.Type = frmsizeDiscrete
			e.Union[0], e.Union[1] = uint32(f.sizes[e.Index].w), uint32(f.sizes[e.Index].h)
		}
	case vidiocEnumFrameintervals:
		e := (*v4l2FrmIvalEnum)(arg)
		f := d.format(PixelFormat(e.PixelFormat))
		if f == nil {
			return unix.EINVAL
		}
		i := slices.IndexFunc(f.sizes, func(s fakeSize) bool { return s.w == int(e.Width) && s.h == int(e.Height) })
		if i < 0 || int(e.Index) >= len(f.sizes[i].rates) {
			return unix.EINVAL
		}
		r := f.sizes[i].rates[e.Index]
		e.Type, e.Union[0], e.Union[1] = frmivalDiscrete, r.Num, r.Den
	case vidiocSFmt:
		if d.streaming {
			return unix.EBUSY
		}
		f := (*v4l2Format)(arg)
		raw := f.Fmt.Raw[:]
		d.setFmt(int(ne.Uint32(raw[0:])), int(ne.Uint32(raw[4:])), PixelFormat(ne.Uint32(raw[8:])))
		fallthrough
	case vidiocGFmt:
		f := (*v4l2Format)(arg)
		raw := f.Fmt.Raw[:]
		c := d.cur
		for i, v := range []uint32{c.Width, c.Height, c.PixelFormat, c.Field, c.BytesPerLine, c.SizeImage} {
			ne.PutUint32(raw[4*i:], v)
		}
	case vidiocGParm, vidiocSParm:
		if d.noParm {
			return unix.ENOTTY
		}
		p := (*v4l2StreamParm)(arg)
		if req == vidiocSParm {
			if d.parmCap&capTimePerFrame == 0 {
				d.violate("S_PARM without V4L2_CAP_TIMEPERFRAME")
			}
			want := Interval{ne.Uint32(p.Parm[8:]), ne.Uint32(p.Parm[12:])}.FPS()
			f := d.format(PixelFormat(d.cur.PixelFormat))
			// The offered rate nearest to the one asked.
			best := Interval{}
			for _, s := range f.sizes {
				if s.w != int(d.cur.Width) || s.h != int(d.cur.Height) {
					continue
				}
				for _, r := range s.rates {
					if best.Den == 0 || fabs(r.FPS()-want) < fabs(best.FPS()-want) {
						best = r
					}
				}
			}
			if best.Den != 0 {
				d.ival = best
			}
		}
		clear(p.Parm[:])
		ne.PutUint32(p.Parm[0:], d.parmCap)
		ne.PutUint32(p.Parm[8:], d.ival.Num)
		ne.PutUint32(p.Parm[12:], d.ival.Den)
	case vidiocQueryctrl:
		q := (*v4l2QueryCtrl)(arg)
		var c *fakeCtrl
		if q.ID&ctrlFlagNextCtrl != 0 {
			after := q.ID &^ ctrlFlagNextCtrl
			for _, x := range d.ctrls {
				if x.id > after && (c == nil || x.id < c.id) {
					c = x
				}
			}
		} else {
			c = d.ctrl(q.ID)
		}
		if c == nil {
			return unix.EINVAL
		}
		*q = v4l2QueryCtrl{ID: c.id, Type: uint32(c.typ), Minimum: c.min, Maximum: c.max, Step: c.step, DefaultValue: c.def, Flags: c.flags}
		copy(q.Name[:], c.name)
	case vidiocQuerymenu:
		m := (*v4l2QueryMenu)(arg)
		c := d.ctrl(m.ID)
		if c == nil {
			return unix.EINVAL
		}
		name, ok := c.menu[m.Index]
		if !ok {
			return unix.EINVAL
		}
		copy(m.Name[:], name)
	case vidiocGCtrl, vidiocSCtrl:
		x := (*v4l2Control)(arg)
		c := d.ctrl(x.ID)
		if c == nil || c.typ == ControlInteger64 {
			return unix.EINVAL
		}
		if req == vidiocSCtrl {
			if err := d.setCtrl(c, int64(x.Value)); err != nil {
				return err
			}
		}
		x.Value = int32(c.value)
	case vidiocGExtCtrls, vidiocSExtCtrls:
		x := (*v4l2ExtControls)(arg)
		ec := (*v4l2ExtControl)(x.Controls)
		id := ne.Uint32(ec[0:])
		c := d.ctrl(id)
		if x.Count != 1 || c == nil || x.Which != id&ctrlClassMask {
			return unix.EINVAL
		}
		if req == vidiocSExtCtrls {
			if err := d.setCtrl(c, int64(ne.Uint64(ec[12:]))); err != nil {
				return err
			}
		}
		ne.PutUint64(ec[12:], uint64(c.value))
	case vidiocReqbufs:
		rb := (*v4l2RequestBuffers)(arg)
		if rb.Type != bufTypeVideoCapture || rb.Memory != memoryMMAP {
			return unix.EINVAL
		}
		if d.streaming {
			return unix.EBUSY
		}
		if slices.Contains(d.mapped, true) {
			d.violate("REQBUFS while buffers are mapped")
			return unix.EBUSY
		}
		n := int(rb.Count)
		if n > 0 && d.give > 0 {
			n = d.give
		}
		rb.Count = uint32(n)
		d.mem = make([][]byte, n)
		for i := range d.mem {
			d.mem[i] = make([]byte, d.cur.SizeImage)
		}
		d.mapped, d.isQueued, d.lastEv = make([]bool, n), make([]bool, n), make([]fakeEvent, n)
		d.qLen = 0
	case vidiocQuerybuf:
		b := (*v4l2Buffer)(arg)
		if int(b.Index) >= len(d.mem) {
			return unix.EINVAL
		}
		b.Length = uint32(len(d.mem[b.Index]))
		*(*uint32)(unsafe.Pointer(&b.M)) = b.Index * 4096
	case vidiocQbuf:
		b := (*v4l2Buffer)(arg)
		i := int(b.Index)
		if i >= len(d.mem) || b.Type != bufTypeVideoCapture || b.Memory != memoryMMAP {
			d.violate("QBUF %+v", *b)
			return unix.EINVAL
		}
		if d.isQueued[i] {
			d.violate("buffer %d queued twice", i)
			return unix.EINVAL
		}
		if err := d.lastEv[i].qErr; err != nil {
			return err
		}
		d.isQueued[i] = true
		d.queued[(d.qHead+d.qLen)%len(d.queued)] = i
		d.qLen++
		d.queues++
	case vidiocDqbuf:
		b := (*v4l2Buffer)(arg)
		if !d.streaming {
			return unix.EINVAL
		}
		ev := d.head()
		if ev == nil || ev.timeout || ev.pollErr != nil {
			d.violate("DQBUF without poll saying a frame is ready")
			return unix.EAGAIN
		}
		e := *ev
		d.consume()
		if e.dqErr != nil {
			return e.dqErr
		}
		if d.qLen == 0 {
			return unix.EAGAIN
		}
		i := d.queued[d.qHead]
		d.qHead = (d.qHead + 1) % len(d.queued)
		d.qLen--
		d.isQueued[i] = false
		if ev == d.steady {
			e.seq = d.nextSeq
			d.nextSeq++
		}
		d.lastEv[i] = e
		data := e.data
		if data == nil {
			data = d.frame
		}
		copy(d.mem[i], data)
		used := e.bytesused
		if used < 0 {
			used = len(d.mem[i])
		}
		flags := e.flags
		if flags == 0 {
			flags = bufFlagTimestampMonotone
		}
		stamp := d.mono - e.age
		*b = v4l2Buffer{Index: uint32(i), Type: bufTypeVideoCapture, Memory: memoryMMAP, BytesUsed: uint32(used),
			Flags: flags, Field: fieldNone, Sequence: e.seq, Length: uint32(len(d.mem[i])),
			Timestamp: unix.NsecToTimeval(int64(stamp))}
		d.dequeues++
	case vidiocStreamon, vidiocStreamoff:
		if *(*int32)(arg) != bufTypeVideoCapture {
			return unix.EINVAL
		}
		d.streaming = req == vidiocStreamon
		if !d.streaming { // STREAMOFF returns every buffer to the application
			clear(d.isQueued)
			d.qLen = 0
		}
	default:
		return unix.ENOTTY
	}
	return nil
}

func (d *fakeDev) setCtrl(c *fakeCtrl, v int64) error {
	switch {
	case c.failWithErr != nil:
		return c.failWithErr
	case c.flags&ctrlFlagReadOnly != 0:
		return unix.EACCES
	case c.typ != ControlInteger64 && (v < int64(c.min) || v > int64(c.max)):
		return unix.ERANGE
	}
	c.value = v
	return nil
}

func fabs(x float64) float64 { return max(x, -x) }

// inOrder reports whether ops occur in calls in this order (others between).
func inOrder(calls []string, ops ...string) bool {
	i := 0
	for _, c := range calls {
		if i < len(ops) && c == ops[i] {
			i++
		}
	}
	return i == len(ops)
}

func ioctlName(req uintptr) string {
	names := map[uintptr]string{
		vidiocQuerycap: "QUERYCAP", vidiocEnumFmt: "ENUM_FMT", vidiocGFmt: "G_FMT", vidiocSFmt: "S_FMT",
		vidiocReqbufs: "REQBUFS", vidiocQuerybuf: "QUERYBUF", vidiocQbuf: "QBUF", vidiocDqbuf: "DQBUF",
		vidiocStreamon: "STREAMON", vidiocStreamoff: "STREAMOFF", vidiocGParm: "G_PARM", vidiocSParm: "S_PARM",
		vidiocGCtrl: "G_CTRL", vidiocSCtrl: "S_CTRL", vidiocQueryctrl: "QUERYCTRL", vidiocQuerymenu: "QUERYMENU",
		vidiocGExtCtrls: "G_EXT_CTRLS", vidiocSExtCtrls: "S_EXT_CTRLS", vidiocEnumFramesizes: "ENUM_FRAMESIZES",
		vidiocEnumFrameintervals: "ENUM_FRAMEINTERVALS",
	}
	if n, ok := names[req]; ok {
		return n
	}
	return fmt.Sprintf("ioctl %#x", req)
}

// checkBuffers fails the test on any protocol violation, and checks that
// every dequeued buffer went back to the driver exactly once (all queued
// again, or all returned by STREAMOFF).
func (d *fakeDev) checkBuffers(t *testing.T) {
	t.Helper()
	for _, v := range d.violations {
		t.Error(v)
	}
	if d.streaming && d.qLen != len(d.mem) {
		t.Errorf("%d of %d buffers queued after Next: a dequeued buffer was not requeued", d.qLen, len(d.mem))
	}
}

// yuyv4x2 is a 4x2 YUYV frame with luma 10..80.
var yuyv4x2 = []byte{10, 128, 20, 128, 30, 128, 40, 128, 50, 128, 60, 128, 70, 128, 80, 128}

func quietV4L2Config() V4L2Config {
	return V4L2Config{Device: "/dev/fake", Width: 4, Height: 2, Buffers: 3, Stall: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// openFake opens a V4L2 source on the fake device.
func openFake(t *testing.T, d *fakeDev, cfg V4L2Config) (*V4L2, error) {
	t.Helper()
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if d.frame == nil {
		d.frame = slices.Clone(yuyv4x2)
	}
	return openV4L2(d, cfg, fixedClock{epoch}, func() time.Duration { return d.mono })
}

func mustOpenFake(t *testing.T, d *fakeDev, cfg V4L2Config) *V4L2 {
	t.Helper()
	v, err := openFake(t, d, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestV4L2OpenSequence(t *testing.T) {
	d := newFakeDev(t)
	d.padding = 4
	cfg := quietV4L2Config()
	cfg.FPS = 15
	v := mustOpenFake(t, d, cfg)
	g := v.Geometry()
	want := V4L2Geometry{Format: FormatYUYV, Width: 4, Height: 2, Stride: 12, SizeImage: 24, Interval: Interval{1, 15}, FPS: 15, Buffers: 3,
		Card: "Fake Camera", Bus: "platform:fake"} // QUERYCAP's card and bus: what records name
	if g != want {
		t.Errorf("Geometry = %+v, want %+v", g, want)
	}
	if !d.streaming || d.qLen != 3 || slices.Contains(d.mapped, false) {
		t.Errorf("after open: streaming %v, %d queued, mapped %v", d.streaming, d.qLen, d.mapped)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if !inOrder(d.calls, "QUERYCAP", "ENUM_FMT", "ENUM_FRAMESIZES", "ENUM_FRAMEINTERVALS", "S_FMT", "G_FMT", "G_PARM", "S_PARM",
		"REQBUFS", "QUERYBUF", "mmap", "QUERYBUF", "mmap", "QUERYBUF", "mmap", "STREAMON") {
		t.Errorf("open calls %q", d.calls)
	}
	if calls := strings.Join(d.calls, " "); !strings.HasSuffix(calls, "STREAMON STREAMOFF munmap munmap munmap REQBUFS close") {
		t.Errorf("close calls %q: want STREAMOFF, then munmap, then REQBUFS 0, then close", calls)
	}
	d.checkBuffers(t)
	if err := v.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	var f Frame
	if err := v.Next(t.Context(), &f); !errors.Is(err, ErrClosed) {
		t.Errorf("Next after Close: %v, want ErrClosed", err)
	}
}

func TestV4L2NextFrameTimeAndSequence(t *testing.T) {
	d := newFakeDev(t)
	d.padding = 4 // 12 bytes per line for 8 bytes of pixels
	padded := []byte{10, 128, 20, 128, 30, 128, 40, 128, 0, 0, 0, 0, 50, 128, 60, 128, 70, 128, 80, 128, 0, 0, 0, 0}
	d.frame = padded
	d.script = []fakeEvent{
		{bytesused: -1, seq: 0, age: 30 * time.Millisecond},
		{bytesused: -1, seq: 1, age: 0},
		{bytesused: 20, seq: 4, age: 5 * time.Millisecond}, // 2 dropped; the last line without its padding is whole
		{bytesused: -1, seq: 5, age: -time.Second},         // a stamp in the future counts as now
		{bytesused: -1, seq: 6, flags: 0x4000 /* TIMESTAMP_COPY */, age: time.Hour},
	}
	v := mustOpenFake(t, d, quietV4L2Config())
	defer v.Close()
	var f Frame
	for i, want := range []struct {
		seq uint64
		age time.Duration
	}{{0, 30 * time.Millisecond}, {1, 0}, {4, 5 * time.Millisecond}, {5, 0}, {6, 0}} {
		if err := v.Next(t.Context(), &f); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if f.Sequence != want.seq || !f.Time.Equal(epoch.Add(-want.age)) {
			t.Errorf("frame %d: sequence %d time %v, want %d and %v", i, f.Sequence, f.Time, want.seq, epoch.Add(-want.age))
		}
		if f.Width != 4 || f.Height != 2 || f.Stride != 12 || f.Format != FormatYUYV ||
			!bytes.Equal(lumaOf(&f), []byte{10, 20, 30, 40, 50, 60, 70, 80}) {
			t.Fatalf("frame %d: %+v", i, f)
		}
	}
	if st := v.Stats(); st.Frames != 5 || st.Dropped != 2 {
		t.Errorf("stats %+v, want 5 frames and 2 dropped", st)
	}
	d.checkBuffers(t)
}

func TestV4L2NextSkipsAndCounts(t *testing.T) {
	d := newFakeDev(t)
	d.script = []fakeEvent{
		{timeout: true},
		{pollErr: unix.EINTR},
		{dqErr: unix.EAGAIN},
		{bytesused: 0, seq: 0},                                       // empty
		{bytesused: 10, seq: 1},                                      // short
		{bytesused: -1, seq: 2, flags: bufFlagError},                 // flagged corrupt
		{bytesused: -1, seq: 3},                                      // delivered
		{bytesused: -1, seq: 4, flags: bufFlagError},                 // flagged again
		{bytesused: 15, seq: 5},                                      // short by one
		{bytesused: -1, seq: 7, revents: unix.POLLERR | unix.POLLIN}, // one dropped; delivered
	}
	v := mustOpenFake(t, d, quietV4L2Config())
	defer v.Close()
	var f Frame
	if err := v.Next(t.Context(), &f); err != nil {
		t.Fatal(err)
	}
	if f.Sequence != 3 || !bytes.Equal(lumaOf(&f), []byte{10, 20, 30, 40, 50, 60, 70, 80}) {
		t.Fatalf("frame %+v", f)
	}
	if err := v.Next(t.Context(), &f); err != nil || f.Sequence != 7 {
		t.Fatalf("second Next: %v, seq %d", err, f.Sequence)
	}
	want := V4L2Stats{Frames: 2, Dropped: 1, Errors: 2, Empty: 1, Short: 2, Timeouts: 1, Again: 1}
	if st := v.Stats(); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	if d.dequeues != 7 || d.queues != 3+7 {
		t.Errorf("%d dequeues and %d queues, want 7 and 10: every dequeued buffer is requeued once", d.dequeues, d.queues)
	}
	d.checkBuffers(t)
}

func TestV4L2NextErrors(t *testing.T) {
	t.Run("stall", func(t *testing.T) {
		d := newFakeDev(t)
		v := mustOpenFake(t, d, quietV4L2Config())
		defer v.Close()
		var f Frame
		start := d.mono
		err := v.Next(t.Context(), &f)
		if !errors.Is(err, ErrStalled) || d.mono-start != 2*time.Second || v.Stats().Timeouts != 8 || v.Stats().Stalls != 1 {
			t.Errorf("Next = %v after %v and %d timeouts, want ErrStalled after 2s in 8 waits", err, d.mono-start, v.Stats().Timeouts)
		}
		// A stalled camera may come back: the next Next waits again.
		d.script = []fakeEvent{{bytesused: -1}}
		if err := v.Next(t.Context(), &f); err != nil {
			t.Errorf("Next after a stall: %v", err)
		}
		d.checkBuffers(t)
	})
	t.Run("only bad buffers", func(t *testing.T) {
		d := newFakeDev(t)
		d.steady = &fakeEvent{bytesused: -1, flags: bufFlagError, age: 0}
		v := mustOpenFake(t, d, quietV4L2Config())
		defer v.Close()
		// Each bad buffer comes 100 ms later.
		mono := func() time.Duration { d.mono += 100 * time.Millisecond; return d.mono }
		v.mono = mono
		var f Frame
		err := v.Next(t.Context(), &f)
		if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "flagged as errors") || v.Stats().Errors == 0 {
			t.Errorf("Next = %v (stats %+v), want ErrStalled naming the flagged buffers", err, v.Stats())
		}
		d.checkBuffers(t)
	})
	for _, errno := range []unix.Errno{unix.ENODEV, unix.ENXIO, unix.EIO} {
		t.Run("unplugged "+errno.Error(), func(t *testing.T) {
			d := newFakeDev(t)
			d.script = []fakeEvent{{bytesused: -1}, {revents: unix.POLLERR, dqErr: errno}}
			v := mustOpenFake(t, d, quietV4L2Config())
			var f Frame
			if err := v.Next(t.Context(), &f); err != nil {
				t.Fatal(err)
			}
			err := v.Next(t.Context(), &f)
			if !errors.Is(err, ErrNoDevice) || !errors.Is(err, errno) || !strings.Contains(err.Error(), "/dev/fake") {
				t.Errorf("Next = %v, want ErrNoDevice wrapping %v", err, errno)
			}
			if again := v.Next(t.Context(), &f); !errors.Is(again, ErrNoDevice) {
				t.Errorf("Next after the device went: %v", again)
			}
			if err := v.Close(); err != nil {
				t.Errorf("Close of an unplugged camera: %v", err)
			}
			d.checkBuffers(t)
		})
	}
	t.Run("poll error", func(t *testing.T) {
		d := newFakeDev(t)
		d.script = []fakeEvent{{pollErr: unix.EBADF}}
		v := mustOpenFake(t, d, quietV4L2Config())
		defer v.Close()
		var f Frame
		if err := v.Next(t.Context(), &f); !errors.Is(err, unix.EBADF) || errors.Is(err, ErrNoDevice) {
			t.Errorf("Next = %v, want EBADF", err)
		}
	})
	t.Run("POLLNVAL", func(t *testing.T) {
		d := newFakeDev(t)
		d.script = []fakeEvent{{revents: unix.POLLNVAL}}
		v := mustOpenFake(t, d, quietV4L2Config())
		defer v.Close()
		var f Frame
		if err := v.Next(t.Context(), &f); err == nil {
			t.Error("Next ignored POLLNVAL")
		}
	})
	t.Run("spurious wakeups", func(t *testing.T) {
		d := newFakeDev(t)
		d.steady = &fakeEvent{dqErr: unix.EAGAIN}
		v := mustOpenFake(t, d, quietV4L2Config())
		defer v.Close()
		var f Frame
		if err := v.Next(t.Context(), &f); !errors.Is(err, unix.EAGAIN) || v.Stats().Again != v4l2MaxAgain {
			t.Errorf("Next = %v after %d EAGAINs, want an error after %d", err, v.Stats().Again, v4l2MaxAgain)
		}
	})
	t.Run("requeue fails", func(t *testing.T) {
		d := newFakeDev(t)
		d.script = []fakeEvent{{bytesused: -1, qErr: unix.EINVAL}}
		v := mustOpenFake(t, d, quietV4L2Config())
		defer v.Close()
		var f Frame
		if err := v.Next(t.Context(), &f); !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "requeue") {
			t.Errorf("Next = %v, want the requeue error", err)
		}
		if err := v.Next(t.Context(), &f); err == nil || !strings.Contains(err.Error(), "requeue") {
			t.Errorf("Next after a lost buffer: %v, want the requeue error again", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		d := newFakeDev(t)
		d.steady = &fakeEvent{bytesused: -1}
		v := mustOpenFake(t, d, quietV4L2Config())
		defer v.Close()
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		var f Frame
		if err := v.Next(ctx, &f); !errors.Is(err, context.Canceled) {
			t.Errorf("Next = %v, want context.Canceled", err)
		}
	})
}

// TestV4L2CloseDuringNext closes the source from another goroutine while
// Next waits for a frame that never comes.
func TestV4L2CloseDuringNext(t *testing.T) {
	d := newFakeDev(t)
	cfg := quietV4L2Config()
	cfg.Stall = time.Hour
	v := mustOpenFake(t, d, cfg)
	var mu sync.Mutex // the fake is not safe for concurrent use: serialise its poll with Close
	d2 := &lockedDev{fakeDev: d, mu: &mu}
	v.dev = d2
	polled := make(chan struct{}, 1)
	d2.onPoll = func() {
		select {
		case polled <- struct{}{}:
		default:
		}
	}
	errc := make(chan error, 1)
	go func() {
		var f Frame
		errc <- v.Next(context.Background(), &f)
	}()
	<-polled
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("Next during Close = %v, want ErrClosed", err)
	}
	if !d.closed || slices.Contains(d.mapped, true) {
		t.Errorf("after Close: closed %v, mapped %v", d.closed, d.mapped)
	}
}

// lockedDev serialises a fakeDev for a test with two goroutines; its poll
// returns at once (a timeout) without moving the monotonic clock.
type lockedDev struct {
	*fakeDev
	mu     *sync.Mutex
	onPoll func()
}

func (d *lockedDev) poll(time.Duration) (int16, error) {
	d.onPoll()
	d.mu.Lock()
	defer d.mu.Unlock()
	return 0, nil
}

func (d *lockedDev) ioctl(req uintptr, arg unsafe.Pointer) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fakeDev.ioctl(req, arg)
}

func TestV4L2NextDoesNotAllocate(t *testing.T) {
	d := newFakeDev(t)
	d.steady = &fakeEvent{bytesused: -1, age: time.Millisecond}
	v := mustOpenFake(t, d, quietV4L2Config())
	defer v.Close()
	ctx := context.Background()
	var f Frame
	if err := v.Next(ctx, &f); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if err := v.Next(ctx, &f); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("V4L2.Next: %v allocations per frame, want 0", n)
	}
	if st := v.Stats(); st.Frames != 102 || st.Dropped != 0 || f.Sequence != 101 {
		t.Errorf("stats %+v, last sequence %d", st, f.Sequence)
	}
	d.checkBuffers(t)
}

func TestV4L2Formats(t *testing.T) {
	yuyv := fakeFormat{format: FormatYUYV, desc: "YUYV", sizes: []fakeSize{{4, 2, []Interval{{1, 10}}}, {8, 4, []Interval{{1, 5}}}}}
	mjpg := fakeFormat{format: FormatMJPEG, desc: "Motion-JPEG", sizes: []fakeSize{{4, 2, []Interval{{1, 30}}}, {8, 4, []Interval{{1, 30}}}}}
	nv12 := fakeFormat{format: FormatNV12, desc: "NV12", sizes: []fakeSize{{4, 2, []Interval{{1, 30}}}}}
	h264 := fakeFormat{format: 0x34363248, desc: "H.264"}
	for _, tc := range []struct {
		name    string
		formats []fakeFormat
		fps     float64
		format  PixelFormat
		want    PixelFormat
		wantErr string
	}{
		{"uncompressed reaches the rate", []fakeFormat{mjpg, yuyv}, 10, 0, FormatYUYV, ""},
		{"only MJPEG reaches the rate", []fakeFormat{yuyv, mjpg}, 30, 0, FormatMJPEG, ""},
		{"NV12 reaches it", []fakeFormat{yuyv, mjpg, nv12}, 30, 0, FormatNV12, ""},
		{"driver default rate", []fakeFormat{mjpg, yuyv}, 0, 0, FormatYUYV, ""},
		{"explicit MJPEG", []fakeFormat{yuyv, mjpg}, 10, FormatMJPEG, FormatMJPEG, ""},
		{"explicit format not offered", []fakeFormat{yuyv, mjpg}, 0, FormatNV12, 0, "not offered (the camera offers YUYV, MJPG)"},
		{"nothing usable", []fakeFormat{h264}, 0, 0, 0, "want one of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newFakeDev(t)
			d.formats = tc.formats
			cfg := quietV4L2Config()
			cfg.FPS, cfg.Format = tc.fps, tc.format
			v, err := openFake(t, d, cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrUnsupportedFormat) {
					t.Errorf("open = %v, want an ErrUnsupportedFormat error with %q", err, tc.wantErr)
				}
				if !d.closed {
					t.Error("a failed open left the device open")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			if g := v.Geometry(); g.Format != tc.want {
				t.Errorf("format %v, want %v", g.Format, tc.want)
			}
		})
	}
}

func TestV4L2CapturesEachFormat(t *testing.T) {
	// A 4x2 image in each layout, luma 10..80, Cb 100+, Cr 200+.
	luma := []byte{10, 20, 30, 40, 50, 60, 70, 80}
	var jpg bytes.Buffer
	src := image.NewYCbCr(image.Rect(0, 0, 16, 8), image.YCbCrSubsampleRatio420)
	for i := range src.Y {
		src.Y[i] = byte(16 * (i % 16))
	}
	if err := jpeg.Encode(&jpg, src, &jpeg.Options{Quality: 100}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		format PixelFormat
		w, h   int
		data   []byte
		luma   []byte
	}{
		{FormatYUYV, 4, 2, yuyv4x2, luma},
		{FormatGrey, 4, 2, luma, luma},
		{FormatNV12, 4, 2, append(slices.Clone(luma), 100, 200, 101, 201), luma},
		{FormatYU12, 4, 2, append(slices.Clone(luma), 100, 101, 200, 201), luma},
		{FormatRGB24, 4, 2, bytes.Repeat([]byte{255, 255, 255}, 8), bytes.Repeat([]byte{255}, 8)},
		{FormatMJPEG, 16, 8, stripDHT(t, jpg.Bytes()), nil},
	} {
		t.Run(tc.format.String(), func(t *testing.T) {
			d := newFakeDev(t)
			d.formats = []fakeFormat{{format: tc.format, sizes: []fakeSize{{tc.w, tc.h, nil}}}}
			d.frame = tc.data
			used := len(tc.data)
			d.script = []fakeEvent{{bytesused: used, seq: 0}}
			if tc.format == FormatMJPEG {
				d.script = []fakeEvent{{bytesused: used - 20, seq: 0}, {bytesused: used, seq: 1}} // a torn frame, then a whole one
			}
			cfg := quietV4L2Config()
			cfg.Width, cfg.Height = tc.w, tc.h
			v := mustOpenFake(t, d, cfg)
			defer v.Close()
			var f Frame
			if err := v.Next(t.Context(), &f); err != nil {
				t.Fatal(err)
			}
			if f.Format != tc.format || f.Width != tc.w || f.Height != tc.h || len(lumaOf(&f)) != tc.w*tc.h {
				t.Fatalf("frame %v %dx%d luma %d", f.Format, f.Width, f.Height, len(lumaOf(&f)))
			}
			if tc.luma != nil && !bytes.Equal(lumaOf(&f), tc.luma) {
				t.Errorf("luma %v, want %v", lumaOf(&f), tc.luma)
			}
			img := f.Image()
			if img.Bounds() != image.Rect(0, 0, tc.w, tc.h) {
				t.Errorf("Image bounds %v", img.Bounds())
			}
			if tc.format == FormatMJPEG {
				if st := v.Stats(); st.Corrupt != 1 || f.Sequence != 1 {
					t.Errorf("stats %+v, sequence %d: want the torn frame counted as corrupt", st, f.Sequence)
				}
				if _, ok := img.(*image.YCbCr); !ok {
					t.Errorf("MJPEG Image is %T, want *image.YCbCr", img)
				}
				if _, err := jpeg.Decode(bytes.NewReader(f.Data)); err != nil {
					t.Errorf("frame Data is not a complete JPEG: %v", err)
				}
				for x := range 16 { // JPEG at quality 100 is close to the source
					if got, want := int(f.Luma[x]), int(src.Y[x]); got < want-8 || got > want+8 {
						t.Errorf("MJPEG luma[%d] = %d, want about %d", x, got, want)
					}
				}
			}
			d.checkBuffers(t)
		})
	}
}

// stripDHT removes the DHT segments from a JPEG, as many UVC cameras send it.
func stripDHT(t *testing.T, b []byte) []byte {
	t.Helper()
	out := slices.Clone(b[:2])
	for i := 2; i < len(b); {
		m := b[i+1]
		if m == 0xda {
			return append(out, b[i:]...)
		}
		n := int(b[i+2])<<8 | int(b[i+3])
		if m != 0xc4 {
			out = append(out, b[i:i+2+n]...)
		}
		i += 2 + n
	}
	t.Fatal("no SOS")
	return nil
}

func TestV4L2Controls(t *testing.T) {
	newDev := func() *fakeDev {
		d := newFakeDev(t)
		d.ctrls = []*fakeCtrl{
			{id: 0x00980900, typ: ControlInteger, name: "Brightness", min: 0, max: 255, step: 1, def: 128, value: 128},
			{id: 0x00980001, typ: ControlClass, name: "User Controls", flags: ctrlFlagReadOnly},
			{id: 0x009a0902, typ: ControlInteger, name: "Exposure, Absolute", min: 3, max: 2047, step: 1, def: 250, value: 250},
			{id: 0x00f00901, typ: ControlMenu, name: "Horizontal Movement", min: 0, max: 6, def: 3, value: 3,
				menu: map[uint32]string{0: "Move Left Fast", 3: "No Movement", 6: "Move Right Fast"}},
			{id: 0x00f00902, typ: ControlInteger, name: "Sensor Temp", min: 0, max: 100, flags: ctrlFlagReadOnly},
			{id: 0x00f00903, typ: ControlInteger, name: "Hidden", min: 0, max: 1, flags: ctrlFlagDisabled},
			{id: 0x00f00904, typ: ControlInteger64, name: "Pixel Rate", value: 1},
		}
		return d
	}
	d := newDev()
	cfg := quietV4L2Config()
	cfg.Controls = []Control{{"horizontal_movement", 6}, {"Exposure, Absolute", 100}, {"pixel_rate", 1 << 40}}
	v := mustOpenFake(t, d, cfg)
	v.Close()
	if d.ctrl(0x00f00901).value != 6 || d.ctrl(0x009a0902).value != 100 || d.ctrl(0x00f00904).value != 1<<40 {
		t.Errorf("controls not set: movement %d exposure %d pixel rate %d", d.ctrl(0x00f00901).value, d.ctrl(0x009a0902).value, d.ctrl(0x00f00904).value)
	}
	calls := strings.Join(d.calls, " ")
	if i, j := strings.Index(calls, "S_CTRL"), strings.Index(calls, "STREAMON"); i < 0 || i > j || !strings.Contains(calls, "S_EXT_CTRLS") {
		t.Errorf("calls %q: controls must be set (S_CTRL, S_EXT_CTRLS for 64-bit) before STREAMON", calls)
	}
	for _, tc := range []struct {
		c    Control
		want string
	}{
		{Control{"focus", 1}, `unknown control "focus" (this camera has brightness, exposure_absolute, horizontal_movement, pixel_rate)`},
		{Control{"hidden", 1}, `unknown control "hidden"`},
		{Control{"brightness", 256}, "brightness=256 is out of range 0..255"},
		{Control{"horizontal_movement", 2}, "not one of its menu entries (0: Move Left Fast, 3: No Movement, 6: Move Right Fast)"},
		{Control{"sensor_temp", 1}, "sensor_temp is read-only"},
	} {
		d := newDev()
		cfg.Controls = []Control{tc.c}
		_, err := openFake(t, d, cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "/dev/fake") {
			t.Errorf("control %v: %v, want an error with %q", tc.c, err, tc.want)
		}
		if !d.closed || slices.Contains(d.mapped, true) {
			t.Errorf("control %v: a failed open left the device open or mapped", tc.c)
		}
	}
	d = newDev()
	d.ctrl(0x00980900).failWithErr = unix.EBUSY
	cfg.Controls = []Control{{"brightness", 1}}
	if _, err := openFake(t, d, cfg); err == nil || !strings.Contains(err.Error(), "brightness=1 cannot be set now") {
		t.Errorf("driver refusing a control: %v", err)
	}
}

func TestProbeDevice(t *testing.T) {
	d := newFakeDev(t)
	d.formats = []fakeFormat{
		{format: FormatYUYV, desc: "YUYV 4:2:2", sizes: []fakeSize{{640, 480, []Interval{{1, 25}, {1, 5}}}, {320, 240, nil}}},
		{format: FormatMJPEG, desc: "Motion-JPEG", stepwise: &[6]uint32{16, 1920, 8, 16, 1080, 8}},
		{format: 0x34363248, desc: "H.264"},
	}
	d.ctrls = []*fakeCtrl{
		{id: 0x00980900, typ: ControlInteger, name: "Brightness", min: 0, max: 255, step: 1, def: 128, value: 120},
		{id: 0x00f00901, typ: ControlMenu, name: "Horizontal Movement", min: 0, max: 6, def: 3, value: 3, menu: map[uint32]string{3: "No Movement", 6: "Move Right Fast"}},
		{id: 0x00f00905, typ: ControlButton, name: "Reset", flags: ctrlFlagWriteOnly},
	}
	info, ok := probeDevice(d, "/dev/video3")
	if !ok || info.Err != nil {
		t.Fatalf("probe: %v %v", ok, info.Err)
	}
	if info.Name != "video3" || info.Card != "Fake Camera" || info.Driver != "fake" || info.Bus != "platform:fake" || len(info.Formats) != 3 {
		t.Fatalf("probe %+v", info)
	}
	y := info.Formats[0]
	if !y.Supported || y.Compressed || len(y.Sizes) != 2 || y.Sizes[0].String() != "640x480" || y.Sizes[0].Rates.String() != "25 5 fps" || y.Sizes[1].Rates.Known() {
		t.Errorf("YUYV %+v", y)
	}
	m := info.Formats[1]
	if !m.Supported || !m.Compressed || len(m.Sizes) != 1 || m.Sizes[0].String() != "16x16-1920x1080/8x8" {
		t.Errorf("MJPEG %+v", m)
	}
	if info.Formats[2].Supported {
		t.Error("H.264 marked usable")
	}
	if len(info.Controls) != 3 {
		t.Fatalf("controls %+v", info.Controls)
	}
	b, hm, reset := info.Controls[0], info.Controls[1], info.Controls[2]
	if b.Name != "brightness" || b.Label != "Brightness" || b.Type != ControlInteger || b.Min != 0 || b.Max != 255 || b.Default != 128 || b.Value != 120 || b.ValueErr != nil {
		t.Errorf("brightness %+v", b)
	}
	if hm.Name != "horizontal_movement" || len(hm.Menu) != 2 || hm.Menu[1] != (MenuItem{6, "Move Right Fast"}) || hm.Value != 3 {
		t.Errorf("horizontal_movement %+v", hm)
	}
	if reset.Type != ControlButton || reset.ValueErr == nil {
		t.Errorf("reset %+v", reset)
	}

	d = newFakeDev(t)
	d.caps = 0x00800000 | capStreaming // a metadata node
	if _, ok := probeDevice(d, "/dev/video1"); ok {
		t.Error("a metadata node was listed")
	}
}

func TestV4L2OpenFailures(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(d *fakeDev)
		want  string
		is    error
	}{
		{"not a capture node", func(d *fakeDev) { d.caps = 0x00800000 | capStreaming }, "not a video capture node", ErrNoDevice},
		{"no streaming", func(d *fakeDev) { d.caps = capVideoCapture }, "no streaming I/O", nil},
		{"too few buffers", func(d *fakeDev) { d.give = 1 }, "driver gave 1", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newFakeDev(t)
			tc.setup(d)
			_, err := openFake(t, d, quietV4L2Config())
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Errorf("open = %v, want %q", err, tc.want)
			}
			if !d.closed || slices.Contains(d.mapped, true) || d.streaming {
				t.Errorf("failed open left closed=%v mapped=%v streaming=%v", d.closed, d.mapped, d.streaming)
			}
			d.checkBuffers(t)
		})
	}
	t.Run("no frame rate control", func(t *testing.T) {
		d := newFakeDev(t)
		d.parmCap = 0
		var logs bytes.Buffer
		cfg := quietV4L2Config()
		cfg.FPS = 15
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		v := mustOpenFake(t, d, cfg)
		defer v.Close()
		if !strings.Contains(logs.String(), "cannot set the frame rate") || v.Geometry().FPS != 30 {
			t.Errorf("fps %v, logs %q", v.Geometry().FPS, logs.String())
		}
		d.checkBuffers(t)
	})
}

var _ io.Closer = (*V4L2)(nil)
var _ Source = (*V4L2)(nil)

func TestSetControls(t *testing.T) {
	d := newFakeDev(t)
	d.ctrls = []*fakeCtrl{
		{id: 0x00f00901, typ: ControlMenu, name: "Horizontal Movement", min: 0, max: 6, def: 3, value: 3,
			menu: map[uint32]string{3: "No Movement", 6: "Move Right Fast"}},
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := setDeviceControls(d, "/dev/fake", []Control{{"horizontal_movement", 6}}, log); err != nil {
		t.Fatal(err)
	}
	if got := d.ctrl(0x00f00901).value; got != 6 {
		t.Errorf("horizontal_movement = %d, want 6", got)
	}
	calls := strings.Join(d.calls, " ")
	if !d.closed || strings.Contains(calls, "S_FMT") || strings.Contains(calls, "REQBUFS") || strings.Contains(calls, "STREAMON") {
		t.Errorf("calls %q (closed %v): want the control set and the device closed, no format, buffers or streaming", calls, d.closed)
	}
	d = newFakeDev(t)
	err := setDeviceControls(d, "/dev/fake", []Control{{"focus", 1}}, log)
	if err == nil || !strings.Contains(err.Error(), `unknown control "focus"`) || !d.closed {
		t.Errorf("unknown control: %v (closed %v), want an error naming it and the device closed", err, d.closed)
	}
}
