package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/keyframe-cam/keyframe/internal/backoff"
)

// TPM 2.0 framing: every command and response starts with a 10-byte header,
// tag (2 bytes), size of the whole message (4, big-endian) and command or
// response code (4).
const (
	headerSize = 10
	// maxMessage is TPM_BUFSIZE, the kernel's buffer for one command or
	// response: the proxy hands out no larger command and takes no larger
	// response.
	maxMessage = 4096

	tagNoSessions = 0x8001 // TPM_ST_NO_SESSIONS

	// ccSetLocality is the vendor command the kernel's vTPM proxy driver
	// itself sends before it starts each command (TPM2_CC_SET_LOCALITY,
	// include/uapi/linux/vtpm_proxy.h). swtpm's TCP data channel does not
	// know it: it is answered here.
	ccSetLocality = 0x20001000

	rcSuccess     = 0x000
	rcFailure     = 0x101 // TPM_RC_FAILURE: sent when the TPM could not be reached or its answer was lost
	rcCommandSize = 0x142 // TPM_RC_COMMAND_SIZE: a command whose header disagrees with its length
	rcLocality    = 0x907 // TPM_RC_LOCALITY: a locality other than 0 was asked for
)

// commandNames names the commands a Linux guest and keyframe send, for the
// statistics; others are shown by code.
var commandNames = map[uint32]string{
	0x0000011F:    "NV_UndefineSpaceSpecial",
	0x00000120:    "EvictControl",
	0x00000121:    "HierarchyControl",
	0x00000126:    "Clear",
	0x0000012A:    "NV_DefineSpace",
	0x00000131:    "CreatePrimary",
	0x00000137:    "NV_Write",
	0x00000143:    "SelfTest",
	0x00000144:    "Startup",
	0x00000145:    "Shutdown",
	0x0000014E:    "NV_Read",
	0x00000153:    "Create",
	0x00000157:    "Load",
	0x0000015D:    "Sign",
	0x00000161:    "ContextLoad",
	0x00000162:    "ContextSave",
	0x00000165:    "FlushContext",
	0x00000169:    "NV_ReadPublic",
	0x00000173:    "ReadPublic",
	0x00000176:    "StartAuthSession",
	0x0000017A:    "GetCapability",
	0x0000017B:    "GetRandom",
	0x0000017C:    "GetTestResult",
	0x0000017E:    "PCR_Read",
	0x00000182:    "PCR_Extend",
	ccSetLocality: "SetLocality(local)",
}

func commandName(cc uint32) string {
	if n, ok := commandNames[cc]; ok {
		return n
	}
	return fmt.Sprintf("0x%08x", cc)
}

// Relay forwards TPM 2.0 commands, one at a time, to a TPM reached over a
// stream connection (swtpm's raw TCP data channel) and returns its responses.
// It connects on first use, reconnects when the connection drops, and always
// returns a well-formed response: when the TPM cannot be reached, or the
// connection drops after the command went out (it may have run), the response
// is TPM_RC_FAILURE and the error is logged. The zero value is not usable: set
// the fields, then call Serve, Handle or Connect from one goroutine; Stats may
// be called from any.
type Relay struct {
	// Dial opens a connection to the TPM.
	Dial func(ctx context.Context) (net.Conn, error)
	// ConnectWait bounds how long one command waits for the TPM to become
	// reachable, across dial attempts.
	ConnectWait time.Duration
	// Timeout bounds one command's exchange with the TPM.
	Timeout time.Duration
	// Backoff is the ceiling of the first delay between dial attempts; it
	// doubles up to BackoffCap, and each delay is drawn at random below it
	// (full jitter, internal/backoff).
	Backoff, BackoffCap time.Duration
	// Rand draws the jitter.
	Rand *rand.Rand
	// Log receives connection changes, each distinct error once, and errors
	// answered to the kernel.
	Log *slog.Logger

	conn    net.Conn
	lastErr string // the last dial error logged, so a repeat is not logged again

	mu    sync.Mutex
	stats Stats
}

// Stats counts what a Relay did.
type Stats struct {
	Commands    map[uint32]int // commands by code, local answers included
	Forwarded   int            // commands answered by the TPM
	Failed      int            // commands answered with an error made here
	Connections int            // connections made to the TPM
}

// String summarises the statistics on one line, the commands by name, most
// frequent first.
func (s Stats) String() string {
	type kv struct {
		cc uint32
		n  int
	}
	var all []kv
	total := 0
	for cc, n := range s.Commands {
		all = append(all, kv{cc, n})
		total += n
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].n != all[j].n {
			return all[i].n > all[j].n
		}
		return all[i].cc < all[j].cc
	})
	parts := make([]string, 0, len(all))
	for _, e := range all {
		parts = append(parts, fmt.Sprintf("%s=%d", commandName(e.cc), e.n))
	}
	return fmt.Sprintf("%d commands (%s), %d answered by the TPM, %d failed here, %d connections",
		total, strings.Join(parts, " "), s.Forwarded, s.Failed, s.Connections)
}

// Stats returns a copy of the statistics so far.
func (r *Relay) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Commands = make(map[uint32]int, len(r.stats.Commands))
	for cc, n := range r.stats.Commands {
		s.Commands[cc] = n
	}
	return s
}

func (r *Relay) count(f func(*Stats)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stats.Commands == nil {
		r.stats.Commands = make(map[uint32]int)
	}
	f(&r.stats)
}

// Serve relays commands read from dev, one per Read, and writes each
// response with one Write, as the kernel's vTPM proxy device expects. It
// returns when dev fails; that is never nil.
func (r *Relay) Serve(ctx context.Context, dev io.ReadWriter) error {
	buf := make([]byte, maxMessage)
	for {
		n, err := dev.Read(buf)
		if err != nil {
			return fmt.Errorf("vtpmfwd: read command from the proxy: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("vtpmfwd: read command from the proxy: %w", io.ErrUnexpectedEOF)
		}
		rsp := r.Handle(ctx, buf[:n])
		if _, err := dev.Write(rsp); err != nil {
			return fmt.Errorf("vtpmfwd: write response to the proxy: %w", err)
		}
	}
}

// Handle returns the response to one command. It never fails: an error
// becomes an error response, logged.
func (r *Relay) Handle(ctx context.Context, cmd []byte) []byte {
	if len(cmd) < headerSize {
		r.Log.Error("command shorter than a TPM header: answered TPM_RC_COMMAND_SIZE", "bytes", len(cmd))
		r.count(func(s *Stats) { s.Failed++ })
		return response(rcCommandSize)
	}
	cc := binary.BigEndian.Uint32(cmd[6:10])
	r.count(func(s *Stats) { s.Commands[cc]++ })
	if size := binary.BigEndian.Uint32(cmd[2:6]); int64(size) != int64(len(cmd)) {
		r.Log.Error("command size field disagrees with its length: answered TPM_RC_COMMAND_SIZE", "command", commandName(cc), "size", size, "bytes", len(cmd))
		r.count(func(s *Stats) { s.Failed++ })
		return response(rcCommandSize)
	}
	if cc == ccSetLocality {
		// The driver asks for locality 0 before each command it sends; the
		// TPM behind swtpm's data channel is at locality 0 already.
		if len(cmd) == headerSize+1 && cmd[headerSize] == 0 {
			return response(rcSuccess)
		}
		r.Log.Error("locality other than 0 asked for: not supported, answered TPM_RC_LOCALITY", "command", fmt.Sprintf("% x", cmd))
		r.count(func(s *Stats) { s.Failed++ })
		return response(rcLocality)
	}
	for attempt := 1; ; attempt++ {
		if err := r.Connect(ctx); err != nil {
			r.Log.Error("TPM unreachable: answered TPM_RC_FAILURE", "command", commandName(cc), "err", err)
			r.count(func(s *Stats) { s.Failed++ })
			return response(rcFailure)
		}
		rsp, sent, err := r.exchange(cmd)
		if err == nil {
			r.count(func(s *Stats) { s.Forwarded++ })
			return rsp
		}
		r.drop(err)
		if !sent && attempt == 1 {
			// The TPM never saw the command: send it on a new connection.
			continue
		}
		r.Log.Error("TPM connection lost during a command (it may have run): answered TPM_RC_FAILURE", "command", commandName(cc), "err", err)
		r.count(func(s *Stats) { s.Failed++ })
		return response(rcFailure)
	}
}

// exchange sends cmd on the current connection and reads the response.
// sent reports whether the command may have reached the TPM.
func (r *Relay) exchange(cmd []byte) (rsp []byte, sent bool, err error) {
	c := r.conn
	// A connection the TPM closed (or one carrying stray bytes) is found
	// before the command goes out, so the command is not lost with it.
	if err := checkIdle(c); err != nil {
		return nil, false, err
	}
	if err := c.SetDeadline(time.Now().Add(r.Timeout)); err != nil {
		return nil, false, fmt.Errorf("set deadline: %w", err)
	}
	if _, err := c.Write(cmd); err != nil {
		// A partly written command cannot run: the TPM needs all of it.
		return nil, false, fmt.Errorf("send command: %w", err)
	}
	hdr := make([]byte, headerSize)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return nil, true, fmt.Errorf("read response header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < headerSize || size > maxMessage {
		return nil, true, fmt.Errorf("response header announces %d bytes (want %d to %d): not a TPM 2.0 response", size, headerSize, maxMessage)
	}
	rsp = make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(c, rsp[headerSize:]); err != nil {
		return nil, true, fmt.Errorf("read response body: %w", err)
	}
	return rsp, true, nil
}

// drop closes the current connection after err.
func (r *Relay) drop(err error) {
	if r.conn == nil {
		return
	}
	r.Log.Warn("TPM connection dropped", "err", err)
	r.conn.Close()
	r.conn = nil
}

// Close closes the connection to the TPM, if any.
func (r *Relay) Close() error {
	if r.conn == nil {
		return nil
	}
	err := r.conn.Close()
	r.conn = nil
	return err
}

// Connect makes sure there is a connection to the TPM, dialling with
// backoff for up to ConnectWait. It logs each distinct dial error once and
// the connection when it succeeds.
func (r *Relay) Connect(ctx context.Context) error {
	if r.conn != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.ConnectWait)
	defer cancel()
	base := max(r.Backoff, time.Millisecond)
	bo := backoff.Backoff{Base: base, Cap: max(r.BackoffCap, base), Rand: r.Rand}
	for failures := 0; ; failures++ {
		c, err := r.Dial(ctx)
		if err == nil {
			r.conn = c
			r.count(func(s *Stats) { s.Connections++ })
			r.Log.Info("connected to the TPM", "addr", c.RemoteAddr().String(), "after_failures", failures)
			r.lastErr = ""
			return nil
		}
		if msg := err.Error(); msg != r.lastErr {
			r.Log.Warn("cannot reach the TPM; retrying", "err", err)
			r.lastErr = msg
		}
		t := time.NewTimer(bo.Next())
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("vtpmfwd: no connection to the TPM within %v: %w", r.ConnectWait, err)
		case <-t.C:
		}
	}
}

// response is a bare response carrying rc.
func response(rc uint32) []byte {
	b := make([]byte, headerSize)
	binary.BigEndian.PutUint16(b[0:2], tagNoSessions)
	binary.BigEndian.PutUint32(b[2:6], headerSize)
	binary.BigEndian.PutUint32(b[6:10], rc)
	return b
}

// errStray reports bytes from the TPM while no command was outstanding.
var errStray = errors.New("bytes from the TPM while no command was outstanding")
