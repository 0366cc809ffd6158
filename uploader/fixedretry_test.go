package uploader

import (
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keyframe-cam/keyframe/internal/backoff/backofftest"
)

// A Retry hook that returns a fixed interval (the storm harness's naive
// control client) retries at exactly that interval: no random first retry,
// no growing jittered backoff.
func TestUploaderFixedRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.Retry = fixedRetry(time.Second)
		// The largest draws would give 30s, 2s, 4s, 8s, 16s with jitter.
		h := start(t, cfg, backofftest.Ceil(), failFirst(5, errRefused), 1)
		settle(time.Hour)
		h.stop()
		as := h.tr.Attempts()
		if len(as) != 6 || as[5].err != nil {
			t.Fatalf("%d attempts, want 5 failures then a success", len(as))
		}
		want := slices.Repeat([]time.Duration{time.Second}, 5)
		if got := gaps(as); !slices.Equal(got, want) {
			t.Fatalf("retry delays = %v, want %v", got, want)
		}
	})
}

// A Retry-After larger than the fixed interval still wins.
func TestUploaderFixedRetryHonoursRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.Retry = fixedRetry(time.Second)
		busy := &StatusError{Code: 503, Reason: "busy", RetryAfter: 7 * time.Second}
		h := start(t, cfg, backofftest.Zero(), failFirst(2, busy), 1)
		settle(time.Hour)
		h.stop()
		as := h.tr.Attempts()
		if len(as) != 3 || as[2].err != nil {
			t.Fatalf("%d attempts, want 2 refusals then a success", len(as))
		}
		if got, want := gaps(as), []time.Duration{7 * time.Second, 7 * time.Second}; !slices.Equal(got, want) {
			t.Fatalf("retry delays = %v, want %v", got, want)
		}
	})
}

// fixedRetry is a Retry hook that ignores the schedule.
func fixedRetry(d time.Duration) func(time.Duration) time.Duration {
	return func(time.Duration) time.Duration { return d }
}
