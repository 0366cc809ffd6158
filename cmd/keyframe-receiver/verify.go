package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/keyframe-cam/keyframe/internal/cli"
	"github.com/keyframe-cam/keyframe/receiver"
)

const verifyUsage = `usage: keyframe-receiver verify [-data DIR]
       keyframe-receiver verify -clip DIR [-key DEVICE.pub.pem]

Re-verifies every record a receiver stored (signature, chain, media hashes)
offline; names each bad one and exits 1 if any failed.

With -clip, verifies one event's clip frame by frame instead: DIR holds
end.cose (or end.bundle; absent for an interrupted event) and each segment
as segment-NAME.cose with its frames, one file each, in the directory
segment-NAME (in name order), or as segment-NAME.bundle (docs/envelope.md
§8.2). It names a missing, altered, duplicated or reordered frame or
segment and exits 1. -key requires every record to be signed by that key.
`

// cmdVerify re-verifies a receiver's stored records offline. It exits 0 if
// every record verified, 1 if any failed (one line each, naming the event),
// and 2 on a usage error or a store that cannot be read.
func cmdVerify(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyframe-receiver verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", defaultReceiverData, "the receiver's data directory")
	clip := fs.String("clip", "", "verify the clip in this directory (docs/envelope.md §8.2) instead of a receiver's store")
	key := fs.String("key", "", "with -clip: the device's public key (PEM); every record must be signed by it")
	if code, ok := cli.Parse(fs, args, verifyUsage, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "keyframe-receiver verify: unexpected argument %q\n%s", fs.Arg(0), verifyUsage)
		return 2
	}
	if *clip != "" {
		return verifyClipDir(*clip, *key, stdout, stderr)
	}
	if *key != "" {
		fmt.Fprintf(stderr, "keyframe-receiver verify: -key goes with -clip\n%s", verifyUsage)
		return 2
	}
	rep, err := receiver.CheckStore(*data)
	if err != nil {
		fmt.Fprintf(stderr, "keyframe-receiver verify: %v\n", err)
		return 2
	}
	if rep.Torn != "" {
		fmt.Fprintf(stderr, "keyframe-receiver verify: note: torn last index line ignored (an interrupted append, never acknowledged): %s\n", rep.Torn)
	}
	if !rep.OK() {
		for _, p := range rep.Problems {
			fmt.Fprintf(stdout, "FAILED %s\n", p)
		}
		fmt.Fprintf(stdout, "%d of %d records failed verification\n", len(rep.Problems), rep.Records)
		return 1
	}
	if rep.Deleted > 0 {
		fmt.Fprintf(stdout, "ok %d records verified (%d deleted by their owner or by retention, not checked)\n", rep.Verified, rep.Deleted)
		return 0
	}
	fmt.Fprintf(stdout, "ok %d records verified\n", rep.Verified)
	return 0
}
