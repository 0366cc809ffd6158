package capture

import (
	"bufio"
	"bytes"
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

// Exec bounds and defaults.
const (
	// DefaultExecMaxJPEG is the largest MJPEG frame an [Exec] source
	// accepts when ExecConfig.MaxJPEG is 0.
	DefaultExecMaxJPEG = 4 << 20
	// MinExecMaxJPEG is the smallest ExecConfig.MaxJPEG.
	MinExecMaxJPEG = 16 << 10
	// execReadChunk is the most bytes one read of the command's output asks for.
	execReadChunk = 64 << 10
	// execPoll is how long one read waits before Next looks at its context.
	execPoll = 250 * time.Millisecond
	// execStderrLines is how many lines of a run's stderr are logged at
	// info level; later ones go to debug (and are counted).
	execStderrLines = 40
	// execStderrLine is the longest stderr line logged; longer ones are cut.
	execStderrLine = 512
	// execStopGrace is how long a stopped command has between SIGTERM and
	// SIGKILL.
	execStopGrace = 2 * time.Second
)

// ErrExecExited is wrapped by Next's error when the command ended or closed
// its output: [Reopening] starts it again with backoff.
var ErrExecExited = errors.New("capture: frame command ended")

// ExecConfig configures [OpenExec].
type ExecConfig struct {
	// Argv is the command and its arguments, run directly (no shell), e.g.
	// {"rpicam-vid", "-t", "0", "-n", "--codec", "mjpeg", "-o", "-"}.
	Argv []string
	// Env is added to the command's environment (KEY=VALUE), after this
	// process's own.
	Env []string
	// Format is what the command writes to its standard output:
	// FormatMJPEG (a stream of JPEG images), FormatYU12 (raw YUV 4:2:0,
	// planar, no padding: Width*Height*3/2 bytes a frame) or FormatYUYV
	// (raw packed 4:2:2, Width*Height*2 bytes a frame).
	Format PixelFormat
	// Width and Height are the frame size: raw frames have it, and an
	// MJPEG frame of another size is skipped and counted.
	Width, Height int
	// MaxJPEG is the largest MJPEG frame in bytes; a larger one ends the
	// run with an error naming the bound. 0 means DefaultExecMaxJPEG.
	MaxJPEG int
	// Logger receives the command's stderr (bounded) and skipped frames;
	// nil means slog.Default().
	Logger *slog.Logger
}

// ExecStats counts what an [Exec] source saw.
type ExecStats struct {
	Frames       uint64 // frames delivered
	Corrupt      uint64 // MJPEG frames that did not decode or had another size: skipped
	StderrLines  uint64 // lines the command wrote to stderr
	StderrQuiet  uint64 // of those, lines logged at debug level only (past the first execStderrLines)
	SkippedBytes uint64 // bytes before a JPEG start marker (not part of any frame)
}

// Exec is a [Source] reading the frames a command writes to its standard
// output: MJPEG, raw YUV 4:2:0 (I420) or raw YUYV. It is how keyframe reads
// a Raspberry Pi camera module, which libcamera drives (rpicam-vid -o -).
//
// OpenExec starts the command; Close stops it (SIGTERM to its process
// group, then SIGKILL), and on Linux the command is killed if keyframe dies.
// When the command exits or closes its output, Next returns an error
// wrapping [ErrExecExited] with the exit status and the last line of its
// stderr; wrap the source in [Reopening] to start it again with backoff.
// Its stderr is logged, at most execStderrLines lines a run at info level.
//
// Next allocates nothing for raw formats once the frame has grown; the
// MJPEG stream is split into frames in a buffer that grows once up to
// MaxJPEG, and each frame is decoded with image/jpeg, which allocates the
// image (as for V4L2 MJPEG). Frame.Time is the clock's reading when a frame
// is complete; Frame.Sequence counts from 0 per run.
//
// Close may be called while Next runs.
type Exec struct {
	cfg  ExecConfig
	name string // the command's file name, e.g. rpicam-vid
	clk  clock.Clock
	log  *slog.Logger

	mu      sync.Mutex
	cmd     *exec.Cmd
	out     *os.File      // read end of the command's stdout
	exited  chan struct{} // closed when Wait returned
	waitErr error         // Wait's result, once exited is closed
	stderr  sync.WaitGroup
	errPipe *os.File               // read end of the command's stderr
	lastErr atomic.Pointer[string] // the last stderr line
	closed  atomic.Bool

	// Next's own state.
	buf     []byte // raw: the frame being read; MJPEG: the stream
	have    int    // bytes of buf filled
	scan    jpegScanner
	jpeg    []byte // the current MJPEG frame with Huffman tables
	seq     uint64
	warned  bool // a skipped MJPEG frame was logged
	stats   execCounters
	readErr error // the output's read error, once it ended
}

type execCounters struct {
	frames, corrupt, stderrLines, stderrQuiet, skipped atomic.Uint64
}

// ParseExecFormat parses capture.exec_format: mjpeg, yuv420 (I420) or yuyv.
func ParseExecFormat(s string) (PixelFormat, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "mjpeg":
		return FormatMJPEG, nil
	case "yuv420", "i420", "yu12":
		return FormatYU12, nil
	case "yuyv":
		return FormatYUYV, nil
	}
	return 0, fmt.Errorf("capture: exec format %q: want mjpeg, yuv420 or yuyv", s)
}

// rawFrameSize is the size of one raw frame of format p, or an error.
func rawFrameSize(p PixelFormat, w, h int) (int, error) {
	if w < 2 || h < 2 || w > maxFrameSide || h > maxFrameSide || w%2 != 0 || h%2 != 0 {
		return 0, fmt.Errorf("capture: exec: %v frames of %dx%d: want even sides of 2..%d", p, w, h, maxFrameSide)
	}
	switch p {
	case FormatYU12:
		return w*h + w*h/2, nil
	case FormatYUYV:
		return 2 * w * h, nil
	}
	return 0, fmt.Errorf("capture: exec: format %v: want MJPEG, YU12 or YUYV: %w", p, ErrUnsupportedFormat)
}

// OpenExec checks cfg and starts the command. A command that cannot be
// started (not found, not executable) is an error naming it.
func OpenExec(cfg ExecConfig, clk clock.Clock) (*Exec, error) {
	if len(cfg.Argv) == 0 || cfg.Argv[0] == "" {
		return nil, errors.New("capture: exec: no command")
	}
	if cfg.MaxJPEG == 0 {
		cfg.MaxJPEG = DefaultExecMaxJPEG
	}
	e := &Exec{cfg: cfg, name: filepath.Base(cfg.Argv[0]), clk: clock.Or(clk), log: cfg.Logger}
	if e.log == nil {
		e.log = slog.Default()
	}
	switch cfg.Format {
	case FormatMJPEG:
		if cfg.MaxJPEG < MinExecMaxJPEG {
			return nil, fmt.Errorf("capture: exec: MJPEG frame bound %d bytes, at least %d", cfg.MaxJPEG, MinExecMaxJPEG)
		}
		if cfg.Width < 1 || cfg.Height < 1 || cfg.Width > maxFrameSide || cfg.Height > maxFrameSide {
			return nil, fmt.Errorf("capture: exec: MJPEG frames of %dx%d: want 1..%d per side", cfg.Width, cfg.Height, maxFrameSide)
		}
	default:
		n, err := rawFrameSize(cfg.Format, cfg.Width, cfg.Height)
		if err != nil {
			return nil, err
		}
		e.buf = make([]byte, n)
	}
	if err := e.start(); err != nil {
		return nil, err
	}
	return e, nil
}

// Name is the command's file name (what a record names as its source).
func (e *Exec) Name() string { return e.name }

// Stats returns the counters. It is safe to call while Next runs.
func (e *Exec) Stats() ExecStats {
	return ExecStats{
		Frames: e.stats.frames.Load(), Corrupt: e.stats.corrupt.Load(),
		StderrLines: e.stats.stderrLines.Load(), StderrQuiet: e.stats.stderrQuiet.Load(),
		SkippedBytes: e.stats.skipped.Load(),
	}
}

// start runs the command with its stdout and stderr on pipes of our own
// (so Wait never waits for a copy, and reads can time out).
func (e *Exec) start() error {
	outR, outW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("capture: exec %s: %w", e.name, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return fmt.Errorf("capture: exec %s: %w", e.name, err)
	}
	cmd := exec.Command(e.cfg.Argv[0], e.cfg.Argv[1:]...)
	cmd.Stdin = nil // /dev/null
	cmd.Stdout, cmd.Stderr = outW, errW
	if len(e.cfg.Env) > 0 {
		cmd.Env = append(os.Environ(), e.cfg.Env...)
	}
	cmd.SysProcAttr = execSysProcAttr()
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return fmt.Errorf("capture: exec %s: start %s: %w", e.name, e.cfg.Argv[0], err)
	}
	e.log.Info("capture: frame command started", "command", e.name, "pid", cmd.Process.Pid, "format", e.cfg.Format.String(),
		"width", e.cfg.Width, "height", e.cfg.Height)
	e.mu.Lock()
	e.cmd, e.out, e.exited, e.errPipe = cmd, outR, make(chan struct{}), errR
	e.mu.Unlock()
	e.stderr.Add(1)
	go e.readStderr(errR)
	go func() {
		err := cmd.Wait()
		e.mu.Lock()
		e.waitErr = err
		e.mu.Unlock()
		close(e.exited)
	}()
	return nil
}

// readStderr logs the command's stderr line by line: the first
// execStderrLines at info, the rest at debug; each cut to execStderrLine
// bytes. It keeps the last line for the exit error.
func (e *Exec) readStderr(r *os.File) {
	defer e.stderr.Done()
	br := bufio.NewReaderSize(r, execStderrLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			long := errors.Is(err, bufio.ErrBufferFull)
			text := strings.TrimRight(strings.ToValidUTF8(string(line), "?"), "\r\n")
			if long {
				text += " [cut]"
				// Skip the rest of the long line.
				for errors.Is(err, bufio.ErrBufferFull) {
					_, err = br.ReadSlice('\n')
				}
			}
			if strings.TrimSpace(text) != "" {
				n := e.stats.stderrLines.Add(1)
				e.lastErr.Store(&text)
				if n <= execStderrLines {
					e.log.Info("capture: "+e.name+" says", "line", text)
				} else {
					e.stats.stderrQuiet.Add(1)
					e.log.Debug("capture: "+e.name+" says", "line", text)
				}
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// Next fills f with the next frame of the command's output.
func (e *Exec) Next(ctx context.Context, f *Frame) error {
	for {
		if e.closed.Load() {
			return ErrClosed
		}
		if e.cfg.Format != FormatMJPEG {
			if err := e.fill(ctx, len(e.buf)); err != nil {
				return err
			}
			e.rawFrame(f)
			e.have = 0
			return e.delivered(f)
		}
		n, err := e.nextJPEG(ctx)
		if err != nil {
			return err
		}
		var jerr error
		e.jpeg, _, _, jerr = jpegWithHuffman(e.jpeg[:0], e.buf[:n])
		if jerr == nil {
			jerr = fillFromJPEG(f, e.jpeg, e.cfg.Width, e.cfg.Height)
		}
		e.consume(n)
		if jerr != nil {
			e.stats.corrupt.Add(1)
			if !e.warned {
				e.warned = true
				e.log.Warn("capture: skipping MJPEG frames of the command that do not decode or have another size (counted; this is logged once)",
					"command", e.name, "width", e.cfg.Width, "height", e.cfg.Height, "err", jerr)
			}
			continue
		}
		return e.delivered(f)
	}
}

func (e *Exec) delivered(f *Frame) error {
	f.Time = e.clk.Now()
	f.Sequence = e.seq
	e.seq++
	e.stats.frames.Add(1)
	return nil
}

// rawFrame copies the frame in buf into f, reusing f's buffers.
func (e *Exec) rawFrame(f *Frame) {
	w, h := e.cfg.Width, e.cfg.Height
	f.Width, f.Height, f.Format = w, h, e.cfg.Format
	f.Data = append(f.Data[:0], e.buf...)
	f.Luma = f.Luma[:0]
	if e.cfg.Format == FormatYUYV {
		f.Stride = 2 * w
	} else {
		f.Stride = w
	}
}

// nextJPEG returns the length of the complete JPEG at the start of buf,
// reading more of the stream as needed. Bytes before a JPEG's start
// marker are dropped (and counted).
func (e *Exec) nextJPEG(ctx context.Context) (int, error) {
	for {
		if e.scan.pos == 0 {
			// Find the start of a frame.
			if i := bytes.Index(e.buf[:e.have], []byte{0xff, 0xd8}); i > 0 {
				e.stats.skipped.Add(uint64(i))
				e.consume(i)
			} else if i < 0 && e.have > 1 {
				keep := 0
				if e.buf[e.have-1] == 0xff {
					keep = 1
				}
				e.stats.skipped.Add(uint64(e.have - keep))
				e.consume(e.have - keep)
			}
			if e.stats.skipped.Load() > uint64(e.cfg.MaxJPEG) && e.stats.frames.Load() == 0 {
				return 0, fmt.Errorf("capture: exec %s: no JPEG start (FF D8) in the first %d bytes of its output: is it writing MJPEG (capture.exec_format)?", e.name, e.stats.skipped.Load())
			}
		}
		if e.have >= 2 {
			n, done, err := e.scan.next(e.buf[:e.have])
			if err != nil {
				e.scan = jpegScanner{}
				return 0, fmt.Errorf("capture: exec %s: MJPEG stream: %w", e.name, err)
			}
			if done {
				e.scan = jpegScanner{}
				return n, nil
			}
		}
		if e.have >= e.cfg.MaxJPEG {
			return 0, fmt.Errorf("capture: exec %s: an MJPEG frame is larger than %d bytes (capture.exec_max_jpeg)", e.name, e.cfg.MaxJPEG)
		}
		if err := e.readMore(ctx); err != nil {
			return 0, err
		}
	}
}

// consume drops the first n bytes of buf.
func (e *Exec) consume(n int) {
	copy(e.buf, e.buf[n:e.have])
	e.have -= n
	if e.scan.pos > 0 {
		e.scan.pos -= n
	}
}

// readMore reads at least one byte of the stream into buf, growing it (up
// to MaxJPEG plus a read) while frames are larger than it.
func (e *Exec) readMore(ctx context.Context) error {
	if len(e.buf)-e.have < execReadChunk/4 {
		size := max(2*len(e.buf), 256<<10)
		size = min(size, e.cfg.MaxJPEG+execReadChunk)
		if size > len(e.buf) {
			nb := make([]byte, size)
			copy(nb, e.buf[:e.have])
			e.buf = nb
		}
	}
	end := min(len(e.buf), e.have+execReadChunk)
	return e.read(ctx, end)
}

// fill reads until buf[:n] is filled.
func (e *Exec) fill(ctx context.Context, n int) error {
	for e.have < n {
		if err := e.read(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// read reads once into buf[have:end], waiting at most execPoll at a time
// so that ctx and Close are noticed.
func (e *Exec) read(ctx context.Context, end int) error {
	if e.readErr != nil {
		return e.readErr
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.closed.Load() {
			return ErrClosed
		}
		if err := e.out.SetReadDeadline(time.Now().Add(execPoll)); err != nil {
			return fmt.Errorf("capture: exec %s: %w", e.name, err)
		}
		n, err := e.out.Read(e.buf[e.have:end])
		e.have += n
		if n > 0 {
			return nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if e.closed.Load() {
			return ErrClosed
		}
		if err == nil {
			continue
		}
		e.readErr = e.exitError(err)
		return e.readErr
	}
}

// exitError describes the end of the command's output: its exit status
// (waiting for it briefly) and the last line it wrote to stderr.
func (e *Exec) exitError(readErr error) error {
	status := "closed its output"
	if !errors.Is(readErr, io.EOF) {
		status = "output: " + readErr.Error()
	}
	select {
	case <-e.exited:
		e.mu.Lock()
		werr := e.waitErr
		e.mu.Unlock()
		if werr != nil {
			status = "exited: " + werr.Error()
		} else {
			status = "exited with status 0"
		}
	case <-e.clk.After(execStopGrace):
	}
	e.waitStderr()
	msg := fmt.Sprintf("capture: exec %s %s after %d frames", e.name, status, e.seq)
	if last := e.lastErr.Load(); last != nil {
		msg += "; its last stderr line: " + *last
	}
	return fmt.Errorf("%s: %w", msg, ErrExecExited)
}

// Close stops the command (SIGTERM to its process group, SIGKILL after
// execStopGrace) and waits for it. Closing twice is not an error.
func (e *Exec) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	e.mu.Lock()
	cmd, out, exited := e.cmd, e.out, e.exited
	e.mu.Unlock()
	if cmd == nil {
		return nil
	}
	// Wake a Next blocked in a read.
	_ = out.SetReadDeadline(time.Now())
	select {
	case <-exited:
	default:
		stopProcess(cmd, false)
		select {
		case <-exited:
		case <-e.clk.After(execStopGrace):
			stopProcess(cmd, true)
			<-exited
		}
	}
	e.waitStderr()
	return out.Close()
}

// waitStderr waits for the stderr reader to see the end of the pipe, at
// most execStopGrace (a child the command left behind may hold it open),
// and closes the pipe.
func (e *Exec) waitStderr() {
	e.mu.Lock()
	p := e.errPipe
	e.errPipe = nil
	e.mu.Unlock()
	if p == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		e.stderr.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-e.clk.After(execStopGrace):
		_ = p.SetReadDeadline(time.Now())
		<-done
	}
	_ = p.Close()
}

// jpegScanner finds the end of a JPEG in a growing buffer without reading
// any byte twice: it walks the marker segments by their lengths (so an
// embedded thumbnail in an APP segment does not end the frame early), and
// the entropy-coded data after SOS byte by byte, where FF 00 and FF D0-D7
// are data and any other marker ends the scan.
type jpegScanner struct {
	pos     int  // next byte to look at; 0 before the SOI was checked
	entropy bool // inside entropy-coded data
}

// next continues the scan over b, the frame from its SOI on. It returns the
// JPEG's length and true when its EOI is in b, false when more data is
// needed, or an error for a stream that is not JPEG.
func (s *jpegScanner) next(b []byte) (int, bool, error) {
	if s.pos == 0 {
		if len(b) < 2 {
			return 0, false, nil
		}
		if b[0] != 0xff || b[1] != 0xd8 {
			return 0, false, fmt.Errorf("%w: no SOI marker", errBadJPEG)
		}
		s.pos = 2
	}
	for {
		if s.entropy {
			i := bytes.IndexByte(b[s.pos:], 0xff)
			if i < 0 {
				s.pos = len(b)
				return 0, false, nil
			}
			s.pos += i
			if s.pos+1 >= len(b) {
				return 0, false, nil
			}
			switch m := b[s.pos+1]; {
			case m == 0x00 || (m >= 0xd0 && m <= 0xd7):
				s.pos += 2
			case m == 0xff: // fill byte
				s.pos++
			default:
				s.entropy = false // a marker: back to segments
			}
			continue
		}
		if s.pos+1 >= len(b) {
			return 0, false, nil
		}
		if b[s.pos] != 0xff {
			return 0, false, fmt.Errorf("%w: byte %#02x at offset %d where a marker should be", errBadJPEG, b[s.pos], s.pos)
		}
		m := b[s.pos+1]
		switch {
		case m == 0xff: // fill byte
			s.pos++
			continue
		case m == 0xd9: // EOI
			return s.pos + 2, true, nil
		case m == 0xd8 || m == 0x00:
			return 0, false, fmt.Errorf("%w: marker %#02x inside a frame at offset %d", errBadJPEG, m, s.pos)
		case m == 0x01 || (m >= 0xd0 && m <= 0xd7): // TEM, RSTn: no length
			s.pos += 2
			continue
		}
		if s.pos+4 > len(b) {
			return 0, false, nil
		}
		n := int(b[s.pos+2])<<8 | int(b[s.pos+3])
		if n < 2 {
			return 0, false, fmt.Errorf("%w: segment %#02x at offset %d has length %d", errBadJPEG, m, s.pos, n)
		}
		if s.pos+2+n > len(b) {
			return 0, false, nil
		}
		s.pos += 2 + n
		if m == 0xda { // SOS: entropy-coded data follows
			s.entropy = true
		}
	}
}

// ParseCommand splits a command line (capture.exec) into its arguments
// without a shell: arguments are separated by spaces or tabs, and an
// argument in double quotes may hold spaces (with Go's escapes: \" \\ \t).
// There are no variables, globs, pipes or redirections: an unquoted
// argument holding one of | ; & < > $ ` is refused, naming it, so that a
// command meant for a shell is not run without one (write sh -c "..." to
// have one).
func ParseCommand(s string) ([]string, error) {
	var argv []string
	for i := 0; ; {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i == len(s) {
			break
		}
		if s[i] == '"' {
			j := i + 1
			for j < len(s) && s[j] != '"' {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, fmt.Errorf("capture: command %q: unterminated quote at byte %d", s, i)
			}
			arg, err := strconv.Unquote(s[i : j+1])
			if err != nil {
				return nil, fmt.Errorf("capture: command %q: argument %s: %w", s, s[i:j+1], err)
			}
			if j+1 < len(s) && s[j+1] != ' ' && s[j+1] != '\t' {
				return nil, fmt.Errorf("capture: command %q: a quoted argument must end at a space (byte %d)", s, j+1)
			}
			argv = append(argv, arg)
			i = j + 1
			continue
		}
		j := i
		for j < len(s) && s[j] != ' ' && s[j] != '\t' {
			j++
		}
		arg := s[i:j]
		if k := strings.IndexAny(arg, "|;&<>$`\""); k >= 0 {
			return nil, fmt.Errorf("capture: command %q: argument %q holds %q: the command runs without a shell (quote it, or run sh -c \"...\")", s, arg, arg[k])
		}
		argv = append(argv, arg)
		i = j
	}
	if len(argv) == 0 {
		return nil, errors.New("capture: command is empty")
	}
	return argv, nil
}
