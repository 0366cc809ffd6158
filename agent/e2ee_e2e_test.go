package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"image/jpeg"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/internal/claimcode"
	"github.com/keyframe-cam/keyframe/internal/livestream"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/receiver"
)

// keysetServer answers the camera's GET /v1/e2ee/{device}/keyset as
// docs/e2ee.md §5 says (a 401 with a nonce, then the set for a request
// signed over it: livestream's proof, purpose "keyset"), serving whatever
// the test sets in serve (nil: 404), and passes every other request to
// next, keeping a copy of every record uploaded.
type keysetServer struct {
	device string
	spki   []byte
	next   http.Handler

	serve   atomic.Pointer[[]byte]
	fetched atomic.Int64 // sets (or 404s) served to a proven request

	mu      sync.Mutex
	nonces  map[string]bool
	uploads [][]byte
}

func (k *keysetServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != livestream.KeySetPath(k.device) {
		if r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/v1/events/") {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			k.mu.Lock()
			k.uploads = append(k.uploads, body)
			k.mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		k.next.ServeHTTP(w, r)
		return
	}
	nonce := r.Header.Get(livestream.NonceHeader)
	sig, _ := base64.RawURLEncoding.DecodeString(r.Header.Get(livestream.SignatureHeader))
	raw, _ := base64.RawURLEncoding.DecodeString(nonce)
	k.mu.Lock()
	fresh := k.nonces[nonce]
	delete(k.nonces, nonce)
	k.mu.Unlock()
	if _, err := claimcode.Verify(k.spki, livestream.Message(livestream.PurposeKeySet, k.device, raw), sig); !fresh || err != nil {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		n := base64.RawURLEncoding.EncodeToString(b)
		k.mu.Lock()
		k.nonces[n] = true
		k.mu.Unlock()
		w.Header().Set(livestream.NonceHeader, n)
		http.Error(w, "sign the nonce", http.StatusUnauthorized)
		return
	}
	k.fetched.Add(1)
	set := k.serve.Load()
	if set == nil {
		http.NotFound(w, r)
		return
	}
	_, _ = w.Write(*set)
}

func (k *keysetServer) records() [][]byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([][]byte(nil), k.uploads...)
}

// TestE2EEEndToEnd runs the agent with e2ee against the real receiver:
// without a key set its records carry no pictures; once the receiver gives
// the owner's set, thumbnails and clip segments arrive sealed, the owner
// opens them and the frames match the segment records' hashes; a set of
// another identity and an older set of the owner's are refused, logged,
// and sealing goes on to the pinned set; a tampered sealed object fails
// the receiver's check and opening; the receiver's data directory holds no
// JPEG.
func TestE2EEEndToEnd(t *testing.T) {
	dir := t.TempDir()
	owner, other := newTestOwner(t), newTestOwner(t)
	v1 := keySet(t, owner, 1)
	if _, err := owner.AddKey(e2ee.KEMX25519, "second browser", false); err != nil {
		t.Fatal(err)
	}
	v2 := keySet(t, owner, 2) // v1's keys and one more
	otherSet := keySet(t, other, 9)

	cfg := testConfig(dir, 320, 240)
	cfg.E2EEOwner = ownerHex(owner)
	cfg.E2EEKeysetPoll = 20 * time.Millisecond // below the configurable 5 s: the test's own pace
	key, device, _, err := Identity(&cfg, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	closeKey(key)
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := board.PublicKeyPEM(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	rdir := filepath.Join(dir, "receiver")
	pairDevice(t, rdir, pub, device)
	srv, lines := openReceiver(t, rdir, quietLogger())
	ks := &keysetServer{device: device, spki: spki, next: srv.Handler(), nonces: map[string]bool{}}
	hs := httptest.NewServer(ks)
	defer hs.Close()
	cfg.UploadURL = hs.URL

	var logs lockedBuffer
	a, err := New(cfg, Deps{Logger: testLogger(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for !ok() {
			select {
			case err := <-done:
				t.Fatalf("agent stopped waiting for %s: %v\n%s", what, err, logs.String())
			case <-ctx.Done():
				t.Fatalf("no %s within the deadline\n%s", what, logs.String())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	ends := func() int { return lines.count("kind=end") }

	// No key set at the receiver: an event's records go without pictures.
	waitFor("an event without a key set", func() bool { return ends() >= 1 })
	// The owner's set.
	good := v2.Signed()
	ks.serve.Store(&good)
	waitFor("the key set accepted", func() bool { return strings.Contains(logs.String(), "key set accepted") })
	n := ends()
	waitFor("two events after the set", func() bool { return ends() >= n+2 })
	// The receiver substitutes another identity's set, then rolls back to
	// the owner's older one.
	bad := otherSet.Signed()
	ks.serve.Store(&bad)
	waitFor("another identity's set refused", func() bool { return strings.Contains(logs.String(), "another identity") })
	old := v1.Signed()
	ks.serve.Store(&old)
	waitFor("the older set refused", func() bool { return strings.Contains(logs.String(), "not newer") })
	n = ends()
	waitFor("an event after the refusals", func() bool { return ends() >= n+1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("agent: %v", err)
	}
	if c := strings.Count(logs.String(), "records are signed and sent without pictures"); c != 1 {
		t.Errorf("\"without pictures\" logged %d times, want once", c)
	}

	// Every record uploaded: pictures only sealed, to v2's keys, opening
	// to what the records say.
	fp := owner.Fingerprint()
	seen := map[uint64]bool{}
	var thumbs, segments, bare int
	var sealedThumb []byte // one upload with a sealed thumbnail, to tamper with
	for _, data := range ks.records() {
		b, err := provenance.UnmarshalBundle(data)
		if err != nil {
			t.Fatal(err)
		}
		v, err := provenance.Verify(b.Envelope, b.Media, key.Public())
		if err != nil {
			t.Fatal(err)
		}
		p := v.Payload
		if seen[p.Seq] {
			continue // sent again
		}
		seen[p.Seq] = true
		if len(p.Media) == 0 {
			if p.Kind == provenance.KindSegment {
				t.Errorf("segment record %d without media", p.Seq)
			}
			bare++
			continue
		}
		if len(p.Media) != 1 || p.Media[0].Type != e2ee.SealedType {
			t.Fatalf("record %d (%s) carries %+v: not sealed", p.Seq, p.Kind, p.Media)
		}
		h, err := e2ee.ParseHeader(b.Media[0])
		if err != nil {
			t.Fatal(err)
		}
		if len(h.Recipients) != len(v2.Keys) {
			t.Errorf("record %d sealed to %d keys, the pinned set has %d", p.Seq, len(h.Recipients), len(v2.Keys))
		}
		for _, r := range h.Recipients {
			if owner.Key(r.ID()) == nil {
				t.Errorf("record %d sealed to key %s, not the owner's", p.Seq, r.ID())
			}
		}
		role := p.Media[0].Role
		plain, err := owner.Open(b.Media[0], e2ee.Binding{Owner: fp, Device: device, Event: p.Event, Seq: p.Seq, Role: role})
		if err != nil {
			t.Fatalf("record %d (%s): the owner cannot open it: %v", p.Seq, p.Kind, err)
		}
		switch p.Kind {
		case provenance.KindSegment:
			segments++
			off := 0
			for i, f := range p.Segment.Frames {
				frame := plain[off : off+int(f.Size)]
				if sum := sha256.Sum256(frame); !bytes.Equal(sum[:], f.SHA256) {
					t.Fatalf("record %d frame %d does not match its hash", p.Seq, i)
				}
				off += int(f.Size)
			}
			if off != len(plain) {
				t.Fatalf("record %d: frames of %d bytes, opened %d", p.Seq, off, len(plain))
			}
		default:
			thumbs++
			if _, err := jpeg.DecodeConfig(bytes.NewReader(plain)); err != nil {
				t.Fatalf("record %d: the opened thumbnail is no JPEG: %v", p.Seq, err)
			}
			sealedThumb = data
		}
		if _, err := other.Open(b.Media[0], e2ee.Binding{Owner: fp, Device: device, Event: p.Event, Seq: p.Seq, Role: role}); err == nil {
			t.Fatalf("record %d opened by another identity's keys", p.Seq)
		}
		// The binding: another seq does not open.
		if _, err := owner.Open(b.Media[0], e2ee.Binding{Owner: fp, Device: device, Event: p.Event, Seq: p.Seq + 1, Role: role}); err == nil {
			t.Fatalf("record %d opened with another seq's binding", p.Seq)
		}
	}
	if bare == 0 || thumbs == 0 || segments == 0 {
		t.Fatalf("%d records without pictures, %d sealed thumbnails, %d sealed segments: want some of each", bare, thumbs, segments)
	}
	t.Logf("%d records without pictures, %d sealed thumbnails, %d sealed segments", bare, thumbs, segments)

	// A tampered sealed thumbnail: the receiver refuses it, the owner
	// cannot open it.
	b, _ := provenance.UnmarshalBundle(sealedThumb)
	v, _ := provenance.Verify(b.Envelope, b.Media, nil)
	b.Media[0][len(b.Media[0])-1] ^= 1
	if _, err := owner.Open(b.Media[0], e2ee.Binding{Owner: fp, Device: device, Event: v.Payload.Event, Seq: v.Payload.Seq, Role: provenance.RoleThumbnail}); err == nil {
		t.Error("a tampered sealed thumbnail opened")
	}
	tampered, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPut, hs.URL+"/v1/events/"+v.Payload.Event+"/"+v.Payload.Kind, bytes.NewReader(tampered))
	req.Header.Set("Content-Type", provenance.BundleContentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 {
		t.Errorf("the receiver answered %d to a tampered sealed thumbnail", resp.StatusCode)
	}

	// The receiver stored and checks ciphertext only.
	rep, err := receiver.CheckStore(rdir)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("stored events do not verify offline: %+v", rep)
	}
	noJPEGStored(t, filepath.Join(rdir, "events", device))
}

// noJPEGStored fails if any stored media file in dir starts as a JPEG.
func noJPEGStored(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	media := 0
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".cose") {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		head := make([]byte, 3)
		_, err = io.ReadFull(f, head)
		f.Close()
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatal(err)
		}
		if bytes.Equal(head, []byte{0xff, 0xd8, 0xff}) {
			t.Errorf("%s is a JPEG in the clear", e.Name())
		}
		media++
	}
	if media == 0 {
		t.Fatalf("no media stored in %s", dir)
	}
}

// TestE2EERealReceiverRoute: the camera (e2ee.owner = first) fetches its
// owner's key set from the real receiver's route with its live proof, pins
// the identity, stores the set and seals: the receiver stores no JPEG.
func TestE2EERealReceiverRoute(t *testing.T) {
	dir := t.TempDir()
	owner := newTestOwner(t)
	cfg := testConfig(dir, 320, 240)
	cfg.E2EEOwner = e2eeFirst
	key, device, _, err := Identity(&cfg, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	closeKey(key)
	pub, err := board.PublicKeyPEM(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	rdir := filepath.Join(dir, "receiver")
	pairDevice(t, rdir, pub, device)
	if err := receiver.PutKeySet(rdir, "alice", keySet(t, owner, 1).Signed()); err != nil {
		t.Fatal(err)
	}
	srv, lines := openReceiver(t, rdir, quietLogger())
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	cfg.UploadURL = hs.URL
	var logs lockedBuffer
	a, err := New(cfg, Deps{Logger: testLogger(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for !ok() {
			select {
			case err := <-done:
				t.Fatalf("agent stopped waiting for %s: %v\n%s", what, err, logs.String())
			case <-ctx.Done():
				t.Fatalf("no %s within the deadline\n%s", what, logs.String())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	waitFor("key set accepted", func() bool { return strings.Contains(logs.String(), "key set accepted") })
	n := lines.count("kind=end")
	waitFor("an event after the key set", func() bool { return lines.count("kind=end") > n })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ks, fp, err := loadKeyset(KeysetPath(&cfg))
	if err != nil || fp != owner.Fingerprint() || ks.Owner() != fp {
		t.Fatalf("stored key set: %v (owner %x, want %x)", err, fp, owner.Fingerprint())
	}
	noJPEGStored(t, filepath.Join(rdir, "events", device))
}
