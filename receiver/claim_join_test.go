package receiver

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/internal/claimcode"
	"github.com/keyframe-cam/keyframe/provenance"
)

// claimEnv is a receiver with a TLS certificate (so it issues claim codes)
// on a moving clock, behind an httptest server.
type claimEnv struct {
	*testEnv
	clk  *stepClock
	cert []byte
}

func newClaimEnv(t *testing.T) *claimEnv {
	t.Helper()
	clk := &stepClock{t: testNow}
	cert := newCA(t, "receiver", nil).cert.Raw
	e := newEnv(t, Options{Clock: clk, TLSCertificate: cert})
	return &claimEnv{testEnv: e, clk: clk, cert: cert}
}

// newCode issues a claim code for owner.
func (e *claimEnv) newCode(owner string) string {
	e.t.Helper()
	cc, err := e.srv.NewClaim(owner)
	if err != nil {
		e.t.Fatal(err)
	}
	return cc.Code
}

// post sends a JSON body (or raw bytes) and returns the status and reply.
func (e *claimEnv) post(path string, body any) (int, string, http.Header) {
	e.t.Helper()
	var b []byte
	switch v := body.(type) {
	case []byte:
		b = v
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			e.t.Fatal(err)
		}
	}
	resp, err := e.hs.Client().Post(e.hs.URL+path, "application/json", bytes.NewReader(b))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, string(reply), resp.Header
}

// challenge asks for a nonce for code; it fails the test unless it gets one.
func (e *claimEnv) challenge(code string) []byte {
	e.t.Helper()
	c, err := claimcode.Parse(code)
	if err != nil {
		e.t.Fatal(err)
	}
	status, reply, _ := e.post(claimcode.ChallengePath, claimcode.ChallengeRequest{Claim: c.ID()})
	if status != http.StatusOK {
		e.t.Fatalf("challenge: %d %q", status, reply)
	}
	var cr claimcode.ChallengeResponse
	if err := json.Unmarshal([]byte(reply), &cr); err != nil {
		e.t.Fatal(err)
	}
	if len(cr.Nonce) != claimcode.NonceSize || cr.ExpiresIn <= 0 {
		e.t.Fatalf("challenge reply %q", reply)
	}
	return cr.Nonce
}

// joinRequest is d's correct join request for code over nonce.
func joinRequest(t *testing.T, d *testDevice, code string, nonce []byte, seq uint64) claimcode.JoinRequest {
	t.Helper()
	c, err := claimcode.Parse(code)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := claimcode.Sign(rand.Reader, d.key, claimcode.JoinMessage(nonce, c.ID(), c.Pin(), d.id, seq))
	if err != nil {
		t.Fatal(err)
	}
	return claimcode.JoinRequest{Code: code, Nonce: nonce, Device: d.id, SPKI: d.spki, Seq: seq, Signature: sig}
}

// join runs the camera's side for d with code: challenge, then join with
// the request edit (if any) made.
func (e *claimEnv) join(d *testDevice, code string, edit func(*claimcode.JoinRequest)) (int, string) {
	e.t.Helper()
	req := joinRequest(e.t, d, code, e.challenge(code), 1)
	if edit != nil {
		edit(&req)
	}
	status, reply, _ := e.post(claimcode.JoinPath, req)
	return status, reply
}

// registryBytes is registry.json as it is now.
func (e *claimEnv) registryBytes() []byte {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, registryFile))
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// TestClaimJoin: a camera joins with its owner's code and its key's proof;
// its key is enrolled and paired to that owner, its records are stored and
// shown to that owner only, and the code cannot be used again.
func TestClaimJoin(t *testing.T) {
	e := newClaimEnv(t)
	d := newDevice(t)
	code := e.newCode("alice")
	status, reply := e.join(d, code, nil)
	if status != http.StatusOK {
		t.Fatalf("join: %d %q", status, reply)
	}
	var jr claimcode.JoinResponse
	if err := json.Unmarshal([]byte(reply), &jr); err != nil {
		t.Fatal(err)
	}
	if jr.Device != d.id || jr.Owner != "alice" || jr.UploadURL != e.hs.URL+"/" {
		t.Errorf("join reply %+v, want device %s owner alice upload URL %s/", jr, d.id, e.hs.URL)
	}
	if o, err := e.srv.PairedOwner(d.id); err != nil || o != "alice" {
		t.Fatalf("paired owner %q (%v), want alice", o, err)
	}
	e.mustUpload(d.record(t, "ev-1", provenance.KindStart, 1), http.StatusCreated)
	if evs, err := e.srv.OwnerEvents("alice"); err != nil || len(evs) != 1 || evs[0].Device != d.id {
		t.Errorf("alice's events: %+v (%v), want the one record of %s", evs, err, d.id)
	}
	if evs, _ := e.srv.OwnerEvents("bob"); len(evs) != 0 {
		t.Errorf("bob sees %d events", len(evs))
	}

	// The code is spent: another camera cannot use it.
	before := e.registryBytes()
	other := newDevice(t)
	c, _ := claimcode.Parse(code)
	status, reply, _ = e.post(claimcode.ChallengePath, claimcode.ChallengeRequest{Claim: c.ID()})
	if status != http.StatusGone || !strings.Contains(reply, "used already") {
		t.Errorf("challenge with a used code: %d %q, want 410 used", status, reply)
	}
	status, reply, _ = e.post(claimcode.JoinPath, joinRequest(t, other, code, make([]byte, 32), 1))
	if status != http.StatusGone || !strings.Contains(reply, "used already") {
		t.Errorf("join with a used code: %d %q, want 410 used", status, reply)
	}
	if !bytes.Equal(before, e.registryBytes()) {
		t.Error("a refused join changed the registry")
	}

	// The claims file holds no secret: neither the code nor its secret part.
	claims, err := os.ReadFile(filepath.Join(e.dir, claimsFile))
	if err != nil {
		t.Fatal(err)
	}
	canon := strings.ReplaceAll(code, "-", "")
	if bytes.Contains(claims, []byte(canon[:claimcode.SecretChars])) || bytes.Contains(claims, []byte(code)) {
		t.Errorf("claims.json holds the code's secret:\n%s", claims)
	}
}

// TestClaimRefusals: every refusal names its cause and leaves the registry
// byte-identical, with nothing enrolled or paired.
func TestClaimRefusals(t *testing.T) {
	type result struct {
		status int
		reply  string
	}
	cases := []struct {
		name   string
		run    func(e *claimEnv, d *testDevice) result
		status int
		want   string
	}{
		{"unknown code", func(e *claimEnv, d *testDevice) result {
			other, err := IssueClaim(t.TempDir(), e.cert, "alice", testNow, nil) // a well-formed code this receiver never issued
			if err != nil {
				t.Fatal(err)
			}
			c, _ := claimcode.Parse(other.Code)
			s, r, _ := e.post(claimcode.ChallengePath, claimcode.ChallengeRequest{Claim: c.ID()})
			if s != http.StatusNotFound {
				return result{s, r}
			}
			s, r, _ = e.post(claimcode.JoinPath, joinRequest(t, d, other.Code, make([]byte, 32), 1))
			return result{s, r}
		}, http.StatusNotFound, "unknown claim code"},
		{"mistyped code", func(e *claimEnv, d *testDevice) result {
			req := joinRequest(t, d, e.newCode("alice"), make([]byte, 32), 1)
			req.Code = typo(req.Code)
			s, r, _ := e.post(claimcode.JoinPath, req)
			return result{s, r}
		}, http.StatusBadRequest, "check character"},
		{"expired code", func(e *claimEnv, d *testDevice) result {
			code := e.newCode("alice")
			nonce := e.challenge(code)
			e.clk.add(ClaimTTL)
			s, r, _ := e.post(claimcode.JoinPath, joinRequest(t, d, code, nonce, 1))
			return result{s, r}
		}, http.StatusGone, "expired"},
		{"wrong proof: another key signed", func(e *claimEnv, d *testDevice) result {
			code := e.newCode("alice")
			s, r := e.join(d, code, func(req *claimcode.JoinRequest) {
				other := joinRequest(t, newDevice(t), code, req.Nonce, req.Seq)
				req.Signature = other.Signature
			})
			return result{s, r}
		}, http.StatusForbidden, "proof of possession refused"},
		{"wrong proof: signed for another seq", func(e *claimEnv, d *testDevice) result {
			s, r := e.join(d, e.newCode("alice"), func(req *claimcode.JoinRequest) { req.Seq = 9 })
			return result{s, r}
		}, http.StatusForbidden, "proof of possession refused"},
		{"device ID not the key's", func(e *claimEnv, d *testDevice) result {
			code := e.newCode("alice")
			other := newDevice(t)
			s, r := e.join(d, code, func(req *claimcode.JoinRequest) {
				*req = joinRequest(t, d, code, req.Nonce, 1)
				c, _ := claimcode.Parse(code)
				sig, err := claimcode.Sign(rand.Reader, d.key, claimcode.JoinMessage(req.Nonce, c.ID(), c.Pin(), other.id, 1))
				if err != nil {
					t.Fatal(err)
				}
				req.Device, req.Signature = other.id, sig
			})
			return result{s, r}
		}, http.StatusForbidden, "not the fingerprint"},
		{"nonce reused", func(e *claimEnv, d *testDevice) result {
			code := e.newCode("alice")
			nonce := e.challenge(code)
			bad := joinRequest(t, d, code, nonce, 1)
			bad.Seq = 2 // the signature covers seq 1: refused, the nonce is spent
			if s, r, _ := e.post(claimcode.JoinPath, bad); s != http.StatusForbidden {
				t.Fatalf("first answer: %d %q", s, r)
			}
			s, r, _ := e.post(claimcode.JoinPath, joinRequest(t, d, code, nonce, 1))
			return result{s, r}
		}, http.StatusForbidden, "challenge is unknown, used or expired"},
		{"nonce of another code", func(e *claimEnv, d *testDevice) result {
			nonce := e.challenge(e.newCode("alice"))
			s, r, _ := e.post(claimcode.JoinPath, joinRequest(t, d, e.newCode("alice"), nonce, 1))
			return result{s, r}
		}, http.StatusForbidden, "challenge is unknown"},
		{"nonce expired", func(e *claimEnv, d *testDevice) result {
			code := e.newCode("alice")
			nonce := e.challenge(code)
			e.clk.add(nonceTTL)
			s, r, _ := e.post(claimcode.JoinPath, joinRequest(t, d, code, nonce, 1))
			return result{s, r}
		}, http.StatusForbidden, "challenge is unknown"},
		{"code burned by wrong proofs", func(e *claimEnv, d *testDevice) result {
			code := e.newCode("alice")
			for range MaxClaimFailures {
				if s, r := e.join(d, code, func(req *claimcode.JoinRequest) { req.Seq++ }); s != http.StatusForbidden {
					t.Fatalf("wrong proof: %d %q", s, r)
				}
			}
			c, _ := claimcode.Parse(code)
			s, r, _ := e.post(claimcode.ChallengePath, claimcode.ChallengeRequest{Claim: c.ID()})
			return result{s, r}
		}, http.StatusGone, "too many failed attempts"},
		{"code for another receiver certificate", func(e *claimEnv, d *testDevice) result {
			cc, err := IssueClaim(e.dir, newCA(t, "another receiver", nil).cert.Raw, "alice", testNow, nil)
			if err != nil {
				t.Fatal(err)
			}
			s, r := e.join(d, cc.Code, nil)
			return result{s, r}
		}, http.StatusForbidden, "another receiver certificate"},
		{"key paired to another owner", func(e *claimEnv, d *testDevice) result {
			e.enroll(d, "bob")
			s, r := e.join(d, e.newCode("alice"), nil)
			return result{s, r}
		}, http.StatusConflict, "paired to another owner"},
		{"key revoked", func(e *claimEnv, d *testDevice) result {
			e.enroll(d, "")
			if err := Revoke(e.dir, d.id); err != nil {
				t.Fatal(err)
			}
			s, r := e.join(d, e.newCode("alice"), nil)
			return result{s, r}
		}, http.StatusForbidden, "revoked"},
		{"oversized body", func(e *claimEnv, d *testDevice) result {
			req := joinRequest(t, d, e.newCode("alice"), e.challenge(e.newCode("alice")), 1)
			req.Signature = bytes.Repeat([]byte{1}, claimcode.MaxBody)
			s, r, _ := e.post(claimcode.JoinPath, req)
			return result{s, r}
		}, http.StatusRequestEntityTooLarge, "body over"},
		{"garbage body", func(e *claimEnv, d *testDevice) result {
			s, r, _ := e.post(claimcode.JoinPath, []byte("\x00\xffnot json"))
			return result{s, r}
		}, http.StatusBadRequest, "malformed"},
		{"unknown field", func(e *claimEnv, d *testDevice) result {
			s, r, _ := e.post(claimcode.JoinPath, []byte(`{"code":"x","owner":"mallory"}`))
			return result{s, r}
		}, http.StatusBadRequest, "unknown field"},
		{"two values", func(e *claimEnv, d *testDevice) result {
			b, _ := json.Marshal(joinRequest(t, d, e.newCode("alice"), e.challenge(e.newCode("alice")), 1))
			s, r, _ := e.post(claimcode.JoinPath, append(b, b...))
			return result{s, r}
		}, http.StatusBadRequest, "malformed"},
		{"missing fields", func(e *claimEnv, d *testDevice) result {
			s, r, _ := e.post(claimcode.JoinPath, claimcode.JoinRequest{Code: e.newCode("alice")})
			return result{s, r}
		}, http.StatusBadRequest, "required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newClaimEnv(t)
			e.enroll(newDevice(t), "carol") // the registry exists and holds someone
			d := newDevice(t)
			res := tc.run(e, d)
			if res.status != tc.status || !strings.Contains(res.reply, tc.want) {
				t.Fatalf("%d %q, want %d containing %q", res.status, res.reply, tc.status, tc.want)
			}
			reg, err := loadRegistry(e.dir)
			if err != nil {
				t.Fatal(err)
			}
			switch rd := reg.Devices[d.id]; {
			case strings.HasPrefix(tc.name, "key paired"):
				if rd == nil || reg.owner(d.id) != "bob" {
					t.Errorf("the camera's pairing changed: %+v", rd)
				}
			case strings.HasPrefix(tc.name, "key revoked"):
				if rd == nil || !rd.Revoked || len(rd.Pairings) != 0 {
					t.Errorf("the revoked key's registration changed: %+v", rd)
				}
			case rd != nil:
				t.Errorf("refused camera is in the registry: %+v", rd)
			}
		})
	}
}

// typo changes the first character of a code.
func typo(code string) string {
	c := "0"
	if code[0] == '0' {
		c = "1"
	}
	return c + code[1:]
}

// TestClaimRefusalsLeaveRegistryByteIdentical: the registry file is
// byte-identical after a wrong, reused, expired code, a wrong proof, and a
// key paired to another owner.
func TestClaimRefusalsLeaveRegistryByteIdentical(t *testing.T) {
	e := newClaimEnv(t)
	bobs := newDevice(t)
	e.enroll(bobs, "bob")
	d := newDevice(t)
	used := e.newCode("alice")
	if s, r := e.join(newDevice(t), used, nil); s != http.StatusOK {
		t.Fatalf("join: %d %q", s, r)
	}
	expired := e.newCode("alice")
	expiredNonce := e.challenge(expired)
	before := e.registryBytes()

	attempts := []func() (int, string){
		func() (int, string) { // reused
			s, r, _ := e.post(claimcode.JoinPath, joinRequest(t, d, used, make([]byte, 32), 1))
			return s, r
		},
		func() (int, string) { // wrong proof
			return e.join(d, e.newCode("alice"), func(req *claimcode.JoinRequest) { req.Seq = 5 })
		},
		func() (int, string) { // another owner's camera
			return e.join(bobs, e.newCode("alice"), nil)
		},
		func() (int, string) { // wrong code: a typo
			req := joinRequest(t, d, e.newCode("alice"), make([]byte, 32), 1)
			req.Code = typo(req.Code)
			s, r, _ := e.post(claimcode.JoinPath, req)
			return s, r
		},
		func() (int, string) { // expired
			e.clk.add(ClaimTTL)
			s, r, _ := e.post(claimcode.JoinPath, joinRequest(t, d, expired, expiredNonce, 1))
			return s, r
		},
	}
	for i, a := range attempts {
		if s, r := a(); s < 400 {
			t.Fatalf("attempt %d accepted: %d %q", i, s, r)
		}
		if !bytes.Equal(before, e.registryBytes()) {
			t.Fatalf("attempt %d changed the registry", i)
		}
	}
}

// TestClaimJoinAgainSameOwner: a camera paired to the owner already joins
// again with a new code of that owner (its first answer was lost): accepted,
// still that owner's.
func TestClaimJoinAgainSameOwner(t *testing.T) {
	e := newClaimEnv(t)
	d := newDevice(t)
	e.enroll(d, "alice")
	if s, r := e.join(d, e.newCode("alice"), nil); s != http.StatusOK {
		t.Fatalf("join: %d %q", s, r)
	}
	if o, _ := e.srv.PairedOwner(d.id); o != "alice" {
		t.Errorf("paired to %q", o)
	}
}

// TestClaimRateLimit: a source address gets claimRatePerAddr claim requests
// a window, then 429 with Retry-After, and again in the next window.
func TestClaimRateLimit(t *testing.T) {
	e := newClaimEnv(t)
	body := claimcode.ChallengeRequest{Claim: strings.Repeat("a", 32)}
	for i := range claimRatePerAddr {
		if s, r, _ := e.post(claimcode.ChallengePath, body); s != http.StatusNotFound {
			t.Fatalf("request %d: %d %q", i, s, r)
		}
	}
	s, r, h := e.post(claimcode.JoinPath, []byte("{}"))
	if s != http.StatusTooManyRequests || h.Get("Retry-After") == "" {
		t.Fatalf("request over the limit: %d %q (Retry-After %q), want 429 with Retry-After", s, r, h.Get("Retry-After"))
	}
	e.clk.add(claimRateWindow)
	if s, r, _ := e.post(claimcode.ChallengePath, body); s != http.StatusNotFound {
		t.Fatalf("next window: %d %q", s, r)
	}
}

// TestClaimOpenCodesBounded: an owner holds at most MaxOpenClaims open codes;
// a new one replaces the oldest.
func TestClaimOpenCodesBounded(t *testing.T) {
	e := newClaimEnv(t)
	var codes []string
	for range MaxOpenClaims + 1 {
		codes = append(codes, e.newCode("alice"))
	}
	e.newCode("bob")
	c, _ := claimcode.Parse(codes[0])
	if s, r, _ := e.post(claimcode.ChallengePath, claimcode.ChallengeRequest{Claim: c.ID()}); s != http.StatusNotFound {
		t.Errorf("the oldest of %d codes: %d %q, want 404 (replaced)", len(codes), s, r)
	}
	for _, code := range codes[1:] {
		e.challenge(code)
	}
}

// TestNewClaimNeedsTLS: without a TLS certificate there is nothing to pin.
func TestNewClaimNeedsTLS(t *testing.T) {
	e := newEnv(t, Options{})
	if _, err := e.srv.NewClaim("alice"); !errors.Is(err, ErrNoTLS) {
		t.Fatalf("NewClaim without TLS: %v, want ErrNoTLS", err)
	}
	ce := newClaimEnv(t)
	if _, err := ce.srv.NewClaim("Alice/.."); !errors.Is(err, ErrOwner) {
		t.Fatalf("NewClaim for a malformed owner: %v, want ErrOwner", err)
	}
}

// TestHandleNewClaim: the owner's "add a camera" answer, as JSON and as a
// page naming the command to run.
func TestHandleNewClaim(t *testing.T) {
	e := newClaimEnv(t)
	r := httptest.NewRequest(http.MethodPost, "https://cams.example/claims", nil)
	r.Header.Set("Accept", "application/json")
	w := httptest.NewRecorder()
	e.srv.handleNewClaim(w, r, "alice")
	var cc ClaimCode
	if err := json.Unmarshal(w.Body.Bytes(), &cc); err != nil || w.Code != http.StatusOK {
		t.Fatalf("%d %q: %v", w.Code, w.Body, err)
	}
	code, err := claimcode.Parse(cc.Code)
	if err != nil || cc.Owner != "alice" || !cc.Expires.Equal(testNow.Add(ClaimTTL)) {
		t.Fatalf("claim %+v: %v", cc, err)
	}
	crt, err := x509.ParseCertificate(e.cert)
	if err != nil {
		t.Fatal(err)
	}
	if !code.MatchesSPKI(crt.RawSubjectPublicKeyInfo) {
		t.Error("the code does not pin the receiver's certificate")
	}
	r = httptest.NewRequest(http.MethodPost, "https://cams.example/claims", nil)
	w = httptest.NewRecorder()
	e.srv.handleNewClaim(w, r, "alice")
	body := w.Body.String()
	const cmd = "keyframe join https://cams.example/ "
	i := strings.Index(body, cmd)
	if w.Code != http.StatusOK || i < 0 {
		t.Fatalf("page %d:\n%s", w.Code, body)
	}
	if _, err := claimcode.Parse(body[i+len(cmd) : i+len(cmd)+claimcode.Len]); err != nil {
		t.Errorf("page shows no code: %v\n%s", err, body)
	}
	if w.Header().Get("Cache-Control") != "no-store" {
		t.Error("the claim page may be cached")
	}
}

// TestRequireClientCertLetsClaimsThrough: with mutual TLS, the two claim
// endpoints and the owner's e2ee routes need no client certificate; any
// other /v1/ path still does.
func TestRequireClientCertLetsClaimsThrough(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h := RequireClientCert(ok)
	for path, want := range map[string]int{
		claimcode.ChallengePath:       http.StatusTeapot,
		claimcode.JoinPath:            http.StatusTeapot,
		"/v1/claim/../events/e/start": http.StatusUnauthorized,
		"/v1/claim/join/x":            http.StatusUnauthorized,
		"/v1/events/e/start":          http.StatusUnauthorized,
		// The owner's e2ee routes are a browser's (a session); the
		// camera's key set fetch is a device's.
		"/v1/e2ee/keys":                              http.StatusTeapot,
		"/v1/e2ee/requests":                          http.StatusTeapot,
		"/v1/e2ee/requests/0123abcd":                 http.StatusTeapot,
		"/v1/e2ee/requests/../../events/e/end":       http.StatusUnauthorized,
		"/v1/e2ee/requests/a/b":                      http.StatusUnauthorized,
		"/v1/e2ee/abcdefghijklmnopqrstuvwxyz/keyset": http.StatusUnauthorized,
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, path, nil))
		if w.Code != want {
			t.Errorf("%s: %d, want %d", path, w.Code, want)
		}
	}
}

// TestClaimE2EE: an owner with a key set gets a 50-character code that
// commits to the identity, and the join answer carries the owner's signed
// set; e2ee=off gives a plain code and no set; a code whose commitment was
// altered is a wrong code; an owner whose identity changed since the code
// was made gets 409, and the code stays unused.
func TestClaimE2EE(t *testing.T) {
	e := newClaimEnv(t)
	owner := newE2EEOwner(t, 2)
	e.putKeySet("alice", owner, 3)
	cc, err := e.srv.NewClaim("alice")
	if err != nil {
		t.Fatal(err)
	}
	fp := owner.Fingerprint()
	code, err := claimcode.Parse(cc.Code)
	if err != nil || len(cc.Code) != claimcode.LenE2EE || !code.MatchesCommit(e2ee.ClaimCommit(fp)) || cc.E2EEOwner != hex.EncodeToString(fp[:]) {
		t.Fatalf("code %q (%v), e2ee owner %q: want 50 characters committing to %x", cc.Code, err, cc.E2EEOwner, fp)
	}
	status, reply := e.join(newDevice(t), cc.Code, nil)
	var jr claimcode.JoinResponse
	if status != http.StatusOK || json.Unmarshal([]byte(reply), &jr) != nil {
		t.Fatalf("join: %d %q", status, reply)
	}
	if !bytes.Equal(jr.KeySet, signedSet(t, owner, 3)) {
		t.Errorf("the join answer's key set: %s", jr.KeySet)
	}

	// A plain code, asked for with the form field.
	r := httptest.NewRequest(http.MethodPost, "https://cams.example/claims", strings.NewReader("e2ee=off"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Accept", "application/json")
	w := httptest.NewRecorder()
	e.srv.handleNewClaim(w, r, "alice")
	var plain ClaimCode
	if err := json.Unmarshal(w.Body.Bytes(), &plain); err != nil || len(plain.Code) != claimcode.Len || plain.E2EEOwner != "" {
		t.Fatalf("e2ee=off: %d %q", w.Code, w.Body)
	}
	status, reply = e.join(newDevice(t), plain.Code, nil)
	jr = claimcode.JoinResponse{}
	if status != http.StatusOK || json.Unmarshal([]byte(reply), &jr) != nil || jr.KeySet != nil {
		t.Errorf("join with a plain code: %d %q, want no key set", status, reply)
	}

	// The page of a committed code offers a plain one; a bad field is 400.
	w = httptest.NewRecorder()
	e.srv.handleNewClaim(w, httptest.NewRequest(http.MethodPost, "https://cams.example/claims", nil), "alice")
	if page := w.Body.String(); w.Code != http.StatusOK || !strings.Contains(page, `name="e2ee" value="off"`) || !strings.Contains(page, hex.EncodeToString(fp[:])) {
		t.Errorf("the page of a committed code: %d\n%s", w.Code, page)
	}
	r = httptest.NewRequest(http.MethodPost, "https://cams.example/claims", strings.NewReader("e2ee=maybe"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w = httptest.NewRecorder()
	e.srv.handleNewClaim(w, r, "alice")
	if w.Code != http.StatusBadRequest {
		t.Errorf("e2ee=maybe: %d, want 400", w.Code)
	}

	// The commitment altered (the check character made to match), or
	// dropped: a wrong code, counted against it.
	cc2, err := e.srv.NewClaim("alice")
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := claimcode.Parse(cc2.Code)
	other := newE2EEOwner(t, 1)
	forged, err := claimcode.NewCommitted(zeroReader{}, []byte("x"), e2ee.ClaimCommit(other.Fingerprint()))
	if err != nil {
		t.Fatal(err)
	}
	// The secret and pin of c2 with other's commitment: splice the
	// canonical characters and recompute the check character by parsing
	// candidates.
	forgedCode := spliceCommit(t, c2, forged)
	for name, altered := range map[string]string{"another commitment": forgedCode, "no commitment": c2.WithoutCommit().String()} {
		status, reply := e.join(newDevice(t), altered, nil)
		if status != http.StatusForbidden || !strings.Contains(reply, "wrong claim code") {
			t.Errorf("%s: %d %q, want 403 wrong claim code", name, status, reply)
		}
	}

	// The owner's identity changed (the file replaced behind the
	// receiver's back): 409, the code unused, the registry unchanged.
	cc3, err := e.srv.NewClaim("alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e2eePath(e.dir, "alice")); err != nil {
		t.Fatal(err)
	}
	e.putKeySet("alice", other, 1)
	before := e.registryBytes()
	status, reply = e.join(newDevice(t), cc3.Code, nil)
	if status != http.StatusConflict || !strings.Contains(reply, "identity changed") {
		t.Errorf("identity changed: %d %q, want 409", status, reply)
	}
	if !bytes.Equal(before, e.registryBytes()) {
		t.Error("the refused join changed the registry")
	}
	f, err := loadClaims(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	c3, _ := claimcode.Parse(cc3.Code)
	if rec := f.find(c3.ID()); rec == nil || rec.Used {
		t.Errorf("the code after a 409: %+v, want unused", rec)
	}
}

// zeroReader reads zeros.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// spliceCommit is code with the commitment of from: the characters are
// spliced and the check character is the one Parse accepts.
func spliceCommit(t *testing.T, code, from claimcode.Code) string {
	t.Helper()
	a := strings.ReplaceAll(code.String(), "-", "")
	b := strings.ReplaceAll(from.String(), "-", "")
	body := a[:claimcode.SecretChars+claimcode.PinChars] + b[claimcode.SecretChars+claimcode.PinChars:claimcode.CharsE2EE-1]
	for _, c := range "0123456789ABCDEFGHJKMNPQRSTVWXYZ" {
		if p, err := claimcode.Parse(body + string(c)); err == nil {
			return p.String()
		}
	}
	t.Fatal("no check character fits")
	return ""
}
