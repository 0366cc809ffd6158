package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/keyframe-cam/keyframe/internal/cli"
	"github.com/keyframe-cam/keyframe/motion/eval"
)

const evalUsage = `usage: keyframe-receiver eval [-json] [-config FILE] [-gap N] [-fps F] DIR...

Runs the motion detector over labelled image sequences (CDnet-style: DIR/input/
frames, DIR/frame_labels.csv) and reports per sequence and overall the frame
precision, recall and F1, the event precision and recall, and the false events
per 1000 quiet frames. A DIR without input/ stands for its sequence
subdirectories (keyframe-receiver eval ../shared/motion-data). See docs/motion-eval.md.

`

// cmdEval scores the detector (with the motion settings of the agent's
// configuration) on labelled footage. It exits 0 on success, 1 when a
// sequence cannot be scored (a missing directory, bad labels, an
// undecodable frame), and 2 on a usage or configuration error.
func cmdEval(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyframe-receiver eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, `print one JSON object: {"sequences": {NAME: {...}}, "overall": {...}}`)
	cfgPath := fs.String("config", "", "configuration file whose motion.* settings the detector uses (see keyframe config); KEYFRAME_* variables override it")
	gap := fs.Int("gap", eval.DefaultGapFrames, "ground-truth events: positive frames at most this many frames apart are one event")
	fps := fs.Float64("fps", eval.DefaultFPS, "nominal frame rate: frame i is at i/fps seconds, for the event lifecycle's durations")
	if code, ok := cli.Parse(fs, args, evalUsage, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, "keyframe-receiver eval: no directory given\n\n"+evalUsage)
		return 2
	}
	if *gap < 0 {
		fmt.Fprintf(stderr, "keyframe-receiver eval: -gap %d: want 0 or more frames\n", *gap)
		return 2
	}
	if !(*fps > 0 && *fps <= 1000) {
		fmt.Fprintf(stderr, "keyframe-receiver eval: -fps %v: want a rate in (0, 1000]\n", *fps)
		return 2
	}
	c, ok := cli.LoadConfig("keyframe-receiver eval", *cfgPath, stderr)
	if !ok {
		return 2
	}
	opts := eval.Options{FPS: *fps, GapFrames: *gap}
	if *gap == 0 {
		opts.GapFrames = -1 // Options: 0 is the default, negative merges nothing
	}
	rep, err := eval.Run(fs.Args(), c.Motion, opts)
	if err != nil {
		fmt.Fprintf(stderr, "keyframe-receiver: %v\n", err)
		return 1
	}
	if !*asJSON {
		if err := eval.WriteTable(stdout, rep); err != nil {
			fmt.Fprintf(stderr, "keyframe-receiver: %v\n", err)
			return 1
		}
		return 0
	}
	for _, s := range rep.Skipped {
		fmt.Fprintf(stderr, "keyframe-receiver eval: skipped %s: %s\n", s.Dir, s.Reason)
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		fmt.Fprintf(stderr, "keyframe-receiver eval: %v\n", err)
		return 1
	}
	return 0
}
