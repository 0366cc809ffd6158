package board

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// BackendTPM names a key generated inside a TPM 2.0 that never leaves it.
const BackendTPM = "tpm"

// DefaultTPMDevice is the kernel's TPM 2.0 resource manager, which lets
// several processes share the TPM. /dev/tpm0 also works but admits one opener.
const DefaultTPMDevice = "/dev/tpmrm0"

// DefaultTPMHandle is the persistent handle of keyframe's device key. It lies
// in the owner's persistent range (0x81000000-0x817FFFFF) but outside the
// sub-ranges the TCG handle registry reserves for storage and endorsement
// primary keys (0x8100xxxx, 0x8101xxxx): 0x81000001 in particular is the
// standard SRK handle, which systemd (tpm2-setup) and tpm2-tss fill on their
// own. The middle bytes spell "KF".
const DefaultTPMHandle uint32 = 0x814B4601

// ErrNoTPM reports that there is no TPM where one was asked for: no device
// node, a node without a driver behind it, nothing listening at a TCP
// address, or a platform without TPM device support. Errors wrapping it also
// wrap ErrAbsent.
var ErrNoTPM = errors.New("no TPM")

const (
	tcpSpecPrefix = "tcp:"
	// tcpCommandTimeout bounds one command over TCP, so a hung simulator
	// fails the call instead of hanging the agent.
	tcpCommandTimeout = 30 * time.Second
	tcpDialTimeout    = 5 * time.Second
	// maxTPMResponse bounds what is read for one response. TPMs answer in
	// at most a few KiB (TPM_PT_MAX_RESPONSE_SIZE); this is generous.
	maxTPMResponse = 64 << 10
	// tpmHeaderSize is the size of a TPM 2.0 command/response header: tag
	// (2 bytes), size (4), command or response code (4).
	tpmHeaderSize = 10

	ownerPersistentFirst uint32 = 0x81000000
	ownerPersistentLast  uint32 = 0x817FFFFF
)

// TPM is an open connection to a TPM 2.0. Its methods and the keys loaded
// through it are safe for concurrent use: commands are sent one at a time.
// After Close, keys loaded through it return errors wrapping os.ErrClosed.
type TPM struct {
	spec   string
	mu     sync.Mutex
	tr     transport.TPMCloser
	closed bool
}

// OpenTPM opens a TPM 2.0. spec is either
//
//   - an absolute device path such as DefaultTPMDevice ("/dev/tpmrm0") or
//     /dev/tpm0, taken under the FS root, on Linux only; or
//   - "tcp:HOST:PORT", the raw command channel of a software TPM such as
//     swtpm (swtpm socket --tpm2 --server type=tcp,port=PORT ...), for tests
//     and for hosts without a kernel TPM driver. The channel has no
//     authentication or encryption: use it on loopback only. OpenTPM sends
//     TPM2_Startup(CLEAR) over it, which an already started TPM ignores.
//
// A missing device node, a node with no driver, nothing listening at the
// address, or (outside Linux) any device path gives an error wrapping ErrNoTPM
// and ErrAbsent. The caller must Close the TPM.
func (fs *FS) OpenTPM(spec string) (*TPM, error) {
	var (
		tr  transport.TPMCloser
		err error
	)
	switch {
	case strings.HasPrefix(spec, tcpSpecPrefix):
		tr, err = openTCPTPM(spec)
	case strings.HasPrefix(spec, "/"):
		tr, err = fs.openTPMDevice(spec)
	default:
		return nil, fmt.Errorf("board: tpm: %q: want a device path (%s) or tcp:HOST:PORT", spec, DefaultTPMDevice)
	}
	if err != nil {
		return nil, err
	}
	return &TPM{spec: spec, tr: tr}, nil
}

// String returns the spec the TPM was opened with.
func (t *TPM) String() string { return t.spec }

// Close closes the connection to the TPM. Keys persisted in it stay there.
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	if err := t.tr.Close(); err != nil {
		return fmt.Errorf("board: tpm: %s: close: %w", t.spec, err)
	}
	return nil
}

// use runs fn with the transport, holding the lock: one command sequence at
// a time.
func (t *TPM) use(op string, fn func(transport.TPM) error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return fmt.Errorf("board: tpm: %s: %s: %w", t.spec, op, os.ErrClosed)
	}
	return fn(t.tr)
}

// openTCPTPM connects to a raw TPM command channel and starts the TPM.
func openTCPTPM(spec string) (transport.TPMCloser, error) {
	addr := strings.TrimPrefix(spec, tcpSpecPrefix)
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return nil, fmt.Errorf("board: tpm: %q: want tcp:HOST:PORT", spec)
	}
	conn, err := net.DialTimeout("tcp", addr, tcpDialTimeout)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("board: tpm: %s: nothing listening: %w (%w): %w", spec, ErrNoTPM, ErrAbsent, err)
		}
		return nil, fmt.Errorf("board: tpm: %s: %w", spec, err)
	}
	tr := &tcpTransport{conn: conn}
	_, err = tpm2.Startup{StartupType: tpm2.TPMSUClear}.Execute(tr)
	if err != nil && !errors.Is(err, tpm2.TPMRCInitialize) {
		conn.Close()
		return nil, fmt.Errorf("board: tpm: %s: TPM2_Startup: %w", spec, err)
	}
	return tr, nil
}

// tcpTransport speaks the raw TPM 2.0 command stream of swtpm's TCP server:
// a command out, one response back, each framed by its own header. (go-tpm's
// tcp package speaks the reference simulator's framing instead, and its
// single Read would split responses on a stream.)
type tcpTransport struct {
	conn net.Conn
}

// Send implements transport.TPM.
func (c *tcpTransport) Send(cmd []byte) ([]byte, error) {
	if err := c.conn.SetDeadline(time.Now().Add(tcpCommandTimeout)); err != nil {
		return nil, err
	}
	if _, err := c.conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("send command: %w", err)
	}
	hdr := make([]byte, tpmHeaderSize)
	if _, err := io.ReadFull(c.conn, hdr); err != nil {
		return nil, fmt.Errorf("read response header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < tpmHeaderSize || size > maxTPMResponse {
		return nil, fmt.Errorf("response header announces %d bytes (want %d to %d): not a TPM 2.0 response", size, tpmHeaderSize, maxTPMResponse)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(c.conn, rsp[tpmHeaderSize:]); err != nil {
		return nil, fmt.Errorf("read response body: %w", err)
	}
	return rsp, nil
}

// Close implements io.Closer.
func (c *tcpTransport) Close() error { return c.conn.Close() }

// tpmKeyTemplate is the public template of the device key: an ECDSA P-256
// signing key generated in the TPM, which cannot leave it (fixedTPM,
// fixedParent, sensitiveDataOrigin), usable with an empty password
// (userWithAuth), never for decryption, and exempt from dictionary-attack
// lockout (noDA): its password is empty, so failed guesses by other
// processes must not be able to lock keyframe out of signing.
//
// A primary key is derived from the owner hierarchy's seed and its template;
// the unique field holds a keyframe-specific value so that software using an
// otherwise identical template does not derive keyframe's key.
func tpmKeyTemplate() tpm2.TPMTPublic {
	unique := sha256.Sum256([]byte("keyframe device key v1"))
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			NoDA:                true,
			SignEncrypt:         true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: unique[:]},
		}),
	}
}

// tpmKey is a device key held in a TPM at a persistent handle.
type tpmKey struct {
	tpm    *TPM
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	pub    *ecdsa.PublicKey
}

// LoadOrCreateTPMKey returns the device key kept in tpm at the persistent
// handle (DefaultTPMHandle unless configured otherwise), creating it if the
// handle is empty: an ECDSA P-256 signing key generated inside the TPM under
// the owner hierarchy (whose password must be empty) and made persistent with
// TPM2_EvictControl. The private key never leaves the TPM. created reports
// whether a new key was made. The key is derived from the owner hierarchy's
// seed and a fixed template, so evicting and re-creating it gives the same
// key back, until the TPM is cleared (TPM2_Clear draws a new seed).
//
// An object already at the handle is used only if it is a key this function
// could have made: ECC P-256, sign-only (not restricted, no decrypt),
// fixedTPM, fixedParent, sensitiveDataOrigin and userWithAuth, with an ECDSA
// SHA-256 or null scheme. Anything else is an error, and the object is left
// untouched.
//
// The key's Sign accepts a SHA-256 digest with opts nil (as go-cose passes
// for ES256) or crypto.SHA256, ignores its random source (the TPM draws the
// nonce), and returns an ASN.1 DER signature, as crypto/ecdsa does. Signing
// after tpm is closed fails with an error wrapping os.ErrClosed.
func LoadOrCreateTPMKey(tpm *TPM, handle uint32) (k Key, created bool, err error) {
	if handle < ownerPersistentFirst || handle > ownerPersistentLast {
		return nil, false, fmt.Errorf("board: tpm: handle 0x%08x: not an owner persistent handle (0x%08x-0x%08x)", handle, ownerPersistentFirst, ownerPersistentLast)
	}
	h := tpm2.TPMHandle(handle)
	err = tpm.use("load key", func(tr transport.TPM) error {
		var lerr error
		k, lerr = loadTPMKey(tpm, tr, h)
		if lerr == nil || !errors.Is(lerr, tpm2.TPMRCHandle) {
			return lerr
		}
		k, lerr = createTPMKey(tpm, tr, h)
		if errors.Is(lerr, tpm2.TPMRCNVDefined) {
			// Another process persisted a key at the handle between
			// our look and our write: use it if it is a key we
			// could have made.
			k, lerr = loadTPMKey(tpm, tr, h)
			return lerr
		}
		created = lerr == nil
		return lerr
	})
	if err != nil {
		return nil, false, err
	}
	return k, created, nil
}

// loadTPMKey reads and checks the object at handle. An empty handle gives an
// error wrapping tpm2.TPMRCHandle.
func loadTPMKey(tpm *TPM, tr transport.TPM, h tpm2.TPMHandle) (*tpmKey, error) {
	rp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(tr)
	if err != nil {
		return nil, fmt.Errorf("board: tpm: %s: read handle 0x%08x: %w", tpm.spec, uint32(h), err)
	}
	pub, err := rp.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("board: tpm: %s: handle 0x%08x: public area: %w", tpm.spec, uint32(h), err)
	}
	ek, err := checkTPMKeyPublic(pub)
	if err != nil {
		return nil, fmt.Errorf("board: tpm: %s: handle 0x%08x holds %w; refusing to use or replace it: choose another handle, or evict that object if it is not needed", tpm.spec, uint32(h), err)
	}
	return &tpmKey{tpm: tpm, handle: h, name: rp.Name, pub: ek}, nil
}

// createTPMKey creates the device key as a primary object and persists it at
// h. The transient copy is flushed whatever happens.
func createTPMKey(tpm *TPM, tr transport.TPM, h tpm2.TPMHandle) (_ *tpmKey, err error) {
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	cp, err := tpm2.CreatePrimary{
		PrimaryHandle: owner,
		InPublic:      tpm2.New2B(tpmKeyTemplate()),
	}.Execute(tr)
	if err != nil {
		return nil, fmt.Errorf("board: tpm: %s: create key: %w%s", tpm.spec, err, ownerAuthHint(err))
	}
	defer func() {
		_, ferr := tpm2.FlushContext{FlushHandle: cp.ObjectHandle}.Execute(tr)
		if ferr != nil && err == nil {
			err = fmt.Errorf("board: tpm: %s: flush transient key: %w", tpm.spec, ferr)
		}
	}()
	_, err = tpm2.EvictControl{
		Auth:             owner,
		ObjectHandle:     tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name},
		PersistentHandle: h,
	}.Execute(tr)
	if err != nil {
		return nil, fmt.Errorf("board: tpm: %s: persist key at 0x%08x: %w%s", tpm.spec, uint32(h), err, ownerAuthHint(err))
	}
	// Read the key back from where it now lives, so a created key passes
	// the same checks as a loaded one.
	return loadTPMKey(tpm, tr, h)
}

func ownerAuthHint(err error) string {
	if errors.Is(err, tpm2.TPMRCBadAuth) || errors.Is(err, tpm2.TPMRCAuthFail) {
		return " (the owner hierarchy has a password; keyframe needs it empty to create its key)"
	}
	return ""
}

// checkTPMKeyPublic checks that pub describes a key LoadOrCreateTPMKey could
// have made, and returns its public key. Its errors describe the object.
func checkTPMKeyPublic(pub *tpm2.TPMTPublic) (*ecdsa.PublicKey, error) {
	if pub.Type != tpm2.TPMAlgECC {
		return nil, fmt.Errorf("an object of type 0x%04x, not an ECC key", uint16(pub.Type))
	}
	a := pub.ObjectAttributes
	var bad []string
	want := func(ok bool, why string) {
		if !ok {
			bad = append(bad, why)
		}
	}
	want(a.SignEncrypt, "not a signing key")
	want(!a.Decrypt, "a decryption key")
	want(!a.Restricted, "restricted")
	want(a.FixedTPM, "not fixedTPM (exportable)")
	want(a.FixedParent, "not fixedParent")
	want(a.SensitiveDataOrigin, "not generated in the TPM (no sensitiveDataOrigin)")
	want(a.UserWithAuth, "not usable with a password (no userWithAuth)")
	if len(bad) > 0 {
		return nil, fmt.Errorf("an ECC key that is %s", strings.Join(bad, ", "))
	}
	parms, err := pub.Parameters.ECCDetail()
	if err != nil {
		return nil, fmt.Errorf("an ECC key without ECC parameters: %w", err)
	}
	if parms.CurveID != tpm2.TPMECCNistP256 {
		return nil, fmt.Errorf("an ECC key on curve 0x%04x, not NIST P-256", uint16(parms.CurveID))
	}
	switch parms.Scheme.Scheme {
	case tpm2.TPMAlgNull:
	case tpm2.TPMAlgECDSA:
		d, err := parms.Scheme.Details.ECDSA()
		if err != nil || d.HashAlg != tpm2.TPMAlgSHA256 {
			return nil, fmt.Errorf("an ECDSA key bound to a hash other than SHA-256")
		}
	default:
		return nil, fmt.Errorf("an ECC key with signing scheme 0x%04x, not ECDSA", uint16(parms.Scheme.Scheme))
	}
	pt, err := pub.Unique.ECC()
	if err != nil {
		return nil, fmt.Errorf("an ECC key without a public point: %w", err)
	}
	x, y := pt.X.Buffer, pt.Y.Buffer
	if len(x) > 32 || len(y) > 32 {
		return nil, fmt.Errorf("an ECC key with a malformed public point (%d and %d bytes)", len(x), len(y))
	}
	raw := make([]byte, 65)
	raw[0] = 4 // uncompressed point
	copy(raw[1+32-len(x):33], x)
	copy(raw[33+32-len(y):], y)
	ek, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		return nil, fmt.Errorf("an ECC key whose public point is invalid: %w", err)
	}
	return ek, nil
}

// Public returns the key's *ecdsa.PublicKey.
func (k *tpmKey) Public() crypto.PublicKey { return k.pub }

// Backend returns BackendTPM.
func (k *tpmKey) Backend() string { return BackendTPM }

// Sign signs a SHA-256 digest in the TPM. opts must be nil or hash with
// SHA-256; rnd is not used.
func (k *tpmKey) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts != nil && opts.HashFunc() != crypto.SHA256 {
		return nil, fmt.Errorf("board: tpm: sign: hash %v: the TPM key signs SHA-256 digests only", opts.HashFunc())
	}
	if len(digest) != sha256.Size {
		return nil, fmt.Errorf("board: tpm: sign: digest is %d bytes, want a %d-byte SHA-256 digest", len(digest), sha256.Size)
	}
	var rsp *tpm2.SignResponse
	err := k.tpm.use("sign", func(tr transport.TPM) error {
		var err error
		rsp, err = tpm2.Sign{
			KeyHandle: tpm2.AuthHandle{Handle: k.handle, Name: k.name, Auth: tpm2.PasswordAuth(nil)},
			Digest:    tpm2.TPM2BDigest{Buffer: digest},
			InScheme: tpm2.TPMTSigScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256}),
			},
			// A NULL ticket: the key is not restricted, so it may sign
			// a digest the TPM did not compute.
			Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
		}.Execute(tr)
		return err
	})
	if err != nil {
		if errors.Is(err, os.ErrClosed) {
			return nil, err
		}
		return nil, fmt.Errorf("board: tpm: %s: sign with 0x%08x: %w", k.tpm.spec, uint32(k.handle), err)
	}
	if rsp.Signature.SigAlg != tpm2.TPMAlgECDSA {
		return nil, fmt.Errorf("board: tpm: %s: sign: TPM answered with signature algorithm 0x%04x, not ECDSA", k.tpm.spec, uint16(rsp.Signature.SigAlg))
	}
	sig, err := rsp.Signature.Signature.ECDSA()
	if err != nil {
		return nil, fmt.Errorf("board: tpm: %s: sign: %w", k.tpm.spec, err)
	}
	der, err := asn1.Marshal(struct{ R, S *big.Int }{
		new(big.Int).SetBytes(sig.SignatureR.Buffer),
		new(big.Int).SetBytes(sig.SignatureS.Buffer),
	})
	if err != nil {
		return nil, fmt.Errorf("board: tpm: sign: encode signature: %w", err)
	}
	// A faulty TPM or a broken transport must not produce records every
	// receiver rejects: check the signature before handing it out.
	if !ecdsa.VerifyASN1(k.pub, digest, der) {
		return nil, fmt.Errorf("board: tpm: %s: sign: the TPM's signature does not verify under the key's public key", k.tpm.spec)
	}
	return der, nil
}
