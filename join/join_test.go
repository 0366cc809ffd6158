package join_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/internal/claimcode"
	"github.com/keyframe-cam/keyframe/join"
	"github.com/keyframe-cam/keyframe/receiver"
)

// selfSigned is a self-signed server certificate for 127.0.0.1, valid now.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "receiver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

// tlsServer serves h over TLS with cert on 127.0.0.1 and counts the
// requests that reach it.
func tlsServer(t *testing.T, cert tls.Certificate, h http.Handler) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h.ServeHTTP(w, r)
	}))
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	hs.StartTLS()
	t.Cleanup(hs.Close)
	return hs, &n
}

// receiverBehind opens a receiver over a temporary directory, served over
// TLS with cert.
func receiverBehind(t *testing.T, cert tls.Certificate) (*receiver.Server, *httptest.Server, *atomic.Int64) {
	t.Helper()
	srv, err := receiver.Open(receiver.Options{Dir: t.TempDir(), TLSCertificate: cert.Certificate[0]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	hs, n := tlsServer(t, cert, srv.Handler())
	return srv, hs, n
}

func deviceKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestJoin: the whole exchange with a real receiver; the result names the
// device, the owner, the upload URL and the pinned certificate, and the
// receiver pairs the device.
func TestJoin(t *testing.T) {
	cert := selfSigned(t)
	srv, hs, _ := receiverBehind(t, cert)
	cc, err := srv.NewClaim("alice")
	if err != nil {
		t.Fatal(err)
	}
	k := deviceKey(t)
	// As a person types it: lower case, spaces for dashes.
	typed := strings.ToLower(strings.ReplaceAll(cc.Code, "-", " "))
	res, err := join.Join(context.Background(), join.Request{URL: hs.URL, Code: typed, Key: k, Seq: 3})
	if err != nil {
		t.Fatal(err)
	}
	if res.Owner != "alice" || res.UploadURL != hs.URL+"/" || string(res.Cert) != string(cert.Certificate[0]) {
		t.Errorf("result %+v", res)
	}
	if o, err := srv.PairedOwner(res.Device); err != nil || o != "alice" {
		t.Errorf("device %s paired to %q (%v), want alice", res.Device, o, err)
	}

	// The same code again: refused, and said so.
	_, err = join.Join(context.Background(), join.Request{URL: hs.URL, Code: cc.Code, Key: deviceKey(t), Seq: 1})
	var ref *join.RefusedError
	if !errors.As(err, &ref) || ref.Status != http.StatusGone || !strings.Contains(err.Error(), "used already") {
		t.Errorf("second use of a code: %v, want a refusal saying it was used", err)
	}
	t.Log(err)
}

// TestJoinManInTheMiddle: a server with another certificate at the URL (a
// man in the middle, or a wrong URL) is refused during the handshake: not one
// request reaches it, so it learns neither the code's ID nor a proof.
func TestJoinManInTheMiddle(t *testing.T) {
	srv, _, _ := receiverBehind(t, selfSigned(t))
	cc, err := srv.NewClaim("alice")
	if err != nil {
		t.Fatal(err)
	}
	// The impostor forwards to nothing; it only counts what it receives.
	mitm, reached := tlsServer(t, selfSigned(t), http.NotFoundHandler())
	_, err = join.Join(context.Background(), join.Request{URL: mitm.URL, Code: cc.Code, Key: deviceKey(t), Seq: 1})
	if !errors.Is(err, join.ErrPin) {
		t.Fatalf("join through an impostor: %v, want ErrPin", err)
	}
	t.Log(err)
	if !strings.Contains(err.Error(), "wrong URL or someone in the middle") {
		t.Errorf("message %q does not say what to suspect", err)
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("%d requests reached the impostor", n)
	}
}

// TestJoinCertificateNotForHost: the pinned certificate, reached by a name it
// does not cover, is refused before any request: keyframe run could not
// upload there.
func TestJoinCertificateNotForHost(t *testing.T) {
	cert := selfSigned(t)
	srv, hs, reached := receiverBehind(t, cert)
	cc, err := srv.NewClaim("alice")
	if err != nil {
		t.Fatal(err)
	}
	url := strings.Replace(hs.URL, "127.0.0.1", "localhost", 1)
	_, err = join.Join(context.Background(), join.Request{URL: url, Code: cc.Code, Key: deviceKey(t), Seq: 1})
	if !errors.Is(err, join.ErrCertificate) || reached.Load() != 0 {
		t.Fatalf("join by a name the certificate does not cover: %v (%d requests), want ErrCertificate and none", err, reached.Load())
	}
	t.Log(err)
}

// TestJoinRefusesBeforeConnecting: a mistyped code or a URL that is not
// https is refused without a connection.
func TestJoinRefusesBeforeConnecting(t *testing.T) {
	cert := selfSigned(t)
	srv, hs, reached := receiverBehind(t, cert)
	cc, err := srv.NewClaim("alice")
	if err != nil {
		t.Fatal(err)
	}
	typo := "0" + cc.Code[1:]
	if cc.Code[0] == '0' {
		typo = "1" + cc.Code[1:]
	}
	_, err = join.Join(context.Background(), join.Request{URL: hs.URL, Code: typo, Key: deviceKey(t), Seq: 1})
	if !errors.Is(err, join.ErrCode) || !errors.Is(err, claimcode.ErrCheck) {
		t.Errorf("mistyped code: %v, want ErrCode (check character)", err)
	}
	for _, u := range []string{strings.Replace(hs.URL, "https", "http", 1), "https://", hs.URL + "/?x=1", "https://user@" + strings.TrimPrefix(hs.URL, "https://")} {
		if _, err := join.Join(context.Background(), join.Request{URL: u, Code: cc.Code, Key: deviceKey(t), Seq: 1}); !errors.Is(err, join.ErrURL) {
			t.Errorf("URL %q: %v, want ErrURL", u, err)
		}
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("%d requests reached the receiver", n)
	}
}

// TestJoinNetworkError: nothing listening is a network error naming the
// receiver, not a refusal.
func TestJoinNetworkError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	srv, _, _ := receiverBehind(t, selfSigned(t))
	cc, err := srv.NewClaim("alice")
	if err != nil {
		t.Fatal(err)
	}
	_, err = join.Join(context.Background(), join.Request{URL: "https://" + addr, Code: cc.Code, Key: deviceKey(t), Seq: 1})
	var ref *join.RefusedError
	if err == nil || errors.As(err, &ref) || !strings.Contains(err.Error(), "cannot reach the receiver") {
		t.Errorf("nothing listening: %v", err)
	}
	t.Log(err)
}

// serveSelf runs the receiver over dir with its own CA's certificate for
// names on 127.0.0.1 and returns its URL and a stop function.
func serveSelf(t *testing.T, dir string, names ...string) (string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- receiver.Serve(ctx, receiver.ServeConfig{Options: receiver.Options{Dir: dir}, Listen: "127.0.0.1:0",
			TLS: receiver.TLSSelf, TLSNames: names, Ready: func(u string) { ready <- u }})
	}()
	select {
	case u := <-ready:
		stop := func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		}
		return u, stop
	case err := <-done:
		cancel()
		t.Fatalf("Serve: %v", err)
	}
	return "", nil
}

// leafOf is the certificate a server at url presents, verified with only
// trusted (DER) as a root.
func leafOf(t *testing.T, url string, trusted []byte) ([]byte, error) {
	t.Helper()
	ca, err := x509.ParseCertificate(trusted)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	c, err := tls.Dial("tcp", strings.TrimSuffix(strings.TrimPrefix(url, "https://"), "/"), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Raw, nil
}

// TestJoinSelfMadeCA: a receiver serving HTTPS with its own CA pins the CA
// in its claim codes; the camera joins trusting only it, keeps the CA, and
// still trusts the receiver after it issues itself another certificate
// (new names); a name the certificate does not cover is refused.
func TestJoinSelfMadeCA(t *testing.T) {
	dir := t.TempDir()
	url, stop := serveSelf(t, dir, "127.0.0.1")
	caPEM, err := os.ReadFile(filepath.Join(dir, receiver.SelfCertDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(caPEM)
	if blk == nil {
		t.Fatal("no CA certificate")
	}
	cc, err := receiver.IssueClaim(dir, blk.Bytes, "alice", time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	byName := strings.Replace(url, "127.0.0.1", "localhost", 1)
	if _, err := join.Join(context.Background(), join.Request{URL: byName, Code: cc.Code, Key: deviceKey(t), Seq: 1}); !errors.Is(err, join.ErrCertificate) {
		t.Errorf("join by a name the certificate does not cover: %v, want ErrCertificate", err)
	}
	res, err := join.Join(context.Background(), join.Request{URL: url, Code: cc.Code, Key: deviceKey(t), Seq: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.Cert, blk.Bytes) || res.Owner != "alice" {
		t.Fatalf("joined %s, pinned certificate is the CA: %v; want alice's and the CA", res.Owner, bytes.Equal(res.Cert, blk.Bytes))
	}
	first, err := leafOf(t, url, res.Cert)
	if err != nil {
		t.Fatal(err)
	}
	stop()

	url, stop = serveSelf(t, dir, "127.0.0.1", "kf.test")
	defer stop()
	second, err := leafOf(t, url, res.Cert)
	if err != nil {
		t.Fatalf("the renewed certificate does not verify with the pinned CA: %v", err)
	}
	if bytes.Equal(first, second) {
		t.Error("new names: the receiver served the same certificate")
	}
}

// newE2EEOwner is an owner identity with one browser key.
func newE2EEOwner(t *testing.T) *e2ee.Owner {
	t.Helper()
	o, err := e2ee.NewOwner(1)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// putKeySet stores o's set of version as owner's key set at the receiver,
// as the owner's first browser does (PUT /v1/e2ee/keys).
func putKeySet(t *testing.T, dir string, srv *receiver.Server, hs *httptest.Server, owner string, o *e2ee.Owner, version uint64) []byte {
	t.Helper()
	ks, err := o.KeySet(version)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (receiver.Accounts{Dir: dir}).Add(owner, receiver.RoleOwner); err != nil && !errors.Is(err, receiver.ErrAccountExists) {
		t.Fatal(err)
	}
	cookie, err := srv.NewSession(owner)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"signed": json.RawMessage(ks.Signed())})
	req, _ := http.NewRequest(http.MethodPut, hs.URL+"/v1/e2ee/keys", bytes.NewReader(body))
	cookie.Name = "__Host-" + cookie.Name // the name of the cookie over TLS
	req.AddCookie(cookie)
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PUT /v1/e2ee/keys: %d", resp.StatusCode)
	}
	return ks.Signed()
}

// TestJoinE2EE: with a code that commits to the owner's identity, the join
// returns the owner's key set, checked, and WriteKeySet keeps it with the
// fingerprint to pin.
func TestJoinE2EE(t *testing.T) {
	cert := selfSigned(t)
	rdir := t.TempDir()
	srv, err := receiver.Open(receiver.Options{Dir: rdir, TLSCertificate: cert.Certificate[0]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	hs, _ := tlsServer(t, cert, srv.Handler())
	owner := newE2EEOwner(t)
	signed := putKeySet(t, rdir, srv, hs, "alice", owner, 2)
	cc, err := srv.NewClaim("alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(cc.Code) != claimcode.LenE2EE {
		t.Fatalf("code %q: want %d characters", cc.Code, claimcode.LenE2EE)
	}
	res, err := join.Join(context.Background(), join.Request{URL: hs.URL, Code: cc.Code, Key: deviceKey(t), Seq: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.KeySet == nil || res.KeySet.Owner() != owner.Fingerprint() || !bytes.Equal(res.KeySet.Signed(), signed) {
		t.Fatalf("the join's key set: %+v", res.KeySet)
	}
	dir := t.TempDir()
	path, fp, err := join.WriteKeySet(dir, res)
	if err != nil {
		t.Fatal(err)
	}
	want := owner.Fingerprint()
	if fp != hex.EncodeToString(want[:]) || path != filepath.Join(dir, join.KeySetFile) {
		t.Errorf("WriteKeySet: %s %s", path, fp)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var kept join.PinnedKeySet
	if err := json.Unmarshal(b, &kept); err != nil || kept.Owner != fp || !bytes.Equal(kept.Signed, signed) {
		t.Errorf("%s: %s (%v)", join.KeySetFile, b, err)
	}
	// A plain code of the same owner (e2ee off) joins without a set, and
	// WriteKeySet then removes the file of the earlier join.
	plain, err := srv.NewPlainClaim("alice")
	if err != nil || len(plain.Code) != claimcode.Len {
		t.Fatalf("plain code %q: %v", plain.Code, err)
	}
	res, err = join.Join(context.Background(), join.Request{URL: hs.URL, Code: plain.Code, Key: deviceKey(t), Seq: 1})
	if err != nil || res.KeySet != nil {
		t.Fatalf("join with a plain code: %v, key set %v", err, res.KeySet)
	}
	if _, fp, err := join.WriteKeySet(dir, res); err != nil || fp != "" {
		t.Fatalf("WriteKeySet without a set: %q %v", fp, err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after a join without e2ee: %v", join.KeySetFile, err)
	}
}

// TestJoinE2EEOtherIdentity: a receiver that answers a code committing to
// alice's identity with the set of another identity (or none, or a broken
// one) fails the join with ErrKeySet.
func TestJoinE2EEOtherIdentity(t *testing.T) {
	cert := selfSigned(t)
	rdir := t.TempDir()
	srv, err := receiver.Open(receiver.Options{Dir: rdir, TLSCertificate: cert.Certificate[0]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	mallory := newE2EEOwner(t)
	malloryKS, err := mallory.KeySet(9)
	if err != nil {
		t.Fatal(err)
	}
	var substitute atomic.Value // the keyset the receiver answers instead
	h := srv.Handler()
	hs, _ := tlsServer(t, cert, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != claimcode.JoinPath {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		var jr claimcode.JoinResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &jr); err != nil || rec.Code != http.StatusOK {
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
			return
		}
		jr.KeySet = substitute.Load().(json.RawMessage)
		json.NewEncoder(w).Encode(jr)
	}))
	putKeySet(t, rdir, srv, hs, "alice", newE2EEOwner(t), 1)
	broken := bytes.Clone(malloryKS.Signed())
	broken[len(broken)-4] ^= 1
	for name, ks := range map[string]json.RawMessage{
		"another identity": malloryKS.Signed(),
		"no set":           nil,
		"a broken set":     broken,
	} {
		cc, err := srv.NewClaim("alice")
		if err != nil {
			t.Fatal(err)
		}
		substitute.Store(ks)
		_, err = join.Join(context.Background(), join.Request{URL: hs.URL, Code: cc.Code, Key: deviceKey(t), Seq: 1})
		if !errors.Is(err, join.ErrKeySet) {
			t.Errorf("%s: %v, want ErrKeySet", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
}
