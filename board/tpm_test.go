package board

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keyframe-cam/keyframe/board/swtpmtest"
	"github.com/keyframe-cam/keyframe/provenance"
)

// openSWTPM opens the software TPM s through the FS API, closing it when the
// test ends.
func openSWTPM(t *testing.T, s *swtpmtest.SWTPM) *TPM {
	t.Helper()
	fs, err := NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tpm, err := fs.OpenTPM(s.Spec())
	if err != nil {
		t.Fatalf("OpenTPM(%s): %v\nswtpm log:\n%s", s.Spec(), err, s.Log())
	}
	t.Cleanup(func() { tpm.Close() })
	return tpm
}

func ecdsaPub(t *testing.T, k Key) *ecdsa.PublicKey {
	t.Helper()
	pub, ok := k.Public().(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("Public() is %T, want *ecdsa.PublicKey", k.Public())
	}
	if pub.Curve != elliptic.P256() {
		t.Fatalf("key on %s, want P-256", pub.Curve.Params().Name)
	}
	return pub
}

func TestTPMKeyCreateAndReopen(t *testing.T) {
	s := swtpmtest.Start(t)
	tpm := openSWTPM(t, s)
	k1, created, err := LoadOrCreateTPMKey(tpm, DefaultTPMHandle)
	if err != nil || !created {
		t.Fatalf("create: created=%v err=%v", created, err)
	}
	if k1.Backend() != BackendTPM || BackendTPM != "tpm" {
		t.Fatalf("Backend() = %q, want %q", k1.Backend(), "tpm")
	}
	pub1 := ecdsaPub(t, k1)

	// Same connection: loaded, not created again.
	k2, created, err := LoadOrCreateTPMKey(tpm, DefaultTPMHandle)
	if err != nil || created {
		t.Fatalf("load on the same connection: created=%v err=%v", created, err)
	}
	if !pub1.Equal(k2.Public()) {
		t.Fatal("second load returned another key")
	}

	// Closed and reopened.
	if err := tpm.Close(); err != nil {
		t.Fatal(err)
	}
	tpm = openSWTPM(t, s)
	k3, created, err := LoadOrCreateTPMKey(tpm, DefaultTPMHandle)
	if err != nil || created {
		t.Fatalf("load after reopen: created=%v err=%v", created, err)
	}
	if !pub1.Equal(k3.Public()) {
		t.Fatal("key after reopening differs from the created one")
	}

	// The key is in the TPM as created: a persistent, non-exportable,
	// sign-only P-256 key.
	err = tpm.use("test", func(tr transport.TPM) error {
		rp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(DefaultTPMHandle)}.Execute(tr)
		if err != nil {
			return err
		}
		pub, err := rp.OutPublic.Contents()
		if err != nil {
			return err
		}
		a := pub.ObjectAttributes
		if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.UserWithAuth || !a.SignEncrypt || a.Decrypt || a.Restricted {
			t.Errorf("key attributes %+v", a)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

}

func TestTPMKeyPersistsAcrossRestart(t *testing.T) {
	s := swtpmtest.Start(t)
	tpm := openSWTPM(t, s)
	k1, created, err := LoadOrCreateTPMKey(tpm, DefaultTPMHandle)
	if err != nil || !created {
		t.Fatalf("create: created=%v err=%v", created, err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	// The old connection is dead: signing fails with an error, no panic.
	d := sha256.Sum256([]byte("after stop"))
	if _, err := k1.Sign(nil, d[:], nil); err == nil {
		t.Fatal("Sign through a stopped swtpm succeeded")
	}
	tpm.Close()

	s2 := swtpmtest.StartWith(t, swtpmtest.Options{StateDir: s.StateDir})
	again := openSWTPM(t, s2)
	k2, created, err := LoadOrCreateTPMKey(again, DefaultTPMHandle)
	if err != nil || created {
		t.Fatalf("load after restart: created=%v err=%v", created, err)
	}
	if !ecdsaPub(t, k1).Equal(k2.Public()) {
		t.Fatal("key after restart differs from the created one")
	}
	sig, err := k2.Sign(nil, d[:], nil)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(ecdsaPub(t, k1), d[:], sig) {
		t.Fatal("signature after restart does not verify under the original public key")
	}
}

func TestOpenTPMStartsTPM(t *testing.T) {
	s := swtpmtest.StartWith(t, swtpmtest.Options{NoStartup: true})
	// The TPM has not been started: commands fail until TPM2_Startup.
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tpm2.GetRandom{BytesRequested: 8}.Execute(&tcpTransport{conn: c})
	c.Close()
	if !errors.Is(err, tpm2.TPMRCInitialize) {
		t.Fatalf("GetRandom before startup: %v, want TPM_RC_INITIALIZE", err)
	}
	tpm := openSWTPM(t, s)
	k, created, err := LoadOrCreateTPMKey(tpm, DefaultTPMHandle)
	if err != nil || !created {
		t.Fatalf("create after OpenTPM started the TPM: created=%v err=%v", created, err)
	}
	d := sha256.Sum256([]byte("started"))
	if sig, err := k.Sign(nil, d[:], nil); err != nil || !ecdsa.VerifyASN1(ecdsaPub(t, k), d[:], sig) {
		t.Fatalf("sign: %v", err)
	}
}

func TestTPMKeySign(t *testing.T) {
	s := swtpmtest.Start(t)
	k, _, err := LoadOrCreateTPMKey(openSWTPM(t, s), DefaultTPMHandle)
	if err != nil {
		t.Fatal(err)
	}
	pub := ecdsaPub(t, k)
	d := sha256.Sum256([]byte("frame bytes"))
	for _, opts := range []crypto.SignerOpts{nil, crypto.SHA256} {
		sig, err := k.Sign(nil, d[:], opts)
		if err != nil {
			t.Fatalf("Sign(opts=%v): %v", opts, err)
		}
		// ASN.1 DER, as crypto/ecdsa produces: SEQUENCE { r, s } with
		// nothing after it.
		var rs struct{ R, S *big.Int }
		rest, err := asn1.Unmarshal(sig, &rs)
		if err != nil || len(rest) != 0 || rs.R.Sign() <= 0 || rs.S.Sign() <= 0 {
			t.Fatalf("Sign(opts=%v) = %x: not a DER ECDSA signature (rest %d, err %v)", opts, sig, len(rest), err)
		}
		if !ecdsa.VerifyASN1(pub, d[:], sig) {
			t.Fatalf("Sign(opts=%v): signature does not verify", opts)
		}
		other := sha256.Sum256([]byte("other bytes"))
		if ecdsa.VerifyASN1(pub, other[:], sig) {
			t.Fatalf("Sign(opts=%v): signature verifies for another digest", opts)
		}
	}
}

func TestTPMKeySignRefusesOtherHashes(t *testing.T) {
	s := swtpmtest.Start(t)
	k, _, err := LoadOrCreateTPMKey(openSWTPM(t, s), DefaultTPMHandle)
	if err != nil {
		t.Fatal(err)
	}
	d256 := sha256.Sum256([]byte("x"))
	d384 := sha512.Sum384([]byte("x"))
	cases := []struct {
		name   string
		digest []byte
		opts   crypto.SignerOpts
	}{
		{"SHA-384 opts", d384[:], crypto.SHA384},
		{"SHA-384 opts, 32 bytes", d256[:], crypto.SHA384},
		{"SHA-1 opts", d256[:20], crypto.SHA1},
		{"no hash (Ed25519 style)", d256[:], crypto.Hash(0)},
		{"nil opts, 48 bytes", d384[:], nil},
		{"SHA-256 opts, 20 bytes", d256[:20], crypto.SHA256},
		{"nil opts, empty", nil, nil},
	}
	for _, c := range cases {
		sig, err := k.Sign(nil, c.digest, c.opts)
		if err == nil {
			t.Errorf("%s: signed (%x)", c.name, sig)
			continue
		}
		if !strings.HasPrefix(err.Error(), "board: tpm: sign: ") {
			t.Errorf("%s: error %q: want a \"board: tpm: sign: \" error raised before asking the TPM", c.name, err)
		}
	}
}

func TestTPMKeySignsVerifiableEnvelope(t *testing.T) {
	s := swtpmtest.Start(t)
	k, _, err := LoadOrCreateTPMKey(openSWTPM(t, s), DefaultTPMHandle)
	if err != nil {
		t.Fatal(err)
	}
	id, err := provenance.DeviceID(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	thumb := []byte("\xff\xd8 not really a jpeg \xff\xd9")
	p := &provenance.Payload{
		Device:   id,
		Event:    "ev-1",
		Kind:     provenance.KindStart,
		Seq:      1,
		Boot:     "6a0f0d4e-53f2-4b43-9a66-0e5b1d1c2f10",
		Time:     provenance.Time{UnixMs: 1_700_000_000_000, BootMs: 1234, Clock: provenance.ClockSynced},
		Motion:   provenance.Motion{Frames: 3, Width: 640, Height: 480, Box: [4]int32{1, 2, 3, 4}},
		Media:    []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", thumb)},
		KeyStore: k.Backend(),
	}
	// go-cose calls Sign with opts == nil for ES256.
	env, err := provenance.Sign(nil, k, p)
	if err != nil {
		t.Fatal(err)
	}
	v, err := provenance.Verify(env, [][]byte{thumb}, k.Public())
	if err != nil {
		t.Fatal(err)
	}
	if v.Payload.KeyStore != "tpm" || v.Device != id || v.Payload.Event != "ev-1" {
		t.Fatalf("verified keystore %q device %q event %q", v.Payload.KeyStore, v.Device, v.Payload.Event)
	}
	// A flipped byte in the envelope breaks it.
	bad := append([]byte(nil), env...)
	bad[len(bad)-1] ^= 1
	if _, err := provenance.Verify(bad, [][]byte{thumb}, k.Public()); !errors.Is(err, provenance.ErrSignature) {
		t.Fatalf("tampered envelope: %v, want ErrSignature", err)
	}
}

// persistTestObject creates a primary object from tmpl in the owner hierarchy
// and persists it at handle, returning its name.
func persistTestObject(t *testing.T, tpm *TPM, tmpl tpm2.TPMTPublic, handle uint32) tpm2.TPM2BName {
	t.Helper()
	var name tpm2.TPM2BName
	err := tpm.use("test", func(tr transport.TPM) error {
		owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
		cp, err := tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(tmpl)}.Execute(tr)
		if err != nil {
			return err
		}
		defer tpm2.FlushContext{FlushHandle: cp.ObjectHandle}.Execute(tr)
		name = cp.Name
		_, err = tpm2.EvictControl{
			Auth:             owner,
			ObjectHandle:     tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name},
			PersistentHandle: tpm2.TPMHandle(handle),
		}.Execute(tr)
		return err
	})
	if err != nil {
		t.Fatalf("plant object at 0x%08x: %v", handle, err)
	}
	return name
}

func TestTPMKeyRefusesWrongObject(t *testing.T) {
	s := swtpmtest.Start(t)
	tpm := openSWTPM(t, s)

	decrypting := tpmKeyTemplate()
	decrypting.ObjectAttributes.Decrypt = true
	decrypting.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
		Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
		CurveID:   tpm2.TPMECCNistP256,
		KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	})
	p384 := tpmKeyTemplate()
	p384.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
		Scheme: tpm2.TPMTECCScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA384}),
		},
		CurveID: tpm2.TPMECCNistP384,
		KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	})
	p384.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
	sha384Scheme := tpmKeyTemplate()
	sha384Scheme.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
		Scheme: tpm2.TPMTECCScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA384}),
		},
		CurveID: tpm2.TPMECCNistP256,
		KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	})
	noUserAuth := tpmKeyTemplate()
	noUserAuth.ObjectAttributes.UserWithAuth = false
	hmacKey := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, SignEncrypt: true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{
				Scheme:  tpm2.TPMAlgHMAC,
				Details: tpm2.NewTPMUSchemeKeyedHash(tpm2.TPMAlgHMAC, &tpm2.TPMSSchemeHMAC{HashAlg: tpm2.TPMAlgSHA256}),
			},
		}),
	}

	cases := []struct {
		name string
		tmpl tpm2.TPMTPublic
		why  string // expected in the error
	}{
		// What systemd-tpm2-setup and tpm2-tss put at 0x81000001.
		{"ECC SRK (restricted decryption)", tpm2.ECCSRKTemplate, "restricted"},
		{"P-256 sign+decrypt", decrypting, "decryption"},
		{"P-384 signing key", p384, "not NIST P-256"},
		{"P-256 bound to SHA-384", sha384Scheme, "SHA-256"},
		{"P-256 without userWithAuth", noUserAuth, "userWithAuth"},
		{"HMAC key", hmacKey, "not an ECC key"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			handle := 0x81020000 + uint32(i)
			name := persistTestObject(t, tpm, c.tmpl, handle)
			k, created, err := LoadOrCreateTPMKey(tpm, handle)
			if err == nil {
				t.Fatalf("accepted (created=%v, key %T)", created, k)
			}
			if !strings.HasPrefix(err.Error(), "board: tpm: ") || !strings.Contains(err.Error(), c.why) || !strings.Contains(err.Error(), "refusing") {
				t.Fatalf("error %q: want the board: tpm: prefix, %q and a refusal", err, c.why)
			}
			// Never overwritten: the same object is still there.
			err = tpm.use("test", func(tr transport.TPM) error {
				rp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(handle)}.Execute(tr)
				if err != nil {
					return err
				}
				if string(rp.Name.Buffer) != string(name.Buffer) {
					t.Errorf("object at 0x%08x changed", handle)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLoadOrCreateTPMKeyRefusesBadHandles(t *testing.T) {
	s := swtpmtest.Start(t)
	tpm := openSWTPM(t, s)
	for _, h := range []uint32{0, 0x01000000, 0x80000001, 0x80ffffff, 0x81800000, 0x81810001, 0xffffffff} {
		if _, _, err := LoadOrCreateTPMKey(tpm, h); err == nil || !strings.Contains(err.Error(), "not an owner persistent handle") {
			t.Errorf("handle 0x%08x: %v", h, err)
		}
	}
}

func TestTPMClosed(t *testing.T) {
	s := swtpmtest.Start(t)
	tpm := openSWTPM(t, s)
	k, _, err := LoadOrCreateTPMKey(tpm, DefaultTPMHandle)
	if err != nil {
		t.Fatal(err)
	}
	if err := tpm.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tpm.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	d := sha256.Sum256(nil)
	if _, err := k.Sign(nil, d[:], nil); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Sign after Close: %v, want os.ErrClosed", err)
	}
	if _, _, err := LoadOrCreateTPMKey(tpm, DefaultTPMHandle); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("LoadOrCreateTPMKey after Close: %v, want os.ErrClosed", err)
	}
}

func TestTPMKeyConcurrentSign(t *testing.T) {
	s := swtpmtest.Start(t)
	k, _, err := LoadOrCreateTPMKey(openSWTPM(t, s), DefaultTPMHandle)
	if err != nil {
		t.Fatal(err)
	}
	pub := ecdsaPub(t, k)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 4 {
		wg.Go(func() {
			for i := range 4 {
				d := sha256.Sum256([]byte{byte(g), byte(i)})
				sig, err := k.Sign(nil, d[:], nil)
				if err != nil {
					errs <- err
					return
				}
				if !ecdsa.VerifyASN1(pub, d[:], sig) {
					errs <- errors.New("signature does not verify")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestOpenTPMAbsent(t *testing.T) {
	root := t.TempDir()
	fs, err := NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fs.OpenTPM(DefaultTPMDevice)
	if !errors.Is(err, ErrNoTPM) || !errors.Is(err, ErrAbsent) {
		t.Fatalf("missing device: %v, want ErrNoTPM and ErrAbsent", err)
	}
	if !strings.HasPrefix(err.Error(), "board: tpm: ") || !strings.Contains(err.Error(), DefaultTPMDevice) {
		t.Fatalf("missing device: error %q should start with board: tpm: and name the device", err)
	}

	// A regular file where the device should be is an error, but not "no TPM".
	if err := os.MkdirAll(filepath.Join(root, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "dev", "tpmrm0"), []byte("not a device"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.OpenTPM(DefaultTPMDevice); err == nil || errors.Is(err, ErrNoTPM) {
		t.Fatalf("regular file as device: %v, want an error other than ErrNoTPM", err)
	}

	// Nothing listening at a TCP address.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if _, err := fs.OpenTPM("tcp:" + addr); !errors.Is(err, ErrNoTPM) {
		t.Fatalf("closed port: %v, want ErrNoTPM", err)
	}

	for _, spec := range []string{"", "dev/tpmrm0", "tpm0", "tcp:", "tcp:127.0.0.1", "tcp:127.0.0.1:", "unix:/run/swtpm.sock"} {
		if _, err := fs.OpenTPM(spec); err == nil || errors.Is(err, ErrNoTPM) || !strings.HasPrefix(err.Error(), "board: tpm: ") {
			t.Errorf("spec %q: %v, want a board: tpm: error other than ErrNoTPM", spec, err)
		}
	}
}

// fakeTPM serves one TCP connection: it answers each command with the next
// of replies (raw bytes), then closes.
func fakeTPM(t *testing.T, replies ...[]byte) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		for _, r := range replies {
			hdr := make([]byte, tpmHeaderSize)
			if _, err := io.ReadFull(c, hdr); err != nil {
				return
			}
			if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(hdr[2:6]))-tpmHeaderSize); err != nil {
				return
			}
			if _, err := c.Write(r); err != nil {
				return
			}
		}
	}()
	return "tcp:" + l.Addr().String()
}

// rsp builds a response with the given tag, size field, code and body.
func rsp(size uint32, rc uint32, body []byte) []byte {
	b := make([]byte, tpmHeaderSize, tpmHeaderSize+len(body))
	binary.BigEndian.PutUint16(b[0:2], 0x8001)
	binary.BigEndian.PutUint32(b[2:6], size)
	binary.BigEndian.PutUint32(b[6:10], rc)
	return append(b, body...)
}

func TestTPMGarbageResponses(t *testing.T) {
	fs, err := NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	startupOK := rsp(tpmHeaderSize, 0, nil)
	for _, c := range []struct {
		name  string
		reply []byte
	}{
		{"size below header", rsp(4, 0, nil)},
		{"size above limit", rsp(1<<30, 0, nil)},
		{"truncated body", rsp(64, 0, []byte{1, 2, 3})},
		{"short header", []byte{0x80, 0x01, 0}},
		{"error code", rsp(tpmHeaderSize, uint32(tpm2.TPMRCFailure), nil)},
	} {
		if _, err := fs.OpenTPM(fakeTPM(t, c.reply)); err == nil || !strings.HasPrefix(err.Error(), "board: tpm: ") {
			t.Errorf("%s at startup: %v, want a board: tpm: error", c.name, err)
		}
	}

	// A TPM that starts and then answers ReadPublic with a well-framed
	// success holding garbage: an error, not a panic, not a key.
	junk := []byte{0, 0x30, 0, 0x23, 0, 0x0b, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	tpm, err := fs.OpenTPM(fakeTPM(t, startupOK, rsp(uint32(tpmHeaderSize+len(junk)), 0, junk)))
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	if k, _, err := LoadOrCreateTPMKey(tpm, DefaultTPMHandle); err == nil {
		t.Fatalf("garbage public area accepted as key %v", k.Public())
	}
}
