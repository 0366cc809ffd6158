package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/receiver"
)

// measureMode is one run of TestLiveMeasure.
type measureMode struct {
	name        string
	clips, live bool
}

// measured is what one run of the agent gave.
type measured struct {
	window       float64 // seconds from the frame loop's start to the SIGTERM
	frames       uint64  // analysed
	lost         uint64  // gaps in the sequence numbers
	late         uint64  // frames taken up more than two intervals late
	lateMax      string  // the longest a frame waited for the frame loop
	cpu          float64 // share of one core over the window
	rssMax       int64   // KiB, sampled VmRSS
	rssMean      int64   // KiB
	rssEnd       int64   // KiB, the last sample
	hwm          int64   // KiB, VmHWM at the end
	viewed       int     // live frames the viewer received
	events       int     // started in the window
	eventSecs    float64 // their durations (trigger to end, post-roll included)
	clipSecs     float64 // their clips' lengths (pre-roll included)
	segments     int
	segBytes     int64   // media bytes of those segments
	segFrames    int     // frames in them
	segSecs      float64 // frame time the segments cover
	loadBefore   string
	loadAfter    string
	liveSent     string // the agent's live_frames_sent
	liveDropped  string
	stoppedLine  string
	began, ended time.Time // the window
	heapLive     int       // MB, the most heap alive after a collection (gctrace)
	heapGoal     int       // MB, the last collection's goal for the heap
	gcs          int       // collections in the run
}

// TestLiveMeasure measures the real keyframe binary on the synthetic scene
// at 640x480 and 10 fps (paced) against a receiver in this process, in
// three modes of KEYFRAME_LIVE_MEASURE seconds each: idle (clips off, no
// viewer), recording (clips on at the defaults, no viewer) and live (clips
// on, one live viewer). It reports, per mode, the frames analysed a second,
// the frames lost (gaps in the sequence numbers: the synthetic source
// delivers a late frame late rather than dropping it, so its gaps are 0 by
// construction; the frames taken up more than two frame intervals late,
// which a driver with three buffers would have dropped, and the longest
// wait of a frame for the frame loop are the figures that tell), the agent's
// CPU (utime+stime from /proc over the window) and RSS (VmRSS sampled every
// 250 ms, VmHWM), the events and their share of the time, and the clip
// bytes a second of clip at the receiver. It is a measurement, not a test:
// it runs only when asked, asserts nothing on time and reports figures. A
// multiple of 15 s (the scene's cycle) ends each run in the quiet part of
// the cycle, so every event is whole; 75 s lets the pre-roll ring's arena
// be written through once (about 58 s at 29 KB a frame), so the RSS shows
// all of it.
func TestLiveMeasure(t *testing.T) {
	secs, _ := strconv.Atoi(os.Getenv("KEYFRAME_LIVE_MEASURE"))
	if secs <= 0 {
		t.Skip("a measurement: set KEYFRAME_LIVE_MEASURE=SECONDS to run it")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "keyframe")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/keyframe-cam/keyframe/cmd/keyframe").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cfg := testConfig(dir, 640, 480)
	key, device, _, err := Identity(&cfg, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	closeKey(key)
	pub, err := board.PublicKeyPEM(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	rdir := filepath.Join(dir, "receiver")
	if _, err := receiver.Enroll(rdir, pub); err != nil {
		t.Fatal(err)
	}
	if err := receiver.Pair(rdir, device, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := (receiver.Accounts{Dir: rdir}).Add("alice", receiver.RoleOwner); err != nil {
		t.Fatal(err)
	}
	srv, err := receiver.Open(receiver.Options{Dir: rdir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	alice, err := srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	m := measurer{t: t, bin: bin, dataDir: cfg.DataDir, url: hs.URL, device: device, rdir: rdir, alice: alice, secs: secs}
	modes := []measureMode{{name: "idle"}, {name: "recording", clips: true}, {name: "live", clips: true, live: true}}
	res := make([]measured, len(modes))
	for i, mode := range modes {
		res[i] = m.run(mode)
		t.Logf("%s: %s", mode.name, res[i].stoppedLine)
	}
	// Every event's records are at the receiver once the last run's
	// uploads are done; a record of an earlier mode uploaded late is
	// counted by its event's time, not by when it arrived.
	for i, mode := range modes {
		if mode.clips {
			m.clips(&res[i])
		}
	}
	report(t, secs, modes, res)
}

// measurer runs the agent in one mode.
type measurer struct {
	t                       *testing.T
	bin, dataDir, url, rdir string
	device                  string
	alice                   *http.Cookie
	secs                    int
}

var (
	measureStopped   = regexp.MustCompile(`msg="agent stopped" frames=(\d+) frames_lost=(\d+) frames_late=(\d+) frame_late_max=(\S+) live_streams=\d+ live_frames_sent=(\d+) live_frames_dropped=(\d+)`)
	measureCapturing = regexp.MustCompile(`msg=capturing `)
	measureGC        = regexp.MustCompile(`(?m)^gc \d+ @.* (\d+)->(\d+)->(\d+) MB, (\d+) MB goal`)
)

func (m *measurer) run(mode measureMode) measured {
	t := m.t
	cmd := exec.Command(m.bin, "run")
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYFRAME_") { // the agent refuses settings it does not know
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "KEYFRAME_DEVICE_DATA_DIR="+m.dataDir, "KEYFRAME_CAPTURE_SOURCE=synthetic",
		"KEYFRAME_CAPTURE_WIDTH=640", "KEYFRAME_CAPTURE_HEIGHT=480", "KEYFRAME_CAPTURE_FPS=10",
		"KEYFRAME_UPLOAD_URL="+m.url, "KEYFRAME_CLIP_ENABLED="+strconv.FormatBool(mode.clips),
		"KEYFRAME_LIVE_ENABLED="+strconv.FormatBool(mode.live),
		"GODEBUG=gctrace=1") // the heap alive after each collection, on stderr
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var r measured
	r.loadBefore = loadavg()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	capturing := make(chan time.Time, 1)
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		var all []string
		for sc.Scan() {
			if measureCapturing.MatchString(sc.Text()) {
				select {
				case capturing <- time.Now():
				default:
				}
			}
			all = append(all, sc.Text())
		}
		lines <- strings.Join(all, "\n")
	}()
	var began time.Time
	select {
	case began = <-capturing:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("%s: the agent did not start capturing:\n%s", mode.name, <-lines)
	}
	ticks0 := cpuTicks(t, pid)
	ctx, cancel := context.WithDeadline(context.Background(), began.Add(time.Duration(m.secs)*time.Second))
	defer cancel()
	// RSS every 250 ms.
	var rss []int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			if kb, ok := procStatusKB(pid, "VmRSS"); ok {
				rss = append(rss, kb)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	if mode.live {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.url+"/live/"+m.device+"/mjpeg", nil)
		req.AddCookie(m.alice)
		for ctx.Err() == nil {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				break
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			r.viewed += strings.Count(string(b), "Content-Type: image/jpeg")
		}
	}
	<-ctx.Done()
	wg.Wait()
	ticks1 := cpuTicks(t, pid)
	r.hwm, _ = procStatusKB(pid, "VmHWM")
	stop := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	line := <-lines
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s: agent: %v\n%s", mode.name, err, line)
	}
	r.loadAfter = loadavg()
	r.window = stop.Sub(began).Seconds()
	// USER_HZ is 100 on Linux whatever the kernel's HZ.
	r.cpu = float64(ticks1-ticks0) / 100 / r.window
	for _, kb := range rss {
		r.rssMax = max(r.rssMax, kb)
		r.rssMean += kb
	}
	if len(rss) > 0 {
		r.rssMean /= int64(len(rss))
		r.rssEnd = rss[len(rss)-1]
	}
	sm := measureStopped.FindStringSubmatch(line)
	if sm == nil {
		t.Fatalf("%s: no counters in the agent's stop line:\n%s", mode.name, line)
	}
	r.stoppedLine = sm[0]
	r.frames, _ = strconv.ParseUint(sm[1], 10, 64)
	r.lost, _ = strconv.ParseUint(sm[2], 10, 64)
	r.late, _ = strconv.ParseUint(sm[3], 10, 64)
	r.lateMax, r.liveSent, r.liveDropped = sm[4], sm[5], sm[6]
	r.began, r.ended = began, stop
	for _, g := range measureGC.FindAllStringSubmatch(line, -1) {
		live, _ := strconv.Atoi(g[3])
		r.heapLive = max(r.heapLive, live)
		r.heapGoal, _ = strconv.Atoi(g[4])
		r.gcs++
	}
	return r
}

// clips fills r's events, their share of the time and their clips from the
// receiver's index: the events whose start record's time lies in r's run.
func (m *measurer) clips(r *measured) {
	t := m.t
	data, err := os.ReadFile(filepath.Join(m.rdir, "index.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		Event      string  `json:"event"`
		Kind       string  `json:"kind"`
		TimeUnixMs int64   `json:"time_unix_ms"`
		DurationMs uint64  `json:"duration_ms"`
		Segment    *uint32 `json:"segment"`
		Media      []struct {
			Size uint64 `json:"size"`
		} `json:"media"`
	}
	var entries []entry
	events := map[string]bool{}
	for _, l := range bytes.Split(data, []byte("\n")) {
		var e entry
		if json.Unmarshal(l, &e) != nil {
			continue
		}
		entries = append(entries, e)
		if e.Kind == provenance.KindStart {
			at := time.UnixMilli(e.TimeUnixMs)
			if !at.Before(r.began.Add(-time.Second)) && at.Before(r.ended) {
				events[e.Event] = true
			}
		}
	}
	r.events = len(events)
	first, last := map[string]int64{}, map[string]int64{}
	for _, e := range entries {
		if !events[e.Event] {
			continue
		}
		switch {
		case e.Kind == provenance.KindEnd:
			r.eventSecs += float64(e.DurationMs) / 1000
		case e.Kind == provenance.KindSegment:
			r.segments++
			for _, md := range e.Media {
				r.segBytes += int64(md.Size)
			}
			us := m.segmentTimes(e.Event, *e.Segment)
			if len(us) == 0 {
				continue
			}
			// A segment covers its frames' times and one frame interval.
			r.segSecs += float64(us[len(us)-1]-us[0])/1e6 + 0.1
			r.segFrames += len(us)
			if f, ok := first[e.Event]; !ok || us[0] < f {
				first[e.Event] = us[0]
			}
			last[e.Event] = max(last[e.Event], us[len(us)-1])
		}
	}
	for ev := range first {
		r.clipSecs += float64(last[ev]-first[ev])/1e6 + 0.1
	}
}

// segmentTimes is the t_us of the frames of an event's stored segment.
func (m *measurer) segmentTimes(event string, index uint32) []int64 {
	t := m.t
	base := filepath.Join(m.rdir, "events", m.device, fmt.Sprintf("%s-segment-%d", event, index))
	env, err := os.ReadFile(base + ".cose")
	if err != nil {
		t.Fatal(err)
	}
	media, err := filepath.Glob(base + ".0.*")
	if err != nil || len(media) != 1 {
		t.Fatalf("segment %d of %s: media %v %v", index, event, media, err)
	}
	frames, err := os.ReadFile(media[0])
	if err != nil {
		t.Fatal(err)
	}
	v, err := provenance.Verify(env, [][]byte{frames}, nil)
	if err != nil {
		t.Fatalf("segment %d of %s: %v", index, event, err)
	}
	var us []int64
	for _, f := range v.Payload.Segment.Frames {
		us = append(us, f.TUs)
	}
	slices.Sort(us)
	return us
}

func report(t *testing.T, secs int, modes []measureMode, res []measured) {
	var b strings.Builder
	fmt.Fprintf(&b, "640x480 at 10 fps, synthetic scene, %d s a mode\n", secs)
	fmt.Fprintln(&b, "| mode | frames analysed/s | frames lost (seq gaps) | frames late (> 2 intervals); longest wait | agent CPU (one core) | RSS mean / max / end (MiB) | VmHWM (MiB) | heap alive after GC, max; last goal (MB); GCs | events, share of time in events (in clips) | segments | clip KB/s of clip (frames/s, KB/frame) | live frames received/s (sent, dropped) | load before → after |")
	fmt.Fprintln(&b, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for i, mode := range modes {
		r := res[i]
		events, segs, rate, live := "–", "–", "–", "–"
		if mode.clips {
			events = fmt.Sprintf("%d, %.0f %% (%.0f %%)", r.events, 100*r.eventSecs/r.window, 100*r.clipSecs/r.window)
			segs = strconv.Itoa(r.segments)
			if r.segSecs > 0 {
				rate = fmt.Sprintf("%.0f (%.1f MB in %.1f s: %.2f frames/s, %.1f KB/frame)", float64(r.segBytes)/r.segSecs/1000,
					float64(r.segBytes)/1e6, r.segSecs, float64(r.segFrames)/r.segSecs, float64(r.segBytes)/float64(max(1, r.segFrames))/1000)
			}
		}
		if mode.live {
			live = fmt.Sprintf("%.2f (%s, %s)", float64(r.viewed)/r.window, r.liveSent, r.liveDropped)
		}
		// Frame 0 comes at once: frames-1 intervals in the window.
		fmt.Fprintf(&b, "| %s | %.2f | %d | %d; %s | %.1f %% | %.1f / %.1f / %.1f | %.1f | %d; %d; %d | %s | %s | %s | %s | %s → %s |\n",
			mode.name, float64(r.frames-1)/r.window, r.lost, r.late, r.lateMax, 100*r.cpu,
			float64(r.rssMean)/1024, float64(r.rssMax)/1024, float64(r.rssEnd)/1024, float64(r.hwm)/1024,
			r.heapLive, r.heapGoal, r.gcs,
			events, segs, rate, live, r.loadBefore, r.loadAfter)
	}
	t.Log("\n" + b.String())
	fmt.Fprint(os.Stderr, b.String())
}

// cpuTicks is a process's utime+stime in clock ticks, from /proc/PID/stat.
func cpuTicks(t *testing.T, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name, which is in parentheses.
	rest := string(data[bytes.LastIndexByte(data, ')')+2:])
	f := strings.Fields(rest)
	// utime and stime are fields 14 and 15 of stat, 12 and 13 after ")".
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, data)
	}
	return u + s
}

// procStatusKB is a "Name: N kB" field of /proc/PID/status.
func procStatusKB(pid int, name string) (int64, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for l := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	return f[0]
}
