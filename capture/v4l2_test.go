package capture

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestChooseFormat(t *testing.T) {
	const h264 PixelFormat = 0x34363248
	yes, no, unknown := matchYes, matchNo, matchUnknown
	for _, tc := range []struct {
		name   string
		offers []formatOffer
		want   PixelFormat
	}{
		{"YUYV over MJPEG", []formatOffer{{FormatMJPEG, yes, yes}, {FormatYUYV, yes, yes}}, FormatYUYV},
		{"MJPEG reaches the rate, YUYV does not", []formatOffer{{FormatYUYV, yes, no}, {FormatMJPEG, yes, yes}}, FormatMJPEG},
		{"MJPEG has the size, YUYV does not", []formatOffer{{FormatYUYV, no, yes}, {FormatMJPEG, yes, no}}, FormatMJPEG},
		{"neither reaches the rate", []formatOffer{{FormatMJPEG, yes, no}, {FormatYUYV, yes, no}}, FormatYUYV},
		{"nobody has the size", []formatOffer{{FormatMJPEG, no, no}, {FormatGrey, no, no}}, FormatGrey},
		{"unknown counts as offered", []formatOffer{{FormatMJPEG, yes, yes}, {FormatGrey, unknown, unknown}}, FormatGrey},
		{"preference order", []formatOffer{{FormatGrey, yes, yes}, {FormatYU12, yes, yes}, {FormatNV12, yes, yes}, {FormatRGB24, yes, yes}}, FormatNV12},
		{"unsupported ignored", []formatOffer{{h264, yes, yes}, {FormatMJPEG, no, no}}, FormatMJPEG},
	} {
		got, err := chooseFormat(tc.offers)
		if err != nil || got != tc.want {
			t.Errorf("%s: chooseFormat = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	_, err := chooseFormat([]formatOffer{{format: h264}, {format: 0x30385056}})
	if !errors.Is(err, ErrUnsupportedFormat) || !strings.Contains(err.Error(), "device offers H264, VP80") {
		t.Errorf("no usable format: %v, want ErrUnsupportedFormat listing the offered formats", err)
	}
	if _, err := chooseFormat(nil); !errors.Is(err, ErrUnsupportedFormat) {
		t.Errorf("no formats: %v", err)
	}
}

func TestOffers(t *testing.T) {
	sizes := []FrameSize{
		{Width: 640, Height: 480, MinWidth: 640, MinHeight: 480},
		{Width: 1280, Height: 720, MinWidth: 16, MinHeight: 16, StepWidth: 8, StepHeight: 8},
	}
	for _, tc := range []struct {
		w, h int
		want offerMatch
	}{{640, 480, matchYes}, {321, 240, matchNo}, {320, 240, matchYes}, {1024, 576, matchYes}, {1020, 576, matchNo}, {1288, 720, matchNo}} {
		if got := sizeOffer(sizes, tc.w, tc.h); got != tc.want {
			t.Errorf("sizeOffer(%dx%d) = %v, want %v", tc.w, tc.h, got, tc.want)
		}
	}
	if sizeOffer(nil, 1, 1) != matchUnknown {
		t.Error("no enumeration is not unknown")
	}
	list := FrameRates{Discrete: []Interval{{1, 5}, {1001, 30000}, {1, 15}}}
	rng := FrameRates{Min: Interval{1, 60}, Max: Interval{1, 1}, Step: Interval{1, 60}}
	for _, tc := range []struct {
		r    FrameRates
		fps  float64
		want offerMatch
	}{
		{list, 30, matchYes}, // 29.97 reaches 30
		{list, 31, matchNo},
		{list, 0, matchYes},
		{rng, 60, matchYes},
		{rng, 62, matchNo},
		{FrameRates{}, 30, matchUnknown},
		{FrameRates{}, 0, matchYes},
	} {
		if got := rateOffer(tc.r, tc.fps); got != tc.want {
			t.Errorf("rateOffer(%v, %v) = %v, want %v", tc.r, tc.fps, got, tc.want)
		}
	}
}

func TestFrameSizeAndRates(t *testing.T) {
	for _, tc := range []struct {
		s    FrameSize
		want string
	}{
		{FrameSize{Width: 640, Height: 480, MinWidth: 640, MinHeight: 480}, "640x480"},
		{FrameSize{MinWidth: 16, MinHeight: 16, Width: 1920, Height: 1080, StepWidth: 1, StepHeight: 1}, "16x16-1920x1080"},
		{FrameSize{MinWidth: 48, MinHeight: 32, Width: 1280, Height: 720, StepWidth: 8, StepHeight: 4}, "48x32-1280x720/8x4"},
	} {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("FrameSize.String() = %q, want %q", got, tc.want)
		}
	}
	for _, tc := range []struct {
		r    FrameRates
		want string
		max  float64
	}{
		{FrameRates{Discrete: []Interval{{1, 5}, {1, 25}, {2, 15}}}, "25 7.5 5 fps", 25},
		{FrameRates{Discrete: []Interval{{1001, 30000}}}, "29.97 fps", 30000.0 / 1001},
		{FrameRates{Min: Interval{1, 60}, Max: Interval{1, 1}, Step: Interval{1, 60}}, "1-60 fps", 60},
		{FrameRates{}, "", 0},
	} {
		if got := tc.r.String(); got != tc.want || tc.r.MaxFPS() != tc.max {
			t.Errorf("FrameRates %v: String %q MaxFPS %v, want %q and %v", tc.r, got, tc.r.MaxFPS(), tc.want, tc.max)
		}
	}
	if (Interval{}).FPS() != 0 || (Interval{1, 0}).FPS() != 0 {
		t.Error("a zero interval has a rate")
	}
}

func TestFPSInterval(t *testing.T) {
	for _, tc := range []struct {
		fps  float64
		want Interval
	}{
		{30, Interval{1, 30}}, {25, Interval{1, 25}}, {7.5, Interval{2, 15}}, {29.97, Interval{100, 2997}},
		{0.5, Interval{2, 1}}, {0, Interval{}}, {-1, Interval{}}, {math.NaN(), Interval{}},
	} {
		if got := fpsInterval(tc.fps); got != tc.want {
			t.Errorf("fpsInterval(%v) = %v, want %v", tc.fps, got, tc.want)
		}
	}
}

func TestGeometryOf(t *testing.T) {
	yuyv := uint32(FormatYUYV)
	good := []struct {
		p                pixFormat
		want             PixelFormat
		w, h, strd, need int
	}{
		{pixFormat{Width: 640, Height: 480, PixelFormat: yuyv, Field: 1, BytesPerLine: 1280, SizeImage: 614400}, FormatYUYV, 640, 480, 1280, 614400},
		{pixFormat{Width: 640, Height: 480, PixelFormat: yuyv, BytesPerLine: 0}, FormatYUYV, 640, 480, 1280, 614400},
		{pixFormat{Width: 320, Height: 240, PixelFormat: yuyv, BytesPerLine: 704}, FormatYUYV, 320, 240, 704, 704*239 + 640},
		{pixFormat{Width: 33, Height: 7, PixelFormat: uint32(FormatGrey), BytesPerLine: 64}, FormatGrey, 33, 7, 64, 64*6 + 33},
		{pixFormat{Width: 640, Height: 480, PixelFormat: uint32(FormatNV12), BytesPerLine: 640}, FormatNV12, 640, 480, 640, 640 * 720},
		{pixFormat{Width: 640, Height: 480, PixelFormat: uint32(FormatYU12), BytesPerLine: 640}, FormatYU12, 640, 480, 640, 640 * 720},
		{pixFormat{Width: 1280, Height: 720, PixelFormat: uint32(FormatMJPEG), SizeImage: 1 << 20}, FormatMJPEG, 1280, 720, 0, 1},
	}
	for _, tc := range good {
		g, err := geometryOf(tc.p, tc.want)
		if err != nil || g.format != tc.want || g.width != tc.w || g.height != tc.h || g.stride != tc.strd || g.need != tc.need {
			t.Errorf("geometryOf(%+v) = %+v, %v", tc.p, g, err)
		}
	}
	bad := map[string]pixFormat{
		"other format":     {Width: 640, Height: 480, PixelFormat: uint32(FormatMJPEG)},
		"zero size":        {Width: 0, Height: 480, PixelFormat: yuyv},
		"huge size":        {Width: 640, Height: 1 << 20, PixelFormat: yuyv},
		"odd YUYV width":   {Width: 641, Height: 480, PixelFormat: yuyv},
		"short stride":     {Width: 640, Height: 480, PixelFormat: yuyv, BytesPerLine: 1000},
		"alternate fields": {Width: 640, Height: 240, PixelFormat: yuyv, Field: 7},
		"huge stride":      {Width: 640, Height: 480, PixelFormat: yuyv, BytesPerLine: 1 << 31},
	}
	for name, p := range bad {
		if _, err := geometryOf(p, FormatYUYV); err == nil {
			t.Errorf("%s: accepted %+v", name, p)
		}
	}
	if _, err := geometryOf(bad["other format"], FormatYUYV); !errors.Is(err, ErrUnsupportedFormat) {
		t.Errorf("other format: %v, want ErrUnsupportedFormat", err)
	}
	if _, err := geometryOf(pixFormat{Width: 5, Height: 4, PixelFormat: uint32(FormatYU12), BytesPerLine: 5}, FormatYU12); err == nil {
		t.Error("YU12 with chroma lines narrower than the chroma accepted")
	}
}

func TestFillFromBuffer(t *testing.T) {
	g, err := geometryOf(pixFormat{Width: 4, Height: 3, PixelFormat: uint32(FormatYUYV), BytesPerLine: 10}, FormatYUYV) // 2 bytes padding per line
	if err != nil {
		t.Fatal(err)
	}
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
	if want := []byte{0, 2, 4, 6, 10, 12, 14, 16, 20, 22, 24, 26}; !bytes.Equal(lumaOf(&f), want) {
		t.Errorf("luma %v, want %v", lumaOf(&f), want)
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
	if err := fillFromBuffer(&f, buf[:27], g); !errors.Is(err, errShortBuffer) {
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

	// NV12 with padding: 3x3 luma, 2x2 chroma pairs, stride 6.
	g, err = geometryOf(pixFormat{Width: 3, Height: 3, PixelFormat: uint32(FormatNV12), BytesPerLine: 6}, FormatNV12)
	if err != nil {
		t.Fatal(err)
	}
	nv12 := []byte{
		1, 2, 3, 0, 0, 0,
		4, 5, 6, 0, 0, 0,
		7, 8, 9, 0, 0, 0,
		100, 200, 101, 201, 0, 0,
		102, 202, 103, 203, // the last line without padding
	}
	if err := fillFromBuffer(&f, nv12, g); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(lumaOf(&f), []byte{1, 2, 3, 4, 5, 6, 7, 8, 9}) {
		t.Errorf("NV12 luma %v", lumaOf(&f))
	}
	if err := fillFromBuffer(&f, nv12[:len(nv12)-1], g); !errors.Is(err, errShortBuffer) {
		t.Errorf("short NV12: %v", err)
	}
}

func TestSeqTracker(t *testing.T) {
	var s seqTracker
	for i, tc := range []struct {
		seq     uint32
		ext     uint64
		dropped uint64
	}{
		{2, 2, 2}, // frames 0 and 1 were lost before the first dequeue
		{3, 3, 0},
		{7, 7, 3},
		{7, 8, 0},  // a repeat still advances
		{1, 9, 0},  // the driver restarted its count
		{2, 10, 0}, // and goes on from there
	} {
		if ext, dropped := s.next(tc.seq); ext != tc.ext || dropped != tc.dropped {
			t.Errorf("step %d: next(%d) = %d, %d; want %d, %d", i, tc.seq, ext, dropped, tc.ext, tc.dropped)
		}
	}
	// The 32-bit counter wraps; the sequence goes on.
	w := seqTracker{started: true, last: 1<<32 - 2, ext: 1<<32 - 2}
	if ext, dropped := w.next(1<<32 - 1); ext != 1<<32-1 || dropped != 0 {
		t.Errorf("before the wrap: %d, %d", ext, dropped)
	}
	if ext, dropped := w.next(1); ext != 1<<32+1 || dropped != 1 {
		t.Errorf("across the wrap: %d, %d; want %d, 1", ext, dropped, uint64(1<<32+1))
	}
}

func TestFrameTime(t *testing.T) {
	now := time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC)
	if got := frameTime(now, 50*time.Second, 50*time.Second-40*time.Millisecond); !got.Equal(now.Add(-40 * time.Millisecond)) {
		t.Errorf("40 ms old frame at %v", got)
	}
	if got := frameTime(now, 50*time.Second, 51*time.Second); !got.Equal(now) {
		t.Errorf("frame from the future at %v, want now", got)
	}
	// A wall clock stepped by NTP is followed at once: the age is what counts.
	later := now.Add(365 * 24 * time.Hour)
	if got := frameTime(later, 60*time.Second, 60*time.Second-time.Millisecond); !got.Equal(later.Add(-time.Millisecond)) {
		t.Errorf("after a clock step: %v", got)
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
	c, err := V4L2Config{Controls: []Control{{"Horizontal Movement", 6}}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Device != "/dev/video0" || c.Width != 640 || c.Height != 480 || c.Buffers != 3 || c.Stall != 5*time.Second ||
		c.Logger == nil || c.Format != 0 || len(c.Controls) != 1 || c.Controls[0] != (Control{"horizontal_movement", 6}) {
		t.Errorf("defaults %+v", c)
	}
	for name, bad := range map[string]V4L2Config{
		"buffers 1":      {Buffers: 1},
		"buffers 5":      {Buffers: 5},
		"width -1":       {Width: -1},
		"height 99999":   {Height: 99999},
		"fps -1":         {FPS: -1},
		"stall -1":       {Stall: -1},
		"format H264":    {Format: 0x34363248},
		"control twice":  {Controls: []Control{{"a", 1}, {"A", 2}}},
		"control noname": {Controls: []Control{{", ", 1}}},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestParsePixelFormat(t *testing.T) {
	for in, want := range map[string]PixelFormat{
		"": 0, "auto": 0, "AUTO": 0, "yuyv": FormatYUYV, "MJPG": FormatMJPEG, "mjpeg": FormatMJPEG,
		"NV12": FormatNV12, "YU12": FormatYU12, "i420": FormatYU12, "GREY": FormatGrey, "RGB3": FormatRGB24,
	} {
		if got, err := ParsePixelFormat(in); err != nil || got != want {
			t.Errorf("ParsePixelFormat(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"H264", "yuv", "YUYV2"} {
		if _, err := ParsePixelFormat(in); err == nil || !strings.Contains(err.Error(), "want auto, YUYV, NV12") {
			t.Errorf("ParsePixelFormat(%q): %v", in, err)
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
