package clip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"sync"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
)

// runH264 is Run with an H.264 encoder: this goroutine gives the encoder
// the frames Offer hands over, another pushes its access units.
func (f *Feeder) runH264(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.collect(ctx)
	}()
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case b := <-f.slot:
			f.encodeH264(ctx, b)
		}
	}
}

// encodeH264 converts one frame to YU12, returns its buffer, and gives it
// to the encoder.
func (f *Feeder) encodeH264(ctx context.Context, b *raw) {
	var err error
	if b.format == capture.FormatMJPEG {
		err = f.decodeJPEG(b)
	} else {
		err = toYU12(&f.pic, b)
	}
	seq := b.sequence
	f.spare <- b
	if err != nil {
		_ = f.fail(fmt.Errorf("clip: frame %d: %w", seq, err))
		return
	}
	if !f.addFlight(f.pic.Time, f.pic.Sequence) {
		f.dropped.Add(1)
		return
	}
	key := f.keyWanted.Swap(false)
	if err := f.enc.Encode(ctx, &f.pic, key); err != nil {
		f.dropFlight(f.pic.Sequence)
		if key {
			f.keyWanted.Store(true) // for the next frame
		}
		if errors.Is(err, ErrEncoderBusy) || errors.Is(err, ErrEncoderRestarting) || ctx.Err() != nil {
			f.dropped.Add(1)
			return
		}
		f.encErrors.Add(1)
		_ = f.fail(fmt.Errorf("clip: frame %d: %w", seq, err))
	}
}

// decodeJPEG decodes an MJPEG frame into the picture (it allocates what
// image/jpeg does per image: this is the slow path of an MJPEG camera with
// H.264 clips).
func (f *Feeder) decodeJPEG(b *raw) error {
	img, err := jpeg.Decode(bytes.NewReader(b.data))
	if err != nil {
		return fmt.Errorf("MJPEG frame for H.264: %w", err)
	}
	r := img.Bounds()
	w, h := r.Dx(), r.Dy()
	if w%2 != 0 || h%2 != 0 {
		return fmt.Errorf("MJPEG frame is %dx%d: H.264 (4:2:0) needs an even width and height", w, h)
	}
	p := &f.pic
	p.Width, p.Height, p.Time, p.Sequence = w, h, b.time, b.sequence
	cw, ch := w/2, h/2
	p.Data = grow(p.Data, w*h+2*cw*ch)
	y, cb, cr := p.Data[:w*h], p.Data[w*h:w*h+cw*ch], p.Data[w*h+cw*ch:]
	switch m := img.(type) {
	case *image.YCbCr:
		for j := range h {
			copy(y[j*w:j*w+w], m.Y[m.YOffset(r.Min.X, r.Min.Y+j):])
		}
		for j := range ch {
			for i := range cw {
				o := m.COffset(r.Min.X+2*i, r.Min.Y+2*j)
				cb[j*cw+i], cr[j*cw+i] = m.Cb[o], m.Cr[o]
			}
		}
	case *image.Gray:
		for j := range h {
			copy(y[j*w:j*w+w], m.Pix[m.PixOffset(r.Min.X, r.Min.Y+j):])
		}
		for i := range cb {
			cb[i], cr[i] = 128, 128
		}
	default:
		return fmt.Errorf("MJPEG frame decodes to %T, not YCbCr or grey", img)
	}
	return nil
}

// collect pushes the encoder's access units into the ring until ctx ends
// or the encoder is closed.
func (f *Feeder) collect(ctx context.Context) {
	for {
		au, err := f.enc.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrEncoderClosed) {
				return
			}
			// The encoder ended a run (its command died): the frames
			// in flight will not come back, and its group is broken.
			f.encErrors.Add(1)
			f.ring.Break()
			f.note(err)
			continue
		}
		f.pushUnit(au)
	}
}

// pushUnit matches au to the frame it encodes and pushes it.
func (f *Feeder) pushUnit(au AccessUnit) {
	lost, ok := f.matchFlight(au)
	f.lostUnits.Add(uint64(lost))
	if !ok {
		f.misaligned.Add(1)
		f.ring.Break()
		f.note(fmt.Errorf("%w: an access unit for frame %d (%v) matches no frame given to the encoder",
			ErrEncoderMisaligned, au.Sequence, au.Time))
		return
	}
	if lost > 0 {
		f.ring.Break() // the lost frames' units were part of its group
	}
	key := au.Key && isKeyAU(au.Data)
	err := f.ring.Push(Frame{Time: au.Time, Sequence: au.Sequence, Origin: Encoded, Key: key, Data: au.Data})
	if errors.Is(err, ErrNoKeyFrame) {
		f.orphaned.Add(1) // the rest of a broken group: expected, not a failure
		return
	}
	if err != nil {
		_ = f.fail(fmt.Errorf("clip: access unit of frame %d: %w", au.Sequence, err))
		return
	}
	f.encoded.Add(1)
	f.bytes.Add(uint64(len(au.Data)))
}

// note remembers an error that is not a frame's (the encoder's) for Stats.
func (f *Feeder) note(err error) {
	f.mu.Lock()
	f.lastErr = err
	f.mu.Unlock()
}

// addFlight records a frame given to the encoder; false when maxFlight
// frames are already waiting.
func (f *Feeder) addFlight(t time.Time, seq uint64) bool {
	f.flightMu.Lock()
	defer f.flightMu.Unlock()
	if f.flightN == maxFlight {
		return false
	}
	f.flight[(f.flightAt+f.flightN)%maxFlight] = stamp{time: t, seq: seq}
	f.flightN++
	return true
}

// dropFlight forgets the newest frame given to the encoder, which it
// refused.
func (f *Feeder) dropFlight(seq uint64) {
	f.flightMu.Lock()
	defer f.flightMu.Unlock()
	if f.flightN > 0 && f.flight[(f.flightAt+f.flightN-1)%maxFlight].seq == seq {
		f.flightN--
	}
}

// matchFlight finds the frame au encodes among those in flight: the
// frames before it are lost (the encoder gave no unit for them) and
// forgotten with it. An access unit that matches none is refused, and the
// frames in flight are kept.
func (f *Feeder) matchFlight(au AccessUnit) (lost int, ok bool) {
	f.flightMu.Lock()
	defer f.flightMu.Unlock()
	for k := range f.flightN {
		s := f.flight[(f.flightAt+k)%maxFlight]
		if s.seq == au.Sequence && s.time.Equal(au.Time) {
			f.flightAt = (f.flightAt + k + 1) % maxFlight
			f.flightN -= k + 1
			return k, true
		}
	}
	return 0, false
}

// inFlight is how many frames the encoder has not given back yet.
func (f *Feeder) inFlight() int {
	f.flightMu.Lock()
	defer f.flightMu.Unlock()
	return f.flightN
}
