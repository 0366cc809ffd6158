package receiver

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/keyframe-cam/keyframe/internal/h264"
	"github.com/keyframe-cam/keyframe/internal/mkv"
	"github.com/keyframe-cam/keyframe/internal/mp4"
	"github.com/keyframe-cam/keyframe/provenance"
)

// An H.264 clip (segments of type provenance.H264MediaType, each frame an
// access unit) as fragmented MP4 (docs/pages.md): the init segment from
// the parameter sets of the clip's first key frame, then one fragment
// (moof, mdat) per stored segment, each sample at its signed time. As for
// clip.mkv, every record was verified (eventClip) before the first byte,
// and each segment's frames are read again, checked against the hash the
// index holds, one segment at a time.

// maxMP4Frames bounds an MP4 download as clip.mkv is bounded.
const maxMP4Frames = mkv.MaxFrames

// h264Only reports whether every stored segment's frames are H.264.
func (ci *clipInfo) h264Only() bool {
	for _, sg := range ci.segments {
		if sg.typ != provenance.H264MediaType {
			return false
		}
	}
	return len(ci.segments) > 0
}

// h264Size reads the picture size of an H.264 clip's first frame from its
// SPS (0, 0 if it carries none or it does not parse).
func h264Size(au []byte) (int, int) {
	sps, _, err := h264.ParamSets(au)
	if err != nil || sps == nil {
		return 0, 0
	}
	s, err := h264.ParseSPS(sps)
	if err != nil {
		return 0, 0
	}
	return s.Width, s.Height
}

// ticks is a frame's decode time on the MP4 track's 90 kHz clock, from the
// clip's first stored frame.
func ticks(tUs, firstUs int64) uint64 {
	return uint64(((tUs-firstUs)*9 + 50) / 100)
}

// mp4Fragment is one segment's samples, held until the next segment's
// first sample gives its last one's duration.
type mp4Fragment struct {
	seg   uint32
	times []uint64 // each sample's decode time
	keys  []bool
	ends  []int // each sample's end in data
	data  []byte
}

// errNoKeyFrame is writeClipMP4's answer for a clip without a key frame
// that carries its parameter sets.
var errNoKeyFrame = errors.New("the clip has no H.264 key frame with its parameter sets (SPS and PPS): no MP4")

// errClipChanged wraps a stored file that changed after eventClip verified it.
type errClipChanged struct{ err error }

func (e errClipChanged) Error() string { return e.err.Error() }

// handleClipMP4 serves an H.264 clip as fragmented MP4. The file is made
// twice, the same each time: once counted (its size, and any reason not to
// serve it, before a byte is sent), then written, from the byte a range
// request asks for (a video element seeks with them), through
// http.ServeContent.
func (s *Server) handleClipMP4(w http.ResponseWriter, r *http.Request, u *user) {
	_, ci, ok := s.clipFor(w, r, u)
	if !ok {
		return
	}
	switch {
	case ci.problem != "":
		writeLine(w, http.StatusConflict, "the clip does not verify: "+ci.problem)
		return
	case ci.sealed:
		writeLine(w, http.StatusConflict, "the clip is end-to-end encrypted: this receiver cannot read its frames, so it cannot make a video file; download its records and open them with your keys")
		return
	case !ci.h264Only():
		writeLine(w, http.StatusConflict, "the clip's frames are not H.264: no MP4 (a clip of JPEG frames downloads as clip.mkv)")
		return
	case ci.frames > maxMP4Frames:
		writeLine(w, http.StatusConflict, fmt.Sprintf("the clip has %d frames, a download at most %d", ci.frames, maxMP4Frames))
		return
	}
	device, event := r.PathValue("device"), r.PathValue("event")
	var n countWriter
	err := s.writeClipMP4(&n, ci, device, event, true)
	var changed errClipChanged
	switch {
	case errors.As(err, &changed):
		s.mu.Lock()
		s.stats.CorruptMedia++
		s.mu.Unlock()
		s.log.Error("receiver: stored file changed; not serving it", "download", "clip.mp4", "err", err)
		writeLine(w, http.StatusInternalServerError, "stored record does not match its signature")
		return
	case errors.Is(err, errNoKeyFrame):
		writeLine(w, http.StatusConflict, err.Error())
		return
	case err != nil:
		s.log.Error("receiver: clip.mp4", "device", device, "event", event, "err", err)
		writeLine(w, http.StatusInternalServerError, "cannot make the MP4 file")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "video/mp4")
	h.Set("Content-Disposition", `attachment; filename="`+device+"-"+event+`.mp4"`)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	h.Set("Cache-Control", "no-store")
	// One range at most: each range of a multi-range request would make
	// the file again from its start (a few thousand in one Range header
	// keep a core busy); a video element asks for one.
	if strings.Contains(r.Header.Get("Range"), ",") {
		r.Header.Del("Range")
	}
	gr := &genReader{size: int64(n), gen: func(w io.Writer) error { return s.writeClipMP4(w, ci, device, event, false) }}
	http.ServeContent(w, r, "", time.Time{}, gr)
	gr.Close()
	if errors.As(gr.err, &changed) {
		s.abortDownload("clip.mp4", gr.err)
	}
}

// countWriter counts what is written to it.
type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

// genReader reads a file that gen writes, of a known size: seeking starts
// gen again, skipping to the place (in a goroutine, through a pipe).
type genReader struct {
	size int64
	gen  func(io.Writer) error
	pos  int64
	pr   *io.PipeReader // gen writing from pos; nil before the first read after a seek
	err  error          // what gen returned, once the pipe ends with an error
}

func (g *genReader) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		off += g.pos
	case io.SeekEnd:
		off += g.size
	}
	if off < 0 {
		return 0, errors.New("receiver: seek before the file's start")
	}
	if off != g.pos {
		g.Close()
		g.pos = off
	}
	return off, nil
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.pos >= g.size {
		return 0, io.EOF
	}
	if g.pr == nil {
		pr, pw := io.Pipe()
		g.pr = pr
		skip := g.pos
		go func() {
			// Buffered: each write through the pipe waits for its reader.
			bw := bufio.NewWriterSize(&skipWriter{w: pw, skip: skip}, 64<<10)
			err := g.gen(bw)
			if err == nil {
				err = bw.Flush()
			}
			pw.CloseWithError(err)
		}()
	}
	n, err := g.pr.Read(p)
	g.pos += int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		g.err = err
	}
	return n, err
}

// Close stops gen (its next write fails).
func (g *genReader) Close() {
	if g.pr != nil {
		g.pr.Close()
		g.pr = nil
	}
}

// skipWriter passes on what is written to it after its first skip bytes.
type skipWriter struct {
	w    io.Writer
	skip int64
}

func (s *skipWriter) Write(p []byte) (int, error) {
	n := len(p)
	if s.skip >= int64(n) {
		s.skip -= int64(n)
		return n, nil
	}
	if _, err := s.w.Write(p[s.skip:]); err != nil {
		return 0, err
	}
	s.skip = 0
	return n, nil
}

// writeClipMP4 writes an H.264 clip as fragmented MP4 to w. Frames a
// decoder cannot use are left out (and logged, if logSkips): before the
// clip's first key frame (its first segment stored is not segment 0, or
// does not begin with one), and after a segment that is not stored, until
// the next key frame. A key frame whose parameter sets differ from the
// first's ends the file there (the track has one avcC). The same clip
// makes the same bytes every time.
func (s *Server) writeClipMP4(w io.Writer, ci *clipInfo, device, event string, logSkips bool) error {
	first := ci.segments[0].frames[0].TUs
	last := ci.segments[len(ci.segments)-1].frames
	// The last frame shows as long as the interval before it.
	lastDur := uint64(mp4.Timescale / 10)
	if n := len(last); n > 1 {
		lastDur = max(ticks(last[n-1].TUs, first)-ticks(last[n-2].TUs, first), 1)
	}
	total := ticks(last[len(last)-1].TUs, first) + lastDur

	var (
		mw        *mp4.Writer
		sps, pps  []byte
		pending   *mp4Fragment
		prevTime  uint64
		started   bool
		prevDur   = lastDur
		wantKey   = true // the decoder needs a key frame: at the start, after a gap
		skipped   = 0
		cut       = false
		prevIndex = int64(-1)
	)
	warn := func(msg string, args ...any) {
		if logSkips {
			s.log.Warn(msg, append([]any{"device", device, "event", event}, args...)...)
		}
	}
	// flush writes the pending fragment, its last sample lasting until next
	// (the next sample's time), or prevDur at the end (next 0).
	flush := func(next uint64) error {
		f := pending
		if f == nil {
			return nil
		}
		pending = nil
		samples := make([]mp4.Sample, len(f.times))
		start := 0
		for i := range f.times {
			d := next - f.times[i]
			if i+1 < len(f.times) {
				d = f.times[i+1] - f.times[i]
			} else if next == 0 {
				d = prevDur
			}
			prevDur = d
			samples[i] = mp4.Sample{Duration: uint32(d), Key: f.keys[i], Data: f.data[start:f.ends[i]]}
			start = f.ends[i]
		}
		return mw.WriteFragment(f.times[0], samples)
	}
	for _, sg := range ci.segments {
		e := sg.entry
		if prevIndex >= 0 && int64(*e.Segment) != prevIndex+1 {
			wantKey = true // segments between are not stored
		}
		prevIndex = int64(*e.Segment)
		media, err := readChecked(mediaPath(s.dir, e, 0), e.Media[0].SHA256)
		if err != nil {
			return errClipChanged{err}
		}
		// AVCC is at most a byte a NAL unit longer than Annex B (3-byte
		// start codes); most encoders write 4-byte ones.
		f := &mp4Fragment{seg: *e.Segment, data: make([]byte, 0, len(media)+len(media)/64+64)}
		off := 0
		for k, fr := range sg.frames {
			au := media[off : off+int(fr.Size)]
			off += int(fr.Size)
			if wantKey && !h264.IsKey(au) {
				skipped++
				continue
			}
			data, key, auSPS, auPPS, err := mp4.AppendSample(f.data, au)
			if err != nil {
				warn("receiver: clip.mp4: a frame is not an H.264 access unit; left out, with the frames up to the next key frame", "segment", *e.Segment, "frame", k, "err", err)
				wantKey = true
				skipped++
				continue
			}
			if key && mw == nil {
				if auSPS == nil || auPPS == nil {
					skipped++
					continue
				}
				init, err := mp4.Init(mp4.Track{SPS: auSPS, PPS: auPPS, Duration: total})
				if err != nil {
					warn("receiver: clip.mp4: a key frame's parameter sets do not make a track; looking further", "segment", *e.Segment, "frame", k, "err", err)
					skipped++
					continue
				}
				sps, pps = bytes.Clone(auSPS), bytes.Clone(auPPS)
				if _, err := w.Write(init); err != nil {
					return err
				}
				mw = mp4.NewFragmentWriter(w)
			}
			if key && (auSPS != nil && !bytes.Equal(auSPS, sps) || auPPS != nil && !bytes.Equal(auPPS, pps)) {
				warn("receiver: clip.mp4 ends before a key frame whose parameter sets differ from the clip's first (one track, one avcC)", "segment", *e.Segment, "frame", k)
				cut = true
				break
			}
			wantKey = false
			t := ticks(fr.TUs, first)
			if started {
				t = max(t, prevTime+1) // 90 kHz ticks, strictly increasing as the signed times are
			}
			started, prevTime = true, t
			f.data = data
			f.times = append(f.times, t)
			f.keys = append(f.keys, key)
			f.ends = append(f.ends, len(data))
		}
		if len(f.times) > 0 {
			if err := flush(f.times[0]); err != nil {
				return err
			}
			pending = f
		}
		if cut {
			break
		}
	}
	if mw == nil {
		return errNoKeyFrame
	}
	if err := flush(0); err != nil {
		return err
	}
	if skipped > 0 {
		warn("receiver: clip.mp4 leaves out frames a decoder cannot use (before the first key frame, or after a segment not stored until the next key frame)", "frames", skipped)
	}
	return nil
}
