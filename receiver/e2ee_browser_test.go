package receiver

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/sha3"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/internal/browsertest"
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
	refused  []string // why each refused PUT was refused
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

// jsErr runs body and returns the message of what it threw, "" if nothing.
func jsErr(t *testing.T, ctx context.Context, body string) string {
	t.Helper()
	return js[string](t, ctx, "try {\n"+body+"\n} catch (e) { return String(e && e.message || e) || \"(empty error)\" }\nreturn \"\"")
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
// (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base mode, Go's
// own test vector with the RFC's first two encryptions): DeriveKeyPair(ikmR)
// gives pkRm, a non-extractable key; the recipient opens the RFC's
// ciphertexts; the sender with DeriveKeyPair(ikmE) gives the vector's enc,
// and its 1000 seals of SHAKE128-drawn inputs (the vector's
// encryptions_accumulated, as crypto/hpke's test draws them) hash to the
// vector's value, each opened again by the recipient.
func TestBrowserE2EEHPKE(t *testing.T) {
	var v struct {
		Info, IkmE, IkmR, SkRm, PkRm, Enc string
		AccEncryptions                    string `json:"encryptions_accumulated"`
		Encryptions                       []struct {
			Seq          int
			Aad, Pt, Ct string
		}
	}
	raw, err := os.ReadFile("testdata/rfc9180-a1.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	dec := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// The fixture's ciphertexts open with Go's crypto/hpke first.
	kem := hpke.DHKEM(ecdh.X25519())
	sk, err := kem.NewPrivateKey(dec(v.SkRm))
	if err != nil {
		t.Fatal(err)
	}
	goR, err := hpke.NewRecipient(dec(v.Enc), sk, hpke.HKDFSHA256(), hpke.AES128GCM(), dec(v.Info))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range v.Encryptions {
		if pt, err := goR.Open(dec(e.Aad), dec(e.Ct)); err != nil || !bytes.Equal(pt, dec(e.Pt)) {
			t.Fatalf("fixture encryption %d does not open with crypto/hpke: %v", e.Seq, err)
		}
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
		"bad-nondeterministic-int": true, "bad-version": true,
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
	browsertest.Screenshot(t, ctx, "records")
}
