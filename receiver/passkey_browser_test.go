package receiver

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keyframe-cam/keyframe/internal/browsertest"
)

// TestBrowserPasskey drives Debian's chromium (internal/browsertest) with a
// virtual authenticator against the receiver on http://localhost:PORT: an
// owner signs in with a one-time link, adds a passkey on the account page
// (the page's script, the authenticator answering), signs out, signs in
// with the passkey alone (no name typed) and sees their own page. On
// http://127.0.0.1:PORT, the same receiver, the sign-in page offers no
// passkey, says why, and a password signs in. Screenshots: the account page
// listing the passkey, the sign-in page with the passkey button, the one at
// the IP address.
func TestBrowserPasskey(t *testing.T) {
	began := time.Now()
	e := newEnv(t, Options{})
	e.account("alice", RoleOwner)
	e.setupPassword("alice", testPassword)
	link, err := Accounts{Dir: e.dir}.SignInLink("alice")
	if err != nil {
		t.Fatal(err)
	}
	local := e.origin()

	ctx := browsertest.New(t)
	started := time.Now()
	auth := browsertest.VirtualAuthenticator(t, ctx)

	// Signed in by the one-time link, then the account page.
	browsertest.Do(t, ctx, chromedp.Navigate(local+link.Path),
		chromedp.WaitVisible(chromedp.CSS("nav")))
	signedIn(t, ctx)
	browsertest.Do(t, ctx, chromedp.Navigate(local+"/sessions"), chromedp.WaitVisible(chromedp.ID("passkey-add")))
	if n := len(storedAccount(t, e.dir, "alice").Passkeys); n != 0 {
		t.Fatalf("alice has %d passkeys before adding one", n)
	}

	// Add a passkey: the script asks the authenticator, posts the answer,
	// and the page comes back listing it.
	browsertest.Do(t, ctx, chromedp.Click(chromedp.ID("passkey-add")), chromedp.WaitVisible(chromedp.ID("passkeys")))
	creds := browsertest.Credentials(t, ctx, auth)
	acc := storedAccount(t, e.dir, "alice")
	if len(creds) != 1 || creds[0].RpID != "localhost" || !creds[0].IsResidentCredential || len(acc.Passkeys) != 1 ||
		string(acc.Passkeys[0].ID) != string(creds[0].CredentialID) {
		t.Fatalf("after Add a passkey: the authenticator holds %d, alice %d passkeys", len(creds), len(acc.Passkeys))
	}
	listed := browsertest.Run(t, ctx, chromedp.Text(chromedp.ID("passkeys")))
	browsertest.Screenshot(t, ctx, "account-page-with-passkey")
	if want := b64u.EncodeToString(acc.Passkeys[0].ID)[:12]; !strings.Contains(listed, want) {
		t.Errorf("the account page lists %q, want the passkey %s…", listed, want)
	}

	// Sign out; the sign-in page offers the passkey.
	browsertest.Do(t, ctx, chromedp.Click(chromedp.CSS("nav form button")), chromedp.WaitVisible(chromedp.ID("passkey-signin")))
	browsertest.Screenshot(t, ctx, "signin-page-with-passkey-button")

	// Sign in with the passkey alone.
	browsertest.Do(t, ctx, chromedp.Click(chromedp.ID("passkey-signin")),
		chromedp.WaitVisible(chromedp.CSS("nav")))
	signedIn(t, ctx)
	if loc := browsertest.Run(t, ctx, chromedp.Location()); loc != local+"/" {
		t.Errorf("after the passkey sign-in the browser is at %s, want %s/", loc, local)
	}
	if p := storedAccount(t, e.dir, "alice").Passkeys[0]; p.LastUsed.IsZero() || p.SignCount == 0 {
		t.Errorf("the passkey's use is not recorded: %+v", p)
	}
	if got := browsertest.Credentials(t, ctx, auth); len(got) != 1 || got[0].SignCount == 0 {
		t.Errorf("the authenticator's credential was not used")
	}

	// The same receiver at its IP address: no passkey, a password works.
	ip := e.hs.URL // http://127.0.0.1:PORT
	browsertest.Do(t, ctx, chromedp.Navigate(ip+"/signin"), chromedp.WaitVisible(chromedp.ID("passkey-why")))
	if n := browsertest.Run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("#passkey-signin, script").length`)); n != 0 {
		t.Errorf("the sign-in page at %s has %d passkey buttons or scripts", ip, n)
	}
	browsertest.Screenshot(t, ctx, "signin-page-at-ip-address")
	browsertest.Do(t, ctx,
		chromedp.SendKeys(chromedp.CSS(`input[name="name"]`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), testPassword),
		chromedp.Submit(chromedp.CSS(`input[name="password"]`)),
		chromedp.WaitVisible(chromedp.CSS("nav")))
	signedIn(t, ctx)
	if u, err := url.Parse(browsertest.Run(t, ctx, chromedp.Location())); err != nil || u.Host != e.hs.Listener.Addr().String() {
		t.Errorf("after the password sign-in the browser is at %v", u)
	}
	t.Logf("browser passkey test: %s in all, %s after the browser started", time.Since(began).Round(time.Millisecond), time.Since(started).Round(time.Millisecond))
}

// signedIn fails t unless the page of ctx says alice is signed in.
func signedIn(t *testing.T, ctx context.Context) {
	t.Helper()
	if nav := browsertest.Run(t, ctx, chromedp.Text(chromedp.CSS("nav"))); !strings.Contains(nav, "Signed in as alice") {
		t.Fatalf("the page says %q, want alice signed in", nav)
	}
}
