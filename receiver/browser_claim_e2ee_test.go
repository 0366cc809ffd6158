package receiver_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/internal/browsertest"
	"github.com/keyframe-cam/keyframe/receiver"
)

// TestBrowserClaimCodeChecked: the claim code's owner commitment is made by
// the receiver from the key set it stores, so the owner's browser checks it
// (docs/e2ee.md §5). alice sets up e2ee in her browser; her "Add a camera"
// code names her identity and the page says so. Then the receiver's data is
// changed: her stored set replaced by another identity's, and then removed.
// In both cases the page refuses the code the receiver made (another
// identity's commitment, or a code without e2ee she did not ask for) and
// hides it; a code without e2ee she asks for is shown with a warning.
// Screenshots: claim-checked, claim-other-identity, claim-no-e2ee.
func TestBrowserClaimCodeChecked(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), claimFlowTimeout)
	defer cancel()
	dir := t.TempDir()
	certFile, keyFile, cert := tlsFiles(t, dir)
	rdir := filepath.Join(dir, "receiver")
	url := serveTLS(t, ctx, rdir, certFile, keyFile)

	tab := browsertest.New(t, browsertest.TrustKey(cert.RawSubjectPublicKeyInfo))
	signInByLink(t, tab, rdir, url, "alice")
	browsertest.Do(t, tab, chromedp.Navigate(url+"sessions"), chromedp.WaitVisible(chromedp.ID("e2ee-setup")))
	browsertest.Do(t, tab, chromedp.Click(chromedp.ID("e2ee-setup")), chromedp.WaitVisible(chromedp.ID("e2ee-secret")))
	browsertest.Run(t, tab, chromedp.Poll[bool](`document.getElementById("e2ee").dataset.state === "enrolled"`,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second)))

	type verdict struct {
		State, Text string
		CodeShown   bool
		Code        string
	}
	claim := func(plain bool) verdict {
		t.Helper()
		browsertest.Do(t, tab, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(`form[action="/claims"]`)))
		if plain {
			// The claim page's own "without end-to-end encryption" form,
			// posted from this origin as its button does.
			browsertest.Do(t, tab, chromedp.Evaluate[chromedp.Void](`(() => { const f = document.querySelector('form[action="/claims"]');
				const i = document.createElement("input"); i.type = "hidden"; i.name = "e2ee"; i.value = "off"; f.append(i); })()`))
		}
		if resp := browsertest.Response(t, tab, chromedp.Click(chromedp.CSS(`form[action="/claims"] button`))); resp.Status != http.StatusOK {
			t.Fatalf("Add a camera: %d", resp.Status)
		}
		return browsertest.Run(t, tab, chromedp.Poll[verdict](`(() => { const b = document.getElementById("claimcheck"), v = document.getElementById("claimverdict");
			if (!b.dataset.state) return false;
			return {State: b.dataset.state, Text: v.textContent, CodeShown: !document.querySelector(".code").hidden, Code: b.dataset.code}; })()`,
			chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second)))
	}
	chars := func(code string) int { return len(strings.ReplaceAll(code, "-", "")) }

	v := claim(false)
	if v.State != "ok" || !v.CodeShown || chars(v.Code) != 50 || !strings.Contains(v.Text, "names your identity key") {
		t.Fatalf("alice's own code: %+v, want a 50-character code checked against her identity and shown", v)
	}
	browsertest.Screenshot(t, tab, "claim-checked")

	// The receiver's stored set replaced by another identity's.
	other, err := e2ee.NewOwner(2)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := other.KeySet(1)
	if err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(rdir, "e2ee", "alice.json")
	if err := os.Remove(store); err != nil {
		t.Fatal(err)
	}
	if err := receiver.PutKeySet(rdir, "alice", ks.Signed()); err != nil {
		t.Fatal(err)
	}
	v = claim(false)
	if v.State != "warn" || v.CodeShown || chars(v.Code) != 50 || !strings.Contains(v.Text, "not yours") {
		t.Fatalf("a code committing to another identity: %+v, want it refused and hidden", v)
	}
	browsertest.Screenshot(t, tab, "claim-other-identity")

	// The set removed: the receiver makes a code without e2ee.
	if err := os.Remove(store); err != nil {
		t.Fatal(err)
	}
	v = claim(false)
	if v.State != "warn" || v.CodeShown || chars(v.Code) != 30 {
		t.Fatalf("a code without e2ee alice did not ask for: %+v, want it refused and hidden", v)
	}
	browsertest.Screenshot(t, tab, "claim-no-e2ee")
	v = claim(true)
	if v.State != "warn" || !v.CodeShown || chars(v.Code) != 30 || !strings.Contains(v.Text, "as you asked") {
		t.Fatalf("a code without e2ee alice asked for: %+v, want it shown with a warning", v)
	}
}
