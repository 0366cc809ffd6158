package receiver

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"image"
	_ "image/jpeg" // image.DecodeConfig of stored thumbnails
	_ "image/png"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyframe-cam/keyframe/provenance"
)

// The owner's pages beyond the list (web.go): one event, deleting it,
// retention, the live stream of new events, and the receiver's health and
// icon. docs/pages.md describes them.

// EventsPerPage is how many events a page of the owner's list shows; the
// list pages by a cursor (?before=), never by a size the client chooses.
const EventsPerPage = 25

// Defaults of Options.MaxStreams, MaxStreamsPerOwner and StreamLifetime.
const (
	DefaultMaxStreams         = 64
	DefaultMaxStreamsPerOwner = 4
	// DefaultStreamLifetime stays below Serve's write timeout (60 s).
	DefaultStreamLifetime = 50 * time.Second
)

// eventGroup is one event of an owner's list: its records (start, end; or
// a rotation's one) that the owner may see.
type eventGroup struct {
	device, event string
	pos           int           // arrival position of its first record: the list's order and cursor
	records       []*indexEntry // in arrival order
}

// groupEvents merges the records (newest first, as ownerEntries returns
// them) into events, newest first by the arrival of their first record.
func (s *Server) groupEvents(entries []*indexEntry) []*eventGroup {
	s.mu.Lock()
	pos := make([]int, len(entries))
	for i, e := range entries {
		pos[i] = s.byKey[e.key()]
	}
	s.mu.Unlock()
	byKey := map[string]*eventGroup{}
	var order []*eventGroup
	for i := len(entries) - 1; i >= 0; i-- { // oldest first
		e := entries[i]
		k := e.Device + "/" + e.Event
		g := byKey[k]
		if g == nil {
			g = &eventGroup{device: e.Device, event: e.Event, pos: pos[i]}
			byKey[k] = g
			order = append(order, g)
		}
		g.records = append(g.records, e)
	}
	for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
		order[i], order[j] = order[j], order[i]
	}
	return order
}

// kind returns the group's record of kind k, or nil.
func (g *eventGroup) kind(k string) *indexEntry {
	for _, e := range g.records {
		if e.Kind == k {
			return e
		}
	}
	return nil
}

// eventRow is one event on the owner's list: its start and end together.
type eventRow struct {
	Link, Event, Device, KeyStore string
	Thumb, ThumbWhat              string // the end's best frame, else the start's trigger frame
	Sealed                        bool   // Thumb is end-to-end encrypted: the page's script opens it
	Envelope                      string // Sealed: the URL of the record's envelope, which the script checks first
	MediaIndex                    int    // Sealed: the picture's place in the record's media
	ThumbKind                     string // Sealed: the record's kind, which the script checks
	Captured, Received            string
	Unsynced                      bool // a record's capture clock was not synchronised
	Duration, Kinds, Seqs         string
	InProgress, NoStart, Rotate   bool
	Source                        string
	NotCamera                     bool
}

func newEventRow(g *eventGroup) eventRow {
	start, end := g.kind(provenance.KindStart), g.kind(provenance.KindEnd)
	first, last := g.records[0], g.records[len(g.records)-1]
	r := eventRow{
		Link:     "/events/" + g.device + "/" + g.event,
		Event:    g.event,
		Device:   g.device,
		KeyStore: first.KeyStore,
		Captured: time.UnixMilli(first.TimeUnixMs).UTC().Format("2006-01-02 15:04:05.000 UTC"),
		Received: last.ReceivedAt.UTC().Format("2006-01-02 15:04:05 UTC"),
		Rotate:   first.Kind == provenance.KindRotate,
	}
	if start != nil {
		r.Captured = time.UnixMilli(start.TimeUnixMs).UTC().Format("2006-01-02 15:04:05.000 UTC")
	}
	var kinds, seqs []string
	segments := 0
	for _, e := range g.records {
		if e.Clock != provenance.ClockSynced {
			r.Unsynced = true
		}
		if e.Kind == provenance.KindSegment {
			segments++ // counted, not listed: a clip has many
			continue
		}
		kinds = append(kinds, e.Kind)
		seqs = append(seqs, strconv.FormatUint(e.Seq, 10))
	}
	if len(kinds) > 0 {
		r.Kinds = strings.Join(kinds, " and ") + " record"
		if len(kinds) > 1 {
			r.Kinds += "s"
		}
	}
	if segments > 0 {
		if r.Kinds != "" {
			r.Kinds += ", "
		}
		r.Kinds += strconv.Itoa(segments) + " clip segment"
		if segments > 1 {
			r.Kinds += "s"
		}
		seqs = append(seqs, "+"+strconv.Itoa(segments)+" segment(s)")
	}
	r.Seqs = strings.Join(seqs, ", ")
	switch {
	case r.Rotate:
	case end == nil:
		r.InProgress = true
	default:
		r.Duration = (time.Duration(end.DurationMs) * time.Millisecond).String()
		r.NoStart = start == nil
	}
	if !r.Rotate {
		r.Source, r.NotCamera = first.sourceText(), !first.fromCamera()
	}
	for _, c := range []struct {
		e    *indexEntry
		what string
	}{{end, "best frame"}, {start, "trigger frame"}} {
		if c.e == nil {
			continue
		}
		if i := imageIndex(c.e); i >= 0 {
			r.Thumb = "/media/" + c.e.Device + "/" + c.e.Event + "/" + c.e.Kind + "/" + strconv.Itoa(i)
			r.ThumbWhat = c.what
			break
		}
		if i := sealedIndex(c.e); i >= 0 {
			r.Thumb = "/media/" + c.e.Device + "/" + c.e.Event + "/" + c.e.Kind + "/" + strconv.Itoa(i)
			r.ThumbWhat = c.what
			r.Sealed, r.MediaIndex, r.ThumbKind = true, i, c.e.Kind
			r.Envelope = "/envelope/" + c.e.Device + "/" + c.e.Event + "/" + c.e.Kind
			break
		}
	}
	return r
}

// ownerPage lists the events the signed-in owner may see now (ownerEntries:
// offered by the OwnerLookup, confirmed by the registry read now), one row
// per event, newest first, EventsPerPage at a time; ?before=N shows the
// events that arrived before position N.
func (s *Server) ownerPage(w http.ResponseWriter, r *http.Request, owner string) {
	before := math.MaxInt
	if v := r.URL.Query().Get("before"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || strconv.Itoa(n) != v {
			writeLine(w, http.StatusBadRequest, "before: not a position in the list")
			return
		}
		before = n
	}
	entries, reg, err := s.ownerEntries(owner)
	if err != nil {
		s.viewUnavailable(w, err)
		return
	}
	p := &page{
		Account: owner,
		Title:   "keyframe: events for " + owner,
		Note:    "Events signed by your cameras while they were yours; each is checked against the registry again for this view.",
		Cameras: ownerCameras(reg, owner, entries),
		Live:    before == math.MaxInt,
		Newer:   before != math.MaxInt,
		Sealed:  before == math.MaxInt, // rows that arrive live may be sealed
	}
	lastPos := 0
	for _, g := range s.groupEvents(entries) {
		if g.pos >= before {
			continue
		}
		if len(p.Rows) == EventsPerPage {
			p.Older = "/?before=" + strconv.Itoa(lastPos)
			break
		}
		row := newEventRow(g)
		p.Sealed = p.Sealed || row.Sealed
		p.Rows = append(p.Rows, row)
		lastPos = g.pos
	}
	s.render(w, p)
}

// eventTemplates are the event and retention pages.
const eventTemplates = pageHead + `

{{define "event"}}{{template "head" .}}
<dl class="facts" id="facts">
<dt>camera</dt><dd class="mono">{{.Device}}</dd>
<dt>source</dt><dd>{{if .NotCamera}}<span class="notcam" title="the signed record names no camera as the source of its frames">not from a camera</span> {{end}}{{.Source}}</dd>
<dt>started</dt><dd>{{.Started}}{{if .Unsynced}} <a class="warn" href="#unsynced">unsynced clock</a>{{end}}</dd>
<dt>duration</dt><dd id="duration">{{.Duration}}</dd>
<dt>motion</dt><dd>{{.Motion}}</dd>
<dt>zones</dt><dd class="muted">The signed record does not name the camera's zones (they are in the camera's configuration), so none are drawn; the box is the motion the detector saw.</dd>
</dl>
{{if .OneImage}}<p class="muted" id="oneimage">{{.OneImage}}</p>{{end}}
{{if .Sealed}}<script src="/static/e2ee.js"></script><script src="/static/sealed.js" defer></script>{{end}}
{{with .Clip}}` + clipTemplate + `{{end}}
<div class="frames">
{{range .Records}}
<section class="frame" id="{{.Kind}}">
<h2>{{.Heading}}</h2>
{{if .Sealed}}<figure>
<img class="sealed" data-sealed="{{.Image}}" data-envelope="{{.EnvelopeURL}}" data-index="{{.MediaIndex}}" data-device="{{$.Device}}" data-event="{{$.Event}}" data-kind="{{.Kind}}" alt="{{.Heading}} of event {{$.Event}}, end-to-end encrypted">
</figure>
<p class="small"><span class="sealedstate muted">end-to-end encrypted</span></p>
<p class="muted small">{{.ImageNote}}</p>{{else if .Image}}<figure>
<img src="{{.Image}}" alt="{{.Heading}} of event {{$.Event}}"{{if .ImgW}} width="{{.ImgW}}" height="{{.ImgH}}"{{end}}>
{{if .Overlay}}<svg viewBox="0 0 {{.FrameW}} {{.FrameH}}" preserveAspectRatio="none" aria-label="motion box"><rect x="{{.BoxX}}" y="{{.BoxY}}" width="{{.BoxW}}" height="{{.BoxH}}" fill="none" stroke="#f30" stroke-width="{{.Stroke}}"/></svg>{{end}}
</figure>
<p class="muted small">{{.ImageNote}}</p>{{else}}<p class="muted">This record carries no image.</p>{{end}}
<dl class="facts">
<dt>captured</dt><dd>{{.Captured}}{{if .Unsynced}}<br><a class="warn" href="#unsynced" title="` + unsyncedTitle + `">unsynced clock</a>{{end}}</dd>
<dt>received</dt><dd>{{.Received}}</dd>
<dt>sequence</dt><dd>{{.Seq}}</dd>
<dt>envelope</dt><dd class="mono small">SHA-256 {{.EnvelopeSHA}}<br><a href="{{.EnvelopeURL}}" download>download the signed envelope (COSE_Sign1, {{.EnvelopeSize}} bytes)</a></dd>
</dl>
<h3>Verified for this view</h3>
<ul class="checks">{{range .Checks}}<li>{{.}}</li>{{end}}</ul>
<details><summary>The signed payload, decoded</summary>
<pre class="payload">{{.JSON}}</pre>
</details>
</section>
{{end}}
</div>
<h2>Delete this event</h2>
<form method="post" action="{{.DeleteURL}}" id="delete">
<label><input type="checkbox" name="confirm" value="yes" required> delete its {{.RecordCount}} record(s), images{{if .Clip}}, clip{{end}} and envelopes from this receiver</label>
<button>Delete</button>
<p class="muted small">The receiver keeps a line saying the event was deleted (so the camera cannot upload it again), nothing of its content. Copies you downloaded are yours.</p>
</form>
<h2 id="unsynced">“Unsynced clock”</h2>
<p class="muted">` + unsyncedText + `</p>
</body>
</html>
{{end}}

{{define "settings"}}{{template "head" .}}
{{if .Message}}<p class="ok" id="message">{{.Message}}</p>{{end}}
<p>How long, and up to how much, this receiver keeps your events. Older events beyond either bound are deleted (their images and envelopes), checked every few minutes and when you save. 0 keeps everything.</p>
<form method="post" action="/settings" id="retention">
<p><label>Keep events for <input type="number" name="days" min="0" max="` + "36500" + `" value="{{.Days}}" inputmode="numeric"> days</label></p>
<p><label>Keep at most <input type="number" name="mib" min="0" max="1073741824" value="{{.MiB}}" inputmode="numeric"> MiB of images</label> <span class="muted small">(now: {{.Used}} in {{.Events}} events)</span></p>
<p><button>Save</button></p>
</form>
</body>
</html>
{{end}}`

// parsePages parses the event and retention pages.
func (s *Server) parsePages() error {
	t, err := template.New("pages").Parse(eventTemplates)
	if err != nil {
		return fmt.Errorf("receiver: page templates: %w", err)
	}
	s.pages = t
	return nil
}

// renderPage renders one of eventTemplates.
func (s *Server) renderPage(w http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := s.pages.ExecuteTemplate(&buf, name, data); err != nil {
		s.log.Error("receiver: render page", "page", name, "err", err)
		writeLine(w, http.StatusInternalServerError, "cannot render the page")
		return
	}
	setPageHeaders(w)
	if p, ok := data.(*eventPage); ok && (p.Sealed || p.Clip != nil && p.Clip.Playable) {
		csp := sealedPageCSP // the player's and the e2ee scripts, from this origin, their fetches, the pictures they open
		if p.Clip != nil && p.Clip.Playable && p.Clip.H264 {
			csp = videoPageCSP // and the clip's MP4 in a video element
		}
		w.Header().Set("Content-Security-Policy", csp)
	}
	w.WriteHeader(status)
	if _, err := w.Write(buf.Bytes()); err != nil {
		s.log.Debug("receiver: write page", "err", err)
	}
}

// eventPage is the data of the "event" template.
type eventPage struct {
	Title, Account, Device, Event string
	Source                        string
	NotCamera, Unsynced           bool
	Started, Duration, Motion     string
	OneImage                      string // why only one image is shown, or ""
	Records                       []recordPage
	RecordCount                   int       // every record, the clip's segments too
	Clip                          *clipPage // nil: the event has no clip
	DeleteURL                     string
	Sealed                        bool // a picture or the clip is end-to-end encrypted: the page loads the e2ee scripts
}

// recordPage is one record on the event page.
type recordPage struct {
	Kind, Heading            string
	Image, ImageNote         string
	Sealed                   bool // Image is end-to-end encrypted (docs/e2ee.md): the page's script opens it
	MediaIndex               int
	ImgW, ImgH               int
	Overlay                  bool
	FrameW, FrameH           uint32
	BoxX, BoxY, BoxW, BoxH   int32
	Stroke                   uint32
	Captured, Received       string
	Unsynced                 bool
	Seq                      uint64
	EnvelopeSHA, EnvelopeURL string
	EnvelopeSize             int
	Checks                   []string
	JSON                     string
}

// ownerRecords returns the records of (device, event) that owner may see
// now, in arrival order, and the registry read that decided it; none (and
// the answer given) if there are none or the registry cannot be read.
func (s *Server) ownerRecords(w http.ResponseWriter, r *http.Request, owner, device, event string) ([]*indexEntry, *registry, bool) {
	if !provenance.ValidID(device) || !provenance.ValidID(event) || !ValidOwner(owner) {
		http.NotFound(w, r)
		return nil, nil, false
	}
	var cand []*indexEntry
	s.mu.Lock()
	for _, p := range s.byDevice[device] {
		if e := s.records[p]; e.Event == event && !e.deleted {
			cand = append(cand, e)
		}
	}
	s.mu.Unlock()
	reg, err := s.regs.read()
	if err != nil {
		s.viewUnavailable(w, err)
		return nil, nil, false
	}
	var out []*indexEntry
	for _, e := range cand {
		ok, err := s.mayServeEntry(reg, e, owner)
		if err != nil {
			s.viewUnavailable(w, err)
			return nil, nil, false
		}
		if ok {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		if len(cand) > 0 {
			s.log.Info("receiver: view denied: no pairing of the owner covers the event", "owner", owner, "device", device, "event", event, "remote", r.RemoteAddr)
		}
		http.NotFound(w, r)
		return nil, nil, false
	}
	return out, reg, true
}

// handleEventPage shows one event to the owner of its records: each
// record's image with the motion box drawn, its times, the checks made
// again for this view, its signed payload decoded and its envelope to
// download.
func (s *Server) handleEventPage(w http.ResponseWriter, r *http.Request, u *user) {
	device, event := r.PathValue("device"), r.PathValue("event")
	recs, reg, ok := s.ownerRecords(w, r, u.name, device, event)
	if !ok {
		return
	}
	p := &eventPage{
		Title:     "Event " + event,
		Account:   u.name,
		Device:    device,
		Event:     event,
		DeleteURL: "/events/" + device + "/" + event + "/delete",
		Duration:  "in progress: no end record yet",
	}
	images := 0
	var start, end *indexEntry
	p.RecordCount = len(recs)
	for _, e := range recs {
		if e.Kind == provenance.KindSegment {
			continue // verified with its clip, below
		}
		env, media, v, reason := verifyStoredFull(s.dir, reg, e)
		if reason != "" {
			s.mu.Lock()
			s.stats.CorruptMedia++
			s.mu.Unlock()
			s.log.Error("receiver: stored record no longer verifies; not serving it", "device", e.Device, "event", e.Event, "kind", e.Kind, "reason", reason)
			writeLine(w, http.StatusInternalServerError, "stored record does not match its signature")
			return
		}
		rp := s.recordPage(reg, e, env, media, v)
		if rp.Image != "" {
			images++
		}
		p.Sealed = p.Sealed || rp.Sealed
		if e.Clock != provenance.ClockSynced {
			p.Unsynced = true
		}
		switch e.Kind {
		case provenance.KindStart:
			start = e
		case provenance.KindEnd:
			end = e
		}
		if p.Motion == "" || e.Kind == provenance.KindEnd {
			m := v.Payload.Motion
			p.Motion = fmt.Sprintf("%d frames with motion, at most %.1f%% of the frame (%d×%d)", m.Frames, float64(m.PeakAreaPPM)/1e4, m.Width, m.Height)
		}
		p.Records = append(p.Records, rp)
	}
	ci, reason := s.eventClip(reg, recs)
	if reason != "" {
		s.mu.Lock()
		s.stats.CorruptMedia++
		s.mu.Unlock()
		s.log.Error("receiver: stored segment record no longer verifies; not serving it", "device", device, "event", event, "reason", reason)
		writeLine(w, http.StatusInternalServerError, "stored record does not match its signature")
		return
	}
	if ci != nil {
		p.Clip = newClipPage(ci, device, event)
		p.Sealed = p.Sealed || ci.sealed
	}
	first := recs[0]
	if start != nil {
		first = start
	}
	p.Started = time.UnixMilli(first.TimeUnixMs).UTC().Format("2006-01-02 15:04:05.000 UTC")
	if first.Kind == provenance.KindRotate {
		p.Duration = "a key rotation, not motion"
	} else {
		p.Source, p.NotCamera = first.sourceText(), !first.fromCamera()
	}
	if end != nil {
		p.Duration = (time.Duration(end.DurationMs) * time.Millisecond).String() + " (from the trigger frame to the end, by the camera's monotonic clock)"
	}
	switch {
	case start == nil && end != nil:
		p.OneImage = "Only the end record (the best frame) is stored: the start record, with the trigger frame, never arrived or was deleted."
	case start != nil && end == nil:
		p.OneImage = "Only the start record (the trigger frame) is stored: the event is in progress, or its end record has not arrived."
	case images == 1:
		p.OneImage = "Only one of the records carries an image."
	}
	s.renderPage(w, http.StatusOK, "event", p)
}

// recordPage describes one verified record for the event page.
func (s *Server) recordPage(reg *registry, e *indexEntry, env []byte, media [][]byte, v *provenance.Verified) recordPage {
	pl := v.Payload
	rp := recordPage{
		Kind:         e.Kind,
		Captured:     time.UnixMilli(e.TimeUnixMs).UTC().Format("2006-01-02 15:04:05.000 UTC"),
		Received:     e.ReceivedAt.UTC().Format("2006-01-02 15:04:05 UTC"),
		Unsynced:     e.Clock != provenance.ClockSynced,
		Seq:          e.Seq,
		EnvelopeSHA:  e.Envelope,
		EnvelopeURL:  "/envelope/" + e.Device + "/" + e.Event + "/" + e.Kind,
		EnvelopeSize: len(env),
		JSON:         payloadJSON(pl),
	}
	switch e.Kind {
	case provenance.KindStart:
		rp.Heading = "Trigger frame (start record)"
	case provenance.KindEnd:
		rp.Heading = "Best frame (end record)"
	default:
		rp.Heading = "Key rotation record"
	}
	if i := imageIndex(e); i >= 0 {
		rp.Image = "/media/" + e.Device + "/" + e.Event + "/" + e.Kind + "/" + strconv.Itoa(i)
		m := pl.Motion
		cfg, _, err := image.DecodeConfig(bytes.NewReader(media[i]))
		switch {
		case err != nil:
			rp.ImageNote = "The image's size cannot be read, so the motion box is not drawn: " + boxText(m)
		case m.Width == 0 || m.Height == 0 || m.Box[2] <= m.Box[0] || m.Box[3] <= m.Box[1]:
			rp.ImgW, rp.ImgH = cfg.Width, cfg.Height
			rp.ImageNote = fmt.Sprintf("The image as the camera stored it, %d×%d; the record names no motion box.", cfg.Width, cfg.Height)
		case sameAspect(cfg.Width, cfg.Height, int(m.Width), int(m.Height)):
			rp.ImgW, rp.ImgH = cfg.Width, cfg.Height
			rp.Overlay, rp.FrameW, rp.FrameH = true, m.Width, m.Height
			rp.BoxX, rp.BoxY, rp.BoxW, rp.BoxH = m.Box[0], m.Box[1], m.Box[2]-m.Box[0], m.Box[3]-m.Box[1]
			rp.Stroke = max(1, m.Width/200)
			rp.ImageNote = fmt.Sprintf("The whole frame as the camera stored it (%d×%d, scaled from %d×%d); the red box is %s.", cfg.Width, cfg.Height, m.Width, m.Height, boxText(m))
		default:
			rp.ImgW, rp.ImgH = cfg.Width, cfg.Height
			rp.ImageNote = fmt.Sprintf("The camera stored a crop around the motion (%d×%d), so the box is not drawn on it: %s.", cfg.Width, cfg.Height, boxText(m))
		}
	}
	if i := sealedIndex(e); i >= 0 && rp.Image == "" {
		rp.Image = "/media/" + e.Device + "/" + e.Event + "/" + e.Kind + "/" + strconv.Itoa(i)
		rp.Sealed, rp.MediaIndex = true, i
		rp.ImageNote = "End-to-end encrypted on the camera to your browsers' keys (docs/e2ee.md): this receiver stores only the ciphertext, checks its signature and hash, and cannot see the picture or make previews of it. This browser checks the signed record, then opens the picture with its own key. " + boxText(pl.Motion) + "."
	}
	rp.Checks = viewChecks(reg, e, v, len(media))
	return rp
}

// sameAspect reports whether w×h is fw×fh scaled (within a pixel).
func sameAspect(w, h, fw, fh int) bool {
	if w <= 0 || h <= 0 || fw <= 0 || fh <= 0 {
		return false
	}
	return math.Abs(float64(w)*float64(fh)/float64(fw)-float64(h)) <= 1
}

func boxText(m provenance.Motion) string {
	return fmt.Sprintf("the motion box (%d,%d)–(%d,%d) of the %d×%d frame", m.Box[0], m.Box[1], m.Box[2], m.Box[3], m.Width, m.Height)
}

// viewChecks says what was checked of a record for this view.
func viewChecks(reg *registry, e *indexEntry, v *provenance.Verified, media int) []string {
	d := reg.Devices[e.Device]
	how := "enrolled key"
	if d != nil {
		how = verification(d, true)
	}
	alg := "the signature"
	if a, err := provenance.Algorithm(v.Key); err == nil {
		alg = "the " + a.String() + " signature"
	}
	out := []string{
		"Verified on arrival at " + e.ReceivedAt.UTC().Format(time.DateTime+" UTC") + ", and again from the stored files for this page:",
		alg + " of the envelope, with the key the registry holds for this camera (" + how + ")",
		"the device ID " + e.Device + " is the fingerprint (SHA-256) of that key",
		fmt.Sprintf("%d media object(s) match the SHA-256 hashes in the signed payload", media),
		fmt.Sprintf("the stored index agrees with the signed payload: event, kind %s, sequence %d", e.Kind, e.Seq),
		fmt.Sprintf("a pairing of yours covers sequence %d of this camera in the registry read now", e.Seq),
	}
	if len(v.Chain) > 0 {
		out = append(out, "the envelope carries a certificate chain of "+strconv.Itoa(len(v.Chain))+" certificate(s), naming "+certName(v.Chain[0]))
	}
	if e.Clock != provenance.ClockSynced {
		out = append(out, "the capture time is the camera's, with its clock not known to be set (see “Unsynced clock”)")
	}
	return out
}

func certName(c *x509.Certificate) string {
	if len(c.URIs) > 0 {
		return c.URIs[0].String()
	}
	return c.Subject.String()
}

// payloadJSON renders a signed payload as indented JSON, byte strings in
// hex.
func payloadJSON(p *provenance.Payload) string {
	type media struct {
		Role   string `json:"role"`
		Type   string `json:"type"`
		Size   uint64 `json:"size"`
		SHA256 string `json:"sha256"`
	}
	type source struct {
		Kind string `json:"kind"`
		Name string `json:"name"`
		Bus  string `json:"bus"`
	}
	type tm struct {
		UnixMs int64  `json:"unix_ms"`
		BootMs uint64 `json:"boot_ms"`
		Clock  string `json:"clock"`
		UTC    string `json:"utc"` // unix_ms as a date, added for reading: not in the payload
	}
	type motion struct {
		DurationMs  uint64   `json:"duration_ms"`
		Frames      uint32   `json:"frames"`
		PeakAreaPPM uint32   `json:"peak_area_ppm"`
		Box         [4]int32 `json:"box"`
		Width       uint32   `json:"width"`
		Height      uint32   `json:"height"`
	}
	out := struct {
		V        uint64  `json:"v"`
		Device   string  `json:"device"`
		Event    string  `json:"event"`
		Kind     string  `json:"kind"`
		Seq      uint64  `json:"seq"`
		Boot     string  `json:"boot"`
		Prev     string  `json:"prev"`
		Time     tm      `json:"time"`
		Motion   motion  `json:"motion"`
		Media    []media `json:"media"`
		KeyStore string  `json:"keystore"`
		NextKey  string  `json:"next_key,omitempty"`
		Source   *source `json:"source,omitempty"`
	}{
		V: p.Version, Device: p.Device, Event: p.Event, Kind: p.Kind, Seq: p.Seq, Boot: p.Boot,
		Prev:     hex.EncodeToString(p.Prev),
		Time:     tm{p.Time.UnixMs, p.Time.BootMs, p.Time.Clock, time.UnixMilli(p.Time.UnixMs).UTC().Format(time.RFC3339Nano)},
		Motion:   motion(p.Motion),
		Media:    []media{},
		KeyStore: p.KeyStore,
		NextKey:  hex.EncodeToString(p.NextKey),
	}
	for _, m := range p.Media {
		out.Media = append(out.Media, media{m.Role, m.Type, m.Size, hex.EncodeToString(m.SHA256)})
	}
	if p.Source != nil {
		out.Source = &source{p.Source.Kind, p.Source.Name, p.Source.Bus}
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return "cannot render: " + err.Error()
	}
	return string(b)
}

// handleDeleteEvent deletes the records of an event that the signed-in
// owner may see (a POST from this origin with confirm=yes), then shows the
// list; 404 for an event that is not theirs or does not exist.
func (s *Server) handleDeleteEvent(w http.ResponseWriter, r *http.Request, u *user) {
	device, event := r.PathValue("device"), r.PathValue("event")
	if _, _, ok := s.ownerRecords(w, r, u.name, device, event); !ok {
		return
	}
	if r.PostFormValue("confirm") != "yes" {
		writeLine(w, http.StatusBadRequest, "confirm: tick the box to delete the event")
		return
	}
	reg, err := s.regs.read()
	if err != nil {
		s.viewUnavailable(w, err)
		return
	}
	if _, err := s.deleteEvent(reg, u.name, device, event, deletedByOwner); err != nil {
		s.log.Error("receiver: delete an event", "device", device, "event", event, "err", err)
		w.Header().Set("Retry-After", "1")
		writeLine(w, http.StatusServiceUnavailable, "cannot delete now, retry later")
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// settingsPage is the data of the "settings" template.
type settingsPage struct {
	Title, Account, Message string
	Days                    int
	MiB                     int64
	Used                    string
	Events                  int
}

// handleSettings shows (GET) or sets (POST) the signed-in owner's retention;
// a POST applies it at once.
func (s *Server) handleSettings(w http.ResponseWriter, r *http.Request, u *user) {
	if u.role != RoleOwner {
		writeLine(w, http.StatusForbidden, "only an owner has events to keep")
		return
	}
	msg := ""
	status := http.StatusOK
	if r.Method == http.MethodPost {
		days, err1 := strconv.Atoi(strings.TrimSpace(r.PostFormValue("days")))
		mib, err2 := strconv.ParseInt(strings.TrimSpace(r.PostFormValue("mib")), 10, 64)
		ret := Retention{Days: days, Bytes: mib << 20}
		switch {
		case err1 != nil:
			status, msg = http.StatusBadRequest, "days: not a whole number"
		case err2 != nil || mib < 0 || mib > MaxRetentionBytes>>20:
			status, msg = http.StatusBadRequest, "MiB: not a whole number from 0 to "+strconv.FormatInt(MaxRetentionBytes>>20, 10)
		default:
			if err := s.SetRetention(u.name, ret); err != nil {
				status, msg = http.StatusBadRequest, strings.TrimPrefix(err.Error(), "receiver: ")
				break
			}
			n, err := s.sweepOwner(u.name, ret)
			if err != nil {
				s.log.Error("receiver: retention sweep", "owner", u.name, "err", err)
			}
			msg = fmt.Sprintf("Saved. %d record(s) beyond it deleted now.", n)
		}
	}
	ret, err := s.RetentionOf(u.name)
	if err != nil {
		s.viewUnavailable(w, err)
		return
	}
	entries, _, err := s.ownerEntries(u.name)
	if err != nil {
		s.viewUnavailable(w, err)
		return
	}
	var used uint64
	for _, e := range entries {
		for _, m := range e.Media {
			used += m.Size
		}
	}
	s.renderPage(w, status, "settings", settingsPage{
		Title: "Retention", Account: u.name, Message: msg,
		Days: ret.Days, MiB: ret.Bytes >> 20,
		Used: fmt.Sprintf("%.1f MiB", float64(used)/(1<<20)), Events: len(s.groupEvents(entries)),
	})
}

// handleHealth answers a monitor: 200 "ok" while the store is open and the
// registry readable, else 503; it says nothing else.
func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request, _ *user) {
	w.Header().Set("Cache-Control", "no-store")
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		writeLine(w, http.StatusServiceUnavailable, "unavailable")
		return
	}
	if _, err := s.regs.read(); err != nil {
		writeLine(w, http.StatusServiceUnavailable, "unavailable")
		return
	}
	writeLine(w, http.StatusOK, "ok")
}

// favicon is the pages' icon: a keyframe in a viewfinder.
const favicon = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" fill="#234"/><path d="M6 11V6h5M21 6h5v5M26 21v5h-5M11 26H6v-5" stroke="#fff" stroke-width="2.5" fill="none"/><path d="M16 9l7 7-7 7-7-7z" fill="#f80"/></svg>`

func (s *Server) handleFavicon(w http.ResponseWriter, _ *http.Request, _ *user) {
	h := w.Header()
	h.Set("Content-Type", "image/svg+xml")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; sandbox")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "public, max-age=86400")
	if _, err := w.Write([]byte(favicon)); err != nil {
		s.log.Debug("receiver: write favicon", "err", err)
	}
}

// eventsJS keeps the first page of the owner's list live: on each event of
// the stream it fetches the page again and swaps in its list and cameras,
// marking the new event's row.
const eventsJS = `"use strict";
(function () {
  var live = document.getElementById("live");
  if (!live || !live.dataset.stream || !window.EventSource) { return; }
  var busy = false, again = false;
  function refresh(ev) {
    if (busy) { again = true; return; }
    busy = true;
    fetch("/", {credentials: "same-origin", cache: "no-store"}).then(function (r) {
      if (!r.ok) { throw new Error(r.status); }
      return r.text();
    }).then(function (html) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      ["eventlist", "cameras"].forEach(function (id) {
        var now = document.getElementById(id), next = doc.getElementById(id);
        if (now && next) { now.replaceWith(next); }
      });
      if (ev) {
        document.querySelectorAll("#events tr").forEach(function (tr) {
          if (tr.querySelector('a[href$="/' + ev + '"]')) { tr.classList.add("new"); }
        });
      }
      live.textContent = "Newest first; new events appear here as they arrive. Updated " + new Date().toLocaleTimeString() + ".";
    }).catch(function () {}).finally(function () {
      busy = false;
      if (again) { again = false; refresh(); }
    });
  }
  var es = new EventSource(live.dataset.stream);
  es.addEventListener("record", function (m) {
    var d = {};
    try { d = JSON.parse(m.data); } catch (e) {}
    refresh(d.event);
  });
  es.addEventListener("resync", function () { refresh(); });
  // A stream ends now and then and the browser opens it again: whatever
  // was stored in between comes with a refresh.
  var opened = false;
  es.addEventListener("open", function () { if (opened) { refresh(); } opened = true; });
})();
`

func (s *Server) handleEventsJS(w http.ResponseWriter, r *http.Request, _ *user) {
	h := w.Header()
	h.Set("Content-Type", "text/javascript; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "events.js", time.Time{}, strings.NewReader(eventsJS))
}

// hub hands newly stored records to the owners' live streams. Every
// stream gets every record and shows only those its owner may see
// (handleStream asks the registry); a stream that falls behind is told to
// resync, never blocks an upload.
type hub struct {
	max, perOwner int
	lifetime      time.Duration

	done     chan struct{} // closed by shutdown: every stream ends
	doneOnce sync.Once

	mu      sync.Mutex
	subs    map[*stream]struct{}
	byOwner map[string]int
}

// stream is one open live stream.
type stream struct {
	owner string
	ch    chan *indexEntry
	lost  atomic.Bool // records were dropped: the page must resync
}

func newHub(maxAll, perOwner int, lifetime time.Duration) *hub {
	if maxAll <= 0 {
		maxAll = DefaultMaxStreams
	}
	if perOwner <= 0 {
		perOwner = DefaultMaxStreamsPerOwner
	}
	if lifetime <= 0 {
		lifetime = DefaultStreamLifetime
	}
	return &hub{max: maxAll, perOwner: perOwner, lifetime: lifetime, done: make(chan struct{}), subs: map[*stream]struct{}{}, byOwner: map[string]int{}}
}

// shutdown ends every stream, now and to come.
func (h *hub) shutdown() { h.doneOnce.Do(func() { close(h.done) }) }

// join opens a stream of owner, or returns nil if the limits are reached.
func (h *hub) join(owner string) *stream {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) >= h.max || h.byOwner[owner] >= h.perOwner {
		return nil
	}
	st := &stream{owner: owner, ch: make(chan *indexEntry, 32)}
	h.subs[st] = struct{}{}
	h.byOwner[owner]++
	return st
}

func (h *hub) leave(st *stream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[st]; !ok {
		return
	}
	delete(h.subs, st)
	if h.byOwner[st.owner]--; h.byOwner[st.owner] <= 0 {
		delete(h.byOwner, st.owner)
	}
}

// publish offers a newly stored record to every stream, without blocking.
func (h *hub) publish(e *indexEntry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for st := range h.subs {
		select {
		case st.ch <- e:
		default:
			st.lost.Store(true)
		}
	}
}

// open returns the number of open streams.
func (h *hub) open() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// offered reports whether a record may be shown to owner now, as
// mayServeEntry decides, without counting a refusal: every stream sees
// every record, and most are not its owner's.
func (s *Server) offered(reg *registry, e *indexEntry, owner string) (bool, error) {
	if reg.ownerAt(e.Device, e.Seq) != owner {
		return false, nil
	}
	claimed, err := s.ownerOf(reg, e.Device)
	if err != nil {
		return false, err
	}
	return claimed == owner || reg.hadOwner(e.Device, owner), nil
}

// handleStream is the owner's live stream (server-sent events): an
// "record" event naming each newly stored record the owner may see (device,
// event, kind, seq: the page fetches the rest), a "resync" when some were
// missed; it ends after the hub's lifetime, when the session ends, and
// when the client goes (the browser reconnects by itself).
func (s *Server) handleStream(w http.ResponseWriter, r *http.Request, u *user) {
	if u.role != RoleOwner {
		writeLine(w, http.StatusForbidden, "only an owner has events to stream")
		return
	}
	var st *stream
	select {
	case <-s.hub.done: // shutting down
	default:
		st = s.hub.join(u.name)
	}
	if st == nil {
		w.Header().Set("Retry-After", "10")
		writeLine(w, http.StatusTooManyRequests, "too many live streams open; close a tab or retry later")
		return
	}
	defer s.hub.leave(st)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, "retry: 3000\n: live events of your cameras\n\n"); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}
	end := s.clk.After(s.hub.lifetime)
	for {
		select {
		case <-r.Context().Done():
			return
		case <-end:
			return
		case <-s.hub.done:
			return
		case e := <-st.ch:
			if s.signedIn(r) == nil {
				return // the session ended: nothing more
			}
			var msg string
			if st.lost.Swap(false) {
				msg = "event: resync\ndata: {}\n\n"
			}
			reg, err := s.regs.read()
			if err != nil {
				return
			}
			ok, err := s.offered(reg, e, u.name)
			if err != nil {
				return
			}
			if ok {
				b, err := json.Marshal(struct {
					Device string `json:"device"`
					Event  string `json:"event"`
					Kind   string `json:"kind"`
					Seq    uint64 `json:"seq"`
				}{e.Device, e.Event, e.Kind, e.Seq})
				if err != nil {
					return
				}
				msg += "event: record\ndata: " + string(b) + "\n\n"
			}
			if msg == "" {
				continue
			}
			if _, err := fmt.Fprint(w, msg); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}
