package clip

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
)

// needFFmpeg skips a test without ffmpeg (with libx264) locally and fails
// it under CI=true: scripts/ensure-test-deps.sh installs Debian's.
func needFFmpeg(t testing.TB) {
	t.Helper()
	missing := func(why string) {
		msg := "ffmpeg with libx264 is needed for the exec encoder's tests (" + why + "): scripts/ensure-test-deps.sh installs it (Debian: apt-get install ffmpeg)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	path, err := exec.LookPath("ffmpeg")
	if err != nil {
		missing("not found")
		return
	}
	out, err := exec.Command(path, "-hide_banner", "-encoders").Output()
	if err != nil || !bytes.Contains(out, []byte("libx264")) {
		missing("no libx264 encoder")
	}
}

// yu12Pictures returns n pictures of capture's synthetic scene at w×h,
// at 10 frames/s from t0.
func yu12Pictures(t testing.TB, w, h, n int) []Picture {
	t.Helper()
	frames := syntheticFrames(t, w, h, n)
	pics := make([]Picture, n)
	for i := range frames {
		var r raw
		fr := &frames[i]
		fr.Time, fr.Sequence = t0.Add(time.Duration(i)*100*time.Millisecond), uint64(i)
		nb, err := rawLayout(fr.Format, fr.Width, fr.Height, fr.Stride)
		if err != nil {
			t.Fatal(err)
		}
		r.fill(fr, nb)
		if err := toYU12(&pics[i], &r); err != nil {
			t.Fatal(err)
		}
	}
	return pics
}

// collector reads an encoder's units (copied) and errors on its own
// goroutine, as the feeder does.
type collector struct {
	mu    sync.Mutex
	units []AccessUnit
	errs  []error
	done  chan struct{}
}

func collect(ctx context.Context, e Encoder) *collector {
	c := &collector{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			au, err := e.Next(ctx)
			if errors.Is(err, ErrEncoderClosed) || ctx.Err() != nil {
				return
			}
			c.mu.Lock()
			if err != nil {
				c.errs = append(c.errs, err)
			} else {
				au.Data = bytes.Clone(au.Data)
				c.units = append(c.units, au)
			}
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *collector) counts() (units, errs int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.units), len(c.errs)
}

func (c *collector) snapshot() ([]AccessUnit, []error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]AccessUnit(nil), c.units...), append([]error(nil), c.errs...)
}

// encodeAll gives e the pictures in order, waiting while it is busy or
// restarting (never dropping one).
func encodeAll(t testing.TB, e Encoder, pics []Picture) {
	t.Helper()
	for i := range pics {
		for tries := 0; ; tries++ {
			err := e.Encode(context.Background(), &pics[i], false)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrEncoderBusy) && !errors.Is(err, ErrEncoderRestarting) || tries > 20000 {
				t.Fatalf("Encode picture %d: %v", pics[i].Sequence, err)
			}
			time.Sleep(500 * time.Microsecond)
		}
	}
}

func newTestExecEncoder(t testing.TB, cfg ExecEncoderConfig) *ExecEncoder {
	t.Helper()
	if cfg.FPS == 0 {
		cfg.FPS, cfg.GOP = 10, 10
	}
	cfg.Backoff, cfg.BackoffCap = 10*time.Millisecond, 50*time.Millisecond
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e, err := NewExecEncoder(cfg, nil)
	if err != nil {
		t.Fatalf("NewExecEncoder: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// decodedFrames decodes an H.264 elementary stream with ffmpeg and
// returns how many pictures it holds.
func decodedFrames(t testing.TB, stream []byte) int {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clip.h264")
	if err := os.WriteFile(path, stream, 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command("ffmpeg", "-v", "error", "-f", "h264", "-i", path, "-f", "framecrc", "-")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("ffmpeg does not decode the stream: %v; %s", err, stderr.String())
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			n++
		}
	}
	return n
}

// TestExecEncoder: ffmpeg (libx264) encodes 31 pictures of the synthetic
// scene: each of the first 30 comes back as one access unit, in order,
// with its picture's time and sequence; key frames (IDR with SPS and PPS)
// are every 10th; the units concatenated decode to 30 pictures.
func TestExecEncoder(t *testing.T) {
	needFFmpeg(t)
	e := newTestExecEncoder(t, ExecEncoderConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := collect(ctx, e)
	pics := yu12Pictures(t, 160, 120, 31)
	encodeAll(t, e, pics)
	// The newest unit is known to be whole when the next one starts.
	waitFor(t, "30 access units", func() bool { n, _ := c.counts(); return n >= 30 })
	units, errs := c.snapshot()
	if len(errs) > 0 {
		t.Fatalf("errors: %v", errs)
	}
	var stream []byte
	for i, au := range units[:30] {
		if au.Sequence != uint64(i) || !au.Time.Equal(pics[i].Time) {
			t.Fatalf("unit %d is for picture %d at %v", i, au.Sequence, au.Time)
		}
		if wantKey := i%10 == 0; au.Key != wantKey || isKeyAU(au.Data) != wantKey {
			t.Fatalf("unit %d: key %v (IDR with SPS and PPS: %v), want %v", i, au.Key, isKeyAU(au.Data), wantKey)
		}
		stream = append(stream, au.Data...)
	}
	if n := decodedFrames(t, stream); n != 30 {
		t.Fatalf("the stream decodes to %d pictures, want 30", n)
	}
	st := e.Stats()
	if st.Starts != 1 || st.Pictures != 31 || st.Lost != 0 || st.Misaligned != 0 || st.Junk != 0 {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("30 pictures of 160x120: %d bytes of H.264 (key frame %d bytes)", len(stream), len(units[0].Data))
}

// runningPid is the pid of the encoder's command, once it runs.
func runningPid(e *ExecEncoder) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.run == nil {
		return 0
	}
	return e.run.cmd.Process.Pid
}

// TestExecEncoderRestart: the command killed mid-stream ends the run (Next
// says so, with its exit status); the next picture starts it again after
// the backoff, its first unit a key frame, and the stream goes on.
func TestExecEncoderRestart(t *testing.T) {
	needFFmpeg(t)
	e := newTestExecEncoder(t, ExecEncoderConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := collect(ctx, e)
	pics := yu12Pictures(t, 160, 120, 20)
	encodeAll(t, e, pics[:6])
	waitFor(t, "5 units", func() bool { n, _ := c.counts(); return n >= 5 })
	pid := runningPid(e)
	if pid == 0 {
		t.Fatal("no command running")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the run's end", func() bool { _, n := c.counts(); return n >= 1 })
	_, errs := c.snapshot()
	if !errors.Is(errs[0], ErrEncoderExited) || !strings.Contains(errs[0].Error(), "killed") {
		t.Fatalf("the run ended with %v, want ErrEncoderExited saying it was killed", errs[0])
	}
	before, _ := c.counts()
	encodeAll(t, e, pics[6:])
	waitFor(t, "the next run's units", func() bool { n, _ := c.counts(); return n >= before+13 })
	units, _ := c.snapshot()
	after := units[before]
	if after.Sequence != 6 || !after.Key {
		t.Fatalf("the first unit after the restart is for picture %d (key %v), want a key frame for 6", after.Sequence, after.Key)
	}
	for i := before + 1; i < len(units); i++ {
		if units[i].Sequence != units[i-1].Sequence+1 {
			t.Fatalf("unit %d is for picture %d after %d", i, units[i].Sequence, units[i-1].Sequence)
		}
	}
	if st := e.Stats(); st.Starts != 2 {
		t.Fatalf("stats %+v, want 2 starts", st)
	}
}

// TestExecEncoderMisaligned: a command that writes more access units than
// pictures (here, a file's whole stream for one picture) has its extra unit
// refused with ErrEncoderMisaligned, counted, and is stopped.
func TestExecEncoderMisaligned(t *testing.T) {
	needFFmpeg(t)
	// A stream of 5 units, made by the encoder itself.
	e := newTestExecEncoder(t, ExecEncoderConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := collect(ctx, e)
	encodeAll(t, e, yu12Pictures(t, 160, 120, 6))
	waitFor(t, "5 units", func() bool { n, _ := c.counts(); return n >= 5 })
	units, _ := c.snapshot()
	var stream []byte
	for _, au := range units[:5] {
		stream = append(stream, au.Data...)
	}
	path := filepath.Join(t.TempDir(), "five.h264")
	if err := os.WriteFile(path, stream, 0o600); err != nil {
		t.Fatal(err)
	}

	m := newTestExecEncoder(t, ExecEncoderConfig{Argv: []string{"sh", "-c", "cat " + path + "; sleep 5"}})
	mc := collect(ctx, m)
	encodeAll(t, m, yu12Pictures(t, 160, 120, 1))
	waitFor(t, "the refusal", func() bool { _, n := mc.counts(); return n >= 1 })
	got, errs := mc.snapshot()
	if len(got) != 1 || got[0].Sequence != 0 || !errors.Is(errs[0], ErrEncoderMisaligned) {
		t.Fatalf("%d units, errors %v: want the picture's unit, then ErrEncoderMisaligned", len(got), errs)
	}
	if st := m.Stats(); st.Misaligned != 1 {
		t.Fatalf("stats %+v", st)
	}
	waitFor(t, "the command stopped", func() bool { return runningPid(m) == 0 })
}

// TestExecEncoderFailures: a command that cannot start is an error naming
// it, then the encoder waits out its backoff; one that exits at once is
// reported with its status and last stderr line; a picture of another
// size is refused.
func TestExecEncoderFailures(t *testing.T) {
	e := newTestExecEncoder(t, ExecEncoderConfig{Argv: []string{"/nonexistent/encoder", "{width}"}})
	pic := yu12Pictures(t, 32, 24, 1)[0]
	err := e.Encode(context.Background(), &pic, false)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/encoder") {
		t.Fatalf("a missing command: %v", err)
	}
	if err := e.Encode(context.Background(), &pic, false); !errors.Is(err, ErrEncoderRestarting) {
		t.Fatalf("right after: %v, want ErrEncoderRestarting", err)
	}

	x := newTestExecEncoder(t, ExecEncoderConfig{Argv: []string{"sh", "-c", "echo no such codec >&2; exit 3"}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := collect(ctx, x)
	_ = x.Encode(context.Background(), &pic, false) // may fail to write: the command is gone
	waitFor(t, "the exit", func() bool { _, n := c.counts(); return n >= 1 })
	_, errs := c.snapshot()
	if msg := errs[0].Error(); !errors.Is(errs[0], ErrEncoderExited) || !strings.Contains(msg, "exit status 3") || !strings.Contains(msg, "no such codec") {
		t.Fatalf("exit: %v", errs[0])
	}

	// Runs that end leave no pipe open behind them (with the collector
	// off, so that no finalizer closes a forgotten one).
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip("no /proc/self/fd")
		}
		return len(ents)
	}
	before := fds()
	for run := 2; run <= 6; run++ {
		waitFor(t, "the backoff", func() bool {
			err := x.Encode(context.Background(), &pic, false)
			return !errors.Is(err, ErrEncoderRestarting)
		})
		waitFor(t, "the run's end", func() bool { _, n := c.counts(); return n >= run })
	}
	waitFor(t, "the pipes closed", func() bool { return fds() <= before })
	if st := x.Stats(); st.Starts != 6 {
		t.Fatalf("%d starts, want 6", st.Starts)
	}

	bad := Picture{Width: 31, Height: 24, Data: make([]byte, 31*24*3/2)}
	if err := x.Encode(context.Background(), &bad, false); err == nil || !strings.Contains(err.Error(), "even") {
		t.Fatalf("an odd picture: %v", err)
	}
	if _, err := NewExecEncoder(ExecEncoderConfig{FPS: 10}, nil); err == nil {
		t.Fatal("GOP 0 accepted")
	}
}

// TestH264FeederExec: the feeder with the exec encoder on 10 s of the
// synthetic scene, every frame taken: the ring holds whole groups of 20,
// starts at a key frame, and its frames decode.
func TestH264FeederExec(t *testing.T) {
	needFFmpeg(t)
	cfg := h264Config(20)
	cfg.MaxFrames = 200
	enc := newTestExecEncoder(t, ExecEncoderConfig{FPS: cfg.Rate, GOP: cfg.GOP()})
	r, f := newH264Feeder(t, cfg, enc)
	stop := runFeeder(t, f)
	frames := syntheticFrames(t, 160, 120, 101)
	offerAllExec(t, f, frames)
	// Frame 100's unit is whole when a next one starts: 100 come back.
	waitFor(t, "100 units", func() bool { return settled(f) >= 100 })
	stop()
	c := r.Cursor(t0)
	got, lost := readAll2(t, c)
	c.Close()
	if lost != 0 || len(got) != 100 || !got[0].Key || got[0].Sequence != 0 {
		t.Fatalf("%d frames (lost %d) from %d", len(got), lost, got[0].Sequence)
	}
	var stream []byte
	keys := 0
	for _, fr := range got {
		stream = append(stream, fr.Data...)
		if fr.Key {
			keys++
		}
	}
	if keys != 5 {
		t.Errorf("%d key frames in 100, want 5", keys)
	}
	if n := decodedFrames(t, stream); n != 100 {
		t.Fatalf("the ring's frames decode to %d pictures", n)
	}
	t.Logf("10 s at 10 frames/s of 160x120: %d bytes of H.264 (%.1f KB/s)", len(stream), float64(len(stream))/10/1000)
}

// offerAllExec offers each frame once the one before is in flight or done
// (the exec encoder's newest unit comes out with the next one).
func offerAllExec(t testing.TB, f *Feeder, frames []capture.Frame) {
	t.Helper()
	for i := range frames {
		fr := &frames[i]
		fr.Sequence = uint64(i)
		fr.Time = t0.Add(time.Duration(i) * 100 * time.Millisecond)
		want := uint64(i)
		if err := f.Offer(fr); err != nil {
			t.Fatalf("Offer frame %d: %v", i, err)
		}
		waitFor(t, "the frame to be taken", func() bool {
			s := f.Stats()
			return settled(f)+uint64(s.InFlight) > want && len(f.slot) == 0 && s.InFlight < 4
		})
	}
}

// BenchmarkExecEncoder measures the exec encoder (DefaultEncoderCommand:
// ffmpeg, libx264 ultrafast, zerolatency) at 640x480 on the synthetic
// scene, as fast as it goes: pictures a second through the pipe and back
// as access units, and the bytes of H.264 a picture. Its CPU is the
// command's, not this process's.
func BenchmarkExecEncoder(b *testing.B) {
	needFFmpeg(b)
	e := newTestExecEncoder(b, ExecEncoderConfig{FPS: 10, GOP: 20})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := collect(ctx, e)
	pics := yu12Pictures(b, 640, 480, 50)
	seq := uint64(0)
	give := func(n int) {
		for range n {
			p := pics[seq%uint64(len(pics))]
			p.Sequence, p.Time = seq, t0.Add(time.Duration(seq)*100*time.Millisecond)
			seq++
			encodeAll(b, e, []Picture{p})
		}
	}
	give(10) // the command starts
	waitFor(b, "the first units", func() bool { n, _ := c.counts(); return n >= 9 })
	units0, _ := c.counts()
	b.ResetTimer()
	start := time.Now()
	give(b.N)
	waitFor(b, "the units", func() bool { n, _ := c.counts(); return n >= units0+b.N })
	el := time.Since(start)
	b.StopTimer()
	units, errs := c.snapshot()
	if len(errs) > 0 {
		b.Fatal(errs)
	}
	total := 0
	for _, au := range units[units0:] {
		total += len(au.Data)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "pictures/s")
	b.ReportMetric(float64(total)/float64(len(units)-units0), "bytes/picture")
}
