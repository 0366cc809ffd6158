package agent

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/receiver"
)

// liveTestFrame is a 640x480 YUYV frame at t.
func liveTestFrame(t time.Time) *capture.Frame {
	return &capture.Frame{Width: 640, Height: 480, Format: capture.FormatYUYV, Stride: 1280, Data: make([]byte, 1280*480), Time: t}
}

// TestLiveOfferAllocs: the frame loop's hook allocates nothing while nobody
// watches, nor while a stream is open once its buffer has held a frame;
// it hands over at most live.fps frames a second, and drops (counting) a
// frame while the encoder still holds the last.
func TestLiveOfferAllocs(t *testing.T) {
	l := newLiveFeed(5)
	t0 := time.Unix(1_700_000_000, 0)
	f := liveTestFrame(t0)
	if n := testing.AllocsPerRun(1000, func() { l.offer(f) }); n != 0 {
		t.Errorf("nobody watching: %v allocations a frame, want 0", n)
	}
	if len(l.slot) != 0 || l.dropped.Load() != 0 {
		t.Fatalf("nobody watching: a frame was handed over or dropped")
	}
	var nilFeed *liveFeed
	nilFeed.offer(f) // the live view off: the hook is a no-op

	l.on.Store(true)
	l.offer(f) // the first frame grows the buffer
	buf := <-l.slot
	if buf.Width != 640 || len(buf.Data) != len(f.Data) || buf == f {
		t.Fatalf("handed over %dx%d, %d bytes", buf.Width, buf.Height, len(buf.Data))
	}
	l.free <- buf
	// At 10 fps with live.fps 5, every other frame is handed over.
	handed := 0
	allocs := testing.AllocsPerRun(100, func() {
		f.Time = f.Time.Add(100 * time.Millisecond)
		l.offer(f)
		select {
		case b := <-l.slot: // the encoder takes it and gives it back
			handed++
			l.free <- b
		default:
		}
	})
	if allocs != 0 {
		t.Errorf("watched: %v allocations a frame once the buffer is grown, want 0", allocs)
	}
	if handed < 49 || handed > 52 {
		t.Errorf("%d of 101 frames at 10 fps handed over with live.fps 5, want about half", handed)
	}
	// The encoder holds the buffer: frames are dropped, never queued.
	l.offer(liveTestFrame(f.Time.Add(time.Second)))
	held := <-l.slot
	before := l.dropped.Load()
	for i := range 10 {
		l.offer(liveTestFrame(f.Time.Add(time.Duration(2+i) * time.Second)))
	}
	if got := l.dropped.Load() - before; got != 10 || len(l.slot) != 0 {
		t.Errorf("encoder busy: %d dropped, %d queued; want 10 dropped, none queued", got, len(l.slot))
	}
	l.free <- held
}

// TestLiveMeasure measures the frame rate of the detector and the agent's
// CPU at 640x480 and 10 fps on the synthetic scene, idle and with a live
// viewer: the real binary against a receiver in this process, each run for
// KEYFRAME_LIVE_MEASURE seconds. It is a measurement, not a test: it runs
// only when asked and reports figures.
func TestLiveMeasure(t *testing.T) {
	secs, _ := strconv.Atoi(os.Getenv("KEYFRAME_LIVE_MEASURE"))
	if secs <= 0 {
		t.Skip("a measurement: set KEYFRAME_LIVE_MEASURE=SECONDS to run it")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "keyframe")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/keyframe-cam/keyframe/cmd/keyframe").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cfg := testConfig(dir, 640, 480)
	key, device, _, err := Identity(&cfg, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	closeKey(key)
	pub, err := board.PublicKeyPEM(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	rdir := filepath.Join(dir, "receiver")
	if _, err := receiver.Enroll(rdir, pub); err != nil {
		t.Fatal(err)
	}
	if err := receiver.Pair(rdir, device, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := (receiver.Accounts{Dir: rdir}).Add("alice", receiver.RoleOwner); err != nil {
		t.Fatal(err)
	}
	srv, err := receiver.Open(receiver.Options{Dir: rdir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	alice, err := srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	stopped := regexp.MustCompile(`agent stopped"? frames=(\d+)`)
	run := func(live bool) (fps, cpu float64, viewed int) {
		cmd := exec.Command(bin, "run")
		var env []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "KEYFRAME_") { // the agent refuses settings it does not know
				env = append(env, kv)
			}
		}
		cmd.Env = append(env, "KEYFRAME_DEVICE_DATA_DIR="+cfg.DataDir, "KEYFRAME_CAPTURE_SOURCE=synthetic",
			"KEYFRAME_CAPTURE_WIDTH=640", "KEYFRAME_CAPTURE_HEIGHT=480", "KEYFRAME_CAPTURE_FPS=10",
			"KEYFRAME_UPLOAD_URL="+hs.URL, "KEYFRAME_LIVE_ENABLED="+strconv.FormatBool(live))
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(stderr)
			var all []string
			for sc.Scan() {
				all = append(all, sc.Text())
			}
			lines <- strings.Join(all, "\n")
		}()
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second)
		defer cancel()
		began := time.Now()
		if live {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, hs.URL+"/live/"+device+"/mjpeg", nil)
			req.AddCookie(alice)
			for ctx.Err() == nil {
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					break
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				viewed += strings.Count(string(b), "Content-Type: image/jpeg")
			}
		}
		<-ctx.Done()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		line := <-lines
		if err := cmd.Wait(); err != nil {
			t.Fatalf("agent: %v\n%s", err, line)
		}
		elapsed := time.Since(began).Seconds()
		m := stopped.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("no frame count in the agent's log")
		}
		frames, _ := strconv.Atoi(m[1])
		st := cmd.ProcessState
		return float64(frames) / elapsed, (st.UserTime() + st.SystemTime()).Seconds() / elapsed, viewed
	}
	idleFPS, idleCPU, _ := run(false)
	liveFPS, liveCPU, viewed := run(true)
	t.Logf("640x480 at 10 fps, %d s each: idle %.2f frames/s analysed, CPU %.1f%% of a core; live viewer %.2f frames/s analysed, CPU %.1f%% of a core, %d live frames received (%.2f/s)",
		secs, idleFPS, 100*idleCPU, liveFPS, 100*liveCPU, viewed, float64(viewed)/float64(secs))
	fmt.Fprintf(os.Stderr, "idle_fps=%.2f idle_cpu=%.3f live_fps=%.2f live_cpu=%.3f live_frames=%d\n", idleFPS, idleCPU, liveFPS, liveCPU, viewed)
}

// TestLiveMaxTime: a camera whose viewer stays ends its stream at
// live.max_time (and says so), then, asked again at once, streams anew.
func TestLiveMaxTime(t *testing.T) {
	r := newLiveRig(t, func(c *Config) { c.LiveMaxTime = time.Second })
	alice, err := r.srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.hs.URL+"/live/"+r.device+"/mjpeg", nil)
	req.AddCookie(alice)
	resp, err := r.hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	go io.Copy(io.Discard, resp.Body)
	for r.a.LiveCounts().Started < 2 {
		select {
		case <-ctx.Done():
			t.Fatalf("no second stream: %+v\n%s", r.a.LiveCounts(), r.log.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if c := r.a.LiveCounts(); c.Stopped < 1 || c.Sent == 0 {
		t.Errorf("counts %+v", c)
	}
	if !strings.Contains(r.log.String(), `why="live.max_time is up"`) {
		t.Errorf("the log does not say the stream stopped at live.max_time:\n%s", r.log.String())
	}
}
