package clip

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Origin says where a frame's JPEG came from.
type Origin uint8

// Origins of a frame.
const (
	// Camera: the camera's own MJPEG frame, passed through byte for byte as
	// the capture source delivered it.
	Camera Origin = iota + 1
	// Encoded: a raw frame (YUYV, NV12, YU12, GREY, RGB24) JPEG-encoded by
	// the [Feeder].
	Encoded
)

// ContentType is the MIME type of every frame in a ring of [CodecMJPEG]:
// each is one JPEG image, whatever its [Origin].
const ContentType = "image/jpeg"

// H264ContentType is the media type of every frame in a ring of
// [CodecH264]: each is one H.264 access unit in Annex B form
// (provenance.H264MediaType).
const H264ContentType = "video/h264"

// String returns "camera" or "encoded".
func (o Origin) String() string {
	switch o {
	case Camera:
		return "camera"
	case Encoded:
		return "encoded"
	}
	return fmt.Sprintf("origin(%d)", uint8(o))
}

// Frame is one encoded frame: what [Ring.Push] copies in and [Cursor.Next]
// copies out.
type Frame struct {
	// Index is the frame's place in the ring's history: 0 for the first
	// frame ever pushed, one more for each next. Push assigns it.
	Index uint64
	// Time is the frame's capture time (capture.Frame.Time).
	Time time.Time
	// Sequence is the driver's frame number (capture.Frame.Sequence): a
	// gap between two frames of a clip is frames the camera dropped or the
	// ring did not take (rate, busy encoder).
	Sequence uint64
	// Origin says whether Data is the camera's MJPEG frame or keyframe's
	// encoding of a raw frame.
	Origin Origin
	// Key is true for a frame a decoder can start at: every JPEG, and an
	// H.264 IDR access unit with its SPS and PPS.
	Key bool
	// Data is the JPEG, or the H.264 access unit.
	Data []byte
}

// Errors of [Ring.Push].
var (
	// ErrTooLarge means a frame is bigger than the ring's whole arena.
	ErrTooLarge = errors.New("clip: frame larger than the ring")
	// ErrEmpty means a frame without data.
	ErrEmpty = errors.New("clip: frame has no data")
	// ErrNoKeyFrame means an H.264 frame that is not a key frame, while
	// the ring does not hold the frame before it: its group of pictures
	// started before the ring (or was evicted, or lost a frame), so it
	// could not be decoded. Frames are refused until the next key frame.
	ErrNoKeyFrame = errors.New("clip: H.264 frame without the rest of its group of pictures")
)

// slot is the index entry of one frame held in the arena.
type slot struct {
	off, n   int
	time     time.Time
	sequence uint64
	origin   Origin
	key      bool
}

// Ring is a bounded memory ring of encoded frames: a byte arena and a frame
// index, both allocated by [NewRing] and never grown. [Ring.Push] copies a
// frame in, evicting the oldest frames as needed for its bytes and for the
// frame cap; a [Cursor] reads frames from a time onward and keeps reading
// the frames pushed after, told of any it lost to eviction.
//
// A Ring is safe for concurrent use. Push allocates nothing; it holds the
// ring's lock while it copies the frame in, and a cursor holds it while it
// copies one frame out, so each waits for at most one frame's copy.
type Ring struct {
	gop     bool // CodecH264: whole groups of pictures
	mu      sync.Mutex
	arena   []byte
	slots   []slot // slots[i % len(slots)] is frame i
	first   uint64 // index of the oldest frame held
	next    uint64 // index the next Push gets
	head    int    // arena offset where the newest frame ends
	evicted uint64
	bytes   int // bytes of the frames held
	cursors []*Cursor
	// H.264: the newest frame pushed continues a group the ring holds
	// from its key frame, so the next non-key frame may follow it.
	chain               bool
	orphaned, truncated uint64
}

// NewRing allocates a ring of cfg.MaxBytes bytes (on Linux mapped outside
// the Go heap: see newArena) and cfg.MaxFrames frames.
func NewRing(cfg Config) (*Ring, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Ring{slots: make([]slot, cfg.MaxFrames), gop: cfg.Codec == CodecH264}
	r.arena = newArena(r, cfg.MaxBytes)
	return r, nil
}

// Push copies f into the ring as its newest frame (f.Index is ignored),
// evicting the oldest frames until it fits, and wakes the cursors. A frame
// larger than the arena is refused with [ErrTooLarge] and changes nothing.
//
// In a ring of [CodecH264] frames are held in whole groups of pictures: a
// key frame (f.Key) starts a group, eviction drops the oldest group whole
// (from its key frame to the next), so the ring always starts at a key
// frame; a non-key frame is taken only right after the frame before it in
// its group, and is otherwise refused with [ErrNoKeyFrame] (counted in
// RingStats.Orphaned), as is every later one until the next key frame. A
// group too large for the ring (more bytes than its arena or more frames
// than its index) evicts itself: counted in RingStats.Truncated, its
// remaining frames are refused until the next key frame.
func (r *Ring) Push(f Frame) error {
	n := len(f.Data)
	if n == 0 || n > len(r.arena) {
		if r.gop {
			r.mu.Lock()
			r.chain = false
			r.mu.Unlock()
		}
		if n == 0 {
			return ErrEmpty
		}
		return fmt.Errorf("%w: %d bytes, the ring holds %d", ErrTooLarge, n, len(r.arena))
	}
	r.mu.Lock()
	key := f.Key || !r.gop
	if !key && !r.chain {
		r.orphaned++
		r.mu.Unlock()
		return ErrNoKeyFrame
	}
	off := r.place(n)
	if !key && r.next == r.first {
		// Its group was evicted to make room for it: the group is
		// larger than the ring.
		r.truncated++
		r.orphaned++
		r.chain = false
		r.mu.Unlock()
		return fmt.Errorf("%w: its group of pictures does not fit in the ring", ErrNoKeyFrame)
	}
	r.chain = true
	copy(r.arena[off:off+n], f.Data)
	r.slots[r.next%uint64(len(r.slots))] = slot{off: off, n: n, time: f.Time, sequence: f.Sequence, origin: f.Origin, key: key}
	r.next++
	r.head = off + n
	r.bytes += n
	for _, c := range r.cursors {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	r.mu.Unlock()
	return nil
}

// place evicts the oldest frames until n contiguous bytes are free for the
// next frame, and there is a free index slot, and returns their offset.
// Frames lie in the arena in push order, wrapping to its start when the
// next one does not fit before its end (the gap left there is not used).
func (r *Ring) place(n int) int {
	for {
		count := r.next - r.first
		if count == 0 {
			r.head = 0
			return 0
		}
		if count < uint64(len(r.slots)) {
			tail := r.slots[r.first%uint64(len(r.slots))].off // the oldest frame's offset
			switch {
			case tail < r.head: // live bytes in [tail, head): free after head, then before tail
				if r.head+n <= len(r.arena) {
					return r.head
				}
				if n <= tail {
					return 0
				}
			case tail > r.head: // live bytes wrap: free in [head, tail)
				if r.head+n <= tail {
					return r.head
				}
			}
			// tail == head with frames held: the arena is full.
		}
		r.evictOldest()
	}
}

// evictOldest drops the oldest frame, and in a ring of H.264 the rest of
// its group of pictures. The ring must hold a frame.
func (r *Ring) evictOldest() {
	for {
		s := &r.slots[r.first%uint64(len(r.slots))]
		r.bytes -= s.n
		*s = slot{}
		r.first++
		r.evicted++
		if !r.gop || r.first == r.next || r.slot(r.first).key {
			return
		}
	}
}

// Break tells a ring of H.264 that the frame after the newest one it holds
// was lost before it (an encoder's unit refused): the frames of its group
// that follow are refused until the next key frame, as they could not be
// decoded. It does nothing in a ring of JPEG frames.
func (r *Ring) Break() {
	r.mu.Lock()
	r.chain = false
	r.mu.Unlock()
}

// RingStats is a snapshot of a ring's state.
type RingStats struct {
	// Frames and Bytes are what the ring holds now.
	Frames, Bytes int
	// Oldest and Newest are the capture times of the frames held (zero
	// when it holds none); Newest minus Oldest is the run-up a clip
	// triggered now can have.
	Oldest, Newest time.Time
	// Pushed and Evicted count frames since the ring was made.
	Pushed, Evicted uint64
	// MaxFrames and MaxBytes are the ring's caps.
	MaxFrames, MaxBytes int
	// H.264 only: Orphaned counts frames refused because the ring did not
	// hold the frame before them in their group of pictures
	// ([ErrNoKeyFrame]), and Truncated groups that evicted themselves,
	// being larger than the ring (each also orphans the frame that did
	// not fit, and the rest of its group).
	Orphaned, Truncated uint64
}

// Stats returns a snapshot of the ring's state.
func (r *Ring) Stats() RingStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := RingStats{
		Frames:    int(r.next - r.first),
		Bytes:     r.bytes,
		Pushed:    r.next,
		Evicted:   r.evicted,
		MaxFrames: len(r.slots),
		MaxBytes:  len(r.arena),
		Orphaned:  r.orphaned,
		Truncated: r.truncated,
	}
	if s.Frames > 0 {
		s.Oldest = r.slot(r.first).time
		s.Newest = r.slot(r.next - 1).time
	}
	return s
}

func (r *Ring) slot(i uint64) *slot { return &r.slots[i%uint64(len(r.slots))] }

// Cursor returns a cursor at the oldest frame held whose capture time is not
// before from: for a clip, from is the trigger's time minus the pre-roll.
// When every frame held is older, the cursor waits for the next frame
// pushed; when the oldest frame held is already later than from (the ring
// started recently, or its caps hold less than the pre-roll), it starts
// there, and the first frame's Time says how much run-up the clip has.
// In a ring of H.264 the cursor starts at the last key frame at or before
// from instead (the oldest frame held if none is), so that the clip
// decodes from its first frame and holds at least the run-up from from;
// when none is held it waits for the next frame pushed, a key frame.
// Close the cursor when done: the ring wakes every open one on each Push.
func (r *Ring) Cursor(from time.Time) *Cursor {
	c := &Cursor{r: r, wake: make(chan struct{}, 1)}
	r.mu.Lock()
	defer r.mu.Unlock()
	c.next = r.next
	if r.gop {
		if r.first < r.next {
			c.next = r.first // a key frame
		}
		for i := r.first; i < r.next && !r.slot(i).time.After(from); i++ {
			if r.slot(i).key {
				c.next = i
			}
		}
		r.cursors = append(r.cursors, c)
		return c
	}
	for i := r.first; i < r.next; i++ {
		if !r.slot(i).time.Before(from) {
			c.next = i
			break
		}
	}
	r.cursors = append(r.cursors, c)
	return c
}

// Cursor reads a ring's frames in push order. A cursor is for one goroutine;
// its ring may be pushed to concurrently.
type Cursor struct {
	r      *Ring
	next   uint64 // index of the next frame to read
	lost   uint64
	wake   chan struct{}
	closed bool
}

// ErrCursorClosed is returned by a closed cursor's Next.
var ErrCursorClosed = errors.New("clip: cursor closed")

// TryNext copies the cursor's next frame into buf (reusing it when it is
// large enough: no allocation in steady state) and returns it with ok true,
// or ok false when no frame newer than the last one read has been pushed
// yet. lost is how many frames were evicted from the ring before the cursor
// could read them, since the previous frame it returned: the frame returned
// is then the oldest still held. A frame's Data is buf's array; it stays
// valid after the ring moves on.
func (c *Cursor) TryNext(buf []byte) (f Frame, lost uint64, ok bool) {
	r := c.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.closed {
		return Frame{}, 0, false
	}
	if c.next < r.first {
		lost = r.first - c.next
		c.lost += lost
		c.next = r.first
	}
	if c.next >= r.next {
		// Nothing new yet (a cursor that lost frames to a group of
		// H.264 too large for the ring may find the ring empty).
		return Frame{}, lost, false
	}
	s := r.slot(c.next)
	f = Frame{
		Index:    c.next,
		Time:     s.time,
		Sequence: s.sequence,
		Origin:   s.origin,
		Key:      s.key,
		Data:     append(buf[:0], r.arena[s.off:s.off+s.n]...),
	}
	c.next++
	return f, lost, true
}

// Next is [Cursor.TryNext] that waits for a frame to be pushed, until ctx
// ends (returning ctx.Err()) or the cursor is closed ([ErrCursorClosed]).
func (c *Cursor) Next(ctx context.Context, buf []byte) (f Frame, lost uint64, err error) {
	for {
		f, l, ok := c.TryNext(buf)
		lost += l
		if ok {
			return f, lost, nil
		}
		if c.isClosed() {
			return Frame{}, lost, ErrCursorClosed
		}
		select {
		case <-ctx.Done():
			return Frame{}, lost, ctx.Err()
		case <-c.wake:
		}
	}
}

func (c *Cursor) isClosed() bool {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	return c.closed
}

// Lost is how many frames the cursor has lost to eviction in all.
func (c *Cursor) Lost() uint64 {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	return c.lost
}

// Close detaches the cursor from its ring and ends a Next waiting on it; it
// may be called from another goroutine. Closing twice does nothing.
func (c *Cursor) Close() {
	r := c.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	if i := slices.Index(r.cursors, c); i >= 0 {
		r.cursors = slices.Delete(r.cursors, i, i+1)
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}
