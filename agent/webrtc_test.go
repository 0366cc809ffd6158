//go:build webrtc

package agent

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/internal/clock"
)

// countSource hands access units numbered from 0, a key frame every 4th,
// as fast as they are asked for, and counts the readers inside it.
type countSource struct {
	n       atomic.Int64
	inside  atomic.Int32
	overlap atomic.Bool
}

func (s *countSource) NextAccessUnit(ctx context.Context) (AccessUnit, error) {
	if s.inside.Add(1) > 1 {
		s.overlap.Store(true)
	}
	defer s.inside.Add(-1)
	select {
	case <-ctx.Done():
		return AccessUnit{}, ctx.Err()
	case <-time.After(time.Millisecond):
	}
	i := s.n.Add(1) - 1
	return AccessUnit{Data: []byte{byte(i)}, Time: time.Now(), Key: i%4 == 0}, nil
}

// TestRTCFanout: a session's first access unit is a key frame; a session
// that does not take its access units drops until a key frame, so what it
// gets after a gap starts with one; the source is read only while a
// session runs, by one reader at a time.
func TestRTCFanout(t *testing.T) {
	src := &countSource{}
	a := &Agent{log: slog.New(slog.DiscardHandler), deps: Deps{Clock: clock.System{}}}
	f := &rtcFanout{src: src, log: a, subs: map[*rtcSub]struct{}{}}
	ctx := context.Background()
	for round := 0; round < 3; round++ {
		s := f.subscribe(ctx)
		first := <-s.ch
		if first.Data[0]%4 != 0 {
			t.Fatalf("round %d: the first access unit is %d, not a key frame", round, first.Data[0])
		}
		// Not reading: the queue fills, the fan-out drops; then what comes
		// after the queue's content resumes at a key frame.
		time.Sleep(50 * time.Millisecond)
		prev := first.Data[0]
		gap := false
		for i := 0; i < rtcQueue+8; i++ {
			au := <-s.ch
			if au.Data[0] != prev+1 && !gap {
				gap = true
				if au.Data[0]%4 != 0 {
					t.Errorf("round %d: after a drop the session resumes at %d, not a key frame", round, au.Data[0])
				}
			}
			prev = au.Data[0]
		}
		if !gap {
			t.Errorf("round %d: a session that did not read for 50 ms dropped nothing", round)
		}
		f.unsubscribe(s)
	}
	time.Sleep(20 * time.Millisecond)
	n := src.n.Load()
	time.Sleep(50 * time.Millisecond)
	if src.n.Load() != n {
		t.Errorf("the source is read with no session: %d, then %d", n, src.n.Load())
	}
	if src.overlap.Load() {
		t.Errorf("two readers were inside the source at once")
	}
}

// TestICEConfigurationHosts: a relay the receiver names on a local network
// is taken only when it is the receiver's own host.
func TestICEConfigurationHosts(t *testing.T) {
	cfg := func(url string) string {
		return `{"servers":[{"urls":["` + url + `"],"username":"u","credential":"c"}]}`
	}
	for _, tc := range []struct {
		url, base string
		ok        bool
	}{
		{"turn:127.0.0.1:3478?transport=udp", "http://127.0.0.1:8080", true},
		{"turn:192.168.1.10:3478", "https://192.168.1.10", true},
		{"turn:relay.example.com:3478?transport=udp", "https://cams.example.com", true},
		{"turn:[fd00::1]:3478", "https://[fd00::1]:8443", true},
		{"turn:192.168.1.1:3478", "https://cams.example.com", false},
		{"turn:10.0.0.7:22?transport=udp", "https://10.0.0.8", false},
		{"turn:127.0.0.1:3478", "https://cams.example.com", false},
		{"turn:[fe80::1]:3478", "https://cams.example.com", false},
		{"stun:cams.example.com:3478", "https://cams.example.com", false},
		{"turn:", "https://cams.example.com", false},
	} {
		_, err := iceConfiguration(cfg(tc.url), tc.base)
		if (err == nil) != tc.ok {
			t.Errorf("relay %s for a receiver at %s: %v, want ok %v", tc.url, tc.base, err, tc.ok)
		}
	}
}
