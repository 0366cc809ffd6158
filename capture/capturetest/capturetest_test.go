package capturetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
)

func TestSourcePlaysBack(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	s := &Source{Frames: []capture.Frame{
		GreyFrame(4, 2, 10, 0, t0),
		GreyFrame(4, 2, 20, 1, t0.Add(time.Second)),
	}}
	ctx := context.Background()
	var f capture.Frame
	for i, level := range []byte{10, 20} {
		if err := s.Next(ctx, &f); err != nil {
			t.Fatal(err)
		}
		if f.Luma[0] != level || f.Data[7] != level || f.Sequence != uint64(i) || !f.Time.Equal(t0.Add(time.Duration(i)*time.Second)) {
			t.Errorf("frame %d: luma %d seq %d time %v", i, f.Luma[0], f.Sequence, f.Time)
		}
		f.Luma[0] = 99 // the caller owns its copy
	}
	if s.Frames[0].Luma[0] != 10 {
		t.Error("the caller's frame shares the script's buffers")
	}
	if err := s.Next(ctx, &f); !errors.Is(err, capture.ErrEndOfStream) {
		t.Errorf("after the script: %v, want ErrEndOfStream", err)
	}
	if s.Served() != 2 {
		t.Errorf("served %d", s.Served())
	}
}

func TestSourceErrAndClose(t *testing.T) {
	boom := errors.New("camera unplugged")
	s := &Source{Err: boom}
	var f capture.Frame
	if err := s.Next(context.Background(), &f); !errors.Is(err, boom) {
		t.Errorf("Next = %v, want the scripted error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Next(ctx, &f); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Next = %v", err)
	}
	if err := s.Close(); err != nil || s.Closed() != 1 {
		t.Errorf("Close: %v, closed %d", err, s.Closed())
	}
	if err := s.Next(context.Background(), &f); !errors.Is(err, capture.ErrClosed) {
		t.Errorf("Next after Close = %v, want ErrClosed", err)
	}
}
