package storm

import (
	"errors"
	"math/rand/v2"
	"sync"
)

// FaultyCache is the cache of the February 2024 incident: a device→owner
// cache in front of the authoritative lookup (Source) that, while armed (the
// harness arms it while the receiver is under the storm's load), mixes its
// entries up: with probability Rate an answer is the owner cached for
// another device instead of this one's. It is a receiver.OwnerLookup, so the
// receiver's owner view selects events through it; the receiver's view-time
// check against the registry must catch every wrong answer that would have
// shown a stranger's events.
type FaultyCache struct {
	source func(device string) (string, error)
	rate   float64

	mu       sync.Mutex
	rnd      *rand.Rand
	entries  map[string]string
	devices  []string // keys of entries, for picking another device
	armed    bool
	lookups  uint64
	injected uint64
}

// NewFaultyCache returns a disarmed cache over source that, once armed,
// answers wrongly with probability rate (0 to 1), drawing from a generator
// seeded with seed.
func NewFaultyCache(source func(device string) (string, error), rate float64, seed uint64) *FaultyCache {
	return &FaultyCache{
		source:  source,
		rate:    rate,
		rnd:     rand.New(rand.NewPCG(seed, seed^0x6a09e667f3bcc909)),
		entries: map[string]string{},
	}
}

// OwnerOf answers from the cache, filling it from the source on a miss;
// while armed it mixes entries up at the cache's rate. It implements
// receiver.OwnerLookup.
func (c *FaultyCache) OwnerOf(device string) (string, error) {
	c.mu.Lock()
	c.lookups++
	owner, ok := c.entries[device]
	c.mu.Unlock()
	if !ok {
		if c.source == nil {
			return "", errors.New("storm: faulty cache has no source")
		}
		o, err := c.source(device)
		if err != nil {
			return "", err
		}
		c.mu.Lock()
		if _, again := c.entries[device]; !again {
			c.devices = append(c.devices, device)
		}
		c.entries[device] = o
		c.mu.Unlock()
		owner = o
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.armed || c.rate <= 0 || c.rnd.Float64() >= c.rate || len(c.devices) < 2 {
		return owner, nil
	}
	// Mixed up: another device's entry. Only an answer that differs is a
	// mix-up (two devices of one owner swapped are harmless).
	other := c.entries[c.devices[c.rnd.IntN(len(c.devices))]]
	if other != owner {
		c.injected++
	}
	return other, nil
}

// Arm turns the mix-ups on or off.
func (c *FaultyCache) Arm(on bool) {
	c.mu.Lock()
	c.armed = on
	c.mu.Unlock()
}

// Stats returns the lookups answered and the wrong answers given.
func (c *FaultyCache) Stats() (lookups, injected uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lookups, c.injected
}
