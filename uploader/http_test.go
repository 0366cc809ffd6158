package uploader

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/provenance"
)

func TestNewHTTPRefusesCleartextToNonLoopback(t *testing.T) {
	for _, c := range []struct {
		url      string
		ok       bool
		contains string
	}{
		{"https://receiver.example.com", true, ""},
		{"https://receiver.example.com:8443/base/", true, ""},
		{"https://203.0.113.7", true, ""},
		{"http://127.0.0.1:8417", true, ""},
		{"http://127.9.8.7", true, ""},
		{"http://[::1]:8417", true, ""},
		{"http://localhost:8417", true, ""},
		{"http://LocalHost", true, ""},
		{"http://receiver.example.com", false, "loopback"},
		{"http://10.0.0.1:8417", false, "loopback"},
		{"http://192.168.1.2", false, "loopback"},
		{"http://[::ffff:10.0.0.1]", false, "loopback"},
		{"http://127.0.0.1.example.com", false, "loopback"},
		{"http://localhost.example.com", false, "loopback"},
		{"http://0.0.0.0:8417", false, "loopback"},
		{"ftp://127.0.0.1", false, "scheme"},
		{"127.0.0.1:8417", false, ""},
		{"", false, ""},
		{"https://", false, "no host"},
		{"https://user:pw@receiver.example.com", false, "credentials"},
		{"https://receiver.example.com/?x=1", false, "query"},
	} {
		h, err := NewHTTP(c.url, nil)
		if c.ok {
			if err != nil || h == nil {
				t.Errorf("NewHTTP(%q) = %v, want accepted", c.url, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("NewHTTP(%q) accepted, want refused", c.url)
			continue
		}
		if !strings.HasPrefix(err.Error(), "uploader: ") || !strings.Contains(err.Error(), c.contains) {
			t.Errorf("NewHTTP(%q) error %q, want an uploader error mentioning %q", c.url, err, c.contains)
		}
	}
}

// receiverStub replies with a scripted status and records requests.
type receiverStub struct {
	mu      sync.Mutex
	reqs    []*http.Request
	bodies  [][]byte
	status  int
	body    string
	headers map[string]string
}

func (s *receiverStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.reqs = append(s.reqs, r)
	s.bodies = append(s.bodies, b)
	status, body, headers := s.status, s.body, s.headers
	s.mu.Unlock()
	for k, v := range headers {
		w.Header().Set(k, v)
	}
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func TestHTTPSendRequestAndStatusMapping(t *testing.T) {
	stub := &receiverStub{}
	var redirected atomic.Bool
	mux := http.NewServeMux()
	mux.Handle("/base/v1/", stub)
	mux.HandleFunc("/elsewhere/", func(http.ResponseWriter, *http.Request) { redirected.Store(true) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	h, err := NewHTTP(srv.URL+"/base/", srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	rec := testRecord(6, 2000)

	for _, c := range []struct {
		status     int
		body       string
		headers    map[string]string
		ok         bool
		permanent  bool
		reason     string
		retryAfter time.Duration
	}{
		{status: 201, body: "stored\n", ok: true},
		{status: 200, body: "identical re-send\n", ok: true},
		{status: 400, body: "malformed bundle: cbor: unexpected EOF\nmore detail", permanent: true, reason: "malformed bundle: cbor: unexpected EOF"},
		{status: 403, body: "unknown device", permanent: true, reason: "unknown device"},
		{status: 409, body: "replay: sequence 6 already seen\n", permanent: true, reason: "replay: sequence 6 already seen"},
		{status: 413, body: "too large\n", permanent: true, reason: "too large"},
		{status: 422, body: "media hash mismatch\n", permanent: true, reason: "media hash mismatch"},
		{status: 429, body: "slow down\n", headers: map[string]string{"Retry-After": "7"}, reason: "slow down", retryAfter: 7 * time.Second},
		{status: 503, body: "overloaded\n", headers: map[string]string{
			"Date":        "Wed, 21 Oct 2015 07:28:00 GMT",
			"Retry-After": "Wed, 21 Oct 2015 07:30:30 GMT",
		}, reason: "overloaded", retryAfter: 150 * time.Second},
		{status: 503, body: "", headers: map[string]string{"Retry-After": "soon"}},
		{status: 500, body: "internal error\n", reason: "internal error"},
		{status: 404, body: "404 page not found\n", reason: "404 page not found"},
		{status: 202, body: "accepted, maybe\n", reason: "accepted, maybe"},
		{status: 401, body: "who are you\n", reason: "who are you"},
		{status: 307, headers: map[string]string{"Location": "/elsewhere/x"}},
		{status: 502, body: strings.Repeat("x", 5000) + "\x00\x1b[31m"},
	} {
		stub.mu.Lock()
		stub.status, stub.body, stub.headers = c.status, c.body, c.headers
		stub.mu.Unlock()
		err := h.Send(context.Background(), rec)
		if c.ok {
			if err != nil {
				t.Errorf("%d: Send = %v, want nil", c.status, err)
			}
			continue
		}
		var se *StatusError
		if !errors.As(err, &se) {
			t.Errorf("%d: Send = %v, want *StatusError", c.status, err)
			continue
		}
		if se.Code != c.status || se.Permanent() != c.permanent || isPermanent(err) != c.permanent {
			t.Errorf("%d: got code %d permanent %v", c.status, se.Code, se.Permanent())
		}
		if c.reason != "" && se.Reason != c.reason {
			t.Errorf("%d: reason %q, want %q", c.status, se.Reason, c.reason)
		}
		if len(se.Reason) > 512 || strings.ContainsAny(se.Reason, "\x00\x1b\n") {
			t.Errorf("%d: reason not bounded and sanitised: %d bytes", c.status, len(se.Reason))
		}
		if se.RetryAfter != c.retryAfter {
			t.Errorf("%d: RetryAfter %v, want %v", c.status, se.RetryAfter, c.retryAfter)
		}
		if !strings.Contains(se.Error(), http.StatusText(c.status)) {
			t.Errorf("%d: error %q does not name the status", c.status, se.Error())
		}
	}
	if redirected.Load() {
		t.Error("a redirect was followed")
	}
	stub.mu.Lock()
	defer stub.mu.Unlock()
	for i, r := range stub.reqs {
		if r.Method != http.MethodPut || r.URL.Path != "/base/v1/events/ev-3/start" {
			t.Fatalf("request %d: %s %s, want PUT /base/v1/events/ev-3/start", i, r.Method, r.URL.Path)
		}
		if ct := r.Header.Get("Content-Type"); ct != provenance.BundleContentType {
			t.Fatalf("request %d: Content-Type %q", i, ct)
		}
		if r.ContentLength != int64(len(rec.Data)) || !bytes.Equal(stub.bodies[i], rec.Data) {
			t.Fatalf("request %d: body differs from the record", i)
		}
	}
}

func TestHTTPSendNetworkErrorIsRetryable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close() // nothing listens any more
	h, err := NewHTTP(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = h.Send(context.Background(), testRecord(1, 10))
	var ue *url.Error
	if err == nil || !errors.As(err, &ue) || !strings.HasPrefix(err.Error(), "uploader: ") {
		t.Fatalf("Send to a closed port = %v, want a wrapped *url.Error", err)
	}
	if isPermanent(err) {
		t.Fatal("a network error must be retried, not quarantined")
	}
	// A record the transport cannot route is refused for good.
	if err := h.Send(context.Background(), Record{Seq: 1, Event: "../x", Kind: "start", Data: []byte("x")}); !isPermanent(err) {
		t.Fatalf("Send of an invalid record = %v, want a permanent error", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := func() time.Time { return time.Date(2015, 10, 21, 7, 28, 0, 0, time.UTC) }
	for _, c := range []struct {
		v, date string
		want    time.Duration
	}{
		{"120", "", 2 * time.Minute},
		{" 5 ", "", 5 * time.Second},
		{"0", "", 0},
		{"-5", "", 0},
		{"1.5", "", 0},
		{"soon", "", 0},
		{"", "", 0},
		{"99999999999999999", "", 1<<63 - 1},
		{"Wed, 21 Oct 2015 07:29:00 GMT", "", time.Minute},                                   // against now
		{"Wed, 21 Oct 2015 07:29:00 GMT", "Wed, 21 Oct 2015 07:28:50 GMT", 10 * time.Second}, // against the server's Date
		{"Wed, 21 Oct 2015 07:29:00 GMT", "garbage", time.Minute},
		{"Wed, 21 Oct 2015 07:20:00 GMT", "", 0}, // in the past
		{"Wednesday, 21-Oct-15 07:29:00 GMT", "", time.Minute},
	} {
		if got := parseRetryAfter(c.v, c.date, now); got != c.want {
			t.Errorf("parseRetryAfter(%q, %q) = %v, want %v", c.v, c.date, got, c.want)
		}
	}
}

func TestStatusErrorPermanent(t *testing.T) {
	for code, want := range map[int]bool{
		400: true, 403: true, 409: true, 413: true, 422: true,
		401: false, 404: false, 408: false, 429: false, 500: false, 502: false, 503: false, 504: false,
	} {
		if got := (&StatusError{Code: code}).Permanent(); got != want {
			t.Errorf("Permanent(%d) = %v, want %v", code, got, want)
		}
	}
}
