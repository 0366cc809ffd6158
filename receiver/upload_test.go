package receiver

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/veraison/go-cose"

	"github.com/keyframe-cam/keyframe/provenance"
)

func TestUploadStoresAndReportsVerified(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	r := d.record(t, "ev-1", provenance.KindStart, 1)

	e.mustUpload(r, http.StatusCreated)

	lines := e.lines.lines()
	if len(lines) != 1 {
		t.Fatalf("event lines %q, want one", lines)
	}
	for _, want := range []string{"verified", "event=ev-1", "kind=start", "device=" + d.id, "seq=1", "keystore=file", "thumbnail=" + itoa(len(r.thumb)) + "B"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("line %q lacks %q", lines[0], want)
		}
	}
	env, err := os.ReadFile(filepath.Join(e.dir, "events", d.id, "ev-1-start.cose"))
	if err != nil || !bytes.Equal(env, r.env) {
		t.Errorf("stored envelope differs from the one sent (err %v)", err)
	}
	thumb, err := os.ReadFile(filepath.Join(e.dir, "events", d.id, "ev-1-start.0.jpg"))
	if err != nil || !bytes.Equal(thumb, r.thumb) {
		t.Errorf("stored thumbnail differs from the one sent (err %v)", err)
	}
	idx, err := os.ReadFile(filepath.Join(e.dir, indexFile))
	if err != nil {
		t.Fatal(err)
	}
	var ie indexEntry
	if err := json.Unmarshal(bytes.TrimSpace(idx), &ie); err != nil {
		t.Fatalf("index is not one JSON line: %v\n%s", err, idx)
	}
	if ie.Device != d.id || ie.Event != "ev-1" || ie.Seq != 1 || ie.KeyStore != "file" || !ie.ReceivedAt.Equal(testNow) ||
		len(ie.Media) != 1 || ie.Media[0].Size != uint64(len(r.thumb)) || ie.Media[0].Type != "image/jpeg" {
		t.Errorf("index line %+v does not describe the record", ie)
	}
	if st := e.srv.Stats(); st.Stored != 1 || st.Records != 1 {
		t.Errorf("stats %+v, want 1 stored", st)
	}
}

func TestIdenticalResendIsIdempotent(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "")
	r := d.record(t, "ev-1", provenance.KindStart, 1)
	e.mustUpload(r, http.StatusCreated)
	e.mustUpload(r, http.StatusOK)
	e.mustUpload(r, http.StatusOK)

	if n := len(e.lines.lines()); n != 1 {
		t.Errorf("%d verified lines for one record sent three times, want 1", n)
	}
	idx, err := os.ReadFile(filepath.Join(e.dir, indexFile))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(idx, []byte("\n")); n != 1 {
		t.Errorf("index has %d lines, want 1", n)
	}
	if st := e.srv.Stats(); st.Stored != 1 || st.Duplicates != 2 {
		t.Errorf("stats %+v, want 1 stored and 2 duplicates", st)
	}
}

func TestUnenrolledDeviceRefused(t *testing.T) {
	e := newEnv(t, Options{})
	enrolled, stranger := newDevice(t), newDevice(t)
	e.enroll(enrolled, "alice")
	code, reply := e.upload(stranger.record(t, "ev-1", provenance.KindStart, 1))
	if code != http.StatusForbidden || !strings.Contains(reply, "device not enrolled") {
		t.Fatalf("unenrolled signer: %d %q, want 403 device not enrolled", code, reply)
	}
	if st := e.srv.Stats(); st.Rejected[ReasonNotEnrolled] != 1 || st.Stored != 0 {
		t.Errorf("stats %+v", st)
	}
	if len(e.lines.lines()) != 0 {
		t.Errorf("a refused record produced a verified line")
	}
	if !strings.Contains(e.logs.buf.String(), ReasonNotEnrolled) {
		t.Errorf("rejection not logged with its reason:\n%s", e.logs.buf.String())
	}
}

func TestRevokedDeviceRefused(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	e.mustUpload(d.record(t, "ev-1", provenance.KindStart, 1), http.StatusCreated)
	if err := Revoke(e.dir, d.id); err != nil {
		t.Fatal(err)
	}
	code, reply := e.upload(d.record(t, "ev-2", provenance.KindStart, 2))
	if code != http.StatusForbidden || !strings.Contains(reply, "revoked") {
		t.Fatalf("revoked device: %d %q, want 403", code, reply)
	}
	if _, err := Enroll(e.dir, d.pem); err == nil {
		t.Error("a revoked key was enrolled again")
	}
}

// TestEnrolledKeyMustMatch edits the registry so that a device ID maps to
// another key, as a corrupted or tampered registry would: the signer's own
// valid signature must not be accepted under that enrolment.
func TestEnrolledKeyMustMatch(t *testing.T) {
	e := newEnv(t, Options{})
	a, b := newDevice(t), newDevice(t)
	reg := &registry{Version: 1, Devices: map[string]*registration{a.id: {SPKI: b.spki, Owner: "alice"}}}
	data, err := json.Marshal(reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, registryFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
	code, reply := e.upload(a.record(t, "ev-1", provenance.KindStart, 1))
	if code != http.StatusForbidden || !strings.Contains(reply, "key does not match enrolment") {
		t.Fatalf("got %d %q, want 403 key does not match enrolment", code, reply)
	}
	if n := e.srv.Stats().Rejected[ReasonKeyMismatch]; n != 1 {
		t.Errorf("key_mismatch count %d, want 1", n)
	}
}

// TestForgedDevice builds envelopes by hand that claim device A while being
// signed by B; both A and B are enrolled, so only the signature binding can
// refuse them.
func TestForgedDevice(t *testing.T) {
	e := newEnv(t, Options{})
	a, b := newDevice(t), newDevice(t)
	e.enroll(a, "alice")
	e.enroll(b, "bob")
	thumb := thumbFor("forged")

	t.Run("payload names another device", func(t *testing.T) {
		p := a.payload("ev-x", provenance.KindStart, 1, thumb) // Device: A
		p.Version = provenance.Version
		raw, err := provenance.MarshalPayload(p)
		if err != nil {
			t.Fatal(err)
		}
		msg := cose.NewSign1Message()
		msg.Headers.Protected.SetAlgorithm(cose.AlgorithmES256)
		msg.Headers.Protected[cose.HeaderLabelContentType] = provenance.ContentType
		msg.Headers.Protected[cose.HeaderLabelKeyID] = []byte(b.id)
		msg.Headers.Protected[provenance.HeaderLabelSPKI] = b.spki
		msg.Payload = raw
		signer, err := cose.NewSigner(cose.AlgorithmES256, b.key)
		if err != nil {
			t.Fatal(err)
		}
		if err := msg.Sign(rand.Reader, nil, signer); err != nil {
			t.Fatal(err)
		}
		env, err := msg.MarshalCBOR()
		if err != nil {
			t.Fatal(err)
		}
		code, reply := e.put("/v1/events/ev-x/start", bundle(t, env, thumb))
		if code != http.StatusForbidden {
			t.Fatalf("payload device A signed by B: %d %q, want 403", code, reply)
		}
		if n := e.srv.Stats().Rejected[ReasonDeviceID]; n != 1 {
			t.Errorf("device_id count %d, want 1", n)
		}
	})
	t.Run("key header swapped", func(t *testing.T) {
		// B signs its own record; the header is then edited to carry A's
		// key and ID, so the payload's device (B) would no longer be the
		// fingerprint either way and the signature is not A's.
		env := b.sign(t, b.payload("ev-y", provenance.KindStart, 1, thumb))
		var m cose.Sign1Message
		if err := m.UnmarshalCBOR(env); err != nil {
			t.Fatal(err)
		}
		m.Headers.RawProtected = nil
		m.Headers.Protected[provenance.HeaderLabelSPKI] = a.spki
		m.Headers.Protected[cose.HeaderLabelKeyID] = []byte(a.id)
		forged, err := m.MarshalCBOR()
		if err != nil {
			t.Fatal(err)
		}
		code, reply := e.put("/v1/events/ev-y/start", bundle(t, forged, thumb))
		if code != http.StatusForbidden {
			t.Fatalf("swapped key header: %d %q, want 403", code, reply)
		}
		if n := e.srv.Stats().Rejected[ReasonSignature]; n != 1 {
			t.Errorf("bad_signature count %d, want 1", n)
		}
	})
	if st := e.srv.Stats(); st.Stored != 0 || len(e.lines.lines()) != 0 {
		t.Errorf("a forged record was stored: %+v", st)
	}
}

func TestReplayRefused(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	e.mustUpload(d.record(t, "ev-1", provenance.KindStart, 5), http.StatusCreated)

	for _, tc := range []struct {
		name  string
		event string
		seq   uint64
	}{
		{"lower seq, new event", "ev-2", 3},
		{"same seq, new event", "ev-3", 5},
		{"same event and kind, other content", "ev-1", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, reply := e.upload(d.record(t, tc.event, provenance.KindStart, tc.seq))
			want := "replay: seq " + itoa(int(tc.seq)) + " ≤ 5"
			if code != http.StatusConflict || !strings.Contains(reply, want) {
				t.Fatalf("got %d %q, want 409 %q", code, reply, want)
			}
		})
	}
	// Re-signing a stored event and kind under a new sequence is a conflict.
	code, reply := e.upload(d.record(t, "ev-1", provenance.KindStart, 9))
	if code != http.StatusConflict {
		t.Fatalf("re-signed stored record: %d %q, want 409", code, reply)
	}
	// The device moves on.
	e.mustUpload(d.record(t, "ev-1", provenance.KindEnd, 6), http.StatusCreated)
	if st := e.srv.Stats(); st.Rejected[ReasonReplay] != 3 || st.Rejected[ReasonConflict] != 1 || st.Stored != 2 {
		t.Errorf("stats %+v", st)
	}
	// Sequences are per device: another device starts at 1.
	other := newDevice(t)
	e.enroll(other, "bob")
	e.mustUpload(other.record(t, "ev-1", provenance.KindStart, 1), http.StatusCreated)
}

func TestMediaMismatch(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	r := d.record(t, "ev-1", provenance.KindStart, 1)
	bad := bytes.Clone(r.thumb)
	bad[len(bad)/2] ^= 0x01
	code, reply := e.put(r.path(), bundle(t, r.env, bad))
	if code != http.StatusUnprocessableEntity {
		t.Fatalf("flipped thumbnail byte: %d %q, want 422", code, reply)
	}
	code, reply = e.put(r.path(), bundle(t, r.env))
	if code != http.StatusUnprocessableEntity {
		t.Fatalf("missing thumbnail: %d %q, want 422", code, reply)
	}
	if n := e.srv.Stats().Rejected[ReasonMedia]; n != 2 {
		t.Errorf("media_mismatch count %d, want 2", n)
	}
	// The genuine record is still accepted: a rejection consumes nothing.
	e.mustUpload(r, http.StatusCreated)
}

func TestPathMustMatchPayload(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	r := d.record(t, "ev-1", provenance.KindStart, 1)
	for _, path := range []string{"/v1/events/ev-2/start", "/v1/events/ev-1/end", "/v1/events/ev-1/other"} {
		code, reply := e.put(path, r.body)
		if code != http.StatusUnprocessableEntity || !strings.Contains(reply, "path") {
			t.Errorf("PUT %s with a record of ev-1/start: %d %q, want 422", path, code, reply)
		}
	}
	if n := e.srv.Stats().Rejected[ReasonPath]; n != 3 {
		t.Errorf("path_mismatch count %d, want 3", n)
	}
	if e.srv.Stats().Stored != 0 {
		t.Error("a record uploaded to the wrong path was stored")
	}
}

func TestMalformedBodies(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	r := d.record(t, "ev-1", provenance.KindStart, 1)
	truncated := bytes.Clone(r.env[:len(r.env)-10])
	for name, body := range map[string][]byte{
		"empty":              {},
		"text":               []byte("hello, receiver"),
		"cbor but no bundle": {0xa1, 0x01, 0x02},
		"truncated bundle":   r.body[:len(r.body)/2],
		"truncated envelope": bundle(t, truncated, r.thumb),
		"garbage envelope":   bundle(t, []byte("not cose at all"), r.thumb),
	} {
		code, reply := e.put(r.path(), body)
		if code != http.StatusBadRequest {
			t.Errorf("%s: %d %q, want 400", name, code, reply)
		}
		if strings.Count(strings.TrimSuffix(reply, "\n"), "\n") != 0 || len(strings.TrimSpace(reply)) == 0 {
			t.Errorf("%s: reply %q is not one line", name, reply)
		}
	}
	if n := e.srv.Stats().Rejected[ReasonMalformed]; n != 6 {
		t.Errorf("malformed count %d, want 6", n)
	}
}

func TestOversizeBody(t *testing.T) {
	e := newEnv(t, Options{MaxBody: 256})
	d := newDevice(t)
	e.enroll(d, "alice")
	r := d.record(t, "ev-1", provenance.KindStart, 1) // a few hundred bytes of thumbnail alone
	if len(r.body) <= 256 {
		t.Fatalf("test record is only %d bytes", len(r.body))
	}
	code, reply := e.upload(r)
	if code != http.StatusRequestEntityTooLarge {
		t.Fatalf("%d-byte body with MaxBody 256: %d %q, want 413", len(r.body), code, reply)
	}
	// Without a Content-Length (chunked), the limit still holds.
	req, err := http.NewRequest(http.MethodPut, e.hs.URL+r.path(), struct{ *bytes.Reader }{bytes.NewReader(r.body)})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked oversize body: %d, want 413", resp.StatusCode)
	}
	if n := e.srv.Stats().Rejected[ReasonTooLarge]; n != 2 {
		t.Errorf("too_large count %d, want 2", n)
	}
}

func TestOverloadedAnswers503WithRetryAfter(t *testing.T) {
	e := newEnv(t, Options{MaxInFlight: 1})
	d := newDevice(t)
	e.enroll(d, "alice")
	e.srv.inflight <- struct{}{} // one upload in progress
	req, err := http.NewRequest(http.MethodPut, e.hs.URL+"/v1/events/ev-1/start", bytes.NewReader(d.record(t, "ev-1", "start", 1).body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("overloaded: %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	<-e.srv.inflight
	e.mustUpload(d.record(t, "ev-1", "start", 1), http.StatusCreated)
}

func TestStatsEndpoint(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	e.mustUpload(d.record(t, "ev-1", provenance.KindStart, 2), http.StatusCreated)
	e.upload(d.record(t, "ev-2", provenance.KindStart, 1)) // replay
	e.put("/v1/events/ev-3/start", []byte("junk"))         // malformed
	code, body, h := e.adminGet("/v1/stats")
	if code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
		t.Fatalf("stats: %d %s", code, h.Get("Content-Type"))
	}
	var st Stats
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	if st.Stored != 1 || st.Rejected[ReasonReplay] != 1 || st.Rejected[ReasonMalformed] != 1 || st.Records != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestUploadMethodAndRoute(t *testing.T) {
	e := newEnv(t, Options{})
	resp, err := e.hs.Client().Post(e.hs.URL+"/v1/events/ev-1/start", provenance.BundleContentType, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestLastSequenceNumberRefused: the largest sequence number has no
// successor, which pairing intervals ([from, until)) need, so a record
// signed with it is refused as malformed and nothing is stored.
func TestLastSequenceNumberRefused(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	r := d.record(t, "ev-last", provenance.KindStart, math.MaxUint64)
	e.mustUpload(r, http.StatusBadRequest)
	if evs, err := e.srv.OwnerEvents("alice"); err != nil || len(evs) != 0 {
		t.Errorf("after the refusal alice has %d events (%v), want none", len(evs), err)
	}
	e.mustUpload(d.record(t, "ev-1", provenance.KindStart, 1), http.StatusCreated)
}
