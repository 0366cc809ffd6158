package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/keyframe-cam/keyframe/capture"
)

// cmdProbe lists the V4L2 capture devices under -dev with their formats and
// frame sizes.
func cmdProbe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dev := fs.String("dev", "/dev", "directory holding the videoN device nodes")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "keyframe probe: unexpected arguments %q\n", fs.Args())
		return 2
	}
	devs, err := capture.Probe(*dev)
	if err != nil {
		fmt.Fprintf(stderr, "keyframe probe: %v\n", err)
		return 1
	}
	if len(devs) == 0 {
		fmt.Fprintf(stdout, "no cameras found under %s\n", *dev)
		return 0
	}
	for i, d := range devs {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		fmt.Fprintf(stdout, "%s\n", d.Path)
		if d.Card != "" || d.Driver != "" {
			fmt.Fprintf(stdout, "  card:   %s\n  driver: %s\n", d.Card, d.Driver)
		}
		if d.Bus != "" {
			fmt.Fprintf(stdout, "  bus:    %s\n", d.Bus)
		}
		for _, f := range d.Formats {
			mark := ""
			if f.Supported {
				mark = " (usable)"
			}
			fmt.Fprintf(stdout, "  format %s %q%s\n", f.Format, f.Description, mark)
			if len(f.Sizes) > 0 {
				fmt.Fprintf(stdout, "    sizes: %s\n", strings.Join(f.Sizes, " "))
			}
		}
		if d.Err != nil {
			fmt.Fprintf(stdout, "  error:  %v\n", d.Err)
		}
	}
	return 0
}
