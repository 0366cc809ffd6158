package storm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/receiver"
)

// truth is what the harness knows for certain: which device belongs to which
// owner, and which device index made it.
type truth struct {
	owner  map[string]string // device ID → owner
	index  map[string]int    // device ID → device index
	ids    []string          // by index
	owners int
}

func newTruth(ids []*identity, owners int) *truth {
	t := &truth{owner: map[string]string{}, index: map[string]int{}, owners: owners}
	for _, id := range ids {
		t.owner[id.id] = id.owner
		t.index[id.id] = id.idx
		t.ids = append(t.ids, id.id)
	}
	return t
}

// wrongEvent says why an event served to owner is not owner's to see (or
// is not what the harness made), or "" if it is.
func (t *truth) wrongEvent(owner, device, event string) string {
	o, ok := t.owner[device]
	switch {
	case !ok:
		return fmt.Sprintf("device %s is no device of the storm", device)
	case o != owner:
		return fmt.Sprintf("device %s belongs to %s", device, o)
	}
	if !strings.HasPrefix(event, "ev-"+strconv.Itoa(t.index[device])+"-") {
		return fmt.Sprintf("event %s was not made by device %s", event, device)
	}
	return ""
}

// misattributed counts the events of a view served to owner that are not
// owner's, and describes the first.
func (t *truth) misattributed(owner string, evs []receiver.EventView) (n int, first string) {
	for _, ev := range evs {
		why := t.wrongEvent(owner, ev.Device, ev.Event)
		if why == "" && ev.Owner != owner {
			why = fmt.Sprintf("the view names owner %s", ev.Owner)
		}
		if why != "" {
			if n == 0 {
				first = fmt.Sprintf("%s was shown %s/%s: %s", owner, ev.Event, ev.Kind, why)
			}
			n++
		}
	}
	return n, first
}

// pageDevice finds the device IDs of the rows of an owner page.
var pageDevice = regexp.MustCompile(`<td class="mono">([a-z2-7]{26})<br>`)

// viewStats are the viewer's counts.
type viewStats struct {
	Views         int    `json:"views"`        // owner views through OwnerEvents
	EventsShown   int    `json:"events_shown"` // events in those views
	Pages         int    `json:"pages"`        // owner pages fetched over HTTP
	Media         int    `json:"media"`        // own thumbnails fetched (and compared byte for byte)
	Envelopes     int    `json:"envelopes"`    // own envelopes fetched and verified
	Probes        int    `json:"probes"`       // requests for a stranger's thumbnail (must be refused)
	Refused       int    `json:"refused"`      // own objects refused (the cache said "not yours": a denied view)
	Errors        int    `json:"errors"`       // views that failed (5xx, network): not shown, not counted as served
	FirstError    string `json:"first_error,omitempty"`
	Misattributed int    `json:"misattributed"` // events, images or envelopes served to an owner they do not belong to
	FirstMistake  string `json:"first_mistake,omitempty"`
}

// viewer plays owners looking at their events while the storm runs: mostly
// through Server.OwnerEvents, every httpEvery-th view also over HTTP, signed
// in as that owner (the page, one own thumbnail and envelope, one
// stranger's thumbnail), checking everything it is served against the
// truth.
type viewer struct {
	srv    *receiver.Server
	base   string
	client *http.Client
	// signIn returns a client signed in as owner (its session cookie in
	// the client's jar); nil: client as it is.
	signIn func(ctx context.Context, owner string) (*http.Client, error)
	// clients are the signed-in clients by owner (run's goroutine only).
	clients   map[string]*http.Client
	truth     *truth
	keys      map[string]*e2ee.Owner // by owner name, with Config.E2EE: what is served is opened with them
	rnd       *rand.Rand
	rate      float64 // views per second
	httpEvery int

	mu sync.Mutex
	st viewStats
}

// Stats returns the counts so far.
func (v *viewer) Stats() viewStats {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.st
}

func (v *viewer) add(f func(*viewStats)) {
	v.mu.Lock()
	f(&v.st)
	v.mu.Unlock()
}

// failed counts a view that failed, unless it failed because the viewer was
// stopped.
func (v *viewer) failed(ctx context.Context, what string, code int, err error) {
	if ctx.Err() != nil {
		return
	}
	v.add(func(s *viewStats) {
		if s.Errors == 0 {
			if err != nil {
				s.FirstError = fmt.Sprintf("%s: %v", what, err)
			} else {
				s.FirstError = fmt.Sprintf("%s: status %d", what, code)
			}
		}
		s.Errors++
	})
}

func (v *viewer) mistake(n int, what string) {
	if n == 0 {
		return
	}
	v.add(func(s *viewStats) {
		if s.Misattributed == 0 {
			s.FirstMistake = what
		}
		s.Misattributed += n
	})
}

// run views until ctx is done.
func (v *viewer) run(ctx context.Context) {
	interval := time.Duration(float64(time.Second) / v.rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		owner := ownerName(v.rnd.IntN(v.truth.owners))
		evs, err := v.srv.OwnerEvents(owner)
		if err != nil {
			v.failed(ctx, "OwnerEvents("+owner+")", 0, err)
			continue
		}
		n, first := v.truth.misattributed(owner, evs)
		v.mistake(n, first)
		v.add(func(s *viewStats) { s.Views++; s.EventsShown += len(evs) })
		if v.httpEvery > 0 && i%v.httpEvery == 0 {
			v.overHTTP(ctx, owner, evs)
		}
	}
}

// ownerSignIn signs an owner in as a person would with a one-time link the
// operator made (receiver.Accounts.SignInLink, what `keyframe-receiver
// owner link` prints): the account is made on first use, the link followed
// with a cookie jar that keeps the session cookie.
func ownerSignIn(dir, base string, tr http.RoundTripper) func(context.Context, string) (*http.Client, error) {
	return func(ctx context.Context, owner string) (*http.Client, error) {
		accts := receiver.Accounts{Dir: dir}
		if _, err := accts.Add(owner, receiver.RoleOwner); err != nil && !errors.Is(err, receiver.ErrAccountExists) {
			return nil, err
		}
		l, err := accts.SignInLink(owner)
		if err != nil {
			return nil, err
		}
		jar, err := cookiejar.New(nil)
		if err != nil {
			return nil, err
		}
		c := &http.Client{Timeout: 30 * time.Second, Transport: tr, Jar: jar}
		// A program posts the link (a GET only shows the confirm page).
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+l.Path, nil)
		if err != nil {
			return nil, err
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, err
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("sign-in link for %s: status %d", owner, resp.StatusCode)
		}
		return c, nil
	}
}

// clientFor returns the client that views as owner, signing in on first use.
func (v *viewer) clientFor(ctx context.Context, owner string) (*http.Client, error) {
	if v.signIn == nil {
		return v.client, nil
	}
	if c := v.clients[owner]; c != nil {
		return c, nil
	}
	c, err := v.signIn(ctx, owner)
	if err != nil {
		return nil, err
	}
	if v.clients == nil {
		v.clients = map[string]*http.Client{}
	}
	v.clients[owner] = c
	return c, nil
}

// get fetches a path of the receiver signed in as owner.
func (v *viewer) get(ctx context.Context, owner, path string) (int, []byte, error) {
	c, err := v.clientFor(ctx, owner)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.base+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, b, err
}

// overHTTP views owner's page, one of owner's thumbnails and envelopes, and
// asks for a stranger's thumbnail, as a browser signed in as owner would.
func (v *viewer) overHTTP(ctx context.Context, owner string, evs []receiver.EventView) {
	code, page, err := v.get(ctx, owner, "/")
	switch {
	case err != nil || code != http.StatusOK:
		v.failed(ctx, "GET / as "+owner, code, err)
	default:
		v.add(func(s *viewStats) { s.Pages++ })
		for _, m := range pageDevice.FindAllSubmatch(page, -1) {
			if o := v.truth.owner[string(m[1])]; o != owner {
				v.mistake(1, fmt.Sprintf("%s's page lists device %s of %q", owner, m[1], o))
			}
		}
	}
	if len(evs) > 0 {
		ev := evs[v.rnd.IntN(len(evs))]
		if i := v.thumbIndex(ev); i >= 0 {
			v.media(ctx, owner, ev.Device, ev.Event, ev.Kind, ev.Seq, i, false)
		}
		v.envelope(ctx, owner, ev)
	}
	// A stranger's first event, asked for in owner's session.
	if v.truth.owners > 1 {
		for range 8 {
			d := v.truth.ids[v.rnd.IntN(len(v.truth.ids))]
			if v.truth.owner[d] != owner {
				v.media(ctx, owner, d, eventID(v.truth.index[d], 0), provenance.KindStart, 0, 0, true)
				break
			}
		}
	}
}

// thumbIndex is the index of an event's thumbnail: the receiver's choice,
// or with e2ee the sealed thumbnail (which it serves as a download).
func (v *viewer) thumbIndex(ev receiver.EventView) int {
	if v.keys != nil && len(ev.Media) > 0 && ev.Media[0].Role == provenance.RoleThumbnail {
		return 0
	}
	return ev.Thumbnail()
}

// isThumbnail reports whether body is the thumbnail of the record: the
// stand-in JPEG, or with e2ee one that owner's keys open to it.
func (v *viewer) isThumbnail(owner, device, event, kind string, seq uint64, body []byte) bool {
	want := thumbnail(device, event, kind)
	if v.keys == nil {
		return bytes.Equal(body, want)
	}
	o := v.keys[owner]
	if o == nil {
		return false
	}
	got, err := o.Open(body, e2ee.Binding{Owner: o.Fingerprint(), Device: device, Event: event, Seq: seq, Role: provenance.RoleThumbnail})
	return err == nil && bytes.Equal(got, want)
}

// media fetches one media object signed in as owner and checks what came
// back.
func (v *viewer) media(ctx context.Context, owner, device, event, kind string, seq uint64, i int, probe bool) {
	path := "/media/" + device + "/" + event + "/" + kind + "/" + strconv.Itoa(i)
	code, body, err := v.get(ctx, owner, path)
	switch {
	case err != nil || code >= 500:
		v.failed(ctx, "GET "+path+" as "+owner, code, err)
	case code == http.StatusOK:
		if why := v.truth.wrongEvent(owner, device, event); why != "" {
			v.mistake(1, fmt.Sprintf("%s was served the thumbnail of %s/%s: %s", owner, event, kind, why))
		} else if !v.isThumbnail(owner, device, event, kind, seq, body) {
			v.mistake(1, fmt.Sprintf("%s was served other bytes as the thumbnail of %s/%s", owner, event, kind))
		} else {
			v.add(func(s *viewStats) { s.Media++ })
		}
	case probe:
		v.add(func(s *viewStats) { s.Probes++ })
	default:
		v.add(func(s *viewStats) { s.Refused++ })
	}
}

// envelope fetches an event's envelope signed in as owner, verifies it and
// checks whose it is.
func (v *viewer) envelope(ctx context.Context, owner string, ev receiver.EventView) {
	path := "/envelope/" + ev.Device + "/" + ev.Event + "/" + ev.Kind
	code, body, err := v.get(ctx, owner, path)
	switch {
	case err != nil || code >= 500:
		v.failed(ctx, "GET "+path+" as "+owner, code, err)
		return
	case code != http.StatusOK:
		v.add(func(s *viewStats) { s.Refused++ })
		return
	}
	thumb := thumbnail(ev.Device, ev.Event, ev.Kind)
	if v.keys != nil {
		// Sealed: the envelope binds the sealed bytes served, which the
		// owner opens to the thumbnail.
		mpath := "/media/" + ev.Device + "/" + ev.Event + "/" + ev.Kind + "/0"
		code, sealed, err := v.get(ctx, owner, mpath)
		if err != nil || code != http.StatusOK {
			v.failed(ctx, "GET "+mpath+" as "+owner, code, err)
			return
		}
		if !v.isThumbnail(owner, ev.Device, ev.Event, ev.Kind, ev.Seq, sealed) {
			v.mistake(1, fmt.Sprintf("%s was served a sealed thumbnail of %s/%s that its keys do not open to the thumbnail", owner, ev.Event, ev.Kind))
			return
		}
		thumb = sealed
	}
	vf, err := provenance.Verify(body, [][]byte{thumb}, nil)
	if err != nil {
		v.mistake(1, fmt.Sprintf("%s was served an envelope for %s/%s that does not verify with its thumbnail: %v", owner, ev.Event, ev.Kind, err))
		return
	}
	if why := v.truth.wrongEvent(owner, vf.Device, vf.Payload.Event); why != "" {
		v.mistake(1, fmt.Sprintf("%s was served the envelope of %s/%s: %s", owner, vf.Payload.Event, vf.Payload.Kind, why))
		return
	}
	v.add(func(s *viewStats) { s.Envelopes++ })
}
