package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"sync/atomic"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/clip"
	"github.com/keyframe-cam/keyframe/internal/clock"
	"github.com/keyframe-cam/keyframe/motion"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/recorder"
)

// maxSegmentBytes bounds one segment's frames, below the receiver's and the
// MQTT link's 4 MiB upload limit with room for the envelope: a segment of
// large frames is cut before clip.segment has passed.
const maxSegmentBytes = 3 << 20

// clipper makes an event's clip (docs/envelope.md §4.4): the frame loop
// feeds every frame to the pre-roll ring (feeder, which never holds it up),
// opens a cursor on the ring at the event's start (Motion.PreRoll before
// the trigger) and, every ClipSegment of frame time, asks the record worker
// for a cut; the worker reads the ring up to the cut and signs what it read
// as a segment record, so nothing slow runs on the frame path. At the end
// record the worker cuts the rest (through the post-roll) and lists every
// segment's hash in the end record.
//
// A worker that falls behind the ring (a slow signer or spool with a small
// ring) loses the oldest frames it had not read: counted in lost and
// logged, the clip goes on from the oldest frame still held. The fields
// below feeder are the worker's alone.
type clipper struct {
	ring    *clip.Ring
	feeder  *clip.Feeder
	enc     clip.Encoder  // H.264: closed when the feeder stops; nil for MJPEG
	h264    bool          // clip.codec h264
	segment time.Duration // frame time between cuts
	budget  int64         // one clip's bytes at most
	// segment.type and the media object's type of its segments.
	frameType, mediaType string

	// The open clip.
	cur      *clip.Cursor
	event    string
	trigger  time.Time // the trigger frame's capture time: t_us 0
	from     time.Time // the event's start: the pre-roll's first moment
	clock    clipTime  // the latest reading of the clock the frame loop gave
	src      *provenance.Source
	sum      motion.Summary
	w, h     int
	index    uint32
	hashes   [][]byte
	bytes    int64
	last     time.Time // the last frame taken
	stopped  bool      // the clip reached its budget or MaxClipSegments
	pending  clip.Frame
	havePend bool
	needKey  bool // H.264: a frame was left out, the clip goes on at the next key frame

	// The segment being cut (reused).
	data   []byte
	frames []provenance.ClipFrame
	read   []byte // the cursor's copy buffer

	segments, framesIn, lost, skipped, cutShort atomic.Uint64
}

// clipTime is the frame loop's reading of the clock for a clip's frames,
// which the record worker signs seconds later: a stamp taken at frame time
// now, and the frame time since which the clock has been synchronised
// (zero: it is not). A segment's record time is its first frame's, with
// that frame's clock quality: a clock set by NTP in the middle of an event
// makes the segments captured after it synced and those before not, as for
// any record (docs/envelope.md §6).
type clipTime struct {
	st         recorder.Stamp
	now        time.Time
	syncedFrom time.Time
}

// read takes the stamp st of the frame captured at t.
func (c *clipTime) read(st recorder.Stamp, t time.Time) {
	switch {
	case !st.Synced:
		c.syncedFrom = time.Time{}
	case c.syncedFrom.IsZero():
		c.syncedFrom = t
	}
	c.st, c.now = st, t
}

// at is the stamp of a frame captured at t (at or before the reading).
func (c clipTime) at(t time.Time) recorder.Stamp {
	st := c.st
	st.SinceBoot = max(0, st.SinceBoot+t.Sub(c.now))
	st.Synced = !c.syncedFrom.IsZero() && !t.Before(c.syncedFrom)
	return st
}

// clipStats are the clipper's counters, for the MQTT status reply.
type clipStats struct {
	Segments uint64 `json:"clip_segments"`     // segment records signed
	Frames   uint64 `json:"clip_frames"`       // frames in them
	Lost     uint64 `json:"clip_frames_lost"`  // evicted from the ring before the worker read them
	Skipped  uint64 `json:"clip_frames_stale"` // before the clip's start or not after the frame before (a clock step, a source restarted on a new timeline)
	CutShort uint64 `json:"clips_cut_short"`   // clips stopped at clip.max_bytes or the segment limit
	Dropped  uint64 `json:"clip_encoder_drops"`
	// H.264 only: the encoder's errors (its command died, a unit matched
	// no frame) and the units the ring refused after a loss until the
	// next key frame.
	EncoderErrors uint64 `json:"clip_encoder_errors,omitempty"`
	Orphaned      uint64 `json:"clip_frames_orphaned,omitempty"`
}

func newClipper(c *Config, clk clock.Clock, log *slog.Logger) (*clipper, error) {
	cfg := clip.DefaultConfig()
	cfg.PreRoll = c.Motion.PreRoll
	cfg.Rate = c.ClipRate
	cfg.Quality = c.ClipQuality
	cfg.MaxBytes = c.ClipRing
	cl := &clipper{segment: c.ClipSegment, budget: c.ClipMaxBytes, frameType: clip.ContentType, mediaType: provenance.FramesMediaType}
	if c.ClipCodec == "h264" {
		cfg.Codec, cfg.KeyInterval = clip.CodecH264, c.ClipKeyInterval
		cfg.MaxFrames = max(cfg.MaxFrames, cfg.MinFrames())
		cl.h264, cl.frameType, cl.mediaType = true, clip.H264ContentType, provenance.H264MediaType
	}
	ring, err := clip.NewRing(cfg)
	if err != nil {
		return nil, err
	}
	cl.ring = ring
	if !cl.h264 {
		if cl.feeder, err = clip.NewFeeder(ring, cfg, clk); err != nil {
			return nil, err
		}
		return cl, nil
	}
	if err := c.validateClipEncoder(); err != nil {
		return nil, err
	}
	enc, err := c.clipEncoder(cfg, clk, log)
	if err != nil {
		return nil, err
	}
	if cl.feeder, err = clip.NewH264Feeder(ring, cfg, enc, clk); err != nil {
		_ = enc.Close()
		return nil, err
	}
	cl.enc = enc
	return cl, nil
}

func (c *clipper) stats() clipStats {
	fs := c.feeder.Stats()
	return clipStats{
		Segments: c.segments.Load(), Frames: c.framesIn.Load(), Lost: c.lost.Load(),
		Skipped: c.skipped.Load(), CutShort: c.cutShort.Load(), Dropped: fs.Dropped,
		EncoderErrors: fs.EncoderErrors + fs.Misaligned, Orphaned: fs.Orphaned,
	}
}

// begin opens the clip of event on the worker: cur was opened by the frame
// loop at the start decision, trigger is the start record's frame time.
func (a *Agent) clipBegin(j job, trigger time.Time, w, h int) {
	c := a.clips
	if c.cur != nil {
		c.cur.Close() // a clip left open (cannot happen: an end precedes every start)
	}
	c.cur, c.event, c.trigger, c.clock, c.src, c.sum = j.cursor, j.event, trigger, j.clock, j.src, j.sum
	c.w, c.h, c.from = w, h, j.sum.Start
	c.index, c.hashes, c.bytes, c.last, c.stopped, c.havePend, c.needKey = 0, c.hashes[:0], 0, time.Time{}, false, false, false
	if c.h264 {
		// The cursor starts at the last key frame at or before the
		// event's start: the run-up before it is part of the clip.
		c.from = time.Time{}
	}
	c.data, c.frames = c.data[:0], c.frames[:0]
}

// clipCut signs the frames of the open clip of event up to until as
// segments; clock is the frame loop's at until.
func (a *Agent) clipCut(event string, until time.Time, clock clipTime) {
	c := a.clips
	if c.cur == nil || c.event != event {
		return
	}
	c.clock = clock
	for !c.stopped {
		f, ok := c.next(until, a)
		if !ok {
			break
		}
		if f.Time.Before(c.from) || (!c.last.IsZero() && !f.Time.After(c.last)) {
			c.skipped.Add(1)
			c.needKey = c.h264 // the frames after it refer to it
			continue
		}
		if c.needKey && !f.Key {
			c.skipped.Add(1)
			continue
		}
		c.needKey = false
		if c.bytes+int64(len(f.Data)) > c.budget {
			a.log.Warn("clip stopped at its byte budget (clip.max_bytes); the event goes on", "event", event, "bytes", c.bytes, "budget", c.budget)
			c.stop(a)
			break
		}
		if n := len(c.frames); n == provenance.MaxSegmentFrames || (n > 0 && (len(c.data)+len(f.Data) > maxSegmentBytes ||
			f.Time.Sub(c.trigger) >= time.Duration(c.frames[0].TUs)*time.Microsecond+c.segment)) {
			// Full: frames, bytes, or clip.segment of frame time (the
			// pre-roll is cut like the rest).
			a.clipSign()
			if c.stopped {
				break
			}
		}
		c.frames = append(c.frames, provenance.NewClipFrame(f.Data, f.Time.Sub(c.trigger).Microseconds()))
		c.data = append(c.data, f.Data...)
		c.bytes += int64(len(f.Data))
		c.last = f.Time
	}
	if len(c.frames) > 0 {
		a.clipSign()
	}
}

// next returns the clip's next frame at or before until.
func (c *clipper) next(until time.Time, a *Agent) (clip.Frame, bool) {
	if !c.havePend {
		f, lost, ok := c.cur.TryNext(c.read)
		if lost > 0 {
			c.lost.Add(lost)
			c.needKey = c.h264
			a.log.Warn("clip frames lost: the record worker fell behind the pre-roll ring (clip.ring_bytes)", "event", c.event, "lost", lost)
		}
		if !ok {
			return clip.Frame{}, false
		}
		c.read = f.Data[:0]
		c.pending, c.havePend = f, true
	}
	if c.pending.Time.After(until) {
		return clip.Frame{}, false
	}
	c.havePend = false
	return c.pending, true
}

// stop ends the open clip early.
func (c *clipper) stop(a *Agent) {
	c.stopped = true
	c.cutShort.Add(1)
	if len(c.frames) > 0 {
		a.clipSign()
	}
}

// clipSign signs the segment cut so far.
func (a *Agent) clipSign() {
	c := a.clips
	if len(c.hashes) == provenance.MaxClipSegments {
		a.log.Warn("clip stopped at the most segments an end record lists", "event", c.event, "segments", len(c.hashes))
		c.stopped = true
		c.cutShort.Add(1)
		c.data, c.frames = c.data[:0], c.frames[:0]
		return
	}
	first := c.trigger.Add(time.Duration(c.frames[0].TUs) * time.Microsecond)
	st := c.clock.at(first)
	p := &provenance.Payload{
		Device: a.device,
		Event:  c.event,
		Kind:   provenance.KindSegment,
		Boot:   a.stamp.Boot(),
		Time:   st.Time(first),
		Motion: provenance.Motion{
			Frames:      uint32(c.sum.MotionFrames),
			PeakAreaPPM: c.sum.PeakAreaPPM,
			Box:         [4]int32{int32(c.sum.Box.Min.X), int32(c.sum.Box.Min.Y), int32(c.sum.Box.Max.X), int32(c.sum.Box.Max.Y)},
			Width:       uint32(c.w),
			Height:      uint32(c.h),
		},
		KeyStore: a.key.Backend(),
		Source:   c.src,
		Segment:  &provenance.Segment{Index: c.index, Type: c.frameType, Frames: c.frames},
	}
	n := len(c.frames)
	media := func(p *provenance.Payload) ([][]byte, error) {
		p.Media = []provenance.Media{provenance.NewMedia(provenance.RoleFrames, c.mediaType, c.data)}
		return [][]byte{c.data}, nil
	}
	if a.e2ee != nil {
		// Sealed to the owner's keys, or not made without a key set
		// (never in the clear).
		s := a.e2ee.current()
		if s == nil {
			a.e2ee.withoutPictures()
			c.data, c.frames = c.data[:0], c.frames[:0]
			return
		}
		media = sealed(s, provenance.RoleFrames, c.data)
	}
	_, h, err := a.rec.RecordWith(p, media)
	switch {
	case err == nil:
	case h != [32]byte{}:
		a.log.Error("clip segment signed but not spooled: it will be missing from the clip", "event", c.event, "segment", c.index, "err", err)
	default:
		a.log.Error("clip segment lost: not signed", "event", c.event, "segment", c.index, "frames", n, "err", err)
		c.data, c.frames = c.data[:0], c.frames[:0]
		return
	}
	c.hashes = append(c.hashes, h[:])
	c.index++
	c.segments.Add(1)
	c.framesIn.Add(uint64(n))
	a.log.Debug("clip segment", "event", c.event, "segment", c.index-1, "frames", n, "bytes", len(c.data))
	// The spool holds its own copy: the buffers are the next segment's.
	c.data, c.frames = c.data[:0], c.frames[:0]
}

// clipEnd cuts the rest of the open clip of event (through end, the
// post-roll's end) and returns the segments' hashes for the end record, or
// nil when the event has no clip.
func (a *Agent) clipEnd(event string, end time.Time, clock clipTime) [][]byte {
	c := a.clips
	if c.cur == nil || c.event != event {
		return nil
	}
	a.clipCut(event, end, clock)
	c.cur.Close()
	c.cur = nil
	if len(c.hashes) == 0 {
		return nil
	}
	return c.hashes
}

// clipEncoder makes the H.264 clips' encoder clip.encoder names: the
// board's hardware encoder (auto: the first V4L2 memory-to-memory node that
// encodes H.264, which must exist at start; or a node's path, opened with
// the first frame and again after a failure) or the command
// clip.encoder_exec (exec).
func (c *Config) clipEncoder(cfg clip.Config, clk clock.Clock, log *slog.Logger) (clip.Encoder, error) {
	if c.ClipEncoder != "exec" {
		if c.ClipEncoder == "auto" {
			if _, err := clip.FindM2M(""); err != nil {
				return nil, fmt.Errorf("agent: config clip.encoder: auto: %w (no V4L2 memory-to-memory node under /dev encodes H.264 from YU12: name the encoder's node, set clip.encoder = exec to encode with clip.encoder_exec (ffmpeg with libx264), or clip.codec = mjpeg)", err)
			}
		}
		return clip.NewM2MEncoder(clip.M2MEncoderConfig{Device: c.ClipEncoder, FPS: cfg.Rate, GOP: cfg.GOP(), Logger: log}, clk)
	}
	argv, err := capture.ParseCommand(c.ClipEncoderExec)
	if err != nil {
		return nil, fmt.Errorf("agent: config clip.encoder_exec: %w", err)
	}
	if _, err := exec.LookPath(argv[0]); err != nil {
		return nil, fmt.Errorf("agent: config clip.encoder_exec: %s: %w (clip.encoder = exec runs it for H.264 clips: install it, e.g. Debian's ffmpeg, or set clip.codec = mjpeg)", argv[0], err)
	}
	return clip.NewExecEncoder(clip.ExecEncoderConfig{Argv: argv, FPS: cfg.Rate, GOP: cfg.GOP(), Logger: log}, clk)
}

// ringH264 is the WebRTC live view's H.264 (H264Source) when clips are
// H.264: the clip encoder's access units as the ring takes them, so one
// encoder serves clips and live view. The live view reads it only while a
// session runs; a read after a pause (or after frames were lost) starts
// again at the newest frames, asking the encoder for a key frame (the
// hardware encoder makes one at once; the exec encoder's next comes within
// clip.key_interval), and skips what is older than that start.
type ringH264 struct {
	c     *clipper
	clk   clock.Clock
	cur   *clip.Cursor
	buf   []byte
	start time.Time // frames before it are not sent
	last  time.Time // the last read
}

// ringPause is how long the live view may leave the source unread before
// the next read starts afresh.
const ringPause = time.Second

// liveSource returns the clips' ring as an H264Source, or nil when clips
// are not H.264.
func (c *clipper) liveSource(clk clock.Clock) H264Source {
	if c == nil || !c.h264 {
		return nil
	}
	return &ringH264{c: c, clk: clock.Or(clk)}
}

// NextAccessUnit returns the next access unit the encoder gave the ring.
func (s *ringH264) NextAccessUnit(ctx context.Context) (AccessUnit, error) {
	now := s.clk.Now()
	if s.cur == nil || now.Sub(s.last) > ringPause {
		s.restart(now)
	}
	for {
		f, lost, err := s.cur.Next(ctx, s.buf)
		if err != nil {
			s.cur.Close()
			s.cur = nil
			return AccessUnit{}, err
		}
		s.buf = f.Data
		if lost > 0 {
			// A reader too slow for the ring: what follows does not decode
			// without its references; start again from a new key frame.
			s.restart(s.clk.Now())
			continue
		}
		if f.Time.Before(s.start) {
			continue
		}
		s.last = s.clk.Now()
		return AccessUnit{Data: f.Data, Time: f.Time, Key: f.Key}, nil
	}
}

// RequestKey asks the clip encoder for a key frame (the live view's
// browsers report a lost picture); safe from any goroutine.
func (s *ringH264) RequestKey() { s.c.feeder.RequestKey() }

// restart opens a cursor at now and asks the encoder for a key frame.
func (s *ringH264) restart(now time.Time) {
	if s.cur != nil {
		s.cur.Close()
	}
	s.cur, s.start, s.last = s.c.ring.Cursor(now), now, now
	s.c.feeder.RequestKey()
}
