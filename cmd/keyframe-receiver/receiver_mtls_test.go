package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/receiver"
)

// TestRequireClientCert: with -client-ca, uploads without a verified client
// certificate get 401 (which the device retries, never quarantines), with
// one they pass; the viewer pages need none.
func TestRequireClientCert(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fleet"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	pool, err := certPool(caFile, false)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	devKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "device"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	devDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, devKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}

	srv := httptest.NewUnstartedServer(receiver.RequireClientCert(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })))
	srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	srv.StartTLS()
	defer srv.Close()
	client := func(certs ...tls.Certificate) *http.Client {
		c := srv.Client()
		c.Transport.(*http.Transport).TLSClientConfig.Certificates = certs
		return c
	}
	get := func(c *http.Client, path string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, srv.URL+path, strings.NewReader("x"))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(client(), "/v1/events/e/start"); code != http.StatusUnauthorized {
		t.Errorf("upload without a certificate: %d, want 401", code)
	}
	if code := get(client(), "/"); code != http.StatusOK {
		t.Errorf("a page without a certificate: %d, want 200", code)
	}
	if code := get(client(tls.Certificate{Certificate: [][]byte{devDER}, PrivateKey: devKey}), "/v1/events/e/start"); code != http.StatusOK {
		t.Errorf("upload with the device certificate: %d, want 200", code)
	}
	// A certificate from another CA never passes: Go's client does not even
	// offer it (the server names its CAs), so the upload is a 401; a client
	// that sends it anyway fails the handshake.
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	selfDER, _ := x509.CreateCertificate(rand.Reader, leaf, leaf, otherKey.Public(), otherKey)
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v1/events/e/start", strings.NewReader("x"))
	if resp, err := client(tls.Certificate{Certificate: [][]byte{selfDER}, PrivateKey: otherKey}).Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("a certificate from another CA got %d, want 401 or a failed handshake", resp.StatusCode)
		}
	}
}
