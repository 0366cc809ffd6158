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

	mu      sync.Mutex
	windows map[netip.Prefix]*rateWindow
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
	u.mu.Lock()
	defer u.mu.Unlock()
	win := u.windows[key]
	if win == nil || !now.Before(win.start.Add(UploadRateWindow)) {
		if win == nil && len(u.windows) >= maxUploadRateAddrs {
			for k, o := range u.windows {
				if !now.Before(o.start.Add(UploadRateWindow)) {
					delete(u.windows, k)
				}
			}
			if len(u.windows) >= maxUploadRateAddrs {
				// Full of live windows: forget one rather than refuse
				// every new address.
				for k := range u.windows {
					delete(u.windows, k)
					break
				}
			}
		}
		win = &rateWindow{start: now}
		u.windows[key] = win
	}
	win.n++
	if win.n <= u.n {
		return 0, true
	}
	return win.start.Add(UploadRateWindow).Sub(now), false
}
