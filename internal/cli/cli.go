// Package cli holds what keyframe's two commands share: keyframe (the device
// binary: run, join, identity, probe, config, watchdog, tune) and
// keyframe-receiver (the receiver, verify, storm, eval). It dispatches a
// subcommand by name (Program), parses flags with -h as a request that
// succeeds and shows the command's synopsis, and loads the agent's
// configuration reporting every mistake at once.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/keyframe-cam/keyframe/agent"
)

// Parse parses args into fs. With -h (or -help) it prints usage (the
// command's synopsis, its subcommands included) and fs's flags on stdout and
// returns 0, false: the caller exits 0. A bad flag is reported on stderr,
// with usage, and Parse returns 2, false. Otherwise it returns 0, true.
func Parse(fs *flag.FlagSet, args []string, usage string, stdout, stderr io.Writer) (int, bool) {
	fs.SetOutput(stderr)
	fs.Usage = func() {} // the flag package's own usage names no subcommand
	err := fs.Parse(args)
	if err == nil {
		return 0, true
	}
	if errors.Is(err, flag.ErrHelp) {
		Help(fs, usage, stdout)
		return 0, false
	}
	fmt.Fprintf(stderr, "%s(flags: %s -h)\n", usage, fs.Name())
	return 2, false
}

// Help writes usage and then fs's flags with their defaults to w.
func Help(fs *flag.FlagSet, usage string, w io.Writer) {
	fmt.Fprint(w, usage)
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		return
	}
	fmt.Fprintf(w, "\nflags of %s:\n", fs.Name())
	out := fs.Output()
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(out)
}

// LoadConfig loads the agent's configuration from the file at path (none if
// empty) and the KEYFRAME_* variables of the process. On an error it prints
// every problem found, one line each prefixed with prog, on stderr and
// returns false.
func LoadConfig(prog, path string, stderr io.Writer) (agent.Config, bool) {
	c, err := agent.LoadConfig(path, os.Environ())
	if err != nil {
		PrintError(stderr, prog, err)
		return c, false
	}
	return c, true
}

// PrintError writes err to w prefixed with prog; an error joining several
// (errors.Join) is written one line per error.
func PrintError(w io.Writer, prog string, err error) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			PrintError(w, prog, e)
		}
		return
	}
	fmt.Fprintf(w, "%s: %v\n", prog, err)
}
