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

	"github.com/keyframe-cam/keyframe/agent"
	"github.com/keyframe-cam/keyframe/internal/logthrottle"
	"github.com/keyframe-cam/keyframe/internal/sdnotify"
)

// loadConfig parses the common -config flag's file plus KEYFRAME_* variables.
func loadConfig(path string, stderr io.Writer) (agent.Config, bool) {
	c, err := agent.LoadConfig(path, os.Environ())
	if err != nil {
		fmt.Fprintf(stderr, "keyframe: %v\n", err)
		return c, false
	}
	return c, true
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (see keyframe config); KEYFRAME_* variables override it")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c, ok := loadConfig(*cfgPath, stderr)
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
	log.Info("agent stopped", "frames", a.Frames())
	return 0
}

func cmdConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "show the effective configuration from this file and KEYFRAME_* variables")
	template := fs.Bool("template", false, "print a configuration file with every key and default commented out (the packages' /etc/keyframe/keyframe.conf)")
	if err := fs.Parse(args); err != nil {
		return 2
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
		if c, ok = loadConfig(*cfgPath, stderr); !ok {
			return 2
		}
	}
	if err := agent.WriteConfig(stdout, &c); err != nil {
		fmt.Fprintf(stderr, "keyframe: %v\n", err)
		return 1
	}
	return 0
}
