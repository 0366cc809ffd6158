package capture

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"testing"
)

func TestThumbnailCrop(t *testing.T) {
	for _, tc := range []struct {
		name string
		box  image.Rectangle
		w, h int
		want image.Rectangle
	}{
		{"empty box: whole frame", image.Rectangle{}, 640, 480, image.Rect(0, 0, 640, 480)},
		{"box outside: whole frame", image.Rect(700, 10, 800, 50), 640, 480, image.Rect(0, 0, 640, 480)},
		{"grown by half the longer side", image.Rect(300, 200, 380, 240), 640, 480, image.Rect(260, 160, 420, 280)},
		{"small box: at least a quarter of the shorter side", image.Rect(300, 200, 310, 210), 640, 480, image.Rect(245, 145, 365, 265)},
		{"at the left edge: shifted inside", image.Rect(0, 200, 40, 240), 640, 480, image.Rect(0, 160, 120, 280)},
		{"at the bottom right: shifted inside", image.Rect(600, 440, 640, 480), 640, 480, image.Rect(520, 360, 640, 480)},
		{"bigger than the frame: clipped", image.Rect(10, 10, 630, 470), 640, 480, image.Rect(0, 0, 640, 480)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ThumbnailCrop(tc.box, tc.w, tc.h)
			if got != tc.want {
				t.Fatalf("ThumbnailCrop(%v, %d, %d) = %v, want %v", tc.box, tc.w, tc.h, got, tc.want)
			}
			if !got.In(image.Rect(0, 0, tc.w, tc.h)) || (!tc.box.Empty() && tc.box.In(image.Rect(0, 0, tc.w, tc.h)) && !tc.box.In(got)) {
				t.Fatalf("%v does not hold the box %v inside the frame", got, tc.box)
			}
		})
	}
}

// TestEncodeThumbnailRect: a crop shows the region, in every format. The
// frame is dark with a bright square at (40,24)-(56,40); cropped to
// (32,16)-(64,48) the square fills the middle half of the thumbnail.
func TestEncodeThumbnailRect(t *testing.T) {
	const w, h = 96, 64
	sq := image.Rect(40, 24, 56, 40)
	src := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	grey := image.NewGray(src.Rect)
	rgba := image.NewRGBA(src.Rect)
	for y := range h {
		for x := range w {
			v := byte(30)
			if (image.Point{x, y}).In(sq) {
				v = 220
			}
			src.Y[y*src.YStride+x] = v
			grey.Pix[y*grey.Stride+x] = v
			rgba.Set(x, y, color.RGBA{v, v, v, 255})
		}
	}
	for i := range src.Cb {
		src.Cb[i], src.Cr[i] = 128, 128
	}
	var jpg bytes.Buffer
	if err := jpeg.Encode(&jpg, src, &jpeg.Options{Quality: 98}); err != nil {
		t.Fatal(err)
	}
	mj := &Frame{Width: w, Height: h, Format: FormatMJPEG}
	if err := fillFromJPEG(mj, jpg.Bytes(), w, h); err != nil {
		t.Fatal(err)
	}
	yuyv := &Frame{Width: w, Height: h, Format: FormatYUYV, Stride: 2*w + 6, Data: make([]byte, (2*w+6)*h)}
	gf := &Frame{Width: w, Height: h, Format: FormatGrey, Stride: w + 3, Data: make([]byte, (w+3)*h)}
	rf := &Frame{Width: w, Height: h, Format: FormatRGB24, Stride: 3 * w, Data: make([]byte, 3*w*h)}
	for y := range h {
		for x := range w {
			v := grey.Pix[y*grey.Stride+x]
			yuyv.Data[y*yuyv.Stride+2*x] = v
			yuyv.Data[y*yuyv.Stride+2*x+1] = 128
			gf.Data[y*gf.Stride+x] = v
			copy(rf.Data[y*rf.Stride+3*x:], []byte{v, v, v})
		}
	}
	for _, f := range []*Frame{yuyv, gf, rf} {
		fillLuma(f)
	}
	crop := image.Rect(32, 16, 64, 48)
	for _, f := range []*Frame{yuyv, gf, rf, planarFrame(src, FormatNV12, 0), planarFrame(src, FormatYU12, 8), mj} {
		var buf bytes.Buffer
		if err := EncodeThumbnailRect(&buf, f, crop, 16, 95); err != nil {
			t.Fatalf("%v: %v", f.Format, err)
		}
		img := mustDecodeJPEG(t, buf.Bytes())
		if img.Bounds() != image.Rect(0, 0, 16, 16) {
			t.Fatalf("%v: thumbnail %v, want 16x16", f.Format, img.Bounds())
		}
		lum := func(x, y int) int {
			c := color.GrayModel.Convert(img.At(x, y)).(color.Gray)
			return int(c.Y)
		}
		if v := lum(8, 8); v < 190 {
			t.Errorf("%v: centre of the crop is %d, want the bright square", f.Format, v)
		}
		if v := lum(1, 1); v > 60 {
			t.Errorf("%v: corner of the crop is %d, want the dark frame", f.Format, v)
		}
	}
	var buf bytes.Buffer
	if err := EncodeThumbnailRect(&buf, gf, image.Rect(200, 200, 300, 300), 16, 90); err == nil {
		t.Fatal("a region outside the frame was encoded")
	}
}
