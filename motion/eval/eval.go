// Package eval scores the motion detector on labelled footage: image
// sequences in the CDnet-style layout of the developers' data set
// (../shared/motion-data, not part of the repo; see its README):
//
//	NAME/input/            frames, played in name order
//	NAME/frame_labels.csv  pos,file,fg,unk,label,rule: label 1, 0 or -1 per frame
//	NAME/groundtruth/, ROI.bmp, temporalROI.txt (labels are derived from
//	                       these when frame_labels.csv is absent: DeriveLabels)
//
// Every frame of a sequence, don't-care frames included (they are the
// detector's warm-up and context), goes through capture.OpenDir (FPS 0) to a
// motion.Detector and a motion.Lifecycle, with frame i at time i/FPS on a
// fixed timeline (Options.FPS, 10 by default, so the Lifecycle's durations
// mean what they mean on a camera).
//
// Predictions:
//
//   - Frame prediction: motion.Result.Motion of that frame's Step, what a peer
//     "flags". Warming and Global frames are not motion.
//   - Event prediction: the events the Lifecycle raises, from the trigger
//     frame (Decision.Start) to the frame of Summary.End (the last motion
//     frame plus PostRoll; the frame that decided the end is not part of the
//     event). An event still open at the end of the sequence is flushed at
//     the last frame.
//
// Scoring (Score, Overall) follows the data set's README and
// docs/motion-eval.md, the same as scripts/peers: the first frame of a
// sequence is don't care whatever its label (nothing came before it to
// compare with); frame precision, recall and F1 over the frames labelled 1
// or 0; ground-truth events are runs of
// label-1 frames merged across gaps of at most Options.GapFrames frames;
// event precision is the fraction of predicted events that overlap a
// ground-truth event, event recall the fraction of ground-truth events
// overlapped by a predicted one; false events per 1,000 quiet frames are the
// predicted events overlapping none × 1000 / label-0 frames. Overall is the
// mean over the sequences with positive frames, plus the events raised on
// the others (all false alarms).
//
// Event endings (Tails): an event's tail is the time from the last labelled
// motion frame it was open on to the frame that closed it (EventGap after
// its last motion frame, or the sequence's end), mean and max per sequence
// and over all events; BestWithoutMotion counts the events on labelled
// motion whose best frame (the thumbnail) is not labelled motion.
//
// Unlike package motion, this package reads files and measures wall time
// (ms_per_frame, informational): it is a harness, not part of the agent.
package eval

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/motion"
)

// DefaultFPS is the nominal frame rate of the timeline the frames are given
// (capture.NominalFPS).
const DefaultFPS = capture.NominalFPS

// maxFPS bounds Options.FPS (a frame period of at least 1 ms).
const maxFPS = 1000

// DataHint is appended to the error for a directory that does not exist.
const DataHint = "the labelled footage is not part of the repo: ../shared/motion-data is on the developers' and CI's machines; pass its path"

// Options tunes a run. The zero value means the defaults.
type Options struct {
	// FPS is the nominal frame rate: frame i is given to the Lifecycle at
	// time i/FPS. 0 means DefaultFPS (10).
	FPS float64
	// GapFrames is the gap tolerance of the ground-truth events: label-1
	// frames at most this many frames apart are one event. 0 means
	// DefaultGapFrames (10); a negative value merges nothing (only adjacent
	// frames join).
	GapFrames int
	// Now is the wall clock used to time the detector (ms_per_frame); nil
	// means time.Now.
	Now func() time.Time
}

// resolved returns the options with the defaults filled in, or an error for
// an invalid frame rate.
func (o Options) resolved() (Options, error) {
	switch {
	case o.FPS == 0:
		o.FPS = DefaultFPS
	case !(o.FPS > 0 && o.FPS <= maxFPS):
		return o, fmt.Errorf("eval: FPS %v out of range (0, %d]", o.FPS, maxFPS)
	}
	switch {
	case o.GapFrames == 0:
		o.GapFrames = DefaultGapFrames
	case o.GapFrames < 0:
		o.GapFrames = 0
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}

// SequenceResult is the score of one sequence. The metrics are nil where
// they are undefined (JSON null): see Score.
type SequenceResult struct {
	Precision               *float64 `json:"precision"`
	Recall                  *float64 `json:"recall"`
	F1                      *float64 `json:"f1"`
	EventPrecision          *float64 `json:"event_precision"`
	EventRecall             *float64 `json:"event_recall"`
	FalseEventsPer1000Quiet *float64 `json:"false_events_per_1000_quiet"`

	Frames      int `json:"frames"`       // frames fed to the detector
	Positives   int `json:"positives"`    // label-1 frames (the first frame is never counted)
	Negatives   int `json:"negatives"`    // label-0 frames (nor here)
	Flagged     int `json:"flagged"`      // frames with Result.Motion (any label)
	Events      int `json:"events"`       // predicted events
	FalseEvents int `json:"false_events"` // predicted events overlapping no ground-truth event
	TruthEvents int `json:"truth_events"` // ground-truth events

	// Event tails (Tails): frames from the last labelled motion frame an
	// event was open on to the frame that closed it, mean and max over the
	// TailEvents events open on labelled motion (nil without one), and the
	// same in seconds at Options.FPS. BestWithoutMotion counts the events
	// overlapping a ground-truth event whose best frame is not labelled 1.
	TailEvents        int      `json:"tail_events"`
	TailMeanFrames    *float64 `json:"tail_mean_frames"`
	TailMaxFrames     *int     `json:"tail_max_frames"`
	TailMeanSeconds   *float64 `json:"tail_mean_s"`
	TailMaxSeconds    *float64 `json:"tail_max_s"`
	BestWithoutMotion int      `json:"best_without_motion"`
	// MsPerFrame is the wall time of Detector.Step and Lifecycle.Observe per
	// frame, decoding excluded: informational, it depends on the machine.
	MsPerFrame float64 `json:"ms_per_frame"`
	// Labels says where the labels came from: LabelsFromCSV or
	// LabelsFromMasks.
	Labels string `json:"labels,omitempty"`

	// FramePredictions holds Result.Motion per frame and PredictedEvents
	// the Lifecycle's events, in frame indices (set by RunSequence).
	FramePredictions []bool `json:"-"`
	PredictedEvents  []Span `json:"-"`
	// EventFrames are the same events with their best and closing frames.
	EventFrames []Event `json:"-"`
}

// OverallResult combines the sequences: see Overall.
type OverallResult struct {
	Precision               *float64 `json:"precision"`
	Recall                  *float64 `json:"recall"`
	F1                      *float64 `json:"f1"`
	EventPrecision          *float64 `json:"event_precision"`
	EventRecall             *float64 `json:"event_recall"`
	FalseEventsPer1000Quiet *float64 `json:"false_events_per_1000_quiet"`

	// EventsOnQuietSequences counts the events raised on the sequences
	// without positive frames: every one is a false alarm.
	EventsOnQuietSequences int `json:"events_on_quiet_sequences"`
	// TailMeanSeconds is the mean event tail over the events of every
	// sequence open on labelled motion (pooled, TailEvents of them), and
	// TailMaxSeconds the longest; nil without such an event.
	// BestWithoutMotion sums the sequences' counts, of TrueEvents events
	// overlapping a ground-truth event.
	TailEvents        int      `json:"tail_events"`
	TailMeanSeconds   *float64 `json:"tail_mean_s"`
	TailMaxSeconds    *float64 `json:"tail_max_s"`
	BestWithoutMotion int      `json:"best_without_motion"`
	TrueEvents        int      `json:"true_events"`
	// ScoredSequences have positive frames and make the means;
	// QuietSequences have none.
	ScoredSequences int `json:"scored_sequences"`
	QuietSequences  int `json:"quiet_sequences"`
}

// setSeconds fills the tails in seconds from those in frames.
func (r *SequenceResult) setSeconds(fps float64) {
	r.TailMeanSeconds, r.TailMaxSeconds = nil, nil
	if r.TailMeanFrames != nil {
		v := *r.TailMeanFrames / fps
		r.TailMeanSeconds = &v
	}
	if r.TailMaxFrames != nil {
		v := float64(*r.TailMaxFrames) / fps
		r.TailMaxSeconds = &v
	}
}

// Skip is a directory Run left out, and why.
type Skip struct {
	Dir, Reason string
}

// Report is the result of Run. Its JSON is that of `keyframe-receiver eval --json`:
// {"sequences": {NAME: {...}}, "overall": {...}}.
type Report struct {
	Sequences map[string]SequenceResult `json:"sequences"`
	Overall   OverallResult             `json:"overall"`
	// Names lists the sequences in the order they were run.
	Names []string `json:"-"`
	// Skipped lists the subdirectories that were not sequences with labels.
	Skipped []Skip `json:"-"`
}

// Run scores every sequence named by dirs with a detector made from cfg. A
// dir that has input/ or frame_labels.csv is a sequence; one that has
// neither stands for its subdirectories: each with input/ and labels
// (frame_labels.csv, or groundtruth/ to derive them from) is a sequence,
// the others are listed in Report.Skipped. Sequences are named by their
// directory's base name, which must be unique. A missing dir is an error
// wrapping fs.ErrNotExist that says where the data set lives.
func Run(dirs []string, cfg motion.Config, opts Options) (Report, error) {
	if len(dirs) == 0 {
		return Report{}, errors.New("eval: no directory given")
	}
	rep := Report{Sequences: make(map[string]SequenceResult)}
	var seqs []string
	for _, d := range dirs {
		s, skipped, err := expand(d)
		if err != nil {
			return Report{}, err
		}
		seqs = append(seqs, s...)
		rep.Skipped = append(rep.Skipped, skipped...)
	}
	if len(seqs) == 0 {
		return Report{}, fmt.Errorf("eval: no labelled sequence in %q", dirs)
	}
	for _, s := range seqs {
		name := filepath.Base(filepath.Clean(s))
		if _, dup := rep.Sequences[name]; dup {
			return Report{}, fmt.Errorf("eval: %s: a sequence named %s was already scored", s, name)
		}
		r, err := RunSequence(s, cfg, opts)
		if err != nil {
			return Report{}, err
		}
		rep.Sequences[name] = r
		rep.Names = append(rep.Names, name)
	}
	rep.Overall = Overall(rep.Sequences)
	return rep, nil
}

// expand returns the sequences dir stands for and the subdirectories it
// skipped.
func expand(dir string) ([]string, []Skip, error) {
	if err := checkDir(dir); err != nil {
		return nil, nil, err
	}
	if isDir(filepath.Join(dir, inputDir)) || fileExists(filepath.Join(dir, labelsFile)) {
		return []string{dir}, nil, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("eval: %w", err)
	}
	var seqs []string
	var skipped []Skip
	subdirs := 0
	for _, e := range entries { // ReadDir sorts by name
		sub := filepath.Join(dir, e.Name())
		if !e.IsDir() && !(e.Type()&fs.ModeSymlink != 0 && isDir(sub)) {
			continue
		}
		subdirs++
		switch {
		case !isDir(filepath.Join(sub, inputDir)):
			skipped = append(skipped, Skip{sub, "no " + inputDir + "/ and no " + labelsFile})
		case !fileExists(filepath.Join(sub, labelsFile)) && !isDir(filepath.Join(sub, truthDir)):
			skipped = append(skipped, Skip{sub, "no " + labelsFile + " and no " + truthDir + "/ to derive labels from"})
		default:
			seqs = append(seqs, sub)
		}
	}
	if subdirs == 0 {
		return nil, nil, fmt.Errorf("eval: %s: no %s/ and no sequence subdirectories", dir, inputDir)
	}
	return seqs, skipped, nil
}

// missingDirError is a directory that does not exist; it wraps
// fs.ErrNotExist.
type missingDirError string

func (e missingDirError) Error() string {
	return fmt.Sprintf("eval: %s: no such directory (%s)", string(e), DataHint)
}

func (e missingDirError) Unwrap() error { return fs.ErrNotExist }

// checkDir returns a clear error for a path that is not a directory.
func checkDir(dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return missingDirError(dir)
	}
	if err != nil {
		return fmt.Errorf("eval: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("eval: %s: not a directory", dir)
	}
	return nil
}

// RunSequence feeds every frame of the sequence in dir (dir/input, name
// order, through capture.OpenDir with FPS 0) to a Detector and a Lifecycle
// made from cfg, and scores the predictions against the sequence's labels
// (see the package doc). A frame that cannot be decoded, or that the
// detector rejects, is an error naming the file: a skipped frame would
// shift every later prediction against its label.
func RunSequence(dir string, cfg motion.Config, opts Options) (SequenceResult, error) {
	opts, err := opts.resolved()
	if err != nil {
		return SequenceResult{}, err
	}
	if err := checkDir(dir); err != nil {
		return SequenceResult{}, err
	}
	in := filepath.Join(dir, inputDir)
	if !isDir(in) {
		return SequenceResult{}, fmt.Errorf("eval: %s: no %s/ directory of frames", dir, inputDir)
	}
	det, err := motion.NewDetector(cfg)
	if err != nil {
		return SequenceResult{}, fmt.Errorf("eval: %w", err)
	}
	lc := motion.NewLifecycle(cfg)
	src, err := capture.OpenDir(capture.DirConfig{
		Dir:    in,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), // a skip is returned as an error below
	}, nil)
	if err != nil {
		return SequenceResult{}, fmt.Errorf("eval: %w", err)
	}
	defer src.Close()
	files := src.Files()
	labels, from, err := loadLabels(dir, files)
	if err != nil {
		return SequenceResult{}, err
	}

	period := time.Duration(math.Round(float64(time.Second) / opts.FPS))
	t0 := time.Unix(0, 0).UTC() // a fixed timeline: no clock is read
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * period) }
	index := func(t time.Time) int { return int(t.Sub(t0) / period) } // the frame at or before t

	var (
		f       capture.Frame
		flags   = make([]bool, 0, len(files))
		events  []Event
		open    = -1 // the open event's trigger frame
		best    = -1 // and its best frame
		elapsed time.Duration
	)
	for i := 0; ; i++ {
		err := src.Next(context.Background(), &f)
		if st := src.Stats(); st.Skipped > 0 {
			return SequenceResult{}, fmt.Errorf("eval: %s: frame %d cannot be used: %w", dir, i, st.LastSkip)
		}
		if errors.Is(err, capture.ErrEndOfStream) {
			break
		}
		if err != nil {
			return SequenceResult{}, fmt.Errorf("eval: %w", err)
		}
		start := opts.Now()
		pix, stride, step := f.LumaPlane()
		res := det.StepPlane(pix, f.Width, f.Height, stride, step)
		dec := lc.Observe(at(i), res)
		elapsed += opts.Now().Sub(start)
		if res.Err != nil {
			return SequenceResult{}, fmt.Errorf("eval: %s: %w", filepath.Join(in, files[i]), res.Err)
		}
		flags = append(flags, res.Motion)
		if dec.End && open >= 0 {
			// The frame that decided the end is not part of the event.
			events = append(events, Event{Span{open, max(open, min(index(dec.Summary.End), i-1))}, best, i})
			open = -1
		}
		if dec.Start {
			open = i
		}
		if dec.Best {
			best = i
		}
	}
	if len(flags) != len(files) {
		return SequenceResult{}, fmt.Errorf("eval: %s: %d frames played of %d files", dir, len(flags), len(files))
	}
	if dec := lc.Flush(at(len(flags) - 1)); dec.End && open >= 0 {
		events = append(events, Event{Span{open, max(open, min(index(dec.Summary.End), len(flags)-1))}, best, len(flags)})
	}

	spans := make([]Span, len(events))
	for i, e := range events {
		spans[i] = e.Span
	}
	r, err := Score(labels, flags, spans, opts.GapFrames)
	if err != nil {
		return SequenceResult{}, err
	}
	if err := Tails(labels, events, opts.GapFrames, &r); err != nil {
		return SequenceResult{}, err
	}
	r.setSeconds(opts.FPS)
	r.FramePredictions, r.PredictedEvents, r.EventFrames = flags, spans, events
	r.Labels = from
	r.MsPerFrame = float64(elapsed) / float64(time.Millisecond) / float64(len(flags))
	return r, nil
}
