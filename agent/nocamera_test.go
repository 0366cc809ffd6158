package agent

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuf is a log buffer the agent writes while the test reads it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestNoCameraNoRecords: with capture.source auto (the default) or v4l2 and
// no camera, the agent says once that it waits for the camera and records
// nothing: never a synthetic scene in its place.
func TestNoCameraNoRecords(t *testing.T) {
	for _, source := range []string{"auto", "v4l2"} {
		t.Run(source, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(dir, 320, 240)
			cfg.Source, cfg.FPS = source, 10
			cfg.Device = filepath.Join(dir, "video0") // absent
			cfg.SourceRetry, cfg.RetryCap = 100*time.Millisecond, 100*time.Millisecond
			logs := &syncBuf{}
			a, err := New(cfg, Deps{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			// Wait for the warning, then for a few more open attempts.
			deadline := time.After(30 * time.Second)
			for !strings.Contains(logs.String(), "no camera: waiting for it") {
				select {
				case err := <-done:
					t.Fatalf("agent stopped: %v\n%s", err, logs.String())
				case <-deadline:
					t.Fatalf("no warning about the missing camera:\n%s", logs.String())
				case <-time.After(10 * time.Millisecond):
				}
			}
			time.Sleep(500 * time.Millisecond)
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("agent: %v", err)
			}
			out := logs.String()
			if n := strings.Count(out, "level=WARN"); n != 1 {
				t.Errorf("%d warnings, want the one about the missing camera:\n%s", n, out)
			}
			if strings.Contains(out, "synthetic\"") || strings.Contains(out, "source=synthetic") {
				t.Errorf("a synthetic source was opened:\n%s", out)
			}
			if a.Frames() != 0 || len(a.spool.Pending()) != 0 {
				t.Errorf("%d frames, %d records spooled without a camera", a.Frames(), len(a.spool.Pending()))
			}
		})
	}
}
