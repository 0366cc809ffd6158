package browsertest

import (
	"fmt"
	"sync"
)

// maxLog bounds what a logBuffer keeps: the last maxLog bytes.
const maxLog = 64 << 10

// logBuffer keeps the tail of the browser's output and of chromedp's error
// log, for a failing test's log. Safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf []byte
}

// Write appends p, dropping the oldest bytes beyond maxLog.
func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - maxLog; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

// printf appends a formatted line.
func (b *logBuffer) printf(format string, args ...any) {
	_, _ = b.Write([]byte(fmt.Sprintf(format, args...) + "\n"))
}

// String returns what is kept.
func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
