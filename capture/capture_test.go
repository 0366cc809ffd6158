package capture

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"strings"
	"testing"
	"time"
)

func TestPixelFormatString(t *testing.T) {
	for _, tc := range []struct {
		p    PixelFormat
		want string
	}{
		{FormatYUYV, "YUYV"},
		{FormatGrey, "GREY"},
		{FormatRGB24, "RGB3"},
		{0x47504A4D, "MJPG"},
		{0x00000001, "0x00000001"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("PixelFormat(%#x).String() = %q, want %q", uint32(tc.p), got, tc.want)
		}
	}
}

// yuyvFrame builds a YUYV frame with stride padding (filled with 0xEE, which
// must never show up in the luma plane).
func yuyvFrame(w, h, pad int, y func(x, y int) byte, u, v byte) *Frame {
	stride := 2*w + pad
	data := bytes.Repeat([]byte{0xEE}, stride*h)
	for yy := range h {
		for xx := range w {
			data[yy*stride+2*xx] = y(xx, yy)
			if xx%2 == 0 {
				data[yy*stride+2*xx+1] = u
			} else {
				data[yy*stride+2*xx+1] = v
			}
		}
	}
	f := &Frame{Width: w, Height: h, Format: FormatYUYV, Data: data, Stride: stride}
	fillLuma(f)
	return f
}

func TestLumaFromYUYVWithStride(t *testing.T) {
	pattern := func(x, y int) byte { return byte(7*x + 13*y) }
	f := yuyvFrame(6, 4, 4, pattern, 90, 160)
	if len(f.Luma) != 6*4 {
		t.Fatalf("luma has %d bytes, want 24", len(f.Luma))
	}
	for y := range 4 {
		for x := range 6 {
			if got, want := f.Luma[y*6+x], pattern(x, y); got != want {
				t.Fatalf("luma(%d,%d) = %d, want %d", x, y, got, want)
			}
		}
	}
}

func TestLumaFromRGB24MatchesBT601(t *testing.T) {
	const w, h, pad = 5, 3, 2
	stride := 3*w + pad
	data := make([]byte, stride*h)
	colours := []color.RGBA{{255, 0, 0, 255}, {0, 255, 0, 255}, {0, 0, 255, 255}, {255, 255, 255, 255}, {0, 0, 0, 255}, {12, 200, 99, 255}, {250, 128, 3, 255}}
	for i := range w * h {
		c := colours[i%len(colours)]
		o := (i/w)*stride + 3*(i%w)
		data[o], data[o+1], data[o+2] = c.R, c.G, c.B
	}
	f := &Frame{Width: w, Height: h, Format: FormatRGB24, Data: data, Stride: stride}
	fillLuma(f)
	for i := range w * h {
		c := colours[i%len(colours)]
		want, _, _ := color.RGBToYCbCr(c.R, c.G, c.B) // the standard library's BT.601
		if f.Luma[i] != want {
			t.Errorf("luma of %v = %d, want %d", c, f.Luma[i], want)
		}
	}
	if f.Luma[0] < 70 || f.Luma[0] > 80 { // red is ~0.299 of white
		t.Errorf("luma of pure red %d, want about 76", f.Luma[0])
	}
}

func TestLumaFromGreyWithStride(t *testing.T) {
	f := &Frame{Width: 3, Height: 2, Format: FormatGrey, Stride: 5, Data: []byte{1, 2, 3, 99, 99, 4, 5, 6, 99, 99}}
	fillLuma(f)
	if want := []byte{1, 2, 3, 4, 5, 6}; !bytes.Equal(f.Luma, want) {
		t.Errorf("luma %v, want %v", f.Luma, want)
	}
}

func TestCopyToDeepAndWithoutAllocation(t *testing.T) {
	src := yuyvFrame(64, 48, 0, func(x, y int) byte { return byte(x ^ y) }, 100, 150)
	src.Time = time.Unix(1700000000, 5)
	src.Sequence = 42
	var dst Frame
	src.CopyTo(&dst)
	if dst.Width != 64 || dst.Height != 48 || dst.Format != FormatYUYV || dst.Stride != src.Stride ||
		!dst.Time.Equal(src.Time) || dst.Sequence != 42 ||
		!bytes.Equal(dst.Luma, src.Luma) || !bytes.Equal(dst.Data, src.Data) {
		t.Fatalf("copy differs from source")
	}
	src.Luma[0]++
	src.Data[0]++
	if dst.Luma[0] == src.Luma[0] || dst.Data[0] == src.Data[0] {
		t.Fatal("copy shares buffers with the source")
	}
	if n := testing.AllocsPerRun(100, func() { src.CopyTo(&dst) }); n != 0 {
		t.Errorf("CopyTo into a grown frame: %v allocations, want 0", n)
	}
	small := yuyvFrame(8, 8, 0, func(x, y int) byte { return 1 }, 128, 128)
	small.CopyTo(&dst)
	if len(dst.Luma) != 64 || len(dst.Data) != 128 || dst.Width != 8 {
		t.Errorf("copy of a smaller frame: luma %d data %d width %d", len(dst.Luma), len(dst.Data), dst.Width)
	}
}

func TestImage(t *testing.T) {
	f := yuyvFrame(4, 2, 2, func(x, y int) byte { return byte(10*x + 100*y) }, 90, 170)
	img, ok := f.Image().(*image.YCbCr)
	if !ok {
		t.Fatalf("YUYV image is %T, want *image.YCbCr", f.Image())
	}
	if img.Bounds() != image.Rect(0, 0, 4, 2) {
		t.Fatalf("bounds %v", img.Bounds())
	}
	for y := range 2 {
		for x := range 4 {
			c := img.YCbCrAt(x, y)
			if c.Y != byte(10*x+100*y) || c.Cb != 90 || c.Cr != 170 {
				t.Errorf("pixel (%d,%d) = %v", x, y, c)
			}
		}
	}

	rgb := &Frame{Width: 2, Height: 1, Format: FormatRGB24, Stride: 6, Data: []byte{255, 0, 0, 1, 2, 3}}
	fillLuma(rgb)
	if got := color.RGBAModel.Convert(rgb.Image().At(1, 0)).(color.RGBA); got != (color.RGBA{1, 2, 3, 255}) {
		t.Errorf("RGB24 pixel = %v", got)
	}
	grey := &Frame{Width: 2, Height: 1, Format: FormatGrey, Stride: 2, Data: []byte{7, 9}}
	fillLuma(grey)
	if g, ok := grey.Image().(*image.Gray); !ok || g.GrayAt(1, 0).Y != 9 {
		t.Errorf("GREY image %T", grey.Image())
	}
	// Inconsistent native data falls back to the luma plane.
	broken := &Frame{Width: 2, Height: 1, Format: FormatYUYV, Stride: 4, Data: []byte{1}, Luma: []byte{5, 6}}
	if g, ok := broken.Image().(*image.Gray); !ok || g.GrayAt(1, 0).Y != 6 {
		t.Errorf("broken frame image %T", broken.Image())
	}
	if b := (&Frame{}).Image().Bounds(); !b.Empty() {
		t.Errorf("empty frame image bounds %v", b)
	}
}

func TestThumbSize(t *testing.T) {
	for _, tc := range []struct{ w, h, max, tw, th int }{
		{640, 480, 320, 320, 240},
		{640, 480, 640, 640, 480},
		{640, 480, 1000, 640, 480},
		{480, 640, 160, 120, 160},
		{1920, 1080, 320, 320, 180},
		{1000, 3, 100, 100, 1},
	} {
		tw, th := thumbSize(tc.w, tc.h, tc.max)
		if tw != tc.tw || th != tc.th {
			t.Errorf("thumbSize(%d, %d, %d) = %dx%d, want %dx%d", tc.w, tc.h, tc.max, tw, th, tc.tw, tc.th)
		}
	}
}

func TestScaleBoxAverages(t *testing.T) {
	f := &Frame{Width: 4, Height: 2, Format: FormatGrey, Stride: 4, Data: []byte{
		0, 10, 100, 200,
		20, 30, 50, 250,
	}}
	fillLuma(f)
	g := scaleBox(f, image.Rect(0, 0, 4, 2), 2, 1).(*image.Gray)
	if want := []byte{15, 150}; !bytes.Equal(g.Pix, want) {
		t.Errorf("box filter %v, want %v", g.Pix, want)
	}
}

func mustDecodeJPEG(t *testing.T, b []byte) image.Image {
	t.Helper()
	img, err := jpeg.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("thumbnail does not decode: %v", err)
	}
	return img
}

func TestEncodeThumbnailScalesDown(t *testing.T) {
	// Left half dark, right half bright, reddish chroma.
	f := yuyvFrame(640, 480, 0, func(x, y int) byte {
		if x < 320 {
			return 40
		}
		return 220
	}, 90, 200)
	var buf bytes.Buffer
	if err := EncodeThumbnail(&buf, f, 160, 80); err != nil {
		t.Fatal(err)
	}
	img := mustDecodeJPEG(t, buf.Bytes())
	if img.Bounds() != image.Rect(0, 0, 160, 120) {
		t.Fatalf("thumbnail %v, want 160x120", img.Bounds())
	}
	yc := color.YCbCrModel.Convert(img.At(20, 60)).(color.YCbCr)
	if d := int(yc.Y) - 40; d < -6 || d > 6 {
		t.Errorf("dark half luma %d, want about 40", yc.Y)
	}
	yc = color.YCbCrModel.Convert(img.At(140, 60)).(color.YCbCr)
	if d := int(yc.Y) - 220; d < -6 || d > 6 {
		t.Errorf("bright half luma %d, want about 220", yc.Y)
	}
	if int(yc.Cr)-200 < -10 || int(yc.Cr)-200 > 10 || int(yc.Cb)-90 < -10 || int(yc.Cb)-90 > 10 {
		t.Errorf("chroma %d/%d, want about 90/200", yc.Cb, yc.Cr)
	}
}

func TestEncodeThumbnailNoUpscaleAndPortrait(t *testing.T) {
	rgb := &Frame{Width: 100, Height: 50, Format: FormatRGB24, Stride: 300, Data: make([]byte, 300*50)}
	for i := 0; i < len(rgb.Data); i += 3 {
		rgb.Data[i] = 230 // red
	}
	fillLuma(rgb)
	var buf bytes.Buffer
	if err := EncodeThumbnail(&buf, rgb, 160, 90); err != nil {
		t.Fatal(err)
	}
	img := mustDecodeJPEG(t, buf.Bytes())
	if img.Bounds() != image.Rect(0, 0, 100, 50) {
		t.Fatalf("small frame thumbnail %v, want its own 100x50", img.Bounds())
	}
	r, g, b, _ := img.At(50, 25).RGBA()
	if r>>8 < 200 || g>>8 > 30 || b>>8 > 30 {
		t.Errorf("red frame thumbnail pixel %d,%d,%d", r>>8, g>>8, b>>8)
	}

	grey := &Frame{Width: 48, Height: 100, Format: FormatGrey, Stride: 48, Data: bytes.Repeat([]byte{77}, 4800)}
	fillLuma(grey)
	buf.Reset()
	if err := EncodeThumbnail(&buf, grey, 50, 75); err != nil {
		t.Fatal(err)
	}
	img = mustDecodeJPEG(t, buf.Bytes())
	if img.Bounds() != image.Rect(0, 0, 24, 50) {
		t.Fatalf("portrait thumbnail %v, want 24x50", img.Bounds())
	}
	if _, ok := img.(*image.Gray); !ok {
		t.Errorf("GREY thumbnail decodes as %T, want *image.Gray", img)
	}
}

func TestEncodeThumbnailRejectsBadInput(t *testing.T) {
	good := yuyvFrame(8, 8, 0, func(x, y int) byte { return 1 }, 128, 128)
	for name, tc := range map[string]struct {
		f            *Frame
		max, quality int
		want         string
	}{
		"max side 0":   {good, 0, 75, "max side"},
		"quality 0":    {good, 8, 0, "quality"},
		"quality 101":  {good, 8, 101, "quality"},
		"empty frame":  {&Frame{}, 8, 75, "frame size"},
		"short data":   {&Frame{Width: 8, Height: 8, Format: FormatYUYV, Stride: 16, Data: make([]byte, 100), Luma: make([]byte, 64)}, 8, 75, "bytes"},
		"short luma":   {&Frame{Width: 8, Height: 8, Format: FormatRGB24, Stride: 24, Data: make([]byte, 192), Luma: make([]byte, 10)}, 8, 75, "luma"},
		"small stride": {&Frame{Width: 8, Height: 8, Format: FormatGrey, Stride: 4, Data: make([]byte, 64), Luma: make([]byte, 64)}, 8, 75, "stride"},
		"odd YUYV":     {&Frame{Width: 3, Height: 1, Format: FormatYUYV, Stride: 6, Data: make([]byte, 6), Luma: make([]byte, 3)}, 8, 75, "odd"},
		"H264":         {&Frame{Width: 8, Height: 8, Format: 0x34363248, Stride: 8, Data: make([]byte, 64), Luma: make([]byte, 64)}, 8, 75, "H264"},
		"garbage MJPG": {&Frame{Width: 8, Height: 8, Format: FormatMJPEG, Data: make([]byte, 64), Luma: make([]byte, 64)}, 8, 75, "bad MJPEG frame: no SOI"},
		"empty MJPG":   {&Frame{Width: 8, Height: 8, Format: FormatMJPEG, Luma: make([]byte, 64)}, 8, 75, "no data"},
		"short NV12":   {&Frame{Width: 8, Height: 8, Format: FormatNV12, Stride: 8, Data: make([]byte, 64+31), Luma: make([]byte, 64)}, 8, 75, "95 bytes, want 96"},
	} {
		var buf bytes.Buffer
		err := EncodeThumbnail(&buf, tc.f, tc.max, tc.quality)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "capture: ") {
			t.Errorf("%s: error %v, want one mentioning %q", name, err, tc.want)
		}
	}
	var buf bytes.Buffer
	if err := EncodeThumbnail(&buf, &Frame{Width: 8, Height: 8, Format: 0x34363248, Stride: 8, Data: make([]byte, 64), Luma: make([]byte, 64)}, 8, 75); !errors.Is(err, ErrUnsupportedFormat) {
		t.Errorf("unknown format error %v, want ErrUnsupportedFormat", err)
	}
}

// planarFrame lays a YCbCr 4:2:0 image out as an NV12 or YU12 frame with pad
// bytes (0xEE) at the end of every line.
func planarFrame(src *image.YCbCr, p PixelFormat, pad int) *Frame {
	w, h := src.Rect.Dx(), src.Rect.Dy()
	cw, ch := (w+1)/2, (h+1)/2
	stride := w + pad
	if p == FormatNV12 {
		stride = max(stride, 2*cw)
	} else if stride%2 != 0 {
		stride++ // YU12 chroma lines are stride/2
	}
	var data []byte
	line := func(b []byte, n int) {
		data = append(data, b...)
		data = append(data, bytes.Repeat([]byte{0xEE}, n-len(b))...)
	}
	for y := range h {
		line(src.Y[y*src.YStride:y*src.YStride+w], stride)
	}
	if p == FormatNV12 {
		for y := range ch {
			uv := make([]byte, 0, 2*cw)
			for x := range cw {
				uv = append(uv, src.Cb[y*src.CStride+x], src.Cr[y*src.CStride+x])
			}
			line(uv, stride)
		}
	} else {
		for _, plane := range [][]byte{src.Cb, src.Cr} {
			for y := range ch {
				line(plane[y*src.CStride:y*src.CStride+cw], stride/2)
			}
		}
	}
	f := &Frame{Width: w, Height: h, Format: p, Data: data, Stride: stride}
	fillLuma(f)
	return f
}

func testYCbCr(w, h int) *image.YCbCr {
	img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	for y := range h {
		for x := range w {
			img.Y[y*img.YStride+x] = byte(16 + 7*x + 3*y)
		}
	}
	for i := range img.Cb {
		img.Cb[i], img.Cr[i] = byte(60+i), byte(200-i)
	}
	return img
}

func TestPlanarFormats(t *testing.T) {
	for _, p := range []PixelFormat{FormatNV12, FormatYU12} {
		for _, size := range [][2]int{{4, 2}, {5, 3}, {6, 4}} {
			src := testYCbCr(size[0], size[1])
			f := planarFrame(src, p, 3)
			if err := f.validate(); err != nil {
				t.Fatalf("%v %v: %v", p, size, err)
			}
			for y := range size[1] {
				for x := range size[0] {
					if got, want := f.Luma[y*size[0]+x], src.Y[y*src.YStride+x]; got != want {
						t.Fatalf("%v %v: luma (%d,%d) = %d, want %d", p, size, x, y, got, want)
					}
				}
			}
			img, ok := f.Image().(*image.YCbCr)
			if !ok || img.SubsampleRatio != image.YCbCrSubsampleRatio420 || img.Rect != src.Rect {
				t.Fatalf("%v %v: image %T", p, size, f.Image())
			}
			for y := range size[1] {
				for x := range size[0] {
					if got, want := img.YCbCrAt(x, y), src.YCbCrAt(x, y); got != want {
						t.Errorf("%v %v: pixel (%d,%d) = %v, want %v", p, size, x, y, got, want)
					}
				}
			}
			// The last line may stop after its pixels, but not before.
			short := *f
			n := len(f.Data)
			for f.Data[n-1] == 0xEE {
				n--
			}
			short.Data = f.Data[:n]
			if err := short.validate(); err != nil {
				t.Errorf("%v %v: frame without the last line's padding: %v", p, size, err)
			}
			short.Data = short.Data[:len(short.Data)-1]
			if short.validate() == nil {
				t.Errorf("%v %v: a frame a byte short passed validation", p, size)
			}
		}
	}
}

func TestEncodeThumbnailPlanarAndMJPEG(t *testing.T) {
	src := image.NewYCbCr(image.Rect(0, 0, 64, 48), image.YCbCrSubsampleRatio420)
	for y := range 48 {
		for x := range 64 {
			v := byte(40)
			if x >= 32 {
				v = 220
			}
			src.Y[y*src.YStride+x] = v
		}
	}
	for i := range src.Cb {
		src.Cb[i], src.Cr[i] = 90, 200
	}
	var jpg bytes.Buffer
	if err := jpeg.Encode(&jpg, src, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	mj := &Frame{Width: 64, Height: 48, Format: FormatMJPEG}
	if err := fillFromJPEG(mj, jpg.Bytes(), 64, 48); err != nil {
		t.Fatal(err)
	}
	for _, f := range []*Frame{planarFrame(src, FormatNV12, 0), planarFrame(src, FormatYU12, 8), mj} {
		var buf bytes.Buffer
		if err := EncodeThumbnail(&buf, f, 32, 90); err != nil {
			t.Fatalf("%v: %v", f.Format, err)
		}
		img := mustDecodeJPEG(t, buf.Bytes())
		if img.Bounds() != image.Rect(0, 0, 32, 24) {
			t.Fatalf("%v: thumbnail %v, want 32x24", f.Format, img.Bounds())
		}
		for _, tc := range []struct{ x, want int }{{4, 40}, {28, 220}} {
			yc := color.YCbCrModel.Convert(img.At(tc.x, 12)).(color.YCbCr)
			if d := int(yc.Y) - tc.want; d < -6 || d > 6 {
				t.Errorf("%v: luma at x=%d is %d, want about %d", f.Format, tc.x, yc.Y, tc.want)
			}
			if int(yc.Cr)-200 < -10 || int(yc.Cr)-200 > 10 || int(yc.Cb)-90 < -10 || int(yc.Cb)-90 > 10 {
				t.Errorf("%v: chroma %d/%d, want about 90/200", f.Format, yc.Cb, yc.Cr)
			}
		}
	}
}
