package receiver

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha3"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/internal/browsertest"
	"github.com/keyframe-cam/keyframe/provenance"
)

// e2eeFake is the receiver's /v1/e2ee routes for one owner as
// /work/wt/E2EE-API.md gives them (GET and PUT /v1/e2ee/keys, POST and
// DELETE /v1/e2ee/requests), without sessions: the library's tests run
// against it. PUT checks the set with package e2ee, as a camera would
// (e2ee.ParseSigned, e2ee.Accept against the set held), so every set the
// browser signs is also checked by the Go implementation.
type e2eeFake struct {
	mu       sync.Mutex
	set      *e2ee.KeySet
	backup   string
	requests []e2eeFakeRequest
	refused  []string     // why each refused PUT was refused
	stale    *e2ee.KeySet // when set, GET answers this set instead (a receiver rolling back)
}

type e2eeFakeRequest struct {
	ID     string `json:"id"`
	KEM    uint16 `json:"kem"`
	Pub    string `json:"pub"`
	Name   string `json:"name"`
	TimeMs int64  `json:"time_ms"`
}

func (f *e2eeFake) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/e2ee/keys", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		var signed json.RawMessage = []byte("null")
		if f.set != nil {
			signed = f.set.Signed()
		}
		if f.stale != nil {
			signed = f.stale.Signed()
		}
		reqs := f.requests
		if reqs == nil {
			reqs = []e2eeFakeRequest{}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"signed": signed, "backup": f.backup, "requests": reqs})
	})
	mux.HandleFunc("PUT /v1/e2ee/keys", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Signed json.RawMessage `json:"signed"`
			Backup string          `json:"backup"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		ks, err := e2ee.ParseSigned(body.Signed)
		if err != nil {
			f.refused = append(f.refused, err.Error())
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		switch {
		case f.set == nil && body.Backup == "":
			err = errors.New("the first set comes with its backup")
		case f.set != nil:
			err = e2ee.Accept(f.set.Owner(), f.set, ks)
		}
		if err != nil {
			f.refused = append(f.refused, err.Error())
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		f.set = ks
		if body.Backup != "" {
			f.backup = body.Backup
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /v1/e2ee/requests", func(w http.ResponseWriter, r *http.Request) {
		var q e2eeFakeRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&q); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		pub, err := base64.RawURLEncoding.DecodeString(q.Pub)
		if err != nil || q.KEM != e2ee.KEMX25519 || len(pub) != 32 {
			http.Error(w, "bad key", http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		q.ID = e2ee.KeyID(q.KEM, pub)
		q.TimeMs = 1_765_000_000_000
		f.requests = append(f.requests, q)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE /v1/e2ee/requests/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, q := range f.requests {
			if q.ID == r.PathValue("id") {
				f.requests = append(f.requests[:i], f.requests[i+1:]...)
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		http.NotFound(w, r)
	})
}

func (f *e2eeFake) keySet(t *testing.T) *e2ee.KeySet {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.set == nil {
		t.Fatal("the receiver holds no key set")
	}
	return f.set
}

// e2eeTestServer serves /static/e2ee.js with the receiver's handler, two
// pages under the pages' policy (passkeyPageCSP) that load it (/lib: the
// library only; /account: with the account page's <div id="e2ee">), and
// the fake's routes.
func e2eeTestServer(t *testing.T, f *e2eeFake) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /static/e2ee.js", serveE2EEJS)
	page := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Set("Content-Type", "text/html; charset=utf-8")
			h.Set("Content-Security-Policy", passkeyPageCSP)
			fmt.Fprintf(w, `<!doctype html><html><head><meta charset="utf-8"><title>e2ee</title></head><body>%s<script src="/static/e2ee.js"></script></body></html>`, body)
		}
	}
	mux.HandleFunc("GET /lib", page(`<p>e2ee.js</p>`))
	mux.HandleFunc("GET /account", page(`<div id="e2ee" data-account="alice"></div>`))
	f.routes(mux)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return hs
}

// jsPrelude defines B (base64 to bytes), S (bytes to base64) and H (hex)
// for the test's scripts.
const jsPrelude = `const B = s => Uint8Array.from(atob(s), c => c.charCodeAt(0));
const S = b => { let s = ""; new Uint8Array(b).forEach(x => s += String.fromCharCode(x)); return btoa(s) };
const H = KFE2EE.util.hex, X = KFE2EE.util.fromHex;
`

// js runs body as an async function on ctx's page and returns its value.
func js[T any](t *testing.T, ctx context.Context, body string) T {
	t.Helper()
	return browsertest.Run(t, ctx, chromedp.Evaluate[T]("(async () => {\n"+jsPrelude+body+"\n})()", chromedp.EvalAwaitPromise))
}

// showResult shows text on ctx's page, for its screenshot.
func showResult(t *testing.T, ctx context.Context, text string) {
	t.Helper()
	q, _ := json.Marshal(text)
	browsertest.Do(t, ctx, chromedp.Evaluate[chromedp.Void](`(() => { const p = document.createElement("pre"); p.style.whiteSpace = "pre-wrap"; p.style.wordBreak = "break-all"; p.textContent = `+string(q)+`; document.body.replaceChildren(p) })()`))
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func openLib(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	if resp := browsertest.Response(t, ctx, chromedp.Navigate(url)); resp.Status != http.StatusOK {
		t.Fatalf("%s: %d", url, resp.Status)
	}
	if !browsertest.Run(t, ctx, chromedp.Evaluate[bool](`typeof window.KFE2EE === "object" && window.isSecureContext`)) {
		t.Fatalf("%s: window.KFE2EE is not there (the script did not load under the page's policy?)", url)
	}
}

// TestBrowserE2EEHPKE: in chromium, KFE2EE's HPKE against RFC 9180 A.1
// (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base mode;
// e2ee/testdata/rfc9180-a1.json): DeriveKeyPair(ikmR) gives pkRm, a
// non-extractable key; the recipient opens the RFC's ciphertexts (sequence
// numbers 0 to 256); the sender with DeriveKeyPair(ikmE) gives the vector's enc,
// and its 1000 seals of SHAKE128-drawn inputs (the vector's
// encryptions_accumulated, as crypto/hpke's test draws them) hash to the
// vector's value, each opened again by the recipient.
func TestBrowserE2EEHPKE(t *testing.T) {
	var v struct {
		Info, IkmE, IkmR, SkRm, PkRm, Enc string
		AccEncryptions                    string `json:"encryptions_accumulated"`
		Encryptions                       []struct {
			Seq         int
			Aad, Pt, Ct string
		}
	}
	raw, err := os.ReadFile(filepath.Join("..", "e2ee", "testdata", "rfc9180-a1.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	// The inputs of the accumulated encryptions.
	source := sha3.NewSHAKE128()
	draw := func() []byte {
		l := make([]byte, 1)
		_, _ = source.Read(l)
		b := make([]byte, l[0])
		_, _ = source.Read(b)
		return b
	}
	var inputs [][2]string
	for range 1000 {
		aad, pt := draw(), draw()
		inputs = append(inputs, [2]string{b64(aad), b64(pt)})
	}
	in, _ := json.Marshal(map[string]any{"v": json.RawMessage(raw), "inputs": inputs})

	hs := e2eeTestServer(t, &e2eeFake{})
	ctx := browsertest.New(t)
	openLib(t, ctx, hs.URL+"/lib")
	var out struct {
		Pk, Enc       string
		Extractable   bool
		Opened        []string
		Cts           []string
		Mismatch      int
		WrongAADError string
	}
	res := js[string](t, ctx, `const a = `+string(in)+`, v = a.v;
const kp = await KFE2EE.hpke.deriveKeyPair(X(v.ikmR));
const r = await KFE2EE.hpke.setupBaseR(X(v.enc), kp.privateKey, kp.publicKey, X(v.info));
const opened = [];
for (const e of v.encryptions) { r.seq = e.seq; opened.push(H(await r.open(X(e.aad), X(e.ct)))); }
const s = await KFE2EE.hpke.setupBaseS(X(v.pkRm), X(v.info), {ikmE: X(v.ikmE)});
const r2 = await KFE2EE.hpke.setupBaseR(s.enc, kp.privateKey, kp.publicKey, X(v.info));
const cts = []; let mismatch = 0;
for (const [aad, pt] of a.inputs) {
  const ct = await s.context.seal(B(aad), B(pt));
  cts.push(S(ct));
  if (S(await r2.open(B(aad), ct)) !== pt) { mismatch++; }
}
let wrong = "";
try { r.seq = 0; await r.open(X("00"), X(v.encryptions[0].ct)); } catch (e) { wrong = e.message; }
return JSON.stringify({pk: H(kp.publicKey), enc: H(s.enc), extractable: kp.privateKey.extractable, opened, cts, mismatch, wrongAADError: wrong});`)
	if err := json.Unmarshal([]byte(res), &out); err != nil {
		t.Fatal(err)
	}
	if out.Pk != v.PkRm {
		t.Errorf("DeriveKeyPair(ikmR): public key %s, want %s", out.Pk, v.PkRm)
	}
	if out.Extractable {
		t.Error("DeriveKeyPair made an extractable private key")
	}
	for i, e := range v.Encryptions {
		if i >= len(out.Opened) || out.Opened[i] != e.Pt {
			t.Errorf("encryption %d opened to %v, want %s", e.Seq, out.Opened, e.Pt)
		}
	}
	if out.Enc != v.Enc {
		t.Errorf("SetupBaseS with ikmE: enc %s, want %s", out.Enc, v.Enc)
	}
	sink := sha3.NewSHAKE128()
	for _, c := range out.Cts {
		b, err := base64.StdEncoding.DecodeString(c)
		if err != nil {
			t.Fatal(err)
		}
		sink.Write(b)
	}
	acc := make([]byte, 16)
	_, _ = sink.Read(acc)
	if len(out.Cts) != 1000 || hex.EncodeToString(acc) != v.AccEncryptions {
		t.Errorf("%d encryptions accumulate to %x, want %s", len(out.Cts), acc, v.AccEncryptions)
	}
	if out.Mismatch != 0 {
		t.Errorf("%d of the 1000 ciphertexts did not open to their plaintext", out.Mismatch)
	}
	if !strings.Contains(out.WrongAADError, "does not open") {
		t.Errorf("a ciphertext under another aad: %q, want it refused", out.WrongAADError)
	}
	showResult(t, ctx, fmt.Sprintf("RFC 9180 A.1 in chromium: pkRm %s, %d RFC encryptions opened, enc %s, 1000 seals accumulate to %x, each opened", out.Pk, len(out.Opened), out.Enc, acc))
	browsertest.Screenshot(t, ctx, "hpke")
}

// TestBrowserE2EERecords: the record check (docs/envelope.md §3) in
// chromium over the provenance test vectors: every valid record verifies
// (ES256 and EdDSA) and its media match; every one the manifest says has a
// bad signature, device ID, expected key or media, and every structural
// defect (non-canonical lengths, unknown labels, no tag, …) is refused;
// a byte flipped anywhere in ok-start.cose is refused. The semantic payload
// rules the receiver's verifier applies (field values, clips) are not the
// browser's to check; the ones it passes are logged.
func TestBrowserE2EERecords(t *testing.T) {
	dir := filepath.Join("..", "provenance", "testdata", "vectors")
	var m struct {
		Vectors []struct {
			Name, Envelope, Expect, Device string
			Media                          []string
			WantKey                        string `json:"want_key"`
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b64(b)
	}
	spki := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		p, _ := pem.Decode(b)
		if p == nil {
			t.Fatalf("%s: no PEM", name)
		}
		return b64(p.Bytes)
	}
	type vec struct {
		Name  string   `json:"name"`
		Env   string   `json:"env"`
		Key   string   `json:"key"`
		Media []string `json:"media"`
	}
	var vs []vec
	for _, v := range m.Vectors {
		x := vec{Name: v.Name, Env: read(v.Envelope), Media: []string{}}
		if v.WantKey != "" {
			x.Key = spki(v.WantKey)
		}
		for _, f := range v.Media {
			x.Media = append(x.Media, read(f))
		}
		vs = append(vs, x)
	}
	in, _ := json.Marshal(vs)

	hs := e2eeTestServer(t, &e2eeFake{})
	ctx := browsertest.New(t)
	openLib(t, ctx, hs.URL+"/lib")
	var got map[string]string
	res := js[string](t, ctx, `const out = {};
for (const v of `+string(in)+`) {
  try {
    const rec = await KFE2EE.verifyRecord(B(v.env), v.key ? B(v.key) : null);
    for (let i = 0; i < v.media.length; i++) { await KFE2EE.checkMedia(rec, i, B(v.media[i])); }
    if (rec.media.length !== v.media.length) { throw new Error("the record lists " + rec.media.length + " media, " + v.media.length + " given"); }
    if (rec.kind === "segment") { await KFE2EE.checkFrames(rec, B(v.media[0])); }
    out[v.name] = "ok " + rec.device;
  } catch (e) { out[v.name] = e.message; }
}
return JSON.stringify(out);`)
	if err := json.Unmarshal([]byte(res), &got); err != nil {
		t.Fatal(err)
	}
	// Not here: bad-extra-header (an x5chain that is no certificate): the
	// chain is the receiver's trust decision (envelope.md §9), the browser
	// checks the record against the device key it is given.
	structural := map[string]bool{
		"bad-noncanonical-signature-length": true, "bad-noncanonical-payload-length": true, "bad-noncanonical-unprotected": true,
		"bad-indefinite-payload": true, "bad-duplicate-header": true, "bad-unknown-header": true,
		"bad-untagged": true, "bad-truncated": true, "bad-no-spki": true, "bad-alg-mismatch": true, "bad-es384": true,
		"bad-content-type": true, "bad-unprotected-header": true, "bad-nondeterministic-order": true,
		"bad-nondeterministic-int": true, "bad-version": true, "bad-x5chain-too-many": true,
	}
	var unchecked []string
	for _, v := range m.Vectors {
		r := got[v.Name]
		ok := strings.HasPrefix(r, "ok ")
		switch {
		case v.Expect == "ok":
			if !ok || (v.Device != "" && r != "ok "+v.Device) {
				t.Errorf("%s: %q, want it verified", v.Name, r)
			}
		case v.Expect == "signature", v.Expect == "device_id", v.Expect == "media", v.Expect == "key" && v.WantKey != "", structural[v.Name]:
			if ok {
				t.Errorf("%s (%s): verified, want it refused", v.Name, v.Expect)
			} else {
				t.Logf("%s: refused: %s", v.Name, r)
			}
		case ok:
			unchecked = append(unchecked, v.Name)
		}
	}
	t.Logf("left to the receiver's verifier (semantic payload rules, certificate chains, clips): %s", strings.Join(unchecked, ", "))

	// Every byte of ok-start.cose flipped in turn.
	env := read("ok-start.cose")
	key := spki("keys/device-a.pub.pem")
	passed := js[string](t, ctx, `const env = B("`+env+`"), key = B("`+key+`"), bad = [];
const t0 = performance.now();
await KFE2EE.verifyRecord(env, key);
const one = performance.now() - t0;
for (let i = 0; i < env.length; i++) {
  const e = env.slice(); e[i] ^= 0x01;
  try { await KFE2EE.verifyRecord(e, key); bad.push(i); } catch (err) {}
}
return bad.join(",") + "|" + env.length + "|" + one.toFixed(2);`)
	parts := strings.Split(passed, "|")
	if parts[0] != "" {
		t.Errorf("ok-start.cose with byte %s flipped still verifies", parts[0])
	}
	t.Logf("every one of %s bytes of ok-start.cose flipped: refused; one check took %s ms", parts[1], parts[2])
	var lines []string
	for _, v := range m.Vectors {
		lines = append(lines, v.Name+" ("+v.Expect+"): "+got[v.Name])
	}
	showResult(t, ctx, strings.Join(lines, "\n"))
	browsertest.Screenshot(t, ctx, "records")
}

// e2eeThumb is a JPEG of about 30 KB: 320×240 of noisy gradients.
func e2eeThumb(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 320, 240))
	noise := make([]byte, 320*240)
	if _, err := rand.Read(noise); err != nil {
		t.Fatal(err)
	}
	for y := range 240 {
		for x := range 320 {
			n := noise[y*320+x] / 2
			img.Set(x, y, color.RGBA{R: uint8(x*255/320) ^ n, G: uint8(y * 255 / 240), B: 140 + n, A: 255})
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 85}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// sealedRecord seals plaintext to ks for d's record (event, seq) and signs
// the record listing the sealed bytes as its thumbnail.
func sealedRecord(t *testing.T, d *testDevice, ks *e2ee.KeySet, event string, seq uint64, plaintext []byte) (env, sealed []byte) {
	t.Helper()
	s, err := e2ee.NewSealer(ks)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err = s.Seal(e2ee.Binding{Device: d.id, Event: event, Seq: seq, Role: e2ee.RoleThumbnail}, plaintext)
	if err != nil {
		t.Fatal(err)
	}
	p := d.payload(event, "start", seq, sealed)
	p.Media = []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, e2ee.SealedType, sealed)}
	return d.sign(t, p), sealed
}

// waitState waits until the account piece of ctx's page says state.
func waitState(t *testing.T, ctx context.Context, state string) {
	t.Helper()
	browsertest.Run(t, ctx, chromedp.Poll[bool](`(() => { const e = document.getElementById("e2ee"); return !!e && e.dataset.state === "`+state+`" && !e.querySelector("button:disabled") })()`,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second)))
}

// waitKeys waits until the account piece lists n keys.
func waitKeys(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	browsertest.Run(t, ctx, chromedp.Poll[bool](fmt.Sprintf(`document.querySelectorAll("#e2ee-keys li").length === %d && !document.querySelector("#e2ee button:disabled")`, n),
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second)))
}

// TestBrowserE2EEAccount drives the account page's piece in three
// browsers (separate profiles: separate IndexedDB) against the receiver's
// routes (e2eeFake, which checks every set with package e2ee), and opens
// in each what Go's e2ee.Sealer sealed to the set of the moment:
//
//   - A sets up: identity and browser key non-extractable in IndexedDB, the
//     recovery secret shown once with a download, set v1 = {A, recovery};
//     A opens a signed record's sealed 30 KB thumbnail (signature, media
//     hash, then the binding) and draws it; a flipped byte, the same sealed
//     bytes in a record of another event, and another binding all fail; the
//     recovery key derived from the secret opens it too; a live key frame
//     and its frames open, a replayed or altered frame does not;
//   - B asks to join, A approves (v2), B opens what is sealed then;
//   - C joins with the recovery secret (v3) and holds the identity;
//   - A removes B (v4): B cannot open what is sealed after, C can;
//   - a receiver serving an older set (v3, B still in it) is refused;
//   - a mistyped secret is refused with a message.
//
// Screenshots: account-none, recovery-secret, opened-thumbnail, asked,
// approve, joined-by-secret, removed, wrong-secret.
func TestBrowserE2EEAccount(t *testing.T) {
	f := &e2eeFake{}
	hs := e2eeTestServer(t, f)
	page := hs.URL + "/account"
	d := newDevice(t)

	a := browsertest.New(t)
	browsertest.Do(t, a, chromedp.Navigate(page))
	waitState(t, a, "none")
	browsertest.Screenshot(t, a, "account-none")

	// A sets up.
	browsertest.Do(t, a, chromedp.Click(chromedp.ID("e2ee-setup")), chromedp.WaitVisible(chromedp.ID("e2ee-secret")))
	waitState(t, a, "enrolled")
	secret := browsertest.Run(t, a, chromedp.Text(chromedp.ID("e2ee-secret")))
	if len(strings.ReplaceAll(secret, "-", "")) != 26 {
		t.Fatalf("recovery secret %q: want 26 characters", secret)
	}
	if dl := browsertest.Run(t, a, chromedp.Evaluate[string](`(() => { const a = document.getElementById("e2ee-download"); return a.href.slice(0, 5) + " " + a.getAttribute("download") })()`)); dl != "blob: keyframe-recovery-secret-alice.txt" {
		t.Errorf("the download link: %q", dl)
	}
	browsertest.Screenshot(t, a, "recovery-secret")
	browsertest.Do(t, a, chromedp.Click(chromedp.ID("e2ee-secret-done")))
	browsertest.Run(t, a, chromedp.Poll[bool](`!document.getElementById("e2ee-secret")`, chromedp.WithPollingTimeout(10*time.Second)))
	ks := f.keySet(t)
	if ks.Version != 1 || len(ks.Keys) != 2 || !ks.Keys[1].Recovery || ks.Keys[0].Recovery || f.backup == "" {
		t.Fatalf("after set up the receiver holds version %d, keys %+v, backup %d chars", ks.Version, ks.Keys, len(f.backup))
	}
	aID := js[string](t, a, `const acc = await KFE2EE.account("alice");
if (acc.rec.browser.privateKey.extractable || acc.rec.identity.privateKey.extractable) { throw new Error("an extractable private key in IndexedDB"); }
return acc.rec.browser.id`)
	if aID != ks.Keys[0].ID || !strings.HasPrefix(ks.Keys[0].Name, "Chromium on Linux, ") {
		t.Errorf("A's key %s, the set's first %s %q", aID, ks.Keys[0].ID, ks.Keys[0].Name)
	}
	if rid := js[string](t, a, `const kp = await KFE2EE.recoveryKeyPair("`+secret+`"); return KFE2EE.keyID(32, kp.publicKey)`); rid != ks.Keys[1].ID {
		t.Errorf("the recovery key derived from the secret has id %s, the set's recovery key %s", rid, ks.Keys[1].ID)
	}
	// The secret as shown is the 16 bytes Go's e2ee.RecoveryKey takes.
	if rk, err := e2ee.RecoveryKey(crockford(t, secret)); err != nil || !bytes.Equal(rk.PublicKey().Bytes(), ks.Keys[1].Pub) {
		t.Errorf("e2ee.RecoveryKey of the secret shown: %v, not the set's recovery key", err)
	}

	// A opens a sealed thumbnail of a signed record.
	thumb := e2eeThumb(t)
	env, sealed := sealedRecord(t, d, ks, "porch-1", 7, thumb)
	p2 := d.payload("porch-2", "start", 7, sealed) // the same sealed bytes in a record of another event
	p2.Media = []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, e2ee.SealedType, sealed)}
	envMoved := d.sign(t, p2)
	sum := sha256.Sum256(thumb)
	var opened struct {
		Sum, Tampered, TamperedSealed, Moved, OtherBinding, Recovery string
		Ms                                                           []float64
	}
	res := js[string](t, a, `const acc = await KFE2EE.account("alice");
const env = B("`+b64(env)+`"), spki = B("`+b64(d.spki)+`"), sealed = B("`+b64(sealed)+`");
const ms = [];
let pt;
for (let i = 0; i < 20; i++) { const t0 = performance.now(); pt = await acc.openRecordMedia(env, spki, sealed, 0); ms.push(performance.now() - t0); }
const err = async f => { try { await f(); return ""; } catch (e) { return e.message; } };
const bad = sealed.slice(); bad[bad.length - 40] ^= 1;
const owner = await KFE2EE.fingerprint(acc.set.identity);
const kp = await KFE2EE.recoveryKeyPair("`+secret+`");
const rpt = await KFE2EE.openSealed(sealed, {owner, device: "`+d.id+`", event: "porch-1", seq: 7, role: "thumbnail"}, [{id: await KFE2EE.keyID(32, kp.publicKey), privateKey: kp.privateKey, publicKey: kp.publicKey}]);
const bmp = await createImageBitmap(new Blob([pt], {type: "image/jpeg"}));
const c = document.createElement("canvas"); c.id = "opened"; c.width = bmp.width; c.height = bmp.height; c.getContext("2d").drawImage(bmp, 0, 0); document.body.append(c);
return JSON.stringify({
  sum: H(await KFE2EE.util.sha256(pt)), ms,
  tampered: await err(() => acc.openRecordMedia(env, spki, bad, 0)),
  tamperedSealed: await err(() => acc.open(bad, {device: "`+d.id+`", event: "porch-1", seq: 7, role: "thumbnail"})),
  moved: await err(() => acc.openRecordMedia(B("`+b64(envMoved)+`"), spki, sealed, 0)),
  otherBinding: await err(() => acc.open(sealed, {device: "`+d.id+`", event: "porch-1", seq: 7, role: "frames"})),
  recovery: H(await KFE2EE.util.sha256(rpt)),
});`)
	if err := json.Unmarshal([]byte(res), &opened); err != nil {
		t.Fatal(err)
	}
	if opened.Sum != hex.EncodeToString(sum[:]) || opened.Recovery != opened.Sum {
		t.Errorf("A opened to %s, the recovery key to %s, want %x", opened.Sum, opened.Recovery, sum)
	}
	for what, got := range map[string][2]string{
		"a flipped byte (record check)":      {opened.Tampered, "SHA-256 is not the one the record signs"},
		"a flipped byte (sealed object)":     {opened.TamperedSealed, "the content does not open"},
		"moved to another event's record":    {opened.Moved, "the content key does not open"},
		"opened with another role (binding)": {opened.OtherBinding, "the content key does not open"},
	} {
		if !strings.Contains(got[0], got[1]) {
			t.Errorf("%s: %q, want an error saying %q", what, got[0], got[1])
		}
	}
	slices.Sort(opened.Ms)
	t.Logf("browser open of a %d-byte thumbnail (%d sealed; record signature, media hash, HPKE unwrap, AES-GCM): median %.2f ms, min %.2f, max %.2f over %d",
		len(thumb), len(sealed), opened.Ms[len(opened.Ms)/2], opened.Ms[0], opened.Ms[len(opened.Ms)-1], len(opened.Ms))
	browsertest.Screenshot(t, a, "opened-thumbnail")

	// A opens a live stream.
	sealer, err := e2ee.NewSealer(ks)
	if err != nil {
		t.Fatal(err)
	}
	live, keyFrame, err := sealer.NewLive(d.id)
	if err != nil {
		t.Fatal(err)
	}
	var frames []string
	for i := range 3 {
		frames = append(frames, b64(live.SealFrame(nil, thumbFor(fmt.Sprintf("live-%d", i)))))
	}
	liveOut := js[string](t, a, `const acc = await KFE2EE.account("alice");
const f = [`+`"`+strings.Join(frames, `","`)+`"`+`].map(B);
const lv = await acc.openLive(B("`+b64(keyFrame)+`"), "`+d.id+`");
const out = [lv.streamID];
const bad = f[2].slice(); bad[20] ^= 1;
for (const x of [f[0], f[1]]) { out.push(S(await lv.openFrame(x))); }
try { await lv.openFrame(bad); out.push("altered opened"); } catch (e) { out.push(e.message); }
out.push(S(await lv.openFrame(f[2])));
try { await lv.openFrame(f[1]); out.push("replay opened"); } catch (e) { out.push(e.message); }
return out.join("|");`)
	lo := strings.Split(liveOut, "|")
	if len(lo) != 6 || lo[0] != live.StreamID() || lo[1] != b64(thumbFor("live-0")) || lo[2] != b64(thumbFor("live-1")) ||
		!strings.Contains(lo[3], "does not open") || lo[4] != b64(thumbFor("live-2")) || !strings.Contains(lo[5], "does not increase") {
		t.Errorf("live: %q", liveOut)
	}

	// B asks to join; A approves.
	b := browsertest.NewBrowserContext(t, a)
	browsertest.Do(t, b, chromedp.Navigate(page))
	waitState(t, b, "other")
	browsertest.Do(t, b, chromedp.Click(chromedp.ID("e2ee-ask")))
	waitState(t, b, "pending")
	browsertest.Screenshot(t, b, "asked")
	bID := js[string](t, b, `return (await KFE2EE.account("alice")).rec.browser.id`)
	browsertest.Do(t, a, chromedp.Navigate(page))
	waitState(t, a, "enrolled")
	browsertest.Do(t, a, chromedp.WaitVisible(chromedp.CSS(`#e2ee-requests li[data-key="`+bID+`"]`)))
	browsertest.Screenshot(t, a, "approve")
	browsertest.Do(t, a, chromedp.Click(chromedp.CSS(`#e2ee-requests button[data-approve]`)))
	waitKeys(t, a, 3)
	if ks = f.keySet(t); ks.Version != 2 || len(ks.Keys) != 3 || ks.Keys[2].ID != bID || len(f.requests) != 0 {
		t.Fatalf("after approving: version %d, %d keys, %d requests", ks.Version, len(ks.Keys), len(f.requests))
	}
	browsertest.Do(t, b, chromedp.Navigate(page))
	waitState(t, b, "enrolled")
	openAs := func(ctx context.Context, ks *e2ee.KeySet, event string) string {
		t.Helper()
		env, sealed := sealedRecord(t, d, ks, event, 9, thumb)
		return js[string](t, ctx, `try { const acc = await KFE2EE.account("alice");
return H(await KFE2EE.util.sha256(await acc.openRecordMedia(B("`+b64(env)+`"), B("`+b64(d.spki)+`"), B("`+b64(sealed)+`"), 0)));
} catch (e) { return e.message; }`)
	}
	if got := openAs(b, ks, "after-approve"); got != hex.EncodeToString(sum[:]) {
		t.Errorf("B opens what is sealed to v2: %s", got)
	}

	// C joins with the recovery secret.
	c := browsertest.NewBrowserContext(t, a)
	browsertest.Do(t, c, chromedp.Navigate(page))
	waitState(t, c, "other")
	browsertest.Do(t, c, chromedp.SendKeys(chromedp.ID("e2ee-join-secret"), strings.ToLower(secret)), chromedp.Click(chromedp.ID("e2ee-join-button")))
	waitState(t, c, "enrolled")
	browsertest.Screenshot(t, c, "joined-by-secret")
	if ks = f.keySet(t); ks.Version != 3 || len(ks.Keys) != 4 {
		t.Fatalf("after C joined: version %d, %d keys", ks.Version, len(ks.Keys))
	}
	v3 := ks
	if held := js[string](t, c, `const acc = await KFE2EE.account("alice"); return acc.holdsIdentity() + " " + acc.rec.identity.privateKey.extractable`); held != "true false" {
		t.Errorf("C's identity key: held, extractable = %s", held)
	}

	// A removes B.
	browsertest.Do(t, a, chromedp.Navigate(page))
	waitKeys(t, a, 4)
	browsertest.Do(t, a, chromedp.Click(chromedp.CSS(`#e2ee-keys button[data-remove="`+bID+`"]`)))
	waitKeys(t, a, 3)
	browsertest.Screenshot(t, a, "removed")
	if ks = f.keySet(t); ks.Version != 4 || len(ks.Keys) != 3 || slices.ContainsFunc(ks.Keys, func(k e2ee.Key) bool { return k.ID == bID }) {
		t.Fatalf("after removing B: version %d, keys %+v", ks.Version, ks.Keys)
	}
	if got := openAs(b, ks, "after-remove"); !strings.Contains(got, "not sealed to this browser's key") {
		t.Errorf("B opening what is sealed after its removal: %q", got)
	}
	if got := openAs(c, ks, "after-remove"); got != hex.EncodeToString(sum[:]) {
		t.Errorf("C opens what is sealed to v4: %s", got)
	}

	// A receiver rolling A back to version 3 (B still in it) is refused.
	f.mu.Lock()
	f.stale = v3
	f.mu.Unlock()
	browsertest.Do(t, a, chromedp.Navigate(page))
	waitState(t, a, "error")
	if msg := browsertest.Run(t, a, chromedp.Text(chromedp.ID("e2ee-message"))); !strings.Contains(msg, "older than version 4") {
		t.Errorf("a rolled back set: %q", msg)
	}
	f.mu.Lock()
	f.stale = nil
	f.mu.Unlock()

	// A mistyped secret.
	w := browsertest.NewBrowserContext(t, a)
	browsertest.Do(t, w, chromedp.Navigate(page))
	waitState(t, w, "other")
	wrong := []byte(strings.ReplaceAll(secret, "-", ""))
	wrong[3] = map[bool]byte{true: 'B', false: 'A'}[wrong[3] == 'A']
	browsertest.Do(t, w, chromedp.SendKeys(chromedp.ID("e2ee-join-secret"), string(wrong)), chromedp.Click(chromedp.ID("e2ee-join-button")))
	browsertest.Run(t, w, chromedp.Poll[bool](`!!document.getElementById("e2ee").dataset.error`, chromedp.WithPollingTimeout(20*time.Second)))
	if msg := browsertest.Run(t, w, chromedp.Text(chromedp.ID("e2ee-message"))); !strings.Contains(msg, "does not open the backup") {
		t.Errorf("a mistyped secret: %q", msg)
	}
	browsertest.Screenshot(t, w, "wrong-secret")
	if ks = f.keySet(t); ks.Version != 4 || len(f.refused) != 0 {
		t.Errorf("the receiver holds version %d; refused puts: %v", ks.Version, f.refused)
	}
}

// TestBrowserE2EEVectors: KFE2EE against our format's test vectors
// (e2ee/testdata/vectors.json, docs/e2ee.md §10): the signed key set
// verifies (and not with a flipped signature); a set signed by the vectors'
// identity without the members that may be absent reads in the browser and
// in Go, one with an unknown member is refused; the fingerprint, key ids and
// bindings are the vectors' bytes, both keys come out of DeriveKeyPair (the
// recovery key from the recovery secret, as written for the owner) and each
// opens the sealed thumbnail; a flipped byte and another sequence number do
// not open; the live key frame and its two frames open.
func TestBrowserE2EEVectors(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "e2ee", "testdata", "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Owner struct {
			IdentityPublic string `json:"identity_public"`
			Fingerprint    string
		}
		Recipients []struct {
			ID, Ikm        string
			PublicKey      string `json:"public_key"`
			RecoverySecret string `json:"recovery_secret"`
		}
		Thumbnail struct {
			PlaintextSHA256 string `json:"plaintext_sha256"`
		}
		Live struct {
			StreamID string `json:"stream_id"`
			Frames   []struct{ Plaintext string }
		}
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	hs := e2eeTestServer(t, &e2eeFake{})
	ctx := browsertest.New(t)
	openLib(t, ctx, hs.URL+"/lib")
	res := js[string](t, ctx, `const v = `+string(raw)+`, out = {};
const ks = await KFE2EE.parseSigned(v.keyset.signed);
out.identity = H(ks.identity); out.version = ks.version; out.ids = ks.keys.map(k => k.id).join(",");
const badSig = JSON.parse(v.keyset.signed); badSig.sig = (badSig.sig[0] === "A" ? "B" : "A") + badSig.sig.slice(1);
try { await KFE2EE.parseSigned(badSig); out.badSig = "verified"; } catch (e) { out.badSig = e.message; }
const idKey = await crypto.subtle.importKey("pkcs8", KFE2EE.util.concat(X("302e020100300506032b657004220420"), X(v.owner.identity_seed)), {name: "Ed25519"}, false, ["sign"]);
const r1 = v.recipients[1];
const minimal = await KFE2EE.signKeySet(idKey, new TextEncoder().encode('{"v":1,"identity":"' + KFE2EE.util.b64u(ks.identity) + '","version":2,"keys":[{"id":"' + r1.id + '","kem":32,"pub":"' + KFE2EE.util.b64u(X(r1.public_key)) + '"}]}'));
const m = await KFE2EE.parseSigned(minimal);
out.minimal = JSON.stringify(minimal); out.minimalRead = m.version + " " + m.timeMs + " " + JSON.stringify(m.keys[0].name) + " " + m.keys[0].recovery;
const extra = await KFE2EE.signKeySet(idKey, new TextEncoder().encode('{"v":1,"identity":"' + KFE2EE.util.b64u(ks.identity) + '","version":2,"keys":[{"id":"' + r1.id + '","kem":32,"pub":"' + KFE2EE.util.b64u(X(r1.public_key)) + '","extra":1}]}'));
try { await KFE2EE.parseSigned(extra); out.extra = "read"; } catch (e) { out.extra = e.message; }
const owner = await KFE2EE.fingerprint(ks.identity);
out.fingerprint = H(owner);
out.keyIDs = (await Promise.all(v.recipients.map(r => KFE2EE.keyID(32, X(r.public_key))))).join(",");
const tb = v.thumbnail.binding, lb = v.live.key_frame_binding;
out.binding = H(KFE2EE.binding({owner, device: tb.device, event: tb.event, seq: tb.seq, role: tb.role})) === tb.bytes;
out.liveBinding = H(KFE2EE.binding({owner, device: lb.device, event: lb.event, seq: lb.seq, role: lb.role})) === lb.bytes;
const rk = await KFE2EE.recoveryKeyPair(KFE2EE.formatRecoverySecret(X(v.recipients[0].recovery_secret)));
const bk = await KFE2EE.hpke.deriveKeyPair(X(v.recipients[1].ikm));
out.pubs = H(rk.publicKey) + "," + H(bk.publicKey);
const keys = [{id: v.recipients[0].id, privateKey: rk.privateKey, publicKey: rk.publicKey}, {id: v.recipients[1].id, privateKey: bk.privateKey, publicKey: bk.publicKey}];
const sealed = X(v.thumbnail.sealed), b = {owner, device: tb.device, event: tb.event, seq: tb.seq, role: tb.role};
out.opened = [];
for (const k of keys) { out.opened.push(H(await KFE2EE.util.sha256(await KFE2EE.openSealed(sealed, b, [k])))); }
const flipped = sealed.slice(); flipped[flipped.length - 1] ^= 0x80;
try { await KFE2EE.openSealed(flipped, b, keys); out.flipped = "opened"; } catch (e) { out.flipped = e.message; }
try { await KFE2EE.openSealed(sealed, Object.assign({}, b, {seq: 8}), keys); out.otherSeq = "opened"; } catch (e) { out.otherSeq = e.message; }
const lv = await KFE2EE.openLive(X(v.live.key_frame), {owner, device: v.live.device}, [keys[1]]);
out.stream = lv.streamID;
out.frames = [];
for (const f of v.live.frames) { out.frames.push(H(await lv.openFrame(X(f.frame)))); }
return JSON.stringify(out);`)
	var out struct {
		Identity, IDs, BadSig, Fingerprint, KeyIDs, Pubs, Flipped, OtherSeq, Stream string
		Minimal, MinimalRead, Extra                                                 string
		Version                                                                     int
		Binding, LiveBinding                                                        bool
		Opened, Frames                                                              []string
	}
	if err := json.Unmarshal([]byte(res), &out); err != nil {
		t.Fatal(err)
	}
	ids := v.Recipients[0].ID + "," + v.Recipients[1].ID
	if out.Identity != v.Owner.IdentityPublic || out.Version != 1 || out.IDs != ids {
		t.Errorf("the signed set: identity %s, version %d, keys %s", out.Identity, out.Version, out.IDs)
	}
	// A set without the members that may be absent reads in both.
	if mks, err := e2ee.ParseSigned([]byte(out.Minimal)); err != nil || mks.Version != 2 || out.MinimalRead != `2 0 "" false` {
		t.Errorf("a set without time_ms, name, recovery: Go %v, the browser read %q", err, out.MinimalRead)
	}
	if !strings.Contains(out.Extra, "has unknown extra") {
		t.Errorf("a set with an unknown member: %q", out.Extra)
	}
	if !strings.Contains(out.BadSig, "signature does not verify") {
		t.Errorf("a flipped key set signature: %q", out.BadSig)
	}
	if out.Fingerprint != v.Owner.Fingerprint || out.KeyIDs != ids || !out.Binding || !out.LiveBinding {
		t.Errorf("fingerprint %s, key ids %s, bindings equal: %v %v", out.Fingerprint, out.KeyIDs, out.Binding, out.LiveBinding)
	}
	if want := v.Recipients[0].PublicKey + "," + v.Recipients[1].PublicKey; out.Pubs != want {
		t.Errorf("derived public keys %s, want %s", out.Pubs, want)
	}
	if len(out.Opened) != 2 || out.Opened[0] != v.Thumbnail.PlaintextSHA256 || out.Opened[1] != v.Thumbnail.PlaintextSHA256 {
		t.Errorf("the thumbnail opened to %v, want %s", out.Opened, v.Thumbnail.PlaintextSHA256)
	}
	if !strings.Contains(out.Flipped, "does not open") || !strings.Contains(out.OtherSeq, "the content key does not open") {
		t.Errorf("a flipped byte: %q; another sequence number: %q", out.Flipped, out.OtherSeq)
	}
	if out.Stream != v.Live.StreamID || len(out.Frames) != 2 || out.Frames[0] != v.Live.Frames[0].Plaintext || out.Frames[1] != v.Live.Frames[1].Plaintext {
		t.Errorf("live: stream %s, frames %v", out.Stream, out.Frames)
	}
	showResult(t, ctx, res)
	browsertest.Screenshot(t, ctx, "vectors")
}

// crockford decodes a recovery secret as shown (Crockford base32, groups
// of five) into its 16 bytes.
func crockford(t *testing.T, s string) []byte {
	t.Helper()
	const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	var out []byte
	var acc, n uint
	for _, c := range strings.ReplaceAll(s, "-", "") {
		v := strings.IndexRune(alphabet, c)
		if v < 0 {
			t.Fatalf("recovery secret %q: %q is not Crockford base32", s, c)
		}
		acc = acc<<5 | uint(v)
		n += 5
		if n >= 8 {
			out = append(out, byte(acc>>(n-8)))
			n -= 8
			acc &= 1<<n - 1
		}
	}
	if len(out) != e2ee.RecoverySecretSize || acc != 0 {
		t.Fatalf("recovery secret %q: %d bytes, %d bits left", s, len(out), n)
	}
	return out
}

// TestE2EEScriptServed: the receiver serves e2ee.js to anyone, as code
// (text/javascript, nosniff), byte for byte the embedded file.
func TestE2EEScriptServed(t *testing.T) {
	e := newEnv(t, Options{})
	code, body, h := e.get("/static/e2ee.js")
	if code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/javascript") || h.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("/static/e2ee.js: %d %q %q", code, h.Get("Content-Type"), h.Get("X-Content-Type-Options"))
	}
	if !bytes.Equal(body, e2eeJS) || !bytes.Contains(body, []byte("window.KFE2EE")) {
		t.Errorf("/static/e2ee.js: %d bytes, not the embedded script", len(body))
	}
}
