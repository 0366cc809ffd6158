package agent

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
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
