package uploader

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/keyframe-cam/keyframe/internal/backoff"
	"github.com/keyframe-cam/keyframe/internal/clock"
	"github.com/keyframe-cam/keyframe/internal/mqttlink"
)

// Config tunes the upload loop. Zero or negative fields take their defaults.
type Config struct {
	// BackoffBase and BackoffCap shape the full-jitter backoff: the delay
	// after the n-th consecutive failure is uniform over
	// [0, min(BackoffCap, BackoffBase·2^n)]. Defaults 1s and 5m.
	BackoffBase, BackoffCap time.Duration
	// RetryWindow spreads a fleet's return after an outage: while the
	// receiver cannot be reached or answers with a failure, every retry
	// waits uniform(0, max(RetryWindow, min(BackoffCap, BackoffBase·2^n))),
	// so devices that lost the receiver together reach it again spread over
	// at least this window, however long the outage lasted. Default 2m.
	RetryWindow time.Duration
	// QuickRetry: the first failure after a stable period that got no
	// answer at all (a refused or dropped connection, a timeout) is retried
	// once after uniform(0, QuickRetry) before the outage schedule starts,
	// so a lost packet or a Wi-Fi blip costs seconds, not the window. A
	// receiver's failure answer (5xx, 429) goes straight to the window.
	// Default 2s.
	QuickRetry time.Duration
	// RetryAfterCap caps a server's Retry-After. The capped value is used
	// instead of the jittered delay when it is larger. Default 10m.
	RetryAfterCap time.Duration
	// StableAfter: the backoff's failure count resets only once the receiver
	// has been reachable, with no failure, for this long since the first
	// success after the last failure. Default 60s.
	StableAfter time.Duration
	// Retry, if not nil, replaces each retry delay the schedule drew (the
	// random first retry or the full-jitter backoff) with what it returns
	// for it; a larger Retry-After is still honoured. nil keeps the
	// schedule, as a device should: the hook is for load tests that compare
	// the schedule with another (package storm's naive control client).
	Retry func(scheduled time.Duration) time.Duration
	// Rate is the most records sent per second (a token bucket of one
	// token, on the Clock), so a backlog after an outage drains gently.
	// Default 5. Above 1e9 there is no limit.
	Rate float64
	// MaxRate caps the upload bandwidth in bytes per second of record data
	// (a token bucket on the Clock holding one second's worth): a record
	// of n bytes waits until the bucket has paid for it, so at most
	// MaxRate·(t+1s) bytes go out in any t, whatever the transport. A record
	// still leaves at the link's speed once paid for. 0 = no cap.
	MaxRate int64
	// Delivered, if not nil, is called (from Run's goroutine) after a
	// record was acknowledged by the receiver and removed from the spool.
	// It must not block.
	Delivered func(Entry)
}

// Defaults of Config. The backoff's are those of the MQTT links' reconnect
// schedule.
const (
	DefaultBackoffBase   = mqttlink.DefaultBackoffBase
	DefaultBackoffCap    = mqttlink.DefaultBackoffCap
	DefaultRetryWindow   = mqttlink.DefaultRetryWindow
	DefaultQuickRetry    = mqttlink.DefaultQuickRetry
	DefaultRetryAfterCap = 10 * time.Minute
	DefaultStableAfter   = mqttlink.DefaultStableAfter
	DefaultRate          = 5.0
)

func (c *Config) setDefaults() {
	def := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&c.BackoffBase, DefaultBackoffBase)
	def(&c.BackoffCap, DefaultBackoffCap)
	def(&c.RetryWindow, DefaultRetryWindow)
	def(&c.QuickRetry, DefaultQuickRetry)
	def(&c.RetryAfterCap, DefaultRetryAfterCap)
	def(&c.StableAfter, DefaultStableAfter)
	if !(c.Rate > 0) {
		c.Rate = DefaultRate
	}
}

// UploadStats are the upload loop's counters since New.
type UploadStats struct {
	Sent        int    // records acknowledged by the receiver and removed
	Quarantined int    // records the receiver rejected permanently (quarantined, not retried)
	Corrupt     int    // records that failed their checksum when loaded (quarantined by the spool, not sent)
	Failures    int    // failed attempts (receiver unreachable, 5xx, 429, local I/O)
	Backoff     int    // the backoff's current failure count
	LastError   string // the last failure, "" if none yet
	// Throttled is the time spent waiting for the bandwidth cap (MaxRate).
	Throttled time.Duration
}

// Uploader drains a Spool through a Transport, one record at a time in
// sequence order.
type Uploader struct {
	cfg Config
	sp  *Spool
	tr  Transport
	clk clock.Clock
	log *slog.Logger
	bo  backoff.Backoff

	// State of the Run goroutine.
	reachable      bool      // the last attempt reached the receiver (true at start)
	outageFailures int       // failures since the receiver was last reached
	lastErr        string    // last error logged, to log each distinct one once
	streakStart    time.Time // first success after the last failure; zero if none
	nextSend       time.Time // rate limit: earliest next attempt
	bwTokens       float64   // bandwidth cap: bytes the bucket holds (negative: owed)
	bwLast         time.Time // when bwTokens was last brought up to date; zero before the first record

	mu    sync.Mutex
	stats UploadStats
}

// New returns an uploader. clk nil means the system clock, rnd nil a
// randomly seeded generator, log nil discards.
func New(cfg Config, sp *Spool, tr Transport, clk clock.Clock, rnd backoff.Rand, log *slog.Logger) *Uploader {
	cfg.setDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Uploader{
		cfg: cfg, sp: sp, tr: tr, clk: clock.Or(clk), log: log,
		bo:        backoff.Backoff{Base: cfg.BackoffBase, Cap: cfg.BackoffCap, Rand: backoff.OrRandom(rnd)},
		reachable: true,
	}
}

// Stats returns the loop's counters.
func (u *Uploader) Stats() UploadStats {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.stats
}

// Run uploads until ctx is done and then returns ctx's error. It sends the
// oldest pending record other than a clip segment, or when there is none
// the oldest segment (Spool.Next), paced by Rate and MaxRate: a corrupt one has been quarantined by the spool and
// is skipped; an acknowledged one is removed; a permanently rejected one is
// quarantined with the receiver's reason and not retried; any other failure
// backs off (one quick retry of an unanswered failure after a stable
// period, then full jitter never below RetryWindow, Retry-After honoured up
// to RetryAfterCap) and retries the same record.
// When the spool is empty it waits for the spool's Notify. Run must not be
// called twice at once.
func (u *Uploader) Run(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, ok := u.sp.Next()
		if !ok {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-u.sp.Notify():
			}
			continue
		}
		if err := u.pace(ctx); err != nil {
			return err
		}
		r, err := u.sp.Load(e)
		switch {
		case errors.Is(err, ErrCorrupt):
			u.count(func(s *UploadStats) { s.Corrupt++ })
			u.log.Error("uploader: spooled record is corrupt; quarantined, not sent",
				"seq", e.Seq, "event", e.Event, "kind", e.Kind, "err", err)
			continue
		case errors.Is(err, ErrNotPending):
			continue
		case err != nil:
			if err := u.localFailure(ctx, err); err != nil {
				return err
			}
			continue
		}
		if err := u.throttle(ctx, len(r.Data)); err != nil {
			return err
		}
		err = u.tr.Send(ctx, r)
		switch {
		case err == nil:
			u.reached()
			if err := u.sp.Ack(e); err != nil && !errors.Is(err, ErrNotPending) {
				// Delivered but still on disk: it will be sent again, and the
				// receiver answers an identical re-send with 200.
				if err := u.localFailure(ctx, err); err != nil {
					return err
				}
				continue
			}
			u.count(func(s *UploadStats) { s.Sent++ })
			if u.cfg.Delivered != nil {
				u.cfg.Delivered(e)
			}
		case ctx.Err() != nil:
			return ctx.Err()
		case isPermanent(err):
			u.reached()
			u.count(func(s *UploadStats) { s.Quarantined++ })
			u.log.Error("uploader: receiver rejected record; quarantined, will not retry",
				"seq", e.Seq, "event", e.Event, "kind", e.Kind, "err", err)
			if qerr := u.sp.Quarantine(e, err.Error()); qerr != nil && !errors.Is(qerr, ErrNotPending) {
				if err := u.localFailure(ctx, qerr); err != nil {
					return err
				}
			}
		default:
			if err := u.failed(ctx, err); err != nil {
				return err
			}
		}
	}
}

// pace waits for the rate limit's token.
func (u *Uploader) pace(ctx context.Context) error {
	if d := u.nextSend.Sub(u.clk.Now()); d > 0 {
		if err := u.sleep(ctx, d); err != nil {
			return err
		}
	}
	var interval time.Duration
	if u.cfg.Rate <= 1e9 {
		interval = time.Duration(float64(time.Second) / u.cfg.Rate)
	}
	now := u.clk.Now()
	if u.nextSend.Before(now) {
		u.nextSend = now
	}
	u.nextSend = u.nextSend.Add(interval)
	return nil
}

// throttle waits until the bandwidth cap has paid for n bytes.
func (u *Uploader) throttle(ctx context.Context, n int) error {
	if u.cfg.MaxRate <= 0 {
		return nil
	}
	rate := float64(u.cfg.MaxRate)
	now := u.clk.Now()
	if u.bwLast.IsZero() {
		u.bwTokens = rate // starts full
	} else if dt := now.Sub(u.bwLast); dt > 0 {
		u.bwTokens = min(rate, u.bwTokens+dt.Seconds()*rate)
	}
	u.bwLast = now
	u.bwTokens -= float64(n)
	if u.bwTokens >= 0 {
		return nil
	}
	d := time.Duration(math.Ceil(-u.bwTokens / rate * float64(time.Second)))
	u.count(func(s *UploadStats) { s.Throttled += d })
	return u.sleep(ctx, d)
}

// reached records an attempt that got an answer from the receiver.
func (u *Uploader) reached() {
	now := u.clk.Now()
	if !u.reachable {
		u.log.Info("uploader: receiver reachable again after "+strconv.Itoa(u.outageFailures)+" failures",
			"failures", u.outageFailures)
		u.reachable = true
		u.outageFailures = 0
		u.lastErr = ""
	}
	if u.streakStart.IsZero() {
		u.streakStart = now
	}
	u.stableCheck(now)
}

// stableCheck resets the backoff once the receiver has been reachable for
// StableAfter.
func (u *Uploader) stableCheck(now time.Time) {
	if u.bo.Failures() > 0 && !u.streakStart.IsZero() && now.Sub(u.streakStart) >= u.cfg.StableAfter {
		u.bo.Reset()
		u.count(func(s *UploadStats) { s.Backoff = 0 })
	}
}

// failed records a failed attempt and waits before the retry.
func (u *Uploader) failed(ctx context.Context, err error) error {
	now := u.clk.Now()
	var d time.Duration
	if u.reachable {
		// An outage starts. If the receiver had been fine long enough, the
		// count starts afresh.
		u.stableCheck(now)
		u.reachable = false
		u.outageFailures = 0
	}
	if u.outageFailures == 0 && u.bo.Failures() == 0 && !answered(err) {
		// The first failure after a stable period, and no answer at all:
		// one quick retry, in case it was a blip.
		d = u.bo.NextWithin(u.cfg.QuickRetry)
	} else {
		d = u.bo.NextAtLeast(u.cfg.RetryWindow)
	}
	if u.cfg.Retry != nil {
		d = u.cfg.Retry(d)
	}
	u.streakStart = time.Time{}
	u.outageFailures++
	if se := (*StatusError)(nil); errors.As(err, &se) && se.RetryAfter > 0 {
		if ra := min(se.RetryAfter, u.cfg.RetryAfterCap); ra > d {
			d = ra
		}
	}
	msg := err.Error()
	u.count(func(s *UploadStats) {
		s.Failures++
		s.Backoff = u.bo.Failures()
		s.LastError = msg
	})
	if msg != u.lastErr {
		u.lastErr = msg
		u.log.Warn("uploader: upload failed; will retry", "err", err,
			"failures", u.outageFailures, "retry_in", d)
	}
	return u.sleep(ctx, d)
}

// answered reports whether err is a reply of the receiver (a failure status),
// as opposed to no reply at all.
func answered(err error) bool {
	var se *StatusError
	return errors.As(err, &se)
}

// localFailure records a failure of the spool's disk (not of the receiver)
// and waits a backoff delay, so a broken disk does not spin the loop.
func (u *Uploader) localFailure(ctx context.Context, err error) error {
	d := u.bo.Next()
	msg := err.Error()
	u.count(func(s *UploadStats) {
		s.Failures++
		s.Backoff = u.bo.Failures()
		s.LastError = msg
	})
	if msg != u.lastErr {
		u.lastErr = msg
		u.log.Error("uploader: spool error; will retry", "err", err, "retry_in", d)
	}
	return u.sleep(ctx, d)
}

func (u *Uploader) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-u.clk.After(d):
		return nil
	}
}

func (u *Uploader) count(f func(*UploadStats)) {
	u.mu.Lock()
	f(&u.stats)
	u.mu.Unlock()
}
