// Command keyframe is the camera agent: the one static binary a camera
// carries. The reference receiver and the tools that go with it (verify,
// eval, storm) are in a second binary, keyframe-receiver, so that none of
// their code is on the camera.
//
//	keyframe run       the daemon: capture, detect, sign, spool, upload
//	keyframe identity  create or show the device identity
//	keyframe join      claim this camera for an owner with a claim code
//	keyframe probe     list cameras and their formats
//	keyframe config    print the configuration with every default
//	keyframe watchdog  show the hardware watchdog's state and boot status
//	keyframe tune      draw what the motion detector saw, frame by frame
//	keyframe version   print the version
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/keyframe-cam/keyframe/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: keyframe <command> [flags]

commands:
  run        run the agent: capture, detect motion, sign events, spool and upload them
  identity   create (on first use) and show the device identity: ID, key backend, public key; also: identity csr|cert install|rotate
  join       claim this camera for its owner: keyframe join URL CODE (the code from the receiver's page)
  probe      list V4L2 cameras, formats and sizes
  config     print the configuration file with every default (or the effective one with -config)
  watchdog   watchdog status: identity, timeout, boot status (reads sysfs; never arms it)
  tune       write images of what the motion detector saw per frame (mask, blobs, status) for a sequence or camera
  version    print the version

The receiver and its tools (receiver, verify, eval, storm) are in the
keyframe-receiver binary. Run "keyframe <command> -h" for a command's flags.
`

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	p := cli.Program{
		Name:    "keyframe",
		Version: version,
		Usage:   usage,
		Commands: []cli.Command{
			{Name: "run", Run: cmdRun},
			{Name: "identity", Run: cmdIdentity},
			{Name: "join", Run: cmdJoin},
			{Name: "probe", Run: cmdProbe},
			{Name: "config", Run: cmdConfig},
			{Name: "watchdog", Run: cmdWatchdog},
			{Name: "tune", Run: cmdTune},
		},
		Help:      []string{"help", "-h", "-help", "--help"},
		Elsewhere: receiverCommand,
	}
	return p.Dispatch(args, stdout, stderr)
}

// receiverCommand says where a command moved to the receiver's binary is,
// with the command to type; "" for any other.
func receiverCommand(name string, rest []string) string {
	switch name {
	case "receiver", "verify", "eval", "storm":
		moved := append([]string{name}, rest...)
		if name == "receiver" {
			moved = rest
		}
		return fmt.Sprintf("%s is not on the camera's binary; it is in keyframe-receiver: %s",
			name, strings.TrimSpace("keyframe-receiver "+strings.Join(moved, " ")))
	}
	return ""
}

// systemConfig is the packages' configuration file (packaging/keyframe.conf),
// the one keyframe.service runs with.
const systemConfig = "/etc/keyframe/keyframe.conf"

// configFlag defines -config for a command that acts on the camera's
// identity (identity, join): its default is the file at system when that
// exists, so that `sudo -u keyframe keyframe join URL CODE` on an installed
// camera uses the service's key (a TPM-held one, say) rather than the
// built-in defaults.
func configFlag(fs *flag.FlagSet, system, usage string) *string {
	def := ""
	if _, err := os.Stat(system); err == nil {
		def = system
	}
	return fs.String("config", def, usage+"; default: "+system+" when it exists")
}
