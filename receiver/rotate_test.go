package receiver

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/keyframe-cam/keyframe/provenance"
)

// rotatePayload is d's rotate record at seq, chained to prev.
func (d *testDevice) rotatePayload(next *testDevice, seq uint64, prev []byte) *provenance.Payload {
	return &provenance.Payload{
		Device:   d.id,
		Event:    "rotate-" + next.id,
		Seq:      seq,
		Boot:     "boot-1",
		Prev:     prev,
		Time:     provenance.Time{UnixMs: 1_764_000_000_000 + int64(seq)*1000, BootMs: seq * 1000, Clock: provenance.ClockSynced},
		KeyStore: "file",
	}
}

// rotation is an upload of a rotate record.
type rotation struct {
	event string
	body  []byte
	env   []byte
}

func (r *rotation) path() string { return "/v1/events/" + r.event + "/" + provenance.KindRotate }

// rotate makes d's rotate record handing over to next, with the library.
func (d *testDevice) rotate(t testing.TB, next *testDevice, seq uint64, prev []byte, chain [][]byte) *rotation {
	t.Helper()
	b, err := provenance.Rotate(rand.Reader, d.key, next.key, d.rotatePayload(next, seq, prev), chain)
	if err != nil {
		t.Fatal(err)
	}
	body, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return &rotation{event: "rotate-" + next.id, body: body, env: b.Envelope}
}

// signedBy builds a COSE_Sign1 the way provenance does, for records the
// library would refuse to make (a rotate record with a wrong proof).
func signedBy(t testing.TB, key *ecdsa.PrivateKey, contentType string, payload []byte) []byte {
	t.Helper()
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	id, err := provenance.DeviceID(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	signer, err := cose.NewSigner(cose.AlgorithmES256, key)
	if err != nil {
		t.Fatal(err)
	}
	msg := cose.NewSign1Message()
	msg.Headers.Protected.SetAlgorithm(cose.AlgorithmES256)
	msg.Headers.Protected[cose.HeaderLabelContentType] = contentType
	msg.Headers.Protected[cose.HeaderLabelKeyID] = []byte(id)
	msg.Headers.Protected[provenance.HeaderLabelSPKI] = spki
	msg.Payload = payload
	if err := msg.Sign(rand.Reader, nil, signer); err != nil {
		t.Fatal(err)
	}
	env, err := msg.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// handRotation is d's rotate record to next whose proof is signed by
// proofKey (next's key for a right proof) and, if sendProof is false, sent
// without the proof; listProof false leaves it out of the payload too.
func (d *testDevice) handRotation(t testing.TB, next *testDevice, seq uint64, prev []byte, proofKey *ecdsa.PrivateKey, listProof, sendProof bool) *rotation {
	t.Helper()
	det, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	statement, err := det.Marshal(map[string]any{"v": 1, "from": d.spki, "event": "rotate-" + next.id, "seq": seq})
	if err != nil {
		t.Fatal(err)
	}
	proof := signedBy(t, proofKey, provenance.ProofContentType, statement)
	p := d.rotatePayload(next, seq, prev)
	p.Version, p.Kind, p.NextKey = provenance.Version, provenance.KindRotate, next.spki
	p.Media = []provenance.Media{}
	if listProof {
		p.Media = append(p.Media, provenance.NewMedia(provenance.RoleRotationProof, provenance.ProofMediaType, proof))
	}
	payload, err := provenance.MarshalPayload(p)
	if err != nil {
		t.Fatal(err)
	}
	env := signedBy(t, d.key, provenance.ContentType, payload)
	var media [][]byte
	if sendProof {
		media = [][]byte{proof}
	}
	return &rotation{event: p.Event, body: bundle(t, env, media...), env: env}
}

func TestRotationEndToEnd(t *testing.T) {
	e := newEnv(t, Options{})
	old, next := newDevice(t), newDevice(t)
	e.enroll(old, "alice")
	r1 := old.record(t, "ev-1", provenance.KindStart, 1)
	e.mustUpload(r1, http.StatusCreated)
	r2 := old.record(t, "ev-1", provenance.KindEnd, 2)
	e.mustUpload(r2, http.StatusCreated)

	h2 := provenance.HashEnvelope(r2.env)
	rot := old.rotate(t, next, 3, h2[:], nil)
	if code, reply := e.put(rot.path(), rot.body); code != http.StatusCreated {
		t.Fatalf("rotate: %d %q", code, reply)
	}
	reg := e.registry()
	o, n := reg.Devices[old.id], reg.Devices[next.id]
	if o == nil || o.RotatedTo != next.id || o.RotatedSeq != 3 || reg.ownerAt(old.id, 3) != "alice" || reg.ownerAt(old.id, 4) != "" {
		t.Fatalf("old device after rotation: %+v", o)
	}
	if n == nil || !bytes.Equal(n.SPKI, next.spki) || reg.owner(next.id) != "alice" || n.Via != ViaRotation+old.id || n.Revoked {
		t.Fatalf("new device after rotation: %+v", n)
	}
	lines := e.lines.lines()
	if len(lines) != 3 || !strings.Contains(lines[2], "kind=rotate") || !strings.Contains(lines[2], "next_device="+next.id) {
		t.Errorf("event lines %q", lines)
	}

	// The new key continues the chain and its records are the owner's.
	hr := provenance.HashEnvelope(rot.env)
	p4 := next.payload("ev-2", provenance.KindStart, 4, thumbFor("ev-2"))
	p4.Prev = hr[:]
	env4 := next.sign(t, p4)
	r4 := &record{event: "ev-2", kind: provenance.KindStart, seq: 4, thumb: thumbFor("ev-2"), env: env4, body: bundle(t, env4, thumbFor("ev-2"))}
	e.mustUpload(r4, http.StatusCreated)
	code, page, _ := e.getAs("alice", "/")
	if code != http.StatusOK || !bytes.Contains(page, []byte(next.id)) || !bytes.Contains(page, []byte(old.id)) {
		t.Errorf("alice's page does not show the old and the new device's events (%d)", code)
	}
	if code, img, _ := e.getAs("alice", mediaURL(next, r4)); code != http.StatusOK || !bytes.Equal(img, r4.thumb) {
		t.Errorf("alice cannot see the new device's thumbnail: %d", code)
	}

	// The old key is retired above its rotate record.
	code, reply := e.upload(old.record(t, "ev-3", provenance.KindStart, 5))
	if code != http.StatusForbidden || !strings.Contains(reply, "key retired") || !strings.Contains(reply, next.id) {
		t.Fatalf("old key after rotation: %d %q, want 403 key retired", code, reply)
	}
	if n := e.srv.Stats().Rejected[ReasonRotated]; n != 1 {
		t.Errorf("key_rotated count %d", n)
	}
	// Its earlier records are still idempotent re-sends.
	e.mustUpload(r2, http.StatusOK)

	// Re-sending the rotation is idempotent and changes nothing.
	before := registryBytes(t, e.dir)
	if code, reply := e.put(rot.path(), rot.body); code != http.StatusOK {
		t.Fatalf("re-sent rotate: %d %q", code, reply)
	}
	if after := registryBytes(t, e.dir); !bytes.Equal(before, after) {
		t.Errorf("re-sent rotate changed the registry:\n%s\n%s", before, after)
	}
	// Re-pairing the new device is the registry's business and sticks.
	if err := Pair(e.dir, next.id, "bob"); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.put(rot.path(), rot.body); code != http.StatusOK {
		t.Fatalf("re-sent rotate after re-pairing: %d", code)
	}
	if got := e.registry().owner(next.id); got != "bob" {
		t.Errorf("owner %q after re-send, want bob (re-pairing must stick)", got)
	}

	rep, err := CheckStore(e.dir)
	if err != nil || !rep.OK() || rep.Verified != 4 {
		t.Errorf("CheckStore: %+v %v", rep, err)
	}
	// The rotation survives a restart (index and registry on disk).
	e.close()
	e.open(Options{})
	code, _ = e.upload(old.record(t, "ev-4", provenance.KindStart, 6))
	if code != http.StatusForbidden {
		t.Errorf("old key after restart: %d", code)
	}
	p5 := next.payload("ev-5", provenance.KindStart, 5, thumbFor("ev-5"))
	env5 := next.sign(t, p5)
	e.mustUpload(&record{event: "ev-5", kind: provenance.KindStart, seq: 5, env: env5, body: bundle(t, env5, thumbFor("ev-5"))}, http.StatusCreated)
}

func TestRotationRefused(t *testing.T) {
	stranger := newDevice(t)
	cases := []struct {
		name   string
		make   func(t *testing.T, old, next *testDevice) *rotation
		setup  func(t *testing.T, e *testEnv, old, next *testDevice)
		status int
		reason string
	}{
		{"control", func(t *testing.T, old, next *testDevice) *rotation {
			return old.handRotation(t, next, 2, nil, next.key, true, true)
		}, nil, http.StatusCreated, ""},
		{"proof not sent", func(t *testing.T, old, next *testDevice) *rotation {
			return old.handRotation(t, next, 2, nil, next.key, true, false)
		}, nil, http.StatusUnprocessableEntity, ReasonMedia},
		{"no proof at all", func(t *testing.T, old, next *testDevice) *rotation {
			return old.handRotation(t, next, 2, nil, next.key, false, false)
		}, nil, http.StatusBadRequest, ReasonMalformed},
		{"proof by another key", func(t *testing.T, old, next *testDevice) *rotation {
			return old.handRotation(t, next, 2, nil, stranger.key, true, true)
		}, nil, http.StatusForbidden, ReasonSignature},
		{"old device not enrolled", func(t *testing.T, _, next *testDevice) *rotation {
			return stranger.rotate(t, next, 2, nil, nil)
		}, nil, http.StatusForbidden, ReasonNotEnrolled},
		{"old device revoked", func(t *testing.T, old, next *testDevice) *rotation {
			return old.rotate(t, next, 2, nil, nil)
		}, func(t *testing.T, e *testEnv, old, _ *testDevice) {
			if err := Revoke(e.dir, old.id); err != nil {
				t.Fatal(err)
			}
		}, http.StatusForbidden, ReasonRevoked},
		{"new key revoked", func(t *testing.T, old, next *testDevice) *rotation {
			return old.rotate(t, next, 2, nil, nil)
		}, func(t *testing.T, e *testEnv, _, next *testDevice) {
			if err := Revoke(e.dir, next.id); err != nil {
				t.Fatal(err)
			}
		}, http.StatusForbidden, ReasonRevoked},
		{"replayed seq", func(t *testing.T, old, next *testDevice) *rotation {
			return old.rotate(t, next, 1, nil, nil)
		}, nil, http.StatusConflict, ReasonReplay},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			old, next := newDevice(t), newDevice(t)
			e.enroll(old, "alice")
			e.mustUpload(old.record(t, "ev-1", provenance.KindStart, 1), http.StatusCreated)
			if c.setup != nil {
				c.setup(t, e, old, next)
			}
			rot := c.make(t, old, next)
			code, reply := e.put(rot.path(), rot.body)
			if code != c.status {
				t.Fatalf("got %d %q, want %d", code, reply, c.status)
			}
			if c.reason == "" {
				return
			}
			if n := e.srv.Stats().Rejected[c.reason]; n != 1 {
				t.Errorf("%s count %d (%v)", c.reason, n, e.srv.Stats().Rejected)
			}
			reg := e.registry()
			if o := reg.Devices[old.id]; o != nil && o.RotatedTo != "" {
				t.Errorf("refused rotation retired the old key: %+v", o)
			}
			if n := reg.Devices[next.id]; n != nil && !n.Revoked {
				t.Errorf("refused rotation enrolled the new key: %+v", n)
			}
			// The old key still works (unless it was revoked).
			if reg.Devices[old.id] != nil && !reg.Devices[old.id].Revoked {
				e.mustUpload(old.record(t, "ev-9", provenance.KindStart, 9), http.StatusCreated)
			}
		})
	}
}

// A device admitted by a fleet CA rotates with its chain; the new key is then
// enrolled by the rotation and needs no certificate.
func TestRotationOfFleetDevice(t *testing.T) {
	e := newEnv(t, Options{})
	f := newFleetPKI(t, "fleet")
	e.trust(f.root)
	old, next := newDevice(t), newDevice(t)
	chain := f.chainFor(t, old, leafOpts{})
	r1 := old.recordWithChain(t, "ev-1", provenance.KindStart, 1, chain)
	e.mustUpload(r1, http.StatusCreated)
	if err := Pair(e.dir, old.id, "carol"); err != nil {
		t.Fatal(err)
	}
	// Without its chain the fleet device cannot rotate.
	if code, _ := e.put(old.rotate(t, next, 2, nil, nil).path(), old.rotate(t, next, 2, nil, nil).body); code != http.StatusForbidden {
		t.Fatalf("fleet device's rotate without chain: %d", code)
	}
	rot := old.rotate(t, next, 2, nil, chain)
	if code, reply := e.put(rot.path(), rot.body); code != http.StatusCreated {
		t.Fatalf("rotate: %d %q", code, reply)
	}
	if got := e.registry().Devices[next.id]; got == nil || e.registry().owner(next.id) != "carol" || got.Via != ViaRotation+old.id {
		t.Fatalf("new device %+v", got)
	}
	e.mustUpload(next.record(t, "ev-2", provenance.KindStart, 3), http.StatusCreated)
}

// A fleet device never seen before may send a rotate record as its first
// upload: it is admitted by its chain and rotated in one registry update.
func TestRotationAsFirstFleetUpload(t *testing.T) {
	e := newEnv(t, Options{})
	f := newFleetPKI(t, "fleet")
	fp := e.trust(f.root)
	old, next := newDevice(t), newDevice(t)
	rot := old.rotate(t, next, 7, nil, f.chainFor(t, old, leafOpts{}))
	if code, reply := e.put(rot.path(), rot.body); code != http.StatusCreated {
		t.Fatalf("rotate: %d %q", code, reply)
	}
	reg := e.registry()
	if o := reg.Devices[old.id]; o == nil || o.Via != ViaFleetCA+fp || o.RotatedTo != next.id {
		t.Fatalf("old device %+v", o)
	}
	if n := reg.Devices[next.id]; n == nil || len(n.Pairings) != 0 {
		t.Fatalf("new device %+v", n)
	}
}
