package receiver

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/internal/atomicfile"
	"github.com/keyframe-cam/keyframe/internal/claimcode"
	"github.com/keyframe-cam/keyframe/provenance"
)

// Claiming a camera (docs/claim.md). A signed-in owner gets a claim code
// (NewClaim): a random secret plus a pin of this receiver's TLS key. On the
// camera, `keyframe join URL CODE` pins the receiver's certificate from the
// code, asks for a challenge (POST /v1/claim/challenge with the code's ID)
// and sends the code with its device key's signature over the challenge
// (POST /v1/claim/join); the receiver checks both, enrolls the key and pairs
// it to the code's owner. The code and the proof of possession are the
// authentication: the two endpoints are anonymous.
//
// The codes live in claims.json in the data directory, written atomically
// under a flock on claims.lock, so any process may issue one (IssueClaim).
// Only hashes of a secret are stored: its ID (to find it) and its verifier
// (to check it), each a domain-separated SHA-256.

// Claim parameters.
const (
	// ClaimTTL is how long a claim code stays valid.
	ClaimTTL = 10 * time.Minute
	// MaxOpenClaims is how many unused, unexpired codes an owner may hold; a
	// new one replaces the oldest.
	MaxOpenClaims = 5
	// MaxClaimFailures is how many wrong proofs burn a code.
	MaxClaimFailures = 3
	// claimKeep is how long a used or expired code is remembered after its
	// expiry, so a late camera hears "used" or "expired" rather than
	// "unknown".
	claimKeep = time.Hour
	// maxClaims bounds claims.json: codes remembered at once, all owners.
	maxClaims = 10000
	// nonceTTL is how long a challenge nonce may be answered.
	nonceTTL = 2 * time.Minute
	// claimRateWindow and claimRatePerAddr limit the claim requests
	// (challenges and joins together) of one source address (an IPv6 /64).
	claimRateWindow  = time.Minute
	claimRatePerAddr = 20
	// maxRateAddrs bounds the addresses tracked at once; beyond it (after
	// forgetting finished windows) claim requests are refused until windows
	// end.
	maxRateAddrs = 10000
)

const (
	claimsFile = "claims.json"
	claimsLock = "claims.lock"
)

// Claim errors, returned wrapped.
var (
	// ErrNoTLS reports a receiver without a TLS certificate: a claim code
	// commits to that certificate, so there is none to issue.
	ErrNoTLS = errors.New("claim codes need the receiver to serve TLS (the code pins its certificate)")
	// ErrTooManyClaims reports a claims file at its bound.
	ErrTooManyClaims = errors.New("too many claim codes outstanding; try again later")
)

// ClaimCode is a claim code issued to an owner: what the owner's page shows.
type ClaimCode struct {
	Code    string    `json:"code"`    // as typed on the camera: keyframe join URL CODE
	Owner   string    `json:"owner"`   // the camera is paired to this owner
	Expires time.Time `json:"expires"` // valid until then, once
	// Pin is the hex SHA-256 of the receiver certificate's
	// SubjectPublicKeyInfo; the code holds its first claimcode.PinBits bits.
	Pin string `json:"pin_sha256"`
	// E2EEOwner is the owner fingerprint (hex) the code commits to: its
	// first claimcode.CommitBits bits are in the code, and the camera pins
	// that identity (docs/e2ee.md §5). "" for a code without end-to-end
	// encryption.
	E2EEOwner string `json:"e2ee_owner,omitempty"`
}

// claimFileData is the on-disk form of claims.json.
type claimFileData struct {
	Version int            `json:"version"`
	Claims  []*claimRecord `json:"claims"` // in the order issued
}

// claimRecord is one issued code.
type claimRecord struct {
	ID       string    `json:"id"`       // claimcode.Code.ID
	Verifier []byte    `json:"verifier"` // claimcode.Code.Verifier
	Owner    string    `json:"owner"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
	Failures int       `json:"failures,omitempty"` // wrong proofs; MaxClaimFailures burn it
	Used     bool      `json:"used,omitempty"`
	Device   string    `json:"device,omitempty"` // the device that used it
	Seq      uint64    `json:"seq,omitempty"`    // the device's signed next sequence number when it joined
	// Commit is the code's owner commitment (hex of
	// claimcode.Code.Commit), "" for a code without one: a join must carry
	// this one.
	Commit string `json:"commit,omitempty"`
}

func (c *claimRecord) burned() bool { return c.Failures >= MaxClaimFailures }

// open reports whether the code may still be used at now.
func (c *claimRecord) open(now time.Time) bool {
	return !c.Used && !c.burned() && now.Before(c.Expires)
}

// loadClaims reads claims.json in dir; a missing file has no claims.
func loadClaims(dir string) (*claimFileData, error) {
	b, err := os.ReadFile(filepath.Join(dir, claimsFile))
	if errors.Is(err, os.ErrNotExist) {
		return &claimFileData{Version: 1}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("receiver: read claims: %w", err)
	}
	var f claimFileData
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("receiver: claims %s: %w", filepath.Join(dir, claimsFile), err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("receiver: claims %s: version %d, want 1", filepath.Join(dir, claimsFile), f.Version)
	}
	for _, c := range f.Claims {
		if c == nil || !claimcode.ValidID(c.ID) || len(c.Verifier) != sha256.Size {
			return nil, fmt.Errorf("receiver: claims %s: a malformed claim", filepath.Join(dir, claimsFile))
		}
	}
	return &f, nil
}

// find returns the claim with id, or nil.
func (f *claimFileData) find(id string) *claimRecord {
	for _, c := range f.Claims {
		if c.ID == id {
			return c
		}
	}
	return nil
}

// updateClaims runs fn on claims.json under its lock, forgets codes that
// expired more than claimKeep before now, and writes the result atomically
// if fn succeeds.
func updateClaims(dir string, now time.Time, fn func(*claimFileData) error) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("receiver: data directory: %w", err)
	}
	unlock, err := lockFile(filepath.Join(dir, claimsLock), true)
	if err != nil {
		return err
	}
	defer unlock()
	f, err := loadClaims(dir)
	if err != nil {
		return err
	}
	kept := f.Claims[:0]
	for _, c := range f.Claims {
		if now.Before(c.Expires.Add(claimKeep)) {
			kept = append(kept, c)
		}
	}
	f.Claims = kept
	if err := fn(f); err != nil {
		return err
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("receiver: encode claims: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, claimsFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("receiver: write claims: %w", err)
	}
	return nil
}

// IssueClaim issues a claim code for owner in the data directory dir, for a
// receiver serving the TLS certificate cert (DER): the code pins cert's
// public key and, when the owner has an end-to-end encryption key set,
// commits to its identity (a 50-character code, docs/e2ee.md §5). It is
// NewClaim for a process beside the running receiver (an operator's tool, a
// test), as Pair is. An owner holds at most MaxOpenClaims open codes: a new
// one replaces the oldest.
func IssueClaim(dir string, cert []byte, owner string, now time.Time, rnd io.Reader) (ClaimCode, error) {
	return issueClaim(dir, cert, owner, true, now, rnd)
}

// IssuePlainClaim is IssueClaim without end-to-end encryption: the code
// commits to no identity (30 characters) even if the owner has a key set.
func IssuePlainClaim(dir string, cert []byte, owner string, now time.Time, rnd io.Reader) (ClaimCode, error) {
	return issueClaim(dir, cert, owner, false, now, rnd)
}

func issueClaim(dir string, cert []byte, owner string, withE2EE bool, now time.Time, rnd io.Reader) (ClaimCode, error) {
	if !ValidOwner(owner) {
		return ClaimCode{}, fmt.Errorf("receiver: claim: %q: %w", clip(owner), ErrOwner)
	}
	if len(cert) == 0 {
		return ClaimCode{}, fmt.Errorf("receiver: claim: %w", ErrNoTLS)
	}
	crt, err := x509.ParseCertificate(cert)
	if err != nil {
		return ClaimCode{}, fmt.Errorf("receiver: claim: TLS certificate: %w", err)
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	var ks *e2ee.KeySet
	if withE2EE {
		if ks, err = OwnerKeySet(dir, owner); err != nil {
			return ClaimCode{}, fmt.Errorf("receiver: claim: %w", err)
		}
	}
	var code claimcode.Code
	if ks != nil {
		code, err = claimcode.NewCommitted(rnd, crt.RawSubjectPublicKeyInfo, e2ee.ClaimCommit(ks.Owner()))
	} else {
		code, err = claimcode.New(rnd, crt.RawSubjectPublicKeyInfo)
	}
	if err != nil {
		return ClaimCode{}, fmt.Errorf("receiver: claim: %w", err)
	}
	rec := &claimRecord{ID: code.ID(), Verifier: code.Verifier(), Owner: owner, Created: now.UTC(), Expires: now.Add(ClaimTTL).UTC(), Commit: hex.EncodeToString(code.Commit())}
	err = updateClaims(dir, now, func(f *claimFileData) error {
		var open []int
		for i, c := range f.Claims {
			if c.Owner == owner && c.open(now) {
				open = append(open, i)
			}
		}
		if len(open) >= MaxOpenClaims {
			i := open[0] // the oldest: issued first
			f.Claims = append(f.Claims[:i], f.Claims[i+1:]...)
		}
		if len(f.Claims) >= maxClaims {
			return fmt.Errorf("receiver: claim: %w", ErrTooManyClaims)
		}
		f.Claims = append(f.Claims, rec)
		return nil
	})
	if err != nil {
		return ClaimCode{}, err
	}
	sum := sha256.Sum256(crt.RawSubjectPublicKeyInfo)
	cc := ClaimCode{Code: code.String(), Owner: owner, Expires: rec.Expires, Pin: hex.EncodeToString(sum[:])}
	if ks != nil {
		fp := ks.Owner()
		cc.E2EEOwner = hex.EncodeToString(fp[:])
	}
	return cc, nil
}

// claimState is a Server's claim machinery: its TLS certificate's pin, the
// outstanding challenge nonces and the per-address rate limit.
type claimState struct {
	cert []byte    // DER of the TLS certificate; nil without TLS
	pin  string    // claimcode.Pin of its key; "" without TLS
	rand io.Reader // nonces and secrets

	join sync.Mutex // serialises joins: check, mark used, enroll, pair

	nonceMu sync.Mutex
	nonces  map[string]pendingNonce // hex nonce → its claim

	rate *windows // claim requests per source prefix
}

// pendingNonce is a challenge handed out and not yet answered.
type pendingNonce struct {
	claim   string // claim ID
	expires time.Time
}

func newClaimState(opts Options) (*claimState, error) {
	c := &claimState{
		rand:   opts.Rand,
		nonces: map[string]pendingNonce{},
		rate:   newWindows(claimRateWindow, maxRateAddrs),
	}
	if c.rand == nil {
		c.rand = rand.Reader
	}
	if len(opts.TLSCertificate) > 0 {
		crt, err := x509.ParseCertificate(opts.TLSCertificate)
		if err != nil {
			return nil, fmt.Errorf("receiver: TLS certificate: %w", err)
		}
		c.cert = opts.TLSCertificate
		c.pin = claimcode.Pin(crt.RawSubjectPublicKeyInfo)
	}
	return c, nil
}

// NewClaim issues a one-time claim code for owner (the signed-in owner: never
// a name from the request), valid for ClaimTTL, committing to the owner's
// end-to-end encryption identity when the owner has a key set. It fails with
// ErrNoTLS when the receiver has no TLS certificate
// (Options.TLSCertificate).
func (s *Server) NewClaim(owner string) (ClaimCode, error) {
	return IssueClaim(s.dir, s.claims.cert, owner, s.clk.Now(), s.claims.rand)
}

// NewPlainClaim is NewClaim without end-to-end encryption (a 30-character
// code).
func (s *Server) NewPlainClaim(owner string) (ClaimCode, error) {
	return IssuePlainClaim(s.dir, s.claims.cert, owner, s.clk.Now(), s.claims.rand)
}

// claimPageTemplate shows a new claim code to its owner.
const claimPageTemplate = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="/favicon.ico" type="image/svg+xml"><title>Add a camera</title>
<style>body { font-family: sans-serif; margin: 1.5em; color: #222; } .code { font-family: monospace; font-size: 1.6em; letter-spacing: .05em; } .muted { color: #777; }</style>
</head>
<body data-account="{{.Account}}">
<h1>Add a camera</h1>
<p>On the camera, run:</p>
<p class="code">keyframe join {{.URL}} {{.Code}}</p>
<p id="claimverdict" class="muted" role="status">This page's script checks the code against your keys…</p>
<div id="claimcheck" data-code="{{.Code}}" data-plain="{{.Plain}}" hidden></div>
<p>The code works once, until {{.Expires}}. It also tells the camera which receiver to trust, so no one in between can pose as this receiver.</p>
<p class="muted">Receiver key fingerprint (SHA-256): {{.Pin}}</p>
{{if .E2EE}}<p>End-to-end encryption: the code also names your identity key, so the camera will seal its pictures to your browsers' keys only (owner fingerprint <span class="muted">{{.E2EE}}</span>).</p>
<form method="post" action="/claims"><input type="hidden" name="e2ee" value="off"><button>Get a code without end-to-end encryption</button> <span class="muted">(the receiver can then see the camera's pictures)</span></form>{{end}}
<script src="/static/e2ee.js"></script><script src="/static/sealed.js" defer></script>
</body>
</html>
`

// handleNewClaim issues a claim code for owner, the signed-in owner, and
// shows it: JSON (a ClaimCode) when the request accepts application/json,
// otherwise a page with the command to run on the camera.
//
// The form field e2ee=off asks for a code without end-to-end encryption
// (30 characters) when the owner has a key set.
func (s *Server) handleNewClaim(w http.ResponseWriter, r *http.Request, owner string) {
	r.Body = http.MaxBytesReader(w, r.Body, MaxE2EEBody)
	if err := r.ParseForm(); err != nil {
		writeLine(w, http.StatusBadRequest, "malformed request: "+clip(err.Error()))
		return
	}
	issue := s.NewClaim
	switch r.PostFormValue("e2ee") {
	case "", "on":
	case "off":
		issue = s.NewPlainClaim
	default:
		writeLine(w, http.StatusBadRequest, "malformed request: e2ee: want on or off")
		return
	}
	cc, err := issue(owner)
	switch {
	case errors.Is(err, ErrNoTLS), errors.Is(err, ErrOwner):
		writeLine(w, http.StatusNotFound, "adding cameras is not available: "+err.Error())
		return
	case err != nil:
		s.log.Error("receiver: cannot issue a claim code", "owner", owner, "err", err)
		writeLine(w, http.StatusServiceUnavailable, "cannot issue a claim code now, try again later")
		return
	}
	s.log.Info("receiver: claim code issued", "owner", owner, "expires", cc.Expires, "e2ee", cc.E2EEOwner != "")
	w.Header().Set("Cache-Control", "no-store")
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(cc); err != nil {
			s.log.Warn("receiver: write claim code", "err", err)
		}
		return
	}
	tmpl, err := template.New("claim").Parse(claimPageTemplate)
	if err != nil {
		s.log.Error("receiver: claim page template", "err", err)
		writeLine(w, http.StatusInternalServerError, "internal error")
		return
	}
	setPageHeaders(w)
	// The browser checks the code's owner commitment (sealed.js): the
	// receiver's stored key set is data, not a trusted source.
	w.Header().Set("Content-Security-Policy", sealedPageCSP)
	data := struct {
		URL, Code, Expires, Pin, E2EE, Account string
		Plain                                  bool
	}{baseURL(r), cc.Code, cc.Expires.Format("15:04 MST, 2 Jan 2006"), cc.Pin, cc.E2EEOwner, owner, r.PostFormValue("e2ee") == "off"}
	if err := tmpl.Execute(w, data); err != nil {
		s.log.Warn("receiver: write claim page", "err", err)
	}
}

// baseURL is the receiver's base URL as the client reached it.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + clip(r.Host) + "/"
}

// allow counts a claim request of addr at now and reports whether it is
// within the limit.
func (c *claimState) allow(addr netip.Prefix, now time.Time) bool {
	n, _ := c.rate.count(addr, now)
	return n <= claimRatePerAddr
}

// newNonce hands out a fresh nonce for claim id, replacing any earlier one of
// that claim (one outstanding challenge per code).
func (c *claimState) newNonce(id string, now time.Time) ([]byte, error) {
	n := make([]byte, claimcode.NonceSize)
	if _, err := io.ReadFull(c.rand, n); err != nil {
		return nil, fmt.Errorf("receiver: claim nonce: %w", err)
	}
	c.nonceMu.Lock()
	defer c.nonceMu.Unlock()
	for k, p := range c.nonces {
		if p.claim == id || !now.Before(p.expires) {
			delete(c.nonces, k)
		}
	}
	c.nonces[hex.EncodeToString(n)] = pendingNonce{claim: id, expires: now.Add(nonceTTL)}
	return n, nil
}

// takeNonce removes nonce and reports whether it was handed out for claim id
// and is still fresh. A nonce is answered at most once, right or wrong.
func (c *claimState) takeNonce(nonce []byte, id string, now time.Time) bool {
	c.nonceMu.Lock()
	defer c.nonceMu.Unlock()
	k := hex.EncodeToString(nonce)
	p, ok := c.nonces[k]
	if !ok {
		return false
	}
	delete(c.nonces, k)
	return p.claim == id && now.Before(p.expires)
}

// decodeClaimBody reads a small, strict JSON body into v: at most
// claimcode.MaxBody bytes, no unknown fields, one value. On failure it has
// answered.
func decodeClaimBody(w http.ResponseWriter, r *http.Request, v any) bool {
	r.Body = http.MaxBytesReader(w, r.Body, claimcode.MaxBody)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if err == nil {
		if _, e := dec.Token(); !errors.Is(e, io.EOF) {
			err = errors.New("data after the JSON value")
		}
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeLine(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", claimcode.MaxBody))
			return false
		}
		writeLine(w, http.StatusBadRequest, "malformed request: "+clip(err.Error()))
		return false
	}
	return true
}

// claimStatus answers for a claim that cannot be used (unknown, expired,
// used, burned) and reports whether it did.
func claimStatus(w http.ResponseWriter, c *claimRecord, now time.Time) bool {
	switch {
	case c == nil:
		writeLine(w, http.StatusNotFound, "unknown claim code: check it, or ask the owner's page for a new one")
	case c.Used:
		writeLine(w, http.StatusGone, "this claim code was used already: ask the owner's page for a new one")
	case c.burned():
		writeLine(w, http.StatusGone, "this claim code was refused after too many failed attempts: ask the owner's page for a new one")
	case !now.Before(c.Expires):
		writeLine(w, http.StatusGone, "this claim code has expired: ask the owner's page for a new one")
	default:
		return false
	}
	return true
}

// handleClaimChallenge answers POST /v1/claim/challenge: a fresh nonce for
// an open claim code, named by its ID.
func (s *Server) handleClaimChallenge(w http.ResponseWriter, r *http.Request) {
	now := s.clk.Now()
	if !s.claims.allow(sourcePrefix(r.RemoteAddr), now) {
		w.Header().Set("Retry-After", fmt.Sprint(int(claimRateWindow/time.Second)))
		writeLine(w, http.StatusTooManyRequests, "too many claim attempts from this address, retry later")
		return
	}
	var req claimcode.ChallengeRequest
	if !decodeClaimBody(w, r, &req) {
		return
	}
	if !claimcode.ValidID(req.Claim) {
		writeLine(w, http.StatusBadRequest, "malformed request: not a claim ID")
		return
	}
	f, err := loadClaims(s.dir)
	if err != nil {
		s.log.Error("receiver: claims unreadable", "err", err)
		writeLine(w, http.StatusServiceUnavailable, "claims unavailable, retry later")
		return
	}
	if claimStatus(w, f.find(req.Claim), now) {
		return
	}
	nonce, err := s.claims.newNonce(req.Claim, now)
	if err != nil {
		s.log.Error("receiver: claim nonce", "err", err)
		writeLine(w, http.StatusServiceUnavailable, "internal error, retry later")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(claimcode.ChallengeResponse{Nonce: nonce, ExpiresIn: int(nonceTTL / time.Second)})
}

// errClaimRefused stops an updateClaims whose change is already decided.
var errClaimRefused = errors.New("refused")

// handleClaimJoin answers POST /v1/claim/join: it checks the code and the
// device key's proof over the challenge, then enrolls the key and pairs it
// to the code's owner. Every refusal leaves the registry as it was.
func (s *Server) handleClaimJoin(w http.ResponseWriter, r *http.Request) {
	now := s.clk.Now()
	if !s.claims.allow(sourcePrefix(r.RemoteAddr), now) {
		w.Header().Set("Retry-After", fmt.Sprint(int(claimRateWindow/time.Second)))
		writeLine(w, http.StatusTooManyRequests, "too many claim attempts from this address, retry later")
		return
	}
	var req claimcode.JoinRequest
	if !decodeClaimBody(w, r, &req) {
		return
	}
	code, err := claimcode.Parse(req.Code)
	if err != nil {
		writeLine(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(req.Nonce) != claimcode.NonceSize || !ValidDeviceID(req.Device) || len(req.SPKI) == 0 || len(req.Signature) == 0 || req.Seq == 0 {
		writeLine(w, http.StatusBadRequest, "malformed request: nonce, device, spki, seq (from 1) and signature are required")
		return
	}
	id := code.ID()

	s.claims.join.Lock()
	defer s.claims.join.Unlock()
	f, err := loadClaims(s.dir)
	if err != nil {
		s.log.Error("receiver: claims unreadable", "err", err)
		writeLine(w, http.StatusServiceUnavailable, "claims unavailable, retry later")
		return
	}
	rec := f.find(id)
	if claimStatus(w, rec, now) {
		return
	}
	// The proof. Every failure from here on counts against the code.
	fresh := s.claims.takeNonce(req.Nonce, id, now)
	var why string
	switch {
	case subtle.ConstantTimeCompare(code.Verifier(), rec.Verifier) != 1:
		why = "wrong claim code"
	case hex.EncodeToString(code.Commit()) != rec.Commit:
		why = "wrong claim code: its owner commitment is not the one issued"
	case s.claims.pin == "" || subtle.ConstantTimeCompare([]byte(code.Pin()), []byte(s.claims.pin)) != 1:
		why = "the claim code was made for another receiver certificate"
	case !fresh:
		why = "the challenge is unknown, used or expired: ask for a new one"
	}
	var pub any
	if why == "" {
		msg := claimcode.JoinMessage(req.Nonce, id, code.Pin(), req.Device, req.Seq)
		pub, err = claimcode.Verify(req.SPKI, msg, req.Signature)
		switch {
		case err != nil:
			why = "proof of possession refused: " + clip(err.Error())
		default:
			if dev, derr := provenance.DeviceID(pub); derr != nil || dev != req.Device {
				why = "the device ID is not the fingerprint of the key"
			}
		}
	}
	if why != "" {
		s.claimFailed(id, now, r, why)
		writeLine(w, http.StatusForbidden, why)
		return
	}

	// The key may join: refuse, writing nothing, a key the registry holds
	// for another owner, revoked or retired.
	reg, err := s.regs.read()
	if err != nil {
		s.log.Error("receiver: registry unreadable", "err", err)
		writeLine(w, http.StatusServiceUnavailable, "registry unavailable, retry later")
		return
	}
	d := reg.Devices[req.Device]
	switch {
	case d != nil && d.Revoked:
		writeLine(w, http.StatusForbidden, "this camera's key is revoked: reset the camera to a new key (a new device ID) to claim it")
		return
	case d != nil && !bytes.Equal(d.SPKI, req.SPKI):
		writeLine(w, http.StatusForbidden, "the registry holds another key for this device ID")
		return
	case d != nil && d.RotatedTo != "":
		writeLine(w, http.StatusForbidden, "this key was rotated to a new one: run keyframe join with the camera's current key")
		return
	case reg.owner(req.Device) != "" && reg.owner(req.Device) != rec.Owner:
		s.log.Warn("receiver: claim refused: the camera is paired to another owner", "device", req.Device, "claimant", rec.Owner, "remote", r.RemoteAddr)
		writeLine(w, http.StatusConflict, "this camera is paired to another owner: its owner must remove it first (or reset the camera to a new key)")
		return
	}

	// A code that commits to the owner's identity gets the owner's key set,
	// which must be of that identity: otherwise the camera would refuse it
	// after the pairing.
	var signed []byte
	if code.HasCommit() {
		ks, err := OwnerKeySet(s.dir, rec.Owner)
		if err != nil {
			s.log.Error("receiver: e2ee keys unreadable", "owner", rec.Owner, "err", err)
			writeLine(w, http.StatusServiceUnavailable, "the owner's keys are unavailable, retry later")
			return
		}
		if ks == nil || !code.MatchesCommit(e2ee.ClaimCommit(ks.Owner())) {
			s.log.Warn("receiver: claim refused: the owner's key set is not the identity the code commits to", "owner", rec.Owner, "device", req.Device)
			writeLine(w, http.StatusConflict, "the owner's end-to-end encryption identity changed since this code was made: ask the owner's page for a new one")
			return
		}
		signed = ks.Signed()
	}

	// Use the code (it cannot be used twice, even if what follows fails),
	// then enroll and pair.
	var gone bool
	err = updateClaims(s.dir, now, func(f *claimFileData) error {
		c := f.find(id)
		if c == nil || !c.open(now) {
			gone = true
			return errClaimRefused
		}
		c.Used, c.Device, c.Seq = true, req.Device, req.Seq
		return nil
	})
	if gone {
		writeLine(w, http.StatusGone, "this claim code was used already: ask the owner's page for a new one")
		return
	}
	if err != nil {
		s.log.Error("receiver: cannot use a claim code", "err", err)
		writeLine(w, http.StatusServiceUnavailable, "claims unavailable, retry later")
		return
	}
	if err := s.claimDevice(d, pub, req.Device, rec.Owner, req.Seq); err != nil {
		s.log.Error("receiver: claim: cannot enroll and pair", "device", req.Device, "owner", rec.Owner, "err", err)
		writeLine(w, http.StatusServiceUnavailable, "the camera could not be enrolled: ask the owner's page for a new code and retry")
		return
	}
	s.log.Info("receiver: camera claimed", "device", req.Device, "owner", rec.Owner, "seq", req.Seq, "remote", r.RemoteAddr)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(claimcode.JoinResponse{Device: req.Device, Owner: rec.Owner, UploadURL: baseURL(r), KeySet: signed})
}

// claimDevice enrolls pub (unless the registry holds it individually
// already) and pairs device to owner from seq on. d is the device's
// registration as read before, nil if unknown.
func (s *Server) claimDevice(d *registration, pub any, device, owner string, seq uint64) error {
	if d == nil || d.byFleetCA() {
		if _, err := EnrollAll(s.dir, []Enrollment{{PublicKey: pub}}); err != nil {
			return err
		}
	}
	// The owner check is repeated inside the registry update, so an
	// operator's pair in the same instant cannot be overwritten.
	return pairClaimed(s.dir, device, owner, seq)
}

// pairClaimed pairs a claimed device to owner from seq on (the device's
// signed next sequence number, raised as PairFrom raises it), unless it is
// paired to another owner now (errPairedElsewhere).
func pairClaimed(dir, device, owner string, seq uint64) error {
	return updateRegistry(dir, func(r *registry) error {
		d := r.Devices[device]
		switch {
		case d == nil:
			return fmt.Errorf("receiver: pair %s: %w", device, ErrNotEnrolled)
		case d.Revoked:
			return fmt.Errorf("receiver: pair %s: %w", device, ErrRevoked)
		}
		if o := d.open(); o != nil {
			if o.Owner == owner {
				return nil // paired to this owner already: a camera joining again
			}
			return fmt.Errorf("receiver: pair %s: %w", device, errPairedElsewhere)
		}
		next, err := storedNext(dir, []string{device})
		if err != nil {
			return err
		}
		r.edit(device).pairFrom(owner, max(seq, next[device]))
		return nil
	})
}

// errPairedElsewhere: a claimed camera is paired to another owner.
var errPairedElsewhere = errors.New("paired to another owner")

// claimFailed counts a wrong proof against claim id (MaxClaimFailures burn
// it) and logs it.
func (s *Server) claimFailed(id string, now time.Time, r *http.Request, why string) {
	failures := 0
	err := updateClaims(s.dir, now, func(f *claimFileData) error {
		c := f.find(id)
		if c == nil {
			return errClaimRefused
		}
		c.Failures++
		failures = c.Failures
		return nil
	})
	if err != nil && !errors.Is(err, errClaimRefused) {
		s.log.Error("receiver: cannot count a failed claim attempt", "err", err)
	}
	s.log.Warn("receiver: claim attempt refused", "reason", why, "failures", failures, "burned", failures >= MaxClaimFailures, "remote", r.RemoteAddr)
}
