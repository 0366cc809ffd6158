package receiver

import (
	"bytes"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/provenance"
)

// pageHead defines "head": the start of every page of a signed-in owner
// (the event list, an event, retention) up to its heading, with the
// navigation between them. Its data has Title and Account.
const pageHead = `{{define "head"}}<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="/favicon.ico" type="image/svg+xml">
<title>{{.Title}}</title>
<style>
` + pageStyle + `
</style>
</head>
<body data-account="{{.Account}}">
<nav class="muted">Signed in as {{.Account}} · <a href="/">events</a> · <a href="/settings">retention</a> · <a href="/sessions">sessions</a> · <form method="post" action="/signout" style="display:inline"><button>Sign out</button></form></nav>
<h1>{{.Title}}</h1>
{{end}}`

// pageTemplate is a signed-in owner's event list (the events of the devices
// paired to that owner now).
const pageTemplate = pageHead + `{{template "head" .}}<p class="muted">{{.Note}}</p>
<form method="post" action="/claims"><button>Add a camera</button> <span class="muted">a one-time code for <code>keyframe join</code> on the camera (docs/claim.md)</span></form>
<h2>Cameras</h2>
{{if .Cameras}}
<div class="scroll">
<table id="cameras">
<tr><th>camera</th><th>paired to you</th><th>verification</th><th>last upload</th><th>last capture</th><th>records you see</th></tr>
{{range .Cameras}}
<tr>
<td class="mono">{{.Device}}{{if not .Past}}<br><a href="/live/{{.Device}}">live view</a>{{end}}</td>
<td>{{if .Past}}<span class="muted">{{.Ended}}</span>{{else}}<span class="ok">now</span>{{end}}<br><span class="muted">{{.Interval}}</span></td>
<td>{{if .Revoked}}<span class="warn">{{.Verification}}</span>{{else}}{{.Verification}}{{end}}</td>
<td>{{.LastUpload}}</td>
<td>{{.LastCapture}}{{if .Unsynced}}<br><a class="warn" href="#unsynced" title="` + unsyncedTitle + `">unsynced clock</a>{{end}}</td>
<td>{{.Records}}</td>
</tr>
{{end}}
</table>
</div>
{{else}}
<p>No cameras yet: add one with the button above.</p>
{{end}}
<h2>Events</h2>
<p class="muted" id="live"{{if .Live}} data-stream="/events/stream"{{end}}>{{if .Live}}Newest first; new events appear here as they arrive.{{else}}Older events; <a href="/">back to the newest</a>.{{end}}</p>
<div id="eventlist">
{{if .Rows}}
<table id="events">
<thead><tr><th>event</th><th>when</th><th>duration</th><th>camera</th><th>status</th></tr></thead>
<tbody>
{{range .Rows}}
<tr>
<td class="thumb"><a href="{{.Link}}">{{if .Sealed}}<img class="sealed" data-sealed="{{.Thumb}}" data-envelope="{{.Envelope}}" data-index="{{.MediaIndex}}" data-device="{{.Device}}" data-event="{{.Event}}" data-kind="{{.ThumbKind}}" alt="{{.ThumbWhat}} of event {{.Event}}, end-to-end encrypted"><span class="sealedstate muted small">end-to-end encrypted</span>{{else if .Thumb}}<img src="{{.Thumb}}" alt="{{.ThumbWhat}} of event {{.Event}}">{{else}}<span class="muted">no image</span>{{end}}</a><span class="mono small"><a href="{{.Link}}">{{.Event}}</a></span></td>
<td>{{.Captured}}{{if .Unsynced}}<br><a class="warn" href="#unsynced" title="` + unsyncedTitle + `">unsynced clock</a>{{end}}<br><span class="muted">received {{.Received}}</span></td>
<td>{{if .Rotate}}key rotation{{else if .InProgress}}<span class="ok">in progress</span><br><span class="muted">no end record yet</span>{{else}}{{.Duration}}{{if .NoStart}}<br><span class="muted">start record not stored</span>{{end}}{{end}}<br><span class="muted">{{.Kinds}}</span></td>
<td class="mono small">{{.Device}}<br>{{if .NotCamera}}<span class="notcam" title="the signed record names no camera as the source of its frames">not from a camera</span> <span class="muted">{{.Source}}</span>{{else}}<span class="muted">{{.Source}}</span>{{end}}<br><span class="muted">key: {{.KeyStore}}</span></td>
<td><span class="ok">verified</span><span class="long"><br><span class="muted">signature, device ID, media hashes and enrolled key checked on arrival</span></span> <span class="muted">seq {{.Seqs}}</span></td>
</tr>
{{end}}
</tbody>
</table>
{{else}}
<p>No events.</p>
{{end}}
</div>
<p id="pager">{{if .Newer}}<a href="/">newest</a> {{end}}{{if .Older}}<a href="{{.Older}}" rel="next">older events →</a>{{end}}</p>
<h2 id="unsynced">“Unsynced clock”</h2>
<p class="muted">` + unsyncedText + `</p>
{{if .Live}}<script src="/static/events.js"></script>{{end}}
{{if .Sealed}}<script src="/static/e2ee.js"></script><script src="/static/sealed.js" defer></script>{{end}}
</body>
</html>
`

// pageStyle is the style of the owner's pages: one column on a phone.
const pageStyle = `body { font-family: system-ui, sans-serif; margin: 1em auto; padding: 0 1em; max-width: 1200px; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: .4em .6em; text-align: left; vertical-align: top; }
td.thumb img { width: 200px; max-width: 100%; height: auto; display: block; }
.scroll { overflow-x: auto; }
.mono { font-family: monospace; word-break: break-all; }
.small { font-size: .85em; }
.warn { color: #a40; font-weight: bold; }
.ok { color: #070; font-weight: bold; }
.muted { color: #666; }
.notcam { color: #fff; background: #a40; font-weight: bold; padding: 0 .3em; }
tr.new { background: #ffd; }
.frames { display: flex; flex-wrap: wrap; gap: 1em; }
.frame { flex: 1 1 420px; min-width: 0; }
.frame figure { position: relative; margin: 0; }
.frame img { width: 100%; height: auto; display: block; image-rendering: auto; }
.frame svg { position: absolute; left: 0; top: 0; width: 100%; height: 100%; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; font-size: .85em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; }
dl.facts dd { margin: 0; }
@media (max-width: 640px) {
  body { margin: .5em; padding: 0 .3em; }
  #events thead { display: none; }
  #events tr { display: grid; grid-template-columns: 132px 1fr; column-gap: .6em; border-bottom: 1px solid #ccc; padding: .5em 0; }
  #events td { display: block; border: 0; padding: 0; font-size: .92em; }
  #events td.thumb { grid-row: span 4; }
  td.thumb img { width: 132px; }
  .long { display: none; }
  dl.facts { grid-template-columns: 1fr; }
  dl.facts dt { font-weight: bold; margin-top: .4em; }
}`

// unsyncedText explains the "unsynced clock" mark wherever it appears.
const unsyncedText = `The camera said, in the signed record, that its clock was not known to be set when it took the frame (no NTP or real-time clock yet; a board without a clock battery starts in 1970). The capture time shown is the camera's own and may be wrong, even by years; the time the receiver stored the record ("received") is the receiver's clock. The signature is valid either way: only the time is in doubt. Give the camera network time (NTP) to clear the mark on later events.`

// unsyncedTitle is the short form of unsyncedText, for a tooltip.
const unsyncedTitle = `the camera's clock was not known to be set: the capture time may be wrong; see “Unsynced clock” below`

// page is the data of pageTemplate.
type page struct {
	Account string // the signed-in owner
	Title   string
	Note    string
	Cameras []camera
	Rows    []eventRow
	Live    bool   // the first page: updated live
	Newer   bool   // an older page: link to the newest
	Older   string // the next page's URL, or ""
	Sealed  bool   // the first page, or a row with a sealed picture: the e2ee scripts open them
}

// camera is one of the owner's cameras on the owner page: a device with a
// pairing of the owner in the registry, now or in the past. Everything it
// says about records comes from the records the owner may see, never from
// those of an owner before or after.
type camera struct {
	Device       string // the device ID (a camera has no other name)
	Past         bool   // no pairing of the owner is open
	Ended        string // how a past pairing ended: "transferred", "removed", "key rotated", with the sequence number
	Interval     string // the owner's sequence numbers of the device
	Verification string // how the key came in, or that it is revoked or retired
	Revoked      bool
	LastUpload   string // when the receiver stored the newest record the owner sees, or "never"
	LastCapture  string // the latest capture time of those records, or "never"
	Unsynced     bool   // the latest capture's clock was not synchronised
	Records      int    // records the owner sees of the device
}

// imageIndex returns the index of the record's thumbnail (or first image), or -1.
func imageIndex(e *indexEntry) int {
	first := -1
	for i, m := range e.Media {
		if !servableImage(m.Type) {
			continue
		}
		if m.Role == provenance.RoleThumbnail {
			return i
		}
		if first < 0 {
			first = i
		}
	}
	return first
}

// sealedType is the media type of an end-to-end encrypted object
// (docs/e2ee.md §7): ciphertext the receiver stores, verifies by hash and
// serves to the owner's browser, which opens it.
const sealedType = e2ee.SealedType

// sealedIndex returns the index of the record's sealed thumbnail (or first
// sealed object), or -1.
func sealedIndex(e *indexEntry) int {
	first := -1
	for i, m := range e.Media {
		if m.Type != sealedType {
			continue
		}
		if m.Role == provenance.RoleThumbnail {
			return i
		}
		if first < 0 {
			first = i
		}
	}
	return first
}

// sealedPageCSP is passkeyPageCSP with blob: images: the pictures a page's
// script opened (docs/e2ee.md) are shown from blob URLs it made.
const sealedPageCSP = "default-src 'none'; img-src 'self' blob:; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// videoPageCSP is sealedPageCSP with media from this origin: an event page
// whose H.264 clip plays in a video element (clip.mp4).
const videoPageCSP = sealedPageCSP + "; media-src 'self'"

// servableImage reports whether a media type is served inline. Anything else
// is served as an opaque download, so a device can not make this origin serve
// HTML or script.
func servableImage(typ string) bool { return typ == "image/jpeg" || typ == "image/png" }

func setPageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

func (s *Server) render(w http.ResponseWriter, p *page) {
	var buf bytes.Buffer
	if err := s.tmpl.Execute(&buf, p); err != nil {
		s.log.Error("receiver: render page", "err", err)
		writeLine(w, http.StatusInternalServerError, "cannot render the page")
		return
	}
	setPageHeaders(w)
	if p.Live || p.Sealed {
		w.Header().Set("Content-Security-Policy", sealedPageCSP) // the live list's and the e2ee scripts, from this origin, their fetches, and the pictures they open
	}
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(buf.Bytes()); err != nil {
		s.log.Debug("receiver: write page", "err", err)
	}
}

// ownerCameras lists the devices with a pairing of owner in reg, current
// ones first, each by device ID. entries are the records owner may see
// (ownerEntries, read with reg): the counts and times come from them only,
// so a camera transferred to someone else shows nothing of its new owner's
// records, and a revoked one none at all.
func ownerCameras(reg *registry, owner string, entries []*indexEntry) []camera {
	type seen struct {
		n                int
		received         time.Time
		captured         int64
		capturedUnsynced bool
		capturedKnown    bool
	}
	byDevice := map[string]*seen{}
	for _, e := range entries {
		sn := byDevice[e.Device]
		if sn == nil {
			sn = &seen{}
			byDevice[e.Device] = sn
		}
		sn.n++
		if e.ReceivedAt.After(sn.received) {
			sn.received = e.ReceivedAt
		}
		if !sn.capturedKnown || e.TimeUnixMs > sn.captured {
			sn.captured, sn.capturedUnsynced, sn.capturedKnown = e.TimeUnixMs, e.Clock != provenance.ClockSynced, true
		}
	}
	var out []camera
	for id, d := range reg.Devices {
		var mine []pairing
		for _, p := range d.Pairings {
			if p.Owner == owner {
				mine = append(mine, p)
			}
		}
		if len(mine) == 0 {
			continue
		}
		c := camera{Device: id, Interval: intervals(mine), Revoked: d.Revoked, LastUpload: "never", LastCapture: "never"}
		rotatedMine := true // a rotation of the key, if any, is the owner's to know
		if last := mine[len(mine)-1]; last.Until != 0 {
			c.Past = true
			c.Ended, rotatedMine = ended(d, last)
		}
		c.Verification = verification(d, rotatedMine)
		if sn := byDevice[id]; sn != nil {
			c.Records = sn.n
			c.LastUpload = sn.received.UTC().Format(time.DateTime + " UTC")
			c.LastCapture = time.UnixMilli(sn.captured).UTC().Format(time.DateTime + " UTC")
			c.Unsynced = sn.capturedUnsynced
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b camera) int {
		if a.Past != b.Past {
			if a.Past {
				return 1
			}
			return -1
		}
		return strings.Compare(a.Device, b.Device)
	})
	return out
}

// intervals describes an owner's pairings of a device by sequence number.
func intervals(ps []pairing) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		if p.Until == 0 {
			parts[i] = "records from seq " + strconv.FormatUint(p.From, 10)
		} else {
			parts[i] = "records seq " + strconv.FormatUint(p.From, 10) + " to " + strconv.FormatUint(p.Until-1, 10)
		}
	}
	return strings.Join(parts, ", ")
}

// ended says how the owner's last pairing of d, closed, ended: the key was
// rotated (the camera goes on under its new device ID; byRotation), the
// device was paired to another owner after it (without saying whom), or
// unpaired.
func ended(d *registration, last pairing) (how string, byRotation bool) {
	at := " at seq " + strconv.FormatUint(last.Until, 10)
	if d.RotatedTo != "" && last.Until == d.RotatedSeq+1 {
		return "key rotated" + at, true
	}
	for _, p := range d.Pairings {
		if p.Owner != last.Owner && p.From >= last.Until {
			return "transferred" + at, false
		}
	}
	return "removed" + at, false
}

// verification says how the device's key came into the registry and
// whether it is still trusted; a rotation of the key is named only if
// showRotation (an owner who had the camera when it rotated), so a previous
// owner does not learn the next owner's new device ID.
func verification(d *registration, showRotation bool) string {
	switch {
	case d.Revoked:
		return "revoked: its uploads are refused and its records shown to no one"
	case d.RotatedTo != "" && showRotation:
		return "key retired: rotated to " + d.RotatedTo + " at seq " + strconv.FormatUint(d.RotatedSeq, 10)
	case d.byFleetCA():
		return "key certified by a fleet CA"
	case strings.HasPrefix(d.Via, ViaRotation):
		return "key rotated from " + strings.TrimPrefix(d.Via, ViaRotation)
	}
	return "enrolled key"
}

// viewUnavailable answers 503 when the registry or the owner lookup cannot be
// read: a view fails closed.
func (s *Server) viewUnavailable(w http.ResponseWriter, err error) {
	s.log.Error("receiver: owner view unavailable", "err", err)
	w.Header().Set("Retry-After", "1")
	writeLine(w, http.StatusServiceUnavailable, "owner view unavailable, retry later")
}

// mediaFor resolves a media request to its stored record and index; ok is
// false if there is no such object.
func (s *Server) mediaFor(r *http.Request) (e *indexEntry, i int, ok bool) {
	e = s.lookup(r.PathValue("device"), r.PathValue("event"), r.PathValue("kind"))
	if e == nil {
		return nil, 0, false
	}
	i, err := strconv.Atoi(r.PathValue("i"))
	if err != nil || i < 0 || i >= len(e.Media) || strconv.Itoa(i) != r.PathValue("i") {
		return nil, 0, false
	}
	return e, i, true
}

// ownerGate answers an owner's request for one stored record: it returns the
// record and the registry read for the request if it may be served, and
// otherwise has answered (404 for an object that does not exist, is not
// offered to the owner, or is a caught mix-up, alike; 503 if the registry or
// the lookup cannot be read).
func (s *Server) ownerGate(w http.ResponseWriter, r *http.Request, e *indexEntry, owner string) (*registry, bool) {
	if e == nil || !ValidOwner(owner) {
		http.NotFound(w, r)
		return nil, false
	}
	reg, err := s.regs.read()
	if err != nil {
		s.viewUnavailable(w, err)
		return nil, false
	}
	ok, err := s.mayServeEntry(reg, e, owner)
	if err != nil {
		s.viewUnavailable(w, err)
		return nil, false
	}
	if !ok {
		s.log.Info("receiver: view denied: no pairing of the owner covers the record", "owner", owner, "device", e.Device,
			"event", e.Event, "kind", e.Kind, "seq", e.Seq, "remote", r.RemoteAddr)
		http.NotFound(w, r)
		return nil, false
	}
	return reg, true
}

// handleOwnerMedia serves a media object to the signed-in owner only if its record's verified
// signer is paired to the owner in the registry read now (and the lookup
// offers it); otherwise it answers 404, the same as for an object that does
// not exist, and counts a denied view or a caught mix-up.
func (s *Server) handleOwnerMedia(w http.ResponseWriter, r *http.Request, u *user) {
	e, i, ok := s.mediaFor(r)
	if !ok {
		e = nil
	}
	reg, ok := s.ownerGate(w, r, e, u.name)
	if !ok {
		return
	}
	s.serveMedia(w, reg, e, i)
}

// handleOwnerEnvelope serves a record's signed envelope (COSE_Sign1, the
// bytes the device signed) under the same rule as its media, so an owner can
// verify it independently.
func (s *Server) handleOwnerEnvelope(w http.ResponseWriter, r *http.Request, u *user) {
	e := s.lookup(r.PathValue("device"), r.PathValue("event"), r.PathValue("kind"))
	reg, ok := s.ownerGate(w, r, e, u.name)
	if !ok {
		return
	}
	env, _, ok := s.verifiedAtView(w, reg, e)
	if !ok {
		return
	}
	h := w.Header()
	h.Set("Content-Type", `application/cose; cose-type="cose-sign1"`)
	// The name is made of IDs (letters, digits, '-', '_'): nothing to quote.
	h.Set("Content-Disposition", `attachment; filename="`+e.Device+"-"+e.Event+"-"+e.name()+`.cose"`)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(env)))
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(env); err != nil {
		s.log.Debug("receiver: write envelope", "err", err)
	}
}

// verifiedAtView reads a stored record and re-verifies it (verifyStored)
// before any of it is served; a record that no longer verifies is refused
// with 500, counted and logged, never shown.
func (s *Server) verifiedAtView(w http.ResponseWriter, reg *registry, e *indexEntry) (envelope []byte, media [][]byte, ok bool) {
	env, media, reason := verifyStored(s.dir, reg, e)
	if reason != "" {
		s.mu.Lock()
		s.stats.CorruptMedia++
		s.mu.Unlock()
		s.log.Error("receiver: stored record no longer verifies; not serving it",
			"device", e.Device, "event", e.Event, "kind", e.Kind, "reason", reason)
		writeLine(w, http.StatusInternalServerError, "stored record does not match its signature")
		return nil, nil, false
	}
	return env, media, true
}

// serveMedia sends a stored media object after re-verifying its record from
// disk (signature, signer, media hashes, index agreement): a file changed on
// disk is refused, never shown.
func (s *Server) serveMedia(w http.ResponseWriter, reg *registry, e *indexEntry, i int) {
	_, media, ok := s.verifiedAtView(w, reg, e)
	if !ok {
		return
	}
	m, data := e.Media[i], media[i]
	h := w.Header()
	if servableImage(m.Type) {
		h.Set("Content-Type", m.Type)
	} else {
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Disposition", "attachment")
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(data); err != nil {
		s.log.Debug("receiver: write media", "err", err)
	}
}
