package uploader

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keyframe-cam/keyframe/internal/netaddr"
	"github.com/keyframe-cam/keyframe/provenance"
)

// Transport sends one record to the receiver. A nil error means the receiver
// acknowledged it (stored, or an identical re-send). An error with a
// Permanent() bool method returning true means the record must never be
// retried; any other error is retried.
type Transport interface {
	Send(ctx context.Context, r Record) error
}

// StatusError is a reply other than 200 or 201.
type StatusError struct {
	Code       int
	Reason     string        // first line of the reply body, bounded and sanitised
	RetryAfter time.Duration // from Retry-After; 0 if absent or invalid
}

// Error describes the reply.
func (e *StatusError) Error() string {
	s := fmt.Sprintf("uploader: receiver replied %d %s", e.Code, http.StatusText(e.Code))
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Permanent reports whether the receiver rejected the record itself (400
// malformed, 403 unknown device or bad signature, 409 replay, 413 too large,
// 422 media or path mismatch): sending it again cannot succeed, so it is
// quarantined, never retried.
func (e *StatusError) Permanent() bool {
	switch e.Code {
	case http.StatusBadRequest, http.StatusForbidden, http.StatusConflict,
		http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return true
	}
	return false
}

// permanentError marks a record the transport refuses to send.
type permanentError struct{ err error }

func (e *permanentError) Error() string   { return e.err.Error() }
func (e *permanentError) Unwrap() error   { return e.err }
func (e *permanentError) Permanent() bool { return true }

// maxReasonRead bounds how much of a reply body is read for its reason line.
const maxReasonRead = 1 << 10

// HTTP is the Transport of the upload protocol: PUT
// {base}/v1/events/{event}/{kind} with the bundle as the body.
type HTTP struct {
	base   *url.URL
	client *http.Client

	// Now is the clock used for a Retry-After date when the reply has no
	// usable Date header; nil means time.Now.
	Now func() time.Time
}

// NewHTTP returns a transport to the receiver at baseURL. https:// is
// accepted for any host; http:// only for a loopback host (127.0.0.0/8, ::1,
// localhost), since records would otherwise cross a network in clear text.
// client may be nil (a client with a 30 s timeout). Redirects are not
// followed: a redirect reply is an error, retried like any other.
func NewHTTP(baseURL string, client *http.Client) (*HTTP, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("uploader: upload URL: %w", err)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("uploader: upload URL %q has no host", baseURL)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("uploader: upload URL %q: credentials, query and fragment are not allowed", baseURL)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !netaddr.IsLoopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("uploader: upload URL %q: http:// is allowed only to a loopback host (127.0.0.0/8, ::1, localhost); use https://", baseURL)
		}
	default:
		return nil, fmt.Errorf("uploader: upload URL %q: scheme must be https (or http to a loopback host)", baseURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	var c http.Client
	if client != nil {
		c = *client
	} else {
		c.Timeout = 30 * time.Second
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &HTTP{base: u, client: &c}, nil
}

// Send PUTs the record. 200 and 201 return nil; any other reply returns a
// *StatusError; a network failure returns a wrapped error.
func (h *HTTP) Send(ctx context.Context, r Record) error {
	if !provenance.ValidID(r.Event) || !validKind(r.Kind) {
		return &permanentError{fmt.Errorf("uploader: send %d: invalid event %q or kind %q", r.Seq, r.Event, r.Kind)}
	}
	u := *h.base
	u.Path = h.base.Path + "/v1/events/" + r.Event + "/" + r.Kind
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), bytes.NewReader(r.Data))
	if err != nil {
		return fmt.Errorf("uploader: send %d: %w", r.Seq, err)
	}
	req.Header.Set("Content-Type", provenance.BundleContentType)
	resp, err := h.client.Do(req)
	if err != nil {
		return fmt.Errorf("uploader: send %d (%s/%s): %w", r.Seq, r.Event, r.Kind, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusCreated {
		// Drain a little so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil
	}
	se := &StatusError{Code: resp.StatusCode, Reason: firstLine(resp.Body)}
	now := time.Now
	if h.Now != nil {
		now = h.Now
	}
	se.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), resp.Header.Get("Date"), now)
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return se
}

// firstLine reads at most maxReasonRead bytes and returns the first line,
// made printable.
func firstLine(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, maxReasonRead))
	line, _, _ := bufio.NewReader(bytes.NewReader(b)).ReadLine()
	return printableLine(strings.ToValidUTF8(string(line), "?"))
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP-date.
// A date is measured against the reply's Date header (the server's clock,
// so a device whose clock is unset still waits the intended time), else
// against now. Invalid or past values give 0.
func parseRetryAfter(v, date string, now func() time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(math.MaxInt64/time.Second) {
			return math.MaxInt64
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	ref, err := http.ParseTime(date)
	if err != nil {
		ref = now()
	}
	if d := t.Sub(ref); d > 0 {
		return d
	}
	return 0
}

// isPermanent reports whether err says the record must not be retried.
func isPermanent(err error) bool {
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}
