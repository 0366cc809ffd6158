package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"

	"github.com/keyframe-cam/keyframe/internal/cli"
	"github.com/keyframe-cam/keyframe/storm"
	"github.com/keyframe-cam/keyframe/uploader"
)

const stormUsage = `usage: keyframe-receiver storm [--devices N] [--events E] [--outage DURATION] [--mixup-rate R]
                      [--owners M] [--json] [--control=true] [flags]

Reproduces the outage keyframe exists for: N simulated devices (own keys, own
spools on disk, the real uploader) upload to a real receiver on loopback; the
receiver goes away for --outage while every device records E events, then
comes back to the whole fleet at once, while owners view their events through
a cache that mixes devices up at --mixup-rate. Prints

  storm: devices=N events=E lost=L duplicates=D misattributed=M peak_rps=P control_peak_rps=C drain_s=S mixups_caught=K

(lost, duplicates, misattributed and mixups_caught summed over the jittered run
and the naive control run; peak_rps and drain_s of the jittered run). Exits 0
when nothing was lost, duplicated or misattributed and every run drained, 1
otherwise, 2 on a usage error. See docs/storm.md.

`

// cmdStorm runs the storm harness.
func cmdStorm(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyframe-receiver storm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg storm.Config
	fs.IntVar(&cfg.Devices, "devices", storm.DefaultDevices, "simulated devices")
	fs.IntVar(&cfg.Events, "events", storm.DefaultEvents, "events each device records during the outage (a start and an end record each)")
	fs.DurationVar(&cfg.Outage, "outage", storm.DefaultOutage, "how long the receiver is away")
	fs.Float64Var(&cfg.MixupRate, "mixup-rate", storm.DefaultMixupRate, "probability that the faulty owner cache answers with another device's owner while the storm runs (0 to 1)")
	fs.BoolVar(&cfg.E2EE, "e2ee", false, "seal every device's thumbnails to its owner's key set (docs/e2ee.md); the viewer opens them with the owner's keys, and the figures give the seal cost per device")
	fs.IntVar(&cfg.Owners, "owners", 0, fmt.Sprintf("owners (device i is paired to owner-(i mod M)); 0: one per %d devices", storm.DevicesPerOwner))
	asJSON := fs.Bool("json", false, "print the full result as one JSON object on stdout (the summary line goes to stderr)")
	fs.BoolVar(&cfg.Control, "control", true, "also run the naive control storm (fixed retry interval, no jitter) for control_peak_rps")
	fs.DurationVar(&cfg.NaiveRetry, "naive-retry", storm.DefaultNaiveRetry, "the control run's fixed retry interval")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed for keys, jitter, schedule and mix-ups (0: random, printed in the JSON)")
	fs.StringVar(&cfg.Dir, "dir", "", "where the working directories (receiver data, spools) are made (default: the system temp dir)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the working directories")
	fs.IntVar(&cfg.MaxConns, "max-conns", storm.DefaultMaxConns, "connections from the devices to the receiver at most (lowered to fit the open-file limit)")
	fs.IntVar(&cfg.MaxInFlight, "max-inflight", 0, "the receiver's uploads handled at once (0: its default)")
	fs.Float64Var(&cfg.Ramp, "ramp", storm.DefaultRamp, "devices brought online per second before the outage")
	fs.Float64Var(&cfg.ViewRate, "view-rate", storm.DefaultViewRate, "owner views per second while the receiver drains")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", storm.DefaultDrainTimeout, "give up waiting for the spools to drain after this long")
	fs.DurationVar(&cfg.Uploader.RetryWindow, "retry-window", uploader.DefaultRetryWindow, "devices' upload.retry_window: every retry within an outage waits uniform(0, at least this)")
	fs.DurationVar(&cfg.Uploader.QuickRetry, "quick-retry", uploader.DefaultQuickRetry, "devices' upload.quick_retry: the one quick retry of a first unanswered failure after a stable period")
	fs.DurationVar(&cfg.Uploader.BackoffBase, "backoff-base", uploader.DefaultBackoffBase, "devices' backoff base")
	fs.DurationVar(&cfg.Uploader.BackoffCap, "backoff-cap", uploader.DefaultBackoffCap, "devices' backoff cap")
	fs.Float64Var(&cfg.Uploader.Rate, "rate", uploader.DefaultRate, "devices' upload rate limit, records per second")
	verbose := fs.Bool("v", false, "log the phases to stderr")
	receiverLog := fs.String("receiver-log", "", "write the receiver's warnings (each mix-up caught, once per device and owner) to this file")
	if code, ok := cli.Parse(fs, args, stormUsage, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "keyframe-receiver storm: unexpected argument %q\n\n%s", fs.Arg(0), stormUsage)
		return 2
	}
	switch {
	case cfg.Devices < 1:
		fmt.Fprintf(stderr, "keyframe-receiver storm: --devices %d: want at least 1\n", cfg.Devices)
		return 2
	case cfg.Events < 1:
		fmt.Fprintf(stderr, "keyframe-receiver storm: --events %d: want at least 1\n", cfg.Events)
		return 2
	case cfg.Outage <= 0:
		fmt.Fprintf(stderr, "keyframe-receiver storm: --outage %v: want a positive duration\n", cfg.Outage)
		return 2
	case !(cfg.MixupRate >= 0 && cfg.MixupRate <= 1):
		fmt.Fprintf(stderr, "keyframe-receiver storm: --mixup-rate %v: want 0 to 1\n", cfg.MixupRate)
		return 2
	case cfg.Owners < 0 || cfg.Owners > cfg.Devices:
		fmt.Fprintf(stderr, "keyframe-receiver storm: --owners %d: want 1 to --devices (0: default)\n", cfg.Owners)
		return 2
	}
	if *verbose {
		cfg.Log = slog.New(slog.NewTextHandler(stderr, nil))
	}
	if *receiverLog != "" {
		f, err := os.Create(*receiverLog)
		if err != nil {
			fmt.Fprintf(stderr, "keyframe-receiver storm: %v\n", err)
			return 2
		}
		defer f.Close()
		cfg.ReceiverLog = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := storm.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "keyframe-receiver: %v\n", err)
		return 1
	}
	if !*asJSON {
		fmt.Fprintln(stdout, res.Line())
	} else {
		fmt.Fprintln(stderr, res.Line())
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintf(stderr, "keyframe-receiver storm: %v\n", err)
			return 1
		}
	}
	if !res.OK() {
		fmt.Fprintln(stderr, "keyframe-receiver storm: FAILED: records were lost, duplicated or misattributed, or a run did not drain")
		return 1
	}
	return 0
}
