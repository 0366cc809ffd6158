package agent

import (
	"bytes"
	"context"
	"errors"
	"image/jpeg"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/internal/livestream"
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

// liveRecords reads the records of a live viewer's frames (GET
// /live/{device}/frames) with cookie until want sealed or clear frames
// came, and returns them and every byte relayed.
func liveRecords(t *testing.T, r *liveRig, cookie *http.Cookie, want int) (recs []liveRecord, raw []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.hs.URL+"/live/"+r.device+"/frames", nil)
	req.AddCookie(cookie)
	resp, err := r.hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != livestream.FramesType {
		t.Fatalf("frames: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var all bytes.Buffer
	body := io.TeeReader(resp.Body, &all)
	for n := 0; n < want; {
		kind, b, err := livestream.ReadRecord(body, nil, 1<<20)
		if err != nil {
			t.Fatalf("after %d records: %v\n%s", len(recs), err, r.log.String())
		}
		recs = append(recs, liveRecord{kind, b, time.Now()})
		if kind != livestream.KindKey {
			n++
		}
	}
	return recs, all.Bytes()
}

type liveRecord struct {
	kind byte
	b    []byte
	at   time.Time
}

// TestLiveSealed: with e2ee, what the receiver relays of a real camera's
// live view holds no JPEG (no FF D8 FF anywhere), while the owner opens
// every frame to a 640x480 JPEG from the key frame given first; the opener
// refuses a frame replayed or rolled back; another owner's keys, and the
// owner's key under another owner's binding, open nothing; the MJPEG route
// refuses the sealed stream.
func TestLiveSealed(t *testing.T) {
	owner, err := e2ee.NewOwner(2)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := owner.KeySet(1)
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := e2ee.NewSealer(ks)
	if err != nil {
		t.Fatal(err)
	}
	r := newLiveRigHook(t, func(a *Agent) { a.live.sealer = func() *e2ee.Sealer { return sealer } })
	alice, err := r.srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	asked := time.Now()
	recs, raw := liveRecords(t, r, alice, 20)
	if i := bytes.Index(raw, []byte{0xff, 0xd8, 0xff}); i >= 0 {
		t.Errorf("the relayed bytes hold FF D8 FF at %d of %d: a JPEG in the clear", i, len(raw))
	}
	if recs[0].kind != livestream.KindKey {
		t.Fatalf("the first record is %q, want the key frame", recs[0].kind)
	}
	op, err := owner.OpenLive(recs[0].b, r.device)
	if err != nil {
		t.Fatal(err)
	}
	var frames [][]byte
	for i, rec := range recs[1:] {
		if rec.kind != livestream.KindSealed {
			t.Fatalf("record %d is %q, want a sealed frame (one stream, one key frame)", i+1, rec.kind)
		}
		jpg, err := op.OpenFrame(rec.b)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		cfg, err := jpeg.DecodeConfig(bytes.NewReader(jpg))
		if err != nil || cfg.Width != 640 || cfg.Height != 480 {
			t.Fatalf("frame %d opens to %dx%d (%v), want a 640x480 JPEG", i, cfg.Width, cfg.Height, err)
		}
		frames = append(frames, rec.b)
	}
	span := recs[len(recs)-1].at.Sub(recs[1].at)
	t.Logf("first sealed frame %s after asking; %d frames in %s: %.1f a second", recs[1].at.Sub(asked).Round(time.Millisecond),
		len(frames)-1, span.Round(time.Millisecond), float64(len(frames)-1)/span.Seconds())

	// Replayed, rolled back: refused.
	if _, err := op.OpenFrame(frames[len(frames)-1]); !errors.Is(err, e2ee.ErrReplay) {
		t.Errorf("the last frame again: %v, want ErrReplay", err)
	}
	if _, err := op.OpenFrame(frames[3]); !errors.Is(err, e2ee.ErrReplay) {
		t.Errorf("an earlier frame: %v, want ErrReplay", err)
	}
	// Another owner: neither its keys nor the owner's key under its
	// fingerprint open the key frame.
	other, err := e2ee.NewOwner(2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.OpenLive(recs[0].b, r.device); err == nil {
		t.Error("another owner's keys opened the key frame")
	}
	for _, k := range owner.Keys {
		if _, err := e2ee.OpenLive(recs[0].b, other.Fingerprint(), r.device, k.ID, k.Priv); err == nil {
			t.Error("the key frame opened under another owner's binding")
		}
		if _, err := e2ee.OpenLive(recs[0].b, owner.Fingerprint(), r.device, k.ID, other.Keys[0].Priv); err == nil {
			t.Error("another owner's private key opened the key frame under the owner's key id")
		}
		if _, err := e2ee.OpenLive(recs[0].b, owner.Fingerprint(), r.device, k.ID, k.Priv); err != nil {
			t.Errorf("key %s (every key of the set) does not open the key frame: %v", k.Name, err)
		}
	}
	// MJPEG cannot carry it: refused while the camera streams sealed
	// (a viewer keeps it streaming).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.hs.URL+"/live/"+r.device+"/frames", nil)
	req.AddCookie(alice)
	keep, err := r.hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Body.Close()
	if _, _, err := livestream.ReadRecord(keep.Body, nil, 1<<20); err != nil {
		t.Fatal(err)
	}
	code, body := r.get(t, "/live/"+r.device+"/mjpeg", alice)
	if code != http.StatusConflict || bytes.Contains(body, []byte{0xff, 0xd8}) {
		t.Errorf("MJPEG of a sealed stream: %d with %d bytes, want 409 and no picture", code, len(body))
	}
	if st := r.srv.LiveStats(); st.SealedStreams == 0 || st.SealedStreams != st.StreamsStarted {
		t.Errorf("receiver: %+v, want every stream sealed", st)
	}
}

// TestLiveNoKeySet: with e2ee on and no key set, the camera does not even
// wait at the receiver: an owner's viewer gets nothing and no stream
// starts; the log says why. Once a set comes, the stream is sealed.
func TestLiveNoKeySet(t *testing.T) {
	var cur atomic.Pointer[e2ee.Sealer]
	r := newLiveRigHook(t, func(a *Agent) { a.live.sealer = cur.Load })
	for i := 0; !strings.Contains(r.log.String(), "no live view until it has one"); i++ {
		if i == 1000 {
			t.Fatalf("the log does not say the live view waits for a key set:\n%s", r.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	alice, err := r.srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	if code, body := r.get(t, "/live/"+r.device+"/frames", alice); code != http.StatusOK || len(body) != 0 {
		t.Errorf("without a key set: %d with %d bytes, want nothing", code, len(body))
	}
	if c, st := r.a.LiveCounts(), r.srv.LiveStats(); c.Started != 0 || st.StreamsStarted != 0 {
		t.Errorf("without a key set: camera %+v, receiver %+v: want no stream", c, st)
	}
	owner, err := e2ee.NewOwner(1)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := owner.KeySet(1)
	if err != nil {
		t.Fatal(err)
	}
	s, err := e2ee.NewSealer(ks)
	if err != nil {
		t.Fatal(err)
	}
	cur.Store(s)
	recs, raw := liveRecords(t, r, alice, 2)
	if recs[0].kind != livestream.KindKey || bytes.Contains(raw, []byte{0xff, 0xd8, 0xff}) {
		t.Fatalf("with the key set: first record %q, want a sealed stream", recs[0].kind)
	}
	op, err := owner.OpenLive(recs[0].b, r.device)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.OpenFrame(recs[1].b); err != nil {
		t.Error(err)
	}
}

// TestLiveKeySetChange: when the owner's key set changes while a sealed
// stream runs (a browser added), the camera ends the stream and starts a
// new one, whose key frame the new browser's key opens; the viewer gets
// the new key frame before the new stream's frames.
func TestLiveKeySetChange(t *testing.T) {
	owner, err := e2ee.NewOwner(1)
	if err != nil {
		t.Fatal(err)
	}
	sealerOf := func(version uint64) *e2ee.Sealer {
		ks, err := owner.KeySet(version)
		if err != nil {
			t.Fatal(err)
		}
		s, err := e2ee.NewSealer(ks)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	var cur atomic.Pointer[e2ee.Sealer]
	cur.Store(sealerOf(1))
	r := newLiveRigHook(t, func(a *Agent) { a.live.sealer = cur.Load })
	alice, err := r.srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.hs.URL+"/live/"+r.device+"/frames", nil)
	req.AddCookie(alice)
	resp, err := r.hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	read := func() (byte, []byte) {
		kind, b, err := livestream.ReadRecord(resp.Body, nil, 1<<20)
		if err != nil {
			t.Fatalf("%v\n%s", err, r.log.String())
		}
		return kind, b
	}
	if kind, _ := read(); kind != livestream.KindKey {
		t.Fatalf("first record %q", kind)
	}
	read()
	// A new browser joins: version 2 holds its key too.
	added, err := owner.AddKey(e2ee.KEMX25519, "new browser", false)
	if err != nil {
		t.Fatal(err)
	}
	newKey := *added
	cur.Store(sealerOf(2))
	for {
		kind, b := read()
		if kind != livestream.KindKey {
			continue
		}
		op, err := e2ee.OpenLive(b, owner.Fingerprint(), r.device, newKey.ID, newKey.Priv)
		if err != nil {
			t.Fatalf("the new browser's key does not open the new stream's key frame: %v", err)
		}
		kind, f := read()
		if kind != livestream.KindSealed {
			t.Fatalf("after the new key frame: %q", kind)
		}
		if _, err := op.OpenFrame(f); err != nil {
			t.Fatal(err)
		}
		break
	}
	if !strings.Contains(r.log.String(), `why="the owner's key set changed"`) {
		t.Errorf("the log does not say the stream ended for the new key set:\n%s", r.log.String())
	}
}
