package receiver

// Browser tests: the receiver's pages in a real headless chromium
// (internal/browsertest; skipped without chromium, a failure under CI).
// Every wait is bounded by browsertest.ActionTimeout or a deadline here.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"html/template"
	"image"
	"image/color"
	"image/jpeg"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keyframe-cam/keyframe/internal/browsertest"
	"github.com/keyframe-cam/keyframe/provenance"
)

// realJPEG returns a small JPEG a browser decodes (thumbFor's fake one has
// no image in it).
func realJPEG(t testing.TB) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for y := range 48 {
		for x := range 64 {
			img.Set(x, y, color.RGBA{uint8(x * 4), uint8(y * 5), 128, 255})
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// uploadJPEGRecord stores a record of d with a real JPEG thumbnail.
func uploadJPEGRecord(e *testEnv, d *testDevice, event string, seq uint64) {
	e.t.Helper()
	thumb := realJPEG(e.t)
	env := d.sign(e.t, d.payload(event, provenance.KindStart, seq, thumb))
	if code, reply := e.put("/v1/events/"+event+"/"+provenance.KindStart, bundle(e.t, env, thumb)); code != http.StatusCreated {
		e.t.Fatalf("upload %s: %d %s", event, code, reply)
	}
}

// bodyText returns the text of the tab's page.
func bodyText(t testing.TB, ctx context.Context) string {
	t.Helper()
	// Evaluated, not chromedp.Text: a node ID of a page whose live list
	// (events.js) or scripts just changed the document can be gone by the
	// time its text is asked for ("No node with given id found").
	return browsertest.Run(t, ctx, chromedp.Evaluate[string](`document.body.innerText`))
}

// thumbnailsLoaded returns how many <img> of the page have loaded and
// decoded (naturalWidth > 0), and how many there are, once every one has
// finished loading (or failed).
func thumbnailsLoaded(t testing.TB, ctx context.Context) (loaded, total int) {
	t.Helper()
	type counts struct{ Loaded, Total int }
	c := browsertest.Run(t, ctx, chromedp.Poll[counts](`(() => {
		const imgs = [...document.images];
		if (!imgs.every(i => i.complete)) return false;
		return {Loaded: imgs.filter(i => i.naturalWidth > 0).length, Total: imgs.length};
	})()`, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second)))
	return c.Loaded, c.Total
}

// signInWith fills the sign-in page's form and submits it; it returns the
// HTTP status of the page that answers (after redirects).
func signInWith(t testing.TB, ctx context.Context, base, name, password string) int64 {
	t.Helper()
	browsertest.Do(t, ctx, chromedp.Navigate(base+"/signin"), chromedp.WaitReady(chromedp.CSS(`form[action="/signin"]`)))
	browsertest.Do(t, ctx,
		chromedp.SendKeys(chromedp.CSS(`input[name=name]`), name),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), password),
	)
	return browsertest.Response(t, ctx, chromedp.Submit(chromedp.CSS(`form[action="/signin"]`))).Status
}

// TestBrowserPasswordSignIn: an owner made with a setup link opens it in a
// browser, chooses a password (signed in at once), signs out, signs in with
// the password on the sign-in page, sees their event with a thumbnail that
// loads, finds the session on the sessions page, and signs out back to the
// sign-in page. A wrong password, and an unknown name, get the same
// message. Screenshots of the sign-in, owner and sessions pages.
func TestBrowserPasswordSignIn(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	uploadJPEGRecord(e, d, "alice-ev", 1)
	other := newDevice(t)
	e.enroll(other, "bob")
	uploadJPEGRecord(e, other, "bob-ev", 1)
	l, err := (Accounts{Dir: e.dir}).Add("alice", RoleOwner)
	if err != nil {
		t.Fatal(err)
	}
	base := e.hs.URL
	ctx := browsertest.New(t)

	// The setup link: choose a password, signed in.
	browsertest.Do(t, ctx, chromedp.Navigate(base+l.Path), chromedp.WaitReady(chromedp.CSS(`input[name=confirm]`)))
	const password = "a long pass phrase for alice"
	browsertest.Do(t, ctx,
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), password),
		chromedp.SendKeys(chromedp.CSS(`input[name=confirm]`), password),
	)
	if resp := browsertest.Response(t, ctx, chromedp.Submit(chromedp.CSS(`form`))); resp.Status != http.StatusOK || !strings.HasSuffix(resp.URL, "/") {
		t.Fatalf("after choosing a password: %d %s, want the home page", resp.Status, resp.URL)
	}
	if txt := bodyText(t, ctx); !strings.Contains(txt, "Signed in as alice") || !strings.Contains(txt, "alice-ev") {
		t.Fatalf("after choosing a password the page shows:\n%s", txt)
	}
	browsertest.Response(t, ctx, chromedp.Click(chromedp.CSS(`form[action="/signout"] button`)))
	if txt := bodyText(t, ctx); strings.Contains(txt, "alice-ev") || !strings.Contains(txt, "Sign in") {
		t.Fatalf("after signing out the page shows:\n%s", txt)
	}

	// A wrong password and an unknown name: the same generic message.
	for _, tc := range []struct{ name, password string }{{"alice", "not the right pass phrase"}, {"nobody", password}} {
		if status := signInWith(t, ctx, base, tc.name, tc.password); status != http.StatusUnauthorized {
			t.Errorf("sign-in as %s with a wrong password: %d, want 401", tc.name, status)
		}
		if msg := browsertest.Run(t, ctx, chromedp.Text(chromedp.CSS(`p.warn`))); msg != signInFailText {
			t.Errorf("sign-in as %s with a wrong password says %q, want %q", tc.name, msg, signInFailText)
		}
		if txt := bodyText(t, ctx); strings.Contains(txt, "alice-ev") {
			t.Errorf("a failed sign-in shows an event")
		}
	}
	browsertest.Screenshot(t, ctx, "signin-wrong-password")

	// The password signs in: the owner's page, the event, its thumbnail.
	if status := signInWith(t, ctx, base, "alice", password); status != http.StatusOK {
		t.Fatalf("sign-in with the password: %d", status)
	}
	txt := bodyText(t, ctx)
	if !strings.Contains(txt, "alice-ev") || !strings.Contains(txt, d.id) {
		t.Fatalf("alice's page lacks her event or camera:\n%s", txt)
	}
	if strings.Contains(txt, "bob-ev") || strings.Contains(txt, other.id) {
		t.Errorf("alice's page shows bob's event or camera")
	}
	if loaded, total := thumbnailsLoaded(t, ctx); total != 1 || loaded != 1 {
		t.Errorf("alice's page: %d of %d thumbnails loaded, want 1 of 1", loaded, total)
	}
	browsertest.Screenshot(t, ctx, "owner")

	// The sessions page lists this session (and the one the setup link
	// made is gone: signed out).
	browsertest.Response(t, ctx, chromedp.Click(chromedp.CSS(`a[href="/sessions"]`)))
	rows := browsertest.Run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("tr")].slice(1).map(r => r.innerText)`))
	if len(rows) != 1 || !strings.Contains(rows[0], "this one") || !strings.Contains(rows[0], "HeadlessC") {
		t.Errorf("alice's sessions: %q, want this one session, of a headless Chrome", rows)
	}
	browsertest.Screenshot(t, ctx, "sessions")

	// Signing out returns to the sign-in page; the thumbnail is gone too.
	resp := browsertest.Response(t, ctx, chromedp.Click(chromedp.CSS(`form[action="/signout"] button`)))
	if resp.Status != http.StatusOK || browsertest.Run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll('form[action="/signin"]').length`)) != 1 {
		t.Errorf("after signing out: %d, and no sign-in form", resp.Status)
	}
	browsertest.Screenshot(t, ctx, "signin")
	if resp := browsertest.Response(t, ctx, chromedp.Navigate(base+mediaURL(d, &record{event: "alice-ev", kind: provenance.KindStart}))); resp.Status != http.StatusUnauthorized {
		t.Errorf("the thumbnail after signing out: %d, want 401", resp.Status)
	}
}

// testCertDER returns a self-signed certificate for 127.0.0.1 and
// localhost (DER) and its key.
func testCertDER(t testing.TB) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: testNow.Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	return der, k
}

// TestBrowserCrossOriginPostRefused: while the browser holds alice's
// session, a page of another origin posts forms to the receiver's
// /signout, /sessions/revoke and /claims: each is refused with 403 and
// changes nothing (the session works, her other session lives, no claim
// code is made). The other origin is another port of 127.0.0.1 (same
// site: the SameSite=Strict cookie goes along, only the cross-origin check
// stops it) and localhost (cross site). The same forms from the receiver's
// own page work.
func TestBrowserCrossOriginPostRefused(t *testing.T) {
	cert, _ := testCertDER(t)
	e := newEnv(t, Options{TLSCertificate: cert})
	d := newDevice(t)
	e.enroll(d, "alice")
	uploadJPEGRecord(e, d, "alice-ev", 1)
	e.account("alice", RoleOwner)
	phone, err := e.srv.NewSession("alice") // alice's other session, to revoke
	if err != nil {
		t.Fatal(err)
	}
	ps, _ := e.srv.sess.lookup(phone.Value)
	u, err := url.Parse(e.hs.URL)
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	target := "" // the receiver's origin as the attacker's page names it; under mu
	attackerPage := template.Must(template.New("a").Parse(`<!doctype html><title>another site</title>
<form id="signout" method="post" action="{{.}}/signout"><button>win a prize</button></form>
<form id="revoke" method="post" action="{{.}}/sessions/revoke"><input name="id" value="` + ps.ID + `"><button>go</button></form>
<form id="claims" method="post" action="{{.}}/claims"><button>go</button></form>`))
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		origin := target
		mu.Unlock()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = attackerPage.Execute(w, template.URL(origin))
	}))
	t.Cleanup(attacker.Close)
	claimsFile := filepath.Join(e.dir, "claims.json")

	ctx := browsertest.New(t)
	for _, host := range []string{"127.0.0.1", "localhost"} {
		// Sign in on the receiver under this host name (the cookie is the
		// host's), then visit the other origin.
		base := "http://" + net.JoinHostPort(host, u.Port())
		lk, err := (Accounts{Dir: e.dir, Clock: e.srv.clk}).SignInLink("alice")
		if err != nil {
			t.Fatal(err)
		}
		browsertest.Do(t, ctx, chromedp.Navigate(base+lk.Path), chromedp.WaitVisible(chromedp.ID("events")))
		mu.Lock()
		target = base
		mu.Unlock()
		attackerURL := attacker.URL // http://127.0.0.1:other port: same site as 127.0.0.1, cross site for localhost
		for _, form := range []string{"signout", "revoke", "claims"} {
			browsertest.Do(t, ctx, chromedp.Navigate(attackerURL), chromedp.WaitReady(chromedp.ID(form)))
			resp := browsertest.Response(t, ctx, chromedp.Submit(chromedp.ID(form)))
			if body := bodyText(t, ctx); resp.Status != http.StatusForbidden || !strings.Contains(body, "cross-origin request refused") {
				t.Errorf("%s: a post to %s from %s: %d %q, want 403", host, form, attackerURL, resp.Status, body)
			}
			if form == "signout" && host == "127.0.0.1" {
				browsertest.Screenshot(t, ctx, "cross-origin-refused")
			}
		}
		// Nothing changed: signed in still, the other session alive, no
		// claim code.
		browsertest.Do(t, ctx, chromedp.Navigate(base+"/"), chromedp.WaitReady(chromedp.CSS("body")))
		if txt := bodyText(t, ctx); !strings.Contains(txt, "Signed in as alice") || !strings.Contains(txt, "alice-ev") {
			t.Errorf("%s: after the cross-origin posts alice's page shows:\n%s", host, txt)
		}
		if s, _ := e.srv.sess.lookup(phone.Value); s == nil {
			t.Fatalf("%s: alice's other session was revoked by a cross-origin post", host)
		}
		if _, err := os.Stat(claimsFile); !os.IsNotExist(err) {
			t.Fatalf("%s: a cross-origin post made a claim code (%v)", host, err)
		}
	}

	// The receiver's own "Add a camera" button works (so the refusals above
	// were the origin's doing).
	resp := browsertest.Response(t, ctx, chromedp.Submit(chromedp.CSS(`form[action="/claims"]`)))
	if txt := bodyText(t, ctx); resp.Status != http.StatusOK || !strings.Contains(txt, "keyframe join") {
		t.Errorf("Add a camera from the receiver's page: %d\n%s", resp.Status, txt)
	}
	if _, err := os.Stat(claimsFile); err != nil {
		t.Errorf("no claim code after Add a camera: %v", err)
	}
}
