// Command keyframe-receiver is keyframe's reference verifying receiver and
// the tools that go with it, apart from the camera's binary (keyframe) so
// that the camera carries none of their code.
//
//	keyframe-receiver [serve]  the reference verifying receiver
//	keyframe-receiver enroll, pair, unpair, revoke, owner, admin, trust-ca, ...
//	                           the receiver's registry and accounts
//	keyframe-receiver verify   check a receiver's stored events offline
//	keyframe-receiver eval     score the motion detector on labelled image sequences
//	keyframe-receiver storm    the outage storm harness: a fleet reconnecting at once, a mixed-up owner cache
//	keyframe-receiver version  print the version
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/keyframe-cam/keyframe/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const (
	defaultReceiverData   = "./keyframe-receiver"
	defaultReceiverListen = "127.0.0.1:8417"
)

const receiverUsage = `usage: keyframe-receiver [serve] [-data DIR] [-listen ADDR] [-public] [-tls auto|self|off] [-tls-names NAME,...] [-allow-host HOST[:PORT],...] [limits]
         (limits: -max-conns, -quota-records-hour, -body-budget, ...: keyframe-receiver -h, docs/config.md)
       keyframe-receiver owner add  [-data DIR] [-url URL] [-admin] NAME   (prints a one-time setup link)
       keyframe-receiver owner link [-data DIR] [-url URL] NAME            (prints a one-time sign-in link)
       keyframe-receiver owner setup-link [-data DIR] [-url URL] NAME      (reset: password, passkeys and sessions removed; a setup link)
       keyframe-receiver owner list [-data DIR]
       keyframe-receiver admin add  [-data DIR] [-url URL] NAME            (owner add -admin)
       keyframe-receiver enroll -data DIR -key FILE.pem [-owner NAME]
       keyframe-receiver pair   -data DIR -device ID -owner NAME
       keyframe-receiver unpair -data DIR -device ID
       keyframe-receiver revoke -data DIR -device ID
       keyframe-receiver trust-ca   -data DIR CA.pem
       keyframe-receiver untrust-ca -data DIR (CA.pem | -fingerprint SHA256)
       keyframe-receiver cas        -data DIR
       keyframe-receiver verify [-data DIR]                                (re-verify the stored events offline)
       keyframe-receiver eval [-json] [-config FILE] DIR...                (score the motion detector on labelled footage)
       keyframe-receiver storm [--devices N] [--outage D] ...              (the outage storm harness: docs/storm.md)
       keyframe-receiver version

The camera's commands (run, join, identity, ...) are in the keyframe binary.
Run "keyframe-receiver <command> -h" for a command's flags.
`

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

// dispatch runs the command named by args[0]; without one, or when args
// start with a flag, the receiver itself (serve).
func dispatch(args []string, stdout, stderr io.Writer) int {
	p := cli.Program{
		Name:    "keyframe-receiver",
		Version: version,
		Usage:   receiverUsage,
		Commands: []cli.Command{
			{Name: "serve", Run: receiverServe},
			{Name: "enroll", Run: receiverEnroll},
			{Name: "pair", Run: receiverPair},
			{Name: "unpair", Run: named("unpair", receiverUnpair)},
			{Name: "revoke", Run: named("revoke", receiverUnpair)},
			{Name: "trust-ca", Run: receiverTrustCA},
			{Name: "untrust-ca", Run: receiverUntrustCA},
			{Name: "cas", Run: receiverCAs},
			{Name: "owner", Run: named("owner", cmdReceiverAccounts)},
			{Name: "admin", Run: named("admin", cmdReceiverAccounts)},
			{Name: "verify", Run: cmdVerify},
			{Name: "eval", Run: cmdEval},
			{Name: "storm", Run: cmdStorm},
		},
		Default:   "serve",
		Help:      []string{"help"},
		Elsewhere: deviceCommand,
	}
	return p.Dispatch(args, stdout, stderr)
}

// named gives run, which serves several commands, the name it runs as.
func named(name string, run func(name string, args []string, stdout, stderr io.Writer) int) func([]string, io.Writer, io.Writer) int {
	return func(args []string, stdout, stderr io.Writer) int { return run(name, args, stdout, stderr) }
}

// deviceCommand says where a camera command is (the keyframe binary); ""
// for any other.
func deviceCommand(name string, _ []string) string {
	switch name {
	case "run", "join", "identity", "probe", "config", "watchdog", "tune":
		return fmt.Sprintf("%q is a camera command: it is in the keyframe binary (keyframe %s)", name, name)
	}
	return ""
}
