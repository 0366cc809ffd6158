package receiver

import (
	"archive/zip"
	"bytes"
	"cmp"
	"crypto/sha256"
	_ "embed" // the player's script
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyframe-cam/keyframe/internal/mkv"
	"github.com/keyframe-cam/keyframe/provenance"
)

// Playback of an event's clip (docs/pages.md): its segment records
// (docs/envelope.md §4.4) verified as a clip, the player on the event page,
// and the two downloads: the clip as a Matroska file of its JPEG frames,
// and its records with the frames in the layout of docs/envelope.md §8.2.
//
// The clip is verified again for every page and download, from the stored
// files, holding at most two segments in memory: each segment record is
// re-verified on its own (verifyStoredFull: signature, enrolled key, index,
// every frame's hash), then with the segment before it against the end
// record (provenance.VerifyClip of the pair), which checks the end
// record's list, the order of sequence numbers and the frames' times
// across segments. Segments the end record lists that are not stored are
// counted, not an error: the camera may have evicted them (its spool's
// clip budget) or they have not arrived yet.

// clipSegment is one stored segment of a clip, verified.
type clipSegment struct {
	entry  *indexEntry
	frames []provenance.ClipFrame // from the signed payload
	typ    string                 // segment.type
	sealed bool                   // its media is end-to-end encrypted (docs/e2ee.md §7)
}

// clipInfo is what eventClip established about an event's clip.
type clipInfo struct {
	end      *indexEntry   // nil: no end record stored (yet)
	segments []clipSegment // stored ones, by index
	listed   int           // segments the end record lists; -1 without one
	missing  []int         // indices listed (or, without an end, below the highest stored) but not stored
	frames   int
	firstUs  int64
	lastUs   int64
	width    int // the first frame's size (0 if it cannot be read)
	height   int
	sealed   bool // a segment is end-to-end encrypted
	// problem says why the clip does not verify ("" if it does, apart
	// from missing segments).
	problem string
}

// eventClip verifies the clip of an event from the records the owner may
// see (ownerRecords): nil if the event has no clip. A record that does not
// verify on its own is a reason (as verifyStored), the caller refuses to
// serve anything then; a clip whose records verify but do not make a clip
// has clipInfo.problem.
func (s *Server) eventClip(reg *registry, recs []*indexEntry) (*clipInfo, string) {
	var end *indexEntry
	var segs []*indexEntry
	for _, e := range recs {
		switch {
		case e.Kind == provenance.KindEnd:
			end = e
		case e.Kind == provenance.KindSegment && e.Segment != nil:
			segs = append(segs, e)
		}
	}
	ci := &clipInfo{end: end, listed: -1}
	var endEnv []byte
	if end != nil {
		env, _, v, reason := verifyStoredFull(s.dir, reg, end)
		if reason != "" {
			return nil, reason
		}
		endEnv = env
		ci.listed = len(v.Payload.Segments)
	}
	if len(segs) == 0 && ci.listed <= 0 {
		return nil, ""
	}
	slices.SortFunc(segs, func(a, b *indexEntry) int { return cmp.Compare(*a.Segment, *b.Segment) })
	var prev *provenance.ClipSegment
	for _, e := range segs {
		env, media, v, reason := verifyStoredFull(s.dir, reg, e)
		if reason != "" {
			return nil, reason
		}
		cur := provenance.ClipSegment{Envelope: env, Media: media[0]}
		window := []provenance.ClipSegment{cur}
		if prev != nil {
			window = []provenance.ClipSegment{*prev, cur}
		}
		if ci.problem == "" {
			if _, err := provenance.VerifyClip(endEnv, window, v.Key); err != nil && !onlyMissing(err) {
				ci.problem = strings.TrimPrefix(err.Error(), "provenance: clip: ")
			}
		}
		seg := v.Payload.Segment
		sealed := e.Media[0].Type == sealedType
		ci.sealed = ci.sealed || sealed
		switch {
		case len(ci.segments) > 0:
		case sealed:
			// The frames are ciphertext here: the record's frame size, and
			// the player takes the size of the first frame it opens.
			ci.width, ci.height = int(v.Payload.Motion.Width), int(v.Payload.Motion.Height)
		case seg.Type == "image/jpeg":
			if cfg, _, err := image.DecodeConfig(bytes.NewReader(media[0][:seg.Frames[0].Size])); err == nil {
				ci.width, ci.height = cfg.Width, cfg.Height
			}
		case seg.Type == provenance.H264MediaType:
			ci.width, ci.height = h264Size(media[0][:seg.Frames[0].Size])
		}
		ci.segments = append(ci.segments, clipSegment{entry: e, frames: seg.Frames, typ: seg.Type, sealed: sealed})
		ci.frames += len(seg.Frames)
		prev = &cur
	}
	want := ci.listed
	if want < 0 && len(segs) > 0 {
		want = int(*segs[len(segs)-1].Segment) + 1
	}
	have := map[uint32]bool{}
	for _, sg := range ci.segments {
		have[*sg.entry.Segment] = true
	}
	for i := range want {
		if !have[uint32(i)] {
			ci.missing = append(ci.missing, i)
		}
	}
	if len(ci.segments) > 0 {
		first, last := ci.segments[0].frames, ci.segments[len(ci.segments)-1].frames
		ci.firstUs, ci.lastUs = first[0].TUs, last[len(last)-1].TUs
	}
	return ci, ""
}

// onlyMissing reports whether VerifyClip's error is only that segments are
// missing from the clip (its completeness step, after every other check
// passed for the segments given).
func onlyMissing(err error) bool {
	var ce *provenance.ClipError
	return errors.As(err, &ce) && ce.Problem == provenance.ClipMissing && ce.Record == -1 && ce.Frame == -1
}

// jpegOnly reports whether every stored segment's frames are JPEG (what the
// Matroska download and the player take).
func (ci *clipInfo) jpegOnly() bool {
	for _, sg := range ci.segments {
		if sg.typ != "image/jpeg" {
			return false
		}
	}
	return len(ci.segments) > 0
}

// clipPage is the clip's part of the event page.
type clipPage struct {
	Status     string // what was verified
	Verified   bool   // every stored frame verified, and the clip as a whole
	Incomplete string // "clip incomplete: N segments not delivered", or ""
	Uploading  string // no end record yet: what that means, or ""
	Problem    string // why the clip does not verify, or ""
	Playable   bool
	Sealed     bool // end-to-end encrypted: no download of a video, the player opens the frames
	H264       bool // H.264: a video element plays MP4URL
	Device     string
	Event      string
	Manifest   string // JSON for the player (playerManifest)
	Width      int
	Height     int
	Frames     int
	Span       string // "-2.000 s to +5.300 s from the trigger"
	MKVURL     string
	MP4URL     string
	ZipURL     string
	// The scrub bar: its range in milliseconds from the trigger, the
	// pre-roll's part of it, the trigger frame's place, where segments are
	// missing.
	FirstMs, LastMs int64
	PreRoll         *barMark
	Trigger         barMark
	Gaps            []barMark
}

// playerManifest is what the player script reads from the page.
type playerManifest struct {
	FirstUs   int64 `json:"first_us"`
	LastUs    int64 `json:"last_us"`
	TriggerUs int64 `json:"trigger_us"` // the trigger frame's time: 0, or the first frame after 0
	// Video is set for an H.264 clip: the page's video element plays
	// clip.mp4, whose time 0 is first_us; the player fetches no segment.
	Video    bool            `json:"video,omitempty"`
	Segments []playerSegment `json:"segments"`
}

type playerSegment struct {
	Index  uint32     `json:"index"`
	URL    string     `json:"url"`
	Frames [][2]int64 `json:"frames"` // size, t_us
	// Sealed segments (docs/e2ee.md): the player checks the segment's
	// envelope, opens its media with the browser's key and checks every
	// frame against the signed record before drawing any.
	Sealed   bool   `json:"sealed,omitempty"`
	Envelope string `json:"envelope,omitempty"`
}

// barMark is a mark on the scrub bar: its left edge and width, in percent
// of the clip's span.
type barMark struct {
	Left, Width string
}

func floorMs(us int64) int64 {
	if us < 0 {
		return -((-us + 999) / 1000)
	}
	return us / 1000
}

func ceilMs(us int64) int64 { return -floorMs(-us) }

func newClipPage(ci *clipInfo, device, event string) *clipPage {
	cp := &clipPage{
		Frames: ci.frames,
		Width:  ci.width,
		Height: ci.height,
		MKVURL: "/events/" + device + "/" + event + "/clip.mkv",
		MP4URL: "/events/" + device + "/" + event + "/clip.mp4",
		Device: device,
		Event:  event,
		ZipURL: "/events/" + device + "/" + event + "/records.zip",
	}
	n := len(ci.segments)
	switch {
	case ci.problem != "":
		cp.Problem = "The clip does not verify: " + ci.problem + ". Its records verify one by one; it is not played."
		cp.Status = fmt.Sprintf("%d segment record(s) stored, each verified on its own.", n)
	case n == 0:
		cp.Status = "No segment of the clip is stored."
	case ci.end != nil:
		cp.Verified = true
		cp.Status = fmt.Sprintf("Every frame verified: %d frames in %d segment(s), each frame's SHA-256 and time as the camera signed them, and each segment is the one the end record lists for its place (checked now, from the stored files).", ci.frames, n)
	default:
		cp.Verified = true
		cp.Status = fmt.Sprintf("Every frame of the %d segment(s) stored verified: %d frames, each frame's SHA-256 and time as the camera signed them, in order (checked now, from the stored files).", n, ci.frames)
	}
	if len(ci.missing) > 0 && ci.end != nil {
		cp.Incomplete = fmt.Sprintf("clip incomplete: %d segments not delivered", len(ci.missing))
		if len(ci.missing) == 1 {
			cp.Incomplete = "clip incomplete: 1 segment not delivered"
		}
		cp.Incomplete += fmt.Sprintf(" (of %d the end record lists: %s)", ci.listed, intList(ci.missing))
	}
	if ci.end == nil {
		cp.Uploading = "Still uploading, or interrupted: no end record yet, so nothing shows yet how many segments the clip has."
		if len(ci.missing) > 0 {
			cp.Uploading += fmt.Sprintf(" Segment(s) %s, before the last one stored, have not arrived.", intList(ci.missing))
		}
	}
	if n == 0 || ci.problem != "" {
		return cp
	}
	cp.Span = fmt.Sprintf("%s to %s from the trigger", fmtSeconds(ci.firstUs), fmtSeconds(ci.lastUs))
	switch {
	case ci.h264Only() && ci.sealed:
		cp.Status = fmt.Sprintf("End-to-end encrypted H.264: %d segment record(s) verified here (the signature and the SHA-256 of each segment's sealed frames). This receiver cannot see the frames, and this page does not yet play a sealed H.264 clip; download its records and open them with your keys.", n)
		return cp
	case ci.h264Only():
		cp.H264 = true
	case !ci.jpegOnly():
		cp.Status += " Its frames are neither JPEG nor H.264, so the page does not play them and there is no video to download."
		return cp
	}
	if ci.sealed {
		cp.Sealed = true
		cp.Status = fmt.Sprintf("End-to-end encrypted: %d segment record(s) verified here (the signature and the SHA-256 of each segment's sealed frames). This receiver cannot see the frames; your browser opens each segment with its own key and checks every frame's SHA-256 and time against the signed record before drawing it.", n)
		if ci.end != nil && len(ci.missing) == 0 {
			cp.Status += " Each segment is the one the end record lists for its place."
		}
	}
	cp.Playable = true
	cp.FirstMs, cp.LastMs = floorMs(ci.firstUs), ceilMs(ci.lastUs)
	span := max(ci.lastUs-ci.firstUs, 1)
	pct := func(us int64) string {
		return strconv.FormatFloat(100*float64(us-ci.firstUs)/float64(span), 'f', 2, 64)
	}
	trigger := ci.lastUs
	for _, sg := range ci.segments {
		if i := slices.IndexFunc(sg.frames, func(f provenance.ClipFrame) bool { return f.TUs >= 0 }); i >= 0 {
			trigger = sg.frames[i].TUs
			break
		}
	}
	cp.Trigger = barMark{Left: pct(trigger)}
	if ci.firstUs < 0 {
		cp.PreRoll = &barMark{Left: "0", Width: pct(min(0, ci.lastUs))}
	}
	m := playerManifest{FirstUs: ci.firstUs, LastUs: ci.lastUs, TriggerUs: trigger, Video: cp.H264, Segments: []playerSegment{}}
	var prev *clipSegment
	for i := range ci.segments {
		sg := &ci.segments[i]
		ps := playerSegment{Index: *sg.entry.Segment, URL: "/media/" + device + "/" + event + "/" + sg.entry.name() + "/0"}
		if sg.sealed {
			ps.Sealed, ps.Envelope = true, "/envelope/"+device+"/"+event+"/"+sg.entry.name()
		}
		for _, f := range sg.frames {
			ps.Frames = append(ps.Frames, [2]int64{int64(f.Size), f.TUs})
		}
		m.Segments = append(m.Segments, ps)
		if prev != nil && *sg.entry.Segment != *prev.entry.Segment+1 {
			from, to := prev.frames[len(prev.frames)-1].TUs, sg.frames[0].TUs
			cp.Gaps = append(cp.Gaps, barMark{Left: pct(from), Width: strconv.FormatFloat(100*float64(to-from)/float64(span), 'f', 2, 64)})
		}
		prev = sg
	}
	b, err := json.Marshal(m)
	if err != nil {
		cp.Playable = false
		return cp
	}
	cp.Manifest = string(b)
	return cp
}

func intList(xs []int) string {
	const most = 20
	var parts []string
	for i, x := range xs {
		if i == most {
			parts = append(parts, fmt.Sprintf("and %d more", len(xs)-most))
			break
		}
		parts = append(parts, strconv.Itoa(x))
	}
	return strings.Join(parts, ", ")
}

// fmtSeconds writes a time relative to the trigger: "-2.000 s", "+5.300 s".
func fmtSeconds(us int64) string {
	sign := "+"
	if us < 0 {
		sign, us = "-", -us
	}
	return fmt.Sprintf("%s%d.%03d s", sign, us/1e6, us%1e6/1e3)
}

// clipFor answers a download request: the owner's records of the event and
// its verified clip, or it has answered (404 for no such event or no clip,
// 500 for a stored record that no longer verifies, 409 for a clip that does
// not verify).
func (s *Server) clipFor(w http.ResponseWriter, r *http.Request, u *user) ([]*indexEntry, *clipInfo, bool) {
	device, event := r.PathValue("device"), r.PathValue("event")
	recs, reg, ok := s.ownerRecords(w, r, u.name, device, event)
	if !ok {
		return nil, nil, false
	}
	ci, reason := s.eventClip(reg, recs)
	if reason != "" {
		s.mu.Lock()
		s.stats.CorruptMedia++
		s.mu.Unlock()
		s.log.Error("receiver: stored record no longer verifies; not serving it", "device", device, "event", event, "reason", reason)
		writeLine(w, http.StatusInternalServerError, "stored record does not match its signature")
		return nil, nil, false
	}
	if ci == nil || len(ci.segments) == 0 {
		writeLine(w, http.StatusNotFound, "this event has no clip stored")
		return nil, nil, false
	}
	return recs, ci, true
}

// readChecked reads a stored file and checks it is still the one the index
// names by its SHA-256 (hex), verified before the download began.
func readChecked(path, sha string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != sha {
		return nil, fmt.Errorf("%s changed on disk", path)
	}
	return b, nil
}

// abortDownload ends a download whose stored files changed after it began
// verifying them: the response is cut off (the client sees a failed
// download, never a file with a frame that does not verify).
func (s *Server) abortDownload(what string, err error) {
	s.mu.Lock()
	s.stats.CorruptMedia++
	s.mu.Unlock()
	s.log.Error("receiver: download cut off: a stored file no longer verifies", "download", what, "err", err)
	panic(http.ErrAbortHandler)
}

// handleClipMKV streams the clip as a Matroska file of its JPEG frames at
// their signed times (t_us, from the first frame), one segment in memory at
// a time.
func (s *Server) handleClipMKV(w http.ResponseWriter, r *http.Request, u *user) {
	_, ci, ok := s.clipFor(w, r, u)
	if !ok {
		return
	}
	switch {
	case ci.problem != "":
		writeLine(w, http.StatusConflict, "the clip does not verify: "+ci.problem)
		return
	case ci.sealed:
		writeLine(w, http.StatusConflict, "the clip is end-to-end encrypted: this receiver cannot read its frames, so it cannot make a video file; the event page plays it in your browser")
		return
	case ci.h264Only():
		writeLine(w, http.StatusConflict, "the clip's frames are H.264: it downloads as MP4 (clip.mp4), not as Matroska")
		return
	case !ci.jpegOnly():
		writeLine(w, http.StatusConflict, "the clip's frames are not JPEG: no Matroska file")
		return
	case ci.width == 0:
		writeLine(w, http.StatusConflict, "the clip's first frame has no readable JPEG size: no Matroska file")
		return
	case ci.frames > mkv.MaxFrames:
		writeLine(w, http.StatusConflict, fmt.Sprintf("the clip has %d frames, a download at most %d", ci.frames, mkv.MaxFrames))
		return
	}
	frames := make([]mkv.Frame, 0, ci.frames)
	type at struct{ seg, off int }
	where := make([]at, 0, ci.frames)
	for si, sg := range ci.segments {
		off := 0
		for _, f := range sg.frames {
			frames = append(frames, mkv.Frame{At: time.Duration(f.TUs-ci.firstUs) * time.Microsecond, Size: int(f.Size)})
			where = append(where, at{si, off})
			off += int(f.Size)
		}
	}
	device, event := r.PathValue("device"), r.PathValue("event")
	h := w.Header()
	h.Set("Content-Type", "video/x-matroska")
	h.Set("Content-Disposition", `attachment; filename="`+device+"-"+event+`.mkv"`)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	loaded, buf := -1, []byte(nil)
	err := mkv.Write(w, mkv.Video{Width: ci.width, Height: ci.height, Title: event}, frames, func(i int, fw io.Writer) error {
		p := where[i]
		if p.seg != loaded {
			e := ci.segments[p.seg].entry
			b, err := readChecked(mediaPath(s.dir, e, 0), e.Media[0].SHA256)
			if err != nil {
				s.abortDownload("clip.mkv", err)
			}
			loaded, buf = p.seg, b
		}
		_, err := fw.Write(buf[p.off : p.off+frames[i].Size])
		return err
	})
	if err != nil {
		s.log.Debug("receiver: write clip", "err", err)
	}
}

// handleClipRecords streams a zip of the event's records: every envelope
// the owner may see (start.cose, end.cose, segment-NNNN.cose) and each
// segment's frames as files (segment-NNNN/frame-NNNN.jpg), in a directory
// named after the event, which keyframe-receiver verify -clip reads
// (docs/envelope.md §8.2). Stored, not compressed: JPEGs do not shrink.
func (s *Server) handleClipRecords(w http.ResponseWriter, r *http.Request, u *user) {
	recs, ci, ok := s.clipFor(w, r, u)
	if !ok {
		return
	}
	device, event := r.PathValue("device"), r.PathValue("event")
	h := w.Header()
	h.Set("Content-Type", "application/zip")
	h.Set("Content-Disposition", `attachment; filename="`+device+"-"+event+`-records.zip"`)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	zw := zip.NewWriter(w)
	put := func(name string, data []byte) error {
		f, err := zw.CreateHeader(&zip.FileHeader{Name: event + "/" + name, Method: zip.Store, Modified: s.clk.Now().UTC()})
		if err != nil {
			return err
		}
		_, err = f.Write(data)
		return err
	}
	var err error
	for _, e := range recs {
		if e.Kind != provenance.KindStart && e.Kind != provenance.KindEnd {
			continue
		}
		env, rerr := readChecked(envelopePath(s.dir, e), e.Envelope)
		if rerr != nil {
			s.abortDownload("records.zip", rerr)
		}
		if err = put(e.Kind+".cose", env); err != nil {
			break
		}
	}
	for _, sg := range ci.segments {
		if err != nil {
			break
		}
		e := sg.entry
		name := fmt.Sprintf("segment-%04d", *e.Segment)
		env, rerr := readChecked(envelopePath(s.dir, e), e.Envelope)
		if rerr != nil {
			s.abortDownload("records.zip", rerr)
		}
		media, rerr := readChecked(mediaPath(s.dir, e, 0), e.Media[0].SHA256)
		if rerr != nil {
			s.abortDownload("records.zip", rerr)
		}
		if err = put(name+".cose", env); err != nil {
			break
		}
		ext := "." + mediaExt(sg.typ)
		off := 0
		for k, f := range sg.frames {
			if err = put(fmt.Sprintf("%s/frame-%04d%s", name, k, ext), media[off:off+int(f.Size)]); err != nil {
				break
			}
			off += int(f.Size)
		}
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		s.log.Debug("receiver: write records", "err", err)
	}
}

// playerJS is the event page's clip player (playback.js).
//
//go:embed playback.js
var playerJS []byte

func (s *Server) handlePlayerJS(w http.ResponseWriter, r *http.Request, _ *user) {
	h := w.Header()
	h.Set("Content-Type", "text/javascript; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "playback.js", time.Time{}, bytes.NewReader(playerJS))
}

// clipTemplate is the clip's section of the event page (its data a
// clipPage). The script draws the frames; without it the page still says
// what was verified and offers the downloads.
const clipTemplate = `<style>
#clip canvas, #clip video { width: 100%; max-width: 960px; height: auto; display: block; background: #111; }
#timeline { position: relative; height: 12px; background: #dde; max-width: 960px; margin-top: .3em; }
#timeline div { position: absolute; top: 0; height: 100%; }
#preroll { background: #fc6; }
#trigger { width: 3px; margin-left: -1px; background: #d00; }
#timeline .gap { background: repeating-linear-gradient(45deg, #888 0 4px, #ccc 4px 8px); }
#scrub { width: 100%; max-width: 960px; display: block; margin: 0; }
</style>
<section id="clip">
<h2>Clip</h2>
{{if .Incomplete}}<p class="warn" id="incomplete">{{.Incomplete}}</p>{{end}}
{{if .Uploading}}<p class="warn" id="uploading">{{.Uploading}}</p>{{end}}
{{if .Problem}}<p class="warn" id="clipproblem">{{.Problem}}</p>{{end}}
<p id="clipverified"{{if .Verified}} class="ok"{{end}}>{{.Status}}</p>
{{if .Playable}}<div id="player" data-clip="{{.Manifest}}" data-device="{{.Device}}" data-event="{{.Event}}">
{{if .H264}}<video id="clipvideo" src="{{.MP4URL}}" width="{{.Width}}" height="{{.Height}}" controls muted playsinline preload="auto" aria-label="the clip"></video>
{{else}}<canvas id="clipcanvas" width="{{.Width}}" height="{{.Height}}" aria-label="the clip's frames"></canvas>
{{end}}<div id="timeline">{{with .PreRoll}}<div id="preroll" style="left: 0; width: {{.Width}}%" title="pre-roll: frames before the trigger"></div>{{end}}{{range .Gaps}}<div class="gap" style="left: {{.Left}}%; width: {{.Width}}%" title="segments not delivered"></div>{{end}}<div id="trigger" style="left: {{.Trigger.Left}}%" title="the trigger frame"></div></div>
<input type="range" id="scrub" min="{{.FirstMs}}" max="{{.LastMs}}" value="{{.FirstMs}}" step="1" aria-label="position in the clip, milliseconds from the trigger">
<p><button id="play" type="button">Play</button> <span id="cliptime" class="mono small"></span> <span id="clipload" class="muted small"></span></p>
</div>
<p class="muted small">{{.Frames}} frames, {{.Span}}, each {{if .H264}}shown{{else}}drawn{{end}} at the time the camera signed for it. On the bar: <span style="background:#fc6">&nbsp;pre-roll&nbsp;</span> (before the trigger), <span style="color:#d00">|</span> the trigger frame{{if .Gaps}}, hatched: segments not delivered{{end}}.</p>
{{end}}{{if .Frames}}<p>{{if and .Playable .H264}}<a href="{{.MP4URL}}" download id="mp4">download the clip</a> <span class="muted small">(MP4, H.264, each frame at its time: browsers, VLC, mpv, ffmpeg)</span><br>
{{else if and .Playable (not .Sealed)}}<a href="{{.MKVURL}}" download id="mkv">download the clip</a> <span class="muted small">(Matroska, Motion JPEG, each frame at its time: VLC, mpv, ffmpeg)</span><br>
{{end}}<a href="{{.ZipURL}}" download id="records">download its records</a> <span class="muted small">(zip: the signed envelopes and each segment's frames; unpack and run <code>keyframe-receiver verify -clip</code> on the folder)</span></p>{{end}}
{{if .Playable}}<script src="/static/playback.js"></script>{{end}}
</section>`
