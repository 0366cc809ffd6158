package receiver

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/provenance"
)

// clipFrameJPEG is frame k of a test clip: 320×240, a bright square that
// moves 12 px a frame across a dim room, so frames look different.
func clipFrameJPEG(t testing.TB, k int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 320, 240))
	x0 := 10 + 12*k%280
	for y := range 240 {
		for x := range 320 {
			c := color.RGBA{uint8(30 + x/10), uint8(40 + y/10), 60, 255}
			if x >= x0 && x < x0+40 && y >= 90 && y < 150 {
				c = color.RGBA{240, 220, 90, 255}
			}
			img.Set(x, y, c)
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 80}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// testClip is an event with a clip, signed by a test device: its start
// record (the trigger frame), its segments and its end record listing them.
type testClip struct {
	event    string
	start    *record
	segments []*record  // body: the segment's bundle
	frames   [][][]byte // by segment
	tUs      [][]int64  // by segment
	end      *record
	all      [][]byte // every frame, in order
}

// newTestClip signs a clip of nseg segments of perSeg frames at 10 frames a
// second, preRoll of them before the trigger, with sequence numbers from
// seq: start, segments, end.
func (d *testDevice) newTestClip(t testing.TB, event string, seq uint64, nseg, perSeg, preRoll int) *testClip {
	t.Helper()
	return d.newTestClipOf(t, event, seq, nseg, perSeg, preRoll, func(k int) []byte { return clipFrameJPEG(t, k) })
}

// newTestClipOf is newTestClip with frame k made by frame.
func (d *testDevice) newTestClipOf(t testing.TB, event string, seq uint64, nseg, perSeg, preRoll int, frame func(k int) []byte) *testClip {
	t.Helper()
	c := &testClip{event: event}
	k := 0
	trigger := frame(preRoll)
	c.start = d.recordWith(t, event, provenance.KindStart, seq, trigger, nil)
	var hashes [][]byte
	for i := range nseg {
		seq++
		var frames [][]byte
		var list []provenance.ClipFrame
		var ts []int64
		for range perSeg {
			f := frame(k)
			tu := int64(k-preRoll) * 100_000
			frames = append(frames, f)
			list = append(list, provenance.NewClipFrame(f, tu))
			ts = append(ts, tu)
			c.all = append(c.all, f)
			k++
		}
		m, obj := provenance.SegmentMedia(provenance.FramesMediaType, frames)
		p := d.payload(event, provenance.KindSegment, seq, nil)
		p.Media = []provenance.Media{m}
		p.Segment = &provenance.Segment{Index: uint32(i), Type: "image/jpeg", Frames: list}
		env := d.sign(t, p)
		sum := sha256.Sum256(env)
		hashes = append(hashes, sum[:])
		c.segments = append(c.segments, &record{event: event, kind: provenance.KindSegment, seq: seq, env: env, body: bundle(t, env, obj)})
		c.frames = append(c.frames, frames)
		c.tUs = append(c.tUs, ts)
	}
	c.end = d.recordWith(t, event, provenance.KindEnd, seq+1, frame(preRoll+2), hashes)
	return c
}

// recordWith is a record of d with thumb as its thumbnail and, for an end
// record, the clip's segment list.
func (d *testDevice) recordWith(t testing.TB, event, kind string, seq uint64, thumb []byte, segments [][]byte) *record {
	t.Helper()
	p := d.payload(event, kind, seq, thumb)
	p.Motion = provenance.Motion{Frames: 9, PeakAreaPPM: 40000, Box: [4]int32{100, 90, 200, 150}, Width: 320, Height: 240}
	if kind == provenance.KindEnd {
		p.Motion.DurationMs = uint64(len(segments)) * 1000
	}
	p.Segments = segments
	env := d.sign(t, p)
	return &record{event: event, kind: kind, seq: seq, thumb: thumb, env: env, body: bundle(t, env, thumb)}
}

// upload stores the clip's records through the upload route, all but the
// segments in skip, the end record only if withEnd.
func (c *testClip) upload(e *testEnv, withEnd bool, skip ...int) {
	e.t.Helper()
	rs := []*record{c.start}
	for i, s := range c.segments {
		if !slicesContains(skip, i) {
			rs = append(rs, s)
		}
	}
	if withEnd {
		rs = append(rs, c.end)
	}
	for _, r := range rs {
		e.mustUpload(r, http.StatusCreated)
	}
}

func slicesContains(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func (c *testClip) frameCount() int { return len(c.all) }

// TestClipStored: the segments of an event are stored each under its own
// name (a second one does not collide with the first), survive a reopen,
// a re-send is a duplicate and another record for a stored index a
// conflict.
func TestClipStored(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	c := d.newTestClip(t, "clip-1", 1, 3, 4, 5)
	c.upload(e, true)
	dev := filepath.Join(e.dir, eventsDir, d.id)
	for i := range 3 {
		obj, err := os.ReadFile(filepath.Join(dev, fmt.Sprintf("clip-1-segment-%d.0.mjpeg", i)))
		if err != nil {
			t.Fatal(err)
		}
		if want := bytes.Join(c.frames[i], nil); !bytes.Equal(obj, want) {
			t.Errorf("segment %d's stored frames differ from the uploaded ones", i)
		}
		if env, err := os.ReadFile(filepath.Join(dev, fmt.Sprintf("clip-1-segment-%d.cose", i))); err != nil || !bytes.Equal(env, c.segments[i].env) {
			t.Errorf("segment %d's envelope: %v", i, err)
		}
	}
	for _, f := range []string{"clip-1-start.cose", "clip-1-start.0.jpg", "clip-1-end.cose", "clip-1-end.0.jpg"} {
		if _, err := os.Stat(filepath.Join(dev, f)); err != nil {
			t.Errorf("start and end keep their file names: %v", err)
		}
	}
	// Identical re-send; another segment 1 (a new signature, a later seq).
	if code, _ := e.put(c.segments[1].path(), c.segments[1].body); code != http.StatusOK {
		t.Errorf("re-sending segment 1: %d, want 200 (a duplicate)", code)
	}
	other := d.newTestClip(t, "clip-1", 10, 2, 2, 0).segments[1]
	if code, reply := e.put(other.path(), other.body); code != http.StatusConflict || !strings.Contains(reply, "segment-1") {
		t.Errorf("another segment 1 of the event: %d %q, want 409 naming segment-1", code, reply)
	}
	e.close()
	e.open(Options{})
	rep, err := CheckStore(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 || rep.Records != 5 {
		t.Errorf("check after reopen: %d records, problems %v", rep.Records, rep.Problems)
	}
	code, page, _ := e.getAs("alice", "/events/"+d.id+"/clip-1")
	if code != http.StatusOK || !bytes.Contains(page, []byte("Every frame verified: 12 frames in 3 segment(s)")) {
		t.Errorf("event page after reopen: %d", code)
	}
}

// TestClipPage: the event page of a complete clip says every frame
// verified and holds the player with its pre-roll and trigger marks; one
// with a segment the camera never delivered says "clip incomplete"; one
// without its end record says it is still uploading; the list counts the
// segments.
func TestClipPage(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	full := d.newTestClip(t, "full", 1, 3, 4, 5)
	full.upload(e, true)
	holed := d.newTestClip(t, "holed", 10, 4, 3, 2)
	holed.upload(e, true, 1, 2)
	open := d.newTestClip(t, "open", 20, 3, 3, 2)
	open.upload(e, false)
	evicted := d.newTestClip(t, "evicted", 30, 3, 2, 1)
	evicted.upload(e, true, 0, 1, 2)

	page := func(event string) string {
		t.Helper()
		code, b, h := e.getAs("alice", "/events/"+d.id+"/"+event)
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", event, code, b)
		}
		// The player's script from this origin, only on a page that plays.
		csp := h.Get("Content-Security-Policy")
		if scripts := strings.Contains(csp, "script-src 'self'"); scripts != bytes.Contains(b, []byte(`id="player"`)) || strings.Contains(csp, "unsafe-eval") || strings.Contains(csp, "script-src 'unsafe-inline'") {
			t.Errorf("%s: CSP %q", event, csp)
		}
		return string(b)
	}
	p := page("full")
	for _, want := range []string{`id="player"`, `id="preroll" style="left: 0; width: 45.45%"`, `id="trigger" style="left: 45.45%"`, "Every frame verified: 12 frames in 3 segment(s)",
		`/events/` + d.id + `/full/clip.mkv`, `/events/` + d.id + `/full/records.zip`, `/static/playback.js`, `-0.500 s to &#43;0.600 s from the trigger`, "delete its 5 record(s)"} {
		if !strings.Contains(p, want) {
			t.Errorf("full clip's page lacks %q", want)
		}
	}
	if strings.Contains(p, "incomplete") || strings.Contains(p, "Still uploading") {
		t.Error("a complete clip's page says it is incomplete")
	}
	if p = page("holed"); !strings.Contains(p, "clip incomplete: 2 segments not delivered (of 4 the end record lists: 1, 2)") || !strings.Contains(p, `class="gap"`) {
		t.Errorf("a clip with two segments never delivered: page lacks the incomplete note or the gap")
	}
	if !strings.Contains(p, "Every frame verified: 6 frames in 2 segment(s)") {
		t.Error("the delivered segments of an incomplete clip are not verified")
	}
	if p = page("open"); !strings.Contains(p, "Still uploading, or interrupted: no end record yet") || strings.Contains(p, "incomplete") {
		t.Error("a clip without its end record: page lacks the uploading note")
	}
	if p = page("evicted"); !strings.Contains(p, "clip incomplete: 3 segments not delivered") || strings.Contains(p, `id="player"`) || strings.Contains(p, "records.zip") {
		t.Error("a clip none of whose segments arrived: page lacks the incomplete note, or offers a player or download")
	}
	_, list, _ := e.getAs("alice", "/")
	if !bytes.Contains(list, []byte("start and end records, 3 clip segments")) {
		t.Error("the list does not count the clip's segments")
	}
	if code, _, _ := e.getAs("alice", "/events/"+d.id+"/open/records.zip"); code != http.StatusOK {
		t.Errorf("records of a clip still uploading: %d", code)
	}
}

// TestClipDownloads: the Matroska download holds every frame byte for byte
// (ffprobe counts them when it is installed), the records zip verifies
// with VerifyClip after unpacking, and a stored frame changed on disk is
// refused, never served.
func TestClipDownloads(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	c := d.newTestClip(t, "dl", 1, 3, 5, 4)
	c.upload(e, true)
	base := "/events/" + d.id + "/dl/"

	code, mkvb, h := e.getAs("alice", base+"clip.mkv")
	if code != http.StatusOK || h.Get("Content-Type") != "video/x-matroska" {
		t.Fatalf("clip.mkv: %d %s", code, h.Get("Content-Type"))
	}
	at := 0
	for i, f := range c.all {
		j := bytes.Index(mkvb[at:], f)
		if j < 0 {
			t.Fatalf("frame %d is not in the Matroska file, in order", i)
		}
		at += j + len(f)
	}
	t.Logf("clip.mkv: %d bytes for %d frames of %d bytes", len(mkvb), c.frameCount(), len(bytes.Join(c.all, nil)))
	if n, ok := ffprobeFrames(t, mkvb); ok && n != c.frameCount() {
		t.Errorf("ffprobe counts %d frames, want %d", n, c.frameCount())
	}

	code, zb, _ := e.getAs("alice", base+"records.zip")
	if code != http.StatusOK {
		t.Fatalf("records.zip: %d", code)
	}
	dir := unzipTo(t, zb)
	cl := readClipDirForTest(t, filepath.Join(dir, "dl"))
	clip, err := provenance.VerifyClip(cl.end, cl.segments, nil)
	if err != nil {
		t.Fatalf("the unpacked records do not verify: %v", err)
	}
	if clip.Frames != c.frameCount() || clip.FirstUs != -400_000 {
		t.Errorf("verified clip: %d frames from %d µs", clip.Frames, clip.FirstUs)
	}
	if _, err := os.Stat(filepath.Join(dir, "dl", "start.cose")); err != nil {
		t.Errorf("the start record is not in the zip: %v", err)
	}

	// A frame changed on disk: nothing of the clip is served.
	path := filepath.Join(e.dir, eventsDir, d.id, "dl-segment-1.0.mjpeg")
	obj, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	obj[len(c.frames[1][0])+100] ^= 0x40
	if err := os.WriteFile(path, obj, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{base + "clip.mkv", base + "records.zip", "/events/" + d.id + "/dl", "/media/" + d.id + "/dl/segment-1/0"} {
		if code, _, _ := e.getAs("alice", p); code != http.StatusInternalServerError {
			t.Errorf("%s with a frame altered on disk: %d, want 500", p, code)
		}
	}
}

// TestClipOwnerOnly: another owner, an admin and a signed-out request get
// none of the clip's routes.
func TestClipOwnerOnly(t *testing.T) {
	e := newEnv(t, Options{})
	a, b := newDevice(t), newDevice(t)
	e.enroll(a, "alice")
	e.enroll(b, "bob")
	e.account("ops", RoleAdmin)
	c := a.newTestClip(t, "mine", 1, 2, 3, 1)
	c.upload(e, true)
	paths := []string{"/events/" + a.id + "/mine", "/events/" + a.id + "/mine/clip.mkv", "/events/" + a.id + "/mine/records.zip", "/media/" + a.id + "/mine/segment-0/0"}
	for _, p := range paths {
		if code, _, _ := e.getAs("alice", p); code != http.StatusOK {
			t.Errorf("alice %s: %d", p, code)
		}
		for _, who := range []string{"bob", "ops"} {
			if code, body, _ := e.getAs(who, p); code == http.StatusOK || bytes.Contains(body, c.all[0][:64]) {
				t.Errorf("%s %s: %d", who, p, code)
			}
		}
		if code, body, _ := e.get(p); code == http.StatusOK || bytes.Contains(body, c.all[0][:64]) {
			t.Errorf("signed out %s: %d", p, code)
		}
	}
}

// TestClipDeleted: deleting an event removes its segments' files too, and
// they stay deleted after a reopen.
func TestClipDeleted(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	c := d.newTestClip(t, "gone", 1, 3, 2, 1)
	c.upload(e, true)
	code, _, _ := e.do(http.MethodPost, "/events/"+d.id+"/gone/delete", strings.NewReader("confirm=yes"), e.cookieOf("alice"))
	if code != http.StatusOK && code != http.StatusSeeOther {
		t.Fatalf("delete: %d", code)
	}
	left, err := filepath.Glob(filepath.Join(e.dir, eventsDir, d.id, "gone-*"))
	if err != nil || len(left) != 0 {
		t.Errorf("files left after deleting the event: %v %v", left, err)
	}
	e.close()
	e.open(Options{})
	if code, _, _ := e.getAs("alice", "/events/"+d.id+"/gone"); code != http.StatusNotFound {
		t.Errorf("the deleted event after a reopen: %d", code)
	}
	if code, _ := e.put(c.segments[2].path(), c.segments[2].body); code != http.StatusOK {
		t.Errorf("a deleted segment sent again: %d, want 200 (a duplicate that stays deleted)", code)
	}
	if code, _, _ := e.getAs("alice", "/media/"+d.id+"/gone/segment-2/0"); code != http.StatusNotFound {
		t.Errorf("the deleted segment's frames: %d", code)
	}
}

// ffprobeFrames counts the video frames of a Matroska file with ffprobe; ok
// is false (the test logs why) without ffprobe outside CI.
func ffprobeFrames(t *testing.T, mkvb []byte) (int, bool) {
	t.Helper()
	bin, err := exec.LookPath("ffprobe")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("ffprobe is not installed (scripts/ensure-test-deps.sh installs ffmpeg)")
		}
		t.Log("ffprobe is not installed: the frame count is not checked by it")
		return 0, false
	}
	path := filepath.Join(t.TempDir(), "clip.mkv")
	if err := os.WriteFile(path, mkvb, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_frames,codec_name", "-of", "default=nw=1", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe: %v: %s", err, out)
	}
	s := string(out)
	if !strings.Contains(s, "codec_name=mjpeg") {
		t.Errorf("ffprobe: %s, want codec mjpeg", s)
	}
	_, after, _ := strings.Cut(s, "nb_read_frames=")
	n, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(after, "\n", 2)[0]))
	if err != nil {
		t.Fatalf("ffprobe: %s", s)
	}
	return n, true
}

// unzipTo unpacks a zip into a new directory.
func unzipTo(t *testing.T, zb []byte) string {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(zb), int64(len(zb)))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, f := range zr.File {
		if strings.Contains(f.Name, "..") || strings.HasPrefix(f.Name, "/") {
			t.Fatalf("zip entry %q leaves its directory", f.Name)
		}
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if _, err := b.ReadFrom(rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		p := filepath.Join(dir, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// testClipDir is a clip read back from a directory of the §8.2 layout
// (the command's reader is in package main; this one is as plain).
type testClipDir struct {
	end      []byte
	segments []provenance.ClipSegment
}

func readClipDirForTest(t *testing.T, dir string) *testClipDir {
	t.Helper()
	c := &testClipDir{}
	var err error
	if c.end, err = os.ReadFile(filepath.Join(dir, "end.cose")); err != nil {
		t.Fatal(err)
	}
	envs, err := filepath.Glob(filepath.Join(dir, "segment-*.cose"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range envs {
		env, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		names, err := filepath.Glob(filepath.Join(strings.TrimSuffix(p, ".cose"), "frame-*.jpg"))
		if err != nil {
			t.Fatal(err)
		}
		frames := [][]byte{}
		for _, n := range names {
			f, err := os.ReadFile(n)
			if err != nil {
				t.Fatal(err)
			}
			frames = append(frames, f)
		}
		c.segments = append(c.segments, provenance.ClipSegment{Envelope: env, Frames: frames})
	}
	return c
}

// BenchmarkClip times the event page of a clip of 20 segments of 50
// frames of about 50 KB (640×480; 50 MB: 100 s at 10 fps), which verifies
// every frame of it, and its Matroska download; bytes/s are the clip's.
func BenchmarkClip(b *testing.B) {
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
	rng := rand.New(rand.NewPCG(1, 2))
	var frames [][]byte
	for range 8 {
		img := image.NewRGBA(image.Rect(0, 0, 640, 480))
		for i := range img.Pix {
			img.Pix[i] = uint8(rng.IntN(64)) + 96
		}
		var buf bytes.Buffer
		if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 60}); err != nil {
			b.Fatal(err)
		}
		frames = append(frames, buf.Bytes())
	}
	c := d.newTestClipOf(b, "big", 1, 20, 50, 30, func(k int) []byte { return frames[k%len(frames)] })
	for _, r := range append(append([]*record{c.start}, c.segments...), c.end) {
		if res := srv.Ingest(r.body, Claim{}); res.Status != http.StatusCreated {
			b.Fatalf("ingest: %d %s", res.Status, res.Reason)
		}
	}
	total := int64(len(bytes.Join(c.all, nil)))
	h := srv.Handler()
	get := func(b *testing.B, path string) int {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Host = "localhost"
		req.AddCookie(cookie)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("%s: %d %s", path, w.Code, w.Body.Bytes())
		}
		return w.Body.Len()
	}
	b.Run("page", func(b *testing.B) {
		b.SetBytes(total)
		for b.Loop() {
			get(b, "/events/"+d.id+"/big")
		}
	})
	b.Run("mkv", func(b *testing.B) {
		b.SetBytes(total)
		n := 0
		for b.Loop() {
			n = get(b, "/events/"+d.id+"/big/clip.mkv")
		}
		b.ReportMetric(float64(n-int(total))/float64(len(c.all)), "overhead-B/frame")
	})
}

// TestIndexSegmentField: an index line's segment index goes with kind
// segment only; a segment line without one (stored by a receiver that kept
// one segment per event) is read, named by its kind as it was stored.
func TestIndexSegmentField(t *testing.T) {
	d := newDevice(t)
	line := func(kind, seg string) []byte {
		return fmt.Appendf(nil, `{"device":%q,"event":"ev","kind":%q,"seq":1,"time_unix_ms":0,"clock":"synced","boot":"b","keystore":"file","duration_ms":0,"peak_area_ppm":0,"media":[],"envelope_sha256":"%s","received_at":"2025-11-24T12:00:00Z"%s}`,
			d.id, kind, strings.Repeat("ab", 32), seg)
	}
	if e, err := parseIndexLine(line("segment", `,"segment":7`)); err != nil || e.name() != "segment-7" || !strings.HasSuffix(envelopePath("/d", e), "ev-segment-7.cose") {
		t.Errorf("a segment line: %v", err)
	}
	if e, err := parseIndexLine(line("segment", "")); err != nil || e.name() != "segment" {
		t.Errorf("a segment line without its index: %v", err)
	}
	if _, err := parseIndexLine(line("start", `,"segment":0`)); err == nil || !strings.Contains(err.Error(), "segment index 0") {
		t.Errorf("a start line with a segment index: %v", err)
	}
}

// tamperOnWrite is a ResponseWriter that runs tamper once, at the first
// write of the body: the stored files change while a download streams.
type tamperOnWrite struct {
	*httptest.ResponseRecorder
	tamper func()
	done   bool
}

func (w *tamperOnWrite) Write(p []byte) (int, error) {
	if !w.done {
		w.done = true
		w.tamper()
	}
	return w.ResponseRecorder.Write(p)
}

// TestClipDownloadCutOff: a segment's file changed on disk after the
// download verified it is not sent: the download is cut off (the handler
// aborts), counted as corrupt media.
func TestClipDownloadCutOff(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	c := d.newTestClip(t, "cut", 1, 3, 6, 4) // 18 frames, each its own
	c.upload(e, true)
	cookie := e.cookieOf("alice")
	for _, p := range []string{"clip.mkv", "records.zip"} {
		path := filepath.Join(e.dir, eventsDir, d.id, "cut-segment-2.0.mjpeg")
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodGet, "/events/"+d.id+"/cut/"+p, nil)
		req.Host = "localhost"
		req.AddCookie(cookie)
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
			t.Errorf("%s with segment 2 changed while streaming: %v, want the handler aborted", p, got)
		}
		if bytes.Contains(w.Body.Bytes(), c.frames[2][0]) {
			t.Errorf("%s: segment 2's frames were sent after its file changed", p)
		}
		if !bytes.Contains(w.Body.Bytes(), c.frames[0][0]) {
			t.Errorf("%s: the download did not begin before the change (the test proves nothing)", p)
		}
		if e.srv.Stats().CorruptMedia != before+1 {
			t.Errorf("%s: corrupt media counted %d, want %d", p, e.srv.Stats().CorruptMedia, before+1)
		}
		if err := os.WriteFile(path, orig, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
