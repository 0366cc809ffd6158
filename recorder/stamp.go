package recorder

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/provenance"
)

// Stamp is what is known of a record's capture moment besides its wall time:
// whether the wall clock was synchronised, and the time since boot (which no
// wall-clock step moves).
type Stamp struct {
	Synced    bool
	SinceBoot time.Duration
}

// Time is the record time of a capture at wall time t stamped s.
func (s Stamp) Time(t time.Time) provenance.Time {
	clock := provenance.ClockUnsynced
	if s.Synced {
		clock = provenance.ClockSynced
	}
	return provenance.Time{UnixMs: t.UnixMilli(), BootMs: uint64(s.SinceBoot / time.Millisecond), Clock: clock}
}

// StampConfig is what NewStamper reads the machine through; nil fields take
// the defaults named.
type StampConfig struct {
	Board     *board.FS                     // boot ID and uptime; required
	Rand      io.Reader                     // for a per-process boot ID; nil: crypto/rand
	Synced    func() bool                   // nil: board.ClockSynced
	SinceBoot func() (time.Duration, error) // nil: board.SinceBoot (CLOCK_BOOTTIME)
	Now       func() time.Time              // for the time since boot where the kernel gives none; nil: time.Now
	Logger    *slog.Logger                  // hears of a made-up boot ID; nil: nobody
}

// Stamper stamps the records of one process: the boot ID they carry and the
// clock quality and time since boot of each capture. Taking a stamp is two
// system calls, no file I/O or allocation.
type Stamper struct {
	boot      string
	synced    func() bool
	sinceBoot func() (time.Duration, error)
	now       func() time.Time
	upAt      time.Duration // uptime when the stamper was made
	start     time.Time     // now() when the stamper was made
}

// NewStamper reads the boot ID and the uptime. Where the kernel has no boot
// ID (off Linux) it makes one up per process, "process-" and eight random
// bytes, so records still say which run signed them.
func NewStamper(c StampConfig) (*Stamper, error) {
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	if c.Synced == nil {
		c.Synced = board.ClockSynced
	}
	if c.SinceBoot == nil {
		c.SinceBoot = board.SinceBoot
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	s := &Stamper{synced: c.Synced, sinceBoot: c.SinceBoot, now: c.Now, start: c.Now()}
	boot, err := c.Board.BootID()
	if err != nil {
		r, rerr := RandomID(c.Rand)
		if rerr != nil {
			return nil, rerr
		}
		boot = "process-" + r
		if c.Logger != nil {
			c.Logger.Warn("no kernel boot ID; using a per-process one", "boot", boot, "err", err)
		}
	}
	s.boot = boot
	if up, err := c.Board.Uptime(); err == nil {
		s.upAt = up
	}
	return s, nil
}

// Boot is the boot ID records carry.
func (s *Stamper) Boot() string { return s.boot }

// Now stamps the capture being processed.
func (s *Stamper) Now() Stamp {
	st := Stamp{Synced: s.synced()}
	if up, err := s.sinceBoot(); err == nil {
		st.SinceBoot = up
	} else {
		// No uptime (off Linux): from the start-up reading, on the clock.
		st.SinceBoot = max(0, s.upAt+s.now().Sub(s.start))
	}
	return st
}

var idEnc = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// RandomID is eight bytes from rnd in lower-case base32 (13 characters of
// [0-9a-z] without i, l, o, u): the random part of event IDs and per-process
// boot IDs.
func RandomID(rnd io.Reader) (string, error) {
	b := make([]byte, 8)
	if _, err := io.ReadFull(rnd, b); err != nil {
		return "", fmt.Errorf("recorder: random source: %w", err)
	}
	return strings.ToLower(idEnc.EncodeToString(b)), nil
}
