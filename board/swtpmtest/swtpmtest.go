// Package swtpmtest runs software TPMs (swtpm, from the Debian packages swtpm
// and swtpm-tools) for tests: each one a child process with its state in a
// directory of the test's, serving the raw TPM 2.0 command stream on a free
// loopback port, stopped when the test ends. Start one with Start (or
// StartWith, to restart a TPM on its old state or leave it unstarted), open
// it with board.FS.OpenTPM(s.Spec()), and Stop it to power it off early.
//
// When swtpm is not installed, tests are skipped, unless the CI environment
// variable is set: CI must run them, so there they fail.
package swtpmtest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// readyTimeout bounds the wait for a started swtpm to answer; it only
	// turns a broken swtpm into a test failure instead of a hang.
	readyTimeout = 20 * time.Second
	stopTimeout  = 10 * time.Second
	// portAttempts is how often Start picks another port when the one it
	// chose was taken between choosing and binding.
	portAttempts = 5
	// rcInitialize is TPM_RC_INITIALIZE: TPM2_Startup has not been sent.
	rcInitialize = 0x100
)

// SWTPM is a running swtpm process.
type SWTPM struct {
	// StateDir is the absolute path of the TPM's state directory. Start
	// another SWTPM on it (after Stop) to power the same TPM up again.
	StateDir string
	// Addr is the loopback host:port of the TPM command channel.
	Addr string

	logPath string
	cmd     *exec.Cmd
	out     *bytes.Buffer // swtpm's stdout and stderr
	done    chan struct{} // closed when the process has exited
	waitErr error         // set before done is closed

	stopOnce sync.Once
	stopErr  error
}

// Binary returns the path of the swtpm executable. If there is none it skips
// the test, or fails it when the CI environment variable is set.
func Binary(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("swtpm")
	if err == nil {
		if p, err = filepath.Abs(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("swtpmtest: swtpm not found (%v) and CI is set: CI must run the TPM tests; install the Debian packages swtpm and swtpm-tools", err)
	}
	t.Skipf("swtpmtest: swtpm not found (%v): skipping the software-TPM test (apt-get install swtpm swtpm-tools to run it)", err)
	return ""
}

// Options configure a swtpm.
type Options struct {
	// StateDir is the TPM's state directory, created if missing; it should
	// live under the test's t.TempDir(). Empty means a new directory under
	// t.TempDir(). Reusing the StateDir of a stopped SWTPM powers the same
	// TPM up again. No two swtpm may run on one directory.
	StateDir string
	// NoStartup leaves the TPM waiting for TPM2_Startup, as a TPM is after
	// power-on before firmware or the kernel starts it; otherwise swtpm
	// starts it itself (TPM_SU_CLEAR).
	NoStartup bool
}

// Start starts a swtpm with a new, empty state directory under t.TempDir()
// and waits until it answers TPM commands. It is stopped when the test ends.
func Start(t testing.TB) *SWTPM {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith starts a swtpm configured by o and waits until it answers TPM
// commands. It is stopped when the test ends.
func StartWith(t testing.TB, o Options) *SWTPM {
	t.Helper()
	bin := Binary(t)
	dir := o.StateDir
	if dir == "" {
		dir = filepath.Join(t.TempDir(), "tpmstate")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatalf("swtpmtest: %v", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("swtpmtest: %v", err)
	}
	var errs []error
	for range portAttempts {
		s, err := start(bin, dir, t.TempDir(), o.NoStartup)
		if err == nil {
			t.Cleanup(func() {
				if err := s.Stop(); err != nil {
					t.Errorf("swtpmtest: %v", err)
				}
			})
			return s
		}
		errs = append(errs, err)
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	t.Fatalf("swtpmtest: %v", errors.Join(errs...))
	return nil
}

var errPortTaken = errors.New("port taken")

// start runs one swtpm and waits until it answers or exits.
func start(bin, stateDir, logDir string, noStartup bool) (*SWTPM, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &SWTPM{
		StateDir: stateDir,
		Addr:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		logPath:  filepath.Join(logDir, "swtpm.log"),
		out:      new(bytes.Buffer),
		done:     make(chan struct{}),
	}
	// Absolute paths throughout; no --daemon (it would chdir to / and
	// escape the wait); not-need-init makes the TPM usable without the
	// control channel, startup-clear sends TPM2_Startup.
	flags := "not-need-init,startup-clear"
	if noStartup {
		flags = "not-need-init"
	}
	s.cmd = exec.Command(bin, "socket", "--tpm2",
		"--tpmstate", "dir="+stateDir+",mode=0600",
		"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
		"--flags", flags,
		"--log", "file="+s.logPath+",level=1",
	)
	s.cmd.Stdout = s.out
	s.cmd.Stderr = s.out
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.done)
	}()
	if err := s.waitReady(); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls the command channel until swtpm answers a TPM2_GetRandom
// with a well-formed success response (so that another program that grabbed
// the port is not mistaken for it), or exits.
func (s *SWTPM) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-s.done:
			err := fmt.Errorf("swtpm on %s exited before answering (%v): %s", s.Addr, s.waitErr, s.Log())
			if bytes.Contains(s.out.Bytes(), []byte("in use")) || bytes.Contains([]byte(s.Log()), []byte("in use")) {
				err = fmt.Errorf("%w: %w", errPortTaken, err)
			}
			return err
		default:
		}
		err := probe(s.Addr)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("swtpm on %s did not answer within %v: %v: %s", s.Addr, readyTimeout, err, s.Log())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// probe sends TPM2_GetRandom(8) and checks the response header: success,
// or TPM_RC_INITIALIZE from a TPM waiting for TPM2_Startup.
func probe(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	// TPM_ST_NO_SESSIONS, size 12, TPM_CC_GetRandom, bytesRequested 8.
	cmd := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7B, 0, 8}
	if _, err := c.Write(cmd); err != nil {
		return err
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if tag := binary.BigEndian.Uint16(hdr[0:2]); tag != 0x8001 || size < 10 || size > 4096 {
		return fmt.Errorf("not a TPM 2.0 response: % x", hdr)
	}
	if rc := binary.BigEndian.Uint32(hdr[6:10]); rc != 0 && rc != rcInitialize {
		return fmt.Errorf("TPM2_GetRandom: response code 0x%x", rc)
	}
	_, err = io.CopyN(io.Discard, c, int64(size-10))
	return err
}

// Spec returns the board.FS.OpenTPM spec of the TPM: "tcp:" + Addr.
func (s *SWTPM) Spec() string { return "tcp:" + s.Addr }

// Log returns swtpm's log and output so far, for failure messages.
func (s *SWTPM) Log() string {
	b, _ := os.ReadFile(s.logPath)
	select {
	case <-s.done: // s.out is no longer written to
		b = append(b, s.out.Bytes()...)
	default:
	}
	return string(b)
}

// Stop terminates swtpm with SIGTERM (on which it saves its state) and waits
// for it to exit, killing it if it does not. It is safe to call more than
// once; the test's cleanup calls it too. An exit other than the one SIGTERM
// asks for is an error.
func (s *SWTPM) Stop() error {
	s.stopOnce.Do(func() {
		select {
		case <-s.done:
		default:
			if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
				s.stopErr = fmt.Errorf("stop swtpm on %s: %w", s.Addr, err)
			}
			select {
			case <-s.done:
			case <-time.After(stopTimeout):
				s.cmd.Process.Kill()
				<-s.done
				s.stopErr = fmt.Errorf("swtpm on %s ignored SIGTERM for %v and was killed: %s", s.Addr, stopTimeout, s.Log())
				return
			}
		}
		if s.waitErr != nil && !exitedBySIGTERM(s.waitErr) {
			s.stopErr = fmt.Errorf("swtpm on %s: %w: %s", s.Addr, s.waitErr, s.Log())
		}
	})
	return s.stopErr
}

func exitedBySIGTERM(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM
}
