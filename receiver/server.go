// Package receiver is keyframe's reference cloud side: it accepts signed event
// records over HTTP, verifies them with package provenance before storing
// anything, keeps the authoritative device registry (enrolled keys and owner
// pairings), stores verified records with an append-only index, and shows them
// to the owner they belong to, signed in (accounts.go, session.go; who may
// call each route is in the route table, routes.go).
//
// Two rules keep one owner's events from ever being shown to another:
//
//   - the device a record belongs to is the one whose key signed it, taken
//     from the verified signature, never from the URL, a header or a cache;
//   - the owner who may view a device's events is read from the registry on
//     disk at the moment of the view, never remembered from an earlier read.
//     Whatever selects an owner's events (Options.OwnerLookup, which may be
//     a cache), each event is served only if that registry read names the
//     owner for the event's verified signer; a disagreement is a mix-up,
//     counted (Stats.MixupsCaught) and logged, and nothing is shown.
//
// The upload protocol is in docs/architecture.md ("Upload protocol").
package receiver

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keyframe-cam/keyframe/internal/atomicfile"
	"github.com/keyframe-cam/keyframe/internal/clock"
	"github.com/keyframe-cam/keyframe/internal/netaddr"
	"github.com/keyframe-cam/keyframe/provenance"
)

// DefaultMaxBody is the default limit on an upload body.
const DefaultMaxBody = 4 << 20

// DefaultMaxInFlight is the default number of uploads handled at once.
const DefaultMaxInFlight = 16

// Defaults of Options.MinUploadRate (bytes a second) and UploadGrace.
const (
	DefaultMinUploadRate = 8 << 10
	DefaultUploadGrace   = 10 * time.Second
)

// Options configure a Server.
type Options struct {
	Dir         string       // data directory: registry, index, stored events (created if missing)
	Logger      *slog.Logger // nil: discard
	Events      io.Writer    // one "verified ..." line per newly stored record; nil: none
	MaxBody     int64        // largest accepted upload body in bytes; 0: DefaultMaxBody
	MaxInFlight int          // uploads verified and stored at once (after their body is read), more get 503 with Retry-After; 0: DefaultMaxInFlight
	// MinUploadRate and UploadGrace bound how slowly an upload body may
	// arrive: after UploadGrace, at least MinUploadRate bytes a second on
	// average since the body began, and no pause between reads longer than
	// UploadGrace; a slower one is cut and answered 408
	// (the agent retries it). The body is read before the upload takes one
	// of the MaxInFlight slots, so slow bodies hold no slot. 0:
	// DefaultMinUploadRate, DefaultUploadGrace; a negative rate: no bound
	// (the HTTP server's read timeout still applies).
	MinUploadRate int64
	UploadGrace   time.Duration
	// BodyBudget bounds the bytes of upload bodies held at once, from the
	// first byte read until the upload is answered (a body of known length
	// takes its Content-Length at once, one of unknown length as its
	// buffer grows); an upload that does not fit is answered 503 with
	// Retry-After (the agent retries it). It must be at least MaxBody. 0:
	// DefaultBodyBudget (32 MiB); negative: no bound.
	BodyBudget int64
	// BodyBudgetPerAddr bounds the part of BodyBudget the uploads of one
	// source address (an IPv6 address by its /64) hold at once, so slow
	// bodies from one client cannot take all of it; at least MaxBody.
	// Behind a proxy every upload has the proxy's address: raise it there.
	// 0: a quarter of BodyBudget (at least MaxBody); negative: no bound.
	BodyBudgetPerAddr int64
	// Quota bounds the new records and bytes each device may store per
	// hour and per day (429 with Retry-After beyond; see Quota). The zero
	// Quota: the defaults.
	Quota Quota
	Clock clock.Clock // received_at and certificate validity; nil: the system clock (Serve gives it to the MQTT ingest too)
	// OwnerLookup selects the events of an owner's view (the owner page,
	// OwnerEvents, and the owner media and envelope endpoints): a device's
	// events are offered to the owner it names. nil: the registry itself.
	// It is never trusted: see OwnerLookup.
	OwnerLookup OwnerLookup
	// RotationsPerDay bounds the key rotations of one device's line of keys
	// within 24 hours (receiver clock); more are answered 429 with
	// Retry-After. 0: DefaultRotationsPerDay; negative: no limit.
	RotationsPerDay int
	// TLSCertificate is the DER certificate the receiver serves over TLS
	// (Serve sets it from ServeConfig.TLSCertFile): claim codes pin its
	// public key. nil: no claim codes (NewClaim fails with ErrNoTLS).
	TLSCertificate []byte
	// AllowedHosts are the Host header values the pages and the viewer API
	// answer, "name" (any port) or "name:port" ("[::1]:8417"); any other is
	// refused (421), so a page that reaches the receiver by DNS rebinding
	// reads nothing. Uploads do not depend on it. Empty: localhost,
	// 127.0.0.1 and [::1] on any port (Serve: DefaultAllowedHosts).
	AllowedHosts []string
	// Rand makes session and link tokens, password salts, claim secrets
	// and challenge nonces; nil: crypto/rand.
	Rand io.Reader
	// Argon2 are the parameters of new password hashes; nil:
	// DefaultArgon2().
	Argon2 *Argon2Params
	// SessionIdle and SessionMax end a session unused for SessionIdle or
	// older than SessionMax, on Clock; 0: DefaultSessionIdle,
	// DefaultSessionMax.
	SessionIdle, SessionMax time.Duration
	// MaxStreams and MaxStreamsPerOwner bound the live event streams
	// (server-sent events) open at once, in all and of one owner; more are
	// answered 429. 0: DefaultMaxStreams, DefaultMaxStreamsPerOwner.
	MaxStreams, MaxStreamsPerOwner int
	// StreamLifetime ends a live stream after this long (the browser
	// reconnects by itself); it must stay below the HTTP server's write
	// timeout. 0: DefaultStreamLifetime.
	StreamLifetime time.Duration
	// Live bounds the live view (live.go).
	Live LiveOptions
}

// DefaultRotationsPerDay is the default of Options.RotationsPerDay.
const DefaultRotationsPerDay = 3

// An OwnerLookup says which owner a device's events belong to: the index a
// deployment may put in front of the registry (a cache, a database replica).
// The Server asks it which events to offer an owner, then re-checks every
// event it selected against the authoritative registry before serving any of
// it, so a lookup that mixes devices up (the February 2024 incident) shows
// nobody a stranger's events: the mix-up is caught, counted and logged.
// OwnerOf may be called from many goroutines at once. An error makes the
// view fail (503), never fall back to showing events.
type OwnerLookup interface {
	OwnerOf(device string) (owner string, err error)
}

// OwnerLookupFunc adapts a function to OwnerLookup.
type OwnerLookupFunc func(device string) (string, error)

// OwnerOf calls f.
func (f OwnerLookupFunc) OwnerOf(device string) (string, error) { return f(device) }

// Rejection reasons, the keys of Stats.Rejected.
const (
	ReasonMalformed   = "malformed"     // 400: not a bundle, or a malformed envelope
	ReasonTooLarge    = "too_large"     // 413: body over MaxBody
	ReasonSignature   = "bad_signature" // 403: the signature does not verify
	ReasonDeviceID    = "device_id"     // 403: device or key ID is not the key's fingerprint
	ReasonNotEnrolled = "not_enrolled"  // 403: no enrolled key for the signer
	ReasonRevoked     = "revoked"       // 403: the signer's enrolment was revoked
	ReasonKeyMismatch = "key_mismatch"  // 403: the enrolled key is not the signing key
	// ReasonClientCert (403): the upload came with a verified client
	// certificate (mutual TLS) for another key than the record's signer
	// (or, for a rotate record, the key it rotates to).
	ReasonClientCert  = "client_cert"
	ReasonCertificate = "certificate" // 403: not enrolled, and no certificate chain to a trusted fleet CA naming the device
	ReasonRotated     = "key_rotated" // 403: the key was rotated to a new one before this record's seq (retired)
	// ReasonRotationTarget (403): a rotate record to a key that is, or was,
	// in the registry.
	ReasonRotationTarget = "rotation_target"
	// ReasonRotationPending (409): a rotate record while a rotation of the
	// same line of keys waits for the new key's first upload.
	ReasonRotationPending = "rotation_pending"
	// ReasonRotationLimit (429 with Retry-After): too many rotations of one
	// line of keys within a day.
	ReasonRotationLimit = "rotation_limit"
	ReasonMedia         = "media_mismatch" // 422: media do not match their hashes
	ReasonPath          = "path_mismatch"  // 422: the route (URL event/kind, MQTT topic device) disagrees with the signed payload
	ReasonReplay        = "replay"         // 409: sequence at or below one already stored
	ReasonSeqRange      = "seq_range"      // 400: seq at or above 2^63, or a device's first record at or above 2^62
	// ReasonSeqJump (429 with Retry-After): seq further past the device's
	// highest stored one than SeqJumpBase plus SeqJumpPerSecond per second
	// since that one was stored.
	ReasonSeqJump    = "seq_jump"
	ReasonConflict   = "conflict"   // 409: this event and kind are stored with other content
	ReasonOverloaded = "overloaded" // 503: too many uploads at once
	ReasonSlowBody   = "slow_body"  // 408: the body arrived slower than Options.MinUploadRate after UploadGrace
	// ReasonQuota: 429 with Retry-After: the device is over one of its
	// record or byte quotas; the record is taken when it is sent again
	// after the quota's window.
	ReasonQuota    = "quota"
	ReasonInternal = "internal" // 503 with Retry-After: storage or registry failure, or shutting down
)

// Stats are the server's counters since Open.
type Stats struct {
	Stored       uint64            `json:"stored"`        // records verified and stored
	Duplicates   uint64            `json:"duplicates"`    // identical re-sends answered 200
	Rejected     map[string]uint64 `json:"rejected"`      // uploads refused, by reason
	DeniedViews  uint64            `json:"denied_views"`  // owner requests for media of a device not paired to them
	CorruptMedia uint64            `json:"corrupt_media"` // stored records refused at view time: media no longer match their signed hash, or the envelope no longer verifies as the indexed device's
	// MixupsCaught counts events the OwnerLookup offered to an owner that the
	// registry does not pair with the event's verified signer: each one was
	// withheld (a row of an owner's list, a media object or an envelope).
	MixupsCaught uint64 `json:"mixups_caught"`
	Records      int    `json:"records"` // records in the store (not deleted)
	Deleted      uint64 `json:"deleted"` // records deleted since Open, by their owner or by retention
	// Live counts the live view's streams and frames (live.go).
	Live LiveStats `json:"live"`
}

// Server is a verifying receiver over one data directory. Only one Server may
// have a directory open at a time (a lock file enforces it); the enroll and
// pair commands may change the registry while it runs.
type Server struct {
	dir      string
	log      *slog.Logger
	events   io.Writer
	maxBody  int64
	minRate  int64         // bytes a second; ≤ 0: none
	grace    time.Duration // before minRate applies
	clk      clock.Clock
	inflight chan struct{}
	bodies   *byteBudget // upload body bytes held at once
	quotas   *quotas     // per-device records and bytes
	unlock   func()
	tmpl     *template.Template
	pages    *template.Template // the event and retention pages (pages.go)
	regs     *registryReader
	owners   OwnerLookup // nil: the registry
	claims   *claimState // claim codes: the TLS pin, challenges, rate limit

	rotationsPerDay int // negative: no limit

	storing sync.WaitGroup // uploads between admitRecord and their index append

	authState // accounts, sessions, sign-in (signin.go)

	files atomicfile.Writer // writes record files; the zero Writer uses the operating system

	hub   *hub       // the owners' live streams (pages.go)
	live  *liveHub   // the cameras' live view (live.go)
	retMu sync.Mutex // serialises retention.json's read-modify-write

	mu       sync.Mutex // guards everything below
	closed   bool
	devLocks map[string]*deviceLock // upload locks of the devices uploading now
	index    indexHandle
	indexLen int64
	records  []*indexEntry        // in index order (arrival order)
	byKey    map[string]int       // recordKey → position in records
	maxSeq   map[string]uint64    // device → highest stored sequence
	maxSeqAt map[string]time.Time // device → when its highest stored sequence was received
	devices  []string             // devices with stored records, in order of their first record
	byDevice map[string][]int     // device → positions of its records in records, ascending
	stats    Stats
	nDeleted int // records marked deleted (retention.go)
	// mixLogged holds the (device, claimed owner) pairs whose mix-up was
	// logged, so a faulty lookup does not flood the log; bounded by
	// maxMixLogged, beyond which mix-ups are only counted.
	mixLogged map[[2]string]struct{}
}

// maxMixLogged bounds Server.mixLogged.
const maxMixLogged = 10000

// Open opens (creating if needed) the data directory in opts.Dir and loads the
// index. A torn last index line, left by a crash during an append that was
// never acknowledged, is logged and cut off; any other bad line is an error,
// since the replay check depends on every stored sequence number.
func Open(opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("receiver: no data directory")
	}
	s := &Server{
		dir:      opts.Dir,
		log:      opts.Logger,
		events:   opts.Events,
		maxBody:  opts.MaxBody,
		minRate:  opts.MinUploadRate,
		grace:    opts.UploadGrace,
		clk:      clock.Or(opts.Clock),
		byKey:    map[string]int{},
		maxSeq:   map[string]uint64{},
		maxSeqAt: map[string]time.Time{},
		stats:    Stats{Rejected: map[string]uint64{}},
		regs:     newRegistryReader(opts.Dir),
		owners:   opts.OwnerLookup,

		rotationsPerDay: opts.RotationsPerDay,

		byDevice:  map[string][]int{},
		devLocks:  map[string]*deviceLock{},
		mixLogged: map[[2]string]struct{}{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.events == nil {
		s.events = io.Discard
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBody
	}
	if s.minRate == 0 {
		s.minRate = DefaultMinUploadRate
	}
	if s.grace <= 0 {
		s.grace = DefaultUploadGrace
	}
	if s.rotationsPerDay == 0 {
		s.rotationsPerDay = DefaultRotationsPerDay
	}
	budget := opts.BodyBudget
	if budget == 0 {
		budget = DefaultBodyBudget
	}
	if budget > 0 && budget < s.maxBody {
		return nil, fmt.Errorf("receiver: body budget (%d bytes) is below the largest upload (MaxBody %d): such an upload could never be read", budget, s.maxBody)
	}
	perAddr := opts.BodyBudgetPerAddr
	if perAddr == 0 && budget > 0 {
		perAddr = max(budget/4, s.maxBody)
	}
	if perAddr > 0 && perAddr < s.maxBody {
		return nil, fmt.Errorf("receiver: body budget per address (%d bytes) is below the largest upload (MaxBody %d): such an upload could never be read", perAddr, s.maxBody)
	}
	s.bodies = newByteBudget(budget, perAddr)
	q := opts.Quota.withDefaults()
	if err := q.check(s.maxBody); err != nil {
		return nil, err
	}
	s.quotas = newQuotas(q)
	n := opts.MaxInFlight
	if n <= 0 {
		n = DefaultMaxInFlight
	}
	s.inflight = make(chan struct{}, n)
	tmpl, err := template.New("page").Parse(pageTemplate)
	if err != nil {
		return nil, fmt.Errorf("receiver: page template: %w", err)
	}
	s.tmpl = tmpl
	if err := s.parsePages(); err != nil {
		return nil, err
	}
	s.hub = newHub(opts.MaxStreams, opts.MaxStreamsPerOwner, opts.StreamLifetime)
	if s.live, err = newLiveHub(opts.Live, s.clk); err != nil {
		return nil, err
	}
	if s.live.turn, err = s.live.startTURN(opts.Live.TURN, s.log); err != nil {
		return nil, err
	}
	if s.claims, err = newClaimState(opts); err != nil {
		return nil, err
	}

	if err := mkdirDurable(s.dir); err != nil {
		return nil, err
	}
	unlock, err := lockFile(filepath.Join(s.dir, serverLock), false)
	if errors.Is(err, errLocked) {
		return nil, fmt.Errorf("receiver: %s is in use by another receiver: %w", s.dir, err)
	}
	if err != nil {
		return nil, err
	}
	s.unlock = unlock
	if err := s.openAuth(opts); err != nil {
		unlock()
		return nil, err
	}
	if err := s.loadIndex(); err != nil {
		unlock()
		return nil, err
	}
	if err := s.loadDeletions(); err != nil {
		s.index.Close()
		unlock()
		return nil, err
	}
	// The registry must be readable before any upload depends on it.
	if _, err := s.regs.read(); err != nil {
		s.index.Close()
		unlock()
		return nil, err
	}
	s.log.Info("receiver: store opened", "dir", s.dir, "records", len(s.records), "devices", len(s.maxSeq))
	return s, nil
}

func (s *Server) loadIndex() error {
	path := filepath.Join(s.dir, indexFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("receiver: open index: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("receiver: read index: %w", err)
	}
	pi := parseIndex(data)
	for _, l := range pi.lines {
		if l.err != nil {
			f.Close()
			return fmt.Errorf("receiver: index %s line %d is corrupt (%v): the replay check needs every line; repair or remove it (keyframe-receiver verify names the records)", path, l.n, l.err)
		}
		s.addRecord(l.entry)
		if now := s.clk.Now(); now.Sub(l.entry.ReceivedAt) < quotaDay {
			// The quota windows go on across a restart, as near as the
			// index tells: it has the media's sizes, not the envelope's.
			var size int64
			for _, m := range l.entry.Media {
				size += int64(min(m.Size, math.MaxInt32))
			}
			s.quotas.add(l.entry.Device, size, l.entry.ReceivedAt)
		}
	}
	if pi.torn != nil {
		s.log.Warn("receiver: ignoring torn last index line (an append interrupted by a crash, never acknowledged)", "index", path, "err", pi.torn)
		if err := f.Truncate(pi.goodLen); err != nil {
			f.Close()
			return fmt.Errorf("receiver: cut torn index line: %w", err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("receiver: fsync index: %w", err)
		}
	}
	if _, err := f.Seek(pi.goodLen, io.SeekStart); err != nil {
		f.Close()
		return fmt.Errorf("receiver: seek index: %w", err)
	}
	if err := f.Sync(); err != nil { // a newly created index: make its entry durable too
		f.Close()
		return fmt.Errorf("receiver: fsync index: %w", err)
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		f.Close()
		return fmt.Errorf("receiver: %w", err)
	}
	s.index, s.indexLen = f, pi.goodLen
	return nil
}

// addRecord adds a stored record to the in-memory view. Callers hold mu (or
// own s exclusively).
func (s *Server) addRecord(e *indexEntry) {
	pos := len(s.records)
	s.byKey[e.key()] = pos
	s.records = append(s.records, e)
	if _, ok := s.byDevice[e.Device]; !ok {
		s.devices = append(s.devices, e.Device)
	}
	s.byDevice[e.Device] = append(s.byDevice[e.Device], pos)
	if max, ok := s.maxSeq[e.Device]; !ok || e.Seq > max {
		s.maxSeq[e.Device] = e.Seq
		s.maxSeqAt[e.Device] = e.ReceivedAt
	}
}

// Close closes the index and releases the data directory. Uploads arriving
// after Close get 503.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.live.shutdown() // the WebRTC relay too
	// Uploads writing their files now find the server closed and append
	// nothing; wait for them before letting the directory go.
	s.storing.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.index.Close()
	s.unlock()
	if err != nil {
		return fmt.Errorf("receiver: close index: %w", err)
	}
	return nil
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Rejected = make(map[string]uint64, len(s.stats.Rejected))
	for k, v := range s.stats.Rejected {
		st.Rejected[k] = v
	}
	st.Records = len(s.records) - s.nDeleted
	st.Live = s.LiveStats()
	return st
}

// A rejection is the error of an upload refused: the status the upload API
// answers, a Reason* constant and a one-line message.
type rejection struct {
	status     int
	reason     string // a Reason* constant
	msg        string
	retryAfter time.Duration // for a 429 or 503: when to retry; 0: 1 s
	unread     bool          // the body was not read to its end: close the connection
}

func (r *rejection) Error() string {
	return fmt.Sprintf("receiver: upload refused (%d %s): %s", r.status, r.reason, r.msg)
}

func reject(status int, reason, format string, args ...any) *rejection {
	return &rejection{status: status, reason: reason, msg: fmt.Sprintf(format, args...)}
}

// asRejection returns the rejection err carries. Every error of ingest is
// one; anything else would be answered as an internal failure.
func asRejection(err error) *rejection {
	var rej *rejection
	if errors.As(err, &rej) {
		return rej
	}
	return reject(http.StatusServiceUnavailable, ReasonInternal, "internal error, retry later")
}

// classify maps a provenance verification error to a rejection.
func classify(err error) error {
	msg := oneLine(err.Error())
	switch {
	case errors.Is(err, provenance.ErrMedia):
		return reject(http.StatusUnprocessableEntity, ReasonMedia, "%s", msg)
	case errors.Is(err, provenance.ErrSignature), errors.Is(err, provenance.ErrKey):
		return reject(http.StatusForbidden, ReasonSignature, "%s", msg)
	case errors.Is(err, provenance.ErrDeviceID):
		return reject(http.StatusForbidden, ReasonDeviceID, "%s", msg)
	}
	return reject(http.StatusBadRequest, ReasonMalformed, "%s", msg)
}

func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	// The body first, under its size, rate and memory bounds, and only then
	// a slot: a slow client holds a connection, never a slot.
	key := sourcePrefix(r.RemoteAddr)
	body, held, err := s.readBody(w, r, key)
	defer s.bodies.give(key, held)
	var res IngestResult
	if err == nil {
		c := Claim{Event: r.PathValue("event"), Kind: r.PathValue("kind"), CheckEventKind: true}
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
			c.ClientCert = r.TLS.VerifiedChains[0][0]
		}
		select {
		case s.inflight <- struct{}{}:
			res, err = s.ingest(body, c)
			<-s.inflight
		default:
			err = reject(http.StatusServiceUnavailable, ReasonOverloaded, "overloaded: too many uploads at once, retry later")
		}
	}
	if err != nil {
		rej := asRejection(err)
		s.count(rej.reason)
		s.log.Info("receiver: upload rejected", "status", rej.status, "reason", rej.reason, "detail", rej.msg,
			"path", r.URL.Path, "remote", r.RemoteAddr)
		if rej.status == http.StatusServiceUnavailable || rej.status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(rej.retryAfter/time.Second))))
		}
		if rej.status == http.StatusRequestTimeout || rej.unread {
			w.Header().Set("Connection", "close")
		}
		writeLine(w, rej.status, rej.msg)
		return
	}
	writeLine(w, res.Status, res.Message)
}

// bodyChunk is the first buffer of a body of unknown length, and the size
// of each read.
const bodyChunk = 32 << 10

// readBody reads an upload's body: at most maxBody bytes (413 beyond), and
// after grace at least minRate bytes a second on average since it began,
// and never a pause longer than grace between reads (408 when slower: the
// connection's read deadline moves on as bytes arrive; without the pause
// bound a client that sent 4 MB at once could then hold its share of the
// body budget for 8 minutes). The deadline is the network's, so it runs on
// the system clock. Its buffer is taken from the body budget first, in all
// and of the source address key (503 when it does not fit): a body of known
// length in one exact allocation, one of unknown length as it grows. held is what was taken, to give back when the upload
// is answered (also on an error).
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, key netip.Prefix) (body []byte, held int64, err error) {
	if r.ContentLength > s.maxBody {
		return nil, 0, reject(http.StatusRequestEntityTooLarge, ReasonTooLarge, "body of %d bytes is over the limit of %d", r.ContentLength, s.maxBody)
	}
	known := r.ContentLength >= 0
	size := r.ContentLength
	if !known {
		size = min(bodyChunk, s.maxBody)
	}
	if !s.bodies.take(key, size) {
		return nil, 0, s.overBudget()
	}
	held = size
	body = make([]byte, 0, size)

	rc := http.NewResponseController(w)
	start := time.Now()
	deadline := func(n int) time.Time {
		avg := start.Add(s.grace + time.Duration(float64(n)/float64(s.minRate)*float64(time.Second)))
		if pause := time.Now().Add(s.grace); pause.Before(avg) {
			return pause
		}
		return avg
	}
	paced := s.minRate > 0 && rc.SetReadDeadline(deadline(0)) == nil
	lr := io.LimitReader(r.Body, s.maxBody+1)
	var one [1]byte
	for {
		var n int
		var err error
		switch {
		case len(body) < cap(body):
			n, err = lr.Read(body[len(body):min(cap(body), len(body)+bodyChunk)])
			body = body[:len(body)+n]
		case known || int64(cap(body)) >= s.maxBody:
			// Full: only the end of the body may come now.
			n, err = lr.Read(one[:])
			if n > 0 {
				return nil, held, reject(http.StatusRequestEntityTooLarge, ReasonTooLarge, "body is over its length or the limit of %d bytes", s.maxBody)
			}
		default:
			grow := min(2*int64(cap(body)), s.maxBody) - int64(cap(body))
			if !s.bodies.take(key, grow) {
				return nil, held, s.overBudget()
			}
			held += grow
			body = append(make([]byte, 0, int64(cap(body))+grow), body...)
			continue
		}
		if paced && n > 0 {
			rc.SetReadDeadline(deadline(len(body)))
		}
		if err == io.EOF {
			break
		}
		if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
			return nil, held, reject(http.StatusRequestTimeout, ReasonSlowBody, "body arrived slower than %d bytes a second, or paused longer than %s, retry", s.minRate, s.grace)
		}
		if err != nil {
			return nil, held, reject(http.StatusBadRequest, ReasonMalformed, "read body: %s", oneLine(err.Error()))
		}
	}
	if int64(len(body)) > s.maxBody {
		return nil, held, reject(http.StatusRequestEntityTooLarge, ReasonTooLarge, "body is over the limit of %d bytes", s.maxBody)
	}
	if paced {
		// Verification is not the client's time; a refused body keeps
		// its deadline, so nothing more is read from a slow client.
		rc.SetReadDeadline(time.Time{})
	}
	return body, held, nil
}

// overBudget is the refusal of a body that does not fit the body budget:
// 503, the body left unread (the connection is closed).
func (s *Server) overBudget() error {
	rej := reject(http.StatusServiceUnavailable, ReasonOverloaded, "overloaded: too many upload bodies in progress, retry later")
	rej.unread = true
	return rej
}

// Claim is what the route a bundle came by says about it (an HTTP path, an
// MQTT topic). Ingest checks each claim against the verified signature and
// payload; an empty Device is not checked, event and kind only when
// CheckEventKind is set.
type Claim struct {
	Device         string
	Event, Kind    string
	CheckEventKind bool
	// ClientCert is the verified client certificate the record came with
	// (mutual TLS; the HTTP upload API sets it): it must be for the
	// record's signing key, or for a rotate record the key it rotates to
	// (403 client_cert otherwise). nil: not checked.
	ClientCert *x509.Certificate
}

// IngestResult is the outcome of Ingest: Status is the HTTP status the
// upload API would have answered (201 stored, 200 identical re-send, 4xx/503
// refused), Reason a Reason* constant when refused, Message a one-line text,
// RetryAfter (for a 429 or 503) when the same record may be sent again.
type IngestResult struct {
	Status     int
	Reason     string
	Message    string
	RetryAfter time.Duration
}

// Stored reports whether the record is now stored (new or an identical
// re-send).
func (r IngestResult) Stored() bool {
	return r.Status == http.StatusOK || r.Status == http.StatusCreated
}

// Ingest verifies and stores one bundle that arrived by another route than
// the HTTP upload API (MQTT), with the same rules, counters and log lines.
func (s *Server) Ingest(bundle []byte, c Claim) IngestResult {
	res, err := s.ingest(bundle, c)
	if err != nil {
		rej := asRejection(err)
		s.count(rej.reason)
		s.log.Info("receiver: upload rejected", "status", rej.status, "reason", rej.reason, "detail", rej.msg,
			"device_claimed", clip(c.Device), "event_claimed", clip(c.Event))
		res := IngestResult{Status: rej.status, Reason: rej.reason, Message: rej.msg}
		if rej.status == http.StatusServiceUnavailable || rej.status == http.StatusTooManyRequests {
			res.RetryAfter = max(time.Second, rej.retryAfter)
		}
		return res
	}
	return res
}

// ingest verifies and stores one bundle. It returns the success status and
// message, or the refusal as a *rejection.
func (s *Server) ingest(body []byte, c Claim) (IngestResult, error) {
	if int64(len(body)) > s.maxBody {
		return IngestResult{}, reject(http.StatusRequestEntityTooLarge, ReasonTooLarge, "body is over the limit of %d bytes", s.maxBody)
	}
	b, err := provenance.UnmarshalBundle(body)
	if err != nil {
		return IngestResult{}, reject(http.StatusBadRequest, ReasonMalformed, "%s", oneLine(err.Error()))
	}
	v, err := provenance.Verify(b.Envelope, b.Media, nil)
	if err != nil {
		return IngestResult{}, classify(err)
	}
	if c.ClientCert != nil {
		if err := certifies(c.ClientCert, v); err != nil {
			return IngestResult{}, err
		}
	}
	// From here on the device is the verified signer, nothing else. The
	// registry is read now, from disk.
	reg, err := s.regs.read()
	if err != nil {
		s.log.Error("receiver: registry unreadable", "err", err)
		return IngestResult{}, reject(http.StatusServiceUnavailable, ReasonInternal, "registry unavailable, retry later")
	}
	adm, err := s.admit(reg, v)
	if err != nil {
		return IngestResult{}, err
	}
	p := v.Payload
	if c.CheckEventKind && (c.Event != p.Event || c.Kind != p.Kind) {
		return IngestResult{}, reject(http.StatusUnprocessableEntity, ReasonPath, "path says event %q kind %q, signed payload says event %q kind %q",
			clip(c.Event), clip(c.Kind), p.Event, p.Kind)
	}
	if c.Device != "" && c.Device != v.Device {
		return IngestResult{}, reject(http.StatusUnprocessableEntity, ReasonPath, "route says device %q, the signature is device %s", clip(c.Device), v.Device)
	}
	e := entryFromVerified(v, s.clk.Now())
	size := int64(len(b.Envelope))
	for _, m := range b.Media {
		size += int64(len(m))
	}

	// One upload per device at a time: its checks below stay true while its
	// files are written without holding mu, so uploads of different devices
	// write (and fsync) their files in parallel.
	unlockDevice := s.lockDevice(e.Device)
	defer unlockDevice()
	dup, err := s.admitRecord(e, v, adm, size)
	if err != nil {
		return IngestResult{}, err
	}
	if dup {
		return IngestResult{Status: http.StatusOK, Message: "already stored"}, nil
	}
	defer s.storing.Done()
	// The files first, then the index line: a record counts as stored once
	// its line is on disk.
	err = writeRecordFiles(s.files, s.dir, e, b.Envelope, b.Media)

	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && s.closed {
		return IngestResult{}, reject(http.StatusServiceUnavailable, ReasonInternal, "receiver is shutting down, retry later")
	}
	if err == nil {
		err = s.appendIndex(e)
	}
	if err != nil {
		s.log.Error("receiver: cannot store a verified record", "device", e.Device, "event", e.Event, "kind", e.Kind, "err", err)
		return IngestResult{}, reject(http.StatusServiceUnavailable, ReasonInternal, "storage failed, retry later")
	}
	s.addRecord(e)
	s.stats.Stored++
	s.hub.publish(e)
	s.quotas.add(e.Device, size, e.ReceivedAt)
	thumb := uint64(0)
	for _, m := range p.Media {
		if m.Role == provenance.RoleThumbnail {
			thumb = m.Size
			break
		}
	}
	line := fmt.Sprintf("verified event=%s kind=%s device=%s seq=%d keystore=%s thumbnail=%dB",
		e.Event, e.Kind, e.Device, e.Seq, token(e.KeyStore), thumb)
	if adm.via != "" {
		line += " via=" + adm.via
	}
	if e.NextDevice != "" {
		line += " next_device=" + e.NextDevice
	}
	if e.Source != nil {
		line += " source=" + token(e.Source.Kind)
	}
	if !e.fromCamera() && e.Kind != provenance.KindRotate {
		line += " NOT-FROM-A-CAMERA"
	}
	line += "\n"
	if _, err := io.WriteString(s.events, line); err != nil {
		s.log.Warn("receiver: cannot write event line", "err", err)
	}
	s.log.Info("receiver: stored", "device", e.Device, "event", e.Event, "kind", e.Kind, "seq", e.Seq)
	return IngestResult{Status: http.StatusCreated, Message: "stored"}, nil
}

// deviceLock serialises the uploads of one device.
type deviceLock struct {
	mu    sync.Mutex
	users int // holders and waiters; guarded by Server.mu
}

// lockDevice takes device's upload lock and returns its release.
func (s *Server) lockDevice(device string) (unlock func()) {
	s.mu.Lock()
	l := s.devLocks[device]
	if l == nil {
		l = &deviceLock{}
		s.devLocks[device] = l
	}
	l.users++
	s.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.mu.Lock()
		if l.users--; l.users == 0 {
			delete(s.devLocks, device)
		}
		s.mu.Unlock()
	}
}

// admitRecord makes the checks of a verified record of size bytes against
// the store (identical re-send, replay, conflict, sequence jump, quota) and records its admission in the
// registry if needed. With dup the record is an identical re-send, stored
// already; with an error (a *rejection) it is refused; otherwise it may be
// stored, and s.storing counts it until the caller calls Done. Callers hold
// the device's lock.
func (s *Server) admitRecord(e *indexEntry, v *provenance.Verified, adm admission, size int64) (dup bool, err error) {
	if e.Seq > MaxSeq {
		// Pairing intervals are [from, seq+1), and a device must always
		// have sequence numbers left above its highest stored one.
		return false, reject(http.StatusBadRequest, ReasonSeqRange, "seq %d is out of range (at most %d)", e.Seq, uint64(MaxSeq))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, reject(http.StatusServiceUnavailable, ReasonInternal, "receiver is shutting down, retry later")
	}
	if i, ok := s.byKey[e.key()]; ok {
		old := s.records[i]
		if old.Envelope == e.Envelope {
			s.stats.Duplicates++
			s.log.Info("receiver: identical re-send", "device", e.Device, "event", e.Event, "kind", e.Kind, "seq", e.Seq)
			return true, nil
		}
		if e.Seq <= s.maxSeq[e.Device] {
			return false, reject(http.StatusConflict, ReasonReplay, "replay: seq %d ≤ %d", e.Seq, s.maxSeq[e.Device])
		}
		return false, reject(http.StatusConflict, ReasonConflict, "event %s record %s of device %s is already stored with other content (seq %d)", e.Event, e.name(), e.Device, old.Seq)
	}
	if max, ok := s.maxSeq[e.Device]; ok && e.Seq <= max {
		if e.Kind != provenance.KindSegment {
			return false, reject(http.StatusConflict, ReasonReplay, "replay: seq %d ≤ %d", e.Seq, max)
		}
		if why := s.lateSegmentLocked(e); why != "" {
			return false, reject(http.StatusConflict, ReasonReplay, "replay: seq %d ≤ %d, and a segment arriving late must fall inside its event: %s", e.Seq, max, why)
		}
		s.log.Info("receiver: late clip segment accepted (the device sent its event's records first)",
			"device", e.Device, "event", e.Event, "seq", e.Seq, "highest_seq", max)
	} else if err := s.checkSeqJump(e); err != nil {
		return false, err
	}
	// A new record within the device's quotas: checked before anything is
	// written, so a refusal costs no fsync.
	if err := s.checkQuota(e.Device, size); err != nil {
		return false, err
	}
	// A device admitted by its certificate is recorded, and a rotation takes
	// effect, in the registry before the record is stored: if storing fails
	// the device sends it again and the registry change is a no-op then.
	if adm.record || v.Payload.Kind == provenance.KindRotate {
		if err := s.recordAdmission(v, adm); err != nil {
			return false, err
		}
	}
	s.storing.Add(1)
	return false, nil
}

// lateSegmentLocked says why the segment e, whose seq is at or below the
// highest stored for its device, is not accepted, or "" if it is. A device
// sends its start, end and rotate records ahead of clip segments waiting in
// its spool (uploader.Spool.Next), so a segment may arrive after records
// with higher seqs; it is accepted if its event's start record is stored
// (and not deleted) with a lower seq and the event's end record, if
// stored, has a higher one. Any other record below the highest stays a
// replay. A segment the device evicted leaves a gap in seq, which, like any
// gap, fails nothing. Callers hold mu.
func (s *Server) lateSegmentLocked(e *indexEntry) string {
	i, ok := s.byKey[recordKey(e.Device, e.Event, provenance.KindStart)]
	if !ok {
		return "its event's start record is not stored"
	}
	start := s.records[i]
	switch {
	case start.deleted:
		return "its event was deleted"
	case start.Seq >= e.Seq:
		return fmt.Sprintf("its event's start record has seq %d", start.Seq)
	}
	if i, ok := s.byKey[recordKey(e.Device, e.Event, provenance.KindEnd)]; ok {
		end := s.records[i]
		switch {
		case end.deleted:
			return "its event was deleted"
		case end.Seq <= e.Seq:
			return fmt.Sprintf("its event's end record has seq %d", end.Seq)
		}
	}
	return ""
}

// The sequence numbers a receiver accepts (docs/envelope.md §5.1).
const (
	// MaxSeq is the largest sequence number accepted: 2^63-1.
	MaxSeq = math.MaxInt64
	// MaxFirstSeq is the largest sequence number of a device's first
	// stored record: 2^62-1, which leaves it 2^62 more.
	MaxFirstSeq = 1<<62 - 1
	// SeqJumpBase is how far past a device's highest stored sequence
	// number a record may always go (a crash leaves a gap of one).
	SeqJumpBase = 1_000_000
	// SeqJumpPerSecond widens the jump allowed per second (receiver
	// clock) since the device's highest stored record was received.
	SeqJumpPerSecond = 1000
)

// checkSeqJump refuses e if its seq is implausibly far from the device's
// stored ones: a first record at or above 2^62 (400), or a jump past the
// highest stored seq of more than SeqJumpBase plus SeqJumpPerSecond per
// second since it was received (429, Retry-After the time until it would
// be accepted). A refused record changes nothing, so one bad record cannot
// lock the device out of the sequence numbers above its stored ones.
// Callers hold mu.
func (s *Server) checkSeqJump(e *indexEntry) error {
	last, ok := s.maxSeq[e.Device]
	if !ok {
		if e.Seq > MaxFirstSeq {
			return reject(http.StatusBadRequest, ReasonSeqRange, "seq %d is out of range for a device's first record (at most %d)", e.Seq, uint64(MaxFirstSeq))
		}
		return nil
	}
	if e.Seq-last <= SeqJumpBase {
		return nil
	}
	since := max(0, s.clk.Now().Sub(s.maxSeqAt[e.Device]))
	over := e.Seq - last - SeqJumpBase
	if allowed := uint64(since/time.Second) * SeqJumpPerSecond; over <= allowed {
		return nil
	}
	wait := maxSeqJumpRetry
	if need := (over + SeqJumpPerSecond - 1) / SeqJumpPerSecond; need < uint64(maxSeqJumpRetry/time.Second) {
		wait = time.Duration(need)*time.Second - since
	}
	rej := reject(http.StatusTooManyRequests, ReasonSeqJump, "seq %d jumps %d past the highest stored seq %d of device %s: more than %d plus %d per second since it was stored",
		e.Seq, e.Seq-last, last, e.Device, SeqJumpBase, SeqJumpPerSecond)
	rej.retryAfter = min(max(wait, time.Second), maxSeqJumpRetry)
	return rej
}

// maxSeqJumpRetry bounds the Retry-After of a refused sequence jump.
const maxSeqJumpRetry = time.Hour

// certifies refuses v unless cert is for its signing key or, for a rotate
// record, the key it rotates to (the agent presents the certificate of the
// key it signs with; during a rotation that is already the new key, while
// the rotate record is the old key's).
func certifies(cert *x509.Certificate, v *provenance.Verified) error {
	id, err := provenance.DeviceID(cert.PublicKey)
	if err == nil && (id == v.Device || v.Payload.Kind == provenance.KindRotate && id == v.NextDevice) {
		return nil
	}
	return reject(http.StatusForbidden, ReasonClientCert, "the client certificate (%s) is not for device %s, which signed the record", clip(cert.Subject.CommonName), v.Device)
}

// admission says how a verified signer was let in.
type admission struct {
	// via is ViaFleetCA and the CA's fingerprint when the signer was admitted
	// by its certificate chain, "" when by its registration.
	via string
	// record is set when the registry must record the fleet admission (the
	// device is new, or came in by another CA).
	record bool
}

// admit decides, from the registry read for this upload, whether v's signer
// may upload: a revoked device never; a device enrolled (or enrolled by a
// rotation) if the key is the enrolled one; otherwise one whose certificate
// chain verifies to a trusted fleet CA now. A retired key (rotated away)
// may not sign above its rotate record. A refusal is a *rejection.
func (s *Server) admit(reg *registry, v *provenance.Verified) (admission, error) {
	var adm admission
	d := reg.Devices[v.Device]
	switch {
	case d != nil && d.Revoked:
		return adm, reject(http.StatusForbidden, ReasonRevoked, "device revoked: %s", v.Device)
	case d != nil && !bytes.Equal(d.SPKI, v.SPKI):
		return adm, reject(http.StatusForbidden, ReasonKeyMismatch, "key does not match enrolment of device %s", v.Device)
	case d != nil && !d.byFleetCA():
		// Enrolled, or enrolled by a rotation: the registry is enough.
	case d == nil && len(v.Chain) == 0:
		return adm, reject(http.StatusForbidden, ReasonNotEnrolled, "device not enrolled: %s", v.Device)
	case len(v.Chain) == 0:
		return adm, reject(http.StatusForbidden, ReasonCertificate,
			"device %s was admitted by a fleet CA certificate and must send its certificate chain (x5chain) with every record", v.Device)
	default:
		fp, err := reg.verifyFleet(v, s.clk.Now())
		if err != nil {
			return adm, reject(http.StatusForbidden, ReasonCertificate, "device %s is not enrolled and its certificate is not accepted: %s", v.Device, oneLine(err.Error()))
		}
		adm.via = ViaFleetCA + fp
		adm.record = d == nil || d.Via != adm.via
	}
	if d != nil && d.RotatedTo != "" && v.Payload.Seq > d.RotatedSeq {
		return adm, reject(http.StatusForbidden, ReasonRotated, "key retired: device %s was rotated to device %s by its record seq %d; records after it must be signed by the new key",
			v.Device, d.RotatedTo, d.RotatedSeq)
	}
	return adm, nil
}

// recordAdmission writes to the registry what accepting v implies: a device
// admitted by a fleet CA is recorded (Via), and a rotate record enrols the
// new key, continues the old device's pairings on it and retires the old
// key. It re-reads the registry under its lock, so a revocation since admit
// still wins. A refusal is a *rejection. Callers hold mu.
func (s *Server) recordAdmission(v *provenance.Verified, adm admission) error {
	var rej error
	refuse := errors.New("refused")
	err := s.regs.update(func(r *registry) error {
		d := r.Devices[v.Device]
		if d != nil && d.Revoked {
			rej = reject(http.StatusForbidden, ReasonRevoked, "device revoked: %s", v.Device)
			return refuse
		}
		if adm.record {
			if d == nil {
				r.put(v.Device, &registration{SPKI: v.SPKI})
			}
			if d = r.Devices[v.Device]; d.Via == "" || d.byFleetCA() {
				if d.Via != adm.via {
					r.edit(v.Device).Via = adm.via
				}
			}
		}
		if r.Devices[v.Device] == nil {
			// Admitted by the registry a moment ago, gone now.
			rej = reject(http.StatusForbidden, ReasonNotEnrolled, "device not enrolled: %s", v.Device)
			return refuse
		}
		if v.Payload.Kind == provenance.KindRotate {
			rej = s.applyRotation(r, v)
			if rej != nil {
				return refuse
			}
		}
		return nil
	})
	if rej != nil {
		return rej
	}
	if err != nil {
		s.log.Error("receiver: cannot update the registry", "device", v.Device, "err", err)
		return reject(http.StatusServiceUnavailable, ReasonInternal, "registry update failed, retry later")
	}
	if adm.record {
		s.log.Info("receiver: device admitted by fleet CA certificate", "device", v.Device, "via", adm.via)
	}
	if v.Payload.Kind == provenance.KindRotate {
		s.log.Info("receiver: device key rotated", "device", v.Device, "to", v.NextDevice, "seq", v.Payload.Seq)
	}
	return nil
}

// rotationWindow is the period of the rotation rate limit.
const rotationWindow = 24 * time.Hour

// applyRotation makes the registry changes of a verified rotate record of
// v.Device (the old key): the new key is enrolled (ViaRotation), the old
// device's pairings continue on it from the record's seq (the new key
// continues the old one's sequence numbers, so the same owner owns what it
// signs next, and the old device keeps its history), and the old key is
// retired as of that seq. Applying the same record again changes nothing.
//
// A rotation may not take over anything, so it is refused when:
//   - the new key is, or ever was, in the registry (enrolled, admitted by a
//     fleet CA, rotated to, or revoked: entries are never deleted): one
//     holding a copy of a camera's key and an enrolled key of their own
//     would otherwise move the camera to their owner (403 rotation_target);
//   - a rotation is pending: the old key was already rotated to a key that
//     has not uploaded a record yet, or the old key is itself such a key, not
//     yet established by a record of its own (409 rotation_pending);
//   - the device's line of keys rotated s.rotationsPerDay times in the 24
//     hours before (receiver clock): 429 with Retry-After, which an honest
//     camera retries.
//
// A refusal is a *rejection. Callers hold mu.
func (s *Server) applyRotation(r *registry, v *provenance.Verified) error {
	seq := v.Payload.Seq
	old := r.Devices[v.Device]
	if old.RotatedTo == v.NextDevice && old.RotatedSeq == seq {
		return nil // this very record, applied before its storing failed
	}
	if old.RotatedTo != "" {
		if _, uploaded := s.maxSeq[old.RotatedTo]; !uploaded {
			return reject(http.StatusConflict, ReasonRotationPending, "device %s has a rotation pending: to device %s by its record seq %d, which has not uploaded yet",
				v.Device, old.RotatedTo, old.RotatedSeq)
		}
		return reject(http.StatusConflict, ReasonConflict, "device %s was already rotated to device %s by its record seq %d", v.Device, old.RotatedTo, old.RotatedSeq)
	}
	if prev, ok := strings.CutPrefix(old.Via, ViaRotation); ok {
		if _, uploaded := s.maxSeq[v.Device]; !uploaded {
			return reject(http.StatusConflict, ReasonRotationPending, "device %s has a rotation pending: it was rotated to from device %s and has not uploaded a record of its own yet",
				v.Device, prev)
		}
	}
	switch nd := r.Devices[v.NextDevice]; {
	case nd != nil && nd.Revoked:
		return reject(http.StatusForbidden, ReasonRevoked, "the new key's device %s is revoked", v.NextDevice)
	case nd != nil:
		return reject(http.StatusForbidden, ReasonRotationTarget, "the new key's device %s is, or was, already in the registry: a rotation must be to a fresh key", v.NextDevice)
	}
	if wait := s.rotationWait(r, v.Device); wait > 0 {
		rej := reject(http.StatusTooManyRequests, ReasonRotationLimit, "device %s rotated its key %d times in the last %s; retry in %s",
			v.Device, s.rotationsPerDay, rotationWindow, wait)
		rej.retryAfter = wait
		return rej
	}
	nd := &registration{SPKI: v.NextSPKI, Via: ViaRotation + v.Device}
	for _, p := range old.Pairings {
		if p.Until != 0 && p.Until <= seq {
			continue
		}
		p.From = max(p.From, seq)
		nd.Pairings = append(nd.Pairings, p)
	}
	r.put(v.NextDevice, nd)
	o := r.edit(v.Device)
	kept := o.Pairings[:0]
	for _, p := range o.Pairings {
		if p.From > seq {
			continue
		}
		if p.Until == 0 || p.Until > seq+1 {
			p.Until = seq + 1
		}
		kept = append(kept, p)
	}
	o.Pairings = kept
	o.RotatedTo, o.RotatedSeq, o.RotatedAtMs = v.NextDevice, seq, s.clk.Now().UnixMilli()
	return nil
}

// rotationWait returns how long device must wait before its line of keys
// (device, the key it was rotated from, and so on) may rotate again: 0 if it
// rotated fewer than s.rotationsPerDay times in the last rotationWindow.
func (s *Server) rotationWait(r *registry, device string) time.Duration {
	if s.rotationsPerDay < 0 {
		return 0
	}
	now := s.clk.Now()
	var n int
	var oldest time.Time
	cur := r.Devices[device]
	for n < s.rotationsPerDay && cur != nil {
		prev, ok := strings.CutPrefix(cur.Via, ViaRotation)
		if !ok {
			break
		}
		p := r.Devices[prev]
		if p == nil {
			break
		}
		at := time.UnixMilli(p.RotatedAtMs)
		if now.Sub(at) >= rotationWindow {
			break // older ones are older still
		}
		n, oldest, cur = n+1, at, p
	}
	if n < s.rotationsPerDay {
		return 0
	}
	wait := oldest.Add(rotationWindow).Sub(now)
	return max(wait.Round(time.Second), time.Second)
}

// appendIndex appends a record's index line and fsyncs it; its files must be
// durable already. Callers hold mu.
func (s *Server) appendIndex(e *indexEntry) error {
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("receiver: encode index line: %w", err)
	}
	line = append(line, '\n')
	if _, err := s.index.Write(line); err != nil {
		s.cutIndex()
		return fmt.Errorf("receiver: append index: %w", err)
	}
	if err := s.index.Sync(); err != nil {
		s.cutIndex()
		return fmt.Errorf("receiver: fsync index: %w", err)
	}
	s.indexLen += int64(len(line))
	return nil
}

// cutIndex removes a partly written line after a failed append, so the next
// append starts on a line of its own.
func (s *Server) cutIndex() {
	if err := s.index.Truncate(s.indexLen); err != nil {
		s.log.Error("receiver: cannot cut a failed index append; the next Open will drop the torn line", "err", err)
	}
	if _, err := s.index.Seek(s.indexLen, io.SeekStart); err != nil {
		s.log.Error("receiver: cannot seek the index", "err", err)
	}
}

func (s *Server) count(reason string) {
	s.mu.Lock()
	s.stats.Rejected[reason]++
	s.mu.Unlock()
}

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	st := s.Stats()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(st); err != nil {
		s.log.Warn("receiver: write stats", "err", err)
	}
}

// lookup returns the stored record for a device's event and kind.
func (s *Server) lookup(device, event, kind string) *indexEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.byKey[recordKey(device, event, kind)]
	if !ok || s.records[i].deleted {
		return nil
	}
	return s.records[i]
}

func writeLine(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	io.WriteString(w, oneLine(msg)+"\n")
}

// oneLine makes s fit on one line of a reply or log.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// clip bounds an untrusted string for a reply or log line.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strings.ToValidUTF8(oneLine(s), "?")
}

// token makes a signed but free-form payload field (the key store name) safe
// for a "key=value" line: anything but [A-Za-z0-9._-] becomes '?', so it can
// not forge another field.
func token(s string) string {
	if s == "" {
		return "-"
	}
	if len(s) > 32 {
		s = s[:32]
	}
	return strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' {
			return c
		}
		return '?'
	}, s)
}

// IsLoopback reports whether a listen address (host:port) binds only to the
// loopback interface: a loopback IP or "localhost" (netaddr.IsLoopbackHost,
// the test the uploader applies to its URLs). An empty host (":8080") binds
// every interface and is not loopback.
func IsLoopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("receiver: listen address %q: %w", addr, err)
	}
	return netaddr.IsLoopbackHost(host), nil
}
