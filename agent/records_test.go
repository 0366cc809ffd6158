package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/capture/capturetest"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/recorder"
	"github.com/keyframe-cam/keyframe/uploader"
)

// driverSource is a V4L2 driver with a ring of a few buffers in front of the
// synthetic scene: it captures a frame every interval whether or not anyone
// reads, into a free buffer, or drops it (its sequence number is used up)
// when every buffer holds a frame not yet dequeued. Next dequeues the oldest.
// A consumer late by more than buffers intervals therefore loses frames, and
// the sequence numbers it sees have gaps, as from a real driver. Time is the
// bubble's (synctest): only sleeps move it, so the frame loop's own work
// costs no frames, only the waits it makes.
type driverSource struct {
	syn      *capture.Synthetic
	interval time.Duration
	frames   uint64 // captured in all; then the end of the stream
	// cancel, if set, is called when frame cancelAt (or a later one) is
	// dequeued: an orderly stop requested mid-run.
	cancel   func()
	cancelAt uint64

	mu       sync.Mutex
	t0       time.Time
	captured uint64          // frames the driver has captured (or dropped)
	bufs     []capture.Frame // the driver's buffers
	free     []int           // buffers free for the driver
	filled   []int           // buffers holding a frame, oldest first
	scratch  capture.Frame   // where a dropped frame's pixels go
	got      []uint64        // sequence numbers dequeued, in order
	dropped  []uint64        // sequence numbers the driver dropped
}

func newDriverSource(t *testing.T, buffers int, frames uint64) *driverSource {
	t.Helper()
	syn, err := capture.NewSynthetic(capture.SyntheticConfig{Width: 160, Height: 120, Seed: 7}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := &driverSource{syn: syn, interval: time.Second / capture.NominalFPS, frames: frames, bufs: make([]capture.Frame, buffers)}
	for i := range buffers {
		d.free = append(d.free, i)
	}
	return d
}

// capture runs the driver up to now: every frame due by now is captured
// into a free buffer or dropped.
func (d *driverSource) capture(ctx context.Context, now time.Time) error {
	for d.captured < d.frames && !d.t0.Add(time.Duration(d.captured)*d.interval).After(now) {
		seq := d.captured
		dst := &d.scratch
		if len(d.free) > 0 {
			i := d.free[0]
			d.free = d.free[1:]
			d.filled = append(d.filled, i)
			dst = &d.bufs[i]
		} else {
			d.dropped = append(d.dropped, seq)
		}
		// The scene advances with every frame, delivered or not.
		if err := d.syn.Next(ctx, dst); err != nil {
			return err
		}
		dst.Sequence, dst.Time = seq, d.t0.Add(time.Duration(seq)*d.interval)
		d.captured++
	}
	return nil
}

func (d *driverSource) Next(ctx context.Context, f *capture.Frame) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.t0.IsZero() {
		d.t0 = time.Now()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.capture(ctx, time.Now()); err != nil {
		return err
	}
	if len(d.filled) == 0 {
		if d.captured == d.frames {
			return capture.ErrEndOfStream
		}
		// Wait for the next frame, as DQBUF does.
		due := d.t0.Add(time.Duration(d.captured) * d.interval)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(due)):
		}
		if err := d.capture(ctx, due); err != nil {
			return err
		}
	}
	i := d.filled[0]
	d.filled = d.filled[1:]
	d.bufs[i].CopyTo(f)
	d.free = append(d.free, i) // requeued at once (QBUF)
	d.got = append(d.got, f.Sequence)
	if d.cancel != nil && f.Sequence >= d.cancelAt {
		d.cancel()
	}
	return nil
}

func (d *driverSource) Close() error { return nil }

// lost is the sequence numbers the driver dropped: frames the consumer was
// too late for.
func (d *driverSource) lost() []uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.dropped)
}

func (d *driverSource) dequeuedSeqs() []uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.got)
}

// slowSigner is a device key that takes delay per signature, as a TPM on
// SPI does.
type slowSigner struct {
	crypto.Signer
	delay time.Duration
}

func (s slowSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	time.Sleep(s.delay)
	return s.Signer.Sign(r, digest, opts)
}

// slowSpool is the spool on an SD card whose fsync takes delay; it keeps
// every record it was given, in order.
type slowSpool struct {
	next  recorder.Spool
	delay time.Duration
	mu    sync.Mutex
	puts  []uploader.Record
}

func (s *slowSpool) Put(r uploader.Record) error {
	time.Sleep(s.delay)
	err := s.next.Put(r)
	if err == nil {
		s.mu.Lock()
		s.puts = append(s.puts, r)
		s.mu.Unlock()
	}
	return err
}

func (s *slowSpool) records() []uploader.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.puts)
}

// slowAgent is an agent on the driver whose records go through a signer
// taking 200 ms a signature and a spool taking 500 ms a write.
func slowAgent(t *testing.T, src capture.Source) (*Agent, *slowSpool) {
	t.Helper()
	return delayedAgent(t, src, 200*time.Millisecond, 500*time.Millisecond)
}

// delayedAgent is slowAgent with the signer's and the spool's delays given.
func delayedAgent(t *testing.T, src capture.Source, sign, spoolWrite time.Duration) (*Agent, *slowSpool) {
	t.Helper()
	return delayedAgentWith(t, src, sign, spoolWrite, nil)
}

// delayedAgentWith is delayedAgent with its config changed by set.
func delayedAgentWith(t *testing.T, src capture.Source, sign, spoolWrite time.Duration, set func(*Config)) (*Agent, *slowSpool) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = filepath.Join(t.TempDir(), "device")
	cfg.Width, cfg.Height, cfg.FPS = 160, 120, 10
	cfg.UploadURL = "http://127.0.0.1:1" // nothing listens: records stay spooled
	if set != nil {
		set(&cfg)
	}
	a, err := New(cfg, Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Source: src})
	if err != nil {
		t.Fatal(err)
	}
	spool := &slowSpool{next: healthSpool{a}, delay: spoolWrite}
	a.rec, err = recorder.Open(recorder.Config{
		Chain: recorder.ChainFile(Layout(&cfg).Chain), Spool: spool,
		Key: slowSigner{Signer: a.key, delay: sign}, Rand: rand.Reader,
	})
	if err != nil {
		t.Fatal(err)
	}
	return a, spool
}

// checkChain verifies the records spooled: sequence numbers 1..n in order,
// each chained to the one before, every event a start then an end, and the
// chain state past the last.
func checkChain(t *testing.T, a *Agent, recs []uploader.Record) {
	t.Helper()
	var prev [32]byte
	var open string
	var segs []provenance.ClipSegment
	clipped := 0
	for i, r := range recs {
		b, err := provenance.UnmarshalBundle(r.Data)
		if err != nil {
			t.Fatalf("spooled seq %d: %v", r.Seq, err)
		}
		v, err := provenance.Verify(b.Envelope, b.Media, nil)
		if err != nil {
			t.Fatalf("spooled seq %d does not verify: %v", r.Seq, err)
		}
		p := v.Payload
		if p.Seq != uint64(i+1) || r.Seq != p.Seq {
			t.Fatalf("spooled record %d has seq %d (file %d): want %d, in order", i, p.Seq, r.Seq, i+1)
		}
		if i > 0 && !bytes.Equal(p.Prev, prev[:]) {
			t.Fatalf("seq %d's prev is not seq %d's hash", p.Seq, p.Seq-1)
		}
		prev = v.Hash
		// Per event: a start, its clip's segments, its end; events one
		// after the other.
		switch p.Kind {
		case provenance.KindStart:
			if open != "" {
				t.Fatalf("seq %d starts %s while %s is open", p.Seq, p.Event, open)
			}
			open, segs = p.Event, nil
		case provenance.KindSegment:
			if p.Event != open {
				t.Fatalf("seq %d is a segment of %s, the open event is %q", p.Seq, p.Event, open)
			}
			segs = append(segs, provenance.ClipSegment{Envelope: b.Envelope, Media: b.Media[0]})
		case provenance.KindEnd:
			if p.Event != open {
				t.Fatalf("seq %d ends event %s, the open event is %q", p.Seq, p.Event, open)
			}
			// The end record lists the clip's segments; the clip
			// verifies frame by frame.
			if len(p.Segments) != len(segs) {
				t.Fatalf("seq %d: the end record lists %d segments, %d were spooled", p.Seq, len(p.Segments), len(segs))
			}
			if len(segs) > 0 {
				c, err := provenance.VerifyClip(b.Envelope, segs, nil)
				if err != nil {
					t.Fatalf("event %s: clip: %v", p.Event, err)
				}
				clipped++
				if c.FirstUs >= 0 {
					t.Errorf("event %s: the clip starts %d µs after the trigger, want a pre-roll", p.Event, c.FirstUs)
				}
			}
			open = ""
		default:
			t.Fatalf("seq %d is a %s record", p.Seq, p.Kind)
		}
	}
	if open != "" {
		t.Fatalf("event %s not ended", open)
	}
	if a.clips != nil && clipped == 0 {
		t.Fatal("clips are on, and no event has one")
	}
	c, err := board.LoadChain(Layout(&a.cfg).Chain)
	if err != nil {
		t.Fatal(err)
	}
	if c.Next != uint64(len(recs))+1 {
		t.Fatalf("chain state says %d records made, %d spooled", c.Next-1, len(recs))
	}
	var pending []uint64
	for _, e := range a.spool.Pending() {
		pending = append(pending, e.Seq)
	}
	var want []uint64
	for _, r := range recs {
		want = append(want, r.Seq)
	}
	if !slices.Equal(pending, want) {
		t.Fatalf("spool holds %v, want %v", pending, want)
	}
}

func countKind(recs []uploader.Record, kind string) uint64 {
	n := uint64(0)
	for _, r := range recs {
		if r.Kind == kind {
			n++
		}
	}
	return n
}

// stallSource is a driver whose consumer stalls for stall before taking
// up frame at: the driver drops the frames it has no buffer for.
type stallSource struct {
	*driverSource
	at    uint64
	stall time.Duration
	n     uint64
}

func (s *stallSource) Next(ctx context.Context, f *capture.Frame) error {
	if s.n == s.at {
		time.Sleep(s.stall)
	}
	s.n++
	return s.driverSource.Next(ctx, f)
}

// TestFramesLostCountsDriverDrops: a frame loop held up for a second behind
// a driver with 3 buffers at 10 fps loses frames; the agent counts exactly
// the gaps in their sequence numbers (FramesLost), and the lateness of the
// frames it took up after the stall (FrameLateMax, FramesLate).
func TestFramesLostCountsDriverDrops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &stallSource{driverSource: newDriverSource(t, 3, 60), at: 20, stall: time.Second}
		a, _ := delayedAgent(t, src, 0, 0)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := a.Run(ctx); err != nil {
			t.Fatalf("Run: %v", err)
		}
		lost := src.lost()
		if len(lost) == 0 {
			t.Fatal("the driver dropped no frame: the stall did not hold up the frame loop")
		}
		if got := a.FramesLost(); got != uint64(len(lost)) {
			t.Errorf("the agent counts %d frames lost, the driver dropped %d: %v", got, len(lost), lost)
		}
		if got, want := a.Frames()+a.FramesLost(), uint64(60); got != want {
			t.Errorf("%d frames analysed + %d lost, want %d", a.Frames(), a.FramesLost(), want)
		}
		// The oldest buffered frame was captured at the stall's start: it
		// waited the whole stall, less one frame interval at most.
		if late := a.FrameLateMax(); late < 900*time.Millisecond || late > 1100*time.Millisecond {
			t.Errorf("frame lateness %v, want about the 1 s stall", late)
		}
		// The 3 buffered frames waited 1 s, 0.9 s and 0.8 s: more than two
		// intervals at capture.fps 10.
		if n := a.FramesLate(); n != 3 {
			t.Errorf("%d frames counted late, want the 3 the driver held through the stall", n)
		}
	})
}

// TestFrameSeqs: gaps count the frames missing between sequence numbers;
// the first frame's number counts those before it, and a number not after
// the last (a source reopened) counts from 0.
func TestFrameSeqs(t *testing.T) {
	var s frameSeqs
	for _, c := range []struct {
		seq  uint64
		want uint64
	}{{0, 0}, {1, 0}, {2, 0}, {5, 2}, {6, 2}, {0, 2}, {1, 2}, {4, 4}, {2, 6}} {
		s.observe(c.seq, 0)
		if got := s.lost.Load(); got != c.want {
			t.Fatalf("after sequence %d: %d lost, want %d", c.seq, got, c.want)
		}
	}
	var first frameSeqs
	first.observe(3, 50*time.Millisecond)
	first.observe(4, 20*time.Millisecond)
	if first.lost.Load() != 3 || first.lateMax.Load() != int64(50*time.Millisecond) {
		t.Errorf("first frame numbered 3: %d lost, lateness %v; want 3, 50ms", first.lost.Load(), time.Duration(first.lateMax.Load()))
	}
}

// TestSlowRecordsLoseNoFrames: with a signer taking 200 ms a signature and
// a spool taking 500 ms a write, behind a driver with 3 buffers at 10 fps
// (a consumer later than 300 ms loses frames), the frame loop dequeues
// every frame the driver captured, and every event's start and end records
// are spooled in chain order.
func TestSlowRecordsLoseNoFrames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cycle := uint64(capture.SyntheticCycle / (time.Second / capture.NominalFPS))
		src := newDriverSource(t, 3, 3*cycle)
		a, spool := slowAgent(t, src)
		// The source ends after three crossings; the spool cannot drain
		// (nothing listens), so Run returns when ctx ends.
		ctx, cancel := context.WithTimeout(context.Background(), 3*capture.SyntheticCycle+time.Minute)
		defer cancel()
		if err := a.Run(ctx); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if lost := src.lost(); len(lost) > 0 {
			t.Fatalf("the driver dropped %d frames the frame loop was too late for: %v", len(lost), lost)
		}
		got := src.dequeuedSeqs()
		for i, s := range got {
			if s != uint64(i) {
				t.Fatalf("frame %d dequeued has sequence %d: a gap", i, s)
			}
		}
		if uint64(len(got)) != 3*cycle || a.Frames() != 3*cycle {
			t.Fatalf("%d frames dequeued, %d analysed, want %d", len(got), a.Frames(), 3*cycle)
		}
		if n := a.FramesLost(); n != 0 {
			t.Errorf("the agent counts %d frames lost, the driver dropped none", n)
		}
		if n := a.FramesLate(); n != 0 {
			t.Errorf("the agent counts %d frames late, the frame loop kept up", n)
		}
		recs := spool.records()
		if len(recs) < 6 {
			t.Fatalf("%d records spooled for three crossings, want a start and an end each", len(recs))
		}
		checkChain(t, a, recs)
		if n, starts := a.events.Load(), countKind(recs, provenance.KindStart); n != starts {
			t.Fatalf("events counter %d, %d events spooled", n, starts)
		}
	})
}

// TestSlowRecordsSpooledAtStop: an orderly stop (ctx cancelled) in the
// middle of an event, while the slow signer is still at the start record,
// returns only once that record and the event's end are spooled.
func TestSlowRecordsSpooledAtStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newDriverSource(t, 3, 1000)
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		a, spool := slowAgent(t, src)
		// The object crosses from 2 s to 7 s of the cycle: stop at 2.6 s,
		// just after the event started.
		atStop := -1
		src.cancelAt = 26
		src.cancel = func() {
			if atStop < 0 {
				atStop = len(spool.records())
			}
			cancel()
		}
		if err := a.Run(ctx); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if !errors.Is(context.Cause(ctx), context.Canceled) {
			t.Fatalf("Run returned on %v, not on the stop", context.Cause(ctx))
		}
		if atStop != 0 {
			t.Fatalf("%d records were spooled when the stop came: want the start record still being made", atStop)
		}
		recs := spool.records()
		if countKind(recs, provenance.KindStart) != 1 || countKind(recs, provenance.KindEnd) != 1 {
			t.Fatalf("%d records spooled, want the start and the end of the event the stop cut (and its clip)", len(recs))
		}
		checkChain(t, a, recs)
		if recs[len(recs)-1].Kind != provenance.KindEnd {
			t.Fatalf("last record is %s", recs[len(recs)-1].Kind)
		}
	})
}

// TestRecordQueueFull: with the worker stuck on a record, a full queue
// drops the oldest snapshot waiting to make room, drops a new snapshot that
// finds only records waiting, and makes the frame loop wait for a record;
// the worker then does every record in order, each with its own frame.
func TestRecordQueueFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		var mu sync.Mutex
		var done []string
		q := newRecordQueue(func(j job, f *capture.Frame) {
			if j.event == "r1" {
				<-gate
			}
			mu.Lock()
			done = append(done, fmt.Sprintf("%s/%d", j.event, f.Sequence))
			mu.Unlock()
		})
		go q.run()
		f := capturetest.GreyFrame(32, 24, 90, 0, time.Now())
		hand := func(kind, event string, seq uint64) (job, bool) {
			f.Sequence = seq
			d, waited := q.hand(job{kind: kind, event: event}, &f)
			f.Sequence = 999 // the queue holds a copy
			return d, waited
		}
		want := func(d job, waited bool, dropped string) {
			t.Helper()
			if d.event != dropped || waited {
				t.Fatalf("dropped %q, waited %v; want %q dropped, no wait", d.event, waited, dropped)
			}
		}
		d, w := hand(provenance.KindStart, "r1", 1)
		want(d, w, "")
		synctest.Wait() // the worker holds r1
		d, w = hand(jobSnapshot, "s1", 2)
		want(d, w, "")
		d, w = hand(jobSnapshot, "s2", 3)
		want(d, w, "")
		d, w = hand(provenance.KindEnd, "r2", 4)
		want(d, w, "") // every slot busy now
		d, w = hand(provenance.KindStart, "r3", 5)
		want(d, w, "s1")
		d, w = hand(jobSnapshot, "s3", 6)
		want(d, w, "s2")
		d, w = hand(provenance.KindEnd, "r4", 7)
		want(d, w, "s3")
		d, w = hand(jobSnapshot, "s4", 8)
		want(d, w, "s4") // only records wait: the snapshot goes
		if n := q.dropped.Load(); n != 4 {
			t.Fatalf("dropped counter %d, want 4", n)
		}

		handed := make(chan bool)
		go func() {
			_, waited := q.hand(job{kind: provenance.KindStart, event: "r5"}, &capture.Frame{Sequence: 9})
			handed <- waited
		}()
		synctest.Wait()
		select {
		case <-handed:
			t.Fatal("a record was handed over with every slot holding a record")
		default:
		}
		close(gate)
		if !<-handed {
			t.Fatal("hand did not say it waited")
		}
		q.close()
		if n := q.waits.Load(); n != 1 {
			t.Fatalf("waits counter %d, want 1", n)
		}
		if w := []string{"r1/1", "r2/4", "r3/5", "r4/7", "r5/9"}; !slices.Equal(done, w) {
			t.Fatalf("worker did %v, want %v", done, w)
		}
	})
}

// TestRecordQueueAllocations: once its slots have held a frame of the size,
// handing a frame over allocates nothing, nor does the worker around its
// job.
func TestRecordQueueAllocations(t *testing.T) {
	q := newRecordQueue(func(job, *capture.Frame) {})
	go q.run()
	defer q.close()
	f := capturetest.GreyFrame(640, 480, 90, 0, time.Now())
	for range 2 * recordSlots {
		q.hand(job{kind: provenance.KindStart}, &f)
	}
	if n := testing.AllocsPerRun(200, func() {
		q.hand(job{kind: provenance.KindEnd, event: "e"}, &f)
	}); n != 0 {
		t.Fatalf("%v allocations per record handed over, want 0", n)
	}
}
