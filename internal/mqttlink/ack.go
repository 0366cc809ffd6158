package mqttlink

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Limits of the acknowledgement the receiver publishes for each event
// message on <prefix>/<device>/ack.
const (
	// MaxAckPayload bounds an ack's JSON; a larger one is refused.
	MaxAckPayload = 1 << 10
	// MaxAckReason bounds an ack's reason; the receiver clips longer ones.
	MaxAckReason = 200
	// MaxAckRetryAfter bounds an ack's retry_after, in seconds (one day).
	MaxAckRetryAfter = 86400
)

// AckTopic returns <prefix>/<device>/ack, where the receiver acknowledges
// the device's event messages. Only the receiver may publish there (ACL).
func AckTopic(prefix, device string) string { return DeviceTopic(prefix, device) + "ack" }

// An Ack is the receiver's answer to one event message: which message (the
// SHA-256 of its payload, the bundle bytes exactly as published, plus the
// event and kind of its topic) and what Ingest made of it, in HTTP's terms:
// 201 stored, 200 an identical record was already stored, 429 retry after
// RetryAfter seconds, any other 4xx refused for good (Reason says why).
// The receiver never acknowledges a message it could not store for a
// reason of its own (503): it leaves it to the broker to deliver again.
type Ack struct {
	SHA256     string `json:"sha256"` // lowercase hex of the payload's SHA-256
	Event      string `json:"event"`
	Kind       string `json:"kind"`
	Status     int    `json:"status"`
	Reason     string `json:"reason,omitempty"`
	RetryAfter int    `json:"retry_after,omitempty"` // seconds, only with 429
}

// PayloadSum returns the lowercase hex SHA-256 of an event message's
// payload, the name an Ack gives it.
func PayloadSum(payload []byte) string {
	s := sha256.Sum256(payload)
	return hex.EncodeToString(s[:])
}

// NewAck returns the Ack of a message whose payload has the given sum, with
// reason clipped and made printable and retryAfter rounded up to whole
// seconds (kept only for a 429).
func NewAck(sum, event, kind string, status int, reason string, retryAfter time.Duration) Ack {
	a := Ack{SHA256: sum, Event: event, Kind: kind, Status: status}
	if status != 200 && status != 201 {
		a.Reason = clipReason(reason)
	}
	if status == 429 {
		s := int((retryAfter + time.Second - 1) / time.Second)
		a.RetryAfter = min(max(s, 1), MaxAckRetryAfter)
	}
	return a
}

// Marshal encodes a as the ack's payload. It checks a as ParseAck would.
func (a Ack) Marshal() ([]byte, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("ack: %w", err)
	}
	if len(b) > MaxAckPayload {
		return nil, fmt.Errorf("ack: %d bytes is over the limit of %d", len(b), MaxAckPayload)
	}
	return b, nil
}

// ParseAck decodes an ack's payload strictly: at most MaxAckPayload bytes,
// one JSON object, no unknown or missing fields, a 64-digit lowercase hex
// sum, event and kind of 1-64 characters of [A-Za-z0-9_-], a status of 200,
// 201 or 4xx, retry_after (1 to MaxAckRetryAfter) with 429 and only then, a
// printable reason of at most MaxAckReason bytes only with a refusal.
func ParseAck(b []byte) (Ack, error) {
	var a Ack
	if len(b) > MaxAckPayload {
		return a, fmt.Errorf("ack: %d bytes is over the limit of %d", len(b), MaxAckPayload)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&a); err != nil {
		return Ack{}, fmt.Errorf("ack: %w", err)
	}
	if d.More() {
		return Ack{}, errors.New("ack: data after the JSON object")
	}
	if err := a.check(); err != nil {
		return Ack{}, err
	}
	return a, nil
}

func (a Ack) check() error {
	if len(a.SHA256) != 64 || strings.Trim(a.SHA256, "0123456789abcdef") != "" {
		return fmt.Errorf("ack: sha256 %q is not 64 lowercase hex digits", clipReason(a.SHA256))
	}
	if !validLevel(a.Event) || !validLevel(a.Kind) {
		return fmt.Errorf("ack: event %q or kind %q is not 1-64 characters of [A-Za-z0-9_-]", clipReason(a.Event), clipReason(a.Kind))
	}
	ok := a.Status == 200 || a.Status == 201
	switch {
	case !ok && (a.Status < 400 || a.Status > 499):
		return fmt.Errorf("ack: status %d: want 200, 201 or 4xx", a.Status)
	case ok && a.Reason != "":
		return fmt.Errorf("ack: status %d with a reason", a.Status)
	case a.Status == 429 && (a.RetryAfter < 1 || a.RetryAfter > MaxAckRetryAfter):
		return fmt.Errorf("ack: 429 with retry_after %d: want 1 to %d", a.RetryAfter, MaxAckRetryAfter)
	case a.Status != 429 && a.RetryAfter != 0:
		return fmt.Errorf("ack: retry_after with status %d", a.Status)
	case a.Reason != clipReason(a.Reason):
		return errors.New("ack: reason is too long or not printable")
	}
	return nil
}

// validLevel reports whether s is 1-64 characters of [A-Za-z0-9_-], the
// shape of a device or event ID and of a kind.
func validLevel(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// clipReason makes s printable ASCII and at most MaxAckReason bytes.
func clipReason(s string) string {
	b := []byte(s)
	if len(b) > MaxAckReason {
		b = b[:MaxAckReason]
	}
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}
