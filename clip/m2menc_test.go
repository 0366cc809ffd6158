package clip

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/capture/m2m"
)

// Access units the fake hardware encoder gives: an IDR with its SPS and PPS,
// and a non-IDR slice (NAL headers only: the feeder reads their types).
var (
	fakeIDR   = []byte{0, 0, 0, 1, 0x67, 0x42, 0, 0x1e, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 0x88, 0x84}
	fakeSlice = []byte{0, 0, 0, 1, 0x41, 0x9a, 0x02}
)

// fakeHW is a hardware encoder that answers every picture with an access
// unit: a key frame for the first and when asked, else a slice.
type fakeHW struct {
	cfg      m2m.Config
	mu       sync.Mutex
	queue    []m2m.Packet
	ready    chan struct{}
	closed   bool
	lostRecv error // Receive returns it once the queue is empty
	unmapped bool  // the next packet has a timestamp no picture had
	n        int
}

func newFakeHW(cfg m2m.Config) *fakeHW { return &fakeHW{cfg: cfg, ready: make(chan struct{}, 64)} }

func (f *fakeHW) Encode(ctx context.Context, fr *capture.Frame, key bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return m2m.ErrClosed
	}
	if fr.Format != capture.FormatYU12 || fr.Width != f.cfg.Width || fr.Height != f.cfg.Height || len(fr.Data) != fr.Width*fr.Height*3/2 {
		return errors.New("fake: frame does not match the configuration")
	}
	au := fakeSlice
	if f.n == 0 || key {
		au = fakeIDR
	}
	f.n++
	p := m2m.Packet{Data: au, Key: &au[0] == &fakeIDR[0], Time: fr.Time, Sequence: fr.Sequence, Mapped: !f.unmapped}
	f.unmapped = false
	f.queue = append(f.queue, p)
	f.ready <- struct{}{}
	return nil
}

func (f *fakeHW) Receive(ctx context.Context, dst []byte) (m2m.Packet, error) {
	for {
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			return m2m.Packet{}, m2m.ErrClosed
		}
		if len(f.queue) > 0 {
			p := f.queue[0]
			f.queue = f.queue[1:]
			f.mu.Unlock()
			p.Data = append(dst[:0], p.Data...)
			return p, nil
		}
		if f.lostRecv != nil {
			err := f.lostRecv
			f.mu.Unlock()
			return m2m.Packet{}, err
		}
		f.mu.Unlock()
		select {
		case <-f.ready:
		case <-ctx.Done():
			return m2m.Packet{}, ctx.Err()
		case <-time.After(20 * time.Millisecond): // notice Close and lostRecv
		}
	}
}

func (f *fakeHW) Info() m2m.Info {
	return m2m.Info{Path: f.cfg.Device, Driver: "fake", ForceKey: true, Width: f.cfg.Width, Height: f.cfg.Height}
}

func (f *fakeHW) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// manualClock is a clock the test moves.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}
func (c *manualClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
func (c *manualClock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// newTestM2M makes an adapter whose device is a fakeHW; opened lists the
// devices it opened, in order.
func newTestM2M(t *testing.T, cfg M2MEncoderConfig) (*M2MEncoder, *manualClock, *[]*fakeHW) {
	t.Helper()
	clk := &manualClock{now: t0}
	e, err := NewM2MEncoder(cfg, clk)
	if err != nil {
		t.Fatal(err)
	}
	var opened []*fakeHW
	e.open = func(c m2m.Config) (hwEncoder, error) {
		f := newFakeHW(c)
		opened = append(opened, f)
		return f, nil
	}
	t.Cleanup(func() { _ = e.Close() })
	return e, clk, &opened
}

func yu12Picture(w, h int, seq uint64) *Picture {
	return &Picture{Width: w, Height: h, Time: t0.Add(time.Duration(seq) * 100 * time.Millisecond), Sequence: seq, Data: make([]byte, w*h*3/2)}
}

func nextAU(t *testing.T, e *M2MEncoder) AccessUnit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	au, err := e.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return au
}

// TestM2MEncoder: the device opens with the first picture at its size, as
// an H.264 encoder of YU12 with the configured rate and GOP; access units
// carry their pictures' times and sequences; a key request reaches the
// driver; a new size opens the device again.
func TestM2MEncoder(t *testing.T) {
	e, _, opened := newTestM2M(t, M2MEncoderConfig{Device: "/dev/video11", FPS: 10, GOP: 20, Bitrate: 1e6})
	if e.ForcesKey() {
		t.Error("ForcesKey before the device is open")
	}
	ctx := context.Background()
	for seq := range uint64(3) {
		if err := e.Encode(ctx, yu12Picture(64, 48, seq), seq == 2); err != nil {
			t.Fatal(err)
		}
	}
	if len(*opened) != 1 {
		t.Fatalf("opened %d devices, want 1", len(*opened))
	}
	c := (*opened)[0].cfg
	if c.Device != "/dev/video11" || c.Width != 64 || c.Height != 48 || c.Input != capture.FormatYU12 ||
		c.Codec != capture.FormatH264 || c.FPS != 10 || c.GOP != 20 || c.Bitrate != 1e6 {
		t.Errorf("opened with %+v", c)
	}
	if !e.ForcesKey() {
		t.Error("ForcesKey false with a driver that takes key requests")
	}
	for seq, key := range []bool{true, false, true} {
		au := nextAU(t, e)
		if au.Sequence != uint64(seq) || !au.Time.Equal(yu12Picture(64, 48, uint64(seq)).Time) || au.Key != key || isKeyAU(au.Data) != key {
			t.Errorf("unit %d: seq %d time %v key %v (%d bytes)", seq, au.Sequence, au.Time, au.Key, len(au.Data))
		}
	}
	if err := e.Encode(ctx, yu12Picture(32, 24, 3), false); err != nil {
		t.Fatal(err)
	}
	if len(*opened) != 2 || !(*opened)[0].closed || (*opened)[1].cfg.Width != 32 {
		t.Fatalf("after a size change: %d devices opened (first closed %v)", len(*opened), (*opened)[0].closed)
	}
	if au := nextAU(t, e); au.Sequence != 3 || !au.Key {
		t.Errorf("first unit of the new size: seq %d key %v", au.Sequence, au.Key)
	}
	if st := e.Stats(); st.Opens != 2 || st.Failures != 0 {
		t.Errorf("stats %+v", st)
	}
	if err := e.Encode(ctx, &Picture{Width: 31, Height: 24, Data: make([]byte, 31*24*3/2)}, false); err == nil {
		t.Error("an odd width was taken")
	}
}

// TestM2MEncoderLost: a device lost while receiving gives its error once;
// pictures are refused (restarting) until the backoff is over, then the
// device opens again and units flow.
func TestM2MEncoderLost(t *testing.T) {
	e, clk, opened := newTestM2M(t, M2MEncoderConfig{Device: "/dev/video11"})
	ctx := context.Background()
	if err := e.Encode(ctx, yu12Picture(64, 48, 0), false); err != nil {
		t.Fatal(err)
	}
	nextAU(t, e)
	f := (*opened)[0]
	f.mu.Lock()
	f.lostRecv = m2m.ErrNoDevice
	f.mu.Unlock()
	nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := e.Next(nctx); !errors.Is(err, m2m.ErrNoDevice) {
		t.Fatalf("Next on a lost device: %v", err)
	}
	if !f.closed {
		t.Error("the lost device was not closed")
	}
	if err := e.Encode(ctx, yu12Picture(64, 48, 1), false); !errors.Is(err, ErrEncoderRestarting) {
		t.Fatalf("Encode within the backoff: %v", err)
	}
	clk.add(m2mBackoff)
	if err := e.Encode(ctx, yu12Picture(64, 48, 2), false); err != nil {
		t.Fatalf("Encode after the backoff: %v", err)
	}
	if au := nextAU(t, e); au.Sequence != 2 || !au.Key {
		t.Errorf("after reopening: seq %d key %v", au.Sequence, au.Key)
	}
	if st := e.Stats(); st.Opens != 2 || st.Failures != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestM2MEncoderUnmapped: a unit the driver returns with a timestamp no
// picture had is dropped and counted, not handed on without a time.
func TestM2MEncoderUnmapped(t *testing.T) {
	e, _, opened := newTestM2M(t, M2MEncoderConfig{Device: "/dev/video11"})
	ctx := context.Background()
	if err := e.Encode(ctx, yu12Picture(64, 48, 0), false); err != nil {
		t.Fatal(err)
	}
	f := (*opened)[0]
	f.mu.Lock()
	f.unmapped = true
	f.mu.Unlock()
	if err := e.Encode(ctx, yu12Picture(64, 48, 1), false); err != nil {
		t.Fatal(err)
	}
	if err := e.Encode(ctx, yu12Picture(64, 48, 2), false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []uint64{0, 2} {
		if au := nextAU(t, e); au.Sequence != want {
			t.Errorf("unit seq %d, want %d", au.Sequence, want)
		}
	}
	if st := e.Stats(); st.Unmapped != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestM2MEncoderClose: Close ends a Next waiting for a device that never
// opened, and later calls say closed.
func TestM2MEncoderClose(t *testing.T) {
	e, _, _ := newTestM2M(t, M2MEncoderConfig{Device: "/dev/video11"})
	done := make(chan error, 1)
	go func() {
		_, err := e.Next(context.Background())
		done <- err
	}()
	time.Sleep(10 * time.Millisecond) // let Next wait (it also must end if Close came first)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrEncoderClosed) {
		t.Errorf("Next after Close: %v", err)
	}
	if err := e.Encode(context.Background(), yu12Picture(64, 48, 0), false); !errors.Is(err, ErrEncoderClosed) {
		t.Errorf("Encode after Close: %v", err)
	}
}

// TestM2MEncoderAutoNone: auto in a directory without an encoder says so
// (naming m2m's error) and waits a backoff before looking again.
func TestM2MEncoderAutoNone(t *testing.T) {
	clk := &manualClock{now: t0}
	e, err := NewM2MEncoder(M2MEncoderConfig{Device: "auto", DevDir: t.TempDir()}, clk)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.Encode(context.Background(), yu12Picture(64, 48, 0), false); !errors.Is(err, m2m.ErrNoEncoder) {
		t.Fatalf("auto without an encoder: %v", err)
	}
	if err := e.Encode(context.Background(), yu12Picture(64, 48, 1), false); !errors.Is(err, ErrEncoderRestarting) {
		t.Fatalf("again within the backoff: %v", err)
	}
	if _, err := NewM2MEncoder(M2MEncoderConfig{}, clk); err == nil {
		t.Error("no device was taken")
	}
}
