package mqttlink

import (
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// bubbleClock is the time package's clock: inside a synctest bubble it is
// the bubble's fake clock, so nothing here sleeps for real.
type bubbleClock struct{}

func (bubbleClock) Now() time.Time                         { return time.Now() }
func (bubbleClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// fixedRand returns f(n) for Int64N(n) and records every n it was asked for.
type fixedRand struct {
	mu    sync.Mutex
	f     func(n int64) int64
	asked []int64
	drawn []int64
}

func (r *fixedRand) Int64N(n int64) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := r.f(n)
	r.asked = append(r.asked, n)
	r.drawn = append(r.drawn, v)
	return v
}

func (r *fixedRand) Asked() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.asked)
}

func (r *fixedRand) Drawn() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.drawn)
}

// seededRand draws from a seeded generator, recording the draws.
func seededRand(seed uint64) *fixedRand {
	g := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return &fixedRand{f: g.Int64N}
}
