// Package backoff is the one retry schedule of the tree: full-jitter
// exponential backoff (each delay uniform over [0, min(Cap, Base·2^n)]), with
// the outage-window floor and the single quick retry the upload loop and the
// MQTT redialer use. Spreading every retry over the whole range keeps a fleet
// that failed together from retrying together. It imports nothing but the
// standard library.
package backoff

import (
	"math"
	"math/rand/v2"
	"time"
)

// Rand is the source of randomness for jitter. *math/rand/v2.Rand satisfies
// it.
type Rand interface {
	// Int64N returns a uniform value in [0, n); n > 0.
	Int64N(n int64) int64
}

// OrRandom returns r, or a randomly seeded generator when r is nil. The
// generator is not safe for concurrent use: each user gets its own.
func OrRandom(r Rand) Rand {
	if r == nil {
		return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return r
}

// Backoff computes retry delays with full jitter: after the n-th consecutive
// failure (n counting from 0) the delay is uniform over [0, min(Cap, Base·2^n)].
// Cap <= 0 means no cap; Rand must not be nil.
type Backoff struct {
	Base, Cap time.Duration
	Rand      Rand

	failures int
}

// Ceiling returns min(Cap, Base·2^n), the upper end of the n-th delay.
func (b *Backoff) Ceiling(n int) time.Duration {
	if b.Base <= 0 {
		return 0
	}
	ceil := b.Cap
	if ceil <= 0 {
		ceil = math.MaxInt64
	}
	d := b.Base
	for i := 0; i < n && d < ceil; i++ {
		if d > math.MaxInt64/2 {
			d = math.MaxInt64
			break
		}
		d *= 2
	}
	return min(d, ceil)
}

// Next returns the delay after one more failure and counts the failure.
func (b *Backoff) Next() time.Duration {
	c := b.Ceiling(b.failures)
	b.failures++
	return Uniform(b.Rand, c)
}

// NextAtLeast is Next with floor as the least ceiling: the delay is uniform
// over [0, max(floor, min(Cap, Base·2^n))]. It is the wait before a retry
// within an outage, floor being the outage window that spreads a fleet's
// return however long the outage lasted. It counts one failure.
func (b *Backoff) NextAtLeast(floor time.Duration) time.Duration {
	c := max(floor, b.Ceiling(b.failures))
	b.failures++
	return Uniform(b.Rand, c)
}

// NextWithin returns a delay uniform over [0, ceil] whatever the count, and
// counts one failure: the one quick retry after a stable period, before the
// exponential schedule starts.
func (b *Backoff) NextWithin(ceil time.Duration) time.Duration {
	b.failures++
	return Uniform(b.Rand, ceil)
}

// Reset forgets the failures.
func (b *Backoff) Reset() { b.failures = 0 }

// Failures returns the number of failures counted since the last Reset.
func (b *Backoff) Failures() int { return b.failures }

// Uniform returns a uniform duration in [0, ceil], both ends included; 0 if
// ceil <= 0.
func Uniform(r Rand, ceil time.Duration) time.Duration {
	if ceil <= 0 {
		return 0
	}
	if ceil == math.MaxInt64 {
		ceil--
	}
	return time.Duration(r.Int64N(int64(ceil) + 1))
}
