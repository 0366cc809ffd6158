package capture

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/image/bmp"
)

// writeImage writes a w x h image of colour c, with a dark square at the top
// left corner, to dir/name in the format its extension names.
func writeImage(t *testing.T, dir, name string, w, h int, c color.RGBA) {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.SetRGBA(x, y, c)
			if x < 4 && y < 4 {
				img.SetRGBA(x, y, color.RGBA{0, 0, 0, 255})
			}
		}
	}
	var buf bytes.Buffer
	var err error
	switch filepath.Ext(name) {
	case ".png", ".PNG":
		err = png.Encode(&buf, img)
	case ".jpg", ".jpeg", ".JPG":
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 95})
	case ".bmp":
		err = bmp.Encode(&buf, img)
	default:
		t.Fatalf("no encoder for %s", name)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// centre is the RGB24 pixel at the frame's centre.
func centre(f *Frame) color.RGBA {
	o := (f.Height/2)*f.Stride + 3*(f.Width/2)
	return color.RGBA{f.Data[o], f.Data[o+1], f.Data[o+2], 255}
}

func near(a, b color.RGBA, tol int) bool {
	return abs(int(a.R)-int(b.R)) <= tol && abs(int(a.G)-int(b.G)) <= tol && abs(int(a.B)-int(b.B)) <= tol
}

var (
	red   = color.RGBA{200, 30, 40, 255}
	green = color.RGBA{20, 180, 60, 255}
	blue  = color.RGBA{30, 50, 210, 255}
)

// fixtureDir holds b.jpg (green), a.png (red), c.bmp (blue), a text file and
// a corrupt PNG that sorts between them (b2.png).
func fixtureDir(t *testing.T) string {
	dir := t.TempDir()
	writeImage(t, dir, "b.jpg", 40, 30, green)
	writeImage(t, dir, "a.png", 40, 30, red)
	writeImage(t, dir, "c.bmp", 40, 30, blue)
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not an image"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "b2.png"), []byte("\x89PNG\r\n\x1a\ngarbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub.png"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func quietLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, nil))
}

func TestDirPlaysInNameOrderAndSkipsCorrupt(t *testing.T) {
	dir := fixtureDir(t)
	var logs bytes.Buffer
	d, err := OpenDir(DirConfig{Dir: dir, Logger: quietLogger(&logs)}, fixedClock{epoch})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(d.Files(), ","), "a.png,b.jpg,b2.png,c.bmp"; got != want {
		t.Fatalf("files %s, want %s", got, want)
	}
	ctx := context.Background()
	var f Frame
	for i, want := range []color.RGBA{red, green, blue} {
		if err := d.Next(ctx, &f); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if f.Format != FormatRGB24 || f.Width != 40 || f.Height != 30 || f.Stride != 120 || len(f.Data) != 3600 || len(f.Luma) != 1200 {
			t.Fatalf("frame %d: %v %dx%d stride %d data %d luma %d", i, f.Format, f.Width, f.Height, f.Stride, len(f.Data), len(f.Luma))
		}
		if got := centre(&f); !near(got, want, 6) {
			t.Errorf("frame %d centre %v, want %v", i, got, want)
		}
		if f.Sequence != uint64(i) || !f.Time.Equal(epoch.Add(time.Duration(i)*100*time.Millisecond)) {
			t.Errorf("frame %d: seq %d time %v", i, f.Sequence, f.Time)
		}
		for j := range f.Luma {
			if want := rgbLuma(f.Data[3*j], f.Data[3*j+1], f.Data[3*j+2]); f.Luma[j] != want {
				t.Fatalf("frame %d luma[%d] = %d, want %d", i, j, f.Luma[j], want)
			}
		}
		if f.Luma[0] > 10 {
			t.Errorf("frame %d: dark corner luma %d", i, f.Luma[0])
		}
	}
	if err := d.Next(ctx, &f); !errors.Is(err, ErrEndOfStream) {
		t.Fatalf("after the last file: %v, want ErrEndOfStream", err)
	}
	st := d.Stats()
	if st.Frames != 3 || st.Skipped != 1 || st.LastSkip == nil || !strings.Contains(st.LastSkip.Error(), "b2.png") {
		t.Errorf("stats %+v, want 3 frames and b2.png skipped", st)
	}
	if !strings.Contains(logs.String(), "b2.png") || !strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("skip not logged: %q", logs.String())
	}
	if err := d.Next(ctx, &f); !errors.Is(err, ErrEndOfStream) {
		t.Errorf("again after the end: %v, want ErrEndOfStream", err)
	}
}

func TestDirLoop(t *testing.T) {
	dir := fixtureDir(t)
	d, err := OpenDir(DirConfig{Dir: dir, Loop: true, FPS: 5, Logger: quietLogger(io.Discard)}, fixedClock{epoch})
	if err != nil {
		t.Fatal(err)
	}
	var f Frame
	want := []color.RGBA{red, green, blue, red, green, blue, red}
	for i, c := range want {
		if err := d.Next(context.Background(), &f); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if got := centre(&f); !near(got, c, 6) || f.Sequence != uint64(i) || !f.Time.Equal(epoch.Add(time.Duration(i)*200*time.Millisecond)) {
			t.Errorf("frame %d: centre %v seq %d time %v, want %v", i, got, f.Sequence, f.Time.Sub(epoch), c)
		}
	}
	if st := d.Stats(); st.Skipped != 2 || st.Frames != 7 {
		t.Errorf("stats %+v, want the corrupt file skipped once per pass", st)
	}
}

func TestDirSkipsOtherSizeAndHugeHeader(t *testing.T) {
	dir := t.TempDir()
	writeImage(t, dir, "1.png", 40, 30, red)
	writeImage(t, dir, "2.png", 20, 30, green) // another size
	// A PNG header claiming 9000x9000: must be refused before decoding.
	ihdr := []byte("IHDR\x00\x00\x23\x28\x00\x00\x23\x28\x08\x02\x00\x00\x00")
	hdr := append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0d"), ihdr...)
	hdr = binary.BigEndian.AppendUint32(hdr, crc32.ChecksumIEEE(ihdr))
	if err := os.WriteFile(filepath.Join(dir, "3.png"), hdr, 0o644); err != nil {
		t.Fatal(err)
	}
	writeImage(t, dir, "4.PNG", 40, 30, blue)
	var logs bytes.Buffer
	d, err := OpenDir(DirConfig{Dir: dir, Logger: quietLogger(&logs)}, fixedClock{epoch})
	if err != nil {
		t.Fatal(err)
	}
	var f Frame
	var got []color.RGBA
	for {
		err := d.Next(context.Background(), &f)
		if errors.Is(err, ErrEndOfStream) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, centre(&f))
	}
	if len(got) != 2 || !near(got[0], red, 2) || !near(got[1], blue, 2) {
		t.Errorf("frames %v, want red and blue", got)
	}
	if st := d.Stats(); st.Skipped != 2 {
		t.Errorf("skipped %d, want 2 (other size, huge header)", st.Skipped)
	}
	for _, want := range []string{"2.png: size 20x30 differs from the sequence's 40x30", "size 9000x9000 outside"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log does not say %q: %s", want, logs.String())
		}
	}
}

func TestDirErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := OpenDir(DirConfig{Dir: missing}, nil); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing dir: %v, want an error naming %s", err, missing)
	}
	empty := t.TempDir()
	if err := os.WriteFile(filepath.Join(empty, "readme.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDir(DirConfig{Dir: empty}, nil); err == nil || !strings.Contains(err.Error(), empty) {
		t.Errorf("dir without images: %v, want an error naming %s", err, empty)
	}
	if _, err := OpenDir(DirConfig{}, nil); err == nil {
		t.Error("empty Dir accepted")
	}
	if _, err := OpenDir(DirConfig{Dir: empty, FPS: -3}, nil); err == nil {
		t.Error("negative FPS accepted")
	}

	bad := t.TempDir()
	for _, n := range []string{"a.jpg", "b.bmp"} {
		if err := os.WriteFile(filepath.Join(bad, n), []byte("garbage"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, loop := range []bool{false, true} {
		d, err := OpenDir(DirConfig{Dir: bad, Loop: loop, Logger: quietLogger(io.Discard)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		var f Frame
		err = d.Next(context.Background(), &f)
		if err == nil || errors.Is(err, ErrEndOfStream) || !strings.Contains(err.Error(), bad) {
			t.Errorf("loop %v, only corrupt files: %v, want an error naming the directory", loop, err)
		}
		if d.Stats().Skipped != 2 {
			t.Errorf("loop %v: skipped %d, want 2", loop, d.Stats().Skipped)
		}
	}
}

func TestDirCloseAndCancel(t *testing.T) {
	dir := fixtureDir(t)
	d, err := OpenDir(DirConfig{Dir: dir, Logger: quietLogger(io.Discard)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var f Frame
	if err := d.Next(ctx, &f); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Next: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Next(context.Background(), &f); !errors.Is(err, ErrClosed) {
		t.Errorf("Next after Close: %v, want ErrClosed", err)
	}
}

func TestToRGB24Conversions(t *testing.T) {
	r := image.Rect(2, 3, 6, 5) // non-zero origin
	gray := image.NewGray(r)
	gray.SetGray(3, 4, color.Gray{Y: 99})
	nrgba := image.NewNRGBA(r)
	nrgba.SetNRGBA(3, 4, color.NRGBA{10, 20, 30, 255})
	ycc := image.NewYCbCr(r, image.YCbCrSubsampleRatio420)
	for i := range ycc.Y {
		ycc.Y[i] = 120
	}
	for i := range ycc.Cb {
		ycc.Cb[i], ycc.Cr[i] = 128, 128
	}
	pal := image.NewPaletted(r, color.Palette{color.Black, color.RGBA{1, 2, 3, 255}})
	pal.SetColorIndex(3, 4, 1)
	for _, tc := range []struct {
		img  image.Image
		want color.RGBA
	}{
		{gray, color.RGBA{99, 99, 99, 255}},
		{nrgba, color.RGBA{10, 20, 30, 255}},
		{ycc, color.RGBA{120, 120, 120, 255}},
		{pal, color.RGBA{1, 2, 3, 255}},
	} {
		var f Frame
		toRGB24(&f, tc.img)
		if f.Width != 4 || f.Height != 2 {
			t.Fatalf("%T: size %dx%d", tc.img, f.Width, f.Height)
		}
		o := 1*f.Stride + 3*1 // (3,4) in image coordinates
		if got := (color.RGBA{f.Data[o], f.Data[o+1], f.Data[o+2], 255}); got != tc.want {
			t.Errorf("%T: pixel %v, want %v", tc.img, got, tc.want)
		}
	}
}
