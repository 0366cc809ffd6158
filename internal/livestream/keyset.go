package livestream

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// MaxKeySetReply bounds the key set route's answer as the camera reads it (a
// signed set of 16 KiB is about 22 KiB of JSON).
const MaxKeySetReply = 64 << 10

// ErrNoKeySet is the receiver's 404 on the key set route: the device's
// owner has no key set, or the device is paired to no owner. The
// KeySetError carrying it says which.
var ErrNoKeySet = errors.New("livestream: the receiver has no key set for this camera")

// A KeySetError is a refusal of the key set route other than success.
type KeySetError struct {
	Status  int    // the HTTP status
	Message string // the receiver's one-line reason
}

func (e *KeySetError) Error() string {
	return fmt.Sprintf("livestream: key set: the receiver answered %d: %s", e.Status, e.Message)
}

// Unwrap makes a 404 errors.Is ErrNoKeySet.
func (e *KeySetError) Unwrap() error {
	if e.Status == http.StatusNotFound {
		return ErrNoKeySet
	}
	return nil
}

// FetchKeySet asks the receiver at baseURL (the upload URL) for the signed
// key set of device's owner (GET KeySetPath) and returns its bytes, as
// received and unchecked: the caller verifies them with e2ee.ParseSigned
// and e2ee.Accept. sign signs a proof message (Message) with the device
// key, e.g. a claimcode.Sign of the key.
//
// The receiver's nonce comes with every reply: the first request goes
// without a proof, gets 401 and a nonce, and the second one carries the
// device key's signature over it. A refusal is a *KeySetError (a 404
// errors.Is ErrNoKeySet).
func FetchKeySet(ctx context.Context, client *http.Client, baseURL, device string, sign func([]byte) ([]byte, error)) ([]byte, error) {
	url := strings.TrimSuffix(baseURL, "/") + KeySetPath(device)
	nonce := ""
	for try := 0; ; try++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, fmt.Errorf("livestream: key set: %w", err)
		}
		if nonce != "" {
			raw, err := base64.RawURLEncoding.DecodeString(nonce)
			if err != nil || len(raw) > MaxNonce {
				return nil, fmt.Errorf("livestream: key set: the receiver's nonce %q is not base64url of at most %d bytes", clipLine(nonce), MaxNonce)
			}
			sig, err := sign(Message(PurposeKeySet, device, raw))
			if err != nil {
				return nil, fmt.Errorf("livestream: key set: sign: %w", err)
			}
			req.Header.Set(NonceHeader, nonce)
			req.Header.Set(SignatureHeader, base64.RawURLEncoding.EncodeToString(sig))
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("livestream: key set: %w", err)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, MaxKeySetReply+1))
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("livestream: key set: read the answer: %w", err)
		}
		switch {
		case resp.StatusCode == http.StatusOK && len(body) > MaxKeySetReply:
			return nil, fmt.Errorf("livestream: key set: the answer is over %d bytes", MaxKeySetReply)
		case resp.StatusCode == http.StatusOK:
			return body, nil
		case resp.StatusCode == http.StatusUnauthorized && try == 0 && resp.Header.Get(NonceHeader) != "":
			nonce = resp.Header.Get(NonceHeader) // sign the nonce given, once
			continue
		}
		return nil, &KeySetError{Status: resp.StatusCode, Message: clipLine(string(body))}
	}
}

// clipLine is the first line of s, at most 200 bytes, valid UTF-8.
func clipLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.TrimSpace(strings.ToValidUTF8(s, "?"))
}
