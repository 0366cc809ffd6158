package backoff

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// fixedRand returns f(n) for Int64N(n).
type fixedRand struct{ f func(n int64) int64 }

func (r fixedRand) Int64N(n int64) int64 { return r.f(n) }

func ceilRand() fixedRand { return fixedRand{func(n int64) int64 { return n - 1 }} }
func zeroRand() fixedRand { return fixedRand{func(int64) int64 { return 0 }} }

func seededRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }

func TestBackoffCeilingsAndBounds(t *testing.T) {
	b := Backoff{Base: time.Second, Cap: 10 * time.Second, Rand: ceilRand()}
	var got []time.Duration
	for range 7 {
		got = append(got, b.Next())
	}
	want := []time.Duration{1, 2, 4, 8, 10, 10, 10}
	for i := range want {
		want[i] *= time.Second
	}
	if !slices.Equal(got, want) {
		t.Fatalf("delays with the largest draws = %v, want %v", got, want)
	}
	if b.Failures() != 7 {
		t.Fatalf("Failures = %d, want 7", b.Failures())
	}
	b.Reset()
	if b.Failures() != 0 || b.Next() != time.Second {
		t.Fatal("Reset did not restart the backoff at Base")
	}

	z := Backoff{Base: time.Second, Cap: 10 * time.Second, Rand: zeroRand()}
	for range 10 {
		if d := z.Next(); d != 0 {
			t.Fatalf("delay with the smallest draw = %v, want 0", d)
		}
	}

	// No overflow however long the outage.
	huge := Backoff{Base: time.Hour, Rand: ceilRand()}
	for range 200 {
		if d := huge.Next(); d < 0 {
			t.Fatalf("delay overflowed: %v", d)
		}
	}
}

// With a seeded source, delays cover all of [0, ceiling], grow with the
// failure count and never exceed Cap.
func TestBackoffFullJitter(t *testing.T) {
	const samples = 4000
	base, cp := 100*time.Millisecond, 5*time.Second
	rnd := seededRand(42)
	prevMean := time.Duration(-1)
	for n := range 10 {
		ceil := min(cp, base<<n)
		var sum time.Duration
		var lo, hi time.Duration = cp, 0
		var buckets [10]int
		for range samples {
			b := Backoff{Base: base, Cap: cp, Rand: rnd}
			for range n {
				b.failures++
			}
			d := b.Next()
			if d < 0 || d > ceil || d > cp {
				t.Fatalf("n=%d: delay %v outside [0, %v]", n, d, ceil)
			}
			sum += d
			lo, hi = min(lo, d), max(hi, d)
			buckets[min(int(10*d/(ceil+1)), 9)]++
		}
		for i, c := range buckets {
			// Uniform: each tenth gets about samples/10; far fewer means
			// part of the range is never used.
			if c < samples/20 {
				t.Fatalf("n=%d: tenth %d of [0, %v] got %d of %d delays: not full jitter (%v)", n, i, ceil, c, samples, buckets)
			}
		}
		if lo > ceil/50 || hi < ceil-ceil/50 {
			t.Fatalf("n=%d: delays span [%v, %v], want most of [0, %v]", n, lo, hi, ceil)
		}
		mean := sum / samples
		if mean < ceil*45/100 || mean > ceil*55/100 {
			t.Fatalf("n=%d: mean delay %v, want about %v", n, mean, ceil/2)
		}
		if base<<n <= cp && mean <= prevMean {
			t.Fatalf("n=%d: mean delay %v did not grow (was %v)", n, mean, prevMean)
		}
		prevMean = mean
	}
}

// NextAtLeast never draws below the floor's ceiling, then follows the
// exponential ceiling once it passes the floor; NextWithin draws within its
// own ceiling whatever the count. Both count a failure.
func TestBackoffFloorAndQuickRetry(t *testing.T) {
	b := Backoff{Base: time.Second, Cap: 10 * time.Second, Rand: ceilRand()}
	if d := b.NextWithin(500 * time.Millisecond); d != 500*time.Millisecond || b.Failures() != 1 {
		t.Fatalf("NextWithin = %v with %d failures, want 500ms with 1", d, b.Failures())
	}
	var got []time.Duration
	for range 5 {
		got = append(got, b.NextAtLeast(3*time.Second))
	}
	want := []time.Duration{3, 4, 8, 10, 10} // ceilings 2, 4, 8, 16→10, 32→10 against a floor of 3
	for i := range want {
		want[i] *= time.Second
	}
	if !slices.Equal(got, want) {
		t.Fatalf("NextAtLeast with the largest draws = %v, want %v", got, want)
	}
	if b.Failures() != 6 {
		t.Fatalf("Failures = %d, want 6", b.Failures())
	}
	if d := b.NextWithin(0); d != 0 {
		t.Fatalf("NextWithin(0) = %v, want 0", d)
	}
}

func TestOrRandom(t *testing.T) {
	r := ceilRand()
	if got, ok := OrRandom(r).(fixedRand); !ok || got.Int64N(5) != 4 {
		t.Error("OrRandom(r) is not r")
	}
	if d := Uniform(OrRandom(nil), time.Second); d < 0 || d > time.Second {
		t.Errorf("a draw from OrRandom(nil) = %v, outside [0, 1s]", d)
	}
}
