package clip

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyframe-cam/keyframe/internal/clock"
)

// DefaultEncoderCommand is the [ExecEncoder]'s command when none is
// configured: ffmpeg with libx264, raw YU12 on its stdin, an Annex B H.264
// stream on its stdout, no B-frames, no lookahead (zerolatency: each
// picture's access unit comes out as soon as it is encoded), a key frame
// every {gop} pictures, each packet written out at once. {width},
// {height}, {fps} and {gop} are replaced in every argument.
const DefaultEncoderCommand = "ffmpeg -hide_banner -loglevel warning -f rawvideo -pix_fmt yuv420p -s {width}x{height} -r {fps} -i - " +
	"-c:v libx264 -preset ultrafast -tune zerolatency -bf 0 -g {gop} -flush_packets 1 -f h264 -"

// Bounds and defaults of the exec encoder.
const (
	// DefaultEncoderInFlight is how many pictures the exec encoder has
	// written to its command without their access units back, at most.
	DefaultEncoderInFlight = 8
	// DefaultMaxAccessUnit is the largest access unit it accepts.
	DefaultMaxAccessUnit = 4 << 20
	encReadChunk         = 64 << 10
	encStderrLines       = 40  // a run's stderr lines logged at info
	encStderrLine        = 512 // longest stderr line logged
	encStopGrace         = 2 * time.Second
	// encWriteTimeout is how long the command may take to read one
	// picture; a command slower than that is stuck and restarted.
	encWriteTimeout = 5 * time.Second
	// encStall is how long the oldest picture in flight may wait for its
	// access unit while no more can be written.
	encStall = 5 * time.Second
	// maxParamSets bounds the SPS and PPS kept to repeat before an IDR
	// that comes without them.
	maxParamSets = 4 << 10
)

// ErrEncoderExited is wrapped by the error Next returns when the encoder's
// command ended: it is started again with the next picture (after a
// backoff).
var ErrEncoderExited = errors.New("clip: encoder command ended")

// ErrEncoderRestarting: the encoder's command ended and is waiting out its
// backoff before it is started again; the picture was not taken.
var ErrEncoderRestarting = errors.New("clip: encoder command restarting")

// ExecEncoderConfig configures [NewExecEncoder].
type ExecEncoderConfig struct {
	// Argv is the command, run directly (no shell), with {width},
	// {height}, {fps} and {gop} replaced in every argument; it reads raw
	// YU12 pictures on stdin and writes H.264 in Annex B form on stdout,
	// one access unit per picture in order (no B-frames). Empty:
	// DefaultEncoderCommand.
	Argv []string
	// Env is added to the command's environment (KEY=VALUE).
	Env []string
	// FPS is {fps}: the clip's rate, for the encoder's rate control.
	FPS float64
	// GOP is {gop}: pictures from one key frame to the next.
	GOP int
	// InFlight bounds the pictures written without their access unit
	// back (0: DefaultEncoderInFlight); one more is refused with
	// ErrEncoderBusy.
	InFlight int
	// MaxAccessUnit is the largest access unit (0: DefaultMaxAccessUnit);
	// a larger one restarts the command.
	MaxAccessUnit int
	// Backoff is the wait before starting the command again after it
	// ended, doubled after each run that gave nothing, up to BackoffCap
	// (0: 1 s and 30 s).
	Backoff, BackoffCap time.Duration
	// Logger gets the command's stderr (bounded) and its starts and
	// ends; nil: slog.Default().
	Logger *slog.Logger
}

// ExecEncoderStats counts what an [ExecEncoder] did.
type ExecEncoderStats struct {
	Starts     uint64 // runs of the command started
	Pictures   uint64 // pictures written to it
	Units      uint64 // access units read back
	Lost       uint64 // pictures in flight when a run ended: no unit came back
	Misaligned uint64 // access units that matched no picture (refused; the run was stopped)
	Junk       uint64 // bytes of output before the first start code
	Repaired   uint64 // IDR access units given the SPS and PPS they lacked
}

// ExecEncoder is an [Encoder] that runs a command such as ffmpeg (with
// libx264: DefaultEncoderCommand) and feeds it raw YU12 pictures on its
// stdin; its stdout, an Annex B byte stream, is cut into access units that
// are matched in order to the pictures written. It is what a camera without
// a hardware encoder uses (a Raspberry Pi 5 has none), and what tests use.
//
// The command starts with the first picture (its size is the command's
// {width}x{height}) and again when the size changes. When it exits, is
// killed, stops reading its input for encWriteTimeout, or gives an access
// unit that matches no picture, Next returns an error (wrapping
// ErrEncoderExited or ErrEncoderMisaligned), the pictures in flight are
// lost (counted), and the next picture starts it again after a backoff, as
// capture's exec source is. Its stderr is logged, at most encStderrLines
// lines a run at info level.
//
// It cannot force a key frame (ForcesKey is false): the command decides
// (every {gop} pictures, and at scene cuts).
//
// Pictures in flight are bounded (InFlight), as are the access units read
// ahead of Next (InFlight, in buffers reused from one unit to the next): a
// command that falls behind makes Encode refuse pictures, it never makes
// memory grow. An access unit is known to be complete when the next one
// starts, so the newest picture's unit comes out with the one after it.
type ExecEncoder struct {
	cfg  ExecEncoderConfig
	name string
	clk  clock.Clock
	log  *slog.Logger

	out  chan encItem
	free chan []byte
	quit chan struct{}
	held []byte // the buffer of the unit Next returned last

	mu        sync.Mutex
	run       *encRun
	closed    bool
	nextStart time.Time
	backoff   time.Duration
	params    []byte // the latest SPS and PPS, to repeat before an IDR without them

	stats struct {
		starts, pictures, units, lost, misaligned, junk, repaired atomic.Uint64
	}
}

// encItem is what a run's reader hands Next: an access unit or an error.
type encItem struct {
	au  AccessUnit
	err error
}

// stamp is a picture in flight.
type stamp struct {
	time    time.Time
	seq     uint64
	written time.Time
}

// encRun is one run of the command.
type encRun struct {
	cmd     *exec.Cmd
	in, out *os.File
	w, h    int
	exited  chan struct{}
	waitErr error
	done    chan struct{} // the reader ended
	stderr  sync.WaitGroup
	lastErr atomic.Pointer[string]
	killed  atomic.Bool
	units   atomic.Uint64

	// Guarded by the encoder's mu.
	pending []stamp // in flight, oldest first
	ended   bool
}

// NewExecEncoder checks cfg; the command starts with the first picture.
func NewExecEncoder(cfg ExecEncoderConfig, clk clock.Clock) (*ExecEncoder, error) {
	if len(cfg.Argv) == 0 {
		argv, err := parseArgs(DefaultEncoderCommand)
		if err != nil {
			return nil, err
		}
		cfg.Argv = argv
	}
	if cfg.Argv[0] == "" {
		return nil, errors.New("clip: exec encoder: no command")
	}
	if cfg.FPS <= 0 || cfg.GOP < 1 {
		return nil, fmt.Errorf("clip: exec encoder: fps %v, gop %d: want both positive", cfg.FPS, cfg.GOP)
	}
	if cfg.InFlight == 0 {
		cfg.InFlight = DefaultEncoderInFlight
	}
	if cfg.InFlight < 1 || cfg.InFlight > 64 {
		return nil, fmt.Errorf("clip: exec encoder: %d pictures in flight, want 1..64", cfg.InFlight)
	}
	if cfg.MaxAccessUnit == 0 {
		cfg.MaxAccessUnit = DefaultMaxAccessUnit
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Second
	}
	if cfg.BackoffCap < cfg.Backoff {
		cfg.BackoffCap = max(30*time.Second, cfg.Backoff)
	}
	e := &ExecEncoder{
		cfg: cfg, name: filepath.Base(cfg.Argv[0]), clk: clock.Or(clk), log: cfg.Logger,
		out: make(chan encItem, cfg.InFlight), free: make(chan []byte, cfg.InFlight+1),
		quit: make(chan struct{}), backoff: cfg.Backoff,
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	for range cfg.InFlight + 1 {
		e.free <- nil
	}
	return e, nil
}

// parseArgs splits a command line at spaces (the default command has no
// quotes; configured ones are split by the agent with capture.ParseCommand).
func parseArgs(s string) ([]string, error) {
	argv := strings.Fields(s)
	if len(argv) == 0 {
		return nil, errors.New("clip: exec encoder: empty command")
	}
	return argv, nil
}

// ForcesKey is false: the command decides where key frames go.
func (e *ExecEncoder) ForcesKey() bool { return false }

// Stats returns the counters; safe to call at any time.
func (e *ExecEncoder) Stats() ExecEncoderStats {
	return ExecEncoderStats{
		Starts: e.stats.starts.Load(), Pictures: e.stats.pictures.Load(), Units: e.stats.units.Load(),
		Lost: e.stats.lost.Load(), Misaligned: e.stats.misaligned.Load(), Junk: e.stats.junk.Load(),
		Repaired: e.stats.repaired.Load(),
	}
}

// Encode writes p to the command, starting it first if it is not running.
func (e *ExecEncoder) Encode(ctx context.Context, p *Picture, _ bool) error {
	if p.Width < 2 || p.Height < 2 || p.Width%2 != 0 || p.Height%2 != 0 || len(p.Data) != p.Width*p.Height*3/2 {
		return fmt.Errorf("clip: exec encoder: picture %dx%d of %d bytes: want even sides and %d bytes of YU12",
			p.Width, p.Height, len(p.Data), p.Width*p.Height*3/2)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrEncoderClosed
	}
	r := e.run
	if r != nil && (r.w != p.Width || r.h != p.Height) {
		e.log.Info("clip: picture size changed: restarting the encoder command", "command", e.name,
			"from", fmt.Sprintf("%dx%d", r.w, r.h), "to", fmt.Sprintf("%dx%d", p.Width, p.Height))
		e.stopLocked(r)
		r = nil
	}
	if r == nil {
		now := e.clk.Now()
		if now.Before(e.nextStart) {
			e.mu.Unlock()
			return fmt.Errorf("%w (for %v more)", ErrEncoderRestarting, e.nextStart.Sub(now).Round(time.Millisecond))
		}
		var err error
		if r, err = e.start(p.Width, p.Height); err != nil {
			e.nextStart = now.Add(e.backoff)
			e.backoff = min(2*e.backoff, e.cfg.BackoffCap)
			e.mu.Unlock()
			return err
		}
		e.run = r
	}
	if len(r.pending) >= e.cfg.InFlight {
		oldest := r.pending[0].written
		if e.clk.Now().Sub(oldest) > encStall {
			e.log.Warn("clip: the encoder command gives nothing back: stopping it", "command", e.name,
				"in_flight", len(r.pending), "waited", e.clk.Now().Sub(oldest).Round(time.Millisecond))
			e.stopLocked(r)
		}
		e.mu.Unlock()
		return fmt.Errorf("%w: %d pictures in flight", ErrEncoderBusy, e.cfg.InFlight)
	}
	// In flight before it is written: its unit may come back at once.
	r.pending = append(r.pending, stamp{time: p.Time, seq: p.Sequence, written: e.clk.Now()})
	e.mu.Unlock()

	if err := r.in.SetWriteDeadline(time.Now().Add(encWriteTimeout)); err != nil {
		return e.failWrite(r, err)
	}
	if _, err := r.in.Write(p.Data); err != nil {
		return e.failWrite(r, err)
	}
	e.stats.pictures.Add(1)
	return nil
}

// failWrite stops a run whose command did not take a whole picture: its
// input is no longer aligned on pictures.
func (e *ExecEncoder) failWrite(r *encRun, err error) error {
	e.mu.Lock()
	if !r.ended {
		e.log.Warn("clip: cannot write a picture to the encoder command: stopping it", "command", e.name, "err", err)
		e.stopLocked(r)
	}
	e.mu.Unlock()
	return fmt.Errorf("clip: exec encoder %s: write: %w", e.name, err)
}

// start runs the command for pictures of w x h. e.mu is held.
func (e *ExecEncoder) start(w, h int) (*encRun, error) {
	rep := strings.NewReplacer("{width}", strconv.Itoa(w), "{height}", strconv.Itoa(h),
		"{fps}", strconv.FormatFloat(e.cfg.FPS, 'g', -1, 64), "{gop}", strconv.Itoa(e.cfg.GOP))
	argv := make([]string, len(e.cfg.Argv))
	for i, a := range e.cfg.Argv {
		argv[i] = rep.Replace(a)
	}
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("clip: exec encoder %s: %w", e.name, err)
	}
	files = append(files, inR, inW)
	outR, outW, err := os.Pipe()
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("clip: exec encoder %s: %w", e.name, err)
	}
	files = append(files, outR, outW)
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("clip: exec encoder %s: %w", e.name, err)
	}
	files = append(files, errR, errW)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	if len(e.cfg.Env) > 0 {
		cmd.Env = append(os.Environ(), e.cfg.Env...)
	}
	cmd.SysProcAttr = encSysProcAttr()
	err = cmd.Start()
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("clip: exec encoder %s: start %s: %w", e.name, argv[0], err)
	}
	e.stats.starts.Add(1)
	e.log.Info("clip: encoder command started", "command", e.name, "pid", cmd.Process.Pid,
		"width", w, "height", h, "fps", e.cfg.FPS, "gop", e.cfg.GOP)
	r := &encRun{cmd: cmd, in: inW, out: outR, w: w, h: h, exited: make(chan struct{}), done: make(chan struct{}),
		pending: make([]stamp, 0, e.cfg.InFlight)}
	r.stderr.Add(1)
	go e.readStderr(r, errR)
	go func() {
		err := cmd.Wait()
		e.mu.Lock()
		r.waitErr = err
		e.mu.Unlock()
		close(r.exited)
	}()
	go e.read(r)
	return r, nil
}

// stopLocked ends run r: the command is stopped (SIGTERM, then SIGKILL) in
// the background and its reader reports the end. e.mu is held.
func (e *ExecEncoder) stopLocked(r *encRun) {
	if e.run == r {
		e.run = nil
	}
	if r.killed.Swap(true) {
		return
	}
	_ = r.in.Close()
	go func() {
		select {
		case <-r.exited:
			return
		default:
		}
		stopCommand(r.cmd, false)
		select {
		case <-r.exited:
		case <-e.clk.After(encStopGrace):
			stopCommand(r.cmd, true)
		}
	}()
}

// read is a run's reader: it cuts the command's output into access units,
// matches each to the oldest picture in flight and hands it to Next, until
// the output ends; then it reports the end of the run.
func (e *ExecEncoder) read(r *encRun) {
	defer close(r.done)
	defer r.out.Close()
	var sp auSplitter
	var err error
	for err == nil {
		var n int
		n, err = r.out.Read(sp.space(encReadChunk))
		sp.wrote(n)
		for {
			au, junk, ok := sp.next()
			if junk > 0 {
				e.stats.junk.Add(uint64(junk))
			}
			if !ok {
				break
			}
			if !e.deliver(r, au) {
				e.finish(r, nil)
				return
			}
		}
		if err == nil && sp.pending() > e.cfg.MaxAccessUnit {
			err = fmt.Errorf("an access unit is larger than %d bytes", e.cfg.MaxAccessUnit)
		}
	}
	if errors.Is(err, io.EOF) {
		if au, ok := sp.flush(); ok && !e.deliver(r, au) {
			e.finish(r, nil)
			return
		}
		err = nil
	}
	e.finish(r, err)
}

// deliver matches au to the oldest picture in flight and hands it to Next.
// It returns false when the run must end (no picture to match, or the
// encoder closed).
func (e *ExecEncoder) deliver(r *encRun, au []byte) bool {
	e.mu.Lock()
	if r.ended || len(r.pending) == 0 {
		stopped := r.ended
		e.mu.Unlock()
		if stopped {
			return false
		}
		e.stats.misaligned.Add(1)
		e.log.Warn("clip: the encoder command gave more access units than pictures: stopping it", "command", e.name)
		select {
		case e.out <- encItem{err: fmt.Errorf("%w: %s gave an access unit with no picture in flight", ErrEncoderMisaligned, e.name)}:
		case <-e.quit:
		}
		e.mu.Lock()
		e.stopLocked(r)
		e.mu.Unlock()
		return false
	}
	s := r.pending[0]
	r.pending = append(r.pending[:0], r.pending[1:]...)
	info := scanAU(au)
	if info.sps && info.pps {
		if end := firstSlice(au); end <= maxParamSets {
			e.params = append(e.params[:0], au[:end]...)
		}
	}
	repair := info.idr && !(info.sps && info.pps) && len(e.params) > 0
	var params []byte
	if repair {
		params = e.params
	}
	e.mu.Unlock()

	var buf []byte
	select {
	case buf = <-e.free:
	case <-e.quit:
		return false
	}
	buf = append(append(buf[:0], params...), au...)
	if repair {
		e.stats.repaired.Add(1)
	}
	r.units.Add(1)
	e.stats.units.Add(1)
	select {
	case e.out <- encItem{au: AccessUnit{Time: s.time, Sequence: s.seq, Key: info.idr && (info.sps && info.pps || repair), Data: buf}}:
		return true
	case <-e.quit:
		e.free <- buf
		return false
	}
}

// firstSlice is the offset of an access unit's first slice: what comes
// before it is its parameter sets and SEI.
func firstSlice(au []byte) int {
	for i := startCode(au, 0); i >= 0 && i+3 < len(au); i = startCode(au, i+3) {
		if t := au[i+3] & 0x1f; t == nalSlice || t == nalIDR {
			if i > 0 && au[i-1] == 0 {
				i--
			}
			return i
		}
	}
	return len(au)
}

// finish ends run r after its output ended (with err, or nil at EOF):
// the pictures still in flight are lost, Next is told, and the next start
// waits out the backoff.
func (e *ExecEncoder) finish(r *encRun, err error) {
	e.mu.Lock()
	wasKilled := r.killed.Load()
	lost := len(r.pending)
	r.pending = r.pending[:0]
	r.ended = true
	e.stopLocked(r)
	if r.units.Load() > 0 {
		e.backoff = e.cfg.Backoff
	}
	e.nextStart = e.clk.Now().Add(e.backoff)
	if r.units.Load() == 0 {
		e.backoff = min(2*e.backoff, e.cfg.BackoffCap)
	}
	closed := e.closed
	e.mu.Unlock()
	e.stats.lost.Add(uint64(lost))
	if closed {
		return
	}
	status := "closed its output"
	if err != nil {
		status = "output: " + err.Error()
	}
	select {
	case <-r.exited:
		e.mu.Lock()
		werr := r.waitErr
		e.mu.Unlock()
		if werr != nil {
			status = "exited: " + werr.Error()
		} else {
			status = "exited with status 0"
		}
	case <-e.clk.After(encStopGrace):
	case <-e.quit:
	}
	e.waitStderr(r)
	msg := fmt.Sprintf("clip: exec encoder %s %s after %d access units (%d pictures in flight lost)", e.name, status, r.units.Load(), lost)
	if last := r.lastErr.Load(); last != nil {
		msg += "; its last stderr line: " + *last
	}
	if wasKilled {
		msg += " (stopped by keyframe)"
	}
	e.log.Warn(msg)
	select {
	case e.out <- encItem{err: fmt.Errorf("%s: %w", msg, ErrEncoderExited)}:
	case <-e.quit:
	}
}

// readStderr logs the command's stderr line by line, as capture's exec
// source does: the first encStderrLines at info, the rest at debug, each
// cut to encStderrLine bytes; it keeps the last line for the exit error.
func (e *ExecEncoder) readStderr(r *encRun, f *os.File) {
	defer r.stderr.Done()
	defer f.Close()
	br := bufio.NewReaderSize(f, encStderrLine)
	n := 0
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			text := strings.TrimRight(strings.ToValidUTF8(string(line), "?"), "\r\n")
			if errors.Is(err, bufio.ErrBufferFull) {
				text += " [cut]"
				for errors.Is(err, bufio.ErrBufferFull) {
					_, err = br.ReadSlice('\n')
				}
			}
			if strings.TrimSpace(text) != "" {
				n++
				r.lastErr.Store(&text)
				if n <= encStderrLines {
					e.log.Info("clip: "+e.name+" says", "line", text)
				} else {
					e.log.Debug("clip: "+e.name+" says", "line", text)
				}
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// waitStderr waits a little for the stderr reader to see the pipe's end
// (a child the command left behind may hold it open).
func (e *ExecEncoder) waitStderr(r *encRun) {
	done := make(chan struct{})
	go func() {
		r.stderr.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-e.clk.After(encStopGrace):
	}
}

// Next returns the next access unit, or the error that ended a run.
func (e *ExecEncoder) Next(ctx context.Context) (AccessUnit, error) {
	if e.held != nil {
		e.free <- e.held
		e.held = nil
	}
	select {
	case it := <-e.out:
		if it.err != nil {
			return AccessUnit{}, it.err
		}
		e.held = it.au.Data
		return it.au, nil
	case <-ctx.Done():
		return AccessUnit{}, ctx.Err()
	case <-e.quit:
		return AccessUnit{}, ErrEncoderClosed
	}
}

// Close stops the command and waits for its reader. Closing twice does
// nothing.
func (e *ExecEncoder) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	close(e.quit)
	r := e.run
	if r != nil {
		e.stopLocked(r)
	}
	e.mu.Unlock()
	if r != nil {
		select {
		case <-r.done: // the reader closed the output
		case <-e.clk.After(2 * encStopGrace):
			_ = r.out.SetReadDeadline(time.Now())
			<-r.done
		}
	}
	return nil
}
