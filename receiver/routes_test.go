package receiver

import (
	"bytes"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/internal/livestream"
	"github.com/keyframe-cam/keyframe/provenance"
)

// rawReq sends a request without following redirects, with extra headers
// (a "Host" entry sets the Host header).
func (e *testEnv) rawReq(method, path string, body string, hdr map[string]string, cookies ...*http.Cookie) (*http.Response, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.hs.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	c := *e.hs.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, b
}

var wildcard = regexp.MustCompile(`\{([a-z]+)(\.\.\.)?\}|\{\$\}`)

// TestRouteTable walks the receiver's own route table. Every route but the
// device upload is asked without a session, with a forged cookie, with an
// expired and a revoked session of the owner whose data the request names,
// with another owner's session, with an admin's or an owner's session where
// the role is wrong, and with the owner's live session under a Host the
// receiver does not serve: each is refused (401, 403, 404, 421, or the
// sign-in page) and no body holds alice's event ID, device ID, thumbnail
// (JPEG) bytes or envelope. The right session is then served, so the
// refusals are not an accident of a wrong path. A route added to the table
// is tried the same way; a route with a path wildcard the test does not know
// fails it until the test learns it.
func TestRouteTable(t *testing.T) {
	clk := &stepClock{t: testNow}
	// Live streams end soon, so each try of the stream route is answered.
	e := newEnv(t, Options{Clock: clk, StreamLifetime: 20 * time.Millisecond, Live: LiveOptions{FirstFrame: 20 * time.Millisecond}})
	a, b := newDevice(t), newDevice(t)
	e.enroll(a, "alice")
	e.enroll(b, "bob")
	ra := a.record(t, "alice-ev", provenance.KindStart, 1)
	rb := b.record(t, "bob-ev", provenance.KindStart, 1)
	e.mustUpload(ra, http.StatusCreated)
	e.mustUpload(rb, http.StatusCreated)
	// A segment of alice's event: its clip is served (clip.mkv, records.zip).
	e.mustUpload(a.newTestClip(t, ra.event, 2, 1, 2, 1).segments[0], http.StatusCreated)
	// An H.264 clip of alice's (clip.mp4 is tried on it).
	hc := a.newH264Clip(t, "alice-h264", 10, syntheticH264(4), 1, 4, 1, nil)
	hc.upload(e, true)
	e.account("alice", RoleOwner)
	e.account("bob", RoleOwner)
	e.account("ops", RoleAdmin)
	// Alice's e2ee key set, and a join request of a browser named after
	// her camera: GET /v1/e2ee/keys shows them to her only.
	aliceKeys := newE2EEOwner(t, 1)
	e.putKeySet("alice", aliceKeys, 1)
	jr, _ := joinReq(t, a.id)
	if code, body := e.e2eeDo(http.MethodPost, "/v1/e2ee/requests", jr, e.cookieOf("alice")); code != http.StatusNoContent {
		t.Fatalf("alice's join request: %d %s", code, body)
	}

	// Alice's expired session: made, then left idle past the limit.
	expired, err := e.srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	clk.add(DefaultSessionIdle + time.Minute)
	revoked, err := e.srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	sess := e.srv.sess.list("alice")
	if len(sess) != 1 {
		t.Fatalf("alice's live sessions: %d, want 1 (the expired one is over)", len(sess))
	}
	if ok, err := e.srv.sess.revoke("alice", sess[0].ID); !ok || err != nil {
		t.Fatalf("revoke: %v %v", ok, err)
	}
	cookie := func(name string) *http.Cookie {
		c, err := e.srv.NewSession(name)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	alice, bob, ops := cookie("alice"), cookie("bob"), cookie("ops")
	forged := &http.Cookie{Name: sessionCookie, Value: strings.Repeat("A", tokenChars)}
	garbage := &http.Cookie{Name: sessionCookie, Value: "not-a-token"}

	leaks := func(body []byte) string {
		for _, l := range []struct {
			what string
			b    []byte
		}{{"alice's event ID", []byte(ra.event)}, {"alice's device ID", []byte(a.id)}, {"alice's thumbnail", ra.thumb[4:64]},
			{"alice's envelope", ra.env[8:64]}, {"a JPEG", []byte{0xff, 0xd8, 0xff}}, {"an image tag", []byte("<img")},
			{"alice's H.264 event ID", []byte(hc.event)}, {"alice's H.264 key frame", hc.all[0][len(hc.all[0])-16:]}} {
			if bytes.Contains(body, l.b) {
				return l.what
			}
		}
		return ""
	}

	devices := 0
	for _, rt := range e.srv.routes() {
		method, pattern, _ := strings.Cut(rt.pattern, " ")
		unknown := ""
		path := wildcard.ReplaceAllStringFunc(pattern, func(w string) string {
			switch w {
			case "{$}":
				return ""
			case "{device}":
				return a.id
			case "{event}":
				if strings.HasSuffix(pattern, "/clip.mp4") {
					return hc.event
				}
				return ra.event
			case "{kind}":
				return ra.kind
			case "{i}":
				return "0"
			case "{token}":
				return strings.Repeat("B", tokenChars)
			case "{id}":
				return aliceKeys.Keys[0].ID
			}
			unknown = w
			return w
		})
		if unknown != "" {
			t.Errorf("route %s: wildcard %s: teach TestRouteTable a value for it", rt.pattern, unknown)
			continue
		}
		body := ""
		if method == http.MethodPost {
			body = "id=x&name=alice&password=wrong-password-123"
		}
		if rt.access == accessDevice {
			devices++
			switch rt.pattern {
			case "PUT /v1/events/{event}/{kind}":
			case "POST /v1/live/{device}/wait", "PUT /v1/live/{device}/stream", "POST /v1/live/{device}/answer", "GET /v1/e2ee/{device}/keyset":
				// Tried with every refused proof in TestLiveDeviceProof
				// and TestE2EEKeySetRoute.
			default:
				t.Errorf("route %s is a device route: only the upload and the live view authenticate by signature; give it an account access", rt.pattern)
			}
			continue
		}
		t.Run(rt.pattern, func(t *testing.T) {
			type try struct {
				name    string
				cookies []*http.Cookie
				hdr     map[string]string
				ok      func(code int) bool
			}
			refused := func(code int) bool {
				return code == http.StatusUnauthorized || code == http.StatusForbidden || code == http.StatusNotFound || code == http.StatusMisdirectedRequest
			}
			noSession := refused
			if rt.signIn {
				noSession = func(code int) bool { return code == http.StatusOK }
			}
			tries := []try{
				{"foreign Host", []*http.Cookie{alice}, map[string]string{"Host": "rebind.attacker.example:8417"}, func(c int) bool { return c == http.StatusMisdirectedRequest }},
				{"foreign Host, no port", []*http.Cookie{alice}, map[string]string{"Host": "attacker.example"}, func(c int) bool { return c == http.StatusMisdirectedRequest }},
			}
			if rt.access != accessAnonymous {
				tries = append(tries,
					try{"no session", nil, nil, noSession},
					try{"forged cookie", []*http.Cookie{forged}, nil, noSession},
					try{"malformed cookie", []*http.Cookie{garbage}, nil, noSession},
					try{"expired session", []*http.Cookie{expired}, nil, noSession},
					try{"revoked session", []*http.Cookie{revoked}, nil, noSession},
					try{"cookie of the other name", []*http.Cookie{{Name: sessionCookieTLS, Value: alice.Value}}, nil, noSession},
				)
				if method != http.MethodGet {
					tries = append(tries, try{"cross-origin", []*http.Cookie{alice}, map[string]string{"Sec-Fetch-Site": "cross-site"}, func(c int) bool { return c == http.StatusForbidden }},
						try{"cross-origin (Origin)", []*http.Cookie{alice}, map[string]string{"Origin": "http://attacker.example"}, func(c int) bool { return c == http.StatusForbidden }})
				}
				switch rt.access {
				case accessOwner:
					tries = append(tries, try{"another owner", []*http.Cookie{bob}, nil, refused},
						try{"admin", []*http.Cookie{ops}, nil, func(c int) bool { return c == http.StatusForbidden }})
				case accessAdmin:
					tries = append(tries, try{"owner", []*http.Cookie{alice}, nil, func(c int) bool { return c == http.StatusForbidden }})
				case accessSignedIn:
					// Another owner gets their own, never alice's.
					tries = append(tries, try{"another owner", []*http.Cookie{bob}, nil, func(int) bool { return true }})
				}
			}
			for _, tr := range tries {
				resp, got := e.rawReq(method, path, body, tr.hdr, tr.cookies...)
				if !tr.ok(resp.StatusCode) {
					t.Errorf("%s: status %d", tr.name, resp.StatusCode)
				}
				if l := leaks(got); l != "" {
					t.Errorf("%s: %d, the body holds %s", tr.name, resp.StatusCode, l)
				}
			}
			// The right credential is served (for routes that give data).
			if rt.data {
				c := alice
				if rt.access == accessAdmin {
					c = ops
				}
				wantType := "text/event-stream"
				empty := false
				switch {
				case strings.HasSuffix(rt.pattern, "/frames"):
					// The live page's frames: no camera streams here, so
					// none comes, and it ends after FirstFrame.
					wantType, empty = livestream.FramesType, true
				case strings.HasPrefix(rt.pattern, "GET /live/"):
					wantType = "multipart/x-mixed-replace" // the live picture: its first boundary, then no camera streams here, so it ends after FirstFrame
				}
				resp, got := e.rawReq(method, path, body, nil, c)
				if resp.StatusCode != http.StatusOK || (len(got) == 0 && !empty) {
					t.Errorf("the right session: %d", resp.StatusCode)
				}
				if rt.stream && !strings.HasPrefix(resp.Header.Get("Content-Type"), wantType) {
					t.Errorf("the right session: %q, not a stream", resp.Header.Get("Content-Type"))
				}
				// A stream carries records stored while it is open
				// (TestStreamOwnerScoped), none of these.
				if rt.access == accessOwner && !rt.stream && leaks(got) == "" {
					t.Errorf("alice's own request got nothing of hers: the refusals above prove nothing")
				}
			}
		})
	}
	if devices != 5 {
		t.Errorf("%d device routes, want the upload, the live view's three and the key set", devices)
	}
	if t.Failed() {
		return
	}
	// The expired and revoked sessions stay over, and the live ones work.
	if code, page, _ := e.do(http.MethodGet, "/", nil, alice); code != http.StatusOK || !bytes.Contains(page, []byte(ra.event)) {
		t.Errorf("alice's page with her live session: %d", code)
	}
}

// TestOldOpenRoutesGone: the pages that served anyone (every event at /,
// media at /media/ without a session, owner pages chosen by the URL) are
// gone: the same paths are refused without a session.
func TestOldOpenRoutesGone(t *testing.T) {
	e, a, _, ra, _ := twoOwners(t)
	for _, p := range []string{"/", mediaURL(a, ra), "/owners/alice/", "/owners/alice/media/" + a.id + "/" + ra.event + "/" + ra.kind + "/0",
		"/owners/alice/envelope/" + a.id + "/" + ra.event + "/" + ra.kind, envelopeURL(a, ra), "/v1/stats"} {
		code, body, _ := e.get(p)
		if bytes.Contains(body, []byte(ra.event)) || bytes.Contains(body, ra.thumb[4:64]) || bytes.Contains(body, []byte("<img")) {
			t.Errorf("GET %s without a session: %d with alice's data", p, code)
		}
		if code == http.StatusOK && p != "/" {
			t.Errorf("GET %s without a session: 200", p)
		}
	}
}
