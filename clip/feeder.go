package clip

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/internal/clock"
)

// Feeder puts a capture source's frames into a [Ring] at the configured
// clip rate without ever holding up the caller's frame loop:
//
//   - frames closer to the last one taken than 1/Rate (by capture time, with
//     an eighth of an interval's slack for timestamp jitter) are skipped;
//   - an MJPEG frame is pushed as it is, its bytes untouched ([Camera]);
//   - a raw frame is copied into one of two buffers and handed to the
//     encoder goroutine ([Feeder.Run]) through a one-slot handoff: when a
//     frame is already waiting there (the encoder is busy with the one
//     before), the new frame is dropped and counted, never queued. The
//     encoder JPEG-encodes it at the configured quality and pushes it
//     ([Encoded]). After each frame the encoder rests in proportion to the
//     time it took ([Config.EncodeShare]), so it never takes more than
//     that share of a core from the detector.
//
// A frame dropped because the encoder was busy does not advance the rate's
// schedule: the next frame the camera delivers is taken instead, so an
// encoder slower than Rate gives as many frames as it can encode.
//
// With an H.264 [Encoder] ([NewH264Feeder], [CodecH264]) the handoff is
// the same; the encoder goroutine converts the frame to YU12 (an MJPEG
// frame is decoded first) and gives it to the encoder, and a second
// goroutine of Run takes the encoder's access units, matches each to the
// frame it encodes (in order: see [Encoder]) and pushes it into the ring
// with its key flag, where groups of pictures are kept whole. A frame the
// encoder refuses (busy, restarting) is dropped and counted like a frame
// dropped at the handoff; an access unit that matches no frame given to the
// encoder is refused and counted (Misaligned), and the ring is told its
// group is broken ([Ring.Break]). [Feeder.RequestKey] asks the encoder for
// a key frame with the next frame (an event's start), when it can force
// one. EncodeShare does not apply: the encoder's work is in its own
// process or in hardware.
//
// Offer is called from one goroutine (the frame loop), Run from another;
// Stats from any.
type Feeder struct {
	ring     *Ring
	interval time.Duration
	slack    time.Duration
	share    float64
	clk      clock.Clock
	encode   func(*raw) ([]byte, error)

	// H.264: the encoder, the picture the Run goroutine converts frames
	// into, and the frames given to the encoder whose access units have
	// not come back, oldest first (a fixed ring: no allocation).
	enc       Encoder
	pic       Picture
	keyWanted atomic.Bool
	flightMu  sync.Mutex
	flight    [maxFlight]stamp
	flightAt  int // index of the oldest
	flightN   int

	lostUnits, misaligned, encErrors, keyRequests, orphaned atomic.Uint64

	slot  chan *raw // the frame waiting for the encoder: at most one
	spare chan *raw // buffers free for Offer
	run   atomic.Bool

	// The rate's schedule: Offer's goroutine only.
	started   bool
	last, due time.Time

	offered, skipped, passed, dropped, encoded, failed, bytes atomic.Uint64

	mu      sync.Mutex
	lastErr error
}

// NewFeeder returns a feeder into ring, at cfg's Rate, Quality and
// EncodeShare; clk (nil: the system clock) times the encoder's rests. Start
// its encoder with [Feeder.Run].
func NewFeeder(ring *Ring, cfg Config, clk clock.Clock) (*Feeder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if ring == nil {
		return nil, errors.New("clip: feeder without a ring")
	}
	f := &Feeder{
		ring:     ring,
		interval: cfg.interval(),
		share:    cfg.EncodeShare,
		clk:      clock.Or(clk),
		slot:     make(chan *raw, 1),
		spare:    make(chan *raw, 2),
	}
	f.slack = f.interval / 8
	f.encode = newEncoder(cfg.Quality).encode
	f.spare <- new(raw)
	f.spare <- new(raw)
	return f, nil
}

// maxFlight bounds the frames the feeder waits for an H.264 encoder to
// give back; one more is dropped.
const maxFlight = 64

// NewH264Feeder returns a feeder into ring, a ring of [CodecH264], whose
// frames enc encodes; cfg's Codec must be CodecH264. Run starts the
// encoder's two goroutines; the caller closes enc after Run returns.
func NewH264Feeder(ring *Ring, cfg Config, enc Encoder, clk clock.Clock) (*Feeder, error) {
	if cfg.Codec != CodecH264 {
		return nil, fmt.Errorf("clip: H.264 feeder with codec %v", cfg.Codec)
	}
	if enc == nil {
		return nil, errors.New("clip: H.264 feeder without an encoder")
	}
	if ring == nil || !ring.gop {
		return nil, errors.New("clip: H.264 feeder without a ring of H.264")
	}
	cfg.Codec = CodecMJPEG // the JPEG feeder's checks, then the encoder
	f, err := NewFeeder(ring, cfg, clk)
	if err != nil {
		return nil, err
	}
	f.enc = enc
	return f, nil
}

// RequestKey asks the encoder to code the next frame it is given as a key
// frame (an event starts). An encoder that cannot force one ignores it
// ([Encoder.ForcesKey]); the ring's groups of pictures keep the run-up
// either way. It does nothing without an H.264 encoder.
func (f *Feeder) RequestKey() {
	if f.enc == nil {
		return
	}
	f.keyRequests.Add(1)
	f.keyWanted.Store(true)
}

// Offer gives the feeder the caller's frame, which it does not keep: it
// skips it (rate), pushes it (MJPEG), copies it for the encoder, or drops it
// (encoder busy), and returns at once. It allocates nothing once its two
// buffers have held a frame of this size. It returns an error, and takes
// nothing, for a frame it cannot use: no capture time, a raw frame whose
// geometry and data disagree, a format it does not encode, data that is not
// a JPEG for MJPEG, or a frame larger than the ring.
func (f *Feeder) Offer(fr *capture.Frame) error {
	f.offered.Add(1)
	if fr.Time.IsZero() {
		return f.fail(fmt.Errorf("clip: frame %d has no capture time", fr.Sequence))
	}
	if f.started && !fr.Time.Before(f.last) && fr.Time.Before(f.due.Add(-f.slack)) {
		f.skipped.Add(1)
		return nil
	}
	if fr.Format == capture.FormatMJPEG {
		if len(fr.Data) < 2 || fr.Data[0] != 0xff || fr.Data[1] != 0xd8 {
			return f.fail(fmt.Errorf("clip: MJPEG frame %d does not start with a JPEG SOI marker", fr.Sequence))
		}
		if f.enc != nil {
			// Decoded and re-encoded off the frame loop.
			return f.handOff(fr, len(fr.Data))
		}
		if err := f.ring.Push(Frame{Time: fr.Time, Sequence: fr.Sequence, Origin: Camera, Data: fr.Data}); err != nil {
			return f.fail(fmt.Errorf("clip: MJPEG frame %d: %w", fr.Sequence, err))
		}
		f.passed.Add(1)
		f.bytes.Add(uint64(len(fr.Data)))
		f.taken(fr.Time)
		return nil
	}
	n, err := rawLayout(fr.Format, fr.Width, fr.Height, fr.Stride)
	if err != nil {
		return f.fail(fmt.Errorf("clip: frame %d: %w", fr.Sequence, err))
	}
	if len(fr.Data) < n {
		return f.fail(fmt.Errorf("clip: %v frame %d (%dx%d, stride %d) has %d bytes, want %d",
			fr.Format, fr.Sequence, fr.Width, fr.Height, fr.Stride, len(fr.Data), n))
	}
	if f.enc != nil && (fr.Width%2 != 0 || fr.Height%2 != 0) {
		return f.fail(fmt.Errorf("clip: frame %d is %dx%d: H.264 (4:2:0) needs an even width and height", fr.Sequence, fr.Width, fr.Height))
	}
	return f.handOff(fr, n)
}

// handOff copies the first n bytes of fr's data for the encoder goroutine,
// or drops the frame when one is already waiting there.
func (f *Feeder) handOff(fr *capture.Frame, n int) error {
	if len(f.slot) > 0 { // only Offer fills the slot: it stays empty until our send
		f.dropped.Add(1)
		return nil
	}
	var b *raw
	select {
	case b = <-f.spare:
	default: // unreachable with two buffers and an empty slot; kept bounded regardless
		f.dropped.Add(1)
		return nil
	}
	b.fill(fr, n)
	f.slot <- b
	f.taken(fr.Time)
	return nil
}

// taken moves the rate's schedule on past a frame taken at t: the next is
// due one interval after this one was due, so frames keep to the rate's grid
// however the camera's timestamps jitter, unless t is off the grid (the
// first frame, a frame after a gap, time going backwards), which starts a
// new one.
func (f *Feeder) taken(t time.Time) {
	if f.started && !t.Before(f.last) && t.Sub(f.due) < f.interval {
		f.due = f.due.Add(f.interval)
	} else {
		f.due = t.Add(f.interval)
	}
	f.started, f.last = true, t
}

// fail counts a refused frame and remembers why.
func (f *Feeder) fail(err error) error {
	f.failed.Add(1)
	f.mu.Lock()
	f.lastErr = err
	f.mu.Unlock()
	return err
}

// ErrRunning is returned by a second concurrent [Feeder.Run].
var ErrRunning = errors.New("clip: feeder encoder already running")

// maxRest caps the encoder's rest after one frame: no encode takes seconds,
// so a longer one was measured across a clock step.
const maxRest = time.Second

// Run is the encoder: it encodes the frames Offer hands it and pushes them
// into the ring, resting after each for its EncodeShare, until ctx ends
// (returning ctx.Err()). A frame that fails (its JPEG larger than the ring)
// is counted in Stats. Without Run, the first raw frame offered waits in
// the slot and every later one is dropped.
func (f *Feeder) Run(ctx context.Context) error {
	if !f.run.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer f.run.Store(false)
	if f.enc != nil {
		return f.runH264(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case b := <-f.slot:
			start := f.clk.Now()
			f.handle(b)
			if f.share >= 1 {
				continue
			}
			rest := time.Duration(float64(f.clk.Now().Sub(start)) * (1 - f.share) / f.share)
			if rest <= 0 {
				continue
			}
			// A wall clock stepped during an encode (NTP on a board
			// without RTC, a clock without a monotonic reading) must
			// not put the encoder to sleep for years.
			rest = min(rest, maxRest)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-f.clk.After(rest):
			}
		}
	}
}

// handle encodes and pushes one frame and returns its buffer.
func (f *Feeder) handle(b *raw) {
	jpg, err := f.encode(b)
	if err == nil {
		err = f.ring.Push(Frame{Time: b.time, Sequence: b.sequence, Origin: Encoded, Data: jpg})
	}
	seq := b.sequence
	f.spare <- b
	if err != nil {
		_ = f.fail(fmt.Errorf("clip: frame %d: %w", seq, err)) // counted and kept for Stats
		return
	}
	f.encoded.Add(1)
	f.bytes.Add(uint64(len(jpg)))
}

// FeederStats counts what became of the frames offered.
type FeederStats struct {
	// Offered is every frame given to Offer.
	Offered uint64
	// Skipped is frames within the clip rate's interval of the last one
	// taken.
	Skipped uint64
	// Passed is MJPEG frames pushed untouched.
	Passed uint64
	// Dropped is raw frames dropped because a frame was already waiting for
	// the encoder.
	Dropped uint64
	// Encoded is raw frames encoded and pushed.
	Encoded uint64
	// Failed is frames refused (see [Feeder.Offer]) or whose JPEG the ring
	// refused; LastError is the latest reason.
	Failed    uint64
	LastError error
	// Bytes is the JPEG bytes pushed (passed and encoded): over a span of
	// time, the clip's bytes per second. With H.264, the access units'.
	Bytes uint64

	// H.264 only. Dropped also counts frames the encoder refused (busy,
	// restarting), Encoded access units pushed, and Failed frames the
	// encoder failed on. InFlight is frames given to the encoder whose
	// access units have not come back; Lost, frames it gave no unit for
	// (its command died with them); Orphaned, units the ring refused for
	// want of the rest of their group ([ErrNoKeyFrame]: after a loss, until
	// the next key frame); Misaligned, units that matched no frame given
	// to it (refused); EncoderErrors, the encoder's errors (a run ended, a
	// write failed; LastError has the latest); KeyRequests, calls of
	// RequestKey. Every frame handed to the encoder ends in one of
	// Dropped, Failed, Encoded, Orphaned or Lost.
	InFlight                                               int
	Lost, Orphaned, Misaligned, EncoderErrors, KeyRequests uint64
}

// Stats returns the feeder's counters. A frame handed to the encoder and not
// encoded yet is in none of Passed, Dropped, Encoded and Failed.
func (f *Feeder) Stats() FeederStats {
	f.mu.Lock()
	err := f.lastErr
	f.mu.Unlock()
	return FeederStats{
		Offered:   f.offered.Load(),
		Skipped:   f.skipped.Load(),
		Passed:    f.passed.Load(),
		Dropped:   f.dropped.Load(),
		Encoded:   f.encoded.Load(),
		Failed:    f.failed.Load(),
		LastError: err,
		Bytes:     f.bytes.Load(),

		InFlight:      f.inFlight(),
		Lost:          f.lostUnits.Load(),
		Orphaned:      f.orphaned.Load(),
		Misaligned:    f.misaligned.Load(),
		EncoderErrors: f.encErrors.Load(),
		KeyRequests:   f.keyRequests.Load(),
	}
}
