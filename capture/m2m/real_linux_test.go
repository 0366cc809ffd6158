//go:build linux

package m2m

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
)

// TestRealDevice runs the encoder against a real memory-to-memory encoder:
// vicodec in the board test's arm64 guest, bcm2835-codec on a Raspberry Pi.
// KEYFRAME_M2M_DEVICE names the node (or "auto": the first encoder under
// /dev). Without it the test looks under /dev and skips when no encoder is
// there; under CI=true it skips unless told (CI machines have no codec; the
// board scenario sets the variable in the guest).
func TestRealDevice(t *testing.T) {
	dev := os.Getenv("KEYFRAME_M2M_DEVICE")
	if dev == "" && os.Getenv("CI") == "true" {
		t.Skip("real encoder: not told which (set KEYFRAME_M2M_DEVICE=/dev/videoN or auto; the board test runs this in its arm64 guest with vicodec)")
	}
	var (
		node  Node
		codec capture.PixelFormat
		err   error
	)
	switch dev {
	case "", "auto":
		node, codec, err = Find("/dev", capture.FormatYU12, capture.FormatH264, FormatFWHT)
		if errors.Is(err, ErrNoEncoder) && dev == "" {
			t.Skip("real encoder: no memory-to-memory encoder node under /dev taking YU12 (load vicodec, or set KEYFRAME_M2M_DEVICE)")
		}
	default:
		var nodes []Node
		nodes, err = Probe("/dev")
		if err == nil {
			nodes = slices.DeleteFunc(nodes, func(n Node) bool { return n.Path != dev })
			node, codec, err = pick(nodes, capture.FormatYU12, capture.FormatH264, FormatFWHT)
		}
	}
	if err != nil {
		t.Fatalf("real encoder %q: %v", dev, err)
	}
	t.Logf("encoder %s (%s, mplane %v): coded %v, raw %v; using %v", node.Path, node.Driver, node.MPlane, node.Coded, node.Raw, codec)
	// 644x484 is not a multiple of 8 (vicodec) or 16 (H.264): the driver
	// pads the buffer and the encoder sets the crop rectangle.
	for _, size := range [][2]int{{640, 480}, {644, 484}} {
		t.Run(fmt.Sprintf("%dx%d", size[0], size[1]), func(t *testing.T) { realEncode(t, node, codec, size[0], size[1]) })
	}
}

// realEncode encodes 20 frames of a moving gradient and checks the packets.
func realEncode(t *testing.T, node Node, codec capture.PixelFormat, w, h int) {
	const n = 20
	e, err := Open(Config{Device: node.Path, Width: w, Height: h, Input: capture.FormatYU12, Codec: codec, FPS: 30, GOP: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := e.Close(); err != nil {
			t.Error(err)
		}
	}()
	info := e.Info()
	t.Logf("info: %+v", info)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	type result struct {
		pkts []Packet
		err  error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		for {
			p, err := e.Receive(ctx, nil)
			if errors.Is(err, ErrEndOfStream) {
				done <- r
				return
			}
			if err != nil {
				r.err = err
				done <- r
				return
			}
			r.pkts = append(r.pkts, p)
		}
	}()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		fr := &capture.Frame{Width: w, Height: h, Format: capture.FormatYU12, Stride: w, Data: make([]byte, w*h+2*(w/2)*((h+1)/2))}
		for j := range fr.Data {
			fr.Data[j] = byte(j/w*3 + j%w + i*5) // a moving gradient
		}
		fr.Time, fr.Sequence = base.Add(time.Duration(i)*33*time.Millisecond), uint64(500+i)
		if err := e.Encode(ctx, fr, i == n/2); err != nil {
			t.Fatalf("encode %d: %v", i, err)
		}
	}
	if err := e.Drain(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("receive after %d packets: %v", len(r.pkts), r.err)
	}
	if len(r.pkts) != n {
		t.Fatalf("%d packets for %d frames", len(r.pkts), n)
	}
	keys := 0
	for i, p := range r.pkts {
		if !p.Mapped || p.Sequence != uint64(500+i) || !p.Time.Equal(base.Add(time.Duration(i)*33*time.Millisecond)) {
			t.Errorf("packet %d: seq %d time %v mapped %v", i, p.Sequence, p.Time, p.Mapped)
		}
		switch codec {
		case FormatFWHT:
			if !bytes.HasPrefix(p.Data, []byte{0x4f, 0x4f, 0x4f, 0x4f, 0xff, 0xff, 0xff, 0xff}) {
				t.Errorf("packet %d: no FWHT header: % x", i, p.Data[:min(16, len(p.Data))])
			} else if fw, fh := binary.BigEndian.Uint32(p.Data[12:]), binary.BigEndian.Uint32(p.Data[16:]); fw != uint32(w) || fh != uint32(h) {
				t.Errorf("packet %d: FWHT header says %dx%d, want the visible %dx%d", i, fw, fh, w, h)
			}
		case capture.FormatH264:
			if !bytes.HasPrefix(p.Data, []byte{0, 0, 1}) && !bytes.HasPrefix(p.Data, []byte{0, 0, 0, 1}) {
				t.Errorf("packet %d: not Annex B: % x", i, p.Data[:min(16, len(p.Data))])
			}
		}
		if p.Key {
			keys++
		}
	}
	if !r.pkts[0].Key {
		t.Error("the first packet is no key frame")
	}
	if info.ForceKey && !r.pkts[n/2].Key {
		t.Errorf("packet %d was forced to be a key frame and is not", n/2)
	}
	if keys < 2 {
		t.Errorf("%d key frames in %d packets with GOP 5", keys, n)
	}
	if s := e.Stats(); s.Errors != 0 || s.PacketsOut != n {
		t.Errorf("stats %+v", s)
	}
	if err := e.Encode(ctx, &capture.Frame{}, false); !errors.Is(err, ErrEndOfStream) {
		t.Errorf("Encode after drain = %v, want ErrEndOfStream", err)
	}
}
