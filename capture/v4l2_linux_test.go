//go:build linux

package capture

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/blackjack/webcam"
	"golang.org/x/sys/unix"
)

// TestKernelABI pins the structure sizes and request codes to the values in
// linux/videodev2.h, so a layout mistake shows here and not as EINVAL on a
// board.
func TestKernelABI(t *testing.T) {
	ptr := unsafe.Sizeof(uintptr(0))
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof v4l2_capability", unsafe.Sizeof(v4l2Capability{}), 104},
		{"sizeof v4l2_fmtdesc", unsafe.Sizeof(v4l2FmtDesc{}), 64},
		{"sizeof v4l2_frmsizeenum", unsafe.Sizeof(v4l2FrmSizeEnum{}), 44},
		{"sizeof v4l2_format", unsafe.Sizeof(v4l2Format{}), 4 + ptr - 4 + 200},
		{"offsetof v4l2_format.fmt", unsafe.Offsetof(v4l2Format{}.Fmt), ptr},
		{"VIDIOC_QUERYCAP", vidiocQuerycap, 0x80685600},
		{"VIDIOC_ENUM_FMT", vidiocEnumFmt, 0xc0405602},
		{"VIDIOC_ENUM_FRAMESIZES", vidiocEnumFramesizes, 0xc02c564a},
		{"VIDIOC_G_FMT", vidiocGFmt, map[uintptr]uintptr{8: 0xc0d05604, 4: 0xc0cc5604}[ptr]},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
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
	format, w, h, stride := v.Geometry()
	var f Frame
	for i := range 3 {
		if err := v.Next(t.Context(), &f); err != nil {
			t.Fatal(err)
		}
		if f.Format != format || f.Width != w || f.Height != h || f.Stride != stride || len(f.Luma) != w*h || f.Sequence != uint64(i) {
			t.Fatalf("frame %d: %v %dx%d stride %d, driver set %v %dx%d stride %d", i, f.Format, f.Width, f.Height, f.Stride, format, w, h, stride)
		}
	}
	if st := v.Stats(); st.Frames != 3 {
		t.Errorf("stats %+v", st)
	}
}

// fakeCam scripts the webcam calls Next makes.
type fakeCam struct {
	steps    []camStep
	i        int
	steady   []byte // when set and the script is done, every call succeeds with it
	released []uint32
	stopped  int
	closed   int
}

type camStep struct {
	wait   error  // WaitForFrame's result; nil means a frame is ready
	buf    []byte // GetFrame's buffer
	idx    uint32
	getErr error
	relErr error
}

var errTimeout error = &webcam.Timeout{}

func (c *fakeCam) step() *camStep {
	if c.i < len(c.steps) {
		return &c.steps[c.i]
	}
	return nil
}

func (c *fakeCam) WaitForFrame(uint32) error {
	s := c.step()
	if s == nil {
		if c.steady != nil {
			return nil
		}
		return errTimeout
	}
	if s.wait != nil {
		c.i++
		return s.wait
	}
	return nil
}

func (c *fakeCam) GetFrame() ([]byte, uint32, error) {
	s := c.step()
	if s == nil {
		return c.steady, 0, nil
	}
	if s.getErr != nil {
		c.i++
		return nil, 0, s.getErr
	}
	return s.buf, s.idx, nil
}

func (c *fakeCam) ReleaseFrame(idx uint32) error {
	c.released = append(c.released, idx)
	s := c.step()
	if s == nil {
		return nil
	}
	c.i++
	return s.relErr
}

func (c *fakeCam) StopStreaming() error { c.stopped++; return nil }
func (c *fakeCam) Close() error         { c.closed++; return nil }

func fakeV4L2(cam *fakeCam) *V4L2 {
	return &V4L2{
		cam:   cam,
		path:  "/dev/fake",
		clk:   fixedClock{epoch},
		geo:   geometry{format: FormatYUYV, width: 4, height: 2, stride: 8},
		stall: 3,
	}
}

func TestV4L2NextSkipsAndCounts(t *testing.T) {
	good := []byte{10, 128, 20, 128, 30, 128, 40, 128, 50, 128, 60, 128, 70, 128, 80, 128}
	cam := &fakeCam{steps: []camStep{
		{wait: errTimeout},
		{wait: unix.EINTR},
		{getErr: unix.EAGAIN},
		{buf: []byte{}, idx: 0},   // bytesused 0
		{buf: good[:10], idx: 1},  // short
		{buf: good, idx: 2},       // delivered
		{buf: good[:0:0], idx: 3}, // empty again
		{buf: good[2:], idx: 0},   // short
		{buf: good, idx: 1},       // delivered
	}}
	v := fakeV4L2(cam)
	var f Frame
	if err := v.Next(t.Context(), &f); err != nil {
		t.Fatal(err)
	}
	if f.Sequence != 0 || !f.Time.Equal(epoch) || f.Width != 4 || f.Height != 2 || string(f.Luma) != string([]byte{10, 20, 30, 40, 50, 60, 70, 80}) {
		t.Fatalf("frame %+v", f)
	}
	if err := v.Next(t.Context(), &f); err != nil || f.Sequence != 1 {
		t.Fatalf("second Next: %v, seq %d", err, f.Sequence)
	}
	want := V4L2Stats{Frames: 2, Empty: 2, Short: 2, Timeouts: 1, Again: 1}
	if st := v.Stats(); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	if !slices.Equal(cam.released, []uint32{0, 1, 2, 3, 0, 1}) {
		t.Errorf("released %v: every dequeued buffer must be requeued once", cam.released)
	}
}

func TestV4L2NextErrors(t *testing.T) {
	t.Run("stall", func(t *testing.T) {
		v := fakeV4L2(&fakeCam{})
		var f Frame
		err := v.Next(t.Context(), &f)
		if !errors.Is(err, ErrStalled) || v.Stats().Timeouts != 3 {
			t.Errorf("Next = %v after %d timeouts, want ErrStalled after 3", err, v.Stats().Timeouts)
		}
	})
	t.Run("unplugged", func(t *testing.T) {
		v := fakeV4L2(&fakeCam{steps: []camStep{{getErr: unix.ENODEV}}})
		var f Frame
		err := v.Next(t.Context(), &f)
		if !errors.Is(err, ErrNoDevice) || !errors.Is(err, unix.ENODEV) || !strings.Contains(err.Error(), "/dev/fake") {
			t.Errorf("Next = %v, want ErrNoDevice", err)
		}
	})
	t.Run("poll error", func(t *testing.T) {
		v := fakeV4L2(&fakeCam{steps: []camStep{{wait: unix.EBADF}}})
		var f Frame
		if err := v.Next(t.Context(), &f); !errors.Is(err, unix.EBADF) {
			t.Errorf("Next = %v, want EBADF", err)
		}
	})
	t.Run("requeue fails", func(t *testing.T) {
		v := fakeV4L2(&fakeCam{steps: []camStep{{buf: make([]byte, 16), relErr: unix.EINVAL}}})
		var f Frame
		if err := v.Next(t.Context(), &f); !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "requeue") {
			t.Errorf("Next = %v, want the requeue error", err)
		}
	})
	t.Run("only empty buffers", func(t *testing.T) {
		v := fakeV4L2(&fakeCam{steady: []byte{}})
		var f Frame
		if err := v.Next(t.Context(), &f); err == nil || !strings.Contains(err.Error(), "unusable buffers") {
			t.Errorf("Next = %v, want an error after too many empty buffers", err)
		}
		if n := v.Stats().Empty; n != v4l2MaxBadBuffers {
			t.Errorf("empty %d, want %d", n, v4l2MaxBadBuffers)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		v := fakeV4L2(&fakeCam{steady: make([]byte, 16)})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		var f Frame
		if err := v.Next(ctx, &f); !errors.Is(err, context.Canceled) {
			t.Errorf("Next = %v, want context.Canceled", err)
		}
	})
}

func TestV4L2Close(t *testing.T) {
	cam := &fakeCam{steady: make([]byte, 16)}
	v := fakeV4L2(cam)
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if cam.stopped != 1 || cam.closed != 1 {
		t.Errorf("stopped %d closed %d, want 1 and 1", cam.stopped, cam.closed)
	}
	var f Frame
	if err := v.Next(t.Context(), &f); !errors.Is(err, ErrClosed) {
		t.Errorf("Next after Close: %v, want ErrClosed", err)
	}
}

func TestV4L2NextDoesNotAllocate(t *testing.T) {
	cam := &fakeCam{steady: make([]byte, 16), released: make([]uint32, 0, 1000)}
	v := fakeV4L2(cam)
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
}

var _ io.Closer = (*V4L2)(nil)
