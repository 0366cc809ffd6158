package livestream

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestFetchKeySet: the first request goes without a proof, the second signs
// the nonce of the 401 for PurposeKeySet; a 404 is ErrNoKeySet; a second
// 401 is an error, not a loop; an answer over the bound is refused.
func TestFetchKeySet(t *testing.T) {
	const device = "abcdefghijklmnopqrstuvwxyz"
	nonce := base64.RawURLEncoding.EncodeToString([]byte("nonce of the receiver"))
	var requests int
	var status int
	body := []byte(`{"keyset":"x","sig":"y"}`)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests++
		if r.Method != http.MethodGet || r.URL.Path != "/base"+KeySetPath(device) {
			t.Errorf("request %s %s", r.Method, r.URL.Path)
		}
		w.Header().Set(NonceHeader, nonce)
		sig := r.Header.Get(SignatureHeader)
		if sig == "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		want := base64.RawURLEncoding.EncodeToString(Message(PurposeKeySet, device, []byte("nonce of the receiver")))
		if r.Header.Get(NonceHeader) != nonce || sig != want {
			t.Errorf("proof %q over nonce %q", sig, r.Header.Get(NonceHeader))
		}
		w.WriteHeader(status)
		w.Write(body)
	}))
	defer hs.Close()
	sign := func(msg []byte) ([]byte, error) { return msg, nil } // the message itself stands for its signature
	fetch := func() ([]byte, error) {
		requests = 0
		return FetchKeySet(context.Background(), hs.Client(), hs.URL+"/base/", device, sign)
	}

	status = http.StatusOK
	got, err := fetch()
	if err != nil || !bytes.Equal(got, body) || requests != 2 {
		t.Fatalf("fetch: %q %v after %d requests", got, err, requests)
	}
	status, body = http.StatusNotFound, []byte("the camera's owner has no key set\n")
	if _, err := fetch(); !errors.Is(err, ErrNoKeySet) || !strings.Contains(err.Error(), "no key set") {
		t.Errorf("404: %v", err)
	}
	status = http.StatusUnauthorized
	var ke *KeySetError
	if _, err := fetch(); !errors.As(err, &ke) || ke.Status != http.StatusUnauthorized || requests != 2 {
		t.Errorf("401 twice: %v after %d requests", err, requests)
	}
	status, body = http.StatusOK, bytes.Repeat([]byte("x"), MaxKeySetReply+1)
	if _, err := fetch(); err == nil {
		t.Error("an answer over the bound was taken")
	}
}
