package receiver

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"

	"github.com/keyframe-cam/keyframe/internal/atomicfile"
	"github.com/keyframe-cam/keyframe/internal/clock"
)

// Accounts. The people who may look at the receiver's pages are accounts in
// accounts.json in the data directory: an owner sees the events of the
// devices paired to them, an admin operates the fleet and sees no media
// (docs/accounts.md). The file holds each account's role and its password
// as an Argon2id hash, never the password, its passkeys' public keys
// (passkey.go), and the SHA-256 of each pending one-time link, never the
// link. Like the registry it is replaced
// atomically under a flock (accounts.lock), so the CLI (owner add, owner
// link) changes it while a receiver runs and the receiver consumes links
// and sets passwords in the same file.

const (
	accountsFile = "accounts.json"
	accountsLock = "accounts.lock"
)

// A Role is what an account may see.
type Role string

// Roles.
const (
	// RoleOwner sees their own cameras and events (the devices the
	// registry pairs with the account's name), nothing else.
	RoleOwner Role = "owner"
	// RoleAdmin sees the fleet (devices, verification status, counts,
	// health, /v1/stats) and no media, envelope or event list of any owner.
	RoleAdmin Role = "admin"
)

// Account errors, returned wrapped.
var (
	// ErrAccountExists reports an account name that is taken.
	ErrAccountExists = errors.New("account exists")
	// ErrNoAccount reports an account name that is unknown.
	ErrNoAccount = errors.New("no such account")
	// ErrLink reports a one-time link that is unknown, used or expired.
	ErrLink = errors.New("link is not valid: unknown, used or expired")
	// ErrPassword reports a password that breaks the rules (PasswordRules).
	ErrPassword = errors.New("password must be 15 to 256 characters of valid UTF-8")
)

// Password rules, after NIST SP 800-63B-4 for a password that is the only
// factor: a minimum length and no composition rules. The maximum bounds the
// work before hashing; a form field longer than maxPasswordBytes is refused
// before it is hashed.
const (
	minPasswordRunes = 15
	maxPasswordRunes = 256
	maxPasswordBytes = 1024
)

// PasswordRules describes the password rules for people.
const PasswordRules = "15 to 256 characters; a few unrelated words make a good one"

// checkPasswordRules returns ErrPassword unless p follows the rules.
func checkPasswordRules(p string) error {
	if len(p) > maxPasswordBytes || !utf8.ValidString(p) {
		return ErrPassword
	}
	if n := utf8.RuneCountInString(p); n < minPasswordRunes || n > maxPasswordRunes {
		return ErrPassword
	}
	return nil
}

// DefaultLinkTTL is how long a one-time setup or sign-in link is valid.
const DefaultLinkTTL = 15 * time.Minute

// Link purposes.
const (
	linkSetup  = "setup"   // set (or reset) the password, then signed in
	linkSignIn = "sign-in" // signed in at once
)

// accountsDB is the on-disk form of accounts.json.
type accountsDB struct {
	Version  int                 `json:"version"`
	Accounts map[string]*account `json:"accounts"`
	// Links are the pending one-time links, by the hex SHA-256 of their
	// token (the token itself is only in the URL printed once).
	Links map[string]*link `json:"links,omitempty"`
}

// account is one person who may sign in.
type account struct {
	Role Role `json:"role"`
	// Password is the Argon2id hash of the password in PHC string format
	// ($argon2id$v=19$m=…,t=…,p=…$salt$hash), "" until one is set.
	Password string    `json:"password,omitempty"`
	Created  time.Time `json:"created"`
	// UserHandle is the WebAuthn user handle of the account's passkeys:
	// random (passkeyHandleBytes), made at the first passkey, never the
	// name, so a passkey tells no one whose it is.
	UserHandle []byte `json:"user_handle,omitempty"`
	// Passkeys are the account's WebAuthn credentials (passkey.go).
	Passkeys []*passkey `json:"passkeys,omitempty"`
	// SessionsNotBefore ends every session of the account signed in before
	// it (Accounts.Reset): the receiver checks it at each request.
	SessionsNotBefore time.Time `json:"sessions_not_before,omitzero"`
}

// link is a pending one-time link.
type link struct {
	Account string    `json:"account"`
	Purpose string    `json:"purpose"` // linkSetup or linkSignIn
	Expires time.Time `json:"expires"`
}

func emptyAccounts() *accountsDB {
	return &accountsDB{Version: 1, Accounts: map[string]*account{}, Links: map[string]*link{}}
}

// loadAccounts reads accounts.json in dir; a missing file is no accounts.
// Writers replace the file by rename, so a read needs no lock.
func loadAccounts(dir string) (*accountsDB, error) {
	path := filepath.Join(dir, accountsFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return emptyAccounts(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("receiver: read accounts: %w", err)
	}
	db := emptyAccounts()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(db); err != nil {
		return nil, fmt.Errorf("receiver: accounts %s: %w", path, err)
	}
	if db.Version != 1 {
		return nil, fmt.Errorf("receiver: accounts %s: version %d, want 1", path, db.Version)
	}
	if db.Accounts == nil {
		db.Accounts = map[string]*account{}
	}
	if db.Links == nil {
		db.Links = map[string]*link{}
	}
	for name, a := range db.Accounts {
		if a == nil || !ValidOwner(name) || (a.Role != RoleOwner && a.Role != RoleAdmin) || !a.passkeysWellFormed() {
			return nil, fmt.Errorf("receiver: accounts %s: account %q is malformed", path, clip(name))
		}
	}
	for h, l := range db.Links {
		if l == nil {
			return nil, fmt.Errorf("receiver: accounts %s: link %s is malformed", path, clip(h))
		}
	}
	return db, nil
}

// updateAccounts runs fn on the current accounts under the accounts lock and
// writes the result atomically if fn succeeds. Expired links are dropped on
// every write.
func updateAccounts(dir string, now time.Time, fn func(*accountsDB) error) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("receiver: data directory: %w", err)
	}
	unlock, err := lockFile(filepath.Join(dir, accountsLock), true)
	if err != nil {
		return err
	}
	defer unlock()
	db, err := loadAccounts(dir)
	if err != nil {
		return err
	}
	if err := fn(db); err != nil {
		return err
	}
	for h, l := range db.Links {
		if !now.Before(l.Expires) {
			delete(db.Links, h)
		}
	}
	b, err := json.MarshalIndent(db, "", "  ")
	if err != nil {
		return fmt.Errorf("receiver: encode accounts: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, accountsFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("receiver: write accounts: %w", err)
	}
	return nil
}

// Accounts changes the accounts of a data directory: what the CLI's owner
// and admin commands use, while a receiver runs or not.
type Accounts struct {
	Dir     string
	Clock   clock.Clock   // link expiry; nil: the system clock
	Rand    io.Reader     // link tokens; nil: crypto/rand
	LinkTTL time.Duration // how long a link is valid; 0: DefaultLinkTTL
}

// A Link is a one-time link just made: Path (with its token) goes after the
// receiver's base URL, and is shown once; only its hash is stored.
type Link struct {
	Path    string
	Expires time.Time
}

// AccountInfo describes an account (List).
type AccountInfo struct {
	Name        string
	Role        Role
	HasPassword bool
	Passkeys    int
	Created     time.Time
}

func (a Accounts) now() time.Time { return clock.Or(a.Clock).Now() }

func (a Accounts) ttl() time.Duration {
	if a.LinkTTL > 0 {
		return a.LinkTTL
	}
	return DefaultLinkTTL
}

// Add creates the account name with role and returns a one-time setup link
// to choose its password. A name that is taken is ErrAccountExists. Owner
// and admin names share the owner names' rules (ValidOwner): an owner's
// account name is the owner name the registry pairs devices with.
func (a Accounts) Add(name string, role Role) (Link, error) {
	if !ValidOwner(name) {
		return Link{}, fmt.Errorf("receiver: account %q: %w", clip(name), ErrOwner)
	}
	if role != RoleOwner && role != RoleAdmin {
		return Link{}, fmt.Errorf("receiver: account %s: unknown role %q", name, clip(string(role)))
	}
	tok, hash, err := newToken(a.Rand)
	if err != nil {
		return Link{}, err
	}
	now := a.now()
	exp := now.Add(a.ttl())
	err = updateAccounts(a.Dir, now, func(db *accountsDB) error {
		if _, ok := db.Accounts[name]; ok {
			return fmt.Errorf("receiver: account %s: %w", name, ErrAccountExists)
		}
		db.Accounts[name] = &account{Role: role, Created: now.UTC()}
		db.Links[hash] = &link{Account: name, Purpose: linkSetup, Expires: exp.UTC()}
		return nil
	})
	if err != nil {
		return Link{}, err
	}
	return Link{Path: "/setup/" + tok, Expires: exp}, nil
}

// SignInLink returns a fresh one-time link that signs name in.
func (a Accounts) SignInLink(name string) (Link, error) {
	return a.newLink(name, linkSignIn, "/link/")
}

// SetupLink returns a fresh one-time link to set name's password anew
// (which also ends its sessions).
func (a Accounts) SetupLink(name string) (Link, error) {
	return a.newLink(name, linkSetup, "/setup/")
}

// Reset is what an operator does for an account that may be in the wrong
// hands: in one write it removes the account's password and passkeys, ends
// every session signed in until now (the receiver checks
// SessionsNotBefore at each request, so this works from another process
// while it runs), and makes a one-time setup link for new credentials.
func (a Accounts) Reset(name string) (Link, error) {
	tok, hash, err := newToken(a.Rand)
	if err != nil {
		return Link{}, err
	}
	now := a.now()
	exp := now.Add(a.ttl())
	err = updateAccounts(a.Dir, now, func(db *accountsDB) error {
		acc := db.Accounts[name]
		if acc == nil {
			return fmt.Errorf("receiver: account %q: %w", clip(name), ErrNoAccount)
		}
		acc.Password, acc.Passkeys, acc.SessionsNotBefore = "", nil, now.UTC()
		for h, l := range db.Links {
			if l.Account == name {
				delete(db.Links, h) // links made before the reset are void too
			}
		}
		db.Links[hash] = &link{Account: name, Purpose: linkSetup, Expires: exp.UTC()}
		return nil
	})
	if err != nil {
		return Link{}, err
	}
	return Link{Path: "/setup/" + tok, Expires: exp}, nil
}

func (a Accounts) newLink(name, purpose, prefix string) (Link, error) {
	tok, hash, err := newToken(a.Rand)
	if err != nil {
		return Link{}, err
	}
	now := a.now()
	exp := now.Add(a.ttl())
	err = updateAccounts(a.Dir, now, func(db *accountsDB) error {
		if db.Accounts[name] == nil {
			return fmt.Errorf("receiver: account %q: %w", clip(name), ErrNoAccount)
		}
		db.Links[hash] = &link{Account: name, Purpose: purpose, Expires: exp.UTC()}
		return nil
	})
	if err != nil {
		return Link{}, err
	}
	return Link{Path: prefix + tok, Expires: exp}, nil
}

// List returns the accounts, by name.
func (a Accounts) List() ([]AccountInfo, error) {
	db, err := loadAccounts(a.Dir)
	if err != nil {
		return nil, err
	}
	out := make([]AccountInfo, 0, len(db.Accounts))
	for name, acc := range db.Accounts {
		out = append(out, AccountInfo{Name: name, Role: acc.Role, HasPassword: acc.Password != "", Passkeys: len(acc.Passkeys), Created: acc.Created})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Tokens (one-time links, sessions) are 32 random bytes, base64url without
// padding in URLs and cookies; only the hex SHA-256 of the 32 bytes is
// stored.
const (
	tokenBytes = 32
	tokenChars = 43 // base64.RawURLEncoding of tokenBytes
)

// newToken returns a fresh token and its stored hash.
func newToken(rnd io.Reader) (tok, hash string, err error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	var b [tokenBytes]byte
	if _, err := io.ReadFull(rnd, b[:]); err != nil {
		return "", "", fmt.Errorf("receiver: random token: %w", err)
	}
	sum := sha256.Sum256(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:]), hex.EncodeToString(sum[:]), nil
}

// tokenHash returns the stored hash of a presented token, and false for
// anything that is not a well-formed token (checked before any lookup).
func tokenHash(tok string) (string, bool) {
	if len(tok) != tokenChars {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) != tokenBytes {
		return "", false
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), true
}

// peekLink returns the account of a valid pending link of purpose, without
// using it up.
func peekLink(dir, tok, purpose string, now time.Time) (string, error) {
	h, ok := tokenHash(tok)
	if !ok {
		return "", ErrLink
	}
	db, err := loadAccounts(dir)
	if err != nil {
		return "", err
	}
	l := db.Links[h]
	if l == nil || l.Purpose != purpose || !now.Before(l.Expires) || db.Accounts[l.Account] == nil {
		return "", ErrLink
	}
	return l.Account, nil
}

// useLink uses up a valid pending link of purpose and returns its account
// and role; change (if not nil) changes the account in the same write (a
// setup link's new password or passkey), and an error of change leaves the
// link unused. A link is used once: the write that removes it is made under
// the accounts lock.
func useLink(dir, tok, purpose string, now time.Time, change func(db *accountsDB, name string, acc *account) error) (name string, role Role, err error) {
	h, ok := tokenHash(tok)
	if !ok {
		return "", "", ErrLink
	}
	err = updateAccounts(dir, now, func(db *accountsDB) error {
		l := db.Links[h]
		if l == nil || l.Purpose != purpose || !now.Before(l.Expires) {
			return ErrLink
		}
		acc := db.Accounts[l.Account]
		if acc == nil {
			return ErrLink
		}
		if change != nil {
			if err := change(db, l.Account, acc); err != nil {
				return err
			}
		}
		delete(db.Links, h)
		name, role = l.Account, acc.Role
		return nil
	})
	if err != nil {
		return "", "", err
	}
	return name, role, nil
}

// Argon2Params are the Argon2id parameters of new password hashes. A stored
// hash carries its own parameters, so changing them affects new hashes only.
type Argon2Params struct {
	Time      uint32 // passes over the memory
	MemoryKiB uint32
	Threads   uint8
}

// DefaultArgon2 is the Argon2id configuration OWASP's Password Storage Cheat
// Sheet lists first: 46 MiB of memory, one pass, one thread. The memory,
// not the passes, is what makes guessing costly on GPUs; one thread keeps a
// Pi 4 (four Cortex-A72 cores) answering other requests while it hashes
// (about 0.1 s per hash on an x86-64 build machine, a few tenths of a
// second expected on a Pi 4: docs/accounts.md). The
// receiver hashes at most maxHashing passwords at once, so sign-ins bound
// its memory to about 92 MiB.
func DefaultArgon2() Argon2Params { return Argon2Params{Time: 1, MemoryKiB: 46 * 1024, Threads: 1} }

const (
	argonSaltLen = 16
	argonKeyLen  = 32
	// Bounds on the parameters of a stored hash, so a damaged file cannot
	// make a sign-in allocate without limit.
	argonMaxMemoryKiB = 1 << 20 // 1 GiB
	argonMaxTime      = 64
	argonMaxThreads   = 64
)

// hashPassword returns the PHC-format Argon2id hash of password with a fresh
// random salt.
func hashPassword(p Argon2Params, rnd io.Reader, password string) (string, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	salt := make([]byte, argonSaltLen)
	if _, err := io.ReadFull(rnd, salt); err != nil {
		return "", fmt.Errorf("receiver: random salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.MemoryKiB, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// checkPassword reports whether password matches the PHC-format Argon2id
// hash encoded, comparing in constant time.
func checkPassword(encoded, password string) (bool, error) {
	p, salt, key, err := parseHash(encoded)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, uint32(len(key)))
	return subtle.ConstantTimeCompare(got, key) == 1, nil
}

// parseHash decodes a PHC-format Argon2id hash, bounding its parameters.
func parseHash(encoded string) (p Argon2Params, salt, key []byte, err error) {
	bad := func(why string) (Argon2Params, []byte, []byte, error) {
		return Argon2Params{}, nil, nil, fmt.Errorf("receiver: password hash: %s", why)
	}
	f := strings.Split(encoded, "$")
	if len(f) != 6 || f[0] != "" || f[1] != "argon2id" {
		return bad("not an $argon2id$ PHC string")
	}
	if f[2] != "v="+strconv.Itoa(argon2.Version) {
		return bad("unsupported version " + clip(f[2]))
	}
	var m, t, th uint64
	for _, kv := range strings.Split(f[3], ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, perr := strconv.ParseUint(v, 10, 32)
		if perr != nil {
			return bad("parameter " + clip(kv))
		}
		switch k {
		case "m":
			m = n
		case "t":
			t = n
		case "p":
			th = n
		default:
			return bad("parameter " + clip(kv))
		}
	}
	if t < 1 || t > argonMaxTime || th < 1 || th > argonMaxThreads || m < 8*th || m > argonMaxMemoryKiB {
		return bad("parameters out of bounds")
	}
	b64 := base64.RawStdEncoding
	if salt, err = b64.DecodeString(f[4]); err != nil || len(salt) < 8 || len(salt) > 64 {
		return bad("salt")
	}
	if key, err = b64.DecodeString(f[5]); err != nil || len(key) < 16 || len(key) > 64 {
		return bad("hash")
	}
	return Argon2Params{Time: uint32(t), MemoryKiB: uint32(m), Threads: uint8(th)}, salt, key, nil
}

// accountsReader gives sessions the accounts file as it is now, parsing it
// again only when it changed (another file, size or modification time), so
// each request costs a stat, not a parse.
type accountsReader struct {
	dir string

	mu   sync.Mutex
	info os.FileInfo
	db   *accountsDB
}

// stillValid reports whether sess's account exists with the session's role
// and was not reset after the session signed in.
func (ar *accountsReader) stillValid(sess *session) (bool, error) {
	db, err := ar.read()
	if err != nil {
		return false, err
	}
	acc := db.Accounts[sess.Account]
	return acc != nil && acc.Role == sess.Role && !sess.Created.Before(acc.SessionsNotBefore), nil
}

func (ar *accountsReader) read() (*accountsDB, error) {
	ar.mu.Lock()
	defer ar.mu.Unlock()
	fi, err := os.Stat(filepath.Join(ar.dir, accountsFile))
	if errors.Is(err, os.ErrNotExist) {
		ar.info, ar.db = nil, emptyAccounts()
		return ar.db, nil
	}
	if err != nil {
		return nil, fmt.Errorf("receiver: accounts: %w", err)
	}
	if ar.db != nil && ar.info != nil && os.SameFile(fi, ar.info) && fi.Size() == ar.info.Size() && fi.ModTime().Equal(ar.info.ModTime()) {
		return ar.db, nil
	}
	db, err := loadAccounts(ar.dir)
	if err != nil {
		return nil, err
	}
	ar.info, ar.db = fi, db
	return db, nil
}
