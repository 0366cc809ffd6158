package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/internal/cli"
)

const watchdogUsage = `usage: keyframe watchdog status [-root /] [-dev /dev/watchdog0]

Prints what the kernel says about a hardware watchdog: identity, state,
timeout, nowayout and the boot status (CARDRESET: the watchdog reset the
board). It reads sysfs only and never opens the device, so it does not arm it.
`

// cmdWatchdog runs "keyframe watchdog status".
func cmdWatchdog(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "status" {
		args = args[1:]
	} else if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprint(stdout, watchdogUsage)
		return 0
	} else {
		fmt.Fprint(stderr, watchdogUsage)
		return 2
	}
	fl := flag.NewFlagSet("keyframe watchdog status", flag.ContinueOnError)
	fl.SetOutput(stderr)
	root := fl.String("root", "/", "machine root holding /sys")
	dev := fl.String("dev", "/dev/watchdog0", "watchdog device node (/dev/watchdog or /dev/watchdogN)")
	if code, ok := cli.Parse(fl, args, watchdogUsage, stdout, stderr); !ok {
		return code
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "keyframe watchdog status: unexpected arguments %q\n", fl.Args())
		return 2
	}
	name, err := board.WatchdogName(*dev)
	if err != nil {
		fmt.Fprintf(stderr, "keyframe watchdog status: %v\n", err)
		return 2
	}
	fs, err := board.NewFS(*root)
	if err != nil {
		fmt.Fprintf(stderr, "keyframe watchdog status: %v\n", err)
		return 1
	}
	info, err := fs.WatchdogInfo(name)
	if err != nil {
		if errors.Is(err, board.ErrAbsent) {
			fmt.Fprintf(stderr, "keyframe watchdog status: no watchdog %s (%v)\n", name, err)
		} else {
			fmt.Fprintf(stderr, "keyframe watchdog status: %v\n", err)
		}
		return 1
	}
	state := "inactive"
	if info.Active {
		state = "active"
	}
	fmt.Fprintf(stdout, "device:     %s (%s)\n", *dev, info.Name)
	fmt.Fprintf(stdout, "identity:   %s\n", info.Identity)
	fmt.Fprintf(stdout, "state:      %s\n", state)
	if info.MinTimeout > 0 && info.MaxTimeout > 0 {
		fmt.Fprintf(stdout, "timeout:    %v (driver range %v to %v)\n", info.Timeout, info.MinTimeout, info.MaxTimeout)
	} else {
		fmt.Fprintf(stdout, "timeout:    %v\n", info.Timeout)
	}
	fmt.Fprintf(stdout, "nowayout:   %v\n", info.NoWayOut)
	if info.Options != 0 {
		fmt.Fprintf(stdout, "options:    %v\n", info.Options)
	}
	fmt.Fprintf(stdout, "bootstatus: %d (%v)\n", uint32(info.BootStatus), info.BootStatus)
	if info.BootStatus&board.WatchdogCardReset != 0 {
		fmt.Fprintln(stdout, "last boot:  reset by the watchdog")
	}
	return 0
}
