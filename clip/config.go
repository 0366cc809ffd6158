package clip

import (
	"fmt"
	"math"
	"time"
)

// Config sizes the pre-roll [Ring] and tunes the [Feeder]. Start from
// [DefaultConfig]; [Config.Validate] states the bounds of every field.
//
// The defaults are sized for a Raspberry Pi Zero (512 MB of RAM, shared with
// the GPU, a single ARM11 core):
//
//   - PreRoll 5 s: the run-up of a person walking into view, the figure
//     peers default to (Frigate's pre_capture 5 s); at most [MaxPreRoll].
//   - Rate 10 frames/s: the agent's default capture rate (capture.fps), so
//     a 10 fps camera's MJPEG frames all go into the ring.
//   - EncodeShare 0.5: the encoder (image/jpeg, pure Go: 6–28 ms a
//     640x480 frame on an amd64 server core, so likely more than a frame
//     interval on a Pi Zero's ARM11, not measured there yet) rests as long
//     as it worked, so however slow it is, half of the core is left to the
//     detector and the rest of the agent; the clip's rate drops instead.
//   - Quality 75: image/jpeg's default, about what UVC cameras use for
//     MJPEG, whose 640x480 frames are typically 30–60 KB; capture's
//     synthetic scene encodes to 29 KB at it (docs/clips.md).
//   - MaxFrames 320: [MaxPreRoll] at 30 frames/s (the highest Rate) is 301
//     frames counting both ends, so the frame cap never cuts a pre-roll
//     short; the index costs 40 bytes a frame on 32-bit ARM (13 KB), 56
//     on 64-bit (18 KB).
//   - MaxBytes 16 MiB: the longest pre-roll (10 s) at 10 frames/s of
//     1280x720 MJPEG (100–150 KB a frame), or of 640x480 at 30 frames/s
//     (300 × 30–50 KB); about 3% of a Pi Zero's RAM, allocated once.
//     A frame larger than MaxBytes is refused ([ErrTooLarge]).
//
// The ring also holds the frames a clip consumer has not read yet after the
// trigger, so headroom above PreRoll × Rate × frame size is what lets a
// consumer fall behind without losing frames.
type Config struct {
	// PreRoll is how much of the run-up before a trigger a clip starts
	// with: a consumer reads the ring from the trigger's time minus
	// PreRoll. 0..MaxPreRoll. Default 5 s.
	PreRoll time.Duration
	// Rate is the most frames per second the ring takes, decimated by the
	// frames' capture times: MJPEG frames are passed through and raw ones
	// encoded at up to this rate. 0.5..30. Default 10.
	Rate float64
	// Quality is the JPEG quality raw frames are encoded at, 1..100.
	// Default 75.
	Quality int
	// EncodeShare is the most of the time the encoder of raw frames may
	// spend encoding: after a frame that took d, it waits
	// d×(1−EncodeShare)/EncodeShare before taking the next (the first frame
	// offered meanwhile waits, the others are dropped), so a CPU too slow
	// to encode at Rate gives a slower clip, not a slower detector. 0.05..1 (1: no rest). Default 0.5.
	EncodeShare float64
	// MaxFrames caps the frames the ring holds, at least
	// PreRoll × Rate + 1 (so a full pre-roll fits), at most 100000.
	// Default 320.
	MaxFrames int
	// MaxBytes caps the bytes of encoded frames the ring holds: its arena,
	// allocated once. 64 KiB..1 GiB. Default 16 MiB.
	MaxBytes int
	// Codec is what the ring holds: CodecMJPEG (JPEG frames, the
	// default) or CodecH264 (H.264 access units from an [Encoder], kept in
	// whole groups of pictures: see [Ring]).
	Codec Codec
	// KeyInterval is the time from one H.264 key frame to the next that
	// the encoder is asked for (its GOP: KeyInterval × Rate pictures,
	// [Config.GOP]); a clip's run-up starts at a key frame, so it may
	// start up to KeyInterval before the pre-roll. CodecH264 only.
	// 0.5 s..10 s. Default 2 s.
	KeyInterval time.Duration
}

// Codec is the coding of a clip's frames.
type Codec uint8

// Codecs of a clip.
const (
	// CodecMJPEG: every frame a JPEG (the camera's own, or encoded by the
	// feeder).
	CodecMJPEG Codec = iota
	// CodecH264: every frame an H.264 access unit (capture.FormatH264)
	// from an [Encoder].
	CodecH264
)

// String returns "mjpeg" or "h264".
func (c Codec) String() string {
	switch c {
	case CodecMJPEG:
		return "mjpeg"
	case CodecH264:
		return "h264"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// ParseCodec parses clip.codec: mjpeg or h264.
func ParseCodec(s string) (Codec, error) {
	switch s {
	case "mjpeg":
		return CodecMJPEG, nil
	case "h264":
		return CodecH264, nil
	}
	return 0, fmt.Errorf("clip: codec %q: want mjpeg or h264", s)
}

// Bounds of the configuration.
const (
	// MaxPreRoll is the longest pre-roll a ring can be configured for.
	MaxPreRoll = 10 * time.Second

	minRate, maxRate       = 0.5, 30
	minQuality, maxQuality = 1, 100
	minShare, maxShare     = 0.05, 1
	maxFrames              = 100000
	minBytes, maxBytes     = 64 << 10, 1 << 30
	minKey, maxKey         = 500 * time.Millisecond, 10 * time.Second
)

// DefaultConfig returns the defaults documented on [Config].
func DefaultConfig() Config {
	return Config{
		PreRoll:     5 * time.Second,
		Rate:        10,
		Quality:     75,
		EncodeShare: 0.5,
		MaxFrames:   320,
		MaxBytes:    16 << 20,
		KeyInterval: 2 * time.Second,
	}
}

// Validate reports the first field out of its bounds, by name.
func (c Config) Validate() error {
	if c.PreRoll < 0 || c.PreRoll > MaxPreRoll {
		return fmt.Errorf("clip: config PreRoll %v, want 0..%v", c.PreRoll, MaxPreRoll)
	}
	if math.IsNaN(c.Rate) || c.Rate < minRate || c.Rate > maxRate {
		return fmt.Errorf("clip: config Rate %v frames/s, want %v..%v", c.Rate, minRate, maxRate)
	}
	if c.Quality < minQuality || c.Quality > maxQuality {
		return fmt.Errorf("clip: config Quality %d, want %d..%d", c.Quality, minQuality, maxQuality)
	}
	if math.IsNaN(c.EncodeShare) || c.EncodeShare < minShare || c.EncodeShare > maxShare {
		return fmt.Errorf("clip: config EncodeShare %v, want %v..%v", c.EncodeShare, minShare, maxShare)
	}
	switch c.Codec {
	case CodecMJPEG:
	case CodecH264:
		if c.KeyInterval < minKey || c.KeyInterval > maxKey {
			return fmt.Errorf("clip: config KeyInterval %v, want %v..%v", c.KeyInterval, minKey, maxKey)
		}
	default:
		return fmt.Errorf("clip: config Codec %v, want mjpeg or h264", c.Codec)
	}
	if need := c.MinFrames(); c.MaxFrames < need || c.MaxFrames > maxFrames {
		what := fmt.Sprintf("PreRoll %v at Rate %v needs %d frames, plus one", c.PreRoll, c.Rate, need-1)
		if c.Codec == CodecH264 {
			what = fmt.Sprintf("PreRoll %v and a KeyInterval %v at Rate %v need %d frames, plus one", c.PreRoll, c.KeyInterval, c.Rate, need-1)
		}
		return fmt.Errorf("clip: config MaxFrames %d, want %d..%d (%s)", c.MaxFrames, need, maxFrames, what)
	}
	if c.MaxBytes < minBytes || c.MaxBytes > maxBytes {
		return fmt.Errorf("clip: config MaxBytes %d, want %d..%d", c.MaxBytes, minBytes, maxBytes)
	}
	return nil
}

// MinFrames is the least MaxFrames may be: a full pre-roll plus one frame,
// and for H.264 the group of pictures the pre-roll may start in.
func (c Config) MinFrames() int {
	n := c.preRollFrames() + 1
	if c.Codec == CodecH264 {
		n += c.GOP()
	}
	return n
}

// GOP is how many pictures KeyInterval spans at Rate (at least 1): what an
// encoder is asked for as its key frame interval.
func (c Config) GOP() int {
	return max(1, int(math.Round(c.KeyInterval.Seconds()*c.Rate)))
}

// preRollFrames is how many frames PreRoll spans at Rate, rounded up.
func (c Config) preRollFrames() int {
	return int(math.Ceil(c.PreRoll.Seconds() * c.Rate))
}

// interval is the shortest time between two frames the ring takes.
func (c Config) interval() time.Duration {
	return time.Duration(float64(time.Second) / c.Rate)
}
