// Command camctl sets V4L2 controls on a camera, by the names
// capture.controls takes, while another program may be capturing from it:
//
//	camctl -device /dev/video0 horizontal_movement=6
//
// keyframe's board test uses it to make vivid's picture move at the end of
// a still scenario, while the agent runs: the motion that must then reach
// the receiver shows the agent was capturing, detecting and uploading all
// along. Linux only.
package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/keyframe-cam/keyframe/capture"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("camctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dev := fs.String("device", "/dev/video0", "the camera's device node")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: camctl [-device /dev/videoN] name=value...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	cs, err := capture.ParseControls(strings.Join(fs.Args(), ","))
	if err != nil {
		fmt.Fprintf(stderr, "camctl: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if err := capture.SetControls(*dev, cs, log); err != nil {
		fmt.Fprintf(stderr, "camctl: %v\n", err)
		return 1
	}
	for _, c := range cs {
		fmt.Fprintf(stdout, "camctl: %s: %s\n", *dev, c)
	}
	return 0
}
