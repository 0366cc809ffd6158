package storm

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// meter counts upload requests at the receiver: before the mark (the
// receiver's return) in total, after it per one-second window counted from
// the mark, and by reply status. Until the mark it can also queue uploads
// in front of the receiver (gate), so that setting the fleet up does not
// overload it; from the mark on the receiver takes the storm unshielded.
type meter struct {
	now  func() time.Time
	gate chan struct{} // nil: no queue

	mu       sync.Mutex
	mark     time.Time // zero until Mark
	before   int
	windows  []int
	statuses map[int]int // after the mark
}

func newMeter(now func() time.Time) *meter {
	return &meter{now: now, statuses: map[int]int{}}
}

// queueBefore makes uploads arriving before the mark wait for one of n
// slots instead of reaching the receiver beyond n at once.
func (m *meter) queueBefore(n int) { m.gate = make(chan struct{}, max(n, 1)) }

// Mark starts the per-second windows at now.
func (m *meter) Mark() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mark = m.now()
	return m.mark
}

// count records one request that arrived at t and was answered with status.
func (m *meter) count(t time.Time, status int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mark.IsZero() || t.Before(m.mark) {
		m.before++
		return
	}
	w := int(t.Sub(m.mark) / time.Second)
	for len(m.windows) <= w {
		m.windows = append(m.windows, 0)
	}
	m.windows[w]++
	m.statuses[status]++
}

func (m *meter) beforeMark() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mark.IsZero()
}

// Windows returns the requests per one-second window since the mark.
func (m *meter) Windows() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]int(nil), m.windows...)
}

// Peak returns the highest count of any one-second window since the mark.
func (m *meter) Peak() int {
	peak := 0
	for _, n := range m.Windows() {
		peak = max(peak, n)
	}
	return peak
}

// Statuses returns the reply statuses counted since the mark, by code.
func (m *meter) Statuses() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]int, len(m.statuses))
	for c, n := range m.statuses {
		out[strconv.Itoa(c)] = n
	}
	return out
}

// wrap counts the upload requests (PUT /v1/events/...) h answers.
func (m *meter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut || !strings.HasPrefix(r.URL.Path, "/v1/events/") {
			h.ServeHTTP(w, r)
			return
		}
		t := m.now()
		if m.gate != nil && m.beforeMark() {
			select {
			case m.gate <- struct{}{}:
				defer func() { <-m.gate }()
			case <-r.Context().Done():
				return
			}
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		m.count(t, sw.status)
	})
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}
