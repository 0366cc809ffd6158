package receiver

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keyframe-cam/keyframe/internal/clock"
)

// Defaults of the limits Serve puts in front of the Server (ServeConfig).
const (
	// DefaultMaxConns is the default of ServeConfig.MaxConns.
	DefaultMaxConns = 1024
	// DefaultMaxConnsPerAddr is the default of ServeConfig.MaxConnsPerAddr.
	DefaultMaxConnsPerAddr = 32
	// DefaultUploadsPerAddr is the default of ServeConfig.UploadsPerAddr:
	// upload requests of one source address per UploadRateWindow.
	DefaultUploadsPerAddr = 600
	// UploadRateWindow is the window of ServeConfig.UploadsPerAddr.
	UploadRateWindow = time.Minute
	// maxUploadRateAddrs bounds the addresses an uploadRate tracks at once.
	maxUploadRateAddrs = 65536
)

// sourcePrefix is the limit key of a source address (host:port or host):
// its IP, an IPv6 address by its /64 (one host can hold a whole /64). An
// address that does not parse is the zero Prefix, one key for all of them.
func sourcePrefix(addr string) netip.Prefix {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}
	}
	ip = ip.Unmap()
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, _ := ip.WithZone("").Prefix(64)
	return p
}

// connLimit is a net.Listener that closes, at once, a connection accepted
// over max live connections in all or over perAddr from one source address
// (sourcePrefix): one client cannot take the descriptors the others need.
type connLimit struct {
	net.Listener
	max, perAddr int
	onRefuse     func(remote net.Addr, total bool) // nil: nothing

	mu     sync.Mutex
	total  int
	byAddr map[netip.Prefix]int
}

func newConnLimit(ln net.Listener, max, perAddr int, onRefuse func(net.Addr, bool)) *connLimit {
	return &connLimit{Listener: ln, max: max, perAddr: perAddr, onRefuse: onRefuse, byAddr: map[netip.Prefix]int{}}
}

// Accept returns the next connection within the limits, closing those over
// them.
func (l *connLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := sourcePrefix(c.RemoteAddr().String())
		l.mu.Lock()
		overTotal := l.max > 0 && l.total >= l.max
		overAddr := l.perAddr > 0 && l.byAddr[key] >= l.perAddr
		if !overTotal && !overAddr {
			l.total++
			l.byAddr[key]++
		}
		l.mu.Unlock()
		if overTotal || overAddr {
			c.Close()
			if l.onRefuse != nil {
				l.onRefuse(c.RemoteAddr(), overTotal)
			}
			continue
		}
		return &limitedConn{Conn: c, l: l, key: key}, nil
	}
}

// live returns the connections counted now, in all and from key.
func (l *connLimit) live(key netip.Prefix) (total, fromKey int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, l.byAddr[key]
}

// limitedConn gives its place back when closed (once).
type limitedConn struct {
	net.Conn
	l    *connLimit
	key  netip.Prefix
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.total--
		if c.l.byAddr[c.key]--; c.l.byAddr[c.key] <= 0 {
			delete(c.l.byAddr, c.key)
		}
		c.l.mu.Unlock()
	})
	return err
}

// uploadRate limits the upload requests (PUT /v1/events/...) of each source
// address to n per UploadRateWindow; more are answered 429 with Retry-After
// (the agent keeps the record and retries it). The signature that
// authenticates an upload is checked after the limit, so it costs an
// unauthenticated client nothing to be counted.
type uploadRate struct {
	next http.Handler
	n    int
	clk  clock.Clock
	log  func(remote string)

	windows *windows
}

func (u *uploadRate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/v1/events/") {
		if wait, ok := u.allow(sourcePrefix(r.RemoteAddr), u.clk.Now()); !ok {
			if u.log != nil {
				u.log(r.RemoteAddr)
			}
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int((wait+time.Second-1)/time.Second))))
			w.Header().Set("Connection", "close") // the body is not read
			writeLine(w, http.StatusTooManyRequests, "too many uploads from this address, retry later")
			return
		}
	}
	u.next.ServeHTTP(w, r)
}

// allow counts a request of key at now: within the limit, or how long until
// its window ends.
func (u *uploadRate) allow(key netip.Prefix, now time.Time) (time.Duration, bool) {
	n, ends := u.windows.count(key, now)
	if n <= u.n {
		return 0, true
	}
	return ends.Sub(now), false
}

// windows counts the requests of each source prefix in fixed windows of a
// length: the per-address rate limits of uploads and of claim requests. It
// is bounded: when full of live windows it forgets the oldest rather than
// refuse every new address (one client with many prefixes must not lock
// out the rest).
type windows struct {
	length time.Duration
	size   int

	mu sync.Mutex
	m  map[netip.Prefix]*rateWindow
}

// rateWindow counts the requests of one prefix since start.
type rateWindow struct {
	start time.Time
	n     int
}

func newWindows(length time.Duration, size int) *windows {
	return &windows{length: length, size: size, m: map[netip.Prefix]*rateWindow{}}
}

// count counts a request of key at now and returns the requests of key in
// its window so far (this one included) and when the window ends.
func (ws *windows) count(key netip.Prefix, now time.Time) (n int, ends time.Time) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.m[key]
	if w == nil || !now.Before(w.start.Add(ws.length)) {
		if w == nil && len(ws.m) >= ws.size {
			ws.makeRoomLocked(now)
		}
		w = &rateWindow{start: now}
		ws.m[key] = w
	}
	w.n++
	return w.n, w.start.Add(ws.length)
}

// makeRoomLocked drops the ended windows and, if none has ended, the
// oldest. Callers hold mu.
func (ws *windows) makeRoomLocked(now time.Time) {
	var oldest netip.Prefix
	var at time.Time
	for k, w := range ws.m {
		if !now.Before(w.start.Add(ws.length)) {
			delete(ws.m, k)
		} else if at.IsZero() || w.start.Before(at) {
			oldest, at = k, w.start
		}
	}
	if len(ws.m) >= ws.size {
		delete(ws.m, oldest)
	}
}
