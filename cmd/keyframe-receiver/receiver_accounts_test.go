package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/receiver"
)

// TestReceiverOwnerAddAndLink drives `keyframe-receiver owner add|link|list`
// and `admin add` on the data directory of a running receiver: add prints a
// one-time setup link under -url, link a sign-in link that the receiver
// honours once; a taken name, an unknown account and a malformed name are
// refused with a message.
func TestReceiverOwnerAddAndLink(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "recv")
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := dispatch(args, &out, &errb)
		return code, out.String(), errb.String()
	}
	srv, err := receiver.Open(receiver.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)

	code, out, errs := run("owner", "add", "-data", dir, "alice")
	if code != 0 || !strings.HasPrefix(out, defaultReceiverURL+"setup/") || !strings.Contains(errs, "added owner alice") {
		t.Fatalf("owner add: %d %q %q", code, out, errs)
	}
	if code, _, errs := run("owner", "add", "-data", dir, "alice"); code != 1 || !strings.Contains(errs, "account exists") {
		t.Errorf("owner add again: %d %q", code, errs)
	}
	if code, _, errs := run("owner", "add", "-data", dir, "Alice!"); code != 2 || !strings.Contains(errs, "invalid owner name") {
		t.Errorf("owner add of a malformed name: %d %q", code, errs)
	}
	if code, out, _ := run("admin", "add", "ops", "-data", dir, "-url", hs.URL); code != 0 || !strings.HasPrefix(out, hs.URL+"/setup/") {
		t.Errorf("admin add: %d %q", code, out)
	}
	if code, _, errs := run("owner", "link", "-data", dir, "nobody"); code != 1 || !strings.Contains(errs, "no such account") {
		t.Errorf("owner link of no account: %d %q", code, errs)
	}
	code, out, errs = run("owner", "link", "-data", dir, "-url", hs.URL+"/", "alice")
	link := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(link, hs.URL+"/link/") {
		t.Fatalf("owner link: %d %q %q", code, out, errs)
	}
	code, out, _ = run("owner", "list", "-data", dir)
	if code != 0 || !strings.Contains(out, "alice owner (no password yet") || !strings.Contains(out, "ops admin") {
		t.Errorf("owner list: %d %q", code, out)
	}

	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, page := get(link); code != http.StatusOK || !strings.Contains(page, "Sign in as alice") || strings.Contains(page, "Signed in") {
		t.Fatalf("fetching the sign-in link (no browser): %d, want the page naming alice with a button\n%s", code, page)
	}
	resp, err := c.Post(link, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "Signed in as alice") {
		t.Fatalf("posting the sign-in link: %d\n%s", resp.StatusCode, page)
	}
	if code, page := get(hs.URL + "/"); code != http.StatusOK || !strings.Contains(page, "events for alice") {
		t.Fatalf("the page after the sign-in link: %d\n%s", code, page)
	}
	if code, _ := get(link); code != http.StatusNotFound {
		t.Errorf("the sign-in link a second time: %d, want 404", code)
	}
}
