package receiver

import (
	"net"
	"net/http"
	"strings"
)

// The route table: every route the receiver answers, who may call it, and
// its handler. Handler builds the mux from this table and nothing else, and
// TestRouteTable walks it, so a route cannot be added without saying who may
// call it and without being tried with every refused credential.
//
// Every route but the device's goes through the same guard first:
//
//  1. the Host header must be one the receiver serves (Options.AllowedHosts):
//     a page of another site that a browser reaches by DNS rebinding comes
//     with its own host name and is refused (421);
//  2. a state-changing request (POST, PUT, DELETE) from another origin is refused (403,
//     net/http's CrossOriginProtection: Sec-Fetch-Site, else Origin);
//  3. an owner, admin or signed-in route needs a live session (cookie) of
//     the right role: none is 401 (the home page shows the sign-in form
//     instead), the wrong role 403.
//
// Owner handlers get the owner from the session, never from the URL: no path
// segment chooses whose events are shown.

// access is who may call a route.
type access int

const (
	// accessAnonymous: anyone; the sign-in pages and one-time links (the
	// link's token is the credential).
	accessAnonymous access = iota
	// accessDevice: devices; the record's signature is the credential (and,
	// with ServeConfig.ClientCAs, a fleet client certificate: 401 without);
	// for the live view's requests, a signature over a nonce (live.go).
	// Neither the Host check nor the cross-origin check applies.
	accessDevice
	// accessOwner: a signed-in owner, about their own devices only.
	accessOwner
	// accessAdmin: a signed-in admin: the fleet, no media.
	accessAdmin
	// accessSignedIn: anyone signed in, about their own account.
	accessSignedIn
)

func (a access) String() string {
	switch a {
	case accessAnonymous:
		return "anonymous"
	case accessDevice:
		return "device"
	case accessOwner:
		return "owner"
	case accessAdmin:
		return "admin"
	case accessSignedIn:
		return "signed in"
	}
	return "unknown"
}

// user is the signed-in account of a request.
type user struct {
	name string
	role Role
	sess *session // a copy
	hash string   // the session token's hash
}

// route is one row of the route table.
type route struct {
	pattern string // a net/http ServeMux pattern, with its method
	access  access
	// data marks a route that returns event data, media, envelopes,
	// devices or statistics.
	data bool
	// signIn: without a session the route shows the sign-in page (200)
	// instead of answering 401.
	signIn bool
	// stream: the route answers a live stream (server-sent events) that
	// stays open until the client goes or its lifetime ends.
	stream bool
	// serve handles the request; u is nil for anonymous and device routes.
	serve func(w http.ResponseWriter, r *http.Request, u *user)
}

// routes is the route table.
func (s *Server) routes() []route {
	return []route{
		// Devices.
		{pattern: "PUT /v1/events/{event}/{kind}", access: accessDevice, serve: anon(s.handleUpload)},
		// A camera's live view (live.go): it waits to be asked, then
		// streams; each request carries its device key's signature over a
		// nonce of the receiver.
		{pattern: "POST /v1/live/{device}/wait", access: accessDevice, serve: anon(s.handleLiveWait)},
		{pattern: "PUT /v1/live/{device}/stream", access: accessDevice, serve: anon(s.handleLiveStream)},
		{pattern: "POST /v1/live/{device}/answer", access: accessDevice, serve: anon(s.handleLiveAnswer)},
		// A camera's fetch of its owner's end-to-end encryption key set
		// (e2ee.go), with the live view's proof.
		{pattern: "GET /v1/e2ee/{device}/keyset", access: accessDevice, serve: anon(s.handleE2EEKeySet)},

		// Signing in.
		{pattern: "GET /signin", access: accessAnonymous, serve: s.handleSignInPage},
		{pattern: "POST /signin", access: accessAnonymous, serve: s.handleSignIn},
		{pattern: "GET /setup/{token}", access: accessAnonymous, serve: s.handleSetupPage},
		{pattern: "POST /setup/{token}", access: accessAnonymous, serve: s.handleSetup},
		{pattern: "GET /link/{token}", access: accessAnonymous, serve: s.handleLink},
		{pattern: "POST /link/{token}", access: accessAnonymous, serve: s.handleLink},
		// Passkeys (passkey.go): the script of the buttons; a sign-in with a
		// passkey (the assertion is the credential); registering one with a
		// setup link (the link's token is the credential).
		{pattern: "GET /static/passkey.js", access: accessAnonymous, serve: s.handlePasskeyJS},
		// The end-to-end encryption library (e2eejs.go), for the owner's
		// pages: code only, no data.
		{pattern: "GET /static/e2ee.js", access: accessAnonymous, serve: s.handleE2EEJS},
		{pattern: "POST /passkey/signin/begin", access: accessAnonymous, serve: s.handlePasskeySignInBegin},
		{pattern: "POST /passkey/signin/finish", access: accessAnonymous, serve: s.handlePasskeySignIn},
		{pattern: "POST /setup/{token}/passkey/begin", access: accessAnonymous, serve: s.handleSetupPasskeyBegin},
		{pattern: "POST /setup/{token}/passkey/finish", access: accessAnonymous, serve: s.handleSetupPasskey},

		// One's own account.
		{pattern: "POST /signout", access: accessSignedIn, serve: s.handleSignOut},
		{pattern: "GET /sessions", access: accessSignedIn, serve: s.handleSessions},
		{pattern: "POST /sessions/revoke", access: accessSignedIn, serve: s.handleRevoke},
		{pattern: "POST /passkeys/register/begin", access: accessSignedIn, serve: s.handlePasskeyRegisterBegin},
		{pattern: "POST /passkeys/register/finish", access: accessSignedIn, serve: s.handlePasskeyRegister},
		{pattern: "POST /passkeys/remove", access: accessSignedIn, serve: s.handlePasskeyRemove},

		// The home page: an owner's events, an admin's fleet.
		{pattern: "GET /{$}", access: accessSignedIn, data: true, signIn: true, serve: s.handleHome},

		// An owner's media and envelopes: the session's owner, checked at
		// view time against the registry (ownerGate) and re-verified.
		{pattern: "GET /media/{device}/{event}/{kind}/{i}", access: accessOwner, data: true, serve: s.handleOwnerMedia},
		{pattern: "GET /envelope/{device}/{event}/{kind}", access: accessOwner, data: true, serve: s.handleOwnerEnvelope},

		// Claiming a camera (docs/claim.md): an owner's "add a camera" makes
		// a one-time claim code for the session's owner; the camera's two
		// endpoints are anonymous to accounts: the claim code and the proof of
		// possession of the device key are the credential. The camera uses the
		// URL the owner's page showed, so its Host is one the pages serve, and
		// as no browser it sends no cross-origin markers.
		{pattern: "POST /claims", access: accessOwner, serve: func(w http.ResponseWriter, r *http.Request, u *user) { s.handleNewClaim(w, r, u.name) }},
		{pattern: "POST /v1/claim/challenge", access: accessAnonymous, serve: anon(s.handleClaimChallenge)},
		{pattern: "POST /v1/claim/join", access: accessAnonymous, serve: anon(s.handleClaimJoin)},

		// End-to-end encryption (e2ee.go): the owner's key set, backup and
		// browsers' join requests, for the owner's browsers.
		{pattern: "GET /v1/e2ee/keys", access: accessOwner, data: true, serve: s.handleE2EEKeys},
		{pattern: "PUT /v1/e2ee/keys", access: accessOwner, serve: s.handleE2EEPut},
		{pattern: "POST /v1/e2ee/requests", access: accessOwner, serve: s.handleE2EERequest},
		{pattern: "DELETE /v1/e2ee/requests/{id}", access: accessOwner, serve: s.handleE2EERequestDelete},

		// An owner's events (pages.go): one event with its records, its
		// deletion; the live stream of the owner's new events (a signed-in
		// route: the handler refuses an admin, and streams each owner only
		// what a pairing of theirs covers); the owner's retention.
		{pattern: "GET /events/{device}/{event}", access: accessOwner, data: true, serve: s.handleEventPage},
		{pattern: "POST /events/{device}/{event}/delete", access: accessOwner, serve: s.handleDeleteEvent},
		{pattern: "GET /events/stream", access: accessSignedIn, data: true, stream: true, serve: s.handleStream},
		{pattern: "GET /settings", access: accessSignedIn, serve: s.handleSettings},
		{pattern: "POST /settings", access: accessSignedIn, serve: s.handleSettings},
		{pattern: "GET /static/events.js", access: accessAnonymous, serve: s.handleEventsJS},
		// An event's clip (playback.go): the player's script; the clip as a
		// Matroska file (JPEG frames) or an MP4 file (H.264), and its records
		// as a zip, re-verified as they go.
		{pattern: "GET /static/playback.js", access: accessAnonymous, serve: s.handlePlayerJS},
		// The pages' opener of end-to-end encrypted pictures (docs/e2ee.md).
		{pattern: "GET /static/sealed.js", access: accessAnonymous, serve: s.handleSealedJS},
		{pattern: "GET /events/{device}/{event}/clip.mkv", access: accessOwner, data: true, serve: s.handleClipMKV},
		{pattern: "GET /events/{device}/{event}/clip.mp4", access: accessOwner, data: true, serve: s.handleClipMP4},
		{pattern: "GET /events/{device}/{event}/records.zip", access: accessOwner, data: true, serve: s.handleClipRecords},

		// A camera's live view (live.go), for its owner by the registry's
		// open pairing now: the page and its script; the frames the script
		// shows (clear, or sealed end to end and opened in the browser);
		// the MJPEG stream of a clear camera (the page without scripts,
		// other clients).
		{pattern: "GET /live/{device}", access: accessOwner, data: true, serve: s.handleLivePage},
		{pattern: "GET /static/live.js", access: accessAnonymous, serve: s.handleLiveJS},
		{pattern: "GET /live/{device}/frames", access: accessOwner, data: true, stream: true, serve: s.handleLiveFrames},
		{pattern: "GET /live/{device}/mjpeg", access: accessOwner, data: true, stream: true, serve: s.handleLiveMJPEG},
		// WebRTC (livewebrtc.go): the page's offer, relayed to the camera,
		// answered with the camera's signed answer; DELETE ends it (WHEP).
		{pattern: "POST /live/{device}/whep", access: accessOwner, serve: s.handleLiveWHEP},
		{pattern: "DELETE /live/{device}/whep/{id}", access: accessOwner, serve: s.handleLiveWHEPDelete},

		// For monitors and browsers: "ok" or not, and the icon.
		{pattern: "GET /healthz", access: accessAnonymous, serve: s.handleHealth},
		{pattern: "GET /favicon.ico", access: accessAnonymous, serve: s.handleFavicon},

		// The fleet.
		{pattern: "GET /v1/stats", access: accessAdmin, data: true, serve: anon(s.handleStats)},
	}
}

// anon adapts a handler that needs no account.
func anon(h http.HandlerFunc) func(http.ResponseWriter, *http.Request, *user) {
	return func(w http.ResponseWriter, r *http.Request, _ *user) { h(w, r) }
}

// Handler returns the HTTP API and web pages, built from the route table
// (routes; docs/accounts.md lists it with each route's protection).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		mux.Handle(rt.pattern, s.guard(rt))
	}
	return mux
}

// guard applies a route's protection (see the top of this file).
func (s *Server) guard(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rt.access == accessDevice {
			rt.serve(w, r, nil)
			return
		}
		if !s.hostAllowed(r.Host) {
			s.log.Info("receiver: request for a host not served here refused", "host", clip(r.Host), "remote", r.RemoteAddr)
			writeLine(w, http.StatusMisdirectedRequest, "this receiver does not serve that host name")
			return
		}
		if err := s.cop.Check(r); err != nil {
			s.log.Info("receiver: cross-origin request refused", "method", r.Method, "path", clip(r.URL.Path), "remote", r.RemoteAddr)
			writeLine(w, http.StatusForbidden, "cross-origin request refused")
			return
		}
		if rt.access == accessAnonymous {
			rt.serve(w, r, nil)
			return
		}
		u := s.signedIn(r)
		switch {
		case u == nil && rt.signIn:
			s.signInPage(w, r, http.StatusOK, "")
		case u == nil:
			writeLine(w, http.StatusUnauthorized, "sign in first")
		case rt.access == accessOwner && u.role != RoleOwner:
			writeLine(w, http.StatusForbidden, "only an owner may see this: an admin sees no media")
		case rt.access == accessAdmin && u.role != RoleAdmin:
			writeLine(w, http.StatusForbidden, "only an admin may see this")
		default:
			rt.serve(w, r, u)
		}
	})
}

// signedIn returns the account of the request's live session, or nil.
func (s *Server) signedIn(r *http.Request) *user {
	c, err := r.Cookie(cookieName(r))
	if err != nil {
		return nil
	}
	sess, hash := s.sess.lookup(c.Value)
	if sess == nil {
		return nil
	}
	// The account as accounts.json says now (another process may have reset
	// it, changed its role or removed it): a session outlives none of these.
	if ok, err := s.standing.stillValid(sess); !ok {
		if err != nil {
			s.log.Error("receiver: cannot read the accounts; session not accepted", "err", err)
			return nil
		}
		if err := s.sess.end(hash); err != nil {
			s.log.Error("receiver: end a session of a reset account", "err", err)
		}
		s.log.Info("receiver: session ended: its account was reset, changed or removed", "account", sess.Account)
		return nil
	}
	return &user{name: sess.Account, role: sess.Role, sess: sess, hash: hash}
}

// hostPattern is one allowed Host: a lower-case name and a port ("" for any).
type hostPattern struct{ host, port string }

// parseHosts turns AllowedHosts entries ("name" or "name:port",
// "[v6]:port") into patterns; with none, the loopback names on any port.
func parseHosts(hosts []string) []hostPattern {
	if len(hosts) == 0 {
		return []hostPattern{{host: "localhost"}, {host: "127.0.0.1"}, {host: "::1"}}
	}
	out := make([]hostPattern, 0, len(hosts))
	for _, h := range hosts {
		out = append(out, splitHost(h))
	}
	return out
}

// splitHost splits a Host value into a normalised name and port.
func splitHost(h string) hostPattern {
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		host, port = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), ""
	}
	return hostPattern{host: strings.TrimSuffix(strings.ToLower(host), "."), port: port}
}

// hostAllowed reports whether a request's Host is one the receiver serves.
func (s *Server) hostAllowed(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	got := splitHost(h)
	for _, p := range s.hosts {
		if got.host == p.host && (p.port == "" || p.port == got.port) {
			return true
		}
	}
	return false
}

// DefaultAllowedHosts returns the Host values a receiver listening on addr
// answers when none are configured: the listen address itself (unless it
// is a wildcard such as ":8417" or "0.0.0.0:8417") and localhost, 127.0.0.1
// and [::1], all with its port.
func DefaultAllowedHosts(addr string) []string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	out := []string{net.JoinHostPort("localhost", port), net.JoinHostPort("127.0.0.1", port), net.JoinHostPort("::1", port)}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		out = append(out, net.JoinHostPort(host, port))
	}
	return out
}
