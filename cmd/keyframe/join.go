package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/keyframe-cam/keyframe/agent"
	"github.com/keyframe-cam/keyframe/internal/cli"
	"github.com/keyframe-cam/keyframe/join"
	"github.com/keyframe-cam/keyframe/recorder"
	"github.com/keyframe-cam/keyframe/recorder/rotation"
)

const joinUsage = `usage: keyframe join [-config FILE] URL CODE

Claims this camera for the owner who got CODE from the receiver's page ("add a
camera"): connects to the receiver at URL (https://HOST[:PORT]/), trusting only
the certificate CODE pins, proves it holds the device key, and writes the
receiver's URL and certificate to <data_dir>/joined.conf and
<data_dir>/receiver-ca.pem, which keyframe run uses unless its configuration
sets upload.url or upload.ca_file. The device key is created on first use, as
by keyframe identity. See docs/claim.md.

A 50-character CODE also names the owner's end-to-end encryption identity: the
join then requires the owner's key set from the receiver, of that identity,
and pins it (e2ee.owner in joined.conf, the set in <data_dir>/e2ee-keyset.json).
See docs/e2ee.md.
`

func cmdJoin(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runJoin(ctx, args, os.Environ(), stdout, stderr)
}

// runJoin is keyframe join with its context and environment.
func runJoin(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyframe join", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs, systemConfig, "configuration file (device.data_dir, the device key)")
	timeout := fs.Duration("timeout", join.DefaultTimeout, "give up after this long")
	if code, ok := cli.Parse(fs, args, joinUsage, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() < 2 {
		fmt.Fprint(stderr, joinUsage)
		return 2
	}
	// The code may be typed with spaces between its groups.
	url, code := fs.Arg(0), strings.Join(fs.Args()[1:], "-")
	c, err := agent.LoadConfig(*cfgPath, environ)
	if err != nil {
		cli.PrintError(stderr, "keyframe join", err)
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "keyframe join: %v\n", err)
		return 1
	}
	layout := agent.Layout(&c)
	if p, err := rotation.Load(layout); err != nil {
		return fail(err)
	} else if p != nil {
		return fail(fmt.Errorf("a key rotation from %s to %s is pending: run the agent until it completes, then join", p.OldDevice, p.NewDevice))
	}
	key, id, created, err := agent.Identity(&c, rand.Reader)
	if err != nil {
		return fail(err)
	}
	defer closeKey(key)
	if created {
		fmt.Fprintf(stdout, "created a new device key (%s)\n", agent.KeyLocation(&c))
	}
	chain, err := recorder.ChainFile(layout.Chain).Load()
	if err != nil {
		return fail(err)
	}
	res, err := join.Join(ctx, join.Request{URL: url, Code: code, Key: key, Seq: chain.Next, Timeout: *timeout})
	if err != nil {
		var ref *join.RefusedError
		if errors.As(err, &ref) {
			return fail(fmt.Errorf("the receiver refused: %s", ref.Message))
		}
		return fail(err)
	}
	keyset, e2eeOwner, err := join.WriteKeySet(layout.DataDir, res)
	if err != nil {
		return fail(fmt.Errorf("device %s is claimed by %s, but: %w", id, res.Owner, err))
	}
	path, err := agent.WriteJoinedOwner(&c, res.UploadURL, res.Cert, e2eeOwner)
	if err != nil {
		return fail(fmt.Errorf("device %s is claimed by %s, but: %w", id, res.Owner, err))
	}
	fmt.Fprintf(stdout, "device %s is now %s's camera at %s\nwrote %s and %s\n", res.Device, res.Owner, res.UploadURL, path, layout.ReceiverCA)
	if e2eeOwner != "" {
		fmt.Fprintf(stdout, "end-to-end encryption: pinned the owner's identity %s (key set version %d, %d key(s)) in %s\n", e2eeOwner, res.KeySet.Version, len(res.KeySet.Keys), keyset)
	}
	// An explicit setting wins over the joined one: say so.
	if after, err := agent.LoadConfig(*cfgPath, environ); err == nil && (after.UploadURL != res.UploadURL || after.UploadCAFile != layout.ReceiverCA) {
		fmt.Fprintf(stdout, "note: the configuration sets upload.url = %q, upload.ca_file = %q, which keyframe run uses instead; remove them to upload to the joined receiver\n", after.UploadURL, after.UploadCAFile)
	} else {
		fmt.Fprintln(stdout, "start the camera with: keyframe run")
	}
	return 0
}
