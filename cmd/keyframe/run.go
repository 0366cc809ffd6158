package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/keyframe-cam/keyframe/agent"
	"github.com/keyframe-cam/keyframe/internal/cli"
	"github.com/keyframe-cam/keyframe/internal/logthrottle"
	"github.com/keyframe-cam/keyframe/internal/sdnotify"
)

const runUsage = `usage: keyframe run [-config FILE]

Runs the agent: captures frames, detects motion, signs each event's records
(COSE), keeps them in the spool and uploads them (HTTPS or MQTT) until
stopped. The configuration is the defaults, overlaid with what keyframe join
wrote, the file and KEYFRAME_* variables (keyframe config prints them all).
`

const configUsage = `usage: keyframe config [-config FILE] [-template]

Prints a configuration file with every key, its description and its value:
the defaults, or with -config the effective configuration (the file, what
keyframe join wrote and KEYFRAME_* variables), after checking it. A file with
mistakes is refused with every mistake named (file, line, key). -template
prints every key and default commented out (the packages' conffile).
`

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyframe run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (see keyframe config); KEYFRAME_* variables override it")
	if code, ok := cli.Parse(fs, args, runUsage, stdout, stderr); !ok {
		return code
	}
	c, ok := cli.LoadConfig("keyframe", *cfgPath, stderr)
	if !ok {
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		fmt.Fprintf(stderr, "keyframe: log.level: %v\n", err)
		return 2
	}
	log, throttle := logthrottle.NewText(stderr, level) // repeated lines rate-limited: the flash must outlive a flood
	defer throttle.Flush()
	log.Info("keyframe starting", "version", version)
	c.Version = version
	deps := agent.Deps{Logger: log, Rand: rand.Reader}
	// Under systemd (Type=notify): READY=1, and WatchdogSec= keepalives
	// under the hardware watchdog's health checks.
	service, err := sdnotify.FromEnv(os.Getenv, os.Getpid())
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	if service != nil {
		deps.Service = service
	}
	a, err := agent.New(c, deps)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := a.Run(ctx); err != nil {
		log.Error("agent stopped", "err", err)
		return 1
	}
	lc := a.LiveCounts()
	log.Info("agent stopped", "frames", a.Frames(), "frames_lost", a.FramesLost(), "frames_late", a.FramesLate(), "frame_late_max", a.FrameLateMax().Round(time.Millisecond), "live_streams", lc.Started, "live_frames_sent", lc.Sent, "live_frames_dropped", lc.Dropped)
	return 0
}

func cmdConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyframe config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "show the effective configuration from this file and KEYFRAME_* variables")
	template := fs.Bool("template", false, "print a configuration file with every key and default commented out (the packages' /etc/keyframe/keyframe.conf)")
	if code, ok := cli.Parse(fs, args, configUsage, stdout, stderr); !ok {
		return code
	}
	if *template {
		if *cfgPath != "" {
			fmt.Fprintln(stderr, "keyframe: config: -template takes no -config")
			return 2
		}
		if err := agent.WriteConfigTemplate(stdout); err != nil {
			fmt.Fprintf(stderr, "keyframe: %v\n", err)
			return 1
		}
		return 0
	}
	c := agent.DefaultConfig()
	if *cfgPath != "" {
		var ok bool
		if c, ok = cli.LoadConfig("keyframe", *cfgPath, stderr); !ok {
			return 2
		}
	}
	if err := agent.WriteConfig(stdout, &c); err != nil {
		fmt.Fprintf(stderr, "keyframe: %v\n", err)
		return 1
	}
	return 0
}
