package democheck

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keyframe-cam/keyframe/internal/browsertest"
)

// SignInURLEnv names the variable holding the demo's one-time sign-in link.
const SignInURLEnv = "DEMO_SIGNIN_URL"

// within is the acceptance's bound: the link shows the demo owner's
// verified events within 30 s.
const within = 30 * time.Second

// TestDemoSignIn opens the sign-in link and reloads the page it lands on
// until it lists a verified event with a thumbnail the browser decoded
// (naturalWidth > 0), within 30 s; it saves a screenshot.
func TestDemoSignIn(t *testing.T) {
	link := os.Getenv(SignInURLEnv)
	if link == "" {
		t.Skip("set " + SignInURLEnv + " to the `keyframe demo: sign in:` link (scripts/demo-check.sh does)")
	}
	i := strings.Index(link, "/link/")
	if i < 0 {
		t.Fatalf("%s=%q is not a sign-in link", SignInURLEnv, link)
	}
	home := link[:i+1]
	ctx := browsertest.New(t)
	began := time.Now()
	browsertest.Do(t, ctx, chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS(`form[action="/claims"]`)))
	if txt := browsertest.Run(t, ctx, chromedp.Text(chromedp.CSS("nav"))); !strings.Contains(txt, "Signed in as demo") {
		t.Fatalf("the link's page says %q, want signed in as demo", txt)
	}
	deadline := began.Add(within)
	for {
		// DevTools runs these scripts, outside the page's CSP. The poll
		// waits until every image finished loading (or failed).
		type counts struct{ Decoded, Verified int }
		c := browsertest.Run(t, ctx, chromedp.Poll[counts](`(() => {
			const imgs = [...document.querySelectorAll("#events img")];
			if (!imgs.every(i => i.complete)) return false;
			return {Decoded: imgs.filter(i => i.naturalWidth > 0).length,
				Verified: [...document.querySelectorAll("#events .ok")].filter(e => e.textContent === "verified").length};
		})()`, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(5*time.Second)))
		n, verified := c.Decoded, c.Verified
		if n > 0 && verified > 0 {
			t.Logf("demo owner's page after %s: %d verified events, %d thumbnails decoded", time.Since(began).Round(time.Millisecond), verified, n)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no verified event with a decoded thumbnail on the demo owner's page within %s", within)
		}
		time.Sleep(500 * time.Millisecond)
		browsertest.Do(t, ctx, chromedp.Navigate(home), chromedp.WaitReady(chromedp.CSS("body")))
	}
	browsertest.Screenshot(t, ctx, "demo-owner")
}
