//go:build linux

package clip

import (
	"runtime"
	"testing"
	"time"
)

// TestArenaOffHeap: a ring's arena, written full, is not Go heap: the heap
// alive after a collection does not hold its 16 MiB (so the collector
// does not leave as much again for garbage beside it), and the ring works
// as before.
func TestArenaOffHeap(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	cfg := DefaultConfig()
	r, err := NewRing(cfg)
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 64<<10)
	t0 := time.Unix(1000, 0)
	for i := range cfg.MaxBytes / len(frame) * 2 { // every page written
		frame[0] = byte(i)
		if err := r.Push(Frame{Time: t0.Add(time.Duration(i) * time.Millisecond), Data: frame}); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > int64(cfg.MaxBytes)/4 {
		t.Errorf("the heap grew by %d bytes with a ring of %d: the arena is on the heap", grew, cfg.MaxBytes)
	}
	if st := r.Stats(); st.Bytes == 0 || st.Bytes > cfg.MaxBytes {
		t.Errorf("ring stats %+v after filling it", st)
	}
	runtime.KeepAlive(r)
}
