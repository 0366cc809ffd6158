// Package logthrottle rate-limits repeated log lines, so that whoever can
// make the agent or the receiver log (a burst of MQTT commands, a flood of
// refused uploads) cannot fill a camera's flash with copies of one line.
//
// A Handler wraps another slog.Handler. Records are keyed by level and
// message only: their attrs are not part of the key, because they often hold
// what an outsider chose (a command name, a topic, an address), and a key an
// outsider can vary is a limit an outsider can step around. Every level is
// limited alike: an Info line ("command handled") can be triggered as often
// as a Warn.
//
// Per key, Burst records pass in a Window (a fixed window opened by the
// key's first record); the later ones in that window are counted, not
// written. When the window ends, one line with the same level and message
// and the attrs suppressed=N and window=W says how many were left out; a
// Flush (at shutdown) writes the counts still pending. Nothing is dropped
// without being counted.
//
// The key table is bounded: it holds at most MaxKeys keys, and a key leaves
// it when its window has ended (after its count is written). When it is
// full of keys whose windows are still open, records with a new key share
// one overflow key, whose count is written as "logthrottle: lines of other
// messages suppressed". So at most (MaxKeys+1)×(Burst+1) lines are written
// per window, whatever is logged. Stats counts what passed, what was
// suppressed and what overflowed.
package logthrottle

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/keyframe-cam/keyframe/internal/clock"
)

// Defaults of Config.
const (
	DefaultBurst   = 5
	DefaultWindow  = time.Minute
	DefaultMaxKeys = 128
)

// OverflowMessage is the message of the count written for records that
// went to the overflow key (the table was full).
const OverflowMessage = "logthrottle: lines of other messages suppressed (too many distinct messages)"

// Config sets the limits; zero fields take the defaults.
type Config struct {
	// Burst is how many records of one key pass in a window.
	Burst int
	// Window is the length of a key's window.
	Window time.Duration
	// MaxKeys bounds the key table.
	MaxKeys int
	// Clock tells the time and waits for a window's end (nil: the system
	// clock).
	Clock clock.Clock
}

// Stats are the counts since New.
type Stats struct {
	// Passed records were written; Suppressed ones were counted instead.
	Passed, Suppressed uint64
	// Summaries is the number of suppressed=N lines written.
	Summaries uint64
	// Overflowed records (passed or suppressed) went to the overflow key
	// because the table was full.
	Overflowed uint64
	// Keys is the number of keys in the table now.
	Keys int
}

// Handler is a rate-limiting slog.Handler. It is safe for concurrent use;
// the handlers WithAttrs and WithGroup return share its limits.
type Handler struct {
	inner slog.Handler
	s     *state
}

// New returns a Handler writing to inner within cfg's limits.
func New(inner slog.Handler, cfg Config) *Handler {
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	return &Handler{inner: inner, s: &state{cfg: cfg, clk: clock.Or(cfg.Clock), keys: make(map[key]*entry)}}
}

// NewText returns the logger of keyframe's long-running commands (the
// agent and the receiver): text lines on w from level up, within the
// default limits. Call the Handler's Flush before exiting.
func NewText(w io.Writer, level slog.Leveler) (*slog.Logger, *Handler) {
	h := New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}), Config{})
	return slog.New(h), h
}

// Enabled reports whether the wrapped handler handles level.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.inner.Enabled(ctx, level)
}

// WithAttrs returns a Handler whose records carry as, sharing h's limits.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &Handler{inner: h.inner.WithAttrs(as), s: h.s}
}

// WithGroup returns a Handler whose attrs are in group name, sharing h's
// limits.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{inner: h.inner.WithGroup(name), s: h.s}
}

// Handle writes r, or counts it if its key has used its burst in this
// window. It first writes the count of the key's previous window if that
// is still pending.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	pass, sums := h.s.admit(h.inner, r.Level, r.Message)
	err := h.s.write(ctx, sums)
	if pass {
		err = errors.Join(err, h.inner.Handle(ctx, r))
	}
	return err
}

// Flush writes the counts still pending, without waiting for their
// windows to end. The windows stay open: their bursts stay used.
func (h *Handler) Flush() error {
	s := h.s
	s.mu.Lock()
	var sums []summary
	for k, e := range s.keys {
		sums = e.take(sums, k)
	}
	if s.over != nil {
		sums = s.over.take(sums, key{s.over.level, OverflowMessage})
	}
	s.mu.Unlock()
	return s.write(context.Background(), sums)
}

// Stats returns the counts since New.
func (h *Handler) Stats() Stats {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Keys = len(s.keys)
	return st
}

type key struct {
	level slog.Level
	msg   string
}

// entry is one key's window.
type entry struct {
	start      time.Time
	n          int // records in this window
	suppressed uint64
	level      slog.Level   // the overflow key's: the highest suppressed
	h          slog.Handler // the last suppressed record's, to write the count through
}

// take appends e's pending count, as key k's, to sums and clears it.
func (e *entry) take(sums []summary, k key) []summary {
	if e.suppressed == 0 {
		return sums
	}
	sums = append(sums, summary{h: e.h, key: k, n: e.suppressed})
	e.suppressed, e.h = 0, nil
	return sums
}

// summary is a count to write.
type summary struct {
	h   slog.Handler
	key key
	n   uint64
}

type state struct {
	cfg Config
	clk clock.Clock

	mu    sync.Mutex
	keys  map[key]*entry
	over  *entry // the overflow key's window; nil until used
	armed bool   // a goroutine waits to write the counts of ended windows
	stats Stats
}

// admit decides whether a record of (level, msg) written through inner
// passes, and returns the counts to write first.
func (s *state) admit(inner slog.Handler, level slog.Level, msg string) (bool, []summary) {
	now := s.clk.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var sums []summary
	k := key{level, msg}
	e := s.keys[k]
	if e == nil && len(s.keys) >= s.cfg.MaxKeys {
		sums = s.expire(sums, now)
	}
	if e == nil && len(s.keys) < s.cfg.MaxKeys {
		e = &entry{start: now}
		s.keys[k] = e
	}
	if e == nil {
		s.stats.Overflowed++
		if s.over == nil {
			s.over = &entry{start: now}
		}
		e, k = s.over, key{s.over.level, OverflowMessage}
	}
	if s.ended(e, now) {
		sums = e.take(sums, k)
		*e = entry{start: now}
	}
	e.n++
	if e.n <= s.cfg.Burst {
		s.stats.Passed++
		return true, sums
	}
	s.stats.Suppressed++
	e.suppressed++
	e.h = inner
	if e == s.over && (e.suppressed == 1 || level > e.level) {
		e.level = level
	}
	if !s.armed {
		s.armed = true
		go s.wait(e.start.Add(s.cfg.Window).Sub(now))
	}
	return false, sums
}

func (s *state) ended(e *entry, now time.Time) bool {
	return !now.Before(e.start.Add(s.cfg.Window))
}

// expire takes the counts of the windows that have ended and removes their
// keys.
func (s *state) expire(sums []summary, now time.Time) []summary {
	for k, e := range s.keys {
		if s.ended(e, now) {
			sums = e.take(sums, k)
			delete(s.keys, k)
		}
	}
	if s.over != nil && s.ended(s.over, now) {
		sums = s.over.take(sums, key{s.over.level, OverflowMessage})
		s.over = nil
	}
	return sums
}

// wait writes the counts of the windows that have ended after d, and goes
// on while counts are pending.
func (s *state) wait(d time.Duration) {
	for {
		<-s.clk.After(d)
		now := s.clk.Now()
		s.mu.Lock()
		sums := s.expire(nil, now)
		next, pending := s.nextEnd()
		s.armed = pending
		s.mu.Unlock()
		_ = s.write(context.Background(), sums) // a logger has nowhere to report its own failure
		if !pending {
			return
		}
		d = next.Sub(now)
	}
}

// nextEnd returns the earliest end of a window with a count pending.
func (s *state) nextEnd() (time.Time, bool) {
	var next time.Time
	pending := false
	check := func(e *entry) {
		if end := e.start.Add(s.cfg.Window); e.suppressed > 0 && (!pending || end.Before(next)) {
			next, pending = end, true
		}
	}
	for _, e := range s.keys {
		check(e)
	}
	if s.over != nil {
		check(s.over)
	}
	return next, pending
}

// write writes each count as a line of its key's level and message with
// suppressed=N and window=W.
func (s *state) write(ctx context.Context, sums []summary) error {
	if len(sums) == 0 {
		return nil
	}
	var err error
	now := s.clk.Now()
	for _, sum := range sums {
		r := slog.NewRecord(now, sum.key.level, sum.key.msg, 0)
		r.AddAttrs(slog.Uint64("suppressed", sum.n), slog.Duration("window", s.cfg.Window))
		err = errors.Join(err, sum.h.Handle(ctx, r))
	}
	s.mu.Lock()
	s.stats.Summaries += uint64(len(sums))
	s.mu.Unlock()
	return err
}
