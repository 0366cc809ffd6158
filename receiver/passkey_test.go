package receiver

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/go-webauthn/webauthn/webauthn"
)

// softKey is a software WebAuthn authenticator holding one passkey: it
// answers the receiver's options the way a browser and an authenticator
// do, and a test can make it lie (another origin, another RP ID, a sign
// counter that goes back, another key).
type softKey struct {
	key    *ecdsa.PrivateKey
	id     []byte
	handle []byte
	count  uint32
	// origin and rpID override what the client data and the authenticator
	// data name (default: the receiver's).
	origin, rpID string
}

func newSoftKey(t testing.TB) *softKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		t.Fatal(err)
	}
	return &softKey{key: k, id: id}
}

var b64u = base64.RawURLEncoding

// Authenticator data flags.
const (
	flagUP = 0x01
	flagUV = 0x04
	flagAT = 0x40
)

func authData(rpID string, flags byte, count uint32, attested []byte) []byte {
	h := sha256.Sum256([]byte(rpID))
	b := append(h[:], flags)
	b = binary.BigEndian.AppendUint32(b, count)
	return append(b, attested...)
}

// options is the part of the receiver's begin answer the authenticator
// reads.
type options struct {
	PublicKey struct {
		Challenge string `json:"challenge"`
		RPID      string `json:"rpId"`
		RP        struct {
			ID string `json:"id"`
		} `json:"rp"`
		User struct {
			ID string `json:"id"`
		} `json:"user"`
		UserVerification       string `json:"userVerification"`
		AuthenticatorSelection struct {
			ResidentKey      string `json:"residentKey"`
			UserVerification string `json:"userVerification"`
		} `json:"authenticatorSelection"`
	} `json:"publicKey"`
}

func parseOptions(t testing.TB, body []byte) options {
	t.Helper()
	var o options
	if err := json.Unmarshal(body, &o); err != nil || o.PublicKey.Challenge == "" {
		t.Fatalf("begin answered %s (%v)", body, err)
	}
	return o
}

func (k *softKey) or(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

// create answers registration options with a "none" attestation.
func (k *softKey) create(t testing.TB, o options, origin string) string {
	t.Helper()
	h, err := b64u.DecodeString(o.PublicKey.User.ID)
	if err != nil {
		t.Fatal(err)
	}
	k.handle = h
	cd, _ := json.Marshal(map[string]any{"type": "webauthn.create", "challenge": o.PublicKey.Challenge, "origin": k.or(k.origin, origin), "crossOrigin": false})
	pad := func(b []byte) []byte { return append(make([]byte, 32-len(b)), b...) }
	cose, err := cbor.Marshal(map[int]any{1: 2, 3: -7, -1: 1, -2: pad(k.key.X.Bytes()), -3: pad(k.key.Y.Bytes())})
	if err != nil {
		t.Fatal(err)
	}
	att := make([]byte, 16) // AAGUID
	att[0] = 0xaa
	att = binary.BigEndian.AppendUint16(att, uint16(len(k.id)))
	att = append(append(att, k.id...), cose...)
	obj, err := cbor.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": authData(k.or(k.rpID, o.PublicKey.RP.ID), flagUP|flagUV|flagAT, k.count, att)})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"id": b64u.EncodeToString(k.id), "rawId": b64u.EncodeToString(k.id), "type": "public-key",
		"clientExtensionResults": map[string]any{},
		"response":               map[string]any{"clientDataJSON": b64u.EncodeToString(cd), "attestationObject": b64u.EncodeToString(obj), "transports": []string{"internal"}}})
	return string(b)
}

// get answers sign-in options with an assertion of the next sign count.
func (k *softKey) get(t testing.TB, o options, origin string) string {
	t.Helper()
	k.count++
	cd, _ := json.Marshal(map[string]any{"type": "webauthn.get", "challenge": o.PublicKey.Challenge, "origin": k.or(k.origin, origin), "crossOrigin": false})
	ad := authData(k.or(k.rpID, o.PublicKey.RPID), flagUP|flagUV, k.count, nil)
	cdh := sha256.Sum256(cd)
	digest := sha256.Sum256(append(append([]byte{}, ad...), cdh[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, k.key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"id": b64u.EncodeToString(k.id), "rawId": b64u.EncodeToString(k.id), "type": "public-key",
		"clientExtensionResults": map[string]any{},
		"response": map[string]any{"clientDataJSON": b64u.EncodeToString(cd), "authenticatorData": b64u.EncodeToString(ad),
			"signature": b64u.EncodeToString(sig), "userHandle": b64u.EncodeToString(k.handle)}})
	return string(b)
}

// localhost is the Host the test's requests name: the receiver's port
// under the name localhost, where passkeys are offered.
func (e *testEnv) localhost() string {
	u, err := url.Parse(e.hs.URL)
	if err != nil {
		e.t.Fatal(err)
	}
	return "localhost:" + u.Port()
}

func (e *testEnv) origin() string { return "http://" + e.localhost() }

// pk posts body to path under Host localhost:PORT, as the page's script
// does (same origin).
func (e *testEnv) pk(path, body string, cookies ...*http.Cookie) (*http.Response, []byte) {
	e.t.Helper()
	return e.rawReq(http.MethodPost, path, body, map[string]string{"Host": e.localhost(), "Sec-Fetch-Site": "same-origin"}, cookies...)
}

// addPasskey registers k for the account of cookie.
func (e *testEnv) addPasskey(k *softKey, cookie *http.Cookie) {
	e.t.Helper()
	resp, body := e.pk("/passkeys/register/begin", "{}", cookie)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("register begin: %d %s", resp.StatusCode, body)
	}
	o := parseOptions(e.t, body)
	if o.PublicKey.RP.ID != "localhost" || o.PublicKey.AuthenticatorSelection.ResidentKey != "required" || o.PublicKey.AuthenticatorSelection.UserVerification != "required" {
		e.t.Errorf("registration options: %s", body)
	}
	resp, body = e.pk("/passkeys/register/finish", k.create(e.t, o, e.origin()), cookie)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("register finish: %d %s", resp.StatusCode, body)
	}
}

// beginSignIn begins a passkey sign-in and returns its options.
func (e *testEnv) beginSignIn() options {
	e.t.Helper()
	resp, body := e.pk("/passkey/signin/begin", "{}")
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("sign-in begin: %d %s", resp.StatusCode, body)
	}
	return parseOptions(e.t, body)
}

// passkeySignIn signs in with k: the response and its body.
func (e *testEnv) passkeySignIn(k *softKey) (*http.Response, []byte) {
	e.t.Helper()
	return e.pk("/passkey/signin/finish", k.get(e.t, e.beginSignIn(), e.origin()))
}

func storedAccount(t *testing.T, dir, name string) *account {
	t.Helper()
	db, err := loadAccounts(dir)
	if err != nil {
		t.Fatal(err)
	}
	if db.Accounts[name] == nil {
		t.Fatalf("no account %s", name)
	}
	return db.Accounts[name]
}

// TestPasskeyRegisterAndSignIn: a signed-in owner adds a passkey; it is
// stored beside the password hash with a random user handle (not the
// name); a sign-in with it, without a name, starts a session that shows the
// owner's own page and the account page lists it.
func TestPasskeyRegisterAndSignIn(t *testing.T) {
	e := newEnv(t, Options{})
	e.account("alice", RoleOwner)
	k := newSoftKey(t)
	e.addPasskey(k, e.cookieOf("alice"))

	acc := storedAccount(t, e.dir, "alice")
	if len(acc.Passkeys) != 1 || len(acc.UserHandle) != passkeyHandleBytes || bytes.Contains(acc.UserHandle, []byte("alice")) {
		t.Fatalf("stored: handle %x, %d passkeys", acc.UserHandle, len(acc.Passkeys))
	}
	p := acc.Passkeys[0]
	if !bytes.Equal(p.ID, k.id) || len(p.PublicKey) == 0 || p.AAGUID != "aa000000-0000-0000-0000-000000000000" || p.Created.IsZero() || !p.LastUsed.IsZero() ||
		len(p.Transports) != 1 || p.Transports[0] != "internal" || !p.UserVerified {
		t.Errorf("stored passkey %+v", p)
	}
	if !bytes.Equal(k.handle, acc.UserHandle) {
		t.Errorf("the authenticator got handle %x, the account has %x", k.handle, acc.UserHandle)
	}

	resp, body := e.passkeySignIn(k)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"redirect":"/"`) {
		t.Fatalf("passkey sign-in: %d %s", resp.StatusCode, body)
	}
	c := sessionCookieOf(t, resp)
	if got := e.srv.sess.list("alice"); len(got) != 2 {
		t.Errorf("alice has %d sessions, want 2 (the cookieOf one and the passkey's)", len(got))
	}
	if code, page, _ := e.do(http.MethodGet, "/", nil, c); code != http.StatusOK || !bytes.Contains(page, []byte("alice")) {
		t.Errorf("home with the passkey's session: %d", code)
	}
	resp, page := e.rawReq(http.MethodGet, "/sessions", "", map[string]string{"Host": e.localhost()}, c)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(page, []byte(b64u.EncodeToString(k.id)[:12])) || !bytes.Contains(page, []byte(`id="passkey-add"`)) {
		t.Errorf("account page: %d, want the passkey listed and the add button\n%s", resp.StatusCode, page)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); cspDirective(csp, "script-src") != "'self'" || cspDirective(csp, "default-src") != "'none'" {
		t.Errorf("account page CSP %q: want script-src 'self' only", csp)
	}
	if acc := storedAccount(t, e.dir, "alice"); acc.Passkeys[0].SignCount != 1 || acc.Passkeys[0].LastUsed.IsZero() {
		t.Errorf("after sign-in: count %d, last used %v", acc.Passkeys[0].SignCount, acc.Passkeys[0].LastUsed)
	}
	// A second sign-in advances the counter.
	if resp, body := e.passkeySignIn(k); resp.StatusCode != http.StatusOK {
		t.Errorf("second passkey sign-in: %d %s", resp.StatusCode, body)
	}
	// The same authenticator cannot be registered twice (excluded, and
	// refused if it tries).
	k2 := *k
	resp, body = e.pk("/passkeys/register/begin", "{}", e.cookieOf("alice"))
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(b64u.EncodeToString(k.id))) {
		t.Errorf("registration options do not exclude the registered passkey: %s", body)
	}
	if resp, _ := e.pk("/passkeys/register/finish", k2.create(t, parseOptions(t, body), e.origin()), e.cookieOf("alice")); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("registering a credential ID twice: %d", resp.StatusCode)
	}
}

// TestPasskeyChallengeSingleUse: a finished ceremony's answer replayed is
// refused with the generic message, even though its signature is good.
func TestPasskeyChallengeSingleUse(t *testing.T) {
	e := newEnv(t, Options{})
	e.account("alice", RoleOwner)
	k := newSoftKey(t)
	e.addPasskey(k, e.cookieOf("alice"))
	ans := k.get(t, e.beginSignIn(), e.origin())
	if resp, body := e.pk("/passkey/signin/finish", ans); resp.StatusCode != http.StatusOK {
		t.Fatalf("first use: %d %s", resp.StatusCode, body)
	}
	resp, body := e.pk("/passkey/signin/finish", ans)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), passkeyFailText) || len(resp.Cookies()) != 0 {
		t.Errorf("replay: %d %s", resp.StatusCode, body)
	}
	if n := e.srv.pk.pending(); n != 0 {
		t.Errorf("%d ceremonies pending after both", n)
	}
}

// TestPasskeyChallengeExpiry: a ceremony finished passkeyTTL after it began
// is refused (on the injected clock), and a failed finish uses it up too.
func TestPasskeyChallengeExpiry(t *testing.T) {
	clk := &stepClock{t: testNow}
	e := newEnv(t, Options{Clock: clk})
	e.account("alice", RoleOwner)
	k := newSoftKey(t)
	e.addPasskey(k, e.cookieOf("alice"))
	o := e.beginSignIn()
	clk.add(passkeyTTL)
	if resp, body := e.pk("/passkey/signin/finish", k.get(t, o, e.origin())); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), passkeyFailText) {
		t.Errorf("expired challenge: %d %s", resp.StatusCode, body)
	}
	// Just before the expiry it works.
	o = e.beginSignIn()
	clk.add(passkeyTTL - time.Second)
	if resp, body := e.pk("/passkey/signin/finish", k.get(t, o, e.origin())); resp.StatusCode != http.StatusOK {
		t.Errorf("challenge within its time: %d %s", resp.StatusCode, body)
	}
}

// TestPasskeyWrongOriginOrRP: an assertion made for another origin (a
// phishing page), for another RP ID, or finished under another Host than
// it began is refused, each with the same status and body; a ceremony
// begun for one flow cannot finish another.
func TestPasskeyWrongOriginOrRP(t *testing.T) {
	e := newEnv(t, Options{})
	e.account("alice", RoleOwner)
	k := newSoftKey(t)
	e.addPasskey(k, e.cookieOf("alice"))
	var first []byte
	// check(what)(resp, body): refused, no cookie, the same body each time.
	check := func(what string) func(*http.Response, []byte) {
		return func(resp *http.Response, body []byte) {
			t.Helper()
			if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
				t.Errorf("%s: %d %s", what, resp.StatusCode, body)
			}
			if first == nil {
				first = body
			} else if !bytes.Equal(first, body) {
				t.Errorf("%s: body %q differs from %q", what, body, first)
			}
		}
	}
	k.origin = "http://localhost.attacker.example"
	check("another origin")(e.passkeySignIn(k))
	k.origin = "http://localhost:1" // same host, another port: another origin
	check("another port")(e.passkeySignIn(k))
	k.origin, k.rpID = "", "attacker.example"
	check("another RP ID")(e.passkeySignIn(k))
	k.rpID = ""
	// Begun at localhost:PORT, finished at localhost:OTHER.
	ans := k.get(t, e.beginSignIn(), e.origin())
	check("finished under another Host")(e.rawReq(http.MethodPost, "/passkey/signin/finish", ans, map[string]string{"Host": "localhost:1"}))
	// A registration ceremony's challenge does not finish a sign-in.
	resp, body := e.pk("/passkeys/register/begin", "{}", e.cookieOf("alice"))
	if resp.StatusCode != http.StatusOK {
		t.Fatal(resp.StatusCode)
	}
	check("a registration's challenge")(e.pk("/passkey/signin/finish", k.get(t, parseOptions(t, body), e.origin())))
	// The honest one still works.
	if resp, body := e.passkeySignIn(k); resp.StatusCode != http.StatusOK {
		t.Errorf("honest sign-in: %d %s", resp.StatusCode, body)
	}
}

// TestPasskeyUnknownCredential: a key the receiver never registered, with
// a real account's user handle or a made-up one, and a registered
// credential signed by another key, are refused with the one message
// (no account enumeration), and nothing of alice's changes.
func TestPasskeyUnknownCredential(t *testing.T) {
	e := newEnv(t, Options{})
	e.account("alice", RoleOwner)
	k := newSoftKey(t)
	e.addPasskey(k, e.cookieOf("alice"))
	before, err := os.ReadFile(filepath.Join(e.dir, accountsFile))
	if err != nil {
		t.Fatal(err)
	}
	stranger := newSoftKey(t)
	stranger.handle = k.handle // alice's handle, an unknown credential
	r1, b1 := e.passkeySignIn(stranger)
	stranger.handle = bytes.Repeat([]byte{7}, passkeyHandleBytes) // nobody's handle
	r2, b2 := e.passkeySignIn(stranger)
	forger := newSoftKey(t)
	forger.id, forger.handle = k.id, k.handle // alice's credential ID, another key
	r3, b3 := e.passkeySignIn(forger)
	for i, r := range []*http.Response{r1, r2, r3} {
		if r.StatusCode != http.StatusUnauthorized || len(r.Cookies()) != 0 {
			t.Errorf("case %d: %d", i, r.StatusCode)
		}
	}
	if !bytes.Equal(b1, b2) || !bytes.Equal(b2, b3) || !bytes.Contains(b1, []byte(passkeyFailText)) {
		t.Errorf("bodies differ: %q %q %q", b1, b2, b3)
	}
	after, err := os.ReadFile(filepath.Join(e.dir, accountsFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("accounts.json changed by refused sign-ins")
	}
}

// TestPasskeySignCountRegression: an assertion whose sign counter is not
// above the stored one (a cloned authenticator) is refused and the stored
// counter stays.
func TestPasskeySignCountRegression(t *testing.T) {
	e := newEnv(t, Options{})
	e.account("alice", RoleOwner)
	k := newSoftKey(t)
	e.addPasskey(k, e.cookieOf("alice"))
	k.count = 9
	if resp, body := e.passkeySignIn(k); resp.StatusCode != http.StatusOK {
		t.Fatalf("count 10: %d %s", resp.StatusCode, body)
	}
	clone := *k
	clone.count = 4
	if resp, body := e.passkeySignIn(&clone); resp.StatusCode != http.StatusUnauthorized || !bytes.Contains(body, []byte(passkeyFailText)) {
		t.Errorf("count 5 after 10: %d %s", resp.StatusCode, body)
	}
	clone.count = 9 // the same counter again
	if resp, _ := e.passkeySignIn(&clone); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("count 10 again: %d", resp.StatusCode)
	}
	if got := storedAccount(t, e.dir, "alice").Passkeys[0].SignCount; got != 10 {
		t.Errorf("stored count %d, want 10", got)
	}
	if !strings.Contains(strings.Join(e.logs.lines(), "\n"), "sign counter did not advance") {
		t.Errorf("the refusal is not logged as a possible clone")
	}
}

// TestPasskeyBodiesBounded: every passkey endpoint reads at most
// maxPasskeyBody bytes and answers 413 beyond, before parsing.
func TestPasskeyBodiesBounded(t *testing.T) {
	e := newEnv(t, Options{})
	e.account("alice", RoleOwner)
	big := `{"id":"` + strings.Repeat("A", maxPasskeyBody) + `"}`
	l, err := Accounts{Dir: e.dir}.SetupLink("alice")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/passkey/signin/begin", "/passkey/signin/finish", "/passkeys/register/begin", "/passkeys/register/finish",
		l.Path + "/passkey/begin", l.Path + "/passkey/finish"} {
		if resp, _ := e.pk(p, big, e.cookieOf("alice")); resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("%s with %d bytes: %d, want 413", p, len(big), resp.StatusCode)
		}
	}
	if n := e.srv.pk.pending(); n != 0 {
		t.Errorf("%d ceremonies begun by oversized requests", n)
	}
}

// TestPasskeysNotOnIP: at 127.0.0.1 the sign-in page offers no passkey
// (and says why), keeps the strict CSP, and the ceremony endpoints refuse;
// a password signs in there. At localhost the button is offered.
func TestPasskeysNotOnIP(t *testing.T) {
	e := newEnv(t, Options{})
	e.account("alice", RoleOwner)
	e.setupPassword("alice", testPassword)
	resp, page := e.rawReq(http.MethodGet, "/signin", "", nil)
	if resp.StatusCode != http.StatusOK || bytes.Contains(page, []byte("passkey-signin")) || bytes.Contains(page, []byte("<script")) || !bytes.Contains(page, []byte("IP address")) {
		t.Errorf("sign-in page at %s: %d\n%s", e.hs.URL, resp.StatusCode, page)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); strings.Contains(csp, "script-src") {
		t.Errorf("CSP at an IP address allows scripts: %q", csp)
	}
	for _, p := range []string{"/passkey/signin/begin", "/passkeys/register/begin"} {
		if resp, body := e.rawReq(http.MethodPost, p, "{}", nil, e.cookieOf("alice")); resp.StatusCode != http.StatusBadRequest || !bytes.Contains(body, []byte("IP address")) {
			t.Errorf("%s at an IP address: %d %s", p, resp.StatusCode, body)
		}
	}
	if resp, _ := e.rawReq(http.MethodPost, "/signin", signInForm("alice", testPassword), nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("password sign-in at an IP address: %d", resp.StatusCode)
	}
	resp, page = e.rawReq(http.MethodGet, "/signin", "", map[string]string{"Host": e.localhost()})
	if !bytes.Contains(page, []byte(`id="passkey-signin"`)) || !bytes.Contains(page, []byte(`<script src="/static/passkey.js">`)) {
		t.Errorf("sign-in page at localhost has no passkey button:\n%s", page)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); cspDirective(csp, "script-src") != "'self'" || cspDirective(csp, "connect-src") != "'self'" || cspDirective(csp, "default-src") != "'none'" {
		t.Errorf("CSP at localhost: %q", csp)
	}
	resp, js := e.rawReq(http.MethodGet, "/static/passkey.js", "", map[string]string{"Host": e.localhost()})
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") || !bytes.Contains(js, []byte("navigator.credentials.get")) {
		t.Errorf("passkey.js: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// Plain HTTP under another name: no passkeys (browsers refuse).
	e.srv.SetAllowedHosts([]string{"cams.example"})
	if _, page := e.rawReq(http.MethodGet, "/signin", "", map[string]string{"Host": "cams.example"}); bytes.Contains(page, []byte("passkey-signin")) || !bytes.Contains(page, []byte("HTTPS")) {
		t.Errorf("sign-in page over plain HTTP at cams.example:\n%s", page)
	}
}

// TestPasskeyCeremonyBounds: one address holds at most
// maxCeremoniesPerAddr pending ceremonies (429 beyond), and they free up
// when they expire.
func TestPasskeyCeremonyBounds(t *testing.T) {
	clk := &stepClock{t: testNow}
	e := newEnv(t, Options{Clock: clk})
	for range maxCeremoniesPerAddr {
		e.beginSignIn()
	}
	if resp, _ := e.pk("/passkey/signin/begin", "{}"); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("ceremony %d of one address: %d, want 429 with Retry-After", maxCeremoniesPerAddr+1, resp.StatusCode)
	}
	if n := e.srv.pk.pending(); n != maxCeremoniesPerAddr {
		t.Errorf("%d pending, want %d", n, maxCeremoniesPerAddr)
	}
	clk.add(passkeyTTL)
	e.beginSignIn()
	if n := e.srv.pk.pending(); n != 1 {
		t.Errorf("%d pending after the others expired, want 1", n)
	}
	// The overall bound, at the store.
	cs := newCeremonies()
	for i := range maxCeremonies {
		if err := cs.add(&ceremony{addr: "addr-" + strconv.Itoa(i), data: ceremonyData(i), expires: testNow.Add(time.Minute)}, testNow); err != nil {
			t.Fatalf("ceremony %d: %v", i, err)
		}
	}
	if err := cs.add(&ceremony{addr: "new", data: ceremonyData(-1), expires: testNow.Add(time.Minute)}, testNow); err != errCeremoniesFull {
		t.Errorf("ceremony beyond the bound: %v", err)
	}
}

// TestPasskeyFailuresRateLimited: failed passkey sign-ins count against the
// source address like failed passwords: past the free ones, 429.
func TestPasskeyFailuresRateLimited(t *testing.T) {
	e := newEnv(t, Options{})
	stranger := newSoftKey(t)
	stranger.handle = bytes.Repeat([]byte{1}, passkeyHandleBytes)
	limited := false
	for i := 0; i < addressFree+2 && !limited; i++ {
		resp, _ := e.pk("/passkey/signin/begin", "{}")
		if resp.StatusCode == http.StatusTooManyRequests {
			limited = true
			break
		}
		resp, _ = e.passkeySignInNoFatal(stranger)
		limited = resp.StatusCode == http.StatusTooManyRequests
	}
	if !limited {
		t.Errorf("%d failed passkey sign-ins from one address were never rate limited", addressFree+2)
	}
}

// passkeySignInNoFatal is passkeySignIn that tolerates a refused begin.
func (e *testEnv) passkeySignInNoFatal(k *softKey) (*http.Response, []byte) {
	e.t.Helper()
	resp, body := e.pk("/passkey/signin/begin", "{}")
	if resp.StatusCode != http.StatusOK {
		return resp, body
	}
	return e.pk("/passkey/signin/finish", k.get(e.t, parseOptions(e.t, body), e.origin()))
}

// TestPasskeyRegistrationBound: a registration ceremony is bound to the
// session that began it: another owner (or another session) finishing it is
// refused and nothing is stored.
func TestPasskeyRegistrationBound(t *testing.T) {
	e := newEnv(t, Options{})
	e.account("alice", RoleOwner)
	resp, body := e.pk("/passkeys/register/begin", "{}", e.cookieOf("alice"))
	if resp.StatusCode != http.StatusOK {
		t.Fatal(resp.StatusCode)
	}
	ans := newSoftKey(t).create(t, parseOptions(t, body), e.origin())
	if resp, _ := e.pk("/passkeys/register/finish", ans, e.cookieOf("bob")); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bob finishing alice's registration: %d", resp.StatusCode)
	}
	other, err := e.srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	resp, body = e.pk("/passkeys/register/begin", "{}", e.cookieOf("alice"))
	if resp.StatusCode != http.StatusOK {
		t.Fatal(resp.StatusCode)
	}
	ans = newSoftKey(t).create(t, parseOptions(t, body), e.origin())
	if resp, _ := e.pk("/passkeys/register/finish", ans, other); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("another session of alice finishing the registration: %d", resp.StatusCode)
	}
	if n := len(storedAccount(t, e.dir, "alice").Passkeys); n != 0 {
		t.Errorf("alice has %d passkeys", n)
	}
	if n := len(storedAccount(t, e.dir, "bob").Passkeys); n != 0 {
		t.Errorf("bob has %d passkeys", n)
	}
}

// TestPasskeySetupLink: a setup link registers a passkey instead of a
// password and signs in; the link is used up by it (the ceremony and the
// link both once); the passkey then signs in.
func TestPasskeySetupLink(t *testing.T) {
	e := newEnv(t, Options{})
	l, err := Accounts{Dir: e.dir}.Add("carol", RoleOwner)
	if err != nil {
		t.Fatal(err)
	}
	resp, page := e.rawReq(http.MethodGet, l.Path, "", map[string]string{"Host": e.localhost()})
	if resp.StatusCode != http.StatusOK || !bytes.Contains(page, []byte(`data-begin="`+l.Path+`/passkey/begin"`)) {
		t.Fatalf("setup page: %d\n%s", resp.StatusCode, page)
	}
	resp, body := e.pk(l.Path+"/passkey/begin", "{}")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("setup begin: %d %s", resp.StatusCode, body)
	}
	o := parseOptions(t, body)
	k := newSoftKey(t)
	ans := k.create(t, o, e.origin())
	// Another link's finish cannot use this ceremony.
	l2, err := Accounts{Dir: e.dir}.SetupLink("carol")
	if err != nil {
		t.Fatal(err)
	}
	if resp, _ := e.pk(l2.Path+"/passkey/finish", ans); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("another link finishing the ceremony: %d", resp.StatusCode)
	}
	// That used the ceremony up: begin again.
	resp, body = e.pk(l.Path+"/passkey/begin", "{}")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("setup begin: %d %s", resp.StatusCode, body)
	}
	resp, body = e.pk(l.Path+"/passkey/finish", k.create(t, parseOptions(t, body), e.origin()))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("setup finish: %d %s", resp.StatusCode, body)
	}
	sessionCookieOf(t, resp)
	acc := storedAccount(t, e.dir, "carol")
	if len(acc.Passkeys) != 1 || acc.Password != "" {
		t.Errorf("carol: %d passkeys, password %q", len(acc.Passkeys), acc.Password)
	}
	if resp, _ := e.rawReq(http.MethodGet, l.Path, "", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("the setup link after a passkey: %d, want 404 (used)", resp.StatusCode)
	}
	if resp, _ := e.pk(l.Path+"/passkey/begin", "{}"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a passkey begin with the used link: %d", resp.StatusCode)
	}
	if resp, body := e.passkeySignIn(k); resp.StatusCode != http.StatusOK {
		t.Errorf("sign-in with the set-up passkey: %d %s", resp.StatusCode, body)
	}
}

// TestPasskeyRemove: removing a passkey from the account page; the last
// way to sign in is kept; another owner's passkey is not found.
func TestPasskeyRemove(t *testing.T) {
	e := newEnv(t, Options{})
	e.account("alice", RoleOwner)
	k1, k2 := newSoftKey(t), newSoftKey(t)
	e.addPasskey(k1, e.cookieOf("alice"))
	e.addPasskey(k2, e.cookieOf("alice"))
	remove := func(who string, k *softKey) int {
		resp, _ := e.pk("/passkeys/remove", url.Values{"id": {b64u.EncodeToString(k.id)}}.Encode(), e.cookieOf(who))
		return resp.StatusCode
	}
	if code := remove("bob", k1); code != http.StatusNotFound {
		t.Errorf("bob removing alice's passkey: %d", code)
	}
	if code := remove("alice", k1); code != http.StatusSeeOther {
		t.Errorf("removing: %d", code)
	}
	if code := remove("alice", k2); code != http.StatusConflict {
		t.Errorf("removing the last credential of an account without a password: %d, want 409", code)
	}
	if acc := storedAccount(t, e.dir, "alice"); len(acc.Passkeys) != 1 || !bytes.Equal(acc.Passkeys[0].ID, k2.id) {
		t.Errorf("alice's passkeys after removals: %d", len(acc.Passkeys))
	}
	if resp, _ := e.passkeySignIn(k1); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("sign-in with the removed passkey: %d", resp.StatusCode)
	}
}

// ceremonyData is session data with a challenge unique to i.
func ceremonyData(i int) webauthn.SessionData {
	return webauthn.SessionData{Challenge: "challenge-" + strconv.Itoa(i)}
}

// cspDirective returns the value of a policy's directive.
func cspDirective(csp, name string) string {
	for _, d := range strings.Split(csp, ";") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(d), name+" "); ok {
			return v
		}
	}
	return ""
}
