//go:build linux

package main

import (
	"encoding/binary"
	"strings"
	"testing"
)

// The TPM closed the connection between commands (swtpm restarted, say):
// the relay sees it before sending, and the command goes out once, on a new
// connection, with no error for the kernel.
func TestReconnectsBeforeSending(t *testing.T) {
	f := startFakeTPM(t, func(conn, n int, cmd []byte) []byte { return okResponse(cmd) })
	r, logs := newRelay(tcpDial(f.ln.Addr().String()))
	defer r.Close()
	if rc := rcOf(t, r.Handle(t.Context(), getRandom(8))); rc != rcSuccess {
		t.Fatalf("first command: rc 0x%x", rc)
	}
	f.hangUp()
	rsp := r.Handle(t.Context(), command(0x173, 0x81, 0x4b, 0x46, 0x01))
	if rc := rcOf(t, rsp); rc != rcSuccess || binary.BigEndian.Uint32(rsp[10:14]) != 0x173 {
		t.Fatalf("after the TPM hung up: response % x, want success for ReadPublic; log:\n%s", rsp, logs)
	}
	if got := f.received(); len(got) != 2 {
		t.Fatalf("the TPM received %d commands, want 2 (each once)", len(got))
	}
	if st := r.Stats(); st.Connections != 2 || st.Failed != 0 || st.Forwarded != 2 {
		t.Fatalf("stats %+v, want 2 connections, 0 failed, 2 forwarded", st)
	}
	if !strings.Contains(logs.String(), "the TPM closed it") {
		t.Fatalf("no log of the closed connection:\n%s", logs)
	}
}
