package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keyframe-cam/keyframe/board/swtpmtest"
)

// command builds a TPM 2.0 command with no sessions.
func command(cc uint32, params ...byte) []byte {
	b := make([]byte, headerSize, headerSize+len(params))
	binary.BigEndian.PutUint16(b[0:2], tagNoSessions)
	binary.BigEndian.PutUint32(b[2:6], uint32(headerSize+len(params)))
	binary.BigEndian.PutUint32(b[6:10], cc)
	return append(b, params...)
}

func rcOf(t *testing.T, rsp []byte) uint32 {
	t.Helper()
	if len(rsp) < headerSize || int(binary.BigEndian.Uint32(rsp[2:6])) != len(rsp) {
		t.Fatalf("malformed response % x", rsp)
	}
	return binary.BigEndian.Uint32(rsp[6:10])
}

const ccGetRandom = 0x0000017B

func getRandom(n uint16) []byte { return command(ccGetRandom, byte(n>>8), byte(n)) }

// newRelay returns a Relay dialling addr over TCP, logging into the returned
// buffer.
func newRelay(dial func(ctx context.Context) (net.Conn, error)) (*Relay, *syncBuffer) {
	logs := new(syncBuffer)
	return &Relay{
		Dial:        dial,
		ConnectWait: 2 * time.Second,
		Timeout:     10 * time.Second,
		Backoff:     time.Millisecond,
		BackoffCap:  time.Millisecond,
		Rand:        rand.New(rand.NewPCG(1, 2)),
		Log:         slog.New(slog.NewTextHandler(logs, nil)),
	}, logs
}

func tcpDial(addr string) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeTPM is a TCP server speaking the raw TPM 2.0 command stream. For each
// command it calls the test's answer function, which returns the response
// to send, or nil to close the connection without one.
type fakeTPM struct {
	ln     net.Listener
	answer func(conn, n int, cmd []byte) []byte

	mu       sync.Mutex
	commands [][]byte   // every command received, in order
	conns    int        // connections accepted
	open     []net.Conn // the server side of each accepted connection
}

func startFakeTPM(t *testing.T, answer func(conn, n int, cmd []byte) []byte) *fakeTPM {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeTPM{ln: ln, answer: answer}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns++
			id := f.conns
			f.open = append(f.open, c)
			f.mu.Unlock()
			wg.Go(func() { f.serve(id, c) })
		}
	})
	return f
}

func (f *fakeTPM) serve(id int, c net.Conn) {
	defer c.Close()
	for n := 1; ; n++ {
		hdr := make([]byte, headerSize)
		if _, err := io.ReadFull(c, hdr); err != nil {
			return
		}
		cmd := make([]byte, binary.BigEndian.Uint32(hdr[2:6]))
		copy(cmd, hdr)
		if _, err := io.ReadFull(c, cmd[headerSize:]); err != nil {
			return
		}
		f.mu.Lock()
		f.commands = append(f.commands, cmd)
		f.mu.Unlock()
		rsp := f.answer(id, n, cmd)
		if rsp == nil {
			return
		}
		if _, err := c.Write(rsp); err != nil {
			return
		}
	}
}

// hangUp closes the server side of every connection accepted so far.
func (f *fakeTPM) hangUp() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.open {
		c.Close()
	}
}

func (f *fakeTPM) received() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.commands...)
}

// okResponse answers with success and a body naming the command.
func okResponse(cmd []byte) []byte {
	rsp := response(rcSuccess)
	rsp = append(rsp, cmd[6:10]...)
	binary.BigEndian.PutUint32(rsp[2:6], uint32(len(rsp)))
	return rsp
}

// The relay speaks to a real swtpm: a command goes out and swtpm's answer
// comes back whole.
func TestHandleAgainstSWTPM(t *testing.T) {
	s := swtpmtest.Start(t)
	r, logs := newRelay(tcpDial(s.Addr))
	defer r.Close()
	rsp := r.Handle(t.Context(), getRandom(16))
	if rc := rcOf(t, rsp); rc != rcSuccess {
		t.Fatalf("GetRandom: rc 0x%x, want success; log:\n%s", rc, logs)
	}
	// TPM2B_DIGEST: 2-byte size, then the bytes.
	if got := binary.BigEndian.Uint16(rsp[10:12]); got != 16 || len(rsp) != 12+16 {
		t.Fatalf("GetRandom(16) response: %d random bytes in %d, want 16 in 28", got, len(rsp))
	}
	// TPM2_Startup on a started TPM: swtpm's own error comes through.
	rsp = r.Handle(t.Context(), command(0x144, 0, 0))
	if rc := rcOf(t, rsp); rc != 0x100 {
		t.Fatalf("Startup on a started TPM: rc 0x%x, want TPM_RC_INITIALIZE 0x100", rc)
	}
	st := r.Stats()
	if st.Forwarded != 2 || st.Failed != 0 || st.Connections != 1 {
		t.Fatalf("stats %+v, want 2 forwarded on 1 connection", st)
	}
	if !strings.Contains(st.String(), "GetRandom=1") || !strings.Contains(st.String(), "Startup=1") {
		t.Fatalf("stats string %q does not name the commands", st.String())
	}
}

// The proxy driver's locality command is answered here and never reaches
// the TPM, which does not know it.
func TestSetLocalityAnsweredLocally(t *testing.T) {
	dials := 0
	r, _ := newRelay(func(context.Context) (net.Conn, error) { dials++; return nil, errors.New("no TPM") })
	if rc := rcOf(t, r.Handle(t.Context(), command(ccSetLocality, 0))); rc != rcSuccess {
		t.Fatalf("SetLocality(0): rc 0x%x, want success", rc)
	}
	if rc := rcOf(t, r.Handle(t.Context(), command(ccSetLocality, 3))); rc != rcLocality {
		t.Fatalf("SetLocality(3): rc 0x%x, want TPM_RC_LOCALITY", rc)
	}
	if dials != 0 {
		t.Fatalf("dialled the TPM %d times for locality commands", dials)
	}
}

// Malformed commands get TPM_RC_COMMAND_SIZE and are not sent on.
func TestMalformedCommands(t *testing.T) {
	dials := 0
	r, logs := newRelay(func(context.Context) (net.Conn, error) { dials++; return nil, errors.New("no TPM") })
	bad := getRandom(8)
	binary.BigEndian.PutUint32(bad[2:6], 99)
	for name, cmd := range map[string][]byte{"short": {0x80, 0x01, 0, 0}, "size field wrong": bad} {
		if rc := rcOf(t, r.Handle(t.Context(), cmd)); rc != rcCommandSize {
			t.Errorf("%s: rc 0x%x, want TPM_RC_COMMAND_SIZE", name, rc)
		}
	}
	if dials != 0 {
		t.Fatalf("dialled the TPM %d times for malformed commands", dials)
	}
	if st := r.Stats(); st.Failed != 2 {
		t.Fatalf("stats %+v, want 2 failed", st)
	}
	if !strings.Contains(logs.String(), "size field disagrees") {
		t.Fatalf("no log of the size mismatch:\n%s", logs)
	}
}

// A connection that drops after the command went out may have run it: the
// command is not sent again, the kernel gets TPM_RC_FAILURE, and the next
// command goes out on a new connection.
func TestLostResponseAnsweredFailure(t *testing.T) {
	f := startFakeTPM(t, func(conn, n int, cmd []byte) []byte {
		if conn == 1 {
			return nil // hang up instead of answering
		}
		return okResponse(cmd)
	})
	r, logs := newRelay(tcpDial(f.ln.Addr().String()))
	defer r.Close()
	if rc := rcOf(t, r.Handle(t.Context(), getRandom(8))); rc != rcFailure {
		t.Fatalf("lost response: rc 0x%x, want TPM_RC_FAILURE", rc)
	}
	if n := len(f.received()); n != 1 {
		t.Fatalf("the TPM received the command %d times, want once (it may have run)", n)
	}
	if !strings.Contains(logs.String(), "may have run") {
		t.Fatalf("no log of the lost response:\n%s", logs)
	}
	rsp := r.Handle(t.Context(), getRandom(8))
	if rc := rcOf(t, rsp); rc != rcSuccess || binary.BigEndian.Uint32(rsp[10:14]) != ccGetRandom {
		t.Fatalf("after reconnecting: response % x, want success for GetRandom", rsp)
	}
	if st := r.Stats(); st.Connections != 2 || st.Failed != 1 || st.Forwarded != 1 {
		t.Fatalf("stats %+v, want 2 connections, 1 failed, 1 forwarded", st)
	}
}

// A response announcing more than the kernel's buffer is refused.
func TestOversizedResponse(t *testing.T) {
	f := startFakeTPM(t, func(conn, n int, cmd []byte) []byte {
		rsp := response(rcSuccess)
		binary.BigEndian.PutUint32(rsp[2:6], maxMessage+1)
		return rsp
	})
	r, logs := newRelay(tcpDial(f.ln.Addr().String()))
	defer r.Close()
	if rc := rcOf(t, r.Handle(t.Context(), getRandom(8))); rc != rcFailure {
		t.Fatalf("oversized response: rc 0x%x, want TPM_RC_FAILURE", rc)
	}
	if !strings.Contains(logs.String(), "not a TPM 2.0 response") {
		t.Fatalf("no log of the bad response:\n%s", logs)
	}
}

// An unreachable TPM: dial attempts back off until ConnectWait, each
// distinct error is logged once, and the command gets TPM_RC_FAILURE.
func TestUnreachableTPM(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dials := 0
		r, logs := newRelay(func(context.Context) (net.Conn, error) {
			dials++
			return nil, errors.New("connection refused")
		})
		r.ConnectWait = 10 * time.Second
		r.Backoff = 100 * time.Millisecond
		r.BackoffCap = time.Second
		start := time.Now()
		if rc := rcOf(t, r.Handle(t.Context(), getRandom(8))); rc != rcFailure {
			t.Fatalf("unreachable TPM: rc 0x%x, want TPM_RC_FAILURE", rc)
		}
		if waited := time.Since(start); waited != 10*time.Second {
			t.Fatalf("gave up after %v, want ConnectWait (10s)", waited)
		}
		// Delays below 0.1, 0.2, 0.4, 0.8 s then 1 s each: at least 10 dials in 10 s.
		if dials < 10 {
			t.Fatalf("%d dial attempts in 10s, want >= 10", dials)
		}
		if n := strings.Count(logs.String(), "cannot reach the TPM"); n != 1 {
			t.Fatalf("the repeated dial error was logged %d times, want once:\n%s", n, logs)
		}
		if st := r.Stats(); st.Failed != 1 || st.Connections != 0 {
			t.Fatalf("stats %+v, want 1 failed, 0 connections", st)
		}
	})
}

// The TPM comes up while a command waits: the command goes through.
func TestTPMComesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		up := time.Now().Add(3 * time.Second)
		r, _ := newRelay(func(context.Context) (net.Conn, error) {
			if time.Now().Before(up) {
				return nil, errors.New("connection refused")
			}
			return c1, nil
		})
		r.ConnectWait = 10 * time.Second
		r.Backoff = 100 * time.Millisecond
		r.BackoffCap = time.Second
		go func() {
			hdr := make([]byte, headerSize+2)
			if _, err := io.ReadFull(c2, hdr); err == nil {
				c2.Write(okResponse(hdr))
			}
		}()
		rsp := r.Handle(t.Context(), getRandom(8))
		if rc := rcOf(t, rsp); rc != rcSuccess {
			t.Fatalf("rc 0x%x, want success once the TPM came up", rc)
		}
		if time.Now().Before(up) {
			t.Fatalf("answered before the TPM was up")
		}
		c1.Close()
		c2.Close()
	})
}

// fakeDevice is the kernel's side of the proxy: Read hands out the queued
// commands, one per call, then fails; Write collects responses.
type fakeDevice struct {
	cmds [][]byte
	rsps [][]byte
}

var errDeviceGone = errors.New("device gone")

func (d *fakeDevice) Read(b []byte) (int, error) {
	if len(d.cmds) == 0 {
		return 0, errDeviceGone
	}
	n := copy(b, d.cmds[0])
	d.cmds = d.cmds[1:]
	return n, nil
}

func (d *fakeDevice) Write(b []byte) (int, error) {
	d.rsps = append(d.rsps, append([]byte(nil), b...))
	return len(b), nil
}

// Serve answers each command with one write, in order, and returns the
// device's error.
func TestServe(t *testing.T) {
	f := startFakeTPM(t, func(conn, n int, cmd []byte) []byte { return okResponse(cmd) })
	r, _ := newRelay(tcpDial(f.ln.Addr().String()))
	defer r.Close()
	dev := &fakeDevice{cmds: [][]byte{
		command(ccSetLocality, 0), getRandom(4), command(ccSetLocality, 0), command(0x173, 0x81, 0x4b, 0x46, 0x01),
	}}
	err := r.Serve(t.Context(), dev)
	if !errors.Is(err, errDeviceGone) {
		t.Fatalf("Serve returned %v, want the device's error", err)
	}
	if len(dev.rsps) != 4 {
		t.Fatalf("%d responses, want 4", len(dev.rsps))
	}
	for i, want := range []uint32{0, ccGetRandom, 0, 0x173} {
		if rcOf(t, dev.rsps[i]) != rcSuccess {
			t.Fatalf("response %d: % x, want success", i, dev.rsps[i])
		}
		if want != 0 && binary.BigEndian.Uint32(dev.rsps[i][10:14]) != want {
			t.Fatalf("response %d answers the wrong command: % x", i, dev.rsps[i])
		}
	}
	if got := len(f.received()); got != 2 {
		t.Fatalf("the TPM received %d commands, want 2 (locality answered here)", got)
	}
}

func TestWaitNodes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		a, b := filepath.Join(dir, "tpm0"), filepath.Join(dir, "tpmrm0")
		go func() {
			time.Sleep(time.Second)
			os.WriteFile(a, nil, 0o600)
			time.Sleep(time.Second)
			os.WriteFile(b, nil, 0o600)
		}()
		start := time.Now()
		if err := waitNodes(t.Context(), []string{a, b}, 5*time.Second, 50*time.Millisecond); err != nil {
			t.Fatalf("waitNodes: %v", err)
		}
		if d := time.Since(start); d < 2*time.Second {
			t.Fatalf("returned after %v, before both nodes existed", d)
		}
		err := waitNodes(t.Context(), []string{filepath.Join(dir, "tpm1")}, 5*time.Second, 50*time.Millisecond)
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "tpm1") {
			t.Fatalf("missing node: %v, want an error naming it and wrapping os.ErrNotExist", err)
		}
	})
}

func TestRunUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"-host", "nohostport"}, {"-host", "10.0.2.2:1", "extra"}} {
		var out bytes.Buffer
		if code := run(args, &out); code != 2 {
			t.Errorf("run(%q) = %d, want 2 (usage); output %q", args, code, out.String())
		}
	}
}
