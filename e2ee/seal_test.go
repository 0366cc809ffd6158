package e2ee

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// mixedOwner has one X25519 key and one ML-KEM-768+X25519 key.
func mixedOwner(t testing.TB) *Owner {
	t.Helper()
	o := newTestOwner(t, 1)
	if _, err := o.AddKey(KEMMLKEM768X25519, "hybrid", false); err != nil {
		t.Fatal(err)
	}
	return o
}

func mustSealer(t testing.TB, o *Owner) *Sealer {
	t.Helper()
	s, err := NewSealer(mustKeySet(t, o, 1))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testBinding() Binding {
	return Binding{Device: "kf-0123456789abcdef", Event: "ev-42", Seq: 7, Role: RoleThumbnail}
}

func TestSealOpenBothKEMs(t *testing.T) {
	o := mixedOwner(t)
	s := mustSealer(t, o)
	pt := make([]byte, 3000)
	rand.Read(pt)
	sealed, err := s.Seal(testBinding(), pt)
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseHeader(sealed)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Recipients) != 2 || h.Recipients[0].KEM != KEMX25519 || h.Recipients[1].KEM != KEMMLKEM768X25519 || h.KEM != KEMX25519 {
		t.Fatalf("header %+v", h)
	}
	if len(sealed) != h.Size+len(pt)+TagSize {
		t.Fatalf("sealed %d bytes, header %d, plaintext %d", len(sealed), h.Size, len(pt))
	}
	b := testBinding()
	b.Owner = o.Fingerprint()
	for _, k := range o.Keys {
		got, err := Open(sealed, b, k.ID, k.Priv)
		if err != nil {
			t.Fatalf("kem %#x: %v", k.KEM, err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("kem %#x: opened other bytes", k.KEM)
		}
	}
	if got, err := o.Open(sealed, testBinding()); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Owner.Open: %v", err)
	}
	// The plaintext does not appear in the sealed object.
	if bytes.Contains(sealed, pt[:32]) {
		t.Fatal("plaintext in the sealed object")
	}
}

func TestSealEmptyPlaintext(t *testing.T) {
	o := newTestOwner(t, 1)
	sealed, err := mustSealer(t, o).Seal(testBinding(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := o.Open(sealed, testBinding())
	if err != nil || len(got) != 0 {
		t.Fatalf("%q, %v", got, err)
	}
}

func TestOpenRefusesMovedObject(t *testing.T) {
	o := newTestOwner(t, 2)
	other := newTestOwner(t, 1)
	sealed, err := mustSealer(t, o).Seal(testBinding(), []byte("a picture"))
	if err != nil {
		t.Fatal(err)
	}
	k := o.Keys[1]
	moves := map[string]func(b *Binding){
		"device": func(b *Binding) { b.Device += "x" },
		"event":  func(b *Binding) { b.Event = "ev-43" },
		"seq":    func(b *Binding) { b.Seq++ },
		"role":   func(b *Binding) { b.Role = RoleFrames },
		"owner":  func(b *Binding) { b.Owner = other.Fingerprint() },
		// lp() keeps fields apart: the same bytes split differently.
		"split": func(b *Binding) { b.Device += b.Event[:1]; b.Event = b.Event[1:] },
	}
	good := testBinding()
	good.Owner = o.Fingerprint()
	if _, err := Open(sealed, good, k.ID, k.Priv); err != nil {
		t.Fatalf("unmoved: %v", err)
	}
	for name, move := range moves {
		b := good
		move(&b)
		if _, err := Open(sealed, b, k.ID, k.Priv); !errors.Is(err, ErrOpen) {
			t.Errorf("moved %s: %v, want ErrOpen", name, err)
		}
	}
}

func TestOpenRefusesAnyFlippedByte(t *testing.T) {
	o := mixedOwner(t)
	s := mustSealer(t, o)
	sealed, err := s.Seal(testBinding(), []byte("a small picture"))
	if err != nil {
		t.Fatal(err)
	}
	b := testBinding()
	b.Owner = o.Fingerprint()
	for _, k := range o.Keys {
		if _, err := Open(sealed, b, k.ID, k.Priv); err != nil {
			t.Fatalf("kem %#x: unflipped: %v", k.KEM, err)
		}
		for i := range sealed {
			c := bytes.Clone(sealed)
			c[i] ^= 0x01
			if _, err := Open(c, b, k.ID, k.Priv); err == nil {
				t.Fatalf("kem %#x: byte %d flipped: opened", k.KEM, i)
			}
		}
	}
	for _, n := range []int{1, len(sealed) - 1} {
		if _, err := o.Open(sealed[:n], testBinding()); err == nil {
			t.Fatalf("truncated to %d bytes: opened", n)
		}
	}
}

func TestOpenWrongKey(t *testing.T) {
	o := newTestOwner(t, 1)
	stranger := newTestOwner(t, 1)
	sealed, err := mustSealer(t, o).Seal(testBinding(), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	b := testBinding()
	b.Owner = o.Fingerprint()
	k := stranger.Keys[0]
	_, err = Open(sealed, b, k.ID, k.Priv)
	if !errors.Is(err, ErrNotRecipient) || !strings.Contains(err.Error(), k.ID) {
		t.Fatalf("stranger's key: %v, want ErrNotRecipient naming %s", err, k.ID)
	}
	if _, err := stranger.Open(sealed, testBinding()); !errors.Is(err, ErrNotRecipient) {
		t.Fatalf("Owner.Open by a stranger: %v", err)
	}
	// The right id with the wrong private key.
	if _, err := Open(sealed, b, o.Keys[0].ID, k.Priv); !errors.Is(err, ErrOpen) {
		t.Fatalf("wrong private key: %v, want ErrOpen", err)
	}
}

func TestOpenCommitMismatch(t *testing.T) {
	o := newTestOwner(t, 1)
	s := mustSealer(t, o)
	key := bytes.Repeat([]byte{1}, KeySize)
	nonce := make([]byte, NonceSize)
	wrong := Commit(bytes.Repeat([]byte{2}, KeySize))
	// Everything authentic (the wrap, and the content under aad naming this
	// header) except that the commitment is to another key.
	sealed, err := s.seal(testBinding(), []byte("x"), key, nonce, wrong)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Open(sealed, testBinding()); !errors.Is(err, ErrCommit) {
		t.Fatalf("wrong commitment: %v, want ErrCommit", err)
	}
	right, err := s.seal(testBinding(), []byte("x"), key, nonce, Commit(key))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Open(right, testBinding()); err != nil {
		t.Fatalf("right commitment: %v", err)
	}
}

func TestParseHeaderBounds(t *testing.T) {
	o := newTestOwner(t, 2)
	sealed, err := mustSealer(t, o).Seal(testBinding(), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	set := func(off int, v ...byte) []byte {
		c := bytes.Clone(sealed)
		copy(c[off:], v)
		return c
	}
	u16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	r0 := fixedHeaderSize // the first recipient entry
	cases := []struct {
		name  string
		b     []byte
		field string
	}{
		{"magic", set(0, 'K', 'F', 'E', '2'), "magic"},
		{"kdf", set(6, u16(2)...), "kdf_id"},
		{"aead", set(8, u16(3)...), "aead_id"},
		{"kem_id", set(4, u16(KEMMLKEM768X25519)...), "kem_id"},
		{"n zero", set(42, 0), "n"},
		{"n 17", set(42, 17), "n"},
		{"n 3", set(42, 3), "recipients[2]"},
		{"kem", set(r0+16, u16(0x21)...), "recipients[0].kem"},
		{"enc_len", set(r0+18, u16(33)...), "recipients[0].enc_len"},
		{"wk_len", set(r0+20+32, u16(48)...), "recipients[0].wk_len"},
		{"duplicate key id", set(r0+16+4+32+2+32, sealed[r0:r0+16]...), "recipients[1].key_id"},
		{"short", sealed[:20], "shorter than a header"},
		{"no tag", sealed[:len(sealed)-2], "ct"},
		{"no nonce", sealed[:len(sealed)-1-TagSize-8], "nonce"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseHeader(c.b)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("%v, want ErrMalformed naming %q", err, c.field)
			}
		})
	}
	big := make([]byte, MaxSealedSize+1)
	copy(big, sealed)
	if _, err := ParseHeader(big); !errors.Is(err, ErrMalformed) {
		t.Fatalf("64 MiB + 1: %v", err)
	}
}

func TestSealBounds(t *testing.T) {
	o := newTestOwner(t, 1)
	s := mustSealer(t, o)
	b := testBinding()
	b.Role = "poster"
	if _, err := s.Seal(b, nil); err == nil || !strings.Contains(err.Error(), "role") {
		t.Fatalf("unknown role: %v", err)
	}
	if _, err := s.Seal(testBinding(), make([]byte, MaxSealedSize)); err == nil {
		t.Fatal("64 MiB of plaintext sealed")
	}
	if _, err := NewSealer(nil); err == nil {
		t.Fatal("NewSealer(nil)")
	}
}
