package receiver

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/keyframe-cam/keyframe/internal/atomicfile"
	"github.com/keyframe-cam/keyframe/internal/clock"
)

// Sessions. Signing in (a password, a one-time link) makes a session: a
// random 256-bit token in a cookie (HttpOnly, SameSite=Strict, Path=/,
// Secure over TLS) of which the receiver keeps only the SHA-256. A session
// ends when it is idle for longer than the idle limit, when it is older than
// the absolute limit, at sign-out, when it is revoked from the sessions page,
// or when the account's password is set anew. Sessions are kept in
// sessions.json in the data directory, written atomically by the receiver
// alone (it holds the directory's lock), so a restart keeps them; the time
// of last use is written at most every sessionTouchEvery, so a session may
// idle out up to that much early after a restart, never late.

const sessionsFile = "sessions.json"

// Session limits.
const (
	DefaultSessionIdle = 12 * time.Hour      // a session unused this long ends
	DefaultSessionMax  = 30 * 24 * time.Hour // a session this old ends, used or not
	sessionTouchEvery  = 5 * time.Minute     // last use is written to disk at most this often
	maxSessionsPerUser = 50                  // signing in again ends the account's oldest beyond this
)

// Session cookie names: over TLS the __Host- prefix makes browsers refuse
// a cookie that is not Secure, host-only and for Path=/.
const (
	sessionCookie    = "keyframe_session"
	sessionCookieTLS = "__Host-keyframe_session"
)

func cookieName(r *http.Request) string {
	if r.TLS != nil {
		return sessionCookieTLS
	}
	return sessionCookie
}

// session is one signed-in browser.
type session struct {
	// ID names the session on the sessions page and in the revoke form;
	// it is random and is not the token (knowing it signs nobody in).
	ID       string    `json:"id"`
	Account  string    `json:"account"`
	Role     Role      `json:"role"`
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"last_used"`
	Agent    string    `json:"agent,omitempty"` // the browser's User-Agent at sign-in, clipped
	Addr     string    `json:"addr,omitempty"`  // the source address at sign-in

	saved time.Time // LastUsed as last written to disk
}

// sessionsDB is the on-disk form of sessions.json.
type sessionsDB struct {
	Version  int                 `json:"version"`
	Sessions map[string]*session `json:"sessions"` // by the hex SHA-256 of the token
}

// sessionStore holds a Server's sessions.
type sessionStore struct {
	path  string
	files atomicfile.Writer
	clk   clock.Clock
	rnd   io.Reader
	log   *slog.Logger
	idle  time.Duration
	max   time.Duration

	mu sync.Mutex
	m  map[string]*session // by token hash
}

// openSessions loads sessions.json from dir, dropping ended sessions. A file
// that does not parse ends every session (logged): people sign in again.
func openSessions(dir string, clk clock.Clock, rnd io.Reader, log *slog.Logger, idle, max time.Duration) *sessionStore {
	st := &sessionStore{path: filepath.Join(dir, sessionsFile), clk: clk, rnd: rnd, log: log, idle: idle, max: max, m: map[string]*session{}}
	b, err := os.ReadFile(st.path)
	if errors.Is(err, os.ErrNotExist) {
		return st
	}
	var db sessionsDB
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		err = dec.Decode(&db)
	}
	if err != nil {
		log.Warn("receiver: sessions file unreadable: every session ended, people sign in again", "path", st.path, "err", err)
		return st
	}
	now := clk.Now()
	for h, s := range db.Sessions {
		if s == nil || !ValidOwner(s.Account) || (s.Role != RoleOwner && s.Role != RoleAdmin) || st.ended(s, now) {
			continue
		}
		s.saved = s.LastUsed
		st.m[h] = s
	}
	return st
}

// ended reports whether s is over at now.
func (st *sessionStore) ended(s *session, now time.Time) bool {
	return !now.Before(s.LastUsed.Add(st.idle)) || !now.Before(s.Created.Add(st.max))
}

// saveLocked writes the sessions. Callers hold mu.
func (st *sessionStore) saveLocked() error {
	db := sessionsDB{Version: 1, Sessions: st.m}
	b, err := json.MarshalIndent(db, "", "  ")
	if err != nil {
		return fmt.Errorf("receiver: encode sessions: %w", err)
	}
	if err := st.files.WriteFile(st.path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("receiver: write sessions: %w", err)
	}
	for _, s := range st.m {
		s.saved = s.LastUsed
	}
	return nil
}

// create makes a session for account and returns its token.
func (st *sessionStore) create(account string, role Role, r *http.Request) (string, error) {
	tok, hash, err := newToken(st.rnd)
	if err != nil {
		return "", err
	}
	var id [16]byte
	rnd := st.rnd
	if rnd == nil {
		rnd = rand.Reader
	}
	if _, err := io.ReadFull(rnd, id[:]); err != nil {
		return "", fmt.Errorf("receiver: random session ID: %w", err)
	}
	now := st.clk.Now().UTC()
	s := &session{ID: hex.EncodeToString(id[:]), Account: account, Role: role, Created: now, LastUsed: now}
	if r != nil {
		s.Agent = clip(r.UserAgent())
		s.Addr = clip(sourceAddr(r))
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.pruneLocked(now)
	var mine []string
	for h, o := range st.m {
		if o.Account == account {
			mine = append(mine, h)
		}
	}
	if len(mine) >= maxSessionsPerUser {
		sort.Slice(mine, func(i, j int) bool { return st.m[mine[i]].LastUsed.Before(st.m[mine[j]].LastUsed) })
		for _, h := range mine[:len(mine)-maxSessionsPerUser+1] {
			delete(st.m, h)
		}
	}
	st.m[hash] = s
	if err := st.saveLocked(); err != nil {
		delete(st.m, hash)
		return "", err
	}
	return tok, nil
}

// pruneLocked drops ended sessions. Callers hold mu.
func (st *sessionStore) pruneLocked(now time.Time) {
	for h, s := range st.m {
		if st.ended(s, now) {
			delete(st.m, h)
		}
	}
}

// lookup returns (a copy of) the live session of a token and its hash, and
// records its use; nil if the token names no live session.
func (st *sessionStore) lookup(tok string) (*session, string) {
	h, ok := tokenHash(tok)
	if !ok {
		return nil, ""
	}
	now := st.clk.Now().UTC()
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.m[h]
	if s == nil {
		return nil, ""
	}
	if st.ended(s, now) {
		delete(st.m, h)
		if err := st.saveLocked(); err != nil {
			st.log.Warn("receiver: cannot write sessions", "err", err)
		}
		return nil, ""
	}
	if now.After(s.LastUsed) {
		s.LastUsed = now
	}
	if s.LastUsed.Sub(s.saved) >= sessionTouchEvery {
		if err := st.saveLocked(); err != nil {
			st.log.Warn("receiver: cannot write sessions", "err", err)
		}
	}
	c := *s
	return &c, h
}

// end ends the session of a token hash.
func (st *sessionStore) end(hash string) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, ok := st.m[hash]; !ok {
		return nil
	}
	delete(st.m, hash)
	return st.saveLocked()
}

// revoke ends account's session with the public ID id; false if account has
// no such session.
func (st *sessionStore) revoke(account, id string) (bool, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for h, s := range st.m {
		if s.Account == account && s.ID == id {
			delete(st.m, h)
			return true, st.saveLocked()
		}
	}
	return false, nil
}

// endAll ends every session of account.
func (st *sessionStore) endAll(account string) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for h, s := range st.m {
		if s.Account == account {
			delete(st.m, h)
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return st.saveLocked()
}

// list returns account's live sessions, most recently used first.
func (st *sessionStore) list(account string) []session {
	now := st.clk.Now()
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []session
	for _, s := range st.m {
		if s.Account == account && !st.ended(s, now) {
			out = append(out, *s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastUsed.After(out[j].LastUsed) })
	return out
}

// sourceAddr is the address a request came from, for rate limits and the
// sessions page: the IP of RemoteAddr (an IPv6 address by its /64, the unit
// an ISP hands out). Behind a reverse proxy every request comes from the
// proxy: the per-address limit then counts all clients together, and the
// per-account limit still holds.
func sourceAddr(r *http.Request) string {
	p := sourcePrefix(r.RemoteAddr)
	switch {
	case !p.IsValid():
		return r.RemoteAddr
	case p.Addr().Is4():
		return p.Addr().String()
	}
	return p.String()
}

// limiter counts failed sign-ins per key (an account name, a source address)
// and, past a number of free failures, makes the key wait longer after each
// further failure: base, 2×base, 4×base, … up to max. A key with no failure
// for forget is forgotten.
//
// An attempt counts as a failure from the moment it begins (begin), before
// its password is hashed, and is taken back only when it succeeds (succeed):
// attempts sent all at once cannot pass the check together before any of
// them has failed. The map is bounded: when it is full, the key whose last
// failure is oldest is forgotten to make room, so filling it locks nobody
// out (a key with no record never waits).
type limiter struct {
	free   int
	base   time.Duration
	max    time.Duration
	forget time.Duration
	size   int

	mu sync.Mutex
	m  map[string]*strikes
}

type strikes struct {
	fails int
	until time.Time // no attempt before this
	last  time.Time // last failure
}

func newLimiter(free int, base, max, forget time.Duration, size int) *limiter {
	return &limiter{free: free, base: base, max: max, forget: forget, size: size, m: map[string]*strikes{}}
}

// begin starts an attempt of key: if key must wait it returns how long and
// counts nothing; otherwise it counts the attempt as a failure (succeed
// takes it back) and returns 0.
func (l *limiter) begin(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.m[key]; s != nil && now.Before(s.until) {
		return s.until.Sub(now)
	}
	l.countLocked(key, now)
	return 0
}

// wait returns how long key must wait before its next attempt (0: it may
// go), counting nothing: for attempts whose failure is counted afterwards
// with fail because they cost little (a passkey's signature check).
func (l *limiter) wait(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.m[key]; s != nil && now.Before(s.until) {
		return s.until.Sub(now)
	}
	return 0
}

// fail counts a failed attempt of key.
func (l *limiter) fail(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.countLocked(key, now)
}

// reset forgets key's failures (a successful sign-in of an account).
func (l *limiter) reset(key string) { l.succeed(key, true) }

// countLocked counts one failure of key. Callers hold mu.
func (l *limiter) countLocked(key string, now time.Time) {
	s := l.m[key]
	if s == nil {
		if len(l.m) >= l.size {
			l.makeRoomLocked(now)
		}
		s = &strikes{}
		l.m[key] = s
	}
	s.fails++
	s.last = now
	if over := s.fails - l.free; over > 0 {
		d := l.max
		if over <= 30 && l.base<<(over-1) < l.max {
			d = l.base << (over - 1)
		}
		s.until = now.Add(d)
	}
}

// succeed takes back the failure begin counted for an attempt of key that
// succeeded. With all forget, the key's record goes (an account that signed
// in starts afresh); otherwise one failure is taken back.
func (l *limiter) succeed(key string, all bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.m[key]
	if s == nil {
		return
	}
	if all || s.fails <= 1 {
		delete(l.m, key)
		return
	}
	s.fails--
	if s.fails <= l.free {
		s.until = time.Time{}
	}
}

// makeRoomLocked forgets the keys that may be forgotten and, if none may,
// the key with the oldest last failure. Callers hold mu.
func (l *limiter) makeRoomLocked(now time.Time) {
	l.pruneLocked(now)
	if len(l.m) < l.size {
		return
	}
	oldest, at := "", time.Time{}
	for k, s := range l.m {
		if oldest == "" || s.last.Before(at) {
			oldest, at = k, s.last
		}
	}
	delete(l.m, oldest)
}

// pruneLocked forgets the keys that may be forgotten. Callers hold mu.
func (l *limiter) pruneLocked(now time.Time) {
	for k, s := range l.m {
		if !now.Before(s.until) && now.Sub(s.last) >= l.forget {
			delete(l.m, k)
		}
	}
}
