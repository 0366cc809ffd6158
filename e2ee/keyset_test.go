package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func newTestOwner(t testing.TB, n int) *Owner {
	t.Helper()
	o, err := NewOwner(n)
	if err != nil {
		t.Fatal(err)
	}
	o.Now = func() time.Time { return time.UnixMilli(1765000000000) }
	return o
}

func mustKeySet(t testing.TB, o *Owner, version uint64) *KeySet {
	t.Helper()
	ks, err := o.KeySet(version)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func TestKeySetRoundTrip(t *testing.T) {
	o := newTestOwner(t, 3)
	ks := mustKeySet(t, o, 7)
	got, err := ParseSigned(ks.Signed())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Raw, ks.Raw) || !bytes.Equal(got.Sig, ks.Sig) || got.Version != 7 || got.TimeMs != 1765000000000 {
		t.Fatalf("parsed %+v, want %+v", got, ks)
	}
	if got.Owner() != o.Fingerprint() {
		t.Fatal("owner fingerprint differs")
	}
	if len(got.Keys) != 3 {
		t.Fatalf("%d keys, want 3", len(got.Keys))
	}
	for i, k := range got.Keys {
		if k.ID != o.Keys[i].ID || k.KEM != KEMX25519 || !bytes.Equal(k.Pub, o.Keys[i].Pub) || k.Name != o.Keys[i].Name || k.Recovery != (i == 0) {
			t.Errorf("keys[%d] = %+v, want %+v", i, k, o.Keys[i])
		}
	}
}

func TestFingerprintAndClaimCommit(t *testing.T) {
	// Computed independently: printf 'keyframe e2ee identity v1\0' | cat - <(head -c32 /dev/zero) | sha256sum
	fp := Fingerprint(make(ed25519.PublicKey, 32))
	if got := hex.EncodeToString(fp[:]); got != "b756cdb006dce126ff33835f1add375dc58a68e8a3da4e11d855bbc670a3d3cf" {
		t.Fatalf("Fingerprint(zero key) = %s", got)
	}
	// printf 'keyframe e2ee key id v1\0\0\x20' | cat - <(head -c32 /dev/zero) | sha256sum
	if got := KeyID(KEMX25519, make([]byte, 32)); got != "56642b48d60e9c0df0b427d05b154538" {
		t.Fatalf("KeyID(32, zero key) = %s", got)
	}
	c := ClaimCommit(fp)
	if len(c) != 13 || !bytes.Equal(c[:12], fp[:12]) || c[12] != fp[12]&0xf0 {
		t.Fatalf("ClaimCommit = %x for %x", c, fp)
	}
}

func TestKeySetTamperRefused(t *testing.T) {
	o := newTestOwner(t, 2)
	ks := mustKeySet(t, o, 1)
	for i := range ks.Raw {
		raw := bytes.Clone(ks.Raw)
		raw[i] ^= 0x01
		if _, err := ParseKeySet(raw, ks.Sig); err == nil {
			t.Fatalf("raw byte %d flipped: accepted", i)
		}
	}
	for i := range ks.Sig {
		sig := bytes.Clone(ks.Sig)
		sig[i] ^= 0x80
		if _, err := ParseKeySet(ks.Raw, sig); err == nil {
			t.Fatalf("sig byte %d flipped: accepted", i)
		}
	}
	wire := ks.Signed()
	for i := range wire {
		w := bytes.Clone(wire)
		w[i] ^= 0x01
		if _, err := ParseSigned(w); err == nil {
			t.Fatalf("wire byte %d flipped (%q): accepted", i, w)
		}
	}
	// A KeySet altered after parsing is refused by Accept.
	bad := *ks
	bad.Raw = bytes.Replace(bad.Raw, []byte(`"version":1`), []byte(`"version":9`), 1)
	if err := Accept(o.Fingerprint(), nil, &bad); !errors.Is(err, ErrSignature) {
		t.Fatalf("Accept of an altered set: %v, want ErrSignature", err)
	}
}

func TestAccept(t *testing.T) {
	o := newTestOwner(t, 2)
	other := newTestOwner(t, 2)
	pinned := o.Fingerprint()
	v1 := mustKeySet(t, o, 1)
	v2 := mustKeySet(t, o, 2)
	o.Keys = o.Keys[:1]
	v2b := mustKeySet(t, o, 2)
	if err := Accept(pinned, nil, v1); err != nil {
		t.Fatalf("first set: %v", err)
	}
	if err := Accept(pinned, v1, v2); err != nil {
		t.Fatalf("newer set: %v", err)
	}
	if err := Accept(pinned, v2, v2); err != nil {
		t.Fatalf("the same set again: %v", err)
	}
	if err := Accept(pinned, v2, v1); !errors.Is(err, ErrRollback) {
		t.Fatalf("older set: %v, want ErrRollback", err)
	}
	if err := Accept(pinned, v2, v2b); !errors.Is(err, ErrRollback) {
		t.Fatalf("same version, other bytes: %v, want ErrRollback", err)
	}
	o2 := mustKeySet(t, other, 5)
	if err := Accept(pinned, v1, o2); !errors.Is(err, ErrOtherIdentity) {
		t.Fatalf("another identity's set: %v, want ErrOtherIdentity", err)
	}
	if err := Accept(pinned, nil, o2); !errors.Is(err, ErrOtherIdentity) {
		t.Fatalf("another identity's first set: %v, want ErrOtherIdentity", err)
	}
}

// signRaw signs raw with o's identity, as a browser would, whatever raw says.
func signRaw(o *Owner, raw []byte) []byte {
	return ed25519.Sign(o.Identity, signedMessage(raw))
}

func TestKeySetMalformed(t *testing.T) {
	o := newTestOwner(t, 2)
	good := string(mustKeySet(t, o, 3).Raw)
	idB64 := base64.RawURLEncoding.EncodeToString(o.Identity.Public().(ed25519.PublicKey))
	pub0 := base64.RawURLEncoding.EncodeToString(o.Keys[0].Pub)
	id0 := o.Keys[0].ID
	id1 := o.Keys[1].ID
	rep := func(old, new string) string {
		if !strings.Contains(good, old) {
			t.Fatalf("%q not in %s", old, good)
		}
		return strings.Replace(good, old, new, 1)
	}
	manyKeys := func(n int) string {
		var parts []string
		for i := range n {
			p := make([]byte, 32)
			p[0] = byte(i)
			parts = append(parts, fmt.Sprintf(`{"id":%q,"kem":32,"pub":%q,"name":"","recovery":false}`, KeyID(32, p), base64.RawURLEncoding.EncodeToString(p)))
		}
		return fmt.Sprintf(`{"v":1,"identity":%q,"version":1,"time_ms":0,"keys":[%s]}`, idB64, strings.Join(parts, ","))
	}
	cases := []struct {
		name, raw, field string
	}{
		{"unknown member", rep(`"v":1,`, `"v":1,"x":1,`), "x"},
		{"unknown key member", rep(`"recovery":true`, `"recovery":true,"extra":1`), "keys[0].extra"},
		{"member in other case", rep(`"version":3`, `"Version":3`), "Version"},
		{"duplicate member", rep(`"version":3`, `"version":3,"version":4`), "version"},
		{"duplicate key member", rep(`"kem":32`, `"kem":32,"kem":32`), "keys[0].kem"},
		{"trailing data", good + ` {}`, "data after"},
		{"trailing garbage", good + `x`, "data after"},
		{"v", rep(`"v":1`, `"v":2`), "v"},
		{"identity padded", rep(idB64, idB64+"="), "identity"},
		{"identity std base64", rep(`"identity":"`, `"identity":"+`), "identity"},
		{"identity short", rep(idB64, idB64[:42]), "identity"},
		{"identity type", rep(`"identity":"`+idB64+`"`, `"identity":7`), "identity"},
		{"version zero", rep(`"version":3`, `"version":0`), "version"},
		{"version 2^53", rep(`"version":3`, `"version":9007199254740992`), "version"},
		{"version fraction", rep(`"version":3`, `"version":1.5`), "version"},
		{"version negative", rep(`"version":3`, `"version":-3`), "version"},
		{"version string", rep(`"version":3`, `"version":"3"`), "version"},
		{"time_ms negative", rep(`"time_ms":1765000000000`, `"time_ms":-1`), "time_ms"},
		{"no keys", rep(good[strings.Index(good, `"keys":`):len(good)-1], `"keys":[]`), "keys"},
		{"17 keys", manyKeys(17), "keys"},
		{"kem", rep(`"kem":32`, `"kem":33`), "keys[0].kem"},
		{"kem too big", rep(`"kem":32`, `"kem":65568`), "keys.kem"},
		{"pub size", rep(pub0, pub0[:40]), "keys[0].pub"},
		{"pub base64", rep(pub0, pub0+"=="), "keys[0].pub"},
		{"id", rep(id0, id1), "keys[0].id"},
		{"id upper case", rep(id0, strings.ToUpper(id0)), "keys[0].id"},
		{"ids twice", rep(`"keys":[`, `"keys":[`+good[strings.Index(good, `{"id":"`+id1):len(good)-2]+`,`), "keys[2].id"},
		{"name", rep(`"name":"key 1"`, `"name":"`+strings.Repeat("n", 65)+`"`), "keys[0].name"},
		{"two recovery keys", rep(`"recovery":false`, `"recovery":true`), "keys[1].recovery"},
		{"too big", rep(`"name":"key 1"`, `"name":"`+strings.Repeat(" ", 17000)+`"`), "more than 16384"},
		{"not JSON", `{"v":1,`, "not JSON"},
		{"no version", rep(`"version":3,`, ``), "version"},
		{"no identity", rep(`"identity":"`+idB64+`",`, ``), "identity"},
		{"keys null", rep(good[strings.Index(good, `"keys":`):len(good)-1], `"keys":null`), "keys"},
		{"no pub", rep(`"pub":"`+pub0+`",`, ``), "keys[0].pub"},
	}
	// The case list must still hold a good set.
	if _, err := ParseKeySet([]byte(good), signRaw(o, []byte(good))); err != nil {
		t.Fatalf("the good set: %v", err)
	}
	if _, err := ParseKeySet([]byte(manyKeys(16)), signRaw(o, []byte(manyKeys(16)))); err != nil {
		t.Fatalf("16 keys: %v", err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseKeySet([]byte(c.raw), signRaw(o, []byte(c.raw)))
			if err == nil {
				t.Fatalf("accepted %s", c.raw)
			}
			t.Log(err)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.field) || !strings.HasPrefix(err.Error(), "e2ee: ") {
				t.Fatalf("error %q: want ErrMalformed naming %q", err, c.field)
			}
		})
	}
}

func TestSignedMalformed(t *testing.T) {
	o := newTestOwner(t, 1)
	ks := mustKeySet(t, o, 1)
	k := base64.RawURLEncoding.EncodeToString(ks.Raw)
	s := base64.RawURLEncoding.EncodeToString(ks.Sig)
	cases := []struct{ name, wire, field string }{
		{"unknown member", `{"keyset":"` + k + `","sig":"` + s + `","x":0}`, "x"},
		{"duplicate", `{"keyset":"` + k + `","keyset":"` + k + `","sig":"` + s + `"}`, "keyset"},
		{"trailing", `{"keyset":"` + k + `","sig":"` + s + `"}[]`, "data after"},
		{"sig padded", `{"keyset":"` + k + `","sig":"` + s + `=="}`, "sig"},
		{"sig short", `{"keyset":"` + k + `","sig":"` + s[:84] + `"}`, "sig"},
		{"keyset with newline", `{"keyset":"` + k[:10] + `\n` + k[10:] + `","sig":"` + s + `"}`, "keyset"},
		{"too big", `{"keyset":"` + strings.Repeat("A", 30000) + `","sig":"` + s + `"}`, "bytes, more than"},
	}
	if _, err := ParseSigned([]byte(`{"keyset":"` + k + `","sig":"` + s + `"}` + "\n")); err != nil {
		t.Fatalf("good wire form with a final newline: %v", err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseSigned([]byte(c.wire))
			if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("error %v: want ErrMalformed naming %q", err, c.field)
			}
		})
	}
}
