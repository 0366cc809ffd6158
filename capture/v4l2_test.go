package capture

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

const formatMJPG PixelFormat = 0x47504A4D

func TestChooseFormat(t *testing.T) {
	for _, tc := range []struct {
		offered []PixelFormat
		want    PixelFormat
	}{
		{[]PixelFormat{formatMJPG, FormatYUYV}, FormatYUYV},
		{[]PixelFormat{FormatGrey, FormatYUYV}, FormatYUYV},
		{[]PixelFormat{formatMJPG, FormatGrey}, FormatGrey},
	} {
		got, err := chooseFormat(tc.offered)
		if err != nil || got != tc.want {
			t.Errorf("chooseFormat(%v) = %v, %v; want %v", tc.offered, got, err, tc.want)
		}
	}
	_, err := chooseFormat([]PixelFormat{formatMJPG, FormatRGB24})
	if !errors.Is(err, ErrUnsupportedFormat) || !strings.Contains(err.Error(), "MJPG, RGB3") {
		t.Errorf("MJPG-only camera: %v, want ErrUnsupportedFormat listing the offered formats", err)
	}
	if _, err := chooseFormat(nil); !errors.Is(err, ErrUnsupportedFormat) {
		t.Errorf("no formats: %v", err)
	}
}

func TestGeometryOf(t *testing.T) {
	yuyv := uint32(FormatYUYV)
	good := []struct {
		p          pixFormat
		want       PixelFormat
		w, h, strd int
	}{
		{pixFormat{Width: 640, Height: 480, PixelFormat: yuyv, Field: 1, BytesPerLine: 1280}, FormatYUYV, 640, 480, 1280},
		{pixFormat{Width: 640, Height: 480, PixelFormat: yuyv, BytesPerLine: 0}, FormatYUYV, 640, 480, 1280},
		{pixFormat{Width: 320, Height: 240, PixelFormat: yuyv, BytesPerLine: 704}, FormatYUYV, 320, 240, 704},
		{pixFormat{Width: 33, Height: 7, PixelFormat: uint32(FormatGrey), BytesPerLine: 64}, FormatGrey, 33, 7, 64},
	}
	for _, tc := range good {
		g, err := geometryOf(tc.p, tc.want)
		if err != nil || g.format != tc.want || g.width != tc.w || g.height != tc.h || g.stride != tc.strd {
			t.Errorf("geometryOf(%+v) = %+v, %v", tc.p, g, err)
		}
	}
	bad := map[string]pixFormat{
		"other format":     {Width: 640, Height: 480, PixelFormat: uint32(formatMJPG)},
		"zero size":        {Width: 0, Height: 480, PixelFormat: yuyv},
		"huge size":        {Width: 640, Height: 1 << 20, PixelFormat: yuyv},
		"odd YUYV width":   {Width: 641, Height: 480, PixelFormat: yuyv},
		"short stride":     {Width: 640, Height: 480, PixelFormat: yuyv, BytesPerLine: 1000},
		"alternate fields": {Width: 640, Height: 240, PixelFormat: yuyv, Field: 7},
	}
	for name, p := range bad {
		if _, err := geometryOf(p, FormatYUYV); err == nil {
			t.Errorf("%s: accepted %+v", name, p)
		}
	}
	if _, err := geometryOf(bad["other format"], FormatYUYV); !errors.Is(err, ErrUnsupportedFormat) {
		t.Errorf("other format: %v, want ErrUnsupportedFormat", err)
	}
}

func TestFillFromBuffer(t *testing.T) {
	g := geometry{format: FormatYUYV, width: 4, height: 3, stride: 10} // 2 bytes padding per line
	buf := make([]byte, 30)
	for i := range buf {
		buf[i] = byte(i)
	}
	var f Frame
	if err := fillFromBuffer(&f, buf, g); err != nil {
		t.Fatal(err)
	}
	if f.Width != 4 || f.Height != 3 || f.Stride != 10 || f.Format != FormatYUYV || !bytes.Equal(f.Data, buf) {
		t.Fatalf("frame %+v", f)
	}
	if want := []byte{0, 2, 4, 6, 10, 12, 14, 16, 20, 22, 24, 26}; !bytes.Equal(f.Luma, want) {
		t.Errorf("luma %v, want %v", f.Luma, want)
	}
	buf[0] = 200
	if f.Data[0] == 200 {
		t.Error("frame shares the driver buffer")
	}

	// The last line may stop after its pixels (no trailing padding).
	if err := fillFromBuffer(&f, buf[:28], g); err != nil || len(f.Data) != 28 {
		t.Errorf("minimal buffer: %v, data %d bytes", err, len(f.Data))
	}
	// A longer buffer (sizeimage rounding) is cut to the frame.
	if err := fillFromBuffer(&f, make([]byte, 64), g); err != nil || len(f.Data) != 30 {
		t.Errorf("long buffer: %v, data %d bytes", err, len(f.Data))
	}

	before := append([]byte(nil), f.Data...)
	if err := fillFromBuffer(&f, nil, g); !errors.Is(err, errEmptyBuffer) {
		t.Errorf("empty buffer: %v", err)
	}
	if err := fillFromBuffer(&f, buf[:27], g); !errors.Is(err, errShortBuffer) || !strings.Contains(err.Error(), "27 bytes, want 28") {
		t.Errorf("short buffer: %v", err)
	}
	if !bytes.Equal(f.Data, before) {
		t.Error("a rejected buffer changed the frame")
	}
	if n := testing.AllocsPerRun(50, func() {
		if err := fillFromBuffer(&f, buf, g); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("fillFromBuffer: %v allocations, want 0", n)
	}
}

func TestSizeString(t *testing.T) {
	for _, tc := range []struct {
		typ  uint32
		v    [6]uint32
		want string
	}{
		{frmsizeDiscrete, [6]uint32{640, 480}, "640x480"},
		{frmsizeContinuous, [6]uint32{16, 1920, 1, 16, 1080, 1}, "16x16-1920x1080"},
		{frmsizeStepwise, [6]uint32{48, 1280, 8, 32, 720, 4}, "48x32-1280x720/8x4"},
		{9, [6]uint32{}, "size type 9"},
	} {
		if got := sizeString(tc.typ, tc.v); got != tc.want {
			t.Errorf("sizeString(%d, %v) = %q, want %q", tc.typ, tc.v, got, tc.want)
		}
	}
}

func TestVideoNodes(t *testing.T) {
	got := videoNodes([]string{"video10", "video2", "media0", "video", "videoX", "video0", "video1a", "v4l-subdev0", "video-1"})
	if want := "video0,video2,video10"; strings.Join(got, ",") != want {
		t.Errorf("videoNodes = %v, want %s", got, want)
	}
}

func TestNodeCaps(t *testing.T) {
	// A UVC metadata node: the device can capture video, this node cannot.
	whole := uint32(capVideoCapture | capStreaming | capDeviceCaps | 0x00800000)
	if c := nodeCaps(whole, 0x00800000|capStreaming); c&capVideoCapture != 0 {
		t.Errorf("metadata node caps %#x report video capture", c)
	}
	if c := nodeCaps(capVideoCapture|capStreaming, 0); c&capVideoCapture == 0 {
		t.Errorf("old driver without device_caps: %#x", c)
	}
}

func TestV4L2ConfigDefaults(t *testing.T) {
	c, err := V4L2Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Device != "/dev/video0" || c.Width != 640 || c.Height != 480 || c.Buffers != 3 || c.Stall <= 0 || c.Logger == nil {
		t.Errorf("defaults %+v", c)
	}
	for name, bad := range map[string]V4L2Config{
		"buffers 1":    {Buffers: 1},
		"buffers 5":    {Buffers: 5},
		"width -1":     {Width: -1},
		"height 99999": {Height: 99999},
		"fps -1":       {FPS: -1},
		"stall -1":     {Stall: -1},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestCString(t *testing.T) {
	if got := cString([]byte("uvcvideo\x00\x00junk")); got != "uvcvideo" {
		t.Errorf("cString = %q", got)
	}
	if got := cString([]byte("full")); got != "full" {
		t.Errorf("cString without NUL = %q", got)
	}
}
