package receiver

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	_ "embed" // passkey.js
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
)

// Passkeys (WebAuthn, github.com/go-webauthn/webauthn). An account may hold
// passkeys besides (or instead of) a password: a signed-in account adds one
// from its account page (/sessions), a one-time setup link may register one
// instead of choosing a password, and the sign-in page signs in with one
// without a name (a discoverable credential: the authenticator tells whose
// it is by the account's random user handle).
//
// The relying party is the host the page is served under: its ID is the
// request's Host (allowed by the guard) without its port, its one origin
// the scheme and that Host. Browsers refuse passkeys on an IP address and
// outside a secure context (HTTPS, or http://localhost), so there the
// buttons are not offered, the page says why, and passwords work as ever.
//
// Each ceremony (sign-in, registration, setup) is begun by a POST that makes
// a fresh 32-byte challenge; the server keeps what it needs to finish
// (webauthn.SessionData, the flow, the account and session or link it is
// bound to, the origin) in memory, by challenge, for passkeyTTL. The finish
// POST's client data names the challenge; the ceremony is taken out of the
// store at once, so it is used at most once whatever the outcome. Pending
// ceremonies are bounded per source address and overall. Nothing of a
// ceremony is in a cookie.
//
// A failed passkey sign-in is answered like a failed password: one status
// (401) and one message, whatever failed (an unknown challenge, credential
// or user handle, a bad signature, a sign counter that went back), and it
// counts against the source address and the presented user handle in the
// same limiters as passwords.

// Passkey limits.
const (
	passkeyTTL           = 2 * time.Minute // a ceremony's challenge is valid this long
	maxCeremonies        = 1000            // pending ceremonies at once
	maxCeremoniesPerAddr = 8               // pending ceremonies of one source address
	maxPasskeyBody       = 64 << 10        // a ceremony's JSON body
	maxPasskeys          = 16              // passkeys of one account
	passkeyHandleBytes   = 32              // the random WebAuthn user handle
	challengeBytes       = 32
	maxCredentialID      = 1023 // WebAuthn's bound on a credential ID
	passkeyFailText      = "The passkey was not accepted."
	passkeyRegFailText   = "The passkey was not registered."
	rpDisplayName        = "keyframe"
)

// passkeyPageCSP is the pages' policy (setPageHeaders) with the one script
// the passkey buttons need, from this origin only, and its requests to this
// origin. No inline script, no eval.
const passkeyPageCSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

//go:embed passkey.js
var passkeyJS []byte

// passkey is one WebAuthn credential of an account, in accounts.json.
type passkey struct {
	ID                []byte    `json:"id"`         // the credential ID
	PublicKey         []byte    `json:"public_key"` // COSE_Key
	SignCount         uint32    `json:"sign_count"`
	AAGUID            string    `json:"aaguid,omitempty"` // the authenticator's model, a UUID
	Transports        []string  `json:"transports,omitempty"`
	AttestationFormat string    `json:"attestation_format,omitempty"`
	UserVerified      bool      `json:"user_verified,omitempty"`
	BackupEligible    bool      `json:"backup_eligible,omitempty"`
	BackupState       bool      `json:"backup_state,omitempty"`
	Created           time.Time `json:"created"`
	LastUsed          time.Time `json:"last_used,omitzero"`
}

// passkeysWellFormed reports whether an account's passkey fields are sane.
func (a *account) passkeysWellFormed() bool {
	if len(a.UserHandle) != 0 && len(a.UserHandle) != passkeyHandleBytes {
		return false
	}
	if len(a.Passkeys) > 0 && len(a.UserHandle) == 0 {
		return false
	}
	for _, p := range a.Passkeys {
		if p == nil || len(p.ID) == 0 || len(p.ID) > maxCredentialID || len(p.PublicKey) == 0 {
			return false
		}
	}
	return true
}

// credential returns p as the library's credential record.
func (p *passkey) credential() webauthn.Credential {
	tr := make([]protocol.AuthenticatorTransport, len(p.Transports))
	for i, t := range p.Transports {
		tr[i] = protocol.AuthenticatorTransport(t)
	}
	return webauthn.Credential{
		ID: p.ID, PublicKey: p.PublicKey, AttestationFormat: p.AttestationFormat, Transport: tr,
		Flags:         webauthn.CredentialFlags{UserPresent: true, UserVerified: p.UserVerified, BackupEligible: p.BackupEligible, BackupState: p.BackupState},
		Authenticator: webauthn.Authenticator{SignCount: p.SignCount},
	}
}

// newPasskey makes the stored record of a credential just registered.
func newPasskey(c *webauthn.Credential, now time.Time) *passkey {
	p := &passkey{ID: c.ID, PublicKey: c.PublicKey, SignCount: c.Authenticator.SignCount, AttestationFormat: c.AttestationFormat,
		UserVerified: c.Flags.UserVerified, BackupEligible: c.Flags.BackupEligible, BackupState: c.Flags.BackupState, Created: now.UTC()}
	if a := c.Authenticator.AAGUID; len(a) == 16 {
		p.AAGUID = fmt.Sprintf("%x-%x-%x-%x-%x", a[0:4], a[4:6], a[6:8], a[8:10], a[10:16])
	}
	for _, t := range c.Transport {
		if len(p.Transports) < 8 && len(t) <= 32 {
			p.Transports = append(p.Transports, string(t))
		}
	}
	return p
}

// waUser is an account as the library sees it.
type waUser struct {
	name string
	acc  *account
}

func (u waUser) WebAuthnID() []byte          { return u.acc.UserHandle }
func (u waUser) WebAuthnName() string        { return u.name }
func (u waUser) WebAuthnDisplayName() string { return u.name }
func (u waUser) WebAuthnCredentials() []webauthn.Credential {
	out := make([]webauthn.Credential, len(u.acc.Passkeys))
	for i, p := range u.acc.Passkeys {
		out[i] = p.credential()
	}
	return out
}

// relyingParty is the WebAuthn relying party of a request.
type relyingParty struct {
	id     string // the host name
	origin string // scheme://host[:port]
}

// passkeyRP returns the relying party of r, or why passkeys are not offered
// at the address r came to. r's Host is one the guard allowed.
func passkeyRP(r *http.Request) (relyingParty, string) {
	h := splitHost(r.Host)
	if h.host == "" {
		return relyingParty{}, "Passkeys are not offered here: the request names no host."
	}
	if net.ParseIP(h.host) != nil {
		return relyingParty{}, "Passkeys are not offered at an IP address (" + h.host + "): browsers refuse them there. " +
			"Open the receiver by its host name (on its own machine: localhost) to use one; passwords work everywhere."
	}
	scheme := "https"
	if r.TLS == nil {
		if h.host != "localhost" {
			return relyingParty{}, "Passkeys are not offered over plain HTTP: browsers allow them over HTTPS (or on localhost) only. Passwords work."
		}
		scheme = "http"
	}
	if err := protocol.ValidateRPID(h.host); err != nil {
		return relyingParty{}, "Passkeys are not offered under this host name."
	}
	origin := scheme + "://" + h.host
	if h.port != "" && !(scheme == "https" && h.port == "443") && !(scheme == "http" && h.port == "80") {
		origin += ":" + h.port
	}
	return relyingParty{id: h.host, origin: origin}, ""
}

// webauthn returns the library configured for rp: discoverable credentials
// (passkeys), user verification required (the passkey is the only factor),
// no attestation asked for.
func (rp relyingParty) webauthn() (*webauthn.WebAuthn, error) {
	to := webauthn.TimeoutConfig{Timeout: passkeyTTL, TimeoutUVD: passkeyTTL}
	wa, err := webauthn.New(&webauthn.Config{
		RPID: rp.id, RPDisplayName: rpDisplayName, RPOrigins: []string{rp.origin},
		AttestationPreference: protocol.PreferNoAttestation,
		AuthenticatorSelection: protocol.AuthenticatorSelection{ResidentKey: protocol.ResidentKeyRequirementRequired,
			RequireResidentKey: protocol.ResidentKeyRequired(), UserVerification: protocol.VerificationRequired},
		Timeouts: webauthn.TimeoutsConfig{Login: to, Registration: to},
	})
	if err != nil {
		return nil, fmt.Errorf("receiver: webauthn: %w", err)
	}
	return wa, nil
}

// Ceremony flows.
const (
	flowSignIn   = "sign-in"
	flowRegister = "register" // a signed-in account adds a passkey
	flowSetup    = "setup"    // a setup link's account registers one
)

// ceremony is a begun WebAuthn ceremony waiting for its finish.
type ceremony struct {
	flow    string
	account string // register, setup: whose passkey
	bound   string // register: the session's token hash; setup: the link's
	origin  string // where it was begun
	addr    string // the source address that began it
	expires time.Time
	data    webauthn.SessionData
}

// ceremonies holds the pending ceremonies, by challenge (base64url).
type ceremonies struct {
	mu      sync.Mutex
	m       map[string]*ceremony
	perAddr map[string]int
}

func newCeremonies() *ceremonies {
	return &ceremonies{m: map[string]*ceremony{}, perAddr: map[string]int{}}
}

// Errors of ceremonies.add.
var (
	errCeremoniesAddr = errors.New("receiver: too many passkey requests from this address")
	errCeremoniesFull = errors.New("receiver: too many passkey requests at once")
)

// add keeps c under its challenge until it expires, unless its address or
// the store is at its bound.
func (cs *ceremonies) add(c *ceremony, now time.Time) error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.perAddr[c.addr] >= maxCeremoniesPerAddr || len(cs.m) >= maxCeremonies {
		cs.pruneLocked(now)
	}
	switch {
	case cs.perAddr[c.addr] >= maxCeremoniesPerAddr:
		return errCeremoniesAddr
	case len(cs.m) >= maxCeremonies:
		return errCeremoniesFull
	}
	if _, dup := cs.m[c.data.Challenge]; dup {
		return errors.New("receiver: passkey challenge reused") // only a broken random source
	}
	cs.m[c.data.Challenge] = c
	cs.perAddr[c.addr]++
	return nil
}

// take removes and returns the ceremony of challenge if it is of flow and
// has not expired; nil otherwise. A ceremony is taken once.
func (cs *ceremonies) take(challenge, flow string, now time.Time) *ceremony {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c := cs.m[challenge]
	if c == nil {
		return nil
	}
	cs.removeLocked(challenge, c)
	if c.flow != flow || !now.Before(c.expires) {
		return nil
	}
	return c
}

func (cs *ceremonies) removeLocked(challenge string, c *ceremony) {
	delete(cs.m, challenge)
	if cs.perAddr[c.addr]--; cs.perAddr[c.addr] <= 0 {
		delete(cs.perAddr, c.addr)
	}
}

func (cs *ceremonies) pruneLocked(now time.Time) {
	for ch, c := range cs.m {
		if !now.Before(c.expires) {
			cs.removeLocked(ch, c)
		}
	}
}

// pending returns the number of pending ceremonies (tests).
func (cs *ceremonies) pending() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.m)
}

// newChallenge returns a fresh random challenge.
func (s *Server) newChallenge() ([]byte, error) {
	rnd := s.sess.rnd
	if rnd == nil {
		rnd = rand.Reader
	}
	b := make([]byte, challengeBytes)
	if _, err := io.ReadFull(rnd, b); err != nil {
		return nil, fmt.Errorf("receiver: random challenge: %w", err)
	}
	return b, nil
}

// writeJSON answers v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// jsonError answers {"error": msg}.
func jsonError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// readPasskeyBody reads a ceremony's body, bounded by maxPasskeyBody; false
// (answered) if it is too large or unreadable.
func readPasskeyBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPasskeyBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			jsonError(w, http.StatusRequestEntityTooLarge, "request too large")
		} else {
			jsonError(w, http.StatusBadRequest, "unreadable request")
		}
		return nil, false
	}
	return b, true
}

// passkeyStart checks what every ceremony request needs: a body within
// bounds, a relying party at this address, and no rate limit on the source
// address. It answers and returns false otherwise.
func (s *Server) passkeyStart(w http.ResponseWriter, r *http.Request) ([]byte, relyingParty, bool) {
	body, ok := readPasskeyBody(w, r)
	if !ok {
		return nil, relyingParty{}, false
	}
	rp, why := passkeyRP(r)
	if why != "" {
		jsonError(w, http.StatusBadRequest, why)
		return nil, relyingParty{}, false
	}
	if d := s.byAddr.wait(sourceAddr(r), s.clk.Now()); d > 0 {
		s.passkeyRetryAfter(w, d)
		return nil, relyingParty{}, false
	}
	return body, rp, true
}

func (s *Server) passkeyRetryAfter(w http.ResponseWriter, d time.Duration) {
	secs := int((d + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	jsonError(w, http.StatusTooManyRequests, fmt.Sprintf("Too many failed attempts. Try again in %d s.", secs))
}

// keep stores a begun ceremony and answers its options, or the bound it hit.
func (s *Server) keep(w http.ResponseWriter, r *http.Request, c *ceremony, options any) {
	c.addr = sourceAddr(r)
	c.expires = s.clk.Now().Add(passkeyTTL)
	if err := s.pk.add(c, s.clk.Now()); err != nil {
		s.log.Info("receiver: passkey ceremony refused", "err", err, "remote", r.RemoteAddr)
		w.Header().Set("Retry-After", strconv.Itoa(int(passkeyTTL/time.Second)))
		if errors.Is(err, errCeremoniesAddr) {
			jsonError(w, http.StatusTooManyRequests, "Too many passkey requests from this address; try again in a few minutes.")
		} else {
			jsonError(w, http.StatusServiceUnavailable, "Too many passkey requests at once; try again in a few minutes.")
		}
		return
	}
	writeJSON(w, http.StatusOK, options)
}

// handlePasskeySignInBegin begins a sign-in with a discoverable credential:
// no name is asked, none is told.
func (s *Server) handlePasskeySignInBegin(w http.ResponseWriter, r *http.Request, _ *user) {
	_, rp, ok := s.passkeyStart(w, r)
	if !ok {
		return
	}
	wa, err := rp.webauthn()
	var ch []byte
	if err == nil {
		ch, err = s.newChallenge()
	}
	var opts *protocol.CredentialAssertion
	var data *webauthn.SessionData
	if err == nil {
		opts, data, err = wa.BeginDiscoverableLogin(webauthn.WithChallenge(ch), webauthn.WithUserVerification(protocol.VerificationRequired))
	}
	if err != nil {
		s.log.Error("receiver: passkey sign-in begin", "err", err)
		jsonError(w, http.StatusServiceUnavailable, "cannot use passkeys now, retry later")
		return
	}
	s.keep(w, r, &ceremony{flow: flowSignIn, origin: rp.origin, data: *data}, opts)
}

// handlePasskeySignIn finishes a passkey sign-in and starts the same
// server-side session a password does.
func (s *Server) handlePasskeySignIn(w http.ResponseWriter, r *http.Request, _ *user) {
	body, rp, ok := s.passkeyStart(w, r)
	if !ok {
		return
	}
	now := s.clk.Now()
	addr := sourceAddr(r)
	key := ""
	fail := func(why string, err error) {
		s.byAddr.fail(addr, now)
		if key != "" {
			s.byAcct.fail(key, now)
		}
		s.log.Info("receiver: passkey sign-in failed", "why", why, "err", err, "remote", r.RemoteAddr)
		jsonError(w, http.StatusUnauthorized, passkeyFailText)
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(body)
	if err != nil {
		fail("malformed", err)
		return
	}
	c := s.pk.take(parsed.Response.CollectedClientData.Challenge, flowSignIn, now)
	if c == nil {
		fail("unknown, used or expired challenge", nil)
		return
	}
	if c.origin != rp.origin {
		fail("begun at another origin", nil)
		return
	}
	// The per-account limit is keyed by the user handle presented, known
	// or not, so it tells nothing about which handles exist.
	key = "passkey:" + base64.RawURLEncoding.EncodeToString(parsed.Response.UserHandle)
	if len(key) > 64+8 {
		key = key[:64+8]
	}
	if d := s.byAcct.wait(key, now); d > 0 {
		s.passkeyRetryAfter(w, d)
		return
	}
	db, err := loadAccounts(s.dir)
	if err != nil {
		s.log.Error("receiver: passkey sign-in", "err", err)
		jsonError(w, http.StatusServiceUnavailable, "cannot sign in now, retry later")
		return
	}
	wa, err := rp.webauthn()
	if err != nil {
		s.log.Error("receiver: passkey sign-in", "err", err)
		jsonError(w, http.StatusServiceUnavailable, "cannot sign in now, retry later")
		return
	}
	found := func(_, handle []byte) (webauthn.User, error) {
		if name, acc := accountByHandle(db, handle); acc != nil {
			return waUser{name: name, acc: acc}, nil
		}
		return nil, errors.New("no account has this user handle")
	}
	u, cred, err := wa.ValidatePasskeyLogin(found, c.data, parsed)
	if err != nil {
		fail("not valid", err)
		return
	}
	if cred.Authenticator.CloneWarning {
		s.log.Warn("receiver: passkey sign-in refused: the sign counter did not advance (a cloned authenticator?)",
			"account", u.WebAuthnName(), "stored", cred.Authenticator.SignCount, "got", parsed.Response.AuthenticatorData.Counter)
		fail("sign counter went back", nil)
		return
	}
	name := u.WebAuthnName()
	role, err := s.usePasskey(name, u.WebAuthnID(), cred, parsed.Response.AuthenticatorData.Counter, now)
	if err != nil {
		fail("record", err)
		return
	}
	s.byAcct.reset(key)
	tok, err := s.sess.create(name, role, r)
	if err != nil {
		s.log.Error("receiver: cannot create a session", "err", err)
		jsonError(w, http.StatusServiceUnavailable, "cannot sign in now, retry later")
		return
	}
	s.log.Info("receiver: signed in with a passkey", "account", name, "role", role, "remote", r.RemoteAddr)
	http.SetCookie(w, s.cookie(tok, r.TLS != nil))
	writeJSON(w, http.StatusOK, map[string]string{"redirect": "/"})
}

// accountByHandle returns the account whose user handle is handle.
func accountByHandle(db *accountsDB, handle []byte) (string, *account) {
	if len(handle) != passkeyHandleBytes {
		return "", nil
	}
	for name, acc := range db.Accounts {
		if subtle.ConstantTimeCompare(acc.UserHandle, handle) == 1 {
			return name, acc
		}
	}
	return "", nil
}

// errPasskeyCounter reports a sign counter that did not advance when it was
// written (a concurrent sign-in with the same counter, or a clone).
var errPasskeyCounter = errors.New("receiver: passkey sign counter did not advance")

// usePasskey records a passkey sign-in: the new sign counter, checked again
// under the accounts lock, and the time of use. It returns the account's
// role.
func (s *Server) usePasskey(name string, handle []byte, cred *webauthn.Credential, counter uint32, now time.Time) (Role, error) {
	var role Role
	err := updateAccounts(s.dir, now, func(db *accountsDB) error {
		acc := db.Accounts[name]
		if acc == nil || !bytes.Equal(acc.UserHandle, handle) {
			return ErrNoAccount
		}
		for _, p := range acc.Passkeys {
			if !bytes.Equal(p.ID, cred.ID) {
				continue
			}
			if counter <= p.SignCount && (counter != 0 || p.SignCount != 0) {
				return errPasskeyCounter
			}
			p.SignCount = counter
			p.BackupState = cred.Flags.BackupState
			p.UserVerified = p.UserVerified || cred.Flags.UserVerified
			p.LastUsed = now.UTC()
			role = acc.Role
			return nil
		}
		return errors.New("receiver: passkey removed")
	})
	return role, err
}

// beginRegistration begins the registration of a passkey for name, bound to
// flow and bound; the account gets its random user handle if it has none.
func (s *Server) beginRegistration(w http.ResponseWriter, r *http.Request, rp relyingParty, name, flow, bound string) {
	handle := make([]byte, passkeyHandleBytes)
	rnd := s.sess.rnd
	if rnd == nil {
		rnd = rand.Reader
	}
	var acc *account
	err := func() error {
		if _, err := io.ReadFull(rnd, handle); err != nil {
			return fmt.Errorf("receiver: random user handle: %w", err)
		}
		return updateAccounts(s.dir, s.clk.Now(), func(db *accountsDB) error {
			a := db.Accounts[name]
			if a == nil {
				return ErrNoAccount
			}
			if len(a.UserHandle) == 0 {
				a.UserHandle = handle
			}
			acc = a
			return nil
		})
	}()
	if err != nil {
		s.log.Error("receiver: passkey registration begin", "err", err)
		jsonError(w, http.StatusServiceUnavailable, "cannot add a passkey now, retry later")
		return
	}
	if len(acc.Passkeys) >= maxPasskeys {
		jsonError(w, http.StatusConflict, fmt.Sprintf("An account holds at most %d passkeys: remove one first.", maxPasskeys))
		return
	}
	u := waUser{name: name, acc: acc}
	wa, err := rp.webauthn()
	var ch []byte
	if err == nil {
		ch, err = s.newChallenge()
	}
	var opts *protocol.CredentialCreation
	var data *webauthn.SessionData
	if err == nil {
		var exclude []protocol.CredentialDescriptor
		for _, c := range u.WebAuthnCredentials() {
			exclude = append(exclude, c.Descriptor())
		}
		opts, data, err = wa.BeginRegistration(u, webauthn.WithExclusions(exclude),
			func(o *protocol.PublicKeyCredentialCreationOptions) error { o.Challenge = ch; return nil })
	}
	if err != nil {
		s.log.Error("receiver: passkey registration begin", "err", err)
		jsonError(w, http.StatusServiceUnavailable, "cannot add a passkey now, retry later")
		return
	}
	s.keep(w, r, &ceremony{flow: flow, account: name, bound: bound, origin: rp.origin, data: *data}, opts)
}

// finishRegistration checks a registration response against its ceremony
// (taken, so used once) and returns the new passkey; it answers and returns
// nil when it is refused.
func (s *Server) finishRegistration(w http.ResponseWriter, r *http.Request, body []byte, rp relyingParty, flow string,
	bound func(c *ceremony) bool) (*passkey, *ceremony) {
	now := s.clk.Now()
	refuse := func(why string, err error) (*passkey, *ceremony) {
		s.log.Info("receiver: passkey registration refused", "why", why, "err", err, "remote", r.RemoteAddr)
		jsonError(w, http.StatusBadRequest, passkeyRegFailText)
		return nil, nil
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(body)
	if err != nil {
		return refuse("malformed", err)
	}
	c := s.pk.take(parsed.Response.CollectedClientData.Challenge, flow, now)
	if c == nil {
		return refuse("unknown, used or expired challenge", nil)
	}
	if c.origin != rp.origin || !bound(c) {
		return refuse("begun elsewhere", nil)
	}
	db, err := loadAccounts(s.dir)
	if err != nil {
		return refuse("accounts", err)
	}
	acc := db.Accounts[c.account]
	if acc == nil {
		return refuse("no account", nil)
	}
	wa, err := rp.webauthn()
	if err != nil {
		return refuse("config", err)
	}
	cred, err := wa.CreateCredential(waUser{name: c.account, acc: acc}, c.data, parsed)
	if err != nil {
		return refuse("not valid", err)
	}
	if len(cred.ID) == 0 || len(cred.ID) > maxCredentialID {
		return refuse("credential ID length", nil)
	}
	p := newPasskey(cred, now)
	for _, t := range parsed.Response.Transports {
		if len(p.Transports) < 8 && len(t) <= 32 && !slices.Contains(p.Transports, string(t)) {
			p.Transports = append(p.Transports, string(t))
		}
	}
	return p, c
}

// addPasskey adds p to the account name of db, whose user handle must
// still be handle; a credential ID registered to any account is refused.
func addPasskey(db *accountsDB, name string, handle []byte, p *passkey) error {
	acc := db.Accounts[name]
	if acc == nil || !bytes.Equal(acc.UserHandle, handle) {
		return ErrNoAccount
	}
	if len(acc.Passkeys) >= maxPasskeys {
		return fmt.Errorf("receiver: account %s holds %d passkeys already", name, maxPasskeys)
	}
	for _, a := range db.Accounts {
		for _, q := range a.Passkeys {
			if bytes.Equal(q.ID, p.ID) {
				return errors.New("receiver: credential ID registered already")
			}
		}
	}
	acc.Passkeys = append(acc.Passkeys, p)
	return nil
}

// handlePasskeyRegisterBegin begins adding a passkey to the signed-in
// account.
func (s *Server) handlePasskeyRegisterBegin(w http.ResponseWriter, r *http.Request, u *user) {
	if _, rp, ok := s.passkeyStart(w, r); ok {
		s.beginRegistration(w, r, rp, u.name, flowRegister, u.hash)
	}
}

// handlePasskeyRegister adds the passkey of a ceremony the same session
// began.
func (s *Server) handlePasskeyRegister(w http.ResponseWriter, r *http.Request, u *user) {
	body, rp, ok := s.passkeyStart(w, r)
	if !ok {
		return
	}
	p, c := s.finishRegistration(w, r, body, rp, flowRegister, func(c *ceremony) bool {
		return c.account == u.name && subtle.ConstantTimeCompare([]byte(c.bound), []byte(u.hash)) == 1
	})
	if p == nil {
		return
	}
	err := updateAccounts(s.dir, s.clk.Now(), func(db *accountsDB) error { return addPasskey(db, u.name, c.data.UserID, p) })
	if err != nil {
		s.log.Info("receiver: passkey not added", "account", u.name, "err", err)
		jsonError(w, http.StatusBadRequest, passkeyRegFailText)
		return
	}
	s.log.Info("receiver: passkey added", "account", u.name, "aaguid", p.AAGUID)
	writeJSON(w, http.StatusOK, map[string]string{"redirect": "/sessions"})
}

// handleSetupPasskeyBegin begins registering a passkey with a valid setup
// link (instead of a password), without using the link up.
func (s *Server) handleSetupPasskeyBegin(w http.ResponseWriter, r *http.Request, _ *user) {
	_, rp, ok := s.passkeyStart(w, r)
	if !ok {
		return
	}
	tok := r.PathValue("token")
	name, err := peekLink(s.dir, tok, linkSetup, s.clk.Now())
	if err != nil {
		s.passkeyLinkError(w, err)
		return
	}
	h, _ := tokenHash(tok)
	s.beginRegistration(w, r, rp, name, flowSetup, h)
}

// handleSetupPasskey adds the passkey of a setup ceremony, uses the link up
// in the same write, ends the account's other sessions and signs it in.
func (s *Server) handleSetupPasskey(w http.ResponseWriter, r *http.Request, _ *user) {
	body, rp, ok := s.passkeyStart(w, r)
	if !ok {
		return
	}
	tok := r.PathValue("token")
	h, ok := tokenHash(tok)
	if !ok {
		s.passkeyLinkError(w, ErrLink)
		return
	}
	p, c := s.finishRegistration(w, r, body, rp, flowSetup, func(c *ceremony) bool {
		return subtle.ConstantTimeCompare([]byte(c.bound), []byte(h)) == 1
	})
	if p == nil {
		return
	}
	name, role, err := useLink(s.dir, tok, linkSetup, s.clk.Now(), func(db *accountsDB, name string, _ *account) error {
		if name != c.account {
			return ErrLink
		}
		return addPasskey(db, name, c.data.UserID, p)
	})
	if err != nil {
		s.passkeyLinkError(w, err)
		return
	}
	if err := s.sess.endAll(name); err != nil {
		s.log.Error("receiver: end sessions", "err", err)
	}
	tokS, err := s.sess.create(name, role, r)
	if err != nil {
		s.log.Error("receiver: cannot create a session", "err", err)
		jsonError(w, http.StatusServiceUnavailable, "cannot sign in now, retry later")
		return
	}
	s.log.Info("receiver: passkey set up by a setup link; signed in", "account", name, "remote", r.RemoteAddr)
	http.SetCookie(w, s.cookie(tokS, r.TLS != nil))
	writeJSON(w, http.StatusOK, map[string]string{"redirect": "/"})
}

func (s *Server) passkeyLinkError(w http.ResponseWriter, err error) {
	if errors.Is(err, ErrLink) {
		jsonError(w, http.StatusNotFound, "This link is not valid: it was used already, it expired, or it was never made. Ask the receiver's operator for a new one.")
		return
	}
	s.log.Info("receiver: passkey setup refused", "err", err)
	jsonError(w, http.StatusBadRequest, passkeyRegFailText)
}

// handlePasskeyRemove removes one of the signed-in account's passkeys. The
// last way to sign in (no password, one passkey) is kept: the page says how
// to replace it.
func (s *Server) handlePasskeyRemove(w http.ResponseWriter, r *http.Request, u *user) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		writeLine(w, http.StatusBadRequest, "malformed form")
		return
	}
	id, err := base64.RawURLEncoding.DecodeString(r.PostForm.Get("id"))
	if err != nil || len(id) == 0 || len(id) > maxCredentialID {
		http.NotFound(w, r)
		return
	}
	errLast := errors.New("last credential")
	errNone := errors.New("no such passkey")
	err = updateAccounts(s.dir, s.clk.Now(), func(db *accountsDB) error {
		acc := db.Accounts[u.name]
		if acc == nil {
			return errNone
		}
		for i, p := range acc.Passkeys {
			if bytes.Equal(p.ID, id) {
				if acc.Password == "" && len(acc.Passkeys) == 1 {
					return errLast
				}
				acc.Passkeys = append(acc.Passkeys[:i:i], acc.Passkeys[i+1:]...)
				return nil
			}
		}
		return errNone
	})
	switch {
	case errors.Is(err, errNone):
		http.NotFound(w, r)
	case errors.Is(err, errLast):
		s.accountPage(w, r, u, http.StatusConflict, "This passkey is the only way to sign in to "+u.name+
			": add another passkey first, or ask the operator for a setup link to choose a password.")
	case err != nil:
		s.log.Error("receiver: remove passkey", "err", err)
		writeLine(w, http.StatusServiceUnavailable, "cannot remove the passkey now, retry later")
	default:
		s.log.Info("receiver: passkey removed", "account", u.name)
		http.Redirect(w, r, "/sessions", http.StatusSeeOther)
	}
}

// handlePasskeyJS serves the passkey buttons' script.
func (s *Server) handlePasskeyJS(w http.ResponseWriter, r *http.Request, _ *user) {
	h := w.Header()
	h.Set("Content-Type", "text/javascript; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "passkey.js", time.Time{}, bytes.NewReader(passkeyJS))
}

// passkeyRow is a passkey on the account page.
type passkeyRow struct {
	ID, Short, AAGUID, Transports, Created, LastUsed string
}

// passkeyData adds what the pages need for the passkey buttons to data: the
// reason they are not offered here (PasskeyWhy), else Passkeys.
func passkeyData(r *http.Request, data map[string]any) map[string]any {
	if _, why := passkeyRP(r); why != "" {
		data["PasskeyWhy"] = why
		return data
	}
	data["Passkeys"] = true // the page loads the script (passkeyPageCSP)
	return data
}

// passkeyRows returns the account's passkeys for its account page.
func (s *Server) passkeyRows(name string) ([]passkeyRow, error) {
	db, err := loadAccounts(s.dir)
	if err != nil {
		return nil, err
	}
	acc := db.Accounts[name]
	if acc == nil {
		return nil, nil
	}
	rows := make([]passkeyRow, 0, len(acc.Passkeys))
	for _, p := range acc.Passkeys {
		id := base64.RawURLEncoding.EncodeToString(p.ID)
		short := id
		if len(short) > 12 {
			short = short[:12] + "…"
		}
		row := passkeyRow{ID: id, Short: short, AAGUID: p.AAGUID, Created: p.Created.UTC().Format(time.DateTime + " UTC"), LastUsed: "never"}
		if !p.LastUsed.IsZero() {
			row.LastUsed = p.LastUsed.UTC().Format(time.DateTime + " UTC")
		}
		for i, t := range p.Transports {
			if i > 0 {
				row.Transports += ", "
			}
			row.Transports += t
		}
		rows = append(rows, row)
	}
	return rows, nil
}
