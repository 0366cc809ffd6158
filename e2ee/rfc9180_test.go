package e2ee

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/sha256"
	"crypto/sha3"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"testing"
)

// rfcVector is e2ee/testdata/rfc9180-a1.json.
type rfcVector struct {
	Mode                   int    `json:"mode"`
	KEM                    uint16 `json:"kem_id"`
	KDF                    uint16 `json:"kdf_id"`
	AEAD                   uint16 `json:"aead_id"`
	Info                   string `json:"info"`
	IkmE, IkmR             string
	SkRm, PkRm, SkEm, PkEm string
	Enc                    string `json:"enc"`
	AccEncryptions         string `json:"encryptions_accumulated"`
	AccExports             string `json:"exports_accumulated"`
	SharedSecret           string `json:"shared_secret"`
	Key                    string `json:"key"`
	BaseNonce              string `json:"base_nonce"`
	ExpSecr                string `json:"exporter_secret"`
	Encryptions            []struct {
		Seq                uint64
		Pt, Aad, Nonce, Ct string
	}
	Exports []struct {
		Context, Value string
		L              int
	}
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("hex %q: %v", s, err)
	}
	return b
}

// An independent RFC 9180 base mode for DHKEM(X25519, HKDF-SHA256),
// HKDF-SHA256, AES-128-GCM, from crypto/ecdh, crypto/hkdf and AES-GCM: what a
// browser builds from WebCrypto. It checks crypto/hpke against the RFC's
// published intermediate values, and our sealed objects against a second
// implementation.

func labeledExtract(suite []byte, salt []byte, label string, ikm []byte) []byte {
	in := append(append(append([]byte("HPKE-v1"), suite...), label...), ikm...)
	prk, err := hkdf.Extract(sha256.New, in, salt)
	if err != nil {
		panic(err)
	}
	return prk
}

func labeledExpand(suite []byte, prk []byte, label string, info []byte, l int) []byte {
	in := binary.BigEndian.AppendUint16(nil, uint16(l))
	in = append(append(append(append(in, "HPKE-v1"...), suite...), label...), info...)
	out, err := hkdf.Expand(sha256.New, prk, string(in), l)
	if err != nil {
		panic(err)
	}
	return out
}

var (
	kemSuite  = []byte{'K', 'E', 'M', 0x00, 0x20}
	hpkeSuite = []byte{'H', 'P', 'K', 'E', 0x00, 0x20, 0x00, 0x01, 0x00, 0x01}
)

// refDeriveKeyPair is DeriveKeyPair for X25519 (RFC 9180 §7.1.3).
func refDeriveKeyPair(ikm []byte) *ecdh.PrivateKey {
	prk := labeledExtract(kemSuite, nil, "dkp_prk", ikm)
	sk, err := ecdh.X25519().NewPrivateKey(labeledExpand(kemSuite, prk, "sk", nil, 32))
	if err != nil {
		panic(err)
	}
	return sk
}

// refSharedSecret is ExtractAndExpand(DH(sk, pk), enc ‖ pkR).
func refSharedSecret(sk *ecdh.PrivateKey, pk *ecdh.PublicKey, enc, pkR []byte) []byte {
	dh, err := sk.ECDH(pk)
	if err != nil {
		panic(err)
	}
	prk := labeledExtract(kemSuite, nil, "eae_prk", dh)
	return labeledExpand(kemSuite, prk, "shared_secret", append(bytes.Clone(enc), pkR...), 32)
}

type refContext struct {
	key, baseNonce, exporterSecret []byte
}

func refKeySchedule(shared, info []byte) refContext {
	ctx := []byte{0}
	ctx = append(ctx, labeledExtract(hpkeSuite, nil, "psk_id_hash", nil)...)
	ctx = append(ctx, labeledExtract(hpkeSuite, nil, "info_hash", info)...)
	secret := labeledExtract(hpkeSuite, shared, "secret", nil)
	return refContext{
		key:            labeledExpand(hpkeSuite, secret, "key", ctx, 16),
		baseNonce:      labeledExpand(hpkeSuite, secret, "base_nonce", ctx, 12),
		exporterSecret: labeledExpand(hpkeSuite, secret, "exp", ctx, 32),
	}
}

func (c refContext) nonce(seq uint64) []byte {
	n := bytes.Clone(c.baseNonce)
	for i := range 8 {
		n[11-i] ^= byte(seq >> (8 * i))
	}
	return n
}

func (c refContext) gcm() cipher.AEAD {
	b, err := aes.NewCipher(c.key)
	if err != nil {
		panic(err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	return g
}

// refOpenWrap opens a sealed object's wrapped content key (sequence 0,
// aad "") with an X25519 private key, independently of crypto/hpke.
func refOpenWrap(skR *ecdh.PrivateKey, enc, wk, info []byte) ([]byte, error) {
	pkE, err := ecdh.X25519().NewPublicKey(enc)
	if err != nil {
		return nil, err
	}
	c := refKeySchedule(refSharedSecret(skR, pkE, enc, skR.PublicKey().Bytes()), info)
	return c.gcm().Open(nil, c.nonce(0), wk, nil)
}

func loadRFCVector(t *testing.T) rfcVector {
	t.Helper()
	b, err := os.ReadFile("testdata/rfc9180-a1.json")
	if err != nil {
		t.Fatal(err)
	}
	var v rfcVector
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if v.Mode != 0 || v.KEM != 0x20 || v.KDF != 1 || v.AEAD != 1 || len(v.Encryptions) != 6 || len(v.Exports) != 3 {
		t.Fatalf("testdata/rfc9180-a1.json is not A.1's base mode entry: %+v", v)
	}
	return v
}

func TestRFC9180A1(t *testing.T) {
	v := loadRFCVector(t)
	kem := hpke.DHKEM(ecdh.X25519())
	info := unhex(t, v.Info)

	// DeriveKeyPair(ikmR) gives pkRm, and skRm serialized.
	priv, err := kem.DeriveKeyPair(unhex(t, v.IkmR))
	if err != nil {
		t.Fatal(err)
	}
	if got := priv.PublicKey().Bytes(); !bytes.Equal(got, unhex(t, v.PkRm)) {
		t.Fatalf("DeriveKeyPair(ikmR) public key %x, want pkRm %s", got, v.PkRm)
	}
	// Go serializes an X25519 private key clamped (RFC 9180 §7.1.2); the
	// RFC lists skRm unclamped.
	skRm := unhex(t, v.SkRm)
	clamped := bytes.Clone(skRm)
	clamped[0] &= 248
	clamped[31] &= 127
	clamped[31] |= 64
	if got, err := priv.Bytes(); err != nil || !bytes.Equal(got, clamped) {
		t.Fatalf("DeriveKeyPair(ikmR) private key %x (%v), want skRm %s clamped", got, err, v.SkRm)
	}
	if k, err := kem.NewPrivateKey(skRm); err != nil || !bytes.Equal(k.PublicKey().Bytes(), unhex(t, v.PkRm)) {
		t.Fatalf("NewPrivateKey(skRm): %v", err)
	}
	if got := refDeriveKeyPair(unhex(t, v.IkmE)); !bytes.Equal(got.Bytes(), unhex(t, v.SkEm)) || !bytes.Equal(got.PublicKey().Bytes(), unhex(t, v.PkEm)) {
		t.Fatalf("reference DeriveKeyPair(ikmE) = %x, want skEm %s", got.Bytes(), v.SkEm)
	}
	if v.PkEm != v.Enc {
		t.Fatal("enc is not pkEm")
	}

	// crypto/hpke's recipient opens the encryptions in order (its counter
	// only steps by one), and exports.
	r, err := hpke.NewRecipient(unhex(t, v.Enc), priv, hpke.HKDFSHA256(), hpke.AES128GCM(), info)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range v.Encryptions[:3] {
		got, err := r.Open(unhex(t, e.Aad), unhex(t, e.Ct))
		if err != nil || !bytes.Equal(got, unhex(t, e.Pt)) {
			t.Fatalf("seq %d: %x, %v", e.Seq, got, err)
		}
	}
	for _, x := range v.Exports {
		got, err := r.Export(string(unhex(t, x.Context)), x.L)
		if err != nil || !bytes.Equal(got, unhex(t, x.Value)) {
			t.Fatalf("export %q: %x, %v, want %s", x.Context, got, err, x.Value)
		}
	}

	// The reference key schedule reproduces the published intermediate
	// values and opens every encryption, the skipped sequence numbers too.
	skR, err := ecdh.X25519().NewPrivateKey(unhex(t, v.SkRm))
	if err != nil {
		t.Fatal(err)
	}
	pkE, err := ecdh.X25519().NewPublicKey(unhex(t, v.Enc))
	if err != nil {
		t.Fatal(err)
	}
	shared := refSharedSecret(skR, pkE, unhex(t, v.Enc), unhex(t, v.PkRm))
	if !bytes.Equal(shared, unhex(t, v.SharedSecret)) {
		t.Fatalf("shared secret %x, want %s", shared, v.SharedSecret)
	}
	c := refKeySchedule(shared, info)
	if !bytes.Equal(c.key, unhex(t, v.Key)) || !bytes.Equal(c.baseNonce, unhex(t, v.BaseNonce)) || !bytes.Equal(c.exporterSecret, unhex(t, v.ExpSecr)) {
		t.Fatalf("key schedule %x %x %x, want %s %s %s", c.key, c.baseNonce, c.exporterSecret, v.Key, v.BaseNonce, v.ExpSecr)
	}
	g := c.gcm()
	for _, e := range v.Encryptions {
		if n := c.nonce(e.Seq); !bytes.Equal(n, unhex(t, e.Nonce)) {
			t.Fatalf("seq %d: nonce %x, want %s", e.Seq, n, e.Nonce)
		}
		if ct := g.Seal(nil, c.nonce(e.Seq), unhex(t, e.Pt), unhex(t, e.Aad)); !bytes.Equal(ct, unhex(t, e.Ct)) {
			t.Fatalf("seq %d: reference ct %x, want %s", e.Seq, ct, e.Ct)
		}
	}

	// Go's accumulated values: 1000 random encryptions (sealed by the
	// reference sender, whose ephemeral key is DeriveKeyPair(ikmE), opened
	// by crypto/hpke) and 1000 exports, each stream hashed with SHAKE128.
	r2, err := hpke.NewRecipient(unhex(t, v.Enc), priv, hpke.HKDFSHA256(), hpke.AES128GCM(), info)
	if err != nil {
		t.Fatal(err)
	}
	source, sink := sha3.NewSHAKE128(), sha3.NewSHAKE128()
	for seq := range uint64(1000) {
		aad, pt := drawInput(t, source), drawInput(t, source)
		ct := g.Seal(nil, c.nonce(seq), pt, aad)
		sink.Write(ct)
		if got, err := r2.Open(aad, ct); err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("accumulated encryption %d: %v", seq, err)
		}
	}
	if got := shakeSum(sink); got != v.AccEncryptions {
		t.Fatalf("accumulated encryptions %s, want %s", got, v.AccEncryptions)
	}
	source, sink = sha3.NewSHAKE128(), sha3.NewSHAKE128()
	for l := range 1000 {
		ctx := string(drawInput(t, source))
		got, err := r.Export(ctx, l)
		if err != nil {
			t.Fatal(err)
		}
		sink.Write(got)
	}
	if got := shakeSum(sink); got != v.AccExports {
		t.Fatalf("accumulated exports %s, want %s", got, v.AccExports)
	}
}

// drawInput reads a length byte and that many bytes (Go's hpke_test.go).
func drawInput(t *testing.T, r io.Reader) []byte {
	t.Helper()
	l := make([]byte, 1)
	if _, err := r.Read(l); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, int(l[0]))
	if _, err := r.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func shakeSum(s *sha3.SHAKE) string {
	out := make([]byte, 16)
	s.Read(out)
	return hex.EncodeToString(out)
}
