package main

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/internal/cli"
)

const probeUsage = `usage: keyframe probe [-dev /dev]

Lists the V4L2 capture devices (videoN under -dev) with their driver, formats,
frame sizes and rates, and controls.
`

// cmdProbe lists the V4L2 capture devices under -dev with their formats,
// frame sizes and rates, and controls.
func cmdProbe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyframe probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dev := fs.String("dev", "/dev", "directory holding the videoN device nodes")
	if code, ok := cli.Parse(fs, args, probeUsage, stdout, stderr); !ok {
		return code
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
		writeDevice(stdout, d)
	}
	return 0
}

// writeDevice prints one device: formats with their sizes and frame rates,
// then controls under the names capture.controls takes.
func writeDevice(w io.Writer, d capture.DeviceInfo) {
	fmt.Fprintf(w, "%s\n", d.Path)
	if d.Card != "" || d.Driver != "" {
		fmt.Fprintf(w, "  card:   %s\n  driver: %s\n", d.Card, d.Driver)
	}
	if d.Bus != "" {
		fmt.Fprintf(w, "  bus:    %s\n", d.Bus)
	}
	for _, f := range d.Formats {
		var marks []string
		if f.Supported {
			marks = append(marks, "usable")
		}
		if f.Compressed {
			marks = append(marks, "compressed")
		}
		if f.Emulated {
			marks = append(marks, "emulated")
		}
		mark := ""
		if len(marks) > 0 {
			mark = " (" + strings.Join(marks, ", ") + ")"
		}
		fmt.Fprintf(w, "  format %s %q%s\n", f.Format, f.Description, mark)
		for _, s := range f.Sizes {
			rates := s.Rates.String()
			switch {
			case rates == "":
				fmt.Fprintf(w, "    %s\n", s)
			case s.Discrete():
				fmt.Fprintf(w, "    %s: %s\n", s, rates)
			default:
				fmt.Fprintf(w, "    %s: %s at %dx%d\n", s, rates, s.Width, s.Height)
			}
		}
	}
	if len(d.Controls) > 0 {
		fmt.Fprintln(w, "  controls (set with capture.controls = name=value, ...):")
		width := 0
		for _, c := range d.Controls {
			width = max(width, len(c.Name))
		}
		for _, c := range d.Controls {
			fmt.Fprintf(w, "    %-*s %s\n", width, c.Name, controlLine(c))
		}
	}
	if d.Err != nil {
		fmt.Fprintf(w, "  error:  %v\n", d.Err)
	}
}

// controlLine describes a control: type, range, step, default, current
// value, flags, the driver's name and menu entries.
func controlLine(c capture.ControlInfo) string {
	var b strings.Builder
	b.WriteString(c.Type.String())
	switch c.Type {
	case capture.ControlButton, capture.ControlInteger64, capture.ControlString:
	default:
		fmt.Fprintf(&b, " %d..%d", c.Min, c.Max)
		if c.Step > 1 {
			fmt.Fprintf(&b, " step %d", c.Step)
		}
		fmt.Fprintf(&b, " default %d", c.Default)
	}
	switch {
	case c.ValueErr != nil:
		fmt.Fprintf(&b, " (value: %v)", c.ValueErr)
	case c.Type != capture.ControlButton:
		b.WriteString(" = " + strconv.FormatInt(c.Value, 10))
	}
	if c.ReadOnly {
		b.WriteString(" read-only")
	}
	if c.Inactive {
		b.WriteString(" inactive")
	}
	fmt.Fprintf(&b, " %q", c.Label)
	if len(c.Menu) > 0 {
		items := make([]string, len(c.Menu))
		for i, m := range c.Menu {
			items[i] = strconv.FormatInt(m.Index, 10) + ": " + m.Name
		}
		b.WriteString(" [" + strings.Join(items, ", ") + "]")
	}
	return b.String()
}
