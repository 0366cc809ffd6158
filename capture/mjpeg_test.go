package capture

import (
	"bytes"
	"errors"
	"image"
	"image/jpeg"
	"strings"
	"testing"
)

// encodeJPEG encodes a w x h YCbCr 4:2:0 test pattern with image/jpeg.
func encodeJPEG(t *testing.T, w, h int) ([]byte, *image.YCbCr) {
	t.Helper()
	img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	for y := range h {
		for x := range w {
			img.Y[y*img.YStride+x] = byte(40 + x*3 + y*2)
		}
	}
	for i := range img.Cb {
		img.Cb[i], img.Cr[i] = byte(90+i%40), byte(160-i%30)
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), img
}

// dhtSegment returns the (single) DHT segment of a JPEG image/jpeg wrote.
func dhtSegment(t *testing.T, b []byte) []byte {
	t.Helper()
	for i := 2; i+4 <= len(b); {
		m, n := b[i+1], int(b[i+2])<<8|int(b[i+3])
		if m == 0xc4 {
			return b[i : i+2+n]
		}
		if m == 0xda {
			break
		}
		i += 2 + n
	}
	t.Fatal("no DHT segment")
	return nil
}

// TestStdDHTIsAnnexK checks the inserted tables byte for byte against the
// ones image/jpeg's encoder writes, which are ITU-T T.81 Annex K.3's too.
func TestStdDHTIsAnnexK(t *testing.T) {
	b, _ := encodeJPEG(t, 16, 16)
	if got := dhtSegment(t, b); string(got) != stdDHT {
		t.Errorf("stdDHT differs from image/jpeg's standard tables:\n got % x\nwant % x", []byte(stdDHT), got)
	}
	if len(stdDHT) != 2+0x1a2 {
		t.Errorf("stdDHT is %d bytes, its length field says %d", len(stdDHT), 2+0x1a2)
	}
}

func TestJPEGWithHuffman(t *testing.T) {
	full, _ := encodeJPEG(t, 32, 24)
	stripped := stripDHTSegments(full)
	if len(stripped) != len(full)-len(stdDHT) {
		t.Fatalf("stripping removed %d bytes", len(full)-len(stripped))
	}
	if _, err := jpeg.Decode(bytes.NewReader(stripped)); err == nil {
		t.Fatal("image/jpeg decoded a JPEG without Huffman tables: the test proves nothing")
	}
	fixed, w, h, err := jpegWithHuffman(nil, stripped)
	if err != nil || w != 32 || h != 24 {
		t.Fatalf("jpegWithHuffman = %dx%d, %v", w, h, err)
	}
	if !bytes.Equal(fixed, full) {
		t.Error("the fixed JPEG differs from the original (tables inserted in the wrong place?)")
	}
	want, err := jpeg.Decode(bytes.NewReader(full))
	if err != nil {
		t.Fatal(err)
	}
	got, err := jpeg.Decode(bytes.NewReader(fixed))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.(*image.YCbCr).Y, want.(*image.YCbCr).Y) {
		t.Error("the fixed JPEG decodes to other pixels")
	}

	// A JPEG with its tables is copied as it is.
	same, _, _, err := jpegWithHuffman([]byte("keep"), full)
	if err != nil || !bytes.Equal(same, append([]byte("keep"), full...)) {
		t.Errorf("complete JPEG changed: %v", err)
	}
	// Steady state: no allocation once the buffer has grown.
	buf := make([]byte, 0, len(full))
	if n := testing.AllocsPerRun(50, func() {
		buf, _, _, _ = jpegWithHuffman(buf[:0], stripped)
	}); n != 0 {
		t.Errorf("jpegWithHuffman: %v allocations", n)
	}
}

// stripDHTSegments removes every DHT segment before the first SOS.
func stripDHTSegments(b []byte) []byte {
	out := append([]byte(nil), b[:2]...)
	for i := 2; i+4 <= len(b); {
		m, n := b[i+1], int(b[i+2])<<8|int(b[i+3])
		if m == 0xda {
			return append(out, b[i:]...)
		}
		if m != 0xc4 {
			out = append(out, b[i:i+2+n]...)
		}
		i += 2 + n
	}
	return out
}

func TestScanJPEGRejectsMalformed(t *testing.T) {
	full, _ := encodeJPEG(t, 16, 16)
	sos := bytes.Index(full, []byte{0xff, 0xda})
	sof := bytes.Index(full, []byte{0xff, 0xc0})
	cases := map[string][]byte{
		"empty":          nil,
		"no SOI":         full[2:],
		"only SOI":       full[:2],
		"cut in segment": full[:sof+6],
		"EOI before SOS": append(append([]byte{}, full[:sof]...), 0xff, 0xd9),
		"SOS before SOF": append([]byte{0xff, 0xd8}, full[sos:]...),
		"bad length":     append(append([]byte{}, full[:sof]...), 0xff, 0xc0, 0x00, 0x01),
		"not a marker":   append(append([]byte{}, full[:sof]...), 0x12, 0x34),
	}
	for name, b := range cases {
		if _, _, _, err := jpegWithHuffman(nil, b); !errors.Is(err, errBadJPEG) {
			t.Errorf("%s: %v, want errBadJPEG", name, err)
		}
	}
	// Fill bytes before a marker are allowed.
	filled := append(append(append([]byte{}, full[:sof]...), 0xff, 0xff), full[sof:]...)
	if _, w, h, err := jpegWithHuffman(nil, filled); err != nil || w != 16 || h != 16 {
		t.Errorf("fill bytes: %dx%d %v", w, h, err)
	}
}

func TestFillFromJPEG(t *testing.T) {
	full, src := encodeJPEG(t, 32, 24)
	var f Frame
	if err := fillFromJPEG(&f, full, 32, 24); err != nil {
		t.Fatal(err)
	}
	if f.Format != FormatMJPEG || f.Width != 32 || f.Height != 24 || f.Stride != 0 || !bytes.Equal(f.Data, full) || len(f.Luma) != 32*24 {
		t.Fatalf("frame %v %dx%d stride %d, %d data bytes, %d luma", f.Format, f.Width, f.Height, f.Stride, len(f.Data), len(f.Luma))
	}
	for i, v := range f.Luma {
		if d := int(v) - int(src.Y[i]); d < -10 || d > 10 {
			t.Fatalf("luma[%d] = %d, source %d", i, v, src.Y[i])
		}
	}
	before := append([]byte(nil), f.Data...)
	if err := fillFromJPEG(&f, full, 64, 48); !errors.Is(err, errBadJPEG) || !strings.Contains(err.Error(), "JPEG is 32x24, driver set 64x48") {
		t.Errorf("wrong size: %v", err)
	}
	if err := fillFromJPEG(&f, full[:len(full)/2], 32, 24); !errors.Is(err, errBadJPEG) {
		t.Errorf("truncated: %v", err)
	}
	if !bytes.Equal(f.Data, before) {
		t.Error("a rejected JPEG changed the frame")
	}
	// A corrupt header claiming a huge image is refused before decoding.
	huge := append([]byte(nil), full...)
	sof := bytes.Index(huge, []byte{0xff, 0xc0})
	huge[sof+5], huge[sof+6], huge[sof+7], huge[sof+8] = 0xff, 0xff, 0xff, 0xff
	if err := fillFromJPEG(&f, huge, 32, 24); !errors.Is(err, errBadJPEG) {
		t.Errorf("huge header: %v", err)
	}

	// Greyscale JPEG.
	g := image.NewGray(image.Rect(0, 0, 8, 8))
	for i := range g.Pix {
		g.Pix[i] = 77
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, g, nil); err != nil {
		t.Fatal(err)
	}
	if err := fillFromJPEG(&f, b.Bytes(), 8, 8); err != nil || !bytes.Equal(f.Luma, bytes.Repeat([]byte{77}, 64)) {
		t.Errorf("grey JPEG: %v, luma %v", err, f.Luma)
	}
	if img := f.Image(); img.Bounds().Dx() != 8 {
		t.Errorf("grey MJPEG image %T %v", img, img.Bounds())
	} else if _, ok := img.(*image.Gray); !ok {
		t.Errorf("grey MJPEG image is %T", img)
	}
}
