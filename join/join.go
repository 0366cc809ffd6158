// Package join is the camera's side of claiming it (docs/claim.md): with the
// claim code its owner got from the receiver's page, it connects to the
// receiver pinning the certificate the code commits to (no certificate
// authority, no trust on first use), asks for a challenge, proves possession
// of the device key by signing it, and learns where to upload. Writing what
// `keyframe run` needs is the caller's (agent.WriteJoined).
//
// A code that commits to the owner's end-to-end encryption identity (50
// characters, docs/e2ee.md §5) makes the join also pin that identity: the
// receiver's answer must carry the owner's signed key set, signed by an
// identity whose fingerprint begins with the code's 100 bits, or the join
// fails. WriteKeySet keeps the set for the agent.
//
// It is device-side: the receiver never imports it. Of the module it
// imports what both sides share: internal/claimcode, e2ee (the key set) and
// provenance (the device ID).
package join

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/internal/atomicfile"
	"github.com/keyframe-cam/keyframe/internal/claimcode"
	"github.com/keyframe-cam/keyframe/internal/clock"
	"github.com/keyframe-cam/keyframe/provenance"
)

// DefaultTimeout bounds a whole join when Request.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// maxReply bounds what is read of a receiver's answer (a join answer carries
// a key set).
const maxReply = claimcode.MaxJoinResponse

// Errors of Join, returned wrapped.
var (
	// ErrCode reports a claim code that does not parse: mistyped, or not a
	// claim code (claimcode.ErrCheck or claimcode.ErrFormat is wrapped too).
	ErrCode = errors.New("wrong claim code")
	// ErrPin reports a receiver whose certificate is not the one the code
	// pins. Nothing was sent to it.
	ErrPin = errors.New("the receiver's certificate does not match the claim code: wrong URL or someone in the middle")
	// ErrCertificate reports a receiver certificate that matches the code
	// but that `keyframe run` could not use for this URL (expired, or not
	// for this host name or address). Nothing was sent to it.
	ErrCertificate = errors.New("the receiver's certificate matches the claim code but cannot be used for this URL")
	// ErrURL reports a receiver URL that is not https://HOST[:PORT][/PATH].
	ErrURL = errors.New("the receiver URL must be https://HOST[:PORT]/ (the claim code pins its TLS certificate)")
	// ErrKeySet reports a receiver whose answer to a code committing to the
	// owner's identity has no key set, an invalid one, or one of another
	// identity: the camera would seal its pictures to someone else's keys.
	// The receiver paired the camera, but nothing is written.
	ErrKeySet = errors.New("the receiver did not give the key set of the owner the claim code names: end-to-end encryption cannot be set up (someone may be substituting keys)")
)

// A RefusedError is a receiver's refusal of a step of the join.
type RefusedError struct {
	Step    string // "challenge" or "join"
	Status  int    // the HTTP status
	Message string // the receiver's one-line reason
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("join: the receiver refused the %s (%d): %s", e.Step, e.Status, e.Message)
}

// Request is one join.
type Request struct {
	URL  string        // the receiver's base URL, as the owner's page shows it
	Code string        // the claim code as typed
	Key  crypto.Signer // the device key (ECDSA P-256 or Ed25519; may be in a TPM)
	// Seq is the device's next sequence number (its chain state): the
	// receiver pairs the device from this record on.
	Seq     uint64
	Rand    io.Reader     // signature randomness; nil: crypto/rand
	Clock   clock.Clock   // certificate validity; nil: the system clock
	Timeout time.Duration // the whole exchange; 0: DefaultTimeout
}

// Result is a successful join.
type Result struct {
	Device    string // the enrolled device ID
	Owner     string // the owner it is paired to
	UploadURL string // where to upload records
	// Cert is the DER of the certificate the code pins, what the camera
	// trusts from now on: the receiver's own CA when the receiver made its
	// certificate itself (docs/claim.md; its renewals keep verifying), or
	// else the receiver's certificate.
	Cert []byte
	// KeySet is the owner's signed key set when the code commits to the
	// owner's identity (checked: it verifies and its identity is the one
	// committed to), else nil. Its Owner() is the fingerprint to pin
	// (e2ee.owner).
	KeySet *e2ee.KeySet
}

// Join claims the device for the owner of req.Code at the receiver at
// req.URL. It refuses a code that does not parse before connecting, and a
// receiver whose certificate the code does not pin before sending anything.
func Join(ctx context.Context, req Request) (Result, error) {
	code, err := claimcode.Parse(req.Code)
	if err != nil {
		return Result{}, fmt.Errorf("join: %w: %w", ErrCode, err)
	}
	base, err := parseURL(req.URL)
	if err != nil {
		return Result{}, err
	}
	spki, err := x509.MarshalPKIXPublicKey(req.Key.Public())
	if err != nil {
		return Result{}, fmt.Errorf("join: device key: %w", err)
	}
	device, err := provenance.DeviceID(req.Key.Public())
	if err != nil {
		return Result{}, fmt.Errorf("join: device key: %w", err)
	}
	if req.Seq == 0 {
		return Result{}, errors.New("join: the device's next sequence number must be at least 1")
	}
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p := &pinner{code: code, host: base.Hostname(), clk: clock.Or(req.Clock)}
	client := &http.Client{
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{
				// The pin in VerifyConnection replaces the certificate
				// authorities: the code, not a CA, names the receiver. The
				// handshake still proves the server holds the pinned key.
				InsecureSkipVerify: true,
				VerifyConnection:   p.verify,
				MinVersion:         tls.VersionTLS12,
			},
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 15 * time.Second,
			ForceAttemptHTTP2:     true,
		},
		// A redirect would lead away from the pinned receiver's answer.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer client.CloseIdleConnections()

	var ch claimcode.ChallengeResponse
	if err := post(ctx, client, base, claimcode.ChallengePath, "challenge", claimcode.ChallengeRequest{Claim: code.ID()}, &ch); err != nil {
		return Result{}, err
	}
	if len(ch.Nonce) != claimcode.NonceSize {
		return Result{}, fmt.Errorf("join: the receiver's challenge has a nonce of %d bytes, want %d", len(ch.Nonce), claimcode.NonceSize)
	}
	rnd := req.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	sig, err := claimcode.Sign(rnd, req.Key, claimcode.JoinMessage(ch.Nonce, code.ID(), code.Pin(), device, req.Seq))
	if err != nil {
		return Result{}, fmt.Errorf("join: %w", err)
	}
	var jr claimcode.JoinResponse
	jreq := claimcode.JoinRequest{Code: code.String(), Nonce: ch.Nonce, Device: device, SPKI: spki, Seq: req.Seq, Signature: sig}
	if err := post(ctx, client, base, claimcode.JoinPath, "join", jreq, &jr); err != nil {
		return Result{}, err
	}
	if jr.Device != device {
		return Result{}, fmt.Errorf("join: the receiver enrolled device %q, this device is %s", jr.Device, device)
	}
	up, err := url.Parse(jr.UploadURL)
	if err != nil || up.Scheme != "https" || !strings.EqualFold(up.Host, base.Host) {
		return Result{}, fmt.Errorf("join: the receiver names upload URL %q, not on the pinned receiver %s", jr.UploadURL, base.Host)
	}
	res := Result{Device: device, Owner: jr.Owner, UploadURL: jr.UploadURL, Cert: p.leaf()}
	if code.HasCommit() {
		if res.KeySet, err = checkKeySet(code, jr.KeySet); err != nil {
			return Result{}, err
		}
	}
	return res, nil
}

// checkKeySet checks the key set of a join answer against the code's owner
// commitment.
func checkKeySet(code claimcode.Code, signed []byte) (*e2ee.KeySet, error) {
	if len(signed) == 0 || string(signed) == "null" {
		return nil, fmt.Errorf("join: %w: the answer has none", ErrKeySet)
	}
	ks, err := e2ee.ParseSigned(signed)
	if err != nil {
		return nil, fmt.Errorf("join: %w: %w", ErrKeySet, err)
	}
	if fp := ks.Owner(); !code.MatchesCommit(e2ee.ClaimCommit(fp)) {
		return nil, fmt.Errorf("join: %w: it is of owner fingerprint %x, the code names one beginning %x", ErrKeySet, fp[:13], code.Commit())
	}
	return ks, nil
}

// KeySetFile is the file in the camera's data directory that keeps the
// key set pinned at claim (WriteKeySet): {"owner": fingerprint (64 hex),
// "signed": the signed key set}.
const KeySetFile = "e2ee-keyset.json"

// PinnedKeySet is the content of KeySetFile.
type PinnedKeySet struct {
	Owner  string          `json:"owner"`  // the owner fingerprint, 64 hex
	Signed json.RawMessage `json:"signed"` // the signed key set (docs/e2ee.md §3)
}

// WriteKeySet keeps the key set of a join in dataDir/KeySetFile
// (atomically) and returns the file's path and the owner fingerprint (64
// hex) to pin as e2ee.owner. A join without a key set removes a file left
// by an earlier one and returns "".
func WriteKeySet(dataDir string, res Result) (path, owner string, err error) {
	path = filepath.Join(dataDir, KeySetFile)
	if res.KeySet == nil {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", "", fmt.Errorf("join: remove the key set of an earlier join: %w", err)
		}
		return "", "", nil
	}
	fp := res.KeySet.Owner()
	owner = hex.EncodeToString(fp[:])
	b, err := json.Marshal(PinnedKeySet{Owner: owner, Signed: res.KeySet.Signed()})
	if err != nil {
		return "", "", fmt.Errorf("join: key set: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", "", fmt.Errorf("join: data directory: %w", err)
	}
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return "", "", fmt.Errorf("join: write %s: %w", path, err)
	}
	return path, owner, nil
}

// parseURL checks a receiver's base URL.
func parseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("join: %w: %w", ErrURL, err)
	}
	if u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("join: %q: %w", raw, ErrURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

// pinner checks the receiver's certificate against the code during the
// handshake, before any request is sent, and keeps it.
type pinner struct {
	code claimcode.Code
	host string
	clk  clock.Clock

	mu   sync.Mutex
	cert []byte
}

func (p *pinner) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return ErrPin
	}
	leaf := cs.PeerCertificates[0]
	// The code pins the receiver's certificate, or the CA that issued it
	// (a receiver's own CA, sent after its certificate in the handshake).
	pinned := -1
	for i, c := range cs.PeerCertificates {
		if p.code.MatchesSPKI(c.RawSubjectPublicKeyInfo) && (i == 0 || c.IsCA) {
			pinned = i
			break
		}
	}
	if pinned < 0 {
		return fmt.Errorf("%w (it presented %q, whose key has pin %s; the code pins %s)", ErrPin, leaf.Subject.String(), claimcode.Pin(leaf.RawSubjectPublicKeyInfo), p.code.Pin())
	}
	// keyframe run verifies the receiver the usual way, with the pinned
	// certificate as a trusted root: it must pass that check too.
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(cs.PeerCertificates[pinned])
	for _, c := range cs.PeerCertificates[1:max(pinned, 1)] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: p.host, CurrentTime: p.clk.Now()}); err != nil {
		return fmt.Errorf("%w: %w", ErrCertificate, err)
	}
	p.mu.Lock()
	p.cert = cs.PeerCertificates[pinned].Raw
	p.mu.Unlock()
	return nil
}

func (p *pinner) leaf() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cert
}

// post sends body as JSON to the receiver and decodes a 200 answer into out.
func post(ctx context.Context, client *http.Client, base *url.URL, path, step string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	u := *base
	u.Path = base.Path + path
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hr)
	if err != nil {
		if errors.Is(err, ErrPin) || errors.Is(err, ErrCertificate) {
			return fmt.Errorf("join: %s: %w", base.Host, unwrapURL(err))
		}
		return fmt.Errorf("join: cannot reach the receiver at %s: %w", base.Redacted(), err)
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return fmt.Errorf("join: reading the receiver's answer to the %s: %w", step, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.Join(strings.Fields(strings.ToValidUTF8(string(reply), "?")), " ")
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		return &RefusedError{Step: step, Status: resp.StatusCode, Message: msg}
	}
	dec := json.NewDecoder(bytes.NewReader(reply))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("join: the receiver's answer to the %s: %w", step, err)
	}
	return nil
}

// unwrapURL drops the *url.Error around a handshake error, whose text
// repeats the URL.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
