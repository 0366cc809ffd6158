package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The fake frame command is this test binary run again with
// CAPTURE_TEST_EMITTER set: "MODE W H N" (see emit).
const emitterEnv = "CAPTURE_TEST_EMITTER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(emitterEnv); spec != "" {
		os.Exit(emit(strings.Fields(spec)))
	}
	os.Exit(m.Run())
}

// emit writes frames to stdout: a dark background with a bright 8x8
// square at x = 8*i in frame i.
//
//	yuv420 W H N    N raw I420 frames (N = 0: forever), then exit 0
//	yuyv W H N      the same in YUYV
//	mjpeg W H N     7 bytes of noise, then N JPEGs, each with an APP1
//	                segment holding a small JPEG (FF D8 ... FF D9) of its own
//	big W H N       N JPEGs of noise at quality 100
//	zeros W H N     N*W*H zero bytes
//	stderr W H N    N lines to stderr, one line of 2000 bytes, exit 3
//	hang W H N      one I420 frame, then sleeps, ignoring SIGTERM if N is 1
func emit(args []string) int {
	mode := args[0]
	w, _ := strconv.Atoi(args[1])
	h, _ := strconv.Atoi(args[2])
	n, _ := strconv.Atoi(args[3])
	out := os.Stdout
	switch mode {
	case "yuv420", "yuyv", "hang":
		if mode == "hang" && n == 1 {
			ignoreTerm()
		}
		frames := n // 0: forever
		if mode == "hang" {
			frames = 1 // N is the SIGTERM flag, not a count
		}
		for i := 0; frames == 0 || i < frames; i++ {
			out.Write(rawTestFrame(mode == "yuyv", w, h, i))
		}
		if mode == "hang" {
			time.Sleep(time.Hour)
		}
	case "mjpeg":
		out.Write([]byte("garbage"))
		thumb := jpegOf(testImage(16, 16, 0), 50)
		for i := range n {
			j := jpegOf(testImage(w, h, i), 90)
			app1 := append([]byte{0xff, 0xe1, byte((len(thumb) + 2) >> 8), byte(len(thumb) + 2)}, thumb...)
			out.Write(j[:2])
			out.Write(app1)
			out.Write(j[2:])
		}
	case "big":
		img := image.NewGray(image.Rect(0, 0, w, h))
		for i := range img.Pix {
			img.Pix[i] = byte(i*7919 ^ i>>3)
		}
		for range n {
			out.Write(jpegOf(img, 100))
		}
	case "zeros":
		out.Write(make([]byte, n*w*h))
	case "stderr":
		for i := range n {
			fmt.Fprintf(os.Stderr, "line %d\n", i)
		}
		fmt.Fprintln(os.Stderr, strings.Repeat("x", 2000))
		fmt.Fprintln(os.Stderr, "ERROR: *** no cameras available ***")
		return 3
	}
	return 0
}

func ignoreTerm() { signal.Ignore(syscall.SIGTERM) }

// testImage is the emitter's frame i as a grey image.
func testImage(w, h, i int) *image.Gray {
	img := image.NewGray(image.Rect(0, 0, w, h))
	for p := range img.Pix {
		img.Pix[p] = 30
	}
	for y := 8; y < 16 && y < h; y++ {
		for x := 8 * i; x < 8*i+8 && x < w; x++ {
			img.SetGray(x, y, color.Gray{Y: 220})
		}
	}
	return img
}

func jpegOf(img image.Image, q int) []byte {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: q}); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// rawTestFrame is testImage as I420 (or YUYV), with neutral chroma.
func rawTestFrame(yuyv bool, w, h, i int) []byte {
	img := testImage(w, h, i)
	if yuyv {
		b := make([]byte, 2*w*h)
		for p, y := range img.Pix {
			b[2*p], b[2*p+1] = y, 128
		}
		return b
	}
	b := make([]byte, w*h*3/2)
	copy(b, img.Pix)
	for p := w * h; p < len(b); p++ {
		b[p] = 128
	}
	return b
}

// openEmitter starts the fake command.
func openEmitter(t *testing.T, spec string, format PixelFormat, w, h int, log *slog.Logger) *Exec {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e, err := OpenExec(ExecConfig{Argv: []string{os.Args[0]}, Env: []string{emitterEnv + "=" + spec},
		Format: format, Width: w, Height: h, Logger: log}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// squareAt reports where the bright square is in the frame's luma plane.
func squareAt(t *testing.T, f *Frame) int {
	t.Helper()
	pix, stride, step := f.LumaPlane()
	for x := range f.Width {
		if pix[12*stride+x*step] > 128 {
			return x
		}
	}
	return -1
}

func TestExecRaw(t *testing.T) {
	for _, c := range []struct {
		mode   string
		format PixelFormat
		stride int
	}{{"yuv420", FormatYU12, 64}, {"yuyv", FormatYUYV, 128}} {
		t.Run(c.mode, func(t *testing.T) {
			e := openEmitter(t, c.mode+" 64 48 5", c.format, 64, 48, nil)
			var f Frame
			for i := range 5 {
				if err := e.Next(context.Background(), &f); err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if f.Format != c.format || f.Width != 64 || f.Height != 48 || f.Stride != c.stride || f.Sequence != uint64(i) {
					t.Fatalf("frame %d: %v %dx%d stride %d seq %d", i, f.Format, f.Width, f.Height, f.Stride, f.Sequence)
				}
				if err := f.validate(); err != nil {
					t.Fatal(err)
				}
				if x := squareAt(t, &f); x != 8*i {
					t.Errorf("frame %d: square at x=%d, want %d", i, x, 8*i)
				}
			}
			err := e.Next(context.Background(), &f)
			if !errors.Is(err, ErrExecExited) || !strings.Contains(err.Error(), "exited with status 0 after 5 frames") {
				t.Fatalf("after the last frame: %v, want the command's exit", err)
			}
			if s := e.Stats(); s.Frames != 5 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// TestExecMJPEG: leading noise is skipped and counted, and a JPEG inside
// an APP1 segment does not end the frame that holds it.
func TestExecMJPEG(t *testing.T) {
	e := openEmitter(t, "mjpeg 64 48 4", FormatMJPEG, 64, 48, nil)
	var f Frame
	for i := range 4 {
		if err := e.Next(context.Background(), &f); err != nil {
			t.Fatalf("frame %d: %v (stats %+v)", i, err, e.Stats())
		}
		if f.Format != FormatMJPEG || f.Width != 64 || len(f.Luma) != 64*48 {
			t.Fatalf("frame %d: %v %dx%d luma %d", i, f.Format, f.Width, f.Height, len(f.Luma))
		}
		if x := squareAt(t, &f); x < 8*i-1 || x > 8*i+1 {
			t.Errorf("frame %d: square at x=%d, want %d", i, x, 8*i)
		}
	}
	if err := e.Next(context.Background(), &f); !errors.Is(err, ErrExecExited) {
		t.Fatalf("after the last frame: %v", err)
	}
	if s := e.Stats(); s.Frames != 4 || s.Corrupt != 0 || s.SkippedBytes != 7 {
		t.Errorf("stats %+v, want 4 frames, none corrupt, 7 bytes skipped", s)
	}
}

// TestExecMJPEGWrongSize: frames of another size are skipped, counted and
// logged once.
func TestExecMJPEGWrongSize(t *testing.T) {
	var logs bytes.Buffer
	e := openEmitter(t, "mjpeg 64 48 3", FormatMJPEG, 32, 32, slog.New(slog.NewTextHandler(&logs, nil)))
	var f Frame
	if err := e.Next(context.Background(), &f); !errors.Is(err, ErrExecExited) {
		t.Fatalf("%v, want the exit after skipping every frame", err)
	}
	if s := e.Stats(); s.Corrupt != 3 || s.Frames != 0 {
		t.Errorf("stats %+v, want 3 corrupt", s)
	}
	if n := strings.Count(logs.String(), "skipping MJPEG frames"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, logs.String())
	}
}

func TestExecMJPEGTooLarge(t *testing.T) {
	e, err := OpenExec(ExecConfig{Argv: []string{os.Args[0]}, Env: []string{emitterEnv + "=big 256 256 2"},
		Format: FormatMJPEG, Width: 256, Height: 256, MaxJPEG: MinExecMaxJPEG, Logger: slog.New(slog.DiscardHandler)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var f Frame
	err = e.Next(context.Background(), &f)
	if err == nil || !strings.Contains(err.Error(), "larger than 16384 bytes (capture.exec_max_jpeg)") {
		t.Fatalf("%v, want the frame bound named", err)
	}
	if cap(e.buf) > MinExecMaxJPEG+execReadChunk {
		t.Errorf("buffer grew to %d bytes, bound %d", cap(e.buf), MinExecMaxJPEG+execReadChunk)
	}
}

func TestExecNotMJPEG(t *testing.T) {
	e := openEmitter(t, "zeros 1024 1024 8", FormatMJPEG, 64, 48, nil)
	var f Frame
	err := e.Next(context.Background(), &f)
	if err == nil || !strings.Contains(err.Error(), "no JPEG start") || !strings.Contains(err.Error(), "capture.exec_format") {
		t.Fatalf("%v, want a hint at capture.exec_format", err)
	}
}

// TestExecStderr: the command's stderr is logged, bounded in lines and
// line length, and its exit says why with the last line.
func TestExecStderr(t *testing.T) {
	var logs bytes.Buffer
	e := openEmitter(t, "stderr 64 48 100", FormatYU12, 64, 48, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	var f Frame
	err := e.Next(context.Background(), &f)
	if !errors.Is(err, ErrExecExited) || !strings.Contains(err.Error(), "exit status 3") ||
		!strings.Contains(err.Error(), "no cameras available") {
		t.Fatalf("%v, want the exit status and the last stderr line", err)
	}
	s := e.Stats()
	if s.StderrLines != 102 || s.StderrQuiet != 102-execStderrLines {
		t.Errorf("stats %+v, want 102 lines, %d of them quiet", s, 102-execStderrLines)
	}
	if n := strings.Count(logs.String(), "level=INFO msg=\"capture: "+e.Name()+" says\""); n != execStderrLines {
		t.Errorf("%d stderr lines at info, want %d", n, execStderrLines)
	}
	for _, l := range strings.Split(logs.String(), "\n") {
		if len(l) > 2*execStderrLine {
			t.Errorf("a log line of %d bytes", len(l))
		}
	}
	if !strings.Contains(logs.String(), "[cut]") {
		t.Error("the 2000-byte line was not marked as cut")
	}
}

// TestExecCloseStops: Close ends a command that is still running, also
// one that ignores SIGTERM, and wakes a Next waiting for its output.
func TestExecCloseStops(t *testing.T) {
	for _, ignore := range []string{"0", "1"} {
		t.Run("ignore-term-"+ignore, func(t *testing.T) {
			e := openEmitter(t, "hang 64 48 "+ignore, FormatYU12, 64, 48, nil)
			pid := e.cmd.Process.Pid
			var f Frame
			if err := e.Next(context.Background(), &f); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- e.Next(context.Background(), &f) }()
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			if err := <-done; !errors.Is(err, ErrClosed) {
				t.Errorf("Next during Close: %v, want ErrClosed", err)
			}
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("process %d still exists after Close (kill 0: %v)", pid, err)
			}
		})
	}
}

func TestExecContext(t *testing.T) {
	e := openEmitter(t, "hang 64 48 0", FormatYU12, 64, 48, nil)
	var f Frame
	if err := e.Next(context.Background(), &f); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.Next(ctx, &f); !errors.Is(err, context.Canceled) {
		t.Fatalf("%v, want context.Canceled", err)
	}
}

func TestExecBadConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  ExecConfig
		want string
	}{
		{ExecConfig{Format: FormatYU12, Width: 64, Height: 48}, "no command"},
		{ExecConfig{Argv: []string{"/nonexistent/rpicam-vid"}, Format: FormatYU12, Width: 64, Height: 48}, "start /nonexistent/rpicam-vid"},
		{ExecConfig{Argv: []string{"true"}, Format: FormatYU12, Width: 63, Height: 48}, "want even sides"},
		{ExecConfig{Argv: []string{"true"}, Format: FormatGrey, Width: 64, Height: 48}, "want MJPEG, YU12 or YUYV"},
		{ExecConfig{Argv: []string{"true"}, Format: FormatMJPEG, Width: 64, Height: 48, MaxJPEG: 100}, "at least 16384"},
	} {
		e, err := OpenExec(c.cfg, nil)
		if err == nil {
			e.Close()
			t.Errorf("%+v: opened", c.cfg)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
	for _, s := range []string{"mjpeg", "yuv420", "I420", "yuyv"} {
		if _, err := ParseExecFormat(s); err != nil {
			t.Error(err)
		}
	}
	if _, err := ParseExecFormat("h264"); err == nil || !strings.Contains(err.Error(), "want mjpeg, yuv420 or yuyv") {
		t.Errorf("h264: %v", err)
	}
}

// TestExecRawAllocs: reading raw frames allocates nothing once the frame
// has grown.
func TestExecRawAllocs(t *testing.T) {
	e := openEmitter(t, "yuv420 64 48 0", FormatYU12, 64, 48, nil)
	var f Frame
	for range 3 {
		if err := e.Next(context.Background(), &f); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	if n := testing.AllocsPerRun(50, func() {
		if err := e.Next(ctx, &f); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Next allocated %v times per raw frame, want 0", n)
	}
}

// TestExecReopening: a command that exits is started again by Reopening.
func TestExecReopening(t *testing.T) {
	var opens int
	open := func() (Source, error) {
		opens++
		return OpenExec(ExecConfig{Argv: []string{os.Args[0]}, Env: []string{emitterEnv + "=yuv420 64 48 2"},
			Format: FormatYU12, Width: 64, Height: 48, Logger: slog.New(slog.DiscardHandler)}, nil)
	}
	r := Reopening(open, ReopenConfig{Base: time.Millisecond, Cap: time.Millisecond}, nil, slog.New(slog.DiscardHandler))
	defer r.Close()
	var f Frame
	for i := range 5 {
		if err := r.Next(context.Background(), &f); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	if opens != 3 {
		t.Errorf("%d runs of the command for 5 frames of 2 each, want 3", opens)
	}
}

// ffmpegOrSkip returns ffmpeg's path, or skips (fails under CI) without it.
func ffmpegOrSkip(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("ffmpeg")
	if err == nil {
		return p
	}
	msg := "ffmpeg not found (Debian: apt-get install ffmpeg; scripts/ensure-test-deps.sh installs it)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + "; CI is set, so this is a failure")
	}
	t.Skip(msg + "; skipping (set CI to make this a failure)")
	return ""
}

// TestExecFFmpeg reads what Debian's ffmpeg writes to its stdout, as
// rpicam-vid would: MJPEG and raw YUV 4:2:0 of a test pattern, as fast as
// it makes them.
func TestExecFFmpeg(t *testing.T) {
	ff := ffmpegOrSkip(t)
	const w, h, n = 320, 240, 60
	for _, c := range []struct {
		name   string
		format PixelFormat
		args   []string
	}{
		{"mjpeg", FormatMJPEG, []string{"-f", "mjpeg", "-q:v", "5"}},
		{"yuv420", FormatYU12, []string{"-f", "rawvideo", "-pix_fmt", "yuv420p"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			argv := append([]string{ff, "-hide_banner", "-loglevel", "error", "-f", "lavfi",
				"-i", fmt.Sprintf("testsrc2=size=%dx%d:rate=30", w, h), "-frames:v", strconv.Itoa(n)}, c.args...)
			argv = append(argv, "-")
			e, err := OpenExec(ExecConfig{Argv: argv, Format: c.format, Width: w, Height: h, Logger: slog.New(slog.DiscardHandler)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			var f Frame
			start := time.Now()
			for i := range n {
				if err := e.Next(context.Background(), &f); err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if f.Width != w || f.Height != h || f.Format != c.format {
					t.Fatalf("frame %d: %v %dx%d", i, f.Format, f.Width, f.Height)
				}
			}
			took := time.Since(start)
			if err := e.Next(context.Background(), &f); !errors.Is(err, ErrExecExited) {
				t.Fatalf("after %d frames: %v", n, err)
			}
			if s := e.Stats(); s.Frames != n || s.Corrupt != 0 || s.SkippedBytes != 0 {
				t.Errorf("stats %+v", s)
			}
			t.Logf("%s %dx%d from ffmpeg: %d frames in %v (%.0f frames/s, ffmpeg's encoding included)",
				c.name, w, h, n, took.Round(time.Millisecond), float64(n)/took.Seconds())
		})
	}
}
