package receiver

import (
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Defaults of Quota: far above what an honest camera stores, far below
// what a flood would (docs/architecture.md, "Per-device quotas").
const (
	// DefaultRecordsPerHour: one record every 5 s for a whole hour. A
	// camera's event makes two records (start and end); even a street
	// camera that triggers every minute stores about 120 an hour.
	DefaultRecordsPerHour = 720
	// DefaultRecordsPerDay: 250 an hour on average, all day.
	DefaultRecordsPerDay = 6000
	// DefaultBytesPerHour: 720 records of 0.7 MiB, or a hundred or so
	// short clips (issue 16); a thumbnail is tens of KiB.
	DefaultBytesPerHour = 512 << 20
	// DefaultBytesPerDay: 2 GiB a day.
	DefaultBytesPerDay = 2 << 30
)

// Quota bounds what one device may store: new records (an identical
// re-send is not counted) and their bytes (envelope and media), each per
// hour and per day of the receiver's clock, in fixed windows that begin at
// the first record counted in them. A record over a quota is refused 429,
// reason quota, with Retry-After the time until its window ends; the agent
// keeps it and sends it again then. A zero field takes its default; a
// negative one means no limit.
type Quota struct {
	RecordsPerHour, RecordsPerDay int
	BytesPerHour, BytesPerDay     int64
}

// withDefaults returns q with its zero fields set to their defaults.
func (q Quota) withDefaults() Quota {
	if q.RecordsPerHour == 0 {
		q.RecordsPerHour = DefaultRecordsPerHour
	}
	if q.RecordsPerDay == 0 {
		q.RecordsPerDay = DefaultRecordsPerDay
	}
	if q.BytesPerHour == 0 {
		q.BytesPerHour = DefaultBytesPerHour
	}
	if q.BytesPerDay == 0 {
		q.BytesPerDay = DefaultBytesPerDay
	}
	return q
}

// check refuses a quota under which a record of maxBody bytes could never
// be stored: that device would retry it for ever.
func (q Quota) check(maxBody int64) error {
	for _, b := range []struct {
		name string
		n    int64
	}{{"BytesPerHour", q.BytesPerHour}, {"BytesPerDay", q.BytesPerDay}} {
		if b.n > 0 && b.n < maxBody {
			return fmt.Errorf("receiver: quota %s (%d) is below the largest upload (MaxBody %d): a record that large could never be stored", b.name, b.n, maxBody)
		}
	}
	return nil
}

// Window lengths of the quotas.
const (
	quotaHour = time.Hour
	quotaDay  = 24 * time.Hour
)

// deviceUse is what one device stored in its current quota windows.
type deviceUse struct {
	hour, day useWindow
}

// useWindow counts the records and bytes stored since start.
type useWindow struct {
	start   time.Time
	records int
	bytes   int64
}

// current returns w, or an empty window if w ended before now.
func (w useWindow) current(length time.Duration, now time.Time) useWindow {
	if w.start.IsZero() || !now.Before(w.start.Add(length)) {
		return useWindow{}
	}
	return w
}

// add counts a record of size bytes at now, starting a new window if none
// is current.
func (w *useWindow) add(length time.Duration, now time.Time, size int64) {
	if *w = w.current(length, now); w.start.IsZero() {
		w.start = now
	}
	w.records++
	w.bytes += size
}

// quotas tracks deviceUse for the devices that stored records within the
// last day: state only for verified, admitted devices (it is created when a
// record is stored), dropped a day after its last record.
type quotas struct {
	limit Quota

	mu    sync.Mutex
	use   map[string]*deviceUse
	swept time.Time
}

func newQuotas(q Quota) *quotas {
	return &quotas{limit: q, use: map[string]*deviceUse{}}
}

// over returns how long device must wait before a record of size bytes
// fits its quotas: 0 if it fits now. what names the quota it is over.
func (qs *quotas) over(device string, size int64, now time.Time) (wait time.Duration, what string) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	u := qs.use[device]
	if u == nil {
		return 0, ""
	}
	for _, c := range []struct {
		w       useWindow
		length  time.Duration
		records int
		bytes   int64
		name    string
	}{
		{u.hour, quotaHour, qs.limit.RecordsPerHour, qs.limit.BytesPerHour, "an hour"},
		{u.day, quotaDay, qs.limit.RecordsPerDay, qs.limit.BytesPerDay, "a day"},
	} {
		w := c.w.current(c.length, now)
		if w.start.IsZero() {
			continue
		}
		var why string
		switch {
		case c.records >= 0 && w.records+1 > c.records:
			why = fmt.Sprintf("%d records %s", c.records, c.name)
		case c.bytes >= 0 && w.bytes+size > c.bytes:
			why = fmt.Sprintf("%d bytes %s", c.bytes, c.name)
		default:
			continue
		}
		if ends := w.start.Add(c.length).Sub(now); ends > wait {
			wait, what = ends, why
		}
	}
	return wait, what
}

// add counts a stored record of size bytes of device at now.
func (qs *quotas) add(device string, size int64, now time.Time) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if now.Sub(qs.swept) >= quotaHour {
		for d, u := range qs.use {
			if u.day.current(quotaDay, now).start.IsZero() {
				delete(qs.use, d)
			}
		}
		qs.swept = now
	}
	u := qs.use[device]
	if u == nil {
		u = &deviceUse{}
		qs.use[device] = u
	}
	u.hour.add(quotaHour, now, size)
	u.day.add(quotaDay, now, size)
}

// tracked returns the number of devices with quota state.
func (qs *quotas) tracked() int {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	return len(qs.use)
}

// checkQuota refuses a new record of size bytes of device if it is over one
// of its quotas: 429, reason quota, Retry-After the time until the window
// that refuses it ends.
func (s *Server) checkQuota(device string, size int64) error {
	wait, what := s.quotas.over(device, size, s.clk.Now())
	if wait <= 0 {
		return nil
	}
	wait = max(wait.Round(time.Second), time.Second)
	rej := reject(http.StatusTooManyRequests, ReasonQuota, "device %s is over its quota of %s; retry in %s", device, what, wait)
	rej.retryAfter = wait
	return rej
}

// DefaultBodyBudget is the default of Options.BodyBudget.
const DefaultBodyBudget = 32 << 20

// byteBudget bounds the bytes of upload bodies held at once, in all and
// from one source address (sourcePrefix), from the first byte read until
// the upload is answered.
type byteBudget struct {
	total, perAddr int64 // ≤ 0: no bound

	mu     sync.Mutex
	used   int64
	byAddr map[netip.Prefix]int64
}

func newByteBudget(total, perAddr int64) *byteBudget {
	return &byteBudget{total: total, perAddr: perAddr, byAddr: map[netip.Prefix]int64{}}
}

// take reserves n bytes for key if they fit both bounds.
func (b *byteBudget) take(key netip.Prefix, n int64) bool {
	if n <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.total > 0 && b.used+n > b.total || b.perAddr > 0 && b.byAddr[key]+n > b.perAddr {
		return false
	}
	b.used += n
	b.byAddr[key] += n
	return true
}

// give returns n bytes key took.
func (b *byteBudget) give(key netip.Prefix, n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	if b.byAddr[key] -= n; b.byAddr[key] <= 0 {
		delete(b.byAddr, key)
	}
}

// inUse returns the bytes held, in all and by key.
func (b *byteBudget) inUse(key netip.Prefix) (total, byKey int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.byAddr[key]
}
