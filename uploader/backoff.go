package uploader

import (
	"math"
	"time"
)

// Rand is the source of randomness for jitter. *math/rand/v2.Rand satisfies
// it.
type Rand interface {
	// Int64N returns a uniform value in [0, n); n > 0.
	Int64N(n int64) int64
}

// Backoff computes retry delays with full jitter: after the n-th consecutive
// failure (n counting from 0) the delay is uniform over [0, min(Cap, Base·2^n)].
// Spreading every retry over the whole range keeps a fleet that failed
// together from retrying together. Cap <= 0 means no cap; Rand must not be
// nil.
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
	return uniform(b.Rand, c)
}

// Reset forgets the failures.
func (b *Backoff) Reset() { b.failures = 0 }

// Failures returns the number of failures counted since the last Reset.
func (b *Backoff) Failures() int { return b.failures }

// uniform returns a uniform duration in [0, ceil], both ends included.
func uniform(r Rand, ceil time.Duration) time.Duration {
	if ceil <= 0 {
		return 0
	}
	if ceil == math.MaxInt64 {
		ceil--
	}
	return time.Duration(r.Int64N(int64(ceil) + 1))
}
