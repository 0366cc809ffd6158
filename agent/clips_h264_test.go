package agent

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/clip"
	"github.com/keyframe-cam/keyframe/receiver"
	"github.com/keyframe-cam/keyframe/uploader"

	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/provenance"
)

// ffmpegH264OrSkip skips a test without ffmpeg and libx264 (the exec
// encoder's default command), and fails it under CI=true.
func ffmpegH264OrSkip(t *testing.T) {
	t.Helper()
	msg := "ffmpeg with libx264 not found: H.264 clips' tests run the exec encoder's default command (Debian: apt-get install ffmpeg; scripts/ensure-test-deps.sh installs it)"
	out, err := exec.Command("ffmpeg", "-hide_banner", "-encoders").Output()
	if err == nil && bytes.Contains(out, []byte("libx264")) {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// encoderPacedSource is the synthetic scene on its nominal 10 frames/s timeline,
// as fast as the agent's H.264 clip encoder takes it: each frame is
// delivered once the one before has reached the encoder's command (and at
// most three wait for their access units), so no frame is dropped for a
// busy encoder whatever the machine's load. After frames it cancels the
// run: the agent stops in order, its last event flushed.
type encoderPacedSource struct {
	syn    *capture.Synthetic
	a      *Agent
	n      uint64
	frames uint64
	cancel context.CancelFunc
}

func (g *encoderPacedSource) Next(ctx context.Context, f *capture.Frame) error {
	for range 20000 {
		s := g.a.clips.feeder.Stats()
		if s.Offered-s.Skipped-s.Passed == s.Dropped+s.Failed+s.Encoded+s.Orphaned+s.Lost+uint64(s.InFlight) && s.InFlight <= 3 {
			break
		}
		time.Sleep(500 * time.Microsecond)
	}
	if g.n == g.frames {
		g.cancel()
		<-ctx.Done()
		return ctx.Err()
	}
	g.n++
	return g.syn.Next(ctx, f)
}

func (g *encoderPacedSource) Close() error { return nil }

// nalTypes lists the NAL unit types of an Annex B access unit.
func nalTypes(au []byte) []byte {
	var types []byte
	for i := 0; i+3 < len(au); i++ {
		if au[i] == 0 && au[i+1] == 0 && au[i+2] == 1 {
			types = append(types, au[i+3]&0x1f)
			i += 2
		}
	}
	return types
}

// TestClipPreRollH264 is TestClipPreRoll with clip.codec h264 and the exec
// encoder (Debian's ffmpeg, libx264) on the synthetic scene: every event's
// clip verifies frame by frame against its end record; the second
// crossing's segments are of type video/h264; its first frame is an IDR
// access unit with SPS and PPS, captured at least motion.pre_roll and at
// most pre_roll + clip.key_interval (one group of pictures) before the
// trigger; it holds the trigger frame; and its frames, concatenated across
// segments, decode with ffmpeg to as many pictures, without error; and a
// real receiver given the records serves the clip to its owner as
// clip.mp4, which ffprobe reads without error, frame for frame.
func TestClipPreRollH264(t *testing.T) {
	ffmpegH264OrSkip(t)
	syn, err := capture.NewSynthetic(capture.SyntheticConfig{Width: 160, Height: 120, Seed: 7}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cycle := uint64(capture.SyntheticCycle / (time.Second / capture.NominalFPS))
	src := &encoderPacedSource{syn: syn, frames: 2 * cycle, cancel: cancel}
	a, spool := delayedAgentWith(t, src, 0, 0, func(c *Config) {
		c.ClipCodec, c.ClipEncoder = "h264", "exec"
	})
	src.a = a
	if err := a.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	recs := spool.records()
	checkChain(t, a, recs)
	if got := countKind(recs, provenance.KindStart); got != 2 {
		t.Fatalf("%d events for two crossings", got)
	}
	var segs []provenance.ClipSegment
	var frames [][]byte
	var times []int64
	var end []byte
	second := recs[len(recs)-1].Event
	for _, r := range recs {
		if r.Event != second {
			continue
		}
		b, err := provenance.UnmarshalBundle(r.Data)
		if err != nil {
			t.Fatal(err)
		}
		v, err := provenance.Verify(b.Envelope, b.Media, nil)
		if err != nil {
			t.Fatal(err)
		}
		switch r.Kind {
		case provenance.KindSegment:
			seg := v.Payload.Segment
			if seg.Type != provenance.H264MediaType || v.Payload.Media[0].Type != provenance.H264MediaType {
				t.Fatalf("segment %d: type %q, media type %q, want %q", seg.Index, seg.Type, v.Payload.Media[0].Type, provenance.H264MediaType)
			}
			if len(seg.Frames) > provenance.MaxSegmentFrames {
				t.Fatalf("segment %d: %d frames", seg.Index, len(seg.Frames))
			}
			segs = append(segs, provenance.ClipSegment{Envelope: b.Envelope, Media: b.Media[0]})
			off := 0
			for _, f := range seg.Frames {
				frames = append(frames, b.Media[0][off:off+int(f.Size)])
				times = append(times, f.TUs)
				off += int(f.Size)
			}
		case provenance.KindEnd:
			end = b.Envelope
		}
	}
	c, err := provenance.VerifyClip(end, segs, nil)
	if err != nil {
		t.Fatal(err)
	}
	types := nalTypes(frames[0])
	if !bytes.Contains(types, []byte{7}) || !bytes.Contains(types, []byte{8}) || !bytes.Contains(types, []byte{5}) {
		t.Fatalf("the clip's first frame has NAL units %v, want an IDR (5) with SPS (7) and PPS (8)", types)
	}
	pre, gop := a.cfg.Motion.PreRoll, a.cfg.ClipKeyInterval
	if first := -time.Duration(c.FirstUs) * time.Microsecond; first < pre || first > pre+gop {
		t.Errorf("the clip starts %v before the trigger, want %v to %v (pre-roll plus one group of pictures)", first, pre, pre+gop)
	}
	trigger := false
	for _, us := range times {
		trigger = trigger || us == 0
	}
	if !trigger {
		t.Errorf("no frame at the trigger (t_us 0) among %d", len(times))
	}
	// The whole clip is one H.264 stream a decoder plays from its start.
	stream := bytes.Join(frames, nil)
	path := filepath.Join(t.TempDir(), "clip.h264")
	if err := os.WriteFile(path, stream, 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command("ffmpeg", "-v", "error", "-f", "h264", "-i", path, "-f", "framecrc", "-")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("ffmpeg does not decode the clip: %v; %s", err, stderr.String())
	}
	decoded := 0
	for _, line := range strings.Split(string(out), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			decoded++
		}
	}
	if decoded != len(frames) {
		t.Errorf("the clip's %d frames decode to %d pictures", len(frames), decoded)
	}
	served := serveClipMP4(t, a, recs, second)
	if served != c.Frames {
		t.Errorf("the receiver's clip.mp4 has %d frames, the clip's segments list %d", served, c.Frames)
	}
	st := a.clips.stats()
	if st.Orphaned != 0 || st.EncoderErrors != 0 || st.Dropped != 0 {
		t.Errorf("clip stats %+v: want no frame dropped, orphaned or lost to the encoder", st)
	}
	rate := 0.0
	if d := time.Duration(c.LastUs-c.FirstUs) * time.Microsecond; d > 0 {
		rate = float64(len(stream)) / d.Seconds()
	}
	t.Logf("second event: %d frames in %d segments, from %v to %v, %d bytes of H.264 (%.0f B/s of clip); %d key frames requested",
		c.Frames, len(segs), time.Duration(c.FirstUs)*time.Microsecond, time.Duration(c.LastUs)*time.Microsecond, len(stream), rate,
		a.clips.feeder.Stats().KeyRequests)
}

// serveClipMP4 hands the agent's records to a real receiver (as the
// uploader would, in sequence order), where the device is paired to alice,
// fetches the event's clip.mp4 as alice, and checks it with ffprobe: read
// without a word on stderr, one H.264 stream at the agent's frame size. It
// returns the frames ffprobe counted.
func serveClipMP4(t *testing.T, a *Agent, recs []uploader.Record, event string) int {
	t.Helper()
	if _, err := exec.LookPath("ffprobe"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("ffprobe not found (Debian's ffmpeg has it)")
		}
		t.Skip("ffprobe not found (Debian: apt-get install ffmpeg); skipping the receiver's clip.mp4")
	}
	rdir := filepath.Join(t.TempDir(), "receiver")
	pub, err := board.PublicKeyPEM(a.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	pairDevice(t, rdir, pub, a.DeviceID())
	if _, err := (receiver.Accounts{Dir: rdir}).Add("alice", receiver.RoleOwner); err != nil {
		t.Fatal(err)
	}
	srv, _ := openReceiver(t, rdir, quietLogger())
	for _, r := range recs {
		if res := srv.Ingest(r.Data, receiver.Claim{Device: a.DeviceID(), Event: r.Event, Kind: r.Kind}); !res.Stored() {
			t.Fatalf("record %d (%s): %d %s", r.Seq, r.Kind, res.Status, res.Message)
		}
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	alice, err := srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, hs.URL+"/events/"+a.DeviceID()+"/"+event+"/clip.mp4", nil)
	req.AddCookie(alice)
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "video/mp4" {
		t.Fatalf("clip.mp4: %d %s (%v): %.200s", resp.StatusCode, resp.Header.Get("Content-Type"), err, body)
	}
	path := filepath.Join(t.TempDir(), "clip.mp4")
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=codec_name,width,height,nb_read_frames", "-of", "csv=p=0", path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("ffprobe on the receiver's clip.mp4: %v; %s", err, stderr.String())
	}
	f := strings.Split(strings.TrimSpace(string(out)), ",")
	if len(f) != 4 || f[0] != "h264" || f[1] != strconv.Itoa(a.cfg.Width) || f[2] != strconv.Itoa(a.cfg.Height) {
		t.Fatalf("ffprobe says %q, want h264,%d,%d,frames", out, a.cfg.Width, a.cfg.Height)
	}
	n, err := strconv.Atoi(f[3])
	if err != nil {
		t.Fatalf("ffprobe frames %q: %v", f[3], err)
	}
	t.Logf("the receiver's clip.mp4: %d bytes, %d frames of H.264 %sx%s (ffprobe: no error)", len(body), n, f[1], f[2])
	return n
}

// TestClipH264Config: the H.264 clip settings' mistakes are named by key:
// bad values when parsed; when the agent is made, auto with no hardware
// encoder on the machine (none in CI) and an exec encoder whose command is
// missing. MJPEG clips need none of them.
func TestClipH264Config(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"clip.codec = h265", "clip.codec"},
		{"clip.encoder = gpu", "clip.encoder"},
		{"clip.encoder_exec = ffmpeg -i - | cat", "clip.encoder_exec"},
		{"clip.encoder_exec = ", "clip.encoder_exec"},
		{"clip.key_interval = 20s", "clip.key_interval"},
	} {
		c := DefaultConfig()
		err := ParseConfig(strings.NewReader(tc.in), "test.conf", &c)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one naming %q", tc.in, err, tc.want)
		}
	}
	for _, enc := range []string{"auto", "/dev/video11", "exec"} {
		c := DefaultConfig()
		c.ClipCodec, c.ClipEncoder = "h264", enc
		if err := c.Validate(); err != nil {
			t.Errorf("h264 with clip.encoder %s: %v", enc, err)
		}
	}
	c := DefaultConfig()
	c.ClipEncoder = "/dev/video11" // not used by MJPEG clips
	if err := c.Validate(); err != nil {
		t.Errorf("mjpeg clips with a device encoder set: %v", err)
	}

	c = DefaultConfig()
	c.DataDir = filepath.Join(t.TempDir(), "device")
	c.ClipCodec, c.ClipEncoder = "h264", "exec"
	c.ClipEncoderExec = "/nonexistent/ffmpeg -i - -f h264 -"
	if _, err := clip.FindM2M(""); err == nil {
		t.Log("this machine has a hardware H.264 encoder: auto is not refused here")
	} else {
		a := DefaultConfig()
		a.DataDir = filepath.Join(t.TempDir(), "device")
		a.ClipCodec, a.ClipEncoder = "h264", "auto"
		_, err := New(a, Deps{Logger: quietLogger(), Source: &encoderPacedSource{}})
		if err == nil || !strings.Contains(err.Error(), "clip.encoder: auto") {
			t.Errorf("auto without a hardware encoder: %v, want an error naming clip.encoder", err)
		}
	}
	_, err := New(c, Deps{Logger: quietLogger(), Source: &encoderPacedSource{}})
	if err == nil || !strings.Contains(err.Error(), "clip.encoder_exec") || !strings.Contains(err.Error(), "/nonexistent/ffmpeg") {
		t.Fatalf("a missing encoder command: %v, want an error naming clip.encoder_exec and the command", err)
	}
}
