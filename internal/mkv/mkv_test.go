package mkv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// jpegs makes n distinct 64x48 JPEG frames (a bar moving across).
func jpegs(t *testing.T, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for i := range n {
		img := image.NewGray(image.Rect(0, 0, 64, 48))
		for y := range 48 {
			for x := range 64 {
				v := uint8(40 + x)
				if x/4 == i%16 {
					v = 250
				}
				img.SetGray(x, y, color.Gray{Y: v})
			}
		}
		var b bytes.Buffer
		if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 80}); err != nil {
			t.Fatal(err)
		}
		out = append(out, b.Bytes())
	}
	return out
}

// clip is 25 frames at uneven times over 9 s: two clusters.
func clip(t *testing.T) ([]Frame, [][]byte) {
	t.Helper()
	data := jpegs(t, 25)
	frames := make([]Frame, len(data))
	at := time.Duration(0)
	for i, d := range data {
		frames[i] = Frame{At: at, Size: len(d)}
		at += time.Duration(300+40*(i%5)) * time.Millisecond
	}
	return frames, data
}

func write(t *testing.T, frames []Frame, data [][]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	err := Write(&b, Video{Width: 64, Height: 48, Title: "evt-1"}, frames, func(i int, w io.Writer) error {
		_, err := w.Write(data[i])
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed (scripts/ensure-test-deps.sh installs ffmpeg)", name)
		}
		t.Skipf("%s not installed: apt-get install ffmpeg to run this test", name)
	}
	return p
}

// TestFFprobeReads: ffprobe reads the file without a warning, as one MJPEG
// video stream of 64x48 with every frame at its own time.
func TestFFprobeReads(t *testing.T) {
	probe := tool(t, "ffprobe")
	frames, data := clip(t)
	path := filepath.Join(t.TempDir(), "clip.mkv")
	if err := os.WriteFile(path, write(t, frames, data), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(probe, "-v", "warning", "-of", "json", "-show_streams", "-show_packets", "-show_format", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("ffprobe: %v: %s", err, stderr.String())
	}
	var doc struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
			Width     int    `json:"width"`
			Height    int    `json:"height"`
		} `json:"streams"`
		Packets []struct {
			PTSTime string `json:"pts_time"`
			Size    string `json:"size"`
		} `json:"packets"`
		Format struct {
			FormatName string            `json:"format_name"`
			Tags       map[string]string `json:"tags"`
		} `json:"format"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Streams) != 1 || doc.Streams[0].CodecName != "mjpeg" || doc.Streams[0].Width != 64 || doc.Streams[0].Height != 48 {
		t.Fatalf("streams %+v, want one mjpeg 64x48", doc.Streams)
	}
	if !strings.Contains(doc.Format.FormatName, "matroska") || doc.Format.Tags["title"] != "evt-1" {
		t.Errorf("format %+v, want matroska titled evt-1", doc.Format)
	}
	if len(doc.Packets) != len(frames) {
		t.Fatalf("%d packets, want %d", len(doc.Packets), len(frames))
	}
	for i, p := range doc.Packets {
		at, err := strconv.ParseFloat(p.PTSTime, 64)
		if err != nil || math.Abs(at-frames[i].At.Seconds()) > 0.0005 || p.Size != strconv.Itoa(frames[i].Size) {
			t.Errorf("packet %d at %s (%s bytes), want %.3f (%d bytes)", i, p.PTSTime, p.Size, frames[i].At.Seconds(), frames[i].Size)
		}
	}
}

// TestFFmpegCopiesFramesBack: the frames ffmpeg copies out of the file are
// the JPEGs written, byte for byte, and ffmpeg decodes all of them.
func TestFFmpegCopiesFramesBack(t *testing.T) {
	ff := tool(t, "ffmpeg")
	frames, data := clip(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "clip.mkv")
	if err := os.WriteFile(path, write(t, frames, data), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(ff, "-v", "error", "-i", path, "-f", "null", "-").CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("ffmpeg decode: %v: %s", err, out)
	}
	if out, err := exec.Command(ff, "-v", "error", "-i", path, "-c", "copy", "-fps_mode", "passthrough", filepath.Join(dir, "f%03d.jpg")).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg copy: %v: %s", err, out)
	}
	for i, want := range data {
		got, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("f%03d.jpg", i+1)))
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("frame %d: %d bytes back, not the %d written", i, len(got), len(want))
		}
	}
}

func TestWriteRejects(t *testing.T) {
	ok := []Frame{{At: 0, Size: 3}, {At: time.Second, Size: 3}}
	three := func(i int, w io.Writer) error { _, err := w.Write([]byte{1, 2, 3}); return err }
	for _, tc := range []struct {
		name   string
		v      Video
		frames []Frame
		data   func(int, io.Writer) error
		want   string
	}{
		{"no size", Video{}, ok, three, "frame size 0x0"},
		{"no frames", Video{Width: 8, Height: 8}, nil, three, "no frames"},
		{"empty frame", Video{Width: 8, Height: 8}, []Frame{{Size: 0}}, three, "frame 0: 0 bytes"},
		{"huge frame", Video{Width: 8, Height: 8}, []Frame{{Size: MaxFrameBytes + 1}}, three, "frame 0"},
		{"backwards", Video{Width: 8, Height: 8}, []Frame{{At: time.Second, Size: 3}, {At: 0, Size: 3}}, three, "frame 1 at 0s"},
		{"short data", Video{Width: 8, Height: 8}, ok, func(i int, w io.Writer) error { _, err := w.Write([]byte{1}); return err }, "frame 0: 1 bytes written, 3 announced"},
		{"data error", Video{Width: 8, Height: 8}, ok, func(i int, w io.Writer) error { return fmt.Errorf("gone") }, "frame 0: gone"},
	} {
		err := Write(io.Discard, tc.v, tc.frames, tc.data)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "mkv: ") {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	many := make([]Frame, MaxFrames+1)
	if err := Write(io.Discard, Video{Width: 8, Height: 8}, many, three); err == nil {
		t.Error("more than MaxFrames accepted")
	}
}

// TestSizes checks the size vints at their boundaries (the all-ones value
// of a length means "unknown" and must not be used).
func TestSizes(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x80}},
		{126, []byte{0xFE}},
		{127, []byte{0x40, 0x7F}},
		{16382, []byte{0x7F, 0xFE}},
		{16383, []byte{0x20, 0x3F, 0xFF}},
	} {
		if got := appendSize(nil, tc.n); !bytes.Equal(got, tc.want) {
			t.Errorf("size %d: % x, want % x", tc.n, got, tc.want)
		}
	}
}
