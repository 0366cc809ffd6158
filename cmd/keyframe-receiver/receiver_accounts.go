package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/keyframe-cam/keyframe/internal/cli"
	"github.com/keyframe-cam/keyframe/receiver"
)

// defaultReceiverURL is the base of the links owner add and owner link
// print: the default listen address.
const defaultReceiverURL = "http://" + defaultReceiverListen + "/"

// cmdReceiverAccounts runs `keyframe-receiver owner|admin SUB ...`: accounts
// and their one-time links, in the data directory a receiver may be serving.
func cmdReceiverAccounts(kind string, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "keyframe-receiver %s: want a subcommand (add, link, setup-link, list)\n%s", kind, receiverUsage)
		return 2
	}
	sub, args := args[0], args[1:]
	if sub == "-h" || sub == "-help" || sub == "--help" || sub == "help" {
		fmt.Fprint(stdout, receiverUsage)
		return 0
	}
	fs := flag.NewFlagSet("keyframe-receiver "+kind+" "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := dataFlag(fs)
	base := fs.String("url", defaultReceiverURL, "the receiver's URL as people reach it: the printed link starts with it")
	admin := false
	if kind == "owner" && sub == "add" {
		fs.BoolVar(&admin, "admin", false, "make an admin (operates the fleet, sees no media) instead of an owner")
	}
	// Flags may come before or after NAME.
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if code, ok := cli.Parse(fs, args, receiverUsage, stdout, stderr); !ok {
		return code
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
		if code, ok := cli.Parse(fs, fs.Args()[1:], receiverUsage, stdout, stderr); !ok {
			return code
		}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "keyframe-receiver %s %s: unexpected argument %q\n%s", kind, sub, fs.Arg(0), receiverUsage)
		return 2
	}
	accts := receiver.Accounts{Dir: *data}
	if sub == "list" {
		list, err := accts.List()
		if err != nil {
			fmt.Fprintf(stderr, "keyframe-receiver %s list: %v\n", kind, err)
			return 1
		}
		for _, a := range list {
			pw := "password set"
			if !a.HasPassword {
				pw = "no password yet"
			}
			fmt.Fprintf(stdout, "%s %s (%s, since %s)\n", a.Name, a.Role, pw, a.Created.UTC().Format(time.RFC3339))
		}
		return 0
	}
	if name == "" {
		fmt.Fprintf(stderr, "keyframe-receiver %s %s: want a NAME\n%s", kind, sub, receiverUsage)
		return 2
	}
	var (
		link receiver.Link
		err  error
		what string
	)
	switch sub {
	case "add":
		role := receiver.RoleOwner
		if admin || kind == "admin" {
			role = receiver.RoleAdmin
		}
		link, err = accts.Add(name, role)
		what = fmt.Sprintf("added %s %s; to choose a password, open (once, within %s)", role, name, receiver.DefaultLinkTTL)
	case "link":
		link, err = accts.SignInLink(name)
		what = fmt.Sprintf("one-time sign-in link for %s (once, within %s)", name, receiver.DefaultLinkTTL)
	case "setup-link":
		link, err = accts.Reset(name)
		what = fmt.Sprintf("%s's password, passkeys and sessions are removed; one-time link to set new ones (once, within %s)", name, receiver.DefaultLinkTTL)
	default:
		fmt.Fprintf(stderr, "keyframe-receiver %s: unknown subcommand %q\n%s", kind, sub, receiverUsage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "keyframe-receiver %s %s: %v\n", kind, sub, err)
		if errors.Is(err, receiver.ErrOwner) {
			return 2
		}
		return 1
	}
	fmt.Fprintf(stderr, "%s:\n", what)
	fmt.Fprintln(stdout, strings.TrimSuffix(*base, "/")+link.Path)
	return 0
}
