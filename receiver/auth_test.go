package receiver

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const testPassword = "correct horse battery staple"

// setupPassword uses a fresh setup link of name to set password and returns
// the session cookie it signs in with.
func (e *testEnv) setupPassword(name, password string) *http.Cookie {
	e.t.Helper()
	l, err := Accounts{Dir: e.dir, Clock: e.srv.clk}.SetupLink(name)
	if err != nil {
		e.t.Fatal(err)
	}
	resp, body := e.rawReq(http.MethodPost, l.Path, url.Values{"password": {password}, "confirm": {password}}.Encode(), nil)
	if resp.StatusCode != http.StatusSeeOther {
		e.t.Fatalf("setting the password: %d\n%s", resp.StatusCode, body)
	}
	return sessionCookieOf(e.t, resp)
}

// sessionCookieOf returns the session cookie a response sets, checking its
// attributes.
func sessionCookieOf(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Secure || len(c.Value) != tokenChars {
				t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/, a %d-character token (not Secure over plain HTTP)", c, tokenChars)
			}
			return c
		}
	}
	t.Fatalf("no session cookie set: %v", resp.Header)
	return nil
}

func signInForm(name, password string) string {
	return url.Values{"name": {name}, "password": {password}}.Encode()
}

// TestSetupAndSignIn: owner add's setup link shows a form, sets a password
// that follows the rules (a short one is refused and the link stays), signs
// in, and works once; then the password signs in, a wrong one does not; the
// files hold neither the password nor any token.
func TestSetupAndSignIn(t *testing.T) {
	e := newEnv(t, Options{})
	l, err := Accounts{Dir: e.dir}.Add("alice", RoleOwner)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (Accounts{Dir: e.dir}).Add("alice", RoleAdmin); !errors.Is(err, ErrAccountExists) {
		t.Errorf("adding alice again: %v, want ErrAccountExists", err)
	}
	if code, page, _ := e.get(l.Path); code != http.StatusOK || !bytes.Contains(page, []byte(`name="password"`)) {
		t.Fatalf("setup page: %d", code)
	}
	resp, _ := e.rawReq(http.MethodPost, l.Path, url.Values{"password": {"short"}, "confirm": {"short"}}.Encode(), nil)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a short password: %d, want 400", resp.StatusCode)
	}
	resp, _ = e.rawReq(http.MethodPost, l.Path, url.Values{"password": {testPassword}, "confirm": {testPassword + "x"}}.Encode(), nil)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("passwords that differ: %d, want 400", resp.StatusCode)
	}
	resp, _ = e.rawReq(http.MethodPost, l.Path, url.Values{"password": {testPassword}, "confirm": {testPassword}}.Encode(), nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("setting the password: %d %v", resp.StatusCode, resp.Header)
	}
	c := sessionCookieOf(t, resp)
	if code, page, _ := e.do(http.MethodGet, "/", nil, c); code != http.StatusOK || !bytes.Contains(page, []byte("events for alice")) {
		t.Errorf("alice's page after setup: %d", code)
	}
	// The setup link works once.
	resp, _ = e.rawReq(http.MethodPost, l.Path, url.Values{"password": {"another long password"}, "confirm": {"another long password"}}.Encode(), nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("setup link used twice: %d, want 404", resp.StatusCode)
	}
	if code, _, _ := e.get(l.Path); code != http.StatusNotFound {
		t.Errorf("setup page of a used link: %d, want 404", code)
	}

	resp, _ = e.rawReq(http.MethodPost, "/signin", signInForm("alice", testPassword), nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in with the password: %d", resp.StatusCode)
	}
	c2 := sessionCookieOf(t, resp)
	if c2.Value == c.Value {
		t.Errorf("a new sign-in got the same token")
	}
	resp, body := e.rawReq(http.MethodPost, "/signin", signInForm("alice", testPassword+"!"), nil)
	if resp.StatusCode != http.StatusUnauthorized || !bytes.Contains(body, []byte(signInFailText)) || len(resp.Cookies()) != 0 {
		t.Errorf("a wrong password: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}

	for _, f := range []string{accountsFile, sessionsFile} {
		b, err := os.ReadFile(filepath.Join(e.dir, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{testPassword, c.Value, c2.Value, strings.TrimPrefix(l.Path, "/setup/")} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s holds a secret in the clear (%.8s…)", f, secret)
			}
		}
	}
	db, err := loadAccounts(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	if h := db.Accounts["alice"].Password; !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Errorf("stored hash %q: want a PHC $argon2id$ string with its parameters", h)
	}
}

// TestUnknownAccountLooksLikeWrongPassword: a name with no account, an
// account without a password and a wrong password get the same status and
// page, and each costs exactly one Argon2id hash: the answer and the work
// behind it do not say whether the account exists.
func TestUnknownAccountLooksLikeWrongPassword(t *testing.T) {
	e := newEnv(t, Options{})
	e.account("alice", RoleOwner)
	e.setupPassword("alice", testPassword)
	e.account("nopass", RoleOwner)
	var bodies [][]byte
	for _, name := range []string{"alice", "nobody", "nopass", "Not A Name!"} {
		before := e.srv.hashCount()
		resp, body := e.rawReq(http.MethodPost, "/signin", signInForm(name, "wrong password, long enough"), nil)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %d, want 401", name, resp.StatusCode)
		}
		if n := e.srv.hashCount() - before; n != 1 {
			t.Errorf("%s: %d hashes, want 1", name, n)
		}
		bodies = append(bodies, body)
	}
	for i := 1; i < len(bodies); i++ {
		if !bytes.Equal(bodies[i], bodies[0]) {
			t.Errorf("answer %d differs from the answer for a known account:\n%s\n%s", i, bodies[i], bodies[0])
		}
	}
}

// TestSignInRateLimit: after accountFree failures an account waits 1 s, then
// 2 s, … (429 with Retry-After, no hash computed, even for the right
// password); the wait passes on the clock; a success resets it. Many names
// from one address hit the address limit.
func TestSignInRateLimit(t *testing.T) {
	clk := &stepClock{t: testNow}
	e := newEnv(t, Options{Clock: clk})
	e.account("alice", RoleOwner)
	e.setupPassword("alice", testPassword)
	for i := range accountFree {
		if resp, _ := e.rawReq(http.MethodPost, "/signin", signInForm("alice", "wrong"), nil); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i, resp.StatusCode)
		}
	}
	// The next failure makes alice wait 1 s.
	if resp, _ := e.rawReq(http.MethodPost, "/signin", signInForm("alice", "wrong"), nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("failure %d: %d", accountFree, resp.StatusCode)
	}
	before := e.srv.hashCount()
	resp, body := e.rawReq(http.MethodPost, "/signin", signInForm("alice", testPassword), nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" || len(resp.Cookies()) != 0 {
		t.Fatalf("the right password while waiting: %d Retry-After %q, want 429 and 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if !bytes.Contains(body, []byte("Too many")) || e.srv.hashCount() != before {
		t.Errorf("a rate-limited attempt computed a hash or says nothing")
	}
	clk.add(time.Second)
	e.rawReq(http.MethodPost, "/signin", signInForm("alice", "wrong"), nil)
	if resp, _ := e.rawReq(http.MethodPost, "/signin", signInForm("alice", testPassword), nil); resp.Header.Get("Retry-After") != "2" {
		t.Errorf("after the next failure: %d Retry-After %q, want 2", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	clk.add(2 * time.Second)
	if resp, _ := e.rawReq(http.MethodPost, "/signin", signInForm("alice", testPassword), nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the right password after the wait: %d", resp.StatusCode)
	}
	if resp, _ := e.rawReq(http.MethodPost, "/signin", signInForm("alice", "wrong"), nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a failure after a success: %d, want 401 (the count starts afresh)", resp.StatusCode)
	}

	// One address trying many names: the address waits, whatever the name.
	for i := 0; ; i++ {
		resp, _ := e.rawReq(http.MethodPost, "/signin", signInForm("guess"+string(rune('a'+i%26))+string(rune('a'+i/26)), "wrong"), nil)
		if resp.StatusCode == http.StatusTooManyRequests {
			if i < addressFree-accountFree-2 {
				t.Errorf("the address waits after %d names", i)
			}
			break
		}
		if i > addressFree+2 {
			t.Fatalf("%d failures from one address and no wait", i)
		}
	}
	if resp, _ := e.rawReq(http.MethodPost, "/signin", signInForm("fresh-name", "wrong"), nil); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("a fresh name from the waiting address: %d, want 429", resp.StatusCode)
	}
}

// TestSessionExpiry: a session ends after DefaultSessionIdle without use,
// and after DefaultSessionMax however much it is used; both on the clock.
func TestSessionExpiry(t *testing.T) {
	clk := &stepClock{t: testNow}
	e := newEnv(t, Options{Clock: clk})
	e.account("alice", RoleOwner)
	alive := func(c *http.Cookie) bool {
		t.Helper()
		resp, _ := e.rawReq(http.MethodGet, "/sessions", "", nil, c)
		return resp.StatusCode == http.StatusOK
	}
	c, err := e.srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	clk.add(DefaultSessionIdle - time.Minute)
	if !alive(c) {
		t.Fatal("a session used just before the idle limit is over")
	}
	clk.add(DefaultSessionIdle - time.Minute) // idle limit counts from the last use
	if !alive(c) {
		t.Fatal("a session in use ended at the idle limit from its start")
	}
	clk.add(DefaultSessionIdle)
	if alive(c) {
		t.Fatal("a session idle for the idle limit is still alive")
	}

	c, err = e.srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	start := clk.Now()
	for clk.Now().Sub(start) < DefaultSessionMax-DefaultSessionIdle {
		clk.add(DefaultSessionIdle - time.Hour)
		if !alive(c) {
			t.Fatalf("a session in use ended after %s", clk.Now().Sub(start))
		}
	}
	clk.add(start.Add(DefaultSessionMax).Sub(clk.Now()))
	if alive(c) {
		t.Fatal("a session in use is alive at the absolute limit")
	}
}

// TestSessionsSurviveRestart: sessions are kept on disk: a reopened server
// knows them, and ended ones stay ended.
func TestSessionsSurviveRestart(t *testing.T) {
	e := newEnv(t, Options{})
	e.account("alice", RoleOwner)
	keep, _ := e.srv.NewSession("alice")
	gone, _ := e.srv.NewSession("alice")
	if resp, _ := e.rawReq(http.MethodPost, "/signout", "x=1", nil, gone); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out: %d", resp.StatusCode)
	}
	e.close()
	e.open(Options{})
	if code, _, _ := e.do(http.MethodGet, "/sessions", nil, keep); code != http.StatusOK {
		t.Errorf("a session after a restart: %d", code)
	}
	if code, _, _ := e.do(http.MethodGet, "/sessions", nil, gone); code != http.StatusUnauthorized {
		t.Errorf("a signed-out session after a restart: %d, want 401", code)
	}
}

// TestSignOutAndRevoke: sign-out ends the session and clears the cookie;
// the sessions page lists one's sessions and revokes another of them, never
// another account's.
func TestSignOutAndRevoke(t *testing.T) {
	e := newEnv(t, Options{})
	e.account("alice", RoleOwner)
	e.account("bob", RoleOwner)
	phone, _ := e.srv.NewSession("alice")
	laptop, _ := e.srv.NewSession("alice")
	bob, _ := e.srv.NewSession("bob")
	code, page, _ := e.do(http.MethodGet, "/sessions", nil, laptop)
	if code != http.StatusOK || strings.Count(string(page), "<tr><td>") != 2 || !strings.Contains(string(page), "this one") {
		t.Fatalf("alice's sessions page: %d\n%s", code, page)
	}
	ps, _ := e.srv.sess.lookup(phone.Value)
	bs, _ := e.srv.sess.lookup(bob.Value)
	phoneID, bobID := ps.ID, bs.ID
	if !strings.Contains(string(page), `value="`+phoneID+`"`) {
		t.Errorf("the sessions page has no revoke button for the other session")
	}
	if resp, _ := e.rawReq(http.MethodPost, "/sessions/revoke", "id="+bobID, nil, laptop); resp.StatusCode != http.StatusNotFound {
		t.Errorf("alice revoking bob's session: %d, want 404", resp.StatusCode)
	}
	if code, _, _ := e.do(http.MethodGet, "/sessions", nil, bob); code != http.StatusOK {
		t.Errorf("bob's session after alice tried to revoke it: %d", code)
	}
	if resp, _ := e.rawReq(http.MethodPost, "/sessions/revoke", "id="+phoneID, nil, laptop); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	if code, _, _ := e.do(http.MethodGet, "/sessions", nil, phone); code != http.StatusUnauthorized {
		t.Errorf("the revoked session: %d, want 401", code)
	}
	resp, _ := e.rawReq(http.MethodPost, "/signout", "x=1", nil, laptop)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out: %d", resp.StatusCode)
	}
	if cs := resp.Cookies(); len(cs) != 1 || cs[0].MaxAge >= 0 || cs[0].Value != "" {
		t.Errorf("sign out does not clear the cookie: %v", cs)
	}
	if code, _, _ := e.do(http.MethodGet, "/sessions", nil, laptop); code != http.StatusUnauthorized {
		t.Errorf("a signed-out session: %d, want 401", code)
	}
}

// TestCrossOriginPostRefused: a form another site posts (Sec-Fetch-Site:
// cross-site, or an Origin of another host) is refused before it acts:
// sign-out does not end the session, sign-in does not try the password.
func TestCrossOriginPostRefused(t *testing.T) {
	e := newEnv(t, Options{})
	e.account("alice", RoleOwner)
	e.setupPassword("alice", testPassword)
	c, _ := e.srv.NewSession("alice")
	for _, hdr := range []map[string]string{{"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://attacker.example"}} {
		if resp, _ := e.rawReq(http.MethodPost, "/signout", "x=1", hdr, c); resp.StatusCode != http.StatusForbidden {
			t.Errorf("cross-origin sign-out %v: %d, want 403", hdr, resp.StatusCode)
		}
		before := e.srv.hashCount()
		if resp, _ := e.rawReq(http.MethodPost, "/signin", signInForm("alice", testPassword), hdr); resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
			t.Errorf("cross-origin sign-in %v: %d, want 403", hdr, resp.StatusCode)
		}
		if e.srv.hashCount() != before {
			t.Errorf("a cross-origin sign-in was checked")
		}
	}
	if code, _, _ := e.do(http.MethodGet, "/sessions", nil, c); code != http.StatusOK {
		t.Errorf("the session after cross-origin sign-outs: %d", code)
	}
	if resp, _ := e.rawReq(http.MethodPost, "/signout", "x=1", map[string]string{"Sec-Fetch-Site": "same-origin"}, c); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("same-origin sign-out: %d", resp.StatusCode)
	}
}

// TestSignInLink: owner link's URL signs in once; used again, or after it
// expired, it is refused and sets no cookie; a link opened from another
// site asks for a click (a POST from this origin) before it is used.
func TestSignInLink(t *testing.T) {
	clk := &stepClock{t: testNow}
	e := newEnv(t, Options{Clock: clk})
	e.account("alice", RoleOwner)
	accts := Accounts{Dir: e.dir, Clock: clk}
	if _, err := accts.SignInLink("nobody"); !errors.Is(err, ErrNoAccount) {
		t.Errorf("a link for no account: %v", err)
	}
	l, err := accts.SignInLink("alice")
	if err != nil {
		t.Fatal(err)
	}
	if !l.Expires.Equal(testNow.Add(DefaultLinkTTL)) || !strings.HasPrefix(l.Path, "/link/") {
		t.Errorf("link %+v", l)
	}
	resp, body := e.rawReq(http.MethodGet, l.Path, "", map[string]string{"Sec-Fetch-Site": "cross-site"})
	if resp.StatusCode != http.StatusOK || len(resp.Cookies()) != 0 || !bytes.Contains(body, []byte(`method="post"`)) {
		t.Fatalf("a link opened from another site: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	// Fetched without a person's navigation (a link scanner, a preview,
	// curl, a browser without Fetch Metadata): the page names the account
	// and uses nothing up.
	resp, body = e.rawReq(http.MethodGet, l.Path, "", nil)
	if resp.StatusCode != http.StatusOK || len(resp.Cookies()) != 0 || !bytes.Contains(body, []byte("Sign in as alice")) || !bytes.Contains(body, []byte(`method="post"`)) {
		t.Fatalf("the link fetched by a program: %d, cookies %v\n%s", resp.StatusCode, resp.Cookies(), body)
	}
	// Opened by a person in a browser (typed, pasted, from another program):
	// signed in at once.
	resp, body = e.rawReq(http.MethodGet, l.Path, "", map[string]string{"Sec-Fetch-Site": "none", "Sec-Fetch-User": "?1"})
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("Signed in as alice")) {
		t.Fatalf("the link: %d\n%s", resp.StatusCode, body)
	}
	c := sessionCookieOf(t, resp)
	if code, page, _ := e.do(http.MethodGet, "/", nil, c); code != http.StatusOK || !bytes.Contains(page, []byte("events for alice")) {
		t.Errorf("alice's page after the link: %d", code)
	}
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		if resp, _ := e.rawReq(m, l.Path, "", nil); resp.StatusCode != http.StatusNotFound || len(resp.Cookies()) != 0 {
			t.Errorf("%s of a used link: %d, cookies %v", m, resp.StatusCode, resp.Cookies())
		}
	}
	l2, _ := accts.SignInLink("alice")
	clk.add(DefaultLinkTTL)
	if resp, _ := e.rawReq(http.MethodGet, l2.Path, "", nil); resp.StatusCode != http.StatusNotFound || len(resp.Cookies()) != 0 {
		t.Errorf("an expired link: %d", resp.StatusCode)
	}
	// A setup link is no sign-in link, and the reverse.
	l3, _ := accts.SetupLink("alice")
	if resp, _ := e.rawReq(http.MethodGet, "/link/"+strings.TrimPrefix(l3.Path, "/setup/"), "", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a setup link used as a sign-in link: %d", resp.StatusCode)
	}
}

// TestHostCheck: the pages answer only the configured host names; uploads
// do not depend on the Host.
func TestHostCheck(t *testing.T) {
	e := newEnv(t, Options{AllowedHosts: []string{"cam.example.org", "[::1]:8417"}})
	for host, want := range map[string]int{"cam.example.org": 200, "CAM.example.org.:443": 200, "[::1]:8417": 200, "[::1]:9999": 421,
		"127.0.0.1": 421, "evil.example": 421, "cam.example.org.evil.example": 421} {
		if resp, _ := e.rawReq(http.MethodGet, "/signin", "", map[string]string{"Host": host}); resp.StatusCode != want {
			t.Errorf("Host %q: %d, want %d", host, resp.StatusCode, want)
		}
	}
	d := newDevice(t)
	e.enroll(d, "alice")
	r := d.record(t, "ev-1", "start", 1)
	resp, _ := e.rawReq(http.MethodPut, r.path(), string(r.body), map[string]string{"Host": "10.0.0.7:8417"})
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("an upload by another host name: %d, want 201", resp.StatusCode)
	}
	if got := DefaultAllowedHosts("0.0.0.0:8417"); strings.Join(got, " ") != "localhost:8417 127.0.0.1:8417 [::1]:8417" {
		t.Errorf("DefaultAllowedHosts of a wildcard: %q", got)
	}
	if got := DefaultAllowedHosts("192.168.1.5:8417"); len(got) != 4 || got[3] != "192.168.1.5:8417" {
		t.Errorf("DefaultAllowedHosts: %q", got)
	}
}

// TestPasswordHash: the PHC string carries its parameters and salt, two
// hashes of one password differ, and a damaged or out-of-bounds hash is an
// error, never a match.
func TestPasswordHash(t *testing.T) {
	h1, err := hashPassword(testArgon2, nil, testPassword)
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := hashPassword(testArgon2, nil, testPassword)
	if h1 == h2 {
		t.Error("two hashes of one password are equal: no salt")
	}
	if ok, err := checkPassword(h1, testPassword); !ok || err != nil {
		t.Errorf("the password does not match its hash: %v", err)
	}
	if ok, _ := checkPassword(h1, testPassword+" "); ok {
		t.Error("another password matches")
	}
	if p := DefaultArgon2(); p.MemoryKiB != 47104 || p.Time != 1 || p.Threads != 1 {
		t.Errorf("DefaultArgon2 %+v, want OWASP's m=47104 t=1 p=1", p)
	}
	f := strings.Split(h1, "$")
	for _, bad := range []string{"", "plain", "$argon2i$v=19$m=64,t=1,p=1$" + f[4] + "$" + f[5],
		"$argon2id$v=16$m=64,t=1,p=1$" + f[4] + "$" + f[5],
		"$argon2id$v=19$m=4294967295,t=1,p=1$" + f[4] + "$" + f[5],
		"$argon2id$v=19$m=64,t=1000000,p=1$" + f[4] + "$" + f[5],
		"$argon2id$v=19$m=64,t=1,p=1,x=2$" + f[4] + "$" + f[5],
		"$argon2id$v=19$m=64,t=1,p=1$$" + f[5], "$argon2id$v=19$m=64,t=1,p=1$" + f[4] + "$"} {
		if ok, err := checkPassword(bad, testPassword); ok || err == nil {
			t.Errorf("hash %q: %v %v, want an error", bad, ok, err)
		}
	}
	for pw, ok := range map[string]bool{"fourteen chars": false, "fifteen chars!!": true, strings.Repeat("x", 256): true,
		strings.Repeat("x", 257): false, "\xff" + strings.Repeat("x", 20): false, strings.Repeat("é", 15): true} {
		if got := checkPasswordRules(pw) == nil; got != ok {
			t.Errorf("password rules on %.20q: %v, want %v", pw, got, ok)
		}
	}
}

// TestSignInConcurrentAttemptsLimited: wrong passwords sent all at once
// cannot pass the rate limit together before any of them failed: at most
// the free attempts and the one that starts the wait are hashed.
func TestSignInConcurrentAttemptsLimited(t *testing.T) {
	e := newEnv(t, Options{})
	e.account("alice", RoleOwner)
	e.setupPassword("alice", testPassword)
	before := e.srv.hashCount()
	const n = 40
	codes := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			resp, _ := e.rawReq(http.MethodPost, "/signin", signInForm("alice", "wrong"), nil)
			codes <- resp.StatusCode
		})
	}
	wg.Wait()
	close(codes)
	limited := 0
	for c := range codes {
		if c == http.StatusTooManyRequests {
			limited++
		}
	}
	if hashed := int(e.srv.hashCount() - before); hashed > accountFree+1 || limited != n-hashed {
		t.Errorf("%d concurrent wrong passwords: %d hashed, %d refused 429; want at most %d hashed, the rest refused", n, hashed, limited, accountFree+1)
	}
}

// TestLimiterFullLocksNobodyOut: a limiter filled with an attacker's names
// (each waiting) still lets a name it has no record of try at once: the
// oldest record is forgotten to make room.
func TestLimiterFullLocksNobodyOut(t *testing.T) {
	now := testNow
	l := newLimiter(1, time.Second, time.Minute, time.Hour, 100)
	for i := range 100 {
		k := fmt.Sprintf("junk-%d", i)
		l.begin(k, now)
		l.begin(k, now) // past the free one: waits
		if l.begin(k, now) == 0 {
			t.Fatalf("%s does not wait after its failures", k)
		}
	}
	if d := l.begin("alice", now); d != 0 {
		t.Fatalf("a name with no record waits %s in a full limiter", d)
	}
	if len(l.m) > 100 {
		t.Errorf("the limiter grew to %d keys past its size", len(l.m))
	}
	l.succeed("alice", true)
	if _, ok := l.m["alice"]; ok {
		t.Error("a success did not forget the name")
	}
}

// TestResetEndsSessionsAndCredentials: an operator's Reset (`keyframe
// receiver owner setup-link`), made by another process while the receiver
// runs, ends the account's sessions at the next request, and its old
// password no longer signs in; the setup link it prints sets a new one. A
// role changed in the file ends the sessions of the old role too.
func TestResetEndsSessionsAndCredentials(t *testing.T) {
	clk := &stepClock{t: testNow}
	e := newEnv(t, Options{Clock: clk})
	e.account("alice", RoleOwner)
	c := e.setupPassword("alice", testPassword)
	if code, page, _ := e.do(http.MethodGet, "/sessions", nil, c); code != http.StatusOK || !bytes.Contains(page, []byte("alice")) {
		t.Fatalf("alice's session before the reset: %d", code)
	}
	clk.add(time.Second)
	l, err := (Accounts{Dir: e.dir, Clock: clk}).Reset("alice")
	if err != nil {
		t.Fatal(err)
	}
	if code, _, _ := e.do(http.MethodGet, "/sessions", nil, c); code != http.StatusUnauthorized {
		t.Errorf("alice's session after the reset: %d, want 401", code)
	}
	if resp, _ := e.rawReq(http.MethodPost, "/signin", signInForm("alice", testPassword), nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the old password after the reset: %d, want 401", resp.StatusCode)
	}
	if _, err := (Accounts{Dir: e.dir}).Reset("nobody"); !errors.Is(err, ErrNoAccount) {
		t.Errorf("reset of no account: %v", err)
	}
	resp, _ := e.rawReq(http.MethodPost, l.Path, "password="+url.QueryEscape(testPassword+"-new")+"&confirm="+url.QueryEscape(testPassword+"-new"), nil)
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the reset's setup link: %d", resp.StatusCode)
	}
	c2 := sessionCookieOf(t, resp)
	if code, _, _ := e.do(http.MethodGet, "/sessions", nil, c2); code != http.StatusOK {
		t.Errorf("the session the setup link made: %d", code)
	}

	// The role changed by another process: the owner session ends.
	err = updateAccounts(e.dir, clk.Now(), func(db *accountsDB) error {
		db.Accounts["alice"].Role = RoleAdmin
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if code, _, _ := e.do(http.MethodGet, "/sessions", nil, c2); code != http.StatusUnauthorized {
		t.Errorf("an owner session after the account became an admin: %d, want 401", code)
	}
}
