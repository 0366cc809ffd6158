// Package backofftest holds a scripted, recording backoff.Rand for tests of
// the retry schedules built on package backoff (the upload loop, the MQTT
// redialer, capture's reopening).
package backofftest

import (
	"math/rand/v2"
	"slices"
	"sync"
)

// Rand answers Int64N(n) with F(n) and records every n it was asked for and
// every value it drew. It is safe for concurrent use.
type Rand struct {
	F func(n int64) int64

	mu    sync.Mutex
	asked []int64
	drawn []int64
}

// Int64N returns F(n) and records the call.
func (r *Rand) Int64N(n int64) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := r.F(n)
	r.asked = append(r.asked, n)
	r.drawn = append(r.drawn, v)
	return v
}

// Asked returns every n asked for so far, in order.
func (r *Rand) Asked() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.asked)
}

// Drawn returns every value drawn so far, in order.
func (r *Rand) Drawn() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.drawn)
}

// Ceil always draws the top of the range (n-1): every delay is its ceiling.
func Ceil() *Rand { return &Rand{F: func(n int64) int64 { return n - 1 }} }

// Zero always draws 0: every delay is zero.
func Zero() *Rand { return &Rand{F: func(int64) int64 { return 0 }} }

// Seeded draws from a generator seeded with seed, recording the draws.
func Seeded(seed uint64) *Rand {
	g := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return &Rand{F: g.Int64N}
}
