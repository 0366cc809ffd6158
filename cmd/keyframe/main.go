// Command keyframe is the camera agent and its reference receiver in one
// static binary.
//
//	keyframe run       the daemon: capture, detect, sign, spool, upload
//	keyframe receiver  the reference verifying receiver (and enroll, pair)
//	keyframe identity  create or show the device identity
//	keyframe join      claim this camera for an owner with a claim code
//	keyframe verify    check a receiver's stored events offline
//	keyframe probe     list cameras and their formats
//	keyframe config    print the configuration with every default
//	keyframe watchdog  show the hardware watchdog's state and boot status
//	keyframe eval      score the motion detector on labelled image sequences
//	keyframe tune      draw what the motion detector saw, frame by frame
//	keyframe storm     the outage storm harness: a fleet reconnecting at once, a mixed-up owner cache
//	keyframe version   print the version
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: keyframe <command> [flags]

commands:
  run        run the agent: capture, detect motion, sign events, spool and upload them
  receiver   run the reference verifying receiver; also: receiver enroll|pair|unpair
  identity   create (on first use) and show the device identity: ID, key backend, public key
  join       claim this camera for its owner: keyframe join URL CODE (the code from the receiver's page)
  verify     re-verify a receiver's stored events offline
  probe      list V4L2 cameras, formats and sizes
  config     print the configuration file with every default (or the effective one with -config)
  watchdog   watchdog status: identity, timeout, boot status (reads sysfs; never arms it)
  eval       score the motion detector on labelled image sequences (precision, recall, F1, events)
  tune       write images of what the motion detector saw per frame (mask, blobs, status) for a sequence or camera
  storm      simulate a fleet's outage and reconnect storm against a real receiver: lost, duplicated, misattributed, peak load
  version    print the version

Run "keyframe <command> -h" for a command's flags.
`

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(rest, stdout, stderr)
	case "receiver":
		return cmdReceiver(rest, stdout, stderr)
	case "identity":
		return cmdIdentity(rest, stdout, stderr)
	case "join":
		return cmdJoin(rest, stdout, stderr)
	case "verify":
		return cmdVerify(rest, stdout, stderr)
	case "probe":
		return cmdProbe(rest, stdout, stderr)
	case "config":
		return cmdConfig(rest, stdout, stderr)
	case "watchdog":
		return cmdWatchdog(rest, stdout, stderr)
	case "eval":
		return cmdEval(rest, stdout, stderr)
	case "tune":
		return cmdTune(rest, stdout, stderr)
	case "storm":
		return cmdStorm(rest, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "keyframe %s\n", version)
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "keyframe: unknown command %q\n\n%s", cmd, usage)
	return 2
}
