package mqttlink

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/keyframe-cam/keyframe/internal/backoff"
	"github.com/keyframe-cam/keyframe/internal/clock"
)

// A Session is one live connection kept up by a Redialer.
type Session interface {
	// Lost yields a value (the reason, may be nil) or is closed when the
	// connection ended without Close being called.
	Lost() <-chan error
	// Close ends the connection on purpose. The Redialer calls it exactly
	// once: after Lost yielded, or when Run's context is done.
	Close()
}

// DialFunc makes one connection attempt. It returns a Session only once the
// connection is fully usable (connected, subscribed, announced); an error
// otherwise, having released whatever it opened.
type DialFunc func(ctx context.Context) (Session, error)

// Schedule shapes a reconnect schedule. Zero or negative durations take
// the defaults (DefaultBackoffBase, DefaultBackoffCap, DefaultRetryWindow,
// DefaultQuickRetry, DefaultStableAfter).
type Schedule struct {
	// BackoffBase and BackoffCap shape the full-jitter backoff between
	// consecutive failed attempts: uniform over [0, min(Cap, Base·2^n)].
	BackoffBase, BackoffCap time.Duration
	// RetryWindow and QuickRetry shape the retries as in the uploader's
	// Config: the first retry after a stable period (or at start) waits
	// uniform(0, QuickRetry); every later one within the outage waits
	// uniform(0, max(RetryWindow, the backoff ceiling)), so clients that
	// lost the broker together do not come back together.
	RetryWindow, QuickRetry time.Duration
	// StableAfter: the backoff's failure count is reset only when a
	// connection that lasted at least this long is lost, so a broker that
	// accepts and drops at once is retried ever more slowly.
	StableAfter time.Duration
}

// RedialConfig configures a Redialer.
type RedialConfig struct {
	// Name says what is dialled, for log lines ("mqtt broker host:8883").
	Name string
	Schedule
	Clock  clock.Clock  // nil: the system clock
	Rand   backoff.Rand // nil: a randomly seeded generator
	Logger *slog.Logger // nil: discard
}

// RedialStats are a Redialer's counters since NewRedialer.
type RedialStats struct {
	Connected bool   // a session is live
	Connects  int    // successful dials
	Losses    int    // live sessions lost (not counting Close at shutdown)
	Failures  int    // failed dials
	Backoff   int    // the backoff's current failure count
	LastError string // the last dial failure or loss, "" if none yet
}

// A Redialer keeps one connection up with its own reconnect policy: dial;
// when the connection is lost, retry once quickly (if it had been stable),
// then with full-jitter backoff never below the outage window until a dial
// succeeds. It logs a loss once, each
// distinct dial error once per outage, and the recovery once. It exists
// because paho's own reconnect has no jitter (a fleet would retry in
// lock-step); both the device's MQTT transport and the receiver's MQTT ingest
// use it.
type Redialer struct {
	cfg RedialConfig
	clk clock.Clock
	log *slog.Logger
	bo  backoff.Backoff

	mu    sync.Mutex
	stats RedialStats
}

// NewRedialer returns a Redialer with cfg's defaults filled in.
func NewRedialer(cfg RedialConfig) *Redialer {
	def := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&cfg.BackoffBase, DefaultBackoffBase)
	def(&cfg.BackoffCap, DefaultBackoffCap)
	def(&cfg.RetryWindow, DefaultRetryWindow)
	def(&cfg.QuickRetry, DefaultQuickRetry)
	def(&cfg.StableAfter, DefaultStableAfter)
	r := &Redialer{cfg: cfg, clk: clock.Or(cfg.Clock), log: cfg.Logger}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.cfg.Name == "" {
		r.cfg.Name = "peer"
	}
	r.bo = backoff.Backoff{Base: cfg.BackoffBase, Cap: cfg.BackoffCap, Rand: backoff.OrRandom(cfg.Rand)}
	return r
}

// Stats returns the counters.
func (r *Redialer) Stats() RedialStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// errClosed is the loss reason when a session's Lost channel is closed
// without a value.
var errClosed = errors.New("connection closed")

// Run dials and redials until ctx is done, then closes the live session (if
// any) and returns ctx's error. The first attempt is made at once. Run must
// not be called twice at once.
func (r *Redialer) Run(ctx context.Context, dial DialFunc) error {
	up := true // "the peer was reachable": the first failure starts an outage
	first := true
	attempts := 0 // failed attempts in this outage
	var downSince time.Time
	lastErr := ""
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		s, err := dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			attempts++
			if up {
				up = false
				downSince = r.clk.Now()
			}
			d := r.delay()
			msg := err.Error()
			r.count(func(st *RedialStats) {
				st.Failures++
				st.Backoff = r.bo.Failures()
				st.LastError = msg
			})
			if msg != lastErr {
				lastErr = msg
				r.log.Warn("mqttlink: cannot connect to "+r.cfg.Name+"; will retry",
					"err", err, "attempts", attempts, "retry_in", d)
			}
			if err := r.sleep(ctx, d); err != nil {
				return err
			}
			continue
		}

		connectedAt := r.clk.Now()
		switch {
		case !up:
			r.log.Info("mqttlink: connected to "+r.cfg.Name+" again",
				"failed_attempts", attempts, "down_for", connectedAt.Sub(downSince))
		case first:
			r.log.Info("mqttlink: connected to " + r.cfg.Name)
		}
		up, first, attempts, lastErr = true, false, 0, ""
		r.count(func(st *RedialStats) {
			st.Connected = true
			st.Connects++
		})

		var lost error
		select {
		case <-ctx.Done():
			s.Close()
			r.count(func(st *RedialStats) { st.Connected = false })
			return ctx.Err()
		case err, ok := <-s.Lost():
			lost = err
			if !ok || lost == nil {
				lost = errClosed
			}
		}
		s.Close()
		now := r.clk.Now()
		if now.Sub(connectedAt) >= r.cfg.StableAfter {
			r.bo.Reset()
		}
		up = false
		downSince = now
		d := r.delay()
		msg := lost.Error()
		r.count(func(st *RedialStats) {
			st.Connected = false
			st.Losses++
			st.Backoff = r.bo.Failures()
			st.LastError = msg
		})
		lastErr = msg
		r.log.Warn("mqttlink: connection to "+r.cfg.Name+" lost; will reconnect",
			"err", lost, "connected_for", now.Sub(connectedAt), "retry_in", d)
		if err := r.sleep(ctx, d); err != nil {
			return err
		}
	}
}

// delay is the wait before the next attempt: uniform over [0, QuickRetry]
// for the first failure after a stable connection (or at start), then
// uniform over [0, max(RetryWindow, the backoff's current ceiling)]. It
// counts one failure, so a connection that keeps dropping backs off further
// each time.
func (r *Redialer) delay() time.Duration {
	if r.bo.Failures() == 0 {
		return r.bo.NextWithin(r.cfg.QuickRetry)
	}
	return r.bo.NextAtLeast(r.cfg.RetryWindow)
}

func (r *Redialer) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-r.clk.After(d):
		return nil
	}
}

func (r *Redialer) count(f func(*RedialStats)) {
	r.mu.Lock()
	f(&r.stats)
	r.mu.Unlock()
}
