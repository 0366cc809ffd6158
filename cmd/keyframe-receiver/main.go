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
	"strings"
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
	cmd := "serve"
	if len(args) > 0 && (!strings.HasPrefix(args[0], "-") || isVersionFlag(args[0])) {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return receiverServe(args, stdout, stderr)
	case "enroll":
		return receiverEnroll(args, stdout, stderr)
	case "pair":
		return receiverPair(args, stdout, stderr)
	case "unpair", "revoke":
		return receiverUnpair(cmd, args, stdout, stderr)
	case "trust-ca":
		return receiverTrustCA(args, stdout, stderr)
	case "untrust-ca":
		return receiverUntrustCA(args, stdout, stderr)
	case "cas":
		return receiverCAs(args, stdout, stderr)
	case "owner", "admin":
		return cmdReceiverAccounts(cmd, args, stdout, stderr)
	case "verify":
		return cmdVerify(args, stdout, stderr)
	case "eval":
		return cmdEval(args, stdout, stderr)
	case "storm":
		return cmdStorm(args, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "keyframe-receiver %s\n", version)
		return 0
	case "help":
		fmt.Fprint(stdout, receiverUsage)
		return 0
	}
	if deviceCommand(cmd) {
		fmt.Fprintf(stderr, "keyframe-receiver: %q is a camera command: it is in the keyframe binary (keyframe %s)\n", cmd, cmd)
		return 2
	}
	fmt.Fprintf(stderr, "keyframe-receiver: unknown command %q\n\n%s", cmd, receiverUsage)
	return 2
}

// isVersionFlag: -version is the version command, not the receiver's flag.
func isVersionFlag(a string) bool {
	return a == "-version" || a == "--version"
}

// deviceCommand reports whether cmd is one of the camera binary's commands.
func deviceCommand(cmd string) bool {
	switch cmd {
	case "run", "join", "identity", "probe", "config", "watchdog", "tune":
		return true
	}
	return false
}
