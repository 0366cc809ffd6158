package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/keyframe-cam/keyframe/receiver"
)

// cmdVerify re-verifies a receiver's stored records offline. It exits 0 if
// every record verified, 1 if any failed (one line each, naming the event),
// and 2 on a usage error or a store that cannot be read.
func cmdVerify(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", defaultReceiverData, "the receiver's data directory")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "keyframe verify: unexpected argument %q\nusage: keyframe verify [-data DIR]\n", fs.Arg(0))
		return 2
	}
	rep, err := receiver.CheckStore(*data)
	if err != nil {
		fmt.Fprintf(stderr, "keyframe verify: %v\n", err)
		return 2
	}
	if rep.Torn != "" {
		fmt.Fprintf(stderr, "keyframe verify: note: torn last index line ignored (an interrupted append, never acknowledged): %s\n", rep.Torn)
	}
	if !rep.OK() {
		for _, p := range rep.Problems {
			fmt.Fprintf(stdout, "FAILED %s\n", p)
		}
		fmt.Fprintf(stdout, "%d of %d records failed verification\n", len(rep.Problems), rep.Records)
		return 1
	}
	fmt.Fprintf(stdout, "ok %d records verified\n", rep.Verified)
	return 0
}
