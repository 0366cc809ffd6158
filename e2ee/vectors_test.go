package e2ee

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/sha256"
	"crypto/sha3"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"testing"
	"testing/cryptotest"
	"time"
)

var update = flag.Bool("update", false, "regenerate testdata/vectors.json")

const vectorsFile = "testdata/vectors.json"

// vectorSeed seeds crypto/rand (cryptotest.SetGlobalRandom) while the
// vectors are sealed: content keys, nonces, HPKE ephemeral keys, the stream
// id and key. Everything else is fixed below.
const vectorSeed = 20261207

// Vectors is testdata/vectors.json: our format's test vectors
// (docs/e2ee.md §10). Every byte string is hex.
type Vectors struct {
	Description string            `json:"description"`
	Owner       vectorOwner       `json:"owner"`
	Recipients  []vectorKey       `json:"recipients"`
	KeySet      vectorKeySet      `json:"keyset"`
	Thumbnail   vectorSealed      `json:"thumbnail"`
	Live        vectorLive        `json:"live"`
	Labels      map[string]string `json:"labels"`
}

type vectorOwner struct {
	IdentitySeed   string `json:"identity_seed"`
	IdentityPublic string `json:"identity_public"`
	Fingerprint    string `json:"fingerprint"`
	ClaimCommit    string `json:"claim_commit"`
}

type vectorKey struct {
	ID         string `json:"id"`
	KEM        uint16 `json:"kem"`
	Name       string `json:"name"`
	Recovery   bool   `json:"recovery"`
	Derivation string `json:"derivation"`
	// RecoverySecret is the recovery secret (for the recovery key), IKM
	// DeriveKeyPair's input.
	RecoverySecret string `json:"recovery_secret,omitempty"`
	IKM            string `json:"ikm"`
	PrivateKey     string `json:"private_key"`
	PublicKey      string `json:"public_key"`
}

type vectorKeySet struct {
	Version   uint64 `json:"version"`
	Raw       string `json:"raw"`
	RawText   string `json:"raw_text"`
	SignedMsg string `json:"signed_message"`
	Sig       string `json:"sig"`
	Signed    string `json:"signed"`
}

type vectorBinding struct {
	Device string `json:"device"`
	Event  string `json:"event"`
	Seq    uint64 `json:"seq"`
	Role   string `json:"role"`
	Bytes  string `json:"bytes"`
}

type vectorSealed struct {
	Binding    vectorBinding `json:"binding"`
	Plaintext  string        `json:"plaintext"`
	PlainSHA   string        `json:"plaintext_sha256"`
	ContentKey string        `json:"content_key"`
	Commit     string        `json:"commit"`
	Nonce      string        `json:"nonce"`
	WrapInfo   string        `json:"wrap_info"`
	Wraps      []vectorWrap  `json:"wraps"`
	HeaderSize int           `json:"header_size"`
	Header     string        `json:"header"`
	Sealed     string        `json:"sealed"`
	SealedSHA  string        `json:"sealed_sha256"`
}

type vectorWrap struct {
	KeyID string `json:"key_id"`
	Enc   string `json:"enc"`
	WK    string `json:"wk"`
}

type vectorLive struct {
	Device    string        `json:"device"`
	StreamID  string        `json:"stream_id"`
	StreamKey string        `json:"stream_key"`
	Binding   vectorBinding `json:"key_frame_binding"`
	KeyFrame  string        `json:"key_frame"`
	Frames    []vectorFrame `json:"frames"`
}

type vectorFrame struct {
	Counter   uint64 `json:"counter"`
	Plaintext string `json:"plaintext"`
	Nonce     string `json:"nonce"`
	AAD       string `json:"aad"`
	Frame     string `json:"frame"`
}

func h(b []byte) string { return hex.EncodeToString(b) }

// shake is n bytes of SHAKE128(label): the vectors' fixed inputs.
func shake(label string, n int) []byte {
	out := make([]byte, n)
	s := sha3.NewSHAKE128()
	s.Write([]byte(label))
	s.Read(out)
	return out
}

// vectorOwnerKeys is the vectors' owner: fixed identity and keys.
func vectorOwnerKeys(t testing.TB) (*Owner, []vectorKey) {
	seed := shake("keyframe e2ee vector identity", ed25519.SeedSize)
	o := &Owner{
		Identity: ed25519.NewKeyFromSeed(seed),
		Now:      func() time.Time { return time.UnixMilli(1765000000000) },
	}
	secret := shake("keyframe e2ee vector recovery secret", RecoverySecretSize)
	rec, err := RecoveryKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	ikmBrowser := shake("keyframe e2ee vector browser key", 32)
	browser, err := hpke.DHKEM(ecdh.X25519()).DeriveKeyPair(ikmBrowser)
	if err != nil {
		t.Fatal(err)
	}
	recIKM, _ := hkdfRecovery(secret)
	var keys []vectorKey
	for _, k := range []struct {
		priv     hpke.PrivateKey
		name     string
		recovery bool
		deriv    string
		secret   []byte
		ikm      []byte
	}{
		{rec, "Recovery", true, "DeriveKeyPair(ikm), ikm = HKDF-SHA256(recovery_secret, salt \"\", info \"keyframe e2ee recovery kem v1\", 32)", secret, recIKM},
		{browser, "Chromium on Linux, 2026-12-07", false, "DeriveKeyPair(ikm) (a browser's key is random; this one is derived to be reproducible)", nil, ikmBrowser},
	} {
		ok, err := o.AddPrivateKey(k.priv, k.name, k.recovery)
		if err != nil {
			t.Fatal(err)
		}
		priv, err := k.priv.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		vk := vectorKey{ID: ok.ID, KEM: ok.KEM, Name: k.name, Recovery: k.recovery, Derivation: k.deriv,
			IKM: h(k.ikm), PrivateKey: h(priv), PublicKey: h(ok.Pub)}
		if k.secret != nil {
			vk.RecoverySecret = h(k.secret)
		}
		keys = append(keys, vk)
	}
	return o, keys
}

func hkdfRecovery(secret []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, secret, nil, "keyframe e2ee recovery kem v1", 32)
}

func vectorBindingOf(b Binding) vectorBinding {
	return vectorBinding{Device: b.Device, Event: b.Event, Seq: b.Seq, Role: b.Role, Bytes: h(b.Bytes())}
}

// makeVectors builds the vectors with crypto/rand seeded.
func makeVectors(t *testing.T) *Vectors {
	o, keys := vectorOwnerKeys(t)
	ks, err := o.KeySet(1)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSealer(ks)
	if err != nil {
		t.Fatal(err)
	}
	fp := o.Fingerprint()
	v := &Vectors{
		Description: "keyframe e2ee test vectors (docs/e2ee.md §10). Byte strings are hex. " +
			"private_key is RFC 9180 SerializePrivateKey (X25519: the clamped scalar). " +
			"Sealed objects: docs/e2ee.md §4; live: §8; key set: §3. Regenerate with go test ./e2ee -run TestVectors -update.",
		Owner: vectorOwner{
			IdentitySeed:   h(o.Identity.Seed()),
			IdentityPublic: h(o.Identity.Public().(ed25519.PublicKey)),
			Fingerprint:    h(fp[:]),
			ClaimCommit:    h(ClaimCommit(fp)),
		},
		Recipients: keys,
		KeySet: vectorKeySet{
			Version: ks.Version, Raw: h(ks.Raw), RawText: string(ks.Raw),
			SignedMsg: h(signedMessage(ks.Raw)), Sig: h(ks.Sig), Signed: string(ks.Signed()),
		},
		Labels: map[string]string{
			"fingerprint": h([]byte(fingerprintLabel)), "key_id": h([]byte(keyIDLabel)), "keyset_sig": h([]byte(keySetSigLabel)),
			"binding": h([]byte(bindingLabel)), "wrap_info": h([]byte(wrapInfoLabel)), "commit": h([]byte(commitLabel)),
			"live_aad": h([]byte(liveAADLabel)),
		},
	}

	cryptotest.SetGlobalRandom(t, vectorSeed)
	b := Binding{Owner: fp, Device: "kfd-3f9a1c2b7e004d51", Event: "0000019aee3c5a10-0007", Seq: 7, Role: RoleThumbnail}
	pt := shake("keyframe e2ee vector thumbnail", 30000)
	copy(pt, []byte{0xff, 0xd8, 0xff, 0xe0}) // looks like the JPEG it stands for
	sealed, err := s.Seal(b, pt)
	if err != nil {
		t.Fatal(err)
	}
	v.Thumbnail = describeSealed(t, o, b, pt, sealed)

	ls, kf, err := s.NewLive(b.Device)
	if err != nil {
		t.Fatal(err)
	}
	id, ksealed, err := ParseKeyFrame(kf)
	if err != nil {
		t.Fatal(err)
	}
	lb := Binding{Owner: fp, Device: b.Device, Event: id, Role: RoleLive}
	streamKey, err := o.Open(ksealed, lb)
	if err != nil {
		t.Fatal(err)
	}
	v.Live = vectorLive{Device: b.Device, StreamID: id, StreamKey: h(streamKey), Binding: vectorBindingOf(lb), KeyFrame: h(kf)}
	for i, f := range [][]byte{shake("keyframe e2ee vector live frame 1", 64), shake("keyframe e2ee vector live frame 2", 80)} {
		frame := ls.SealFrame(nil, f)
		v.Live.Frames = append(v.Live.Frames, vectorFrame{
			Counter: uint64(i + 1), Plaintext: h(f), Nonce: h(ls.nonce[:]), AAD: h(ls.aad), Frame: h(frame),
		})
	}
	return v
}

func describeSealed(t *testing.T, o *Owner, b Binding, pt, sealed []byte) vectorSealed {
	hd, err := ParseHeader(sealed)
	if err != nil {
		t.Fatal(err)
	}
	k := o.Keys[0]
	key, _, err := openKey(sealed, b, k.ID, k.Priv)
	if err != nil {
		t.Fatal(err)
	}
	ps, ss := sha256.Sum256(pt), sha256.Sum256(sealed)
	vs := vectorSealed{
		Binding: vectorBindingOf(b), Plaintext: h(pt), PlainSHA: h(ps[:]), ContentKey: h(key), Commit: h(hd.Commit[:]),
		Nonce: h(hd.Nonce), WrapInfo: h(wrapInfo(b.Bytes())), HeaderSize: hd.Size, Header: h(sealed[:hd.Size]),
		Sealed: h(sealed), SealedSHA: h(ss[:]),
	}
	for _, r := range hd.Recipients {
		vs.Wraps = append(vs.Wraps, vectorWrap{KeyID: r.ID(), Enc: h(r.Enc), WK: h(r.WK)})
	}
	return vs
}

func TestVectors(t *testing.T) {
	got := makeVectors(t)
	if *update {
		b, err := json.MarshalIndent(got, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorsFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", vectorsFile)
	}
	b, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	var want Vectors
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	checkVectorsOpen(t, &want)
	// Sealing again with the same seed reproduces the file: it depends on
	// how Go's crypto consumes random bytes (go1.26: content key, nonce,
	// then each recipient's ephemeral key). If a new Go changes that, check
	// that this test's other half (opening the file) passes and run -update.
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(&want)
	if !bytes.Equal(gb, wb) {
		t.Fatalf("Seal no longer reproduces %s (run with -update after checking the opening half passes)", vectorsFile)
	}
}

// checkVectorsOpen opens the vectors from the file alone.
func checkVectorsOpen(t *testing.T, v *Vectors) {
	id := ed25519.NewKeyFromSeed(unhex(t, v.Owner.IdentitySeed))
	if !bytes.Equal(id.Public().(ed25519.PublicKey), unhex(t, v.Owner.IdentityPublic)) {
		t.Fatal("identity_public is not the seed's")
	}
	fp := Fingerprint(id.Public().(ed25519.PublicKey))
	if h(fp[:]) != v.Owner.Fingerprint || h(ClaimCommit(fp)) != v.Owner.ClaimCommit {
		t.Fatal("fingerprint or claim_commit")
	}
	ks, err := ParseSigned([]byte(v.KeySet.Signed))
	if err != nil {
		t.Fatal(err)
	}
	if h(ks.Raw) != v.KeySet.Raw || string(ks.Raw) != v.KeySet.RawText || h(ks.Sig) != v.KeySet.Sig || ks.Version != v.KeySet.Version {
		t.Fatal("signed key set differs from raw/sig")
	}
	if !ed25519.Verify(id.Public().(ed25519.PublicKey), unhex(t, v.KeySet.SignedMsg), ks.Sig) {
		t.Fatal("signed_message does not verify")
	}
	if err := Accept(fp, nil, ks); err != nil {
		t.Fatal(err)
	}
	o := &Owner{Identity: id}
	kem := hpke.DHKEM(ecdh.X25519())
	for i, r := range v.Recipients {
		priv, err := kem.NewPrivateKey(unhex(t, r.PrivateKey))
		if err != nil {
			t.Fatal(err)
		}
		if derived, err := kem.DeriveKeyPair(unhex(t, r.IKM)); err != nil || !bytes.Equal(derived.PublicKey().Bytes(), priv.PublicKey().Bytes()) {
			t.Fatalf("recipients[%d]: ikm does not derive the key", i)
		}
		if r.RecoverySecret != "" {
			rk, err := RecoveryKey(unhex(t, r.RecoverySecret))
			if err != nil || !bytes.Equal(rk.PublicKey().Bytes(), priv.PublicKey().Bytes()) {
				t.Fatalf("recipients[%d]: the recovery secret does not derive the key", i)
			}
		}
		if h(priv.PublicKey().Bytes()) != r.PublicKey || KeyID(r.KEM, priv.PublicKey().Bytes()) != r.ID || ks.Keys[i].ID != r.ID {
			t.Fatalf("recipients[%d]: public key or id", i)
		}
		if _, err := o.AddPrivateKey(priv, r.Name, r.Recovery); err != nil {
			t.Fatal(err)
		}
	}

	// The thumbnail, with crypto/hpke through Open and with the reference
	// HPKE (rfc9180_test.go) step by step.
	th := v.Thumbnail
	b := Binding{Owner: fp, Device: th.Binding.Device, Event: th.Binding.Event, Seq: th.Binding.Seq, Role: th.Binding.Role}
	if h(b.Bytes()) != th.Binding.Bytes {
		t.Fatal("thumbnail binding bytes")
	}
	sealed := unhex(t, th.Sealed)
	for _, k := range o.Keys {
		pt, err := Open(sealed, b, k.ID, k.Priv)
		if err != nil || h(pt) != th.Plaintext {
			t.Fatalf("thumbnail with key %s: %v", k.ID, err)
		}
	}
	for i, w := range th.Wraps {
		skb, _ := o.Keys[i].Priv.Bytes()
		sk, err := ecdh.X25519().NewPrivateKey(skb)
		if err != nil {
			t.Fatal(err)
		}
		key, err := refOpenWrap(sk, unhex(t, w.Enc), unhex(t, w.WK), unhex(t, th.WrapInfo))
		if err != nil || h(key) != th.ContentKey || w.KeyID != o.Keys[i].ID {
			t.Fatalf("wraps[%d] with the reference HPKE: %x, %v", i, key, err)
		}
	}
	c := Commit(unhex(t, th.ContentKey))
	if h(c[:]) != th.Commit || h(sealed[:th.HeaderSize]) != th.Header || h(sealed[th.HeaderSize-NonceSize:th.HeaderSize]) != th.Nonce {
		t.Fatal("commit, header or nonce")
	}
	g, err := newGCM(unhex(t, th.ContentKey))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := g.Open(nil, unhex(t, th.Nonce), sealed[th.HeaderSize:], append(b.Bytes(), sealed[:th.HeaderSize]...))
	if err != nil || h(pt) != th.Plaintext {
		t.Fatalf("thumbnail content by hand: %v", err)
	}

	// Live.
	lv := v.Live
	lo, err := o.OpenLive(unhex(t, lv.KeyFrame), lv.Device)
	if err != nil {
		t.Fatal(err)
	}
	if lo.StreamID() != lv.StreamID {
		t.Fatal("stream id")
	}
	for _, f := range lv.Frames {
		pt, err := lo.OpenFrame(unhex(t, f.Frame))
		if err != nil || h(pt) != f.Plaintext {
			t.Fatalf("live frame %d: %v", f.Counter, err)
		}
		sg, err := newGCM(unhex(t, lv.StreamKey))
		if err != nil {
			t.Fatal(err)
		}
		fr := unhex(t, f.Frame)
		if pt, err := sg.Open(nil, unhex(t, f.Nonce), fr[8:], unhex(t, f.AAD)); err != nil || h(pt) != f.Plaintext {
			t.Fatalf("live frame %d by hand: %v", f.Counter, err)
		}
	}
}

func TestSealDeterministicUnderSeed(t *testing.T) {
	// cryptotest.SetGlobalRandom reaches crypto/hpke's ephemeral keys: the
	// same seed seals the same bytes, another seed other bytes.
	seal := func(seed uint64) []byte {
		var out []byte
		t.Run("", func(t *testing.T) {
			cryptotest.SetGlobalRandom(t, seed)
			o, _ := vectorOwnerKeys(t)
			s := mustSealer(t, o)
			var err error
			out, err = s.Seal(testBinding(), []byte("x"))
			if err != nil {
				t.Fatal(err)
			}
		})
		return out
	}
	a, b, c := seal(1), seal(1), seal(2)
	if !bytes.Equal(a, b) {
		t.Fatal("the same seed sealed different bytes")
	}
	if bytes.Equal(a[:100], c[:100]) {
		t.Fatal("another seed sealed the same bytes")
	}
}
