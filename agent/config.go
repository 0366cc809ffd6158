package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/clip"
	"github.com/keyframe-cam/keyframe/internal/mqttlink"
	"github.com/keyframe-cam/keyframe/motion"
	"github.com/keyframe-cam/keyframe/uploader"
)

// Config is the agent's whole configuration. Every field has a default, bounds
// and a one-line description in the field table (see Fields), which is also
// what `keyframe config` prints and what docs/config.md is generated from.
type Config struct {
	DataDir    string // where the key, chain state and spool live
	KeyFile    string // device key file; empty = DataDir/device.key
	KeyBackend string // where the device key lives: board.BackendFile or board.BackendTPM
	TPM        string // TPM for the tpm backend: a device path or tcp:HOST:PORT (swtpm)
	TPMHandle  uint32 // persistent handle of the TPM-held key
	CertFile   string // device certificate chain (PEM); empty = DataDir/device-cert.pem

	Source      string // auto, v4l2, exec, synthetic, dir
	Exec        string // the command of source exec, split without a shell
	ExecFormat  string // what the command writes: mjpeg, yuv420, yuyv
	ExecMaxJPEG int    // largest MJPEG frame of the command, bytes
	Device      string // V4L2 device
	Dir         string // image-sequence directory (Source "dir")
	Width       int
	Height      int
	FPS         float64
	Buffers     int
	Seed        int64
	LoopDir     bool
	SourceRetry time.Duration
	RetryCap    time.Duration
	Format      string
	Controls    string
	Stall       time.Duration

	Motion motion.Config

	ThumbMaxSide int
	ThumbQuality int
	ThumbCrop    bool

	// Clips: every event gets a clip of signed segments from
	// Motion.PreRoll before its trigger through its post-roll (agent/clips.go).
	ClipEnabled  bool
	ClipRate     float64
	ClipQuality  int
	ClipRing     int           // bytes of the pre-roll ring
	ClipSegment  time.Duration // a segment's length
	ClipMaxBytes int64         // one clip's bytes at most
	// H.264 clips (docs/clips.md): the codec, the encoder (auto: the
	// board's hardware encoder; exec: ClipEncoderExec, e.g. ffmpeg), and
	// the key frame interval asked of it.
	ClipCodec       string
	ClipEncoder     string
	ClipEncoderExec string
	ClipKeyInterval time.Duration
	// The live view (live.go): the camera waits at its receiver to be
	// asked, then streams JPEG frames while an owner watches.
	LiveEnabled bool
	LiveFPS     float64
	LiveMaxSide int
	LiveQuality int
	LiveMaxTime time.Duration
	// The LAN view (lan.go): the agent's own MJPEG stream and snapshot,
	// over TLS, for a client that shows the token; off with LANListen "".
	LANListen     string
	LANTokenFile  string
	LANCertFile   string
	LANKeyFile    string
	LANMaxViewers int
	// End-to-end encryption (e2ee.go, docs/e2ee.md): "" off, 64 hex the
	// pinned owner fingerprint, "first" trust on first use.
	E2EEOwner      string
	E2EEKeysetPoll time.Duration

	SpoolDir      string // empty = DataDir/spool
	SpoolMaxBytes int64
	SpoolPolicy   string
	SpoolSegBytes int64 // clip segments' budget, apart from SpoolMaxBytes

	UploadURL      string
	MQTTPrefix     string        // MQTT topic prefix
	HADiscovery    bool          // publish Home Assistant MQTT discovery
	MQTTAckTimeout time.Duration // how long an MQTT send waits for the receiver's ack
	Version        string        // software version, for Home Assistant and MQTT status (set by the binary, not the file)
	UploadCAFile   string
	BackoffBase    time.Duration
	BackoffCap     time.Duration
	RetryWindow    time.Duration
	QuickRetry     time.Duration
	RetryAfterCap  time.Duration
	StableAfter    time.Duration
	UploadRate     float64
	UploadMaxRate  int64 // bandwidth cap, bytes/s; 0 = none
	UploadTimeout  time.Duration

	// A broker that authenticates by password (Home Assistant's Mosquitto
	// add-on): the username, the file the password is read from at start
	// (never the password itself: it is never logged nor printed), and the
	// opt-in to clear text on a private network (MQTTPlaintextLAN).
	MQTTUsername     string
	MQTTPasswordFile string
	MQTTPlaintextLAN bool

	WatchdogDevice  string
	WatchdogTimeout time.Duration
	WatchdogStall   time.Duration

	LogLevel string
}

// Field describes one configuration key.
type Field struct {
	Name string // key in the file, e.g. capture.width; env KEYFRAME_CAPTURE_WIDTH
	Desc string
	get  func(*Config) string
	set  func(*Config, string) error
}

// EnvName is the environment variable that overrides the field.
func (f Field) EnvName() string {
	return "KEYFRAME_" + strings.ToUpper(strings.ReplaceAll(f.Name, ".", "_"))
}

// Value returns the field's value in c, formatted as in a config file.
func (f Field) Value(c *Config) string { return f.get(c) }

func strField(name, desc string, p func(*Config) *string, allowed ...string) Field {
	return Field{name, desc,
		func(c *Config) string { return *p(c) },
		func(c *Config, v string) error {
			if len(allowed) > 0 && !slices.Contains(allowed, v) {
				return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
			}
			*p(c) = v
			return nil
		}}
}

// parsedField is a string setting checked by the parser of the package that
// uses it, so the file, line and key are named when it is wrong.
func parsedField(name, desc string, p func(*Config) *string, check func(string) error) Field {
	return Field{name, desc,
		func(c *Config) string { return *p(c) },
		func(c *Config, v string) error {
			if err := check(v); err != nil {
				return err
			}
			*p(c) = v
			return nil
		}}
}

func intField[T int | int64](name, desc string, lo, hi T, p func(*Config) *T) Field {
	return Field{name, desc + fmt.Sprintf(" [%d..%d]", lo, hi),
		func(c *Config) string { return strconv.FormatInt(int64(*p(c)), 10) },
		func(c *Config, v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("%q is not an integer", v)
			}
			if T(n) < lo || T(n) > hi || int64(T(n)) != n {
				return fmt.Errorf("%d is out of range [%d, %d]", n, lo, hi)
			}
			*p(c) = T(n)
			return nil
		}}
}

func floatField(name, desc string, lo, hi float64, p func(*Config) *float64) Field {
	return Field{name, desc + fmt.Sprintf(" [%g..%g]", lo, hi),
		func(c *Config) string { return strconv.FormatFloat(*p(c), 'g', -1, 64) },
		func(c *Config, v string) error {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return fmt.Errorf("%q is not a number", v)
			}
			if !(x >= lo && x <= hi) {
				return fmt.Errorf("%g is out of range [%g, %g]", x, lo, hi)
			}
			*p(c) = x
			return nil
		}}
}

func durField(name, desc string, lo, hi time.Duration, p func(*Config) *time.Duration) Field {
	return Field{name, desc + fmt.Sprintf(" [%v..%v]", lo, hi),
		func(c *Config) string { return p(c).String() },
		func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("%q is not a duration (e.g. 1.5s, 2m)", v)
			}
			if d < lo || d > hi {
				return fmt.Errorf("%v is out of range [%v, %v]", d, lo, hi)
			}
			*p(c) = d
			return nil
		}}
}

func boolField(name, desc string, p func(*Config) *bool) Field {
	return Field{name, desc,
		func(c *Config) string { return strconv.FormatBool(*p(c)) },
		func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%q is not true or false", v)
			}
			*p(c) = b
			return nil
		}}
}

// Fields lists every configuration key in file order.
func Fields() []Field {
	return []Field{
		strField("device.data_dir", "directory for the device key, chain state and spool", func(c *Config) *string { return &c.DataDir }),
		strField("device.key_file", "device key file (ECDSA P-256, PKCS#8 PEM, mode 0600) for the file backend; empty = <data_dir>/device.key", func(c *Config) *string { return &c.KeyFile }),
		strField("device.cert_file", "device certificate chain (PEM, the device's certificate first) for mutual TLS to the receiver or broker, signed by the device key; empty = <data_dir>/device-cert.pem (used when it exists)", func(c *Config) *string { return &c.CertFile }),
		strField("device.key_backend", "where the device key lives: file (device.key_file) or tpm (a non-exportable key inside the TPM, device.tpm); every record names it", func(c *Config) *string { return &c.KeyBackend }, board.BackendFile, board.BackendTPM),
		strField("device.tpm", "TPM 2.0 for the tpm backend: a device path (the kernel's resource manager /dev/tpmrm0) or tcp:HOST:PORT (a swtpm socket, for tests)", func(c *Config) *string { return &c.TPM }),
		{"device.tpm_handle", "persistent TPM handle of the device key, in the owner range 0x81000000-0x817FFFFF (created there on first use)",
			func(c *Config) string { return fmt.Sprintf("%#x", c.TPMHandle) },
			func(c *Config, v string) error {
				h, err := strconv.ParseUint(v, 0, 32)
				if err != nil || h < 0x81000000 || h > 0x817FFFFF {
					return fmt.Errorf("%q is not a persistent owner handle in 0x81000000-0x817FFFFF", v)
				}
				c.TPMHandle = uint32(h)
				return nil
			}},

		strField("capture.source", "frame source: auto or v4l2 (the camera capture.device; without one keyframe waits for it and records nothing, never a made-up scene), exec (frames a command writes, capture.exec), synthetic (a generated scene), dir (images in capture.dir); every record names its source, and synthetic and dir are not cameras", func(c *Config) *string { return &c.Source }, "auto", "v4l2", "exec", "synthetic", "dir"),
		parsedField("capture.exec", "command of source exec, run without a shell, writing frames of capture.width x capture.height to its stdout, e.g. \"rpicam-vid -t 0 -n --codec mjpeg -o -\" (a Raspberry Pi camera module); restarted with backoff when it exits", func(c *Config) *string { return &c.Exec }, func(v string) error {
			if v == "" {
				return nil
			}
			_, err := capture.ParseCommand(v)
			return err
		}),
		parsedField("capture.exec_format", "what capture.exec writes: mjpeg (JPEG images back to back), yuv420 (raw I420, no row padding) or yuyv (raw packed 4:2:2)", func(c *Config) *string { return &c.ExecFormat }, func(v string) error {
			_, err := capture.ParseExecFormat(v)
			return err
		}),
		intField("capture.exec_max_jpeg", "largest MJPEG frame of capture.exec in bytes; a larger one restarts the command", capture.MinExecMaxJPEG, 64<<20, func(c *Config) *int { return &c.ExecMaxJPEG }),
		strField("capture.device", "V4L2 capture device", func(c *Config) *string { return &c.Device }),
		strField("capture.dir", "image-sequence directory (JPEG/PNG/BMP in name order) for source dir", func(c *Config) *string { return &c.Dir }),
		intField("capture.width", "requested frame width in pixels", 16, 4096, func(c *Config) *int { return &c.Width }),
		intField("capture.height", "requested frame height in pixels", 16, 4096, func(c *Config) *int { return &c.Height }),
		floatField("capture.fps", "frame rate; 0 = as fast as possible (dir and synthetic sources only)", 0, 120, func(c *Config) *float64 { return &c.FPS }),
		intField("capture.buffers", "V4L2 driver buffers", 2, 4, func(c *Config) *int { return &c.Buffers }),
		intField("capture.seed", "seed of the synthetic scene", int64(-1<<62), int64(1<<62), func(c *Config) *int64 { return &c.Seed }),
		boolField("capture.loop", "replay the image-sequence directory from the start when it ends", func(c *Config) *bool { return &c.LoopDir }),
		parsedField("capture.format", "V4L2 pixel format: auto (best for the size and rate), yuyv, nv12, yu12, grey, mjpeg", func(c *Config) *string { return &c.Format }, func(v string) error {
			_, err := capture.ParsePixelFormat(v)
			return err
		}),
		parsedField("capture.controls", "V4L2 controls set on every open, by normalised name: e.g. \"exposure_absolute=100, gain=4\" (keyframe probe lists them)", func(c *Config) *string { return &c.Controls }, func(v string) error {
			_, err := capture.ParseControls(v)
			return err
		}),
		durField("capture.stall", "a camera that delivers no frame for this long is closed and reopened", 500*time.Millisecond, time.Hour, func(c *Config) *time.Duration { return &c.Stall }),
		durField("capture.retry", "first reopen delay ceiling after a camera failure (full jitter, doubling)", 100*time.Millisecond, time.Hour, func(c *Config) *time.Duration { return &c.SourceRetry }),
		durField("capture.retry_cap", "largest reopen delay ceiling", 100*time.Millisecond, time.Hour, func(c *Config) *time.Duration { return &c.RetryCap }),

		intField("motion.analysis_width", "width the luma plane is downscaled to before analysis", 32, 1280, func(c *Config) *int { return &c.Motion.AnalysisWidth }),
		intField("motion.noise_floor", "lowest per-pixel difference, in luma levels, that counts as change", 1, 128, func(c *Config) *int { return &c.Motion.NoiseFloor }),
		floatField("motion.noise_k", "per-pixel threshold as a multiple of the measured noise level", 0.5, 20, func(c *Config) *float64 { return &c.Motion.NoiseK }),
		floatField("motion.min_area", "smallest moving blob, as a fraction of the frame", 0.0001, 0.5, func(c *Config) *float64 { return &c.Motion.MinArea }),
		floatField("motion.flicker_k", "a pixel's own threshold as a multiple of its variability, so pixels that keep changing (leaves, water, an on-screen clock) stop counting", 1, 20, func(c *Config) *float64 { return &c.Motion.FlickerK }),
		floatField("motion.shadow", "darkest a shadow may make a pixel, as a fraction of its background; darkening the neighbours share is shadow, not motion (0 = off)", 0, 0.9, func(c *Config) *float64 { return &c.Motion.Shadow }),
		floatField("motion.light_switch", "fraction of pixels still changed after brightness and contrast matching above which a change is global (light switch, IR switch): recalibrate, no event", 0.05, 1, func(c *Config) *float64 { return &c.Motion.LightSwitch }),
		intField("motion.brightness_step", "smallest change of the median brightness, in luma levels, that is a light switch: recalibrate, no event", 4, 255, func(c *Config) *int { return &c.Motion.BrightnessStep }),
		floatField("motion.contrast_step", "contrast ratio beyond which (or below whose inverse) a change is global (IR switch, lamp); smaller changes are compensated", 1.05, 4, func(c *Config) *float64 { return &c.Motion.ContrastStep }),
		floatField("motion.background_rate", "background learning rate per frame for still pixels", 0.001, 0.5, func(c *Config) *float64 { return &c.Motion.BackgroundRate }),
		intField("motion.min_motion_frames", "consecutive motion frames before an event starts", 1, 100, func(c *Config) *int { return &c.Motion.MinMotionFrames }),
		intField("motion.absorb_frames", "frames a pixel may stay changed while nothing in its blob moves before it becomes background (a parked car, a box put down)", 1, 65535, func(c *Config) *int { return &c.Motion.AbsorbFrames }),
		intField("motion.hold_frames", "frames a pixel may stay changed at most while its blob still moves a little (a person sitting: a hand, the head) before it becomes background; at or below absorb_frames holds nothing", 1, 65535, func(c *Config) *int { return &c.Motion.HoldFrames }),
		intField("motion.ghost_frames", "frames a still blob showing the background from before an object was absorbed there (the place a parked car left) is ignored before the background is re-seeded there; 0 = no ghost detection", 0, 255, func(c *Config) *int { return &c.Motion.GhostFrames }),
		{"motion.mask", "polygons never analysed (an on-screen clock): \"x,y x,y x,y; ...\" with x, y fractions of the frame; empty = none",
			func(c *Config) string { return motion.FormatPolygons(c.Motion.Mask) },
			func(c *Config, v string) error {
				polys, err := motion.ParsePolygons(v)
				if err != nil {
					return err
				}
				c.Motion.Mask = polys
				return nil
			}},
		{"motion.zones", "named areas; with zones only motion in a zone counts and events name their zones: \"name: x,y x,y x,y; ...\" (names a-z 0-9 _ -); empty = anywhere",
			func(c *Config) string { return motion.FormatZones(c.Motion.Zones) },
			func(c *Config, v string) error {
				zones, err := motion.ParseZones(v)
				if err != nil {
					return err
				}
				c.Motion.Zones = zones
				return nil
			}},
		durField("motion.pre_roll", "how long before the trigger frame an event is reported to start (never before the previous event's end)", 0, time.Hour, func(c *Config) *time.Duration { return &c.Motion.PreRoll }),
		durField("motion.event_gap", "quiet time after the last motion that ends an event", 0, time.Hour, func(c *Config) *time.Duration { return &c.Motion.EventGap }),
		durField("motion.post_roll", "time after the last motion frame included in the event", 0, time.Hour, func(c *Config) *time.Duration { return &c.Motion.PostRoll }),
		durField("motion.max_length", "longest event; a longer one is ended and a new one may start", time.Second, 24*time.Hour, func(c *Config) *time.Duration { return &c.Motion.MaxLength }),

		intField("thumbnail.max_side", "longest side of a thumbnail in pixels (never upscaled)", 32, 4096, func(c *Config) *int { return &c.ThumbMaxSide }),
		intField("thumbnail.quality", "JPEG quality of thumbnails", 1, 100, func(c *Config) *int { return &c.ThumbQuality }),
		boolField("thumbnail.crop", "crop thumbnails around the motion (its box grown by half its longer side, at least a quarter of the frame; docs/envelope.md)", func(c *Config) *bool { return &c.ThumbCrop }),

		boolField("clip.enabled", "record a clip of every event: the frames from motion.pre_roll before the trigger through the post-roll, signed in segments of clip.segment and uploaded as each is complete (docs/clips.md)", func(c *Config) *bool { return &c.ClipEnabled }),
		floatField("clip.rate", "most frames per second in a clip (with clip.codec mjpeg a camera's MJPEG frames are passed through untouched, raw frames JPEG-encoded; with h264 every frame is encoded)", 0.5, 30, func(c *Config) *float64 { return &c.ClipRate }),
		intField("clip.quality", "JPEG quality of clip frames the agent encodes (a camera's own MJPEG frames are kept as they are)", 1, 100, func(c *Config) *int { return &c.ClipQuality }),
		intField("clip.ring_bytes", "memory for the pre-roll ring of encoded frames, allocated once (16 MiB holds 10 s of 1280x720 MJPEG at 10 fps)", 64<<10, 1<<30, func(c *Config) *int { return &c.ClipRing }),
		durField("clip.segment", "length of a clip segment: each is a signed record uploaded as soon as it is complete", time.Second, 8*time.Second, func(c *Config) *time.Duration { return &c.ClipSegment }),
		intField("clip.max_bytes", "most bytes of frames in one clip; a longer event's clip stops there (logged), its records do not", int64(1<<20), int64(1<<32), func(c *Config) *int64 { return &c.ClipMaxBytes }),
		strField("clip.codec", "what a clip's frames are: mjpeg (JPEG frames, every camera) or h264 (H.264 access units from clip.encoder: fewer bytes than JPEG for a camera's picture; its run-up starts at a key frame, up to clip.key_interval before motion.pre_roll)", func(c *Config) *string { return &c.ClipCodec }, "mjpeg", "h264"),
		parsedField("clip.encoder", "the H.264 encoder of clip.codec h264: auto (the board's hardware encoder: the first V4L2 memory-to-memory node that encodes H.264, e.g. a Raspberry Pi's /dev/video11; the agent does not start without one), a hardware encoder's node (/dev/videoN: opened with the first frame, again after a failure), or exec (the command clip.encoder_exec, e.g. ffmpeg with libx264, on a board without one such as a Raspberry Pi 5)", func(c *Config) *string { return &c.ClipEncoder }, checkClipEncoder),
		parsedField("clip.encoder_exec", "with clip.encoder exec, the encoder command, run without a shell: raw YU12 frames on its stdin, H.264 (Annex B, no B-frames, one access unit per frame) on its stdout; {width}, {height}, {fps} (clip.rate) and {gop} (frames in clip.key_interval) are replaced; restarted with backoff if it dies", func(c *Config) *string { return &c.ClipEncoderExec }, checkCommand),
		durField("clip.key_interval", "with clip.codec h264, time from one key frame to the next asked of the encoder: the ring keeps whole groups of pictures, so a clip may start up to this long before motion.pre_roll", 500*time.Millisecond, 10*time.Second, func(c *Config) *time.Duration { return &c.ClipKeyInterval }),

		boolField("live.enabled", "with an https:// (or loopback http://) upload.url, wait at the receiver to be asked for a live view, and stream frames while its owner watches (docs/live.md)", func(c *Config) *bool { return &c.LiveEnabled }),
		floatField("live.fps", "most frames a second sent to a live view", 0.2, 30, func(c *Config) *float64 { return &c.LiveFPS }),
		intField("live.max_side", "longest side of a live frame in pixels (never upscaled)", 32, 4096, func(c *Config) *int { return &c.LiveMaxSide }),
		intField("live.quality", "JPEG quality of live frames", 1, 100, func(c *Config) *int { return &c.LiveQuality }),
		durField("live.max_time", "longest a live stream runs before the camera ends it (the viewer's page asks again; also a LAN view stream's longest)", time.Second, time.Hour, func(c *Config) *time.Duration { return &c.LiveMaxTime }),

		strField("lan.listen", "serve the agent's own MJPEG stream (/stream.mjpg) and snapshot (/snapshot.jpg) over HTTPS on this address, for Home Assistant on the LAN, e.g. :8443 (every interface: anyone who can reach the camera can connect, and gets nothing without the token) or 192.168.1.20:8443 (one interface); empty = off; frames follow live.fps, live.max_side, live.quality and live.max_time (docs/live.md)", func(c *Config) *string { return &c.LANListen }),
		strField("lan.token_file", "with lan.listen, a file holding the token (one line, at least 16 characters; not readable by others, e.g. mode 0600), read at start: the password of HTTP Basic (any username) or a Bearer token; never logged nor printed by keyframe config", func(c *Config) *string { return &c.LANTokenFile }),
		strField("lan.cert_file", "with lan.listen, the server certificate chain (PEM) of the LAN view; empty = a self-signed ECDSA P-256 certificate made once in <data_dir>/lan-cert.pem (its SHA-256 fingerprint logged at start, to pin)", func(c *Config) *string { return &c.LANCertFile }),
		strField("lan.key_file", "with lan.cert_file, its private key (PEM, not readable by others); empty with lan.cert_file empty = <data_dir>/lan-key.pem (mode 0600)", func(c *Config) *string { return &c.LANKeyFile }),
		intField("lan.max_viewers", "most LAN view streams at once (more get 503); frames are encoded once for all of them", 1, 16, func(c *Config) *int { return &c.LANMaxViewers }),

		parsedField("e2ee.owner", "end-to-end encryption of pictures to the owner's browsers (docs/e2ee.md): empty = off; 64 hex = the owner's pinned identity fingerprint (keyframe join writes it); first = pin the identity of the first key set the receiver gives (trust on first use, weaker). With it on, thumbnails and clips are sealed, records without a key set carry no pictures, the receiver's live view is sealed, and MQTT pictures are off (the LAN view stays)", func(c *Config) *string { return &c.E2EEOwner }, checkE2EEOwner),
		durField("e2ee.keyset_poll", "with e2ee.owner, how often the owner's key set is asked of the receiver (and at start), with jitter", 5*time.Second, 24*time.Hour, func(c *Config) *time.Duration { return &c.E2EEKeysetPoll }),

		strField("spool.dir", "spool directory; empty = <data_dir>/spool", func(c *Config) *string { return &c.SpoolDir }),
		intField("spool.max_bytes", "most bytes of unsent records kept on disk", int64(64<<10), int64(1<<40), func(c *Config) *int64 { return &c.SpoolMaxBytes }),
		strField("spool.policy", "when the spool is full: refuse-new (new events are refused and counted) or drop-oldest (oldest unsent moved to quarantine, counted)", func(c *Config) *string { return &c.SpoolPolicy }, "refuse-new", "drop-oldest"),
		intField("spool.segment_bytes", "most bytes of unsent clip segments kept on disk, apart from spool.max_bytes (the default, 256 MiB, is about half an hour of clips at 150 kB/s, a small part of an SD card); a new segment that does not fit deletes the oldest unsent segments (logged and counted per event), never a start or end record", int64(1<<20), int64(1<<40), func(c *Config) *int64 { return &c.SpoolSegBytes }),

		strField("upload.url", "where records go: a receiver's base URL (https://, or http:// to a loopback address only) or an MQTT broker (mqtts://HOST:8883, or tcp:// to a loopback address only, or to a private-network one with upload.mqtt_allow_plaintext_lan; docs/mqtt.md)", func(c *Config) *string { return &c.UploadURL }),
		strField("upload.mqtt_prefix", "MQTT topic prefix: records go to <prefix>/<device>/events/<event>/<kind>", func(c *Config) *string { return &c.MQTTPrefix }),
		boolField("upload.ha_discovery", "with an MQTT upload.url, announce a motion binary_sensor and a camera entity to Home Assistant (MQTT discovery)", func(c *Config) *bool { return &c.HADiscovery }),
		strField("upload.mqtt_username", "with an MQTT upload.url, the username for a broker that authenticates by password (Home Assistant's Mosquitto add-on); empty = none (a client certificate, device.cert_file)", func(c *Config) *string { return &c.MQTTUsername }),
		strField("upload.mqtt_password_file", "with upload.mqtt_username, a file holding the broker password (one line; not readable by others, e.g. mode 0600), read at start; the password is never logged nor printed by keyframe config", func(c *Config) *string { return &c.MQTTPasswordFile }),
		boolField("upload.mqtt_allow_plaintext_lan", "allow an mqtt:// (tcp://, no TLS) upload.url to a private-network address (10/8, 172.16/12, 192.168/16, fc00::/7, link-local; a host name must resolve to one): the username and password, the records and the thumbnails then cross the LAN in the clear, readable by anyone on it (records stay signed, so a change is detected; thumbnails and the password are not protected); prefer mqtts://", func(c *Config) *bool { return &c.MQTTPlaintextLAN }),
		durField("upload.mqtt_ack_timeout", "with an MQTT upload.url, how long a record sent waits for the receiver's acknowledgement before it is sent again (it leaves the spool only when acknowledged)", time.Second, time.Hour, func(c *Config) *time.Duration { return &c.MQTTAckTimeout }),
		strField("upload.ca_file", "PEM file of CA certificates trusted for an https:// upload.url, in addition to the system's; empty = system roots only", func(c *Config) *string { return &c.UploadCAFile }),
		durField("upload.backoff_base", "retry delay ceiling after the first failure (full jitter: uniform(0, max(retry_window, min(cap, base*2^n))))", 10*time.Millisecond, time.Hour, func(c *Config) *time.Duration { return &c.BackoffBase }),
		durField("upload.backoff_cap", "largest retry delay ceiling", 100*time.Millisecond, 24*time.Hour, func(c *Config) *time.Duration { return &c.BackoffCap }),
		durField("upload.retry_window", "during an outage every retry waits uniform(0, at least this), so a fleet that lost its receiver together returns spread over this window", 10*time.Millisecond, time.Hour, func(c *Config) *time.Duration { return &c.RetryWindow }),
		durField("upload.quick_retry", "the first failure without an answer (refused, dropped, timed out) after a stable period is retried once within uniform(0, this) before the outage schedule", 10*time.Millisecond, time.Minute, func(c *Config) *time.Duration { return &c.QuickRetry }),
		durField("upload.retry_after_cap", "longest Retry-After from the receiver that is honoured", time.Second, 24*time.Hour, func(c *Config) *time.Duration { return &c.RetryAfterCap }),
		durField("upload.stable_after", "successes needed for this long before the failure count resets", 0, 24*time.Hour, func(c *Config) *time.Duration { return &c.StableAfter }),
		floatField("upload.rate", "most records per second sent while draining a backlog", 0.01, 1000, func(c *Config) *float64 { return &c.UploadRate }),
		intField("upload.max_rate", "upload bandwidth cap in bytes per second of records (HTTPS and MQTT alike; a record waits until the cap has paid for it, then goes at the link's speed); 0 = no cap, else at least 1024", int64(0), int64(1<<40), func(c *Config) *int64 { return &c.UploadMaxRate }),
		durField("upload.timeout", "timeout of one upload request", time.Second, time.Hour, func(c *Config) *time.Duration { return &c.UploadTimeout }),

		strField("watchdog.device", "hardware watchdog to pet while the pipeline is healthy, e.g. /dev/watchdog0; empty = none", func(c *Config) *string { return &c.WatchdogDevice }),
		durField("watchdog.timeout", "watchdog timeout set in the driver (whole seconds); the board resets this long after the last pet", time.Second, time.Hour, func(c *Config) *time.Duration { return &c.WatchdogTimeout }),
		durField("watchdog.stall", "the pipeline is unhealthy (no pet) when no frame has arrived for this long, or the spool cannot be written", 500*time.Millisecond, time.Hour, func(c *Config) *time.Duration { return &c.WatchdogStall }),

		strField("log.level", "log level: debug, info, warn, error", func(c *Config) *string { return &c.LogLevel }, "debug", "info", "warn", "error"),
	}
}

// DefaultConfig returns the configuration used when a key is not set.
func DefaultConfig() Config {
	m := motion.DefaultConfig()
	// A clip's run-up: the 5 s peers default to (Frigate's pre_capture).
	m.PreRoll = clip.DefaultConfig().PreRoll
	return Config{
		DataDir:         "/var/lib/keyframe",
		KeyBackend:      board.BackendFile,
		TPM:             board.DefaultTPMDevice,
		TPMHandle:       board.DefaultTPMHandle,
		Source:          "auto",
		Device:          "/dev/video0",
		ExecFormat:      "mjpeg",
		ExecMaxJPEG:     capture.DefaultExecMaxJPEG,
		Width:           640,
		Height:          480,
		FPS:             10,
		Buffers:         3,
		Seed:            1,
		SourceRetry:     time.Second,
		RetryCap:        5 * time.Second,
		Format:          "auto",
		Stall:           5 * time.Second,
		Motion:          m,
		ThumbMaxSide:    320,
		ThumbQuality:    75,
		ClipEnabled:     true,
		ClipRate:        clip.DefaultConfig().Rate,
		ClipQuality:     clip.DefaultConfig().Quality,
		ClipRing:        clip.DefaultConfig().MaxBytes,
		ClipSegment:     2 * time.Second,
		ClipMaxBytes:    64 << 20,
		ClipCodec:       "mjpeg",
		ClipEncoder:     "auto",
		ClipEncoderExec: clip.DefaultEncoderCommand,
		ClipKeyInterval: clip.DefaultConfig().KeyInterval,
		LiveFPS:         5,
		LiveMaxSide:     640,
		LiveQuality:     70,
		LiveMaxTime:     5 * time.Minute,
		LANMaxViewers:   2,
		E2EEKeysetPoll:  time.Minute,
		SpoolMaxBytes:   64 << 20,
		SpoolPolicy:     "refuse-new",
		SpoolSegBytes:   uploader.DefaultSegmentMaxBytes,
		UploadURL:       "http://127.0.0.1:8417",
		MQTTPrefix:      uploader.DefaultTopicPrefix,
		HADiscovery:     true,
		BackoffBase:     time.Second,
		BackoffCap:      5 * time.Minute,
		RetryWindow:     uploader.DefaultRetryWindow,
		QuickRetry:      uploader.DefaultQuickRetry,
		RetryAfterCap:   10 * time.Minute,
		StableAfter:     time.Minute,
		UploadRate:      5,
		UploadTimeout:   30 * time.Second,
		MQTTAckTimeout:  uploader.DefaultAckTimeout,
		WatchdogTimeout: 30 * time.Second,
		WatchdogStall:   20 * time.Second,
		LogLevel:        "info",
	}
}

// Bounds of the configuration text: a line of the file (a quoted value can
// grow to 6 bytes a byte when written), and a value from the environment.
const (
	maxConfigValue = 64 << 10
	maxConfigLine  = 8*maxConfigValue + 1024
	// maxConfigErrors bounds the mistakes reported for one file.
	maxConfigErrors = 20
)

// ParseConfig reads a configuration file over the defaults. The format is one
// "key = value" per line; '#' starts a comment; blank lines are ignored. name
// is used in error messages.
func ParseConfig(r io.Reader, name string, c *Config) error {
	fields := fieldMap()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxConfigLine)
	seen := map[string]int{}
	var errs []error // every mistake, not only the first (at most maxConfigErrors)
	bad := func(err error) bool {
		errs = append(errs, err)
		return len(errs) >= maxConfigErrors
	}
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		key, val, ok := strings.Cut(text, "=")
		if !ok {
			if bad(fmt.Errorf("agent: config %s:%d: want \"key = value\", have %q", name, line, text)) {
				break
			}
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		f, ok := fields[key]
		if !ok {
			if bad(fmt.Errorf("agent: config %s:%d: unknown key %q", name, line, key)) {
				break
			}
			continue
		}
		if prev, dup := seen[key]; dup {
			if bad(fmt.Errorf("agent: config %s:%d: %s already set on line %d", name, line, key, prev)) {
				break
			}
			continue
		}
		seen[key] = line
		if err := f.set(c, unquote(val)); err != nil {
			if bad(fmt.Errorf("agent: config %s:%d: %s: %w", name, line, key, err)) {
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("agent: config %s: %w", name, err))
	}
	if len(errs) >= maxConfigErrors {
		errs = append(errs, fmt.Errorf("agent: config %s: stopped after %d mistakes", name, maxConfigErrors))
	}
	return errors.Join(errs...)
}

func unquote(v string) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		if s, err := strconv.Unquote(v); err == nil {
			return s
		}
	}
	return v
}

func fieldMap() map[string]Field {
	m := map[string]Field{}
	for _, f := range Fields() {
		m[f.Name] = f
	}
	return m
}

// ApplyEnv applies KEYFRAME_* overrides from environ (os.Environ() format).
func ApplyEnv(environ []string, c *Config) error {
	byEnv := map[string]Field{}
	for _, f := range Fields() {
		byEnv[f.EnvName()] = f
	}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, "KEYFRAME_") {
			continue
		}
		f, ok := byEnv[k]
		if !ok {
			return fmt.Errorf("agent: environment %s: no such setting", k)
		}
		if len(v) > maxConfigValue {
			return fmt.Errorf("agent: environment %s (%s): value of %d bytes, at most %d", k, f.Name, len(v), maxConfigValue)
		}
		if err := f.set(c, v); err != nil {
			return fmt.Errorf("agent: environment %s (%s): %w", k, f.Name, err)
		}
	}
	return nil
}

// minUploadMaxRate is the smallest upload.max_rate other than 0 (no cap).
const minUploadMaxRate = 1024

// Validate checks values that depend on each other.
func (c *Config) Validate() error {
	var errs []error // every mistake, not only the first
	bad := func(err error) { errs = append(errs, err) }
	if c.DataDir == "" {
		bad(fmt.Errorf("agent: config device.data_dir: must not be empty"))
	}
	if c.Source == "dir" && c.Dir == "" {
		bad(fmt.Errorf("agent: config capture.dir: must be set when capture.source = dir"))
	}
	if err := c.validateSource(); err != nil {
		bad(err)
	}
	if c.SourceRetry > c.RetryCap {
		bad(fmt.Errorf("agent: config capture.retry: %v is above capture.retry_cap %v", c.SourceRetry, c.RetryCap))
	}
	if c.BackoffBase > c.BackoffCap {
		bad(fmt.Errorf("agent: config upload.backoff_base: %v is above upload.backoff_cap %v", c.BackoffBase, c.BackoffCap))
	}
	if c.UploadURL == "" {
		bad(fmt.Errorf("agent: config upload.url: must not be empty"))
	}
	if c.UploadMaxRate > 0 && c.UploadMaxRate < minUploadMaxRate {
		bad(fmt.Errorf("agent: config upload.max_rate: %d bytes/s is below %d (a 1 MB clip segment would take over 15 minutes); 0 = no cap", c.UploadMaxRate, minUploadMaxRate))
	}
	if err := c.validateMQTTAuth(); err != nil {
		bad(err)
	}
	if err := c.validateLAN(); err != nil {
		bad(err)
	}
	if err := c.Motion.Validate(); err != nil {
		bad(fmt.Errorf("agent: config: %w", err))
	}
	if c.ClipEnabled && c.Motion.PreRoll > clip.MaxPreRoll {
		bad(fmt.Errorf("agent: config motion.pre_roll: %v is above %v, the longest pre-roll a clip keeps (clip.enabled = true)", c.Motion.PreRoll, clip.MaxPreRoll))
	}
	if err := c.validateClipEncoder(); err != nil {
		bad(err)
	}
	return errors.Join(errs...)
}

// checkClipEncoder checks clip.encoder: auto, exec or a device path.
func checkClipEncoder(v string) error {
	if v == "auto" || v == "exec" || strings.HasPrefix(v, "/dev/") {
		return nil
	}
	return fmt.Errorf("%q is not auto, exec or a device path (/dev/videoN)", v)
}

// checkCommand checks a command line split without a shell.
func checkCommand(v string) error {
	_, err := capture.ParseCommand(v)
	return err
}

// validateClipEncoder checks that H.264 clips name an encoder: the
// hardware one (auto or a node's path; auto is looked for when the agent
// starts) or exec.
func (c *Config) validateClipEncoder() error {
	if !c.ClipEnabled || c.ClipCodec != "h264" {
		return nil
	}
	return checkClipEncoder(c.ClipEncoder)
}

// validateSource checks the settings of the exec and camera sources.
func (c *Config) validateSource() error {
	switch c.Source {
	case "auto", "v4l2":
		if c.FPS == 0 {
			return fmt.Errorf("agent: config capture.fps: 0 (as fast as possible) is only for dir and synthetic sources")
		}
	case "exec":
		if c.Exec == "" {
			return fmt.Errorf("agent: config capture.exec: must be set when capture.source = exec")
		}
		if f, _ := capture.ParseExecFormat(c.ExecFormat); f != capture.FormatMJPEG && (c.Width%2 != 0 || c.Height%2 != 0) {
			return fmt.Errorf("agent: config capture.width: %dx%d: raw %s frames need an even width and height", c.Width, c.Height, c.ExecFormat)
		}
	}
	return nil
}

// validateMQTTAuth checks the MQTT URL against the plain-text rules
// (mqttlink.CheckBrokerURL with upload.mqtt_allow_plaintext_lan) and the
// password settings. The password file is read at start, not here.
func (c *Config) validateMQTTAuth() error {
	if !isMQTT(c.UploadURL) {
		if c.MQTTUsername != "" || c.MQTTPasswordFile != "" {
			return fmt.Errorf("agent: config upload.mqtt_username, upload.mqtt_password_file: for an MQTT upload.url (mqtts://), and upload.url %q is not one", c.UploadURL)
		}
		return nil
	}
	if _, err := mqttlink.CheckBrokerURL(c.UploadURL, mqttlink.URLRules{PlaintextLAN: c.MQTTPlaintextLAN}); err != nil {
		if errors.Is(err, mqttlink.ErrPlaintextNotLoopback) {
			return fmt.Errorf("agent: config upload.url: %w (upload.mqtt_allow_plaintext_lan = true allows a private-network address: see its description for what crosses the LAN in the clear)", err)
		}
		return fmt.Errorf("agent: config upload.url: %w", err)
	}
	if c.MQTTPasswordFile != "" && c.MQTTUsername == "" {
		return fmt.Errorf("agent: config upload.mqtt_password_file: needs upload.mqtt_username")
	}
	return nil
}

// validateLAN checks the LAN view's settings; the token file and the
// certificate are read at start, not here.
func (c *Config) validateLAN() error {
	if c.LANListen == "" {
		if c.LANTokenFile != "" || c.LANCertFile != "" || c.LANKeyFile != "" {
			return fmt.Errorf("agent: config lan.token_file, lan.cert_file, lan.key_file: for the LAN view, and lan.listen is empty (off)")
		}
		return nil
	}
	if _, port, err := net.SplitHostPort(c.LANListen); err != nil || port == "" {
		return fmt.Errorf("agent: config lan.listen: %q is not HOST:PORT or :PORT (e.g. :8443)", c.LANListen)
	}
	if c.LANTokenFile == "" {
		return fmt.Errorf("agent: config lan.token_file: must be set when lan.listen is (a file holding the token, at least %d characters, mode 0600)", lanMinToken)
	}
	if (c.LANCertFile == "") != (c.LANKeyFile == "") {
		return fmt.Errorf("agent: config lan.cert_file, lan.key_file: set both or neither (neither: a self-signed certificate)")
	}
	return nil
}

// LoadConfig returns the defaults, overlaid with what `keyframe join` left in
// the data directory (upload.url and upload.ca_file, if it ran: see
// WriteJoined), then with the file at path (if path is not empty) and then
// with KEYFRAME_* variables from environ, validated.
func LoadConfig(path string, environ []string) (Config, error) {
	c, err := loadLayers(path, environ, "")
	if err != nil {
		return c, err
	}
	// The data directory comes from the file or the environment; the joined
	// file cannot change it.
	joined, err := joinedPath(&c)
	if err != nil {
		return c, err
	}
	if joined != "" {
		if c, err = loadLayers(path, environ, joined); err != nil {
			return c, err
		}
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

// loadLayers returns the defaults overlaid with the joined file (if not
// empty), the file at path (if not empty) and environ, unvalidated.
func loadLayers(path string, environ []string, joined string) (Config, error) {
	c := DefaultConfig()
	if joined != "" {
		if err := applyJoined(joined, &c); err != nil {
			return c, err
		}
	}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("agent: config: %w", err)
		}
		fileErr := ParseConfig(bytes.NewReader(b), path, &c)
		if err := errors.Join(fileErr, ApplyEnv(environ, &c)); err != nil {
			return c, err
		}
		return c, nil
	}
	if err := ApplyEnv(environ, &c); err != nil {
		return c, err
	}
	return c, nil
}

// WriteConfig writes c as a complete configuration file, each key preceded by
// its description.
func WriteConfig(w io.Writer, c *Config) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, "# keyframe configuration. Every key, with its value; unset keys take the default.")
	fmt.Fprintln(bw, "# Each key can be overridden by an environment variable: capture.width -> KEYFRAME_CAPTURE_WIDTH.")
	section := ""
	for _, f := range Fields() {
		s, _, _ := strings.Cut(f.Name, ".")
		if s != section {
			fmt.Fprintf(bw, "\n")
			section = s
		}
		fmt.Fprintf(bw, "# %s\n%s = %s\n", f.Desc, f.Name, quoteIfNeeded(f.get(c)))
	}
	return bw.Flush()
}

// WriteConfigTemplate writes a configuration file in which every key stands
// with its default and description, commented out: the file the Debian
// package installs as /etc/keyframe/keyframe.conf (packaging/keyframe.conf,
// kept equal to this by a test). Uncommenting a line gives the default.
func WriteConfigTemplate(w io.Writer) error {
	c := DefaultConfig()
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, "# keyframe configuration: every key with its default, commented out.")
	fmt.Fprintln(bw, "# Uncomment a line and change its value; a key left commented takes the default shown.")
	fmt.Fprintln(bw, "# Each key can be overridden by an environment variable: capture.width -> KEYFRAME_CAPTURE_WIDTH.")
	fmt.Fprintln(bw, "# `keyframe join URL CODE` sets upload.url and upload.ca_file in <data_dir>/joined.conf;")
	fmt.Fprintln(bw, "# a key set here wins over it. `keyframe config -config FILE` prints the effective configuration.")
	section := ""
	for _, f := range Fields() {
		s, _, _ := strings.Cut(f.Name, ".")
		if s != section {
			fmt.Fprintf(bw, "\n")
			section = s
		}
		fmt.Fprintf(bw, "# %s\n#%s = %s\n", f.Desc, f.Name, quoteIfNeeded(f.get(&c)))
	}
	return bw.Flush()
}

func quoteIfNeeded(v string) string {
	if v == "" || strings.ContainsAny(v, "#\"") || strings.TrimSpace(v) != v || strings.ContainsFunc(v, unicode.IsControl) {
		return strconv.Quote(v)
	}
	return v
}
