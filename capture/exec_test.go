package capture

import (
	"bytes"
	"image"
	"image/jpeg"
	"slices"
	"strings"
	"testing"
)

// TestJPEGScanner: fed a JPEG a byte at a time, and then with the next
// frame behind it, the scanner finds its end exactly, past a JPEG embedded
// in an APP1 segment and fill bytes before a marker; broken streams are
// errors.
func TestJPEGScanner(t *testing.T) {
	enc := func(w, h int) []byte {
		var b bytes.Buffer
		if err := jpeg.Encode(&b, image.NewGray(image.Rect(0, 0, w, h)), nil); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	main, thumb := enc(40, 30), enc(8, 8)
	app1 := append([]byte{0xff, 0xe1, byte((len(thumb) + 2) >> 8), byte(len(thumb) + 2)}, thumb...)
	frame := append(append(append([]byte{}, main[:2]...), app1...), main[2:]...)
	frame = append(frame[:len(frame)-2:len(frame)-2], 0xff, 0xff, 0xd9) // a fill byte before EOI
	var s jpegScanner
	for n := 1; n <= len(frame); n++ {
		end, done, err := s.next(frame[:n])
		if err != nil {
			t.Fatalf("at %d bytes: %v", n, err)
		}
		if done != (n == len(frame)) || done && end != len(frame) {
			t.Fatalf("at %d of %d bytes: end %d, done %v", n, len(frame), end, done)
		}
	}
	s = jpegScanner{}
	two := append(append([]byte{}, frame...), main...)
	if end, done, err := s.next(two); err != nil || !done || end != len(frame) {
		t.Fatalf("two frames: end %d done %v err %v, want %d", end, done, err, len(frame))
	}
	for _, bad := range [][]byte{
		{0x00, 0x01},                   // no SOI
		{0xff, 0xd8, 0x12, 0x34},       // no marker after SOI
		{0xff, 0xd8, 0xff, 0xe0, 0, 1}, // segment length 1
		{0xff, 0xd8, 0xff, 0xd8},       // SOI inside a frame
	} {
		s = jpegScanner{}
		if _, _, err := s.next(bad); err == nil {
			t.Errorf("% x: no error", bad)
		}
	}
}

func TestParseCommand(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
		err  string
	}{
		{"rpicam-vid -t 0 -n --codec mjpeg -o -", []string{"rpicam-vid", "-t", "0", "-n", "--codec", "mjpeg", "-o", "-"}, ""},
		{"  ffmpeg\t-i  \"/media/my clips/a b.mp4\" -f mjpeg -", []string{"ffmpeg", "-i", "/media/my clips/a b.mp4", "-f", "mjpeg", "-"}, ""},
		{`sh -c "rpicam-vid -o - | cat"`, []string{"sh", "-c", "rpicam-vid -o - | cat"}, ""},
		{`a "b\"c"`, []string{"a", `b"c`}, ""},
		{"", nil, "empty"},
		{"rpicam-vid -o - | cat", nil, "without a shell"},
		{"cam > out", nil, "without a shell"},
		{"echo $HOME", nil, "without a shell"},
		{`a "b`, nil, "unterminated quote"},
		{`a "b"c`, nil, "must end at a space"},
		{`a b"c"`, nil, "without a shell"},
	} {
		got, err := ParseCommand(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: %q, %v; want an error with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%q: %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}
