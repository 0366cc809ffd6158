package receiver

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/provenance"
)

// FuzzUpload sends arbitrary bodies to arbitrary upload paths of a real
// receiver with an enrolled, paired device: it never panics, answers only
// with the documented statuses, and whatever it stores (201) is a bundle
// that verifies as the enrolled device's, with the path's event and kind.
func FuzzUpload(f *testing.F) {
	d := newDevice(f)
	dir := f.TempDir()
	if _, err := Enroll(dir, d.pem); err != nil {
		f.Fatal(err)
	}
	if err := Pair(dir, d.id, "alice"); err != nil {
		f.Fatal(err)
	}
	srv, err := Open(Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Events: io.Discard,
		Clock: fixedClock{testNow}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	h := srv.Handler()

	for i, kind := range []string{provenance.KindStart, provenance.KindEnd} {
		r := d.record(f, "1764000000000-abcdefgh", kind, uint64(i+1))
		f.Add(r.event, r.kind, r.body)
		f.Add(r.event, r.kind, r.body[:len(r.body)/2])
		flipped := bytes.Clone(r.body)
		flipped[len(flipped)-3] ^= 1
		f.Add(r.event, r.kind, flipped)
	}
	f.Add("x", "start", []byte{})
	f.Add("../../etc", "end", []byte("\x82\x40\x80"))
	f.Add("a", " HTTP/1.0", []byte{0}) // once crashed the harness itself: not a request target

	// The upload API's statuses, plus the router's redirect of a path that
	// is not in clean form ("/v1/events/0/." → 307): nothing stored.
	allowed := map[int]bool{200: true, 201: true, 301: true, 307: true, 308: true, 400: true, 403: true, 404: true, 405: true, 409: true, 413: true, 422: true, 503: true}
	f.Fuzz(func(t *testing.T, event, kind string, body []byte) {
		if strings.ContainsAny(event+kind, "/?#%") {
			return // not one path segment each: routed elsewhere
		}
		req, err := http.NewRequest(http.MethodPut, "http://receiver.test/v1/events/"+event+"/"+kind, bytes.NewReader(body))
		if err != nil {
			return // not a URL a client could send
		}
		req.Header.Set("Content-Type", provenance.BundleContentType)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if !allowed[rec.Code] {
			t.Fatalf("status %d (%q) is not one the upload API documents", rec.Code, rec.Body.String())
		}
		if rec.Code != http.StatusCreated {
			return
		}
		b, err := provenance.UnmarshalBundle(body)
		if err != nil {
			t.Fatalf("stored a body that is not a bundle: %v", err)
		}
		v, err := provenance.Verify(b.Envelope, b.Media, nil)
		if err != nil || v.Device != d.id || v.Payload.Event != event || v.Payload.Kind != kind {
			t.Fatalf("stored a record that does not verify as the device's at its path: %v", err)
		}
	})
}
