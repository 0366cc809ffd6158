package receiver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/internal/claimcode"
	"github.com/keyframe-cam/keyframe/internal/livestream"
)

// newE2EEOwner is an owner's identity with n browser keys, its sets
// stamped at testNow.
func newE2EEOwner(t testing.TB, n int) *e2ee.Owner {
	t.Helper()
	o, err := e2ee.NewOwner(n)
	if err != nil {
		t.Fatal(err)
	}
	o.Now = func() time.Time { return testNow }
	return o
}

// signedSet is o's signed set of the given version, as a browser sends it.
func signedSet(t testing.TB, o *e2ee.Owner, version uint64) []byte {
	t.Helper()
	ks, err := o.KeySet(version)
	if err != nil {
		t.Fatal(err)
	}
	return ks.Signed()
}

// putKeySet stores o's set of version as owner's, as the first browser
// would (no checks against a stored one).
func (e *testEnv) putKeySet(owner string, o *e2ee.Owner, version uint64) {
	e.t.Helper()
	signed := signedSet(e.t, o, version)
	if err := updateE2EE(e.dir, owner, func(en *e2eeEntry) error { en.Signed = signed; return nil }); err != nil {
		e.t.Fatal(err)
	}
}

// e2eeDo sends an owner's e2ee request with a JSON body (v marshalled,
// or raw bytes) and returns the status and reply.
func (e *testEnv) e2eeDo(method, path string, v any, cookies ...*http.Cookie) (int, []byte) {
	e.t.Helper()
	var body []byte
	switch b := v.(type) {
	case nil:
	case []byte:
		body = b
	default:
		var err error
		if body, err = json.Marshal(v); err != nil {
			e.t.Fatal(err)
		}
	}
	resp, got := e.rawReq(method, path, string(body), map[string]string{"Content-Type": "application/json"}, cookies...)
	return resp.StatusCode, got
}

// keysOf is GET /v1/e2ee/keys for cookie, decoded.
func (e *testEnv) keysOf(cookie *http.Cookie) (int, *e2eeEntry) {
	e.t.Helper()
	code, body := e.e2eeDo(http.MethodGet, "/v1/e2ee/keys", nil, cookie)
	if code != http.StatusOK {
		return code, nil
	}
	var got e2eeEntry
	if err := decodeStrict(body, &got); err != nil {
		e.t.Fatalf("GET /v1/e2ee/keys: %v\n%s", err, body)
	}
	return code, &got
}

// TestE2EEKeysRoutes: an owner stores a first key set and backup and reads
// them back; another owner never sees them, an admin gets 403, no session
// 401; a set of another identity and a rollback are refused (409) and
// change nothing; the very same set again is taken; bad bodies are 400 or
// 413.
func TestE2EEKeysRoutes(t *testing.T) {
	e := newEnv(t, Options{})
	e.account("ops", RoleAdmin)
	alice, bob := e.cookieOf("alice"), e.cookieOf("bob")
	ops, err := e.srv.NewSession("ops")
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := e.keysOf(alice); code != http.StatusNotFound {
		t.Fatalf("GET before any set: %d, want 404", code)
	}
	owner := newE2EEOwner(t, 2)
	v1 := signedSet(t, owner, 1)
	backup := base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{7}, 60))
	if code, body := e.e2eeDo(http.MethodPut, "/v1/e2ee/keys", map[string]any{"signed": json.RawMessage(v1), "backup": backup}, alice); code != http.StatusNoContent {
		t.Fatalf("first PUT: %d %s", code, body)
	}
	code, got := e.keysOf(alice)
	if code != http.StatusOK || !bytes.Equal(got.Signed, v1) || got.Backup != backup || len(got.Requests) != 0 {
		t.Fatalf("alice's keys: %d %+v", code, got)
	}
	// Nobody else sees them.
	if code, body := e.e2eeDo(http.MethodGet, "/v1/e2ee/keys", nil, bob); code != http.StatusNotFound || bytes.Contains(body, v1[:40]) {
		t.Errorf("bob's GET: %d %s", code, body)
	}
	if code, body := e.e2eeDo(http.MethodGet, "/v1/e2ee/keys", nil, ops); code != http.StatusForbidden || bytes.Contains(body, v1[:40]) {
		t.Errorf("the admin's GET: %d %s", code, body)
	}
	if code, _ := e.e2eeDo(http.MethodGet, "/v1/e2ee/keys", nil); code != http.StatusUnauthorized {
		t.Errorf("signed out: %d, want 401", code)
	}
	if code, _ := e.e2eeDo(http.MethodPut, "/v1/e2ee/keys", map[string]any{"signed": json.RawMessage(v1)}, ops); code != http.StatusForbidden {
		t.Errorf("the admin's PUT: %d, want 403", code)
	}
	// Bob's own set is his, alice's stays hers.
	if code, body := e.e2eeDo(http.MethodPut, "/v1/e2ee/keys", map[string]any{"signed": json.RawMessage(signedSet(t, newE2EEOwner(t, 1), 5))}, bob); code != http.StatusNoContent {
		t.Fatalf("bob's first PUT: %d %s", code, body)
	}

	stored := func() []byte {
		b, err := os.ReadFile(e2eePath(e.dir, "alice"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	v3 := signedSet(t, owner, 3)
	if code, body := e.e2eeDo(http.MethodPut, "/v1/e2ee/keys", map[string]any{"signed": json.RawMessage(v3)}, alice); code != http.StatusNoContent {
		t.Fatalf("PUT of version 3: %d %s", code, body)
	}
	before := stored()
	other := newE2EEOwner(t, 1)
	owner.Now = func() time.Time { return testNow.Add(time.Second) }
	v3b := signedSet(t, owner, 3) // other bytes: another time_ms
	owner.Now = func() time.Time { return testNow }
	for _, tc := range []struct {
		name   string
		signed []byte
		want   string
	}{
		{"another identity", signedSet(t, other, 9), "another identity"},
		{"a rollback", signedSet(t, owner, 2), "not greater"},
		{"the same version, other contents", v3b, "not greater"},
	} {
		code, body := e.e2eeDo(http.MethodPut, "/v1/e2ee/keys", map[string]any{"signed": json.RawMessage(tc.signed)}, alice)
		if code != http.StatusConflict || !strings.Contains(string(body), tc.want) || bytes.Count(body, []byte("\n")) != 1 {
			t.Errorf("%s: %d %q, want 409 saying %q in one line", tc.name, code, body, tc.want)
		}
		t.Logf("%s: %s", tc.name, strings.TrimSpace(string(body)))
	}
	if !bytes.Equal(stored(), before) {
		t.Error("refused PUTs changed alice's file")
	}
	// The same set again (a retry) is taken; the backup may come with it.
	backup2 := base64.RawURLEncoding.EncodeToString([]byte("another backup"))
	if code, body := e.e2eeDo(http.MethodPut, "/v1/e2ee/keys", map[string]any{"signed": json.RawMessage(v3), "backup": backup2}, alice); code != http.StatusNoContent {
		t.Errorf("the same set again: %d %s", code, body)
	}
	if _, got := e.keysOf(alice); got == nil || !bytes.Equal(got.Signed, v3) || got.Backup != backup2 {
		t.Errorf("after the retry: %+v", got)
	}

	// Malformed bodies.
	before = stored()
	tampered := bytes.Clone(v3)
	tampered[len(tampered)-5] ^= 1
	for _, tc := range []struct {
		name string
		body any
		want int
	}{
		{"no set", map[string]any{"backup": backup}, http.StatusBadRequest},
		{"null set", []byte(`{"signed":null}`), http.StatusBadRequest},
		{"a bad signature", []byte(`{"signed":` + string(tampered) + `}`), http.StatusBadRequest},
		{"an unknown field", map[string]any{"signed": json.RawMessage(v3), "extra": 1}, http.StatusBadRequest},
		{"trailing data", []byte(`{"signed":` + string(v3) + `} {}`), http.StatusBadRequest},
		{"a backup over 4 KiB", map[string]any{"signed": json.RawMessage(v3), "backup": base64.RawURLEncoding.EncodeToString(make([]byte, MaxE2EEBackup+1))}, http.StatusBadRequest},
		{"a backup not base64url", map[string]any{"signed": json.RawMessage(v3), "backup": "a+b/"}, http.StatusBadRequest},
		{"a body over 64 KiB", map[string]any{"signed": json.RawMessage(v3), "backup": strings.Repeat("A", MaxE2EEBody)}, http.StatusRequestEntityTooLarge},
	} {
		if code, body := e.e2eeDo(http.MethodPut, "/v1/e2ee/keys", tc.body, alice); code != tc.want {
			t.Errorf("%s: %d %q, want %d", tc.name, code, body, tc.want)
		}
	}
	if !bytes.Equal(stored(), before) {
		t.Error("malformed PUTs changed alice's file")
	}
}

// joinReq is a browser's join request body with a fresh X25519 key.
func joinReq(t *testing.T, name string) (map[string]any, string) {
	t.Helper()
	pub := make([]byte, 32)
	if _, err := rand.Read(pub); err != nil {
		t.Fatal(err)
	}
	return map[string]any{"kem": 32, "pub": base64.RawURLEncoding.EncodeToString(pub), "name": name}, e2ee.KeyID(e2ee.KEMX25519, pub)
}

// TestE2EERequests: a new browser's join requests are listed with their
// key IDs, at most 8; the owner dismisses one; a set that adds a requested
// key removes its request; bad requests are 400.
func TestE2EERequests(t *testing.T) {
	e := newEnv(t, Options{})
	alice, bob := e.cookieOf("alice"), e.cookieOf("bob")
	owner := newE2EEOwner(t, 1)
	e.putKeySet("alice", owner, 1)
	var ids []string
	for i := range MaxE2EERequests {
		body, id := joinReq(t, fmt.Sprintf("browser %d", i))
		if code, reply := e.e2eeDo(http.MethodPost, "/v1/e2ee/requests", body, alice); code != http.StatusNoContent {
			t.Fatalf("request %d: %d %s", i, code, reply)
		}
		ids = append(ids, id)
	}
	body, _ := joinReq(t, "one too many")
	if code, reply := e.e2eeDo(http.MethodPost, "/v1/e2ee/requests", body, alice); code != http.StatusConflict {
		t.Errorf("a ninth request: %d %s, want 409", code, reply)
	}
	_, got := e.keysOf(alice)
	if got == nil || len(got.Requests) != MaxE2EERequests || got.Requests[0].ID != ids[0] || got.Requests[0].Name != "browser 0" || got.Requests[0].KEM != 32 || got.Requests[0].TimeMs != testNow.UnixMilli() {
		t.Fatalf("alice's requests: %+v", got)
	}
	if code, _ := e.keysOf(bob); code != http.StatusNotFound {
		t.Errorf("bob sees %d, want 404 (he has nothing)", code)
	}
	// Bob cannot dismiss alice's request; alice can, once.
	if code, _ := e.e2eeDo(http.MethodDelete, "/v1/e2ee/requests/"+ids[1], nil, bob); code != http.StatusNotFound {
		t.Errorf("bob dismisses alice's request: %d, want 404", code)
	}
	if code, _ := e.e2eeDo(http.MethodDelete, "/v1/e2ee/requests/"+ids[1], nil, alice); code != http.StatusNoContent {
		t.Errorf("alice dismisses a request: %d", code)
	}
	if code, _ := e.e2eeDo(http.MethodDelete, "/v1/e2ee/requests/"+ids[1], nil, alice); code != http.StatusNotFound {
		t.Errorf("dismissed twice: %d, want 404", code)
	}
	// Approving: a set with browser 0's key removes its request.
	req0 := got.Requests[0]
	pub, _ := base64.RawURLEncoding.DecodeString(req0.Pub)
	owner.Keys = append(owner.Keys, e2ee.OwnerKey{ID: e2ee.KeyID(e2ee.KEMX25519, pub), KEM: e2ee.KEMX25519, Pub: pub, Name: req0.Name})
	if code, reply := e.e2eeDo(http.MethodPut, "/v1/e2ee/keys", map[string]any{"signed": json.RawMessage(signedSet(t, owner, 2))}, alice); code != http.StatusNoContent {
		t.Fatalf("the approving set: %d %s", code, reply)
	}
	_, got = e.keysOf(alice)
	if got == nil || len(got.Requests) != MaxE2EERequests-2 {
		t.Fatalf("after the approval: %+v", got)
	}
	for _, r := range got.Requests {
		if r.ID == ids[0] || r.ID == ids[1] {
			t.Errorf("request %s still pending", r.ID)
		}
	}
	// A key of the set cannot ask again.
	if code, _ := e.e2eeDo(http.MethodPost, "/v1/e2ee/requests", map[string]any{"kem": 32, "pub": req0.Pub, "name": "again"}, alice); code != http.StatusConflict {
		t.Errorf("a key of the set asks to join: %d, want 409", code)
	}
	for name, b := range map[string]any{
		"another KEM":            map[string]any{"kem": 16, "pub": req0.Pub},
		"a short key":            map[string]any{"kem": 32, "pub": req0.Pub[:20]},
		"a long name":            map[string]any{"kem": 32, "pub": req0.Pub, "name": strings.Repeat("n", 65)},
		"an ID of its own":       map[string]any{"kem": 32, "pub": req0.Pub, "id": ids[2]},
		"an unknown field":       map[string]any{"kem": 32, "pub": req0.Pub, "extra": true},
		"not JSON":               []byte("kem=32"),
		"two values":             []byte(`{"kem":32} {}`),
		"a ML-KEM key too short": map[string]any{"kem": 0x647a, "pub": req0.Pub},
	} {
		if code, reply := e.e2eeDo(http.MethodPost, "/v1/e2ee/requests", b, alice); code != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", name, code, reply)
		}
	}
}

// fetchKeySet is the camera's fetch of its owner's set, as the agent does
// it (livestream.FetchKeySet).
func (e *testEnv) fetchKeySet(d *testDevice, device string) ([]byte, error) {
	e.t.Helper()
	return livestream.FetchKeySet(context.Background(), e.hs.Client(), e.hs.URL+"/", device, func(msg []byte) ([]byte, error) {
		return claimcode.Sign(rand.Reader, d.key, msg)
	})
}

// TestE2EEKeySetRoute: a camera with a valid proof gets the signed set of
// the owner it is paired to now; refused proofs get 401 or 403 with a
// nonce; a camera paired to nobody, or to an owner without a set, 404;
// after a transfer, the new owner's set.
func TestE2EEKeySetRoute(t *testing.T) {
	e := newEnv(t, Options{})
	a, b, lone, gone := newDevice(t), newDevice(t), newDevice(t), newDevice(t)
	e.enroll(a, "alice")
	e.enroll(b, "bob")
	e.enroll(gone, "alice")
	if _, err := Enroll(e.dir, lone.pem); err != nil {
		t.Fatal(err)
	}
	if err := Revoke(e.dir, gone.id); err != nil {
		t.Fatal(err)
	}
	aliceKeys, carolKeys := newE2EEOwner(t, 2), newE2EEOwner(t, 1)
	e.putKeySet("alice", aliceKeys, 4)
	e.putKeySet("carol", carolKeys, 1)

	got, err := e.fetchKeySet(a, a.id)
	if err != nil || !bytes.Equal(got, signedSet(t, aliceKeys, 4)) {
		t.Fatalf("alice's camera: %v\n%s", err, got)
	}
	ks, err := e2ee.ParseSigned(got)
	if err != nil || ks.Owner() != aliceKeys.Fingerprint() || ks.Version != 4 {
		t.Fatalf("alice's camera got %+v: %v", ks, err)
	}
	var ke *livestream.KeySetError
	if _, err := e.fetchKeySet(b, b.id); !errors.Is(err, livestream.ErrNoKeySet) || !strings.Contains(err.Error(), "no key set") {
		t.Errorf("bob has no set: %v, want 404", err)
	}
	if _, err := e.fetchKeySet(lone, lone.id); !errors.Is(err, livestream.ErrNoKeySet) || !strings.Contains(err.Error(), "paired to no owner") {
		t.Errorf("a camera paired to nobody: %v, want 404", err)
	}
	if _, err := e.fetchKeySet(b, a.id); !errors.As(err, &ke) || ke.Status != http.StatusForbidden {
		t.Errorf("bob's key for alice's camera: %v, want 403", err)
	}
	if _, err := e.fetchKeySet(gone, gone.id); !errors.As(err, &ke) || ke.Status != http.StatusForbidden {
		t.Errorf("a revoked camera: %v, want 403", err)
	}

	// The proof's details, each reply with a nonce.
	try := func(name, purpose, nonce string, d *testDevice, want int) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.hs.URL+livestream.KeySetPath(a.id), nil)
		if d != nil {
			raw, _ := base64.RawURLEncoding.DecodeString(nonce)
			sig, _ := claimcode.Sign(rand.Reader, d.key, livestream.Message(purpose, a.id, raw))
			req.Header.Set(livestream.NonceHeader, nonce)
			req.Header.Set(livestream.SignatureHeader, base64.RawURLEncoding.EncodeToString(sig))
		}
		resp, err := e.hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want || resp.Header.Get(livestream.NonceHeader) == "" {
			t.Errorf("%s: %d (nonce %q), want %d and a nonce", name, resp.StatusCode, resp.Header.Get(livestream.NonceHeader), want)
		}
	}
	try("no proof", "", "", nil, http.StatusUnauthorized)
	n := e.freshNonce(a.id)
	raw, _ := base64.RawURLEncoding.DecodeString(n)
	raw[len(raw)-1] ^= 1
	try("a forged nonce", livestream.PurposeKeySet, base64.RawURLEncoding.EncodeToString(raw), a, http.StatusUnauthorized)
	try("another purpose", livestream.PurposeWait, e.freshNonce(a.id), a, http.StatusForbidden)
	good := e.freshNonce(a.id)
	try("the right proof", livestream.PurposeKeySet, good, a, http.StatusOK)
	try("the same proof again", livestream.PurposeKeySet, good, a, http.StatusUnauthorized)
	// A keyset proof is no live proof.
	resp, _ := e.liveReq(context.Background(), http.MethodPost, a.id, livestream.WaitSuffix, livestream.PurposeKeySet, a, e.freshNonce(a.id), nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("a keyset proof on the live wait: %d, want 403", resp.StatusCode)
	}

	// Transferred to carol: the camera gets carol's set at once.
	if err := Unpair(e.dir, a.id); err != nil {
		t.Fatal(err)
	}
	if err := Pair(e.dir, a.id, "carol"); err != nil {
		t.Fatal(err)
	}
	if got, err := e.fetchKeySet(a, a.id); err != nil || !bytes.Equal(got, signedSet(t, carolKeys, 1)) {
		t.Errorf("after the transfer: %v\n%s, want carol's set", err, got)
	}
}
