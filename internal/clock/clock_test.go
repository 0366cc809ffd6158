package clock

import (
	"testing"
	"time"
)

type fixed struct{ t time.Time }

func (f fixed) Now() time.Time                     { return f.t }
func (fixed) After(time.Duration) <-chan time.Time { return nil }

func TestOr(t *testing.T) {
	if _, ok := Or(nil).(System); !ok {
		t.Errorf("Or(nil) = %T, want System", Or(nil))
	}
	f := fixed{time.Unix(42, 0)}
	if got := Or(f); got != Clock(f) {
		t.Errorf("Or(f) = %v, want f", got)
	}
}

func TestSystem(t *testing.T) {
	before := time.Now()
	if now := (System{}).Now(); now.Before(before) {
		t.Errorf("System.Now() = %v, before %v", now, before)
	}
	select {
	case <-System{}.After(0):
	case <-time.After(10 * time.Second):
		t.Fatal("System.After(0) did not fire")
	}
}
