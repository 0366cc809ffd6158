package receiver

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/internal/h264"
	"github.com/keyframe-cam/keyframe/internal/h264/h264test"
	"github.com/keyframe-cam/keyframe/provenance"
)

// libx264 test streams, encoded once per size and GOP for the package's
// tests.
var (
	x264Mu    sync.Mutex
	x264Cache = map[string][][]byte{}
)

// x264AccessUnits is n access units of ffmpeg's testsrc2 at 320×240, 10
// frames a second, encoded by libx264 without B frames with a key frame
// every gop frames (each carrying SPS and PPS, as an encoder set to repeat
// them does).
func x264AccessUnits(t testing.TB, n, gop int) [][]byte {
	t.Helper()
	key := strconv.Itoa(n) + "/" + strconv.Itoa(gop)
	x264Mu.Lock()
	defer x264Mu.Unlock()
	if aus, ok := x264Cache[key]; ok {
		return aus
	}
	stream := h264test.Encode(t, 320, 240, 10, n, gop, "-preset", "veryfast", "-tune", "zerolatency", "-x264-params", "repeat-headers=1")
	aus, err := h264.SplitAccessUnits(stream)
	if err != nil {
		t.Fatal(err)
	}
	if len(aus) != n {
		t.Fatalf("libx264 stream: %d access units, want %d", len(aus), n)
	}
	x264Cache[key] = aus
	return aus
}

// syntheticH264 is n access units shaped as an encoder's (the first a key
// frame with an SPS of 168×140 and a PPS, then P frames), each distinct; no
// decoder could show them, the receiver's checks and muxing take them.
func syntheticH264(n int) [][]byte {
	var aus [][]byte
	for k := range n {
		if k == 0 {
			aus = append(aus, []byte{0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0xda, 0x0b, 0x13, 0xe5, 0xb4, 0, 0, 0, 1, 0x68, 0xce, 0x38, 0x80,
				0, 0, 0, 1, 0x65, 0x88, 0x84, 0x21, 0x7a, 0x5c, 0x11, 0x93, 0x0e, 0xd2, 0x44, 0x6b, 0x39, 0xc7, 0x58, 0xa1, 0x2f, 0x66, 0xb0})
			continue
		}
		aus = append(aus, []byte{0, 0, 0, 1, 0x41, 0x9a, byte(k), 0x5e, 0x71})
	}
	return aus
}

// newH264Clip signs a clip of H.264 access units as the camera does
// (docs/clips.md): nseg segments of perSeg frames at 10 frames a second,
// preRoll of them before the trigger, each segment's media the access
// units concatenated (video/h264); sealed to s when s is not nil.
func (d *testDevice) newH264Clip(t testing.TB, event string, seq uint64, aus [][]byte, nseg, perSeg, preRoll int, s *e2ee.Sealer) *testClip {
	t.Helper()
	c := &testClip{event: event}
	c.start = d.recordWith(t, event, provenance.KindStart, seq, clipFrameJPEG(t, preRoll), nil)
	var hashes [][]byte
	k := 0
	for i := range nseg {
		seq++
		var frames [][]byte
		var list []provenance.ClipFrame
		var ts []int64
		for range perSeg {
			f := aus[k]
			tu := int64(k-preRoll) * 100_000
			frames = append(frames, f)
			list = append(list, provenance.NewClipFrame(f, tu))
			ts = append(ts, tu)
			c.all = append(c.all, f)
			k++
		}
		m, obj := provenance.SegmentMedia(provenance.H264MediaType, frames)
		if s != nil {
			sealed, err := s.Seal(e2ee.Binding{Device: d.id, Event: event, Seq: seq, Role: e2ee.RoleFrames}, obj)
			if err != nil {
				t.Fatal(err)
			}
			m, obj = provenance.NewMedia(provenance.RoleFrames, e2ee.SealedType, sealed), sealed
		}
		p := d.payload(event, provenance.KindSegment, seq, nil)
		p.Media = []provenance.Media{m}
		p.Segment = &provenance.Segment{Index: uint32(i), Type: provenance.H264MediaType, Frames: list}
		env := d.sign(t, p)
		sum := sha256.Sum256(env)
		hashes = append(hashes, sum[:])
		c.segments = append(c.segments, &record{event: event, kind: provenance.KindSegment, seq: seq, env: env, body: bundle(t, env, obj)})
		c.frames = append(c.frames, frames)
		c.tUs = append(c.tUs, ts)
	}
	c.end = d.recordWith(t, event, provenance.KindEnd, seq+1, clipFrameJPEG(t, preRoll+2), hashes)
	return c
}

// probeMP4 writes b to a file and has ffprobe -v error read it: its stream
// (codec,width,height,frames counted), its packets (pts,flags) and what it
// wrote to stderr.
func probeMP4(t *testing.T, b []byte) (stream string, packets []string, stderr string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "clip.mp4")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, errs := h264test.Probe(t, file, "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=codec_name,width,height,nb_read_frames", "-of", "csv=p=0")
	pk, errs2 := h264test.Probe(t, file, "-select_streams", "v:0", "-show_entries", "packet=pts,flags", "-of", "csv=p=0")
	return strings.TrimSpace(out), strings.Fields(pk), errs + errs2
}

// TestClipMP4: an H.264 clip downloads as fragmented MP4 that ffprobe
// reads without a word on stderr: H.264 at 320×240, every signed frame
// decoded, each at its signed time from the clip's first frame, a key
// frame where each GOP begins, one fragment per segment. clip.mkv answers
// 409 naming clip.mp4; the page offers the MP4 and plays it in a video
// element (media-src 'self' in its CSP, the rest as closed as before).
func TestClipMP4(t *testing.T) {
	const nseg, perSeg, preRoll = 3, 10, 10
	aus := x264AccessUnits(t, nseg*perSeg, 10)
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	c := d.newH264Clip(t, "porch", 1, aus, nseg, perSeg, preRoll, nil)
	c.upload(e, true)
	base := "/events/" + d.id + "/porch/"

	code, b, h := e.getAs("alice", base+"clip.mp4")
	if code != http.StatusOK {
		t.Fatalf("clip.mp4: %d %s", code, b)
	}
	for k, v := range map[string]string{"Content-Type": "video/mp4", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
		"Content-Security-Policy": "default-src 'none'; sandbox", "Content-Disposition": `attachment; filename="` + d.id + `-porch.mp4"`} {
		if h.Get(k) != v {
			t.Errorf("clip.mp4 %s: %q, want %q", k, h.Get(k), v)
		}
	}
	if got := bytes.Count(b, []byte("moof")); got != nseg {
		t.Errorf("%d fragments, want one per segment (%d)", got, nseg)
	}
	stream, packets, stderr := probeMP4(t, b)
	if stderr != "" {
		t.Errorf("ffprobe -v error wrote: %s", stderr)
	}
	if want := "h264,320,240," + strconv.Itoa(nseg*perSeg); stream != want {
		t.Errorf("ffprobe: %q, want %q", stream, want)
	}
	if len(packets) != nseg*perSeg {
		t.Fatalf("%d packets, want %d", len(packets), nseg*perSeg)
	}
	for i, p := range packets {
		want := strconv.Itoa(i*9000) + ","
		if i%10 == 0 {
			want += "K"
		}
		if !strings.HasPrefix(p, want) || (i%10 != 0 && strings.Contains(p, "K")) {
			t.Errorf("packet %d: %s, want pts %s (90 kHz, the signed time from the first frame)", i, p, want)
		}
	}
	t.Logf("clip.mp4: %d bytes for %d frames of %d bytes", len(b), len(c.all), len(bytes.Join(c.all, nil)))

	// Range requests (a video element seeks with them) get the same bytes.
	for rng, want := range map[string][]byte{"bytes=1000-1999": b[1000:2000], "bytes=-500": b[len(b)-500:], "bytes=50000-": b[50000:]} {
		req, err := http.NewRequest(http.MethodGet, e.hs.URL+base+"clip.mp4", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.AddCookie(e.cookieOf("alice"))
		req.Header.Set("Range", rng)
		resp, err := e.hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, want) {
			t.Errorf("Range %s: %d, %d bytes (%v), want 206 and %d bytes of the file", rng, resp.StatusCode, len(got), err, len(want))
		}
	}
	// A multi-range request (each range would make the file again from
	// its start) gets the whole file once.
	req, err := http.NewRequest(http.MethodGet, e.hs.URL+base+"clip.mp4", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(e.cookieOf("alice"))
	req.Header.Set("Range", "bytes=0-0,"+strings.Repeat("10-10,", 2000)+"20-20")
	resp, err := e.hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, b) {
		t.Errorf("a request of 2002 ranges: %d, %d bytes (%v), want 200 and the whole file", resp.StatusCode, len(got), err)
	}
	if h.Get("Accept-Ranges") != "bytes" || h.Get("Content-Length") != strconv.Itoa(len(b)) {
		t.Errorf("clip.mp4: Accept-Ranges %q, Content-Length %q (of %d bytes)", h.Get("Accept-Ranges"), h.Get("Content-Length"), len(b))
	}

	code, body, _ := e.getAs("alice", base+"clip.mkv")
	if code != http.StatusConflict || !strings.Contains(string(body), "clip.mp4") {
		t.Errorf("clip.mkv of an H.264 clip: %d %q, want 409 naming clip.mp4", code, body)
	}
	code, page, h := e.getAs("alice", "/events/"+d.id+"/porch")
	if code != http.StatusOK {
		t.Fatalf("event page: %d", code)
	}
	for _, s := range []string{`<video id="clipvideo" src="` + base + `clip.mp4"`, `id="mp4"`, `&#34;video&#34;:true`, `id="preroll"`, `id="trigger"`, "Every frame verified"} {
		if !bytes.Contains(page, []byte(s)) {
			t.Errorf("event page lacks %s", s)
		}
	}
	if bytes.Contains(page, []byte(`id="mkv"`)) || bytes.Contains(page, []byte("clipcanvas")) {
		t.Error("an H.264 clip's page offers the Matroska download or the canvas")
	}
	if csp := h.Get("Content-Security-Policy"); csp != sealedPageCSP+"; media-src 'self'" {
		t.Errorf("event page CSP: %q", csp)
	}

	// A JPEG clip's page keeps the CSP without media, and clip.mp4 is 409.
	j := d.newTestClip(t, "jpeg", 10, 1, 3, 1)
	j.upload(e, true)
	if code, body, _ := e.getAs("alice", "/events/"+d.id+"/jpeg/clip.mp4"); code != http.StatusConflict || !strings.Contains(string(body), "not H.264") {
		t.Errorf("clip.mp4 of a JPEG clip: %d %q", code, body)
	}
	if _, _, h := e.getAs("alice", "/events/"+d.id+"/jpeg"); h.Get("Content-Security-Policy") != sealedPageCSP {
		t.Errorf("JPEG clip page CSP: %q", h.Get("Content-Security-Policy"))
	}
}

// TestClipMP4Gaps: a segment not stored is a gap as in clip.mkv: the frames
// either side keep their signed times (the frame before the gap lasts
// until the next one shown); frames a decoder cannot use are left out:
// after the gap until the next key frame, and before the clip's first key
// frame when segment 0 is missing. ffprobe still reads it without error.
func TestClipMP4Gaps(t *testing.T) {
	// Key frames every 8 frames, segments of 6: segment 2 (frames 12 to
	// 17) begins with two P frames, the key frame at 16.
	const nseg, perSeg, preRoll, gop = 5, 6, 6, 8
	aus := x264AccessUnits(t, nseg*perSeg, gop)
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	c := d.newH264Clip(t, "gaps", 1, aus, nseg, perSeg, preRoll, nil)
	c.upload(e, true, 1)
	code, b, _ := e.getAs("alice", "/events/"+d.id+"/gaps/clip.mp4")
	if code != http.StatusOK {
		t.Fatalf("clip.mp4 with segment 1 missing: %d %s", code, b)
	}
	// Frames 0-5, then 16-29 (12-15 wait for the key frame at 16).
	var want []int
	for k := range nseg * perSeg {
		if k < 6 || k >= 16 {
			want = append(want, k)
		}
	}
	stream, packets, stderr := probeMP4(t, b)
	if stderr != "" {
		t.Errorf("ffprobe -v error wrote: %s", stderr)
	}
	if w := "h264,320,240," + strconv.Itoa(len(want)); stream != w {
		t.Errorf("ffprobe: %q, want %q", stream, w)
	}
	if len(packets) != len(want) {
		t.Fatalf("%d packets, want %d", len(packets), len(want))
	}
	for i, k := range want {
		if !strings.HasPrefix(packets[i], strconv.Itoa(k*9000)+",") {
			t.Errorf("packet %d: %s, want frame %d at pts %d", i, packets[i], k, k*9000)
		}
	}
	code, page, _ := e.getAs("alice", "/events/"+d.id+"/gaps")
	if code != http.StatusOK || !bytes.Contains(page, []byte(`class="gap"`)) || !bytes.Contains(page, []byte("clip incomplete: 1 segment not delivered")) {
		t.Errorf("event page with a gap: %d, want the gap marked and the clip called incomplete", code)
	}

	// Segment 0 missing: the file starts at the first key frame stored
	// (frame 8), at its time from the first frame stored (frame 6).
	c2 := d.newH264Clip(t, "nofirst", 20, aus, nseg, perSeg, preRoll, nil)
	c2.upload(e, true, 0)
	code, b, _ = e.getAs("alice", "/events/"+d.id+"/nofirst/clip.mp4")
	if code != http.StatusOK {
		t.Fatalf("clip.mp4 without segment 0: %d %s", code, b)
	}
	stream, packets, stderr = probeMP4(t, b)
	if stderr != "" {
		t.Errorf("without segment 0: ffprobe -v error wrote: %s", stderr)
	}
	if w := "h264,320,240," + strconv.Itoa(nseg*perSeg-8); stream != w || len(packets) == 0 || !strings.HasPrefix(packets[0], "18000,K") {
		t.Errorf("without segment 0: %q, first packet %v, want %q starting with the key frame 0.2 s in", stream, packets[:min(1, len(packets))], w)
	}
}

// TestClipMP4Refused: a sealed H.264 clip (the receiver cannot read it)
// and a clip without a key frame get 409 with the reason; another owner,
// an admin and a signed-out request get none of it.
func TestClipMP4Refused(t *testing.T) {
	aus := x264AccessUnits(t, 30, 10)
	e := newEnv(t, Options{})
	a, b := newDevice(t), newDevice(t)
	e.enroll(a, "alice")
	e.enroll(b, "bob")
	e.account("ops", RoleAdmin)

	owner, err := e2ee.NewOwner(2)
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
	sc := a.newH264Clip(t, "sealed", 1, aus, 2, 5, 2, s)
	sc.upload(e, true)
	for _, p := range []string{"clip.mp4", "clip.mkv"} {
		if code, body, _ := e.getAs("alice", "/events/"+a.id+"/sealed/"+p); code != http.StatusConflict || !strings.Contains(string(body), "end-to-end encrypted") {
			t.Errorf("%s of a sealed H.264 clip: %d %q, want 409 saying it is end-to-end encrypted", p, code, body)
		}
	}
	if code, page, _ := e.getAs("alice", "/events/"+a.id+"/sealed"); code != http.StatusOK || bytes.Contains(page, []byte("<video")) || !bytes.Contains(page, []byte("does not yet play a sealed H.264 clip")) {
		t.Errorf("sealed H.264 clip page: %d, want no video and the reason", code)
	}

	// P frames only: no key frame to start from.
	nokey := a.newH264Clip(t, "nokey", 10, aus[1:], 1, 5, 2, nil)
	nokey.upload(e, true)
	if code, body, _ := e.getAs("alice", "/events/"+a.id+"/nokey/clip.mp4"); code != http.StatusConflict || !strings.Contains(string(body), "no H.264 key frame") {
		t.Errorf("clip.mp4 without a key frame: %d %q", code, body)
	}

	c := a.newH264Clip(t, "mine", 20, aus, 2, 5, 2, nil)
	c.upload(e, true)
	p := "/events/" + a.id + "/mine/clip.mp4"
	if code, _, _ := e.getAs("alice", p); code != http.StatusOK {
		t.Errorf("alice %s: %d", p, code)
	}
	for _, who := range []string{"bob", "ops"} {
		if code, body, _ := e.getAs(who, p); code == http.StatusOK || bytes.Contains(body, []byte("moof")) || bytes.Contains(body, []byte("ftyp")) {
			t.Errorf("%s %s: %d", who, p, code)
		}
	}
	if code, body, _ := e.get(p); code == http.StatusOK || bytes.Contains(body, []byte("ftyp")) {
		t.Errorf("signed out %s: %d", p, code)
	}
}

// TestClipMP4FileChanged: a segment's frames changed on disk after upload:
// clip.mp4 answers 500 before writing anything, as clip.mkv does.
func TestClipMP4FileChanged(t *testing.T) {
	aus := x264AccessUnits(t, 30, 10)
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	c := d.newH264Clip(t, "changed", 1, aus, 3, 10, 5, nil)
	c.upload(e, true)
	path := filepath.Join(e.dir, eventsDir, d.id, "changed-segment-2.0.h264")
	obj, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	obj[len(obj)-10] ^= 0x40
	if err := os.WriteFile(path, obj, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := e.getAs("alice", "/events/"+d.id+"/changed/clip.mp4"); code != http.StatusInternalServerError || bytes.Contains(body, []byte("ftyp")) {
		t.Errorf("clip.mp4 with a frame altered on disk: %d, want 500 and no file", code)
	}
}

// TestClipMP4CutOff: segment 5's file changed on disk while clip.mp4
// streams (after it was counted and its first bytes sent): the download is
// cut off (the handler aborts), nothing of segment 5 is sent, and it is
// counted as corrupt media, as for clip.mkv.
func TestClipMP4CutOff(t *testing.T) {
	// Six segments of about 30 KB: segment 5 is read after the first
	// 64 KB the handler buffers have gone out.
	aus := x264AccessUnits(t, 60, 10)
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	c := d.newH264Clip(t, "cut", 1, aus, 6, 10, 5, nil)
	c.upload(e, true)
	if n := len(bytes.Join(c.all[:50], nil)); n < 100<<10 {
		t.Fatalf("segments 0 to 4 are %d bytes: the test needs more than the handler's 64 KB buffer before segment 5", n)
	}
	path := filepath.Join(e.dir, eventsDir, d.id, "cut-segment-5.0.h264")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "/events/"+d.id+"/cut/clip.mp4", nil)
	req.Host = "localhost"
	req.AddCookie(e.cookieOf("alice"))
	w := &tamperOnWrite{ResponseRecorder: httptest.NewRecorder(), tamper: func() {
		bad := bytes.Clone(orig)
		bad[len(bad)/2] ^= 1
		if err := os.WriteFile(path, bad, 0o600); err != nil {
			t.Error(err)
		}
	}}
	before := e.srv.Stats().CorruptMedia
	got := func() (r any) {
		defer func() { r = recover() }()
		e.srv.Handler().ServeHTTP(w, req)
		return nil
	}()
	if got != http.ErrAbortHandler {
		t.Errorf("clip.mp4 with segment 5 changed while streaming: %v, want the handler aborted", got)
	}
	// Each frame of segment 5 by its last 32 bytes (AVCC keeps the NAL
	// units' bytes), where no frame before it has them.
	earlier := bytes.Join(c.all[:50], nil)
	for k, f := range c.frames[5] {
		tail := f[len(f)-32:]
		if bytes.Contains(earlier, tail) {
			t.Fatalf("segment 5 frame %d's last bytes are in an earlier frame: the test cannot tell them apart", k)
		}
		if bytes.Contains(w.Body.Bytes(), tail) {
			t.Errorf("segment 5 frame %d was sent after its file changed", k)
		}
	}
	if !bytes.Contains(w.Body.Bytes(), []byte("ftyp")) {
		t.Error("the download did not begin before the change (the test proves nothing)")
	}
	if e.srv.Stats().CorruptMedia != before+1 {
		t.Errorf("corrupt media counted %d, want %d", e.srv.Stats().CorruptMedia, before+1)
	}
}

// BenchmarkClipMP4 serves a 100 s H.264 clip (1,000 frames of libx264's
// testsrc2 at 640×480, 10 fps, a key frame every 50, in 20 segments) as
// clip.mp4: its verification (every record), the count and the writing,
// as a whole download and as a range request from the middle (a seek).
func BenchmarkClipMP4(b *testing.B) {
	dir := b.TempDir()
	srv, err := Open(Options{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	d := newDevice(b)
	if _, err := Enroll(dir, d.pem); err != nil {
		b.Fatal(err)
	}
	if err := Pair(dir, d.id, "alice"); err != nil {
		b.Fatal(err)
	}
	if _, err := (Accounts{Dir: dir}).Add("alice", RoleOwner); err != nil {
		b.Fatal(err)
	}
	cookie, err := srv.NewSession("alice")
	if err != nil {
		b.Fatal(err)
	}
	stream := h264test.Encode(b, 640, 480, 10, 1000, 50, "-preset", "veryfast", "-tune", "zerolatency", "-x264-params", "repeat-headers=1")
	aus, err := h264.SplitAccessUnits(stream)
	if err != nil {
		b.Fatal(err)
	}
	c := d.newH264Clip(b, "big", 1, aus, 20, 50, 30, nil)
	for _, r := range append(append([]*record{c.start}, c.segments...), c.end) {
		if res := srv.Ingest(r.body, Claim{}); res.Status != http.StatusCreated {
			b.Fatalf("ingest: %d %s", res.Status, res.Reason)
		}
	}
	total := int64(len(stream))
	h := srv.Handler()
	get := func(b *testing.B, rng string, want int) int {
		req := httptest.NewRequest(http.MethodGet, "/events/"+d.id+"/big/clip.mp4", nil)
		req.Host = "localhost"
		req.AddCookie(cookie)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != want {
			b.Fatalf("clip.mp4 %s: %d %s", rng, w.Code, w.Body.Bytes())
		}
		return w.Body.Len()
	}
	size := 0
	b.Run("whole", func(b *testing.B) {
		b.SetBytes(total)
		for b.Loop() {
			size = get(b, "", http.StatusOK)
		}
	})
	b.Run("seek", func(b *testing.B) {
		b.SetBytes(total)
		for b.Loop() {
			get(b, "bytes="+strconv.Itoa(size/2)+"-", http.StatusPartialContent)
		}
	})
	b.Logf("a %d-frame clip of %d bytes of access units: clip.mp4 %d bytes", len(aus), total, size)
}
