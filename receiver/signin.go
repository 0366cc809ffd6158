package receiver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Sign-in: the pages and handlers of signing in and out, one-time links,
// the sessions page and the admin's fleet page.
//
// A password sign-in is rate limited per account name and per source
// address (limiter): after a few free failures each further one makes the
// next attempt wait longer, and a refused attempt is answered 429 with
// Retry-After before any hashing. The answer to a wrong password and to an
// unknown account is the same page, status and message, and both cost one
// Argon2id hash: an unknown account (or one without a password yet) is
// checked against a dummy hash made with the current parameters.

// Sign-in limits.
const (
	maxFormBytes   = 8 << 10     // a sign-in or setup form
	maxHashing     = 2           // Argon2id hashes computed at once
	accountFree    = 5           // failed sign-ins of an account before it waits
	addressFree    = 20          // failed sign-ins from an address before it waits
	limitBase      = time.Second // the first wait; each further failure doubles it
	limitMax       = 15 * time.Minute
	limitForget    = time.Hour // a key without failures this long starts afresh
	limitKeys      = 10000     // keys a limiter remembers (the oldest forgotten beyond)
	signInFailText = "Wrong name or password."
)

// authState is the part of a Server that signs people in.
type authState struct {
	hosts   []hostPattern
	cop     *http.CrossOriginProtection
	sess    *sessionStore
	argon   Argon2Params
	hashing chan struct{} // semaphore: maxHashing
	byAcct  *limiter
	byAddr  *limiter
	authT   *template.Template
	pk      *ceremonies // pending passkey ceremonies (passkey.go)

	standing *accountsReader // accounts.json as of the last change, for sessions

	dummyOnce sync.Once
	dummy     string
	dummyErr  error

	hashMu sync.Mutex
	hashes uint64 // Argon2id computations of sign-ins, for tests
}

// openAuth sets up the sign-in state of a Server being opened.
func (s *Server) openAuth(opts Options) error {
	s.hosts = parseHosts(opts.AllowedHosts)
	s.cop = http.NewCrossOriginProtection()
	s.argon = DefaultArgon2()
	if opts.Argon2 != nil {
		s.argon = *opts.Argon2
	}
	idle, max := opts.SessionIdle, opts.SessionMax
	if idle <= 0 {
		idle = DefaultSessionIdle
	}
	if max <= 0 {
		max = DefaultSessionMax
	}
	s.sess = openSessions(s.dir, s.clk, opts.Rand, s.log, idle, max)
	s.hashing = make(chan struct{}, maxHashing)
	s.byAcct = newLimiter(accountFree, limitBase, limitMax, limitForget, limitKeys)
	s.byAddr = newLimiter(addressFree, limitBase, limitMax, limitForget, limitKeys)
	s.pk = newCeremonies()
	s.standing = &accountsReader{dir: s.dir}
	t, err := template.New("auth").Parse(authTemplates)
	if err != nil {
		return fmt.Errorf("receiver: sign-in templates: %w", err)
	}
	s.authT = t
	return nil
}

// SetAllowedHosts replaces the Host values the pages answer (see
// Options.AllowedHosts). Serve calls it before serving; it is not safe to
// call while requests are served.
func (s *Server) SetAllowedHosts(hosts []string) { s.hosts = parseHosts(hosts) }

// NewSession signs the account name in without a credential and returns
// its session cookie (for plain HTTP): for a program that holds the Server
// already (tests, the storm harness). People sign in with a password or a
// one-time link.
func (s *Server) NewSession(name string) (*http.Cookie, error) {
	db, err := loadAccounts(s.dir)
	if err != nil {
		return nil, err
	}
	acc := db.Accounts[name]
	if acc == nil {
		return nil, fmt.Errorf("receiver: sign in %q: %w", clip(name), ErrNoAccount)
	}
	tok, err := s.sess.create(name, acc.Role, nil)
	if err != nil {
		return nil, err
	}
	return s.cookie(tok, false), nil
}

func (s *Server) cookie(tok string, tls bool) *http.Cookie {
	name := sessionCookie
	if tls {
		name = sessionCookieTLS
	}
	return &http.Cookie{Name: name, Value: tok, Path: "/", HttpOnly: true, Secure: tls,
		SameSite: http.SameSiteStrictMode, MaxAge: int(s.sess.max / time.Second)}
}

// startSession makes a session for name, sets its cookie and sends the
// browser home.
func (s *Server) startSession(w http.ResponseWriter, r *http.Request, name string, role Role) {
	tok, err := s.sess.create(name, role, r)
	if err != nil {
		s.log.Error("receiver: cannot create a session", "err", err)
		writeLine(w, http.StatusServiceUnavailable, "cannot sign in now, retry later")
		return
	}
	s.log.Info("receiver: signed in", "account", name, "role", role, "remote", r.RemoteAddr)
	http.SetCookie(w, s.cookie(tok, r.TLS != nil))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// hash runs f as one of at most maxHashing Argon2id computations.
func (s *Server) hash(ctx context.Context, f func()) error {
	select {
	case s.hashing <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.hashing }()
	s.hashMu.Lock()
	s.hashes++
	s.hashMu.Unlock()
	f()
	return nil
}

// hashCount returns how many sign-in and setup hashes were computed.
func (s *Server) hashCount() uint64 {
	s.hashMu.Lock()
	defer s.hashMu.Unlock()
	return s.hashes
}

// dummyHash is checked when the account is unknown or has no password, so
// the answer costs the same hash.
func (s *Server) dummyHash() (string, error) {
	s.dummyOnce.Do(func() {
		s.dummy, s.dummyErr = hashPassword(s.argon, nil, "keyframe: no such account")
	})
	return s.dummy, s.dummyErr
}

// checkSignIn checks a name and password: ok only for an account with a
// password that matches. Whatever the outcome it computes one hash.
func (s *Server) checkSignIn(ctx context.Context, name, password string) (role Role, ok bool, err error) {
	db, err := loadAccounts(s.dir)
	if err != nil {
		return "", false, err
	}
	acc := db.Accounts[name]
	encoded := ""
	if acc != nil {
		encoded = acc.Password
	}
	real := encoded != ""
	if !real {
		if encoded, err = s.dummyHash(); err != nil {
			return "", false, err
		}
	}
	var match bool
	var cerr error
	if err := s.hash(ctx, func() { match, cerr = checkPassword(encoded, password) }); err != nil {
		return "", false, err
	}
	if cerr != nil {
		return "", false, cerr
	}
	if !real || !match {
		return "", false, nil
	}
	return acc.Role, true, nil
}

// retryAfter answers 429 with Retry-After in whole seconds.
func (s *Server) retryAfter(w http.ResponseWriter, r *http.Request, d time.Duration) {
	secs := int(math.Ceil(d.Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	s.signInPage(w, r, http.StatusTooManyRequests, fmt.Sprintf("Too many failed attempts. Try again in %d s.", secs))
}

func (s *Server) handleSignInPage(w http.ResponseWriter, r *http.Request, _ *user) {
	s.signInPage(w, r, http.StatusOK, "")
}

// handleSignIn checks a password form.
func (s *Server) handleSignIn(w http.ResponseWriter, r *http.Request, _ *user) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		writeLine(w, http.StatusBadRequest, "malformed form")
		return
	}
	name, password := r.PostForm.Get("name"), r.PostForm.Get("password")
	key := name
	if len(key) > 64 {
		key = key[:64]
	}
	addr := sourceAddr(r)
	now := s.clk.Now()
	// Each attempt counts as a failure of the name and the address before
	// its hash is computed (taken back if it succeeds), so attempts sent at
	// once cannot all pass this check together.
	if d := s.byAcct.begin(key, now); d > 0 {
		s.log.Info("receiver: sign-in refused: rate limited", "remote", r.RemoteAddr, "retry_after", d)
		s.retryAfter(w, r, d)
		return
	}
	if d := s.byAddr.begin(addr, now); d > 0 {
		s.byAcct.succeed(key, false) // this attempt was not made
		s.log.Info("receiver: sign-in refused: rate limited", "remote", r.RemoteAddr, "retry_after", d)
		s.retryAfter(w, r, d)
		return
	}
	var role Role
	ok := false
	if len(password) <= maxPasswordBytes {
		var err error
		role, ok, err = s.checkSignIn(r.Context(), name, password)
		if err != nil {
			s.byAcct.succeed(key, false) // not a wrong password: do not count it
			s.byAddr.succeed(addr, false)
			s.log.Error("receiver: sign-in check failed", "err", err)
			writeLine(w, http.StatusServiceUnavailable, "cannot sign in now, retry later")
			return
		}
	}
	if !ok {
		s.log.Info("receiver: sign-in failed", "remote", r.RemoteAddr)
		s.signInPage(w, r, http.StatusUnauthorized, signInFailText)
		return
	}
	s.byAcct.succeed(key, true)
	s.byAddr.succeed(addr, false)
	s.startSession(w, r, name, role)
}

// handleSignOut ends the request's session.
func (s *Server) handleSignOut(w http.ResponseWriter, r *http.Request, u *user) {
	if err := s.sess.end(u.hash); err != nil {
		s.log.Error("receiver: sign out", "err", err)
		writeLine(w, http.StatusServiceUnavailable, "cannot sign out now, retry later")
		return
	}
	c := s.cookie("", r.TLS != nil)
	c.MaxAge = -1
	http.SetCookie(w, c)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// handleSessions shows the account page: the account's sessions with a
// revoke button each, and its passkeys.
func (s *Server) handleSessions(w http.ResponseWriter, r *http.Request, u *user) {
	s.accountPage(w, r, u, http.StatusOK, "")
}

// accountPage renders the account page with a message and status.
func (s *Server) accountPage(w http.ResponseWriter, r *http.Request, u *user, status int, msg string) {
	type row struct {
		ID, Agent, Addr, Created, LastUsed string
		Current                            bool
	}
	var rows []row
	for _, ss := range s.sess.list(u.name) {
		rows = append(rows, row{ID: ss.ID, Agent: ss.Agent, Addr: ss.Addr,
			Created: ss.Created.UTC().Format(time.DateTime + " UTC"), LastUsed: ss.LastUsed.UTC().Format(time.DateTime + " UTC"),
			Current: ss.ID == u.sess.ID})
	}
	keys, err := s.passkeyRows(u.name)
	if err != nil {
		s.log.Error("receiver: accounts unreadable", "err", err)
	}
	// An owner's page holds the e2ee keys' piece (e2ee.js, docs/e2ee.md §6);
	// an admin has no pictures to open.
	s.renderAuth(w, status, "sessions", passkeyData(r, map[string]any{"Account": u.name, "Rows": rows, "Keys": keys, "Message": msg, "E2EE": u.role == RoleOwner}))
}

// handleRevoke ends one of the account's sessions.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request, u *user) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		writeLine(w, http.StatusBadRequest, "malformed form")
		return
	}
	ok, err := s.sess.revoke(u.name, r.PostForm.Get("id"))
	if err != nil {
		s.log.Error("receiver: revoke session", "err", err)
		writeLine(w, http.StatusServiceUnavailable, "cannot revoke now, retry later")
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	http.Redirect(w, r, "/sessions", http.StatusSeeOther)
}

// badLink answers a link that is not valid.
func (s *Server) badLink(w http.ResponseWriter) {
	s.renderAuth(w, http.StatusNotFound, "message", map[string]any{"Title": "Link not valid",
		"Text": "This link is not valid: it was used already, it expired, or it was never made. Ask the receiver's operator for a new one."})
}

// handleSetupPage shows the form to set a password, for a valid setup link.
func (s *Server) handleSetupPage(w http.ResponseWriter, r *http.Request, _ *user) {
	name, err := peekLink(s.dir, r.PathValue("token"), linkSetup, s.clk.Now())
	if err != nil {
		s.linkError(w, err)
		return
	}
	s.renderAuth(w, http.StatusOK, "setup", passkeyData(r, map[string]any{"Account": name, "Rules": PasswordRules, "Action": "/setup/" + r.PathValue("token")}))
}

func (s *Server) linkError(w http.ResponseWriter, err error) {
	if errors.Is(err, ErrLink) {
		s.badLink(w)
		return
	}
	s.log.Error("receiver: accounts unreadable", "err", err)
	writeLine(w, http.StatusServiceUnavailable, "accounts unavailable, retry later")
}

// handleSetup sets the password of a valid setup link's account, uses the
// link up, ends the account's other sessions and signs it in.
func (s *Server) handleSetup(w http.ResponseWriter, r *http.Request, _ *user) {
	tok := r.PathValue("token")
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		writeLine(w, http.StatusBadRequest, "malformed form")
		return
	}
	name, err := peekLink(s.dir, tok, linkSetup, s.clk.Now()) // before any hashing
	if err != nil {
		s.linkError(w, err)
		return
	}
	pw := r.PostForm.Get("password")
	msg := ""
	switch {
	case checkPasswordRules(pw) != nil:
		msg = "The password must be " + PasswordRules + "."
	case pw != r.PostForm.Get("confirm"):
		msg = "The two passwords differ."
	}
	if msg != "" {
		s.renderAuth(w, http.StatusBadRequest, "setup", passkeyData(r, map[string]any{"Account": name, "Rules": PasswordRules, "Message": msg, "Action": "/setup/" + tok}))
		return
	}
	var encoded string
	var herr error
	if err := s.hash(r.Context(), func() { encoded, herr = hashPassword(s.argon, s.sess.rnd, pw) }); err != nil || herr != nil {
		s.log.Error("receiver: hash password", "err", errors.Join(err, herr))
		writeLine(w, http.StatusServiceUnavailable, "cannot set the password now, retry later")
		return
	}
	name, role, err := useLink(s.dir, tok, linkSetup, s.clk.Now(), func(_ *accountsDB, _ string, acc *account) error {
		acc.Password = encoded
		return nil
	})
	if err != nil {
		s.linkError(w, err)
		return
	}
	if err := s.sess.endAll(name); err != nil {
		s.log.Error("receiver: end sessions", "err", err)
	}
	s.log.Info("receiver: password set", "account", name)
	s.startSession(w, r, name, role)
}

// handleLink signs in with a one-time sign-in link. A GET that a page of
// another site started (Sec-Fetch-Site cross-site or same-site) does not use
// the link up: it asks for a click that posts from this origin, so no site
// can sign a browser into someone else's account. A GET typed, pasted or
// opened from outside the browser (or by curl) signs in at once, and the
// page it answers moves on to / from this origin, so the SameSite=Strict
// cookie goes along.
func (s *Server) handleLink(w http.ResponseWriter, r *http.Request, _ *user) {
	tok := r.PathValue("token")
	// Look before taking the accounts lock: a flood of made-up links costs
	// a read, not the lock the CLI and sign-ins need.
	account, err := peekLink(s.dir, tok, linkSignIn, s.clk.Now())
	if err != nil {
		s.linkError(w, err)
		return
	}
	// A GET signs in at once only when a person opened the link themselves
	// in a browser that says so (Fetch Metadata: no site sent it, and a user
	// activated the navigation: typed, pasted, opened from another program).
	// A link scanner, a preview, curl or an old browser, and any page of
	// another site, get a page naming the account and a button that posts
	// from the receiver's own origin: fetching the link uses nothing up, and
	// no site can sign a visitor into someone else's account.
	if r.Method == http.MethodGet && (r.Header.Get("Sec-Fetch-Site") != "none" || r.Header.Get("Sec-Fetch-User") != "?1") {
		s.renderAuth(w, http.StatusOK, "confirm", map[string]any{"Action": "/link/" + tok, "Account": account})
		return
	}
	name, role, err := useLink(s.dir, tok, linkSignIn, s.clk.Now(), nil)
	if err != nil {
		s.linkError(w, err)
		return
	}
	tokS, err := s.sess.create(name, role, r)
	if err != nil {
		s.log.Error("receiver: cannot create a session", "err", err)
		writeLine(w, http.StatusServiceUnavailable, "cannot sign in now, retry later")
		return
	}
	s.log.Info("receiver: signed in by one-time link", "account", name, "role", role, "remote", r.RemoteAddr)
	http.SetCookie(w, s.cookie(tokS, r.TLS != nil))
	s.renderAuth(w, http.StatusOK, "signedin", map[string]any{"Account": name})
}

// signInPage shows the sign-in form with a message and status.
func (s *Server) signInPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.renderAuth(w, status, "signin", passkeyData(r, map[string]any{"Message": msg}))
}

func (s *Server) renderAuth(w http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := s.authT.ExecuteTemplate(&buf, name, data); err != nil {
		s.log.Error("receiver: render page", "page", name, "err", err)
		writeLine(w, http.StatusInternalServerError, "cannot render the page")
		return
	}
	setPageHeaders(w)
	if m, ok := data.(map[string]any); ok && m["E2EE"] == true {
		w.Header().Set("Content-Security-Policy", sealedPageCSP) // the passkey and e2ee scripts, from this origin, and their fetches
	} else if ok && m["Passkeys"] == true {
		w.Header().Set("Content-Security-Policy", passkeyPageCSP) // the passkey script, from this origin
	}
	w.WriteHeader(status)
	if _, err := w.Write(buf.Bytes()); err != nil {
		s.log.Debug("receiver: write page", "err", err)
	}
}

// handleHome shows an owner their events, an admin the fleet.
func (s *Server) handleHome(w http.ResponseWriter, r *http.Request, u *user) {
	if u.role == RoleAdmin {
		s.fleetPage(w, u)
		return
	}
	s.ownerPage(w, r, u.name)
}

// fleetRow is one device on the admin's fleet page.
type fleetRow struct {
	Device, Owner, Status, LastReceived string
	Records                             int
	MaxSeq                              uint64
}

// fleetPage shows the admin the devices, their verification status and
// counts, and the receiver's counters: no event, thumbnail or envelope.
func (s *Server) fleetPage(w http.ResponseWriter, u *user) {
	reg, err := s.regs.read()
	if err != nil {
		s.viewUnavailable(w, err)
		return
	}
	ids := make(map[string]bool, len(reg.Devices))
	for id := range reg.Devices {
		ids[id] = true
	}
	s.mu.Lock()
	for _, d := range s.devices {
		ids[d] = true
	}
	rows := make([]fleetRow, 0, len(ids))
	for id := range ids {
		fr := fleetRow{Device: id, Owner: reg.owner(id), Records: len(s.byDevice[id]), MaxSeq: s.maxSeq[id], LastReceived: "-"}
		if ps := s.byDevice[id]; len(ps) > 0 {
			fr.LastReceived = s.records[ps[len(ps)-1]].ReceivedAt.UTC().Format(time.DateTime + " UTC")
		}
		d := reg.Devices[id]
		switch {
		case d == nil:
			fr.Status = "not enrolled (stored records verified on arrival)"
		case d.Revoked:
			fr.Status = "revoked"
		case d.RotatedTo != "":
			fr.Status = "rotated to " + d.RotatedTo + " at seq " + strconv.FormatUint(d.RotatedSeq, 10)
		case d.byFleetCA():
			fr.Status = "admitted by fleet CA"
		default:
			fr.Status = "enrolled"
		}
		rows = append(rows, fr)
	}
	s.mu.Unlock()
	sort.Slice(rows, func(i, j int) bool { return rows[i].Device < rows[j].Device })
	s.renderAuth(w, http.StatusOK, "fleet", map[string]any{"Account": u.name, "Rows": rows, "Stats": s.Stats()})
}

// authTemplates are the sign-in, link, sessions and fleet pages.
const authTemplates = `
{{define "head"}}<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="/favicon.ico" type="image/svg+xml">
<title>{{.}}</title>
<style>
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 60em; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: .4em .6em; text-align: left; vertical-align: top; }
label { display: block; margin: .6em 0; }
.mono { font-family: monospace; }
.warn { color: #a40; font-weight: bold; }
.muted { color: #777; }
nav form { display: inline; }
</style>
</head>
<body>
{{end}}
{{define "nav"}}<nav class="muted">Signed in as {{.}} · <a href="/">home</a> · <a href="/sessions">sessions</a> · <form method="post" action="/signout"><button>Sign out</button></form></nav>{{end}}
{{define "signin"}}{{template "head" "keyframe: sign in"}}
<h1>Sign in</h1>
{{if .Message}}<p class="warn">{{.Message}}</p>{{end}}
<form method="post" action="/signin">
<label>Name <input name="name" autocomplete="username" required maxlength="64"></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required maxlength="1024"></label>
<button>Sign in</button>
</form>
{{template "passkey" .}}
<p class="muted">No password yet, or forgotten? The receiver's operator can give you a one-time link (keyframe-receiver owner link NAME).</p>
</body></html>
{{end}}
{{define "setup"}}{{template "head" "keyframe: choose a password"}}
<h1>Choose a password for {{.Account}}</h1>
{{if .Message}}<p class="warn">{{.Message}}</p>{{end}}
<form method="post">
<input type="hidden" name="name" value="{{.Account}}" autocomplete="username">
<label>Password <input name="password" type="password" autocomplete="new-password" required minlength="15" maxlength="256"></label>
<label>Again <input name="confirm" type="password" autocomplete="new-password" required minlength="15" maxlength="256"></label>
<button>Set the password and sign in</button>
</form>
<p class="muted">{{.Rules}}. Setting it signs out every other session of {{.Account}}.</p>
<h2>Or a passkey</h2>
{{if .PasskeyWhy}}<p class="muted">{{.PasskeyWhy}}</p>{{else}}<p>Instead of a password (or besides: a password can be set later with a new setup link), register a passkey of this device for {{.Account}}. It signs out every other session of {{.Account}} too.</p>
<p><button type="button" id="passkey-setup" data-passkey="register" data-begin="{{.Action}}/passkey/begin" data-finish="{{.Action}}/passkey/finish" hidden>Register a passkey and sign in</button></p>
<p id="passkey-status" class="warn" role="status"></p>
<script src="/static/passkey.js"></script>{{end}}
</body></html>
{{end}}
{{define "passkey"}}{{if .PasskeyWhy}}<p class="muted" id="passkey-why">{{.PasskeyWhy}}</p>{{else}}<p><button type="button" id="passkey-signin" data-passkey="signin" data-begin="/passkey/signin/begin" data-finish="/passkey/signin/finish" hidden>Sign in with a passkey</button></p>
<p id="passkey-status" class="warn" role="status"></p>
<script src="/static/passkey.js"></script>{{end}}{{end}}
{{define "confirm"}}{{template "head" "keyframe: sign in"}}
<h1>Sign in as {{.Account}}</h1>
<p>This one-time link signs this browser in as <strong>{{.Account}}</strong>. If you did not ask for it, or that is not your account, close this page.</p>
<form method="post" action="{{.Action}}"><button>Sign in as {{.Account}}</button></form>
<p class="muted">The link works once.</p>
</body></html>
{{end}}
{{define "signedin"}}<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="0; url=/">
<title>keyframe: signed in</title>
</head>
<body>
<p>Signed in as {{.Account}}. <a href="/">Continue to your page</a>.</p>
</body></html>
{{end}}
{{define "message"}}{{template "head" .Title}}
<h1>{{.Title}}</h1>
<p>{{.Text}}</p>
<p><a href="/">Sign in</a></p>
</body></html>
{{end}}
{{define "sessions"}}{{template "head" "keyframe: sessions"}}
{{template "nav" .Account}}
<h1>Account {{.Account}}</h1>
{{if .Message}}<p class="warn">{{.Message}}</p>{{end}}
<h2>Passkeys</h2>
{{if .Keys}}
<table id="passkeys">
<tr><th>passkey</th><th>added</th><th>last used</th><th>authenticator</th><th>transports</th><th></th></tr>
{{range .Keys}}
<tr><td class="mono">{{.Short}}</td><td>{{.Created}}</td><td>{{.LastUsed}}</td><td class="mono">{{.AAGUID}}</td><td>{{.Transports}}</td>
<td><form method="post" action="/passkeys/remove"><input type="hidden" name="id" value="{{.ID}}"><button>Remove</button></form></td></tr>
{{end}}
</table>
{{else}}
<p>No passkeys.</p>
{{end}}
{{if .PasskeyWhy}}<p class="muted">{{.PasskeyWhy}}</p>{{else}}<p><button type="button" id="passkey-add" data-passkey="register" data-begin="/passkeys/register/begin" data-finish="/passkeys/register/finish" hidden>Add a passkey</button></p>
<p id="passkey-status" class="warn" role="status"></p>
<script src="/static/passkey.js"></script>{{end}}
{{if .E2EE}}<h2 id="e2ee-heading">End-to-end encryption</h2>
<p class="muted">Your cameras can seal their pictures to keys that only your browsers hold: this receiver then stores and relays ciphertext it cannot open (docs/e2ee.md).</p>
<div id="e2ee" data-account="{{.Account}}"><p class="muted">This needs the page's script (e2ee.js) and a secure context (HTTPS, or this machine's loopback address).</p></div>
<script src="/static/e2ee.js"></script>{{end}}
<h2>Sessions</h2>
<table>
<tr><th>signed in</th><th>last used</th><th>browser</th><th>from</th><th></th></tr>
{{range .Rows}}
<tr><td>{{.Created}}</td><td>{{.LastUsed}}</td><td>{{.Agent}}</td><td class="mono">{{.Addr}}</td>
<td>{{if .Current}}<span class="muted">this one</span>{{else}}<form method="post" action="/sessions/revoke"><input type="hidden" name="id" value="{{.ID}}"><button>Revoke</button></form>{{end}}</td></tr>
{{end}}
</table>
</body></html>
{{end}}
{{define "fleet"}}{{template "head" "keyframe receiver: fleet"}}
{{template "nav" .Account}}
<h1>Fleet</h1>
<p class="muted">An admin operates the fleet: devices, their verification status and counts. Events, thumbnails and envelopes are shown to the owner a device is paired with, and to nobody else.</p>
<p>records {{.Stats.Records}} · stored {{.Stats.Stored}} · duplicates {{.Stats.Duplicates}} · denied views {{.Stats.DeniedViews}} · mix-ups caught {{.Stats.MixupsCaught}} · corrupt at view {{.Stats.CorruptMedia}} · <a href="/v1/stats">counters (JSON)</a></p>
{{if .Rows}}
<table>
<tr><th>device</th><th>owner</th><th>status</th><th>records</th><th>highest seq</th><th>last received</th></tr>
{{range .Rows}}
<tr><td class="mono">{{.Device}}</td><td>{{if .Owner}}{{.Owner}}{{else}}<span class="muted">not paired</span>{{end}}</td><td>{{.Status}}</td><td>{{.Records}}</td><td>{{.MaxSeq}}</td><td>{{.LastReceived}}</td></tr>
{{end}}
</table>
{{else}}
<p>No devices.</p>
{{end}}
</body></html>
{{end}}
`
