package receiver

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/provenance"
)

// clientFrom returns an HTTP client whose connections come from the local
// address ip (Linux routes all of 127/8 to the loopback interface).
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: time.Minute}
}

// dialFrom opens a TCP connection to addr from the local address ip.
func dialFrom(t *testing.T, ip, addr string) net.Conn {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startSlowBody sends an upload's header with Expect: 100-continue over c
// and waits for the 100 Continue, which the server sends once the handler
// reads the body; then it sends a few bytes of a body it never finishes.
func startSlowBody(t *testing.T, c net.Conn, host string) *bufio.Reader {
	t.Helper()
	req := "PUT /v1/events/slow/start HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(30 * time.Second)) // a hung server fails the test instead of hanging it
	line, err := br.ReadString('\n')
	if err != nil || !strings.Contains(line, " 100 ") {
		t.Fatalf("slow body: %q %v, want 100 Continue", line, err)
	}
	if _, err := br.ReadString('\n'); err != nil { // the blank line after the 100
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "\xa2"); err != nil {
		t.Fatal(err)
	}
	return br
}

// TestSlowBodiesHoldNoSlot is the slow-body attack: twice MaxInFlight upload
// bodies from 127.0.0.1 that are being read and never finish, while a
// legitimate client on 127.0.0.2 uploads records. The bodies are read
// before a verification slot is taken, so every legitimate record is
// stored (before, the 16 slow bodies held all 16 slots and it got 503).
func TestSlowBodiesHoldNoSlot(t *testing.T) {
	dir := t.TempDir()
	d := newDevice(t)
	if _, err := Enroll(dir, d.pem); err != nil {
		t.Fatal(err)
	}
	s := startServe(t, ServeConfig{Options: Options{Dir: dir, UploadGrace: time.Hour}, Listen: "127.0.0.1:0"})
	addr := strings.TrimSuffix(strings.TrimPrefix(s.url, "http://"), "/")
	const slow = 2 * DefaultMaxInFlight
	for range slow {
		startSlowBody(t, dialFrom(t, "127.0.0.1", addr), addr)
	}
	c := clientFrom("127.0.0.2")
	const records = 20
	stored := 0
	for i := range records {
		r := d.record(t, "ev-"+strconv.Itoa(i), provenance.KindStart, uint64(i+1))
		code, body := do(t, c, http.MethodPut, "http://"+addr+r.path(), r.body)
		if code != http.StatusCreated {
			t.Errorf("record %d with %d slow bodies open: %d %q, want 201", i+1, slow, code, body)
			continue
		}
		stored++
	}
	t.Logf("%d slow bodies open from 127.0.0.1: the client on 127.0.0.2 stored %d of %d records", slow, stored, records)
}

// TestSlowBodyCut: a body that arrives slower than MinUploadRate after
// UploadGrace, or pauses longer than UploadGrace after a fast start, is cut
// with 408 (which the agent retries), counted as
// slow_body, and holds nothing afterwards.
func TestSlowBodyCut(t *testing.T) {
	e := newEnv(t, Options{MinUploadRate: 1000, UploadGrace: 100 * time.Millisecond})
	addr := strings.TrimPrefix(e.hs.URL, "http://")
	for _, way := range []string{"stall", "trickle", "burst then stall"} {
		trickle := way == "trickle"
		c := dialFrom(t, "127.0.0.1", addr)
		br := startSlowBody(t, c, addr)
		if way == "burst then stall" {
			// 50,000 bytes at once earn 50 s at 1000 bytes a second; the
			// pause bound (UploadGrace) cuts the stall after them anyway.
			if _, err := c.Write(make([]byte, 50_000)); err != nil {
				t.Fatal(err)
			}
		}
		if trickle { // a byte every 20 ms: 50 bytes a second, below 1000
			go func() {
				for {
					time.Sleep(20 * time.Millisecond)
					if _, err := c.Write([]byte{0}); err != nil {
						return
					}
				}
			}()
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", way, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Errorf("%s: %d, want 408", way, resp.StatusCode)
		}
		c.Close()
	}
	if n := e.srv.Stats().Rejected[ReasonSlowBody]; n != 3 {
		t.Errorf("slow_body refusals %d, want 3", n)
	}
	// A body at full speed is stored as ever.
	d := newDevice(t)
	e.enroll(d, "alice")
	e.mustUpload(d.record(t, "ev-1", provenance.KindStart, 1), http.StatusCreated)
}

// TestConnectionFloodFromOneAddress is the descriptor-exhaustion attack:
// one source address (127.0.0.1) opens far more connections than
// MaxConnsPerAddr and holds them; Serve closes every one over the cap at
// once, and a legitimate client on 127.0.0.2 connects and stores.
func TestConnectionFloodFromOneAddress(t *testing.T) {
	dir := t.TempDir()
	d := newDevice(t)
	if _, err := Enroll(dir, d.pem); err != nil {
		t.Fatal(err)
	}
	const perAddr, flood = 8, 200
	s := startServe(t, ServeConfig{Options: Options{Dir: dir}, Listen: "127.0.0.1:0", MaxConnsPerAddr: perAddr, MaxConns: 64})
	addr := strings.TrimSuffix(strings.TrimPrefix(s.url, "http://"), "/")
	conns := make([]net.Conn, flood)
	for i := range conns {
		conns[i] = dialFrom(t, "127.0.0.1", addr)
	}
	c := clientFrom("127.0.0.2")
	for i := range 5 {
		r := d.record(t, "ev-"+strconv.Itoa(i), provenance.KindStart, uint64(i+1))
		if code, body := do(t, c, http.MethodPut, "http://"+addr+r.path(), r.body); code != http.StatusCreated {
			t.Fatalf("record %d during the flood: %d %q, want 201", i+1, code, body)
		}
	}
	// The connections over the cap were closed by the server: a read
	// ends at once (EOF or reset); those within it stay open until
	// ReadHeaderTimeout, longer than the deadline below.
	closed := 0
	for _, conn := range conns {
		conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err := conn.Read(make([]byte, 1))
		if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		closed++
	}
	if closed != flood-perAddr {
		t.Errorf("%d of %d connections from one address closed by the server, want %d (cap %d)", closed, flood, flood-perAddr, perAddr)
	}
	t.Logf("%d connections from 127.0.0.1: %d closed at once, %d held; the client on 127.0.0.2 stored 5 of 5", flood, closed, flood-closed)
}

// TestConnLimitTotal: over MaxConns in all a connection is closed at once,
// whatever its address; a place freed is taken again.
func TestConnLimitTotal(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newConnLimit(raw, 4, 2, nil)
	defer l.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	addr := raw.Addr().String()
	var held []net.Conn
	for _, ip := range []string{"127.0.0.1", "127.0.0.1", "127.0.0.3", "127.0.0.3"} {
		dialFrom(t, ip, addr)
		held = append(held, <-accepted)
	}
	late := dialFrom(t, "127.0.0.2", addr)
	late.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := late.Read(make([]byte, 1)); err == nil {
		t.Fatal("a fifth connection over MaxConns 4 was not closed")
	}
	if total, from := l.live(sourcePrefix("127.0.0.1:1")); total != 4 || from != 2 {
		t.Errorf("%d live, %d from 127.0.0.1; want 4 and 2", total, from)
	}
	held[0].Close()
	dialFrom(t, "127.0.0.2", addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	select {
	case c := <-accepted:
		c.Close()
	case <-ctx.Done():
		t.Fatal("a place freed was not taken again")
	}
	if total, from := l.live(sourcePrefix("127.0.0.1:1")); total != 3 || from != 1 {
		t.Errorf("after two closes: %d live, %d from 127.0.0.1; want 3 and 1", total, from)
	}
}

// TestUploadRatePerAddr: over UploadsPerAddr uploads a window from one
// address are answered 429 with Retry-After (the end of the window), before
// the body is read; another address is not affected, and the next window
// lets the first one in again.
func TestUploadRatePerAddr(t *testing.T) {
	dir := t.TempDir()
	d := newDevice(t)
	if _, err := Enroll(dir, d.pem); err != nil {
		t.Fatal(err)
	}
	clk := &stepClock{t: testNow}
	s := startServe(t, ServeConfig{Options: Options{Dir: dir, Clock: clk}, Listen: "127.0.0.1:0", UploadsPerAddr: 3})
	base := strings.TrimSuffix(s.url, "/")
	seq := uint64(0)
	put := func(c *http.Client) (int, http.Header) {
		seq++
		r := d.record(t, "ev-"+strconv.FormatUint(seq, 10), provenance.KindStart, seq)
		req, err := http.NewRequest(http.MethodPut, base+r.path(), strings.NewReader(string(r.body)))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header
	}
	a, b := clientFrom("127.0.0.1"), clientFrom("127.0.0.2")
	for i := range 3 {
		if code, _ := put(a); code != http.StatusCreated {
			t.Fatalf("upload %d from 127.0.0.1: %d, want 201", i+1, code)
		}
	}
	clk.add(20 * time.Second)
	code, h := put(a)
	if code != http.StatusTooManyRequests || h.Get("Retry-After") != "40" {
		t.Fatalf("fourth upload from 127.0.0.1: %d Retry-After %q, want 429 and 40", code, h.Get("Retry-After"))
	}
	seq-- // not stored: send that seq again
	if code, _ := put(b); code != http.StatusCreated {
		t.Fatalf("upload from 127.0.0.2: %d, want 201", code)
	}
	clk.add(40 * time.Second)
	if code, _ := put(a); code != http.StatusCreated {
		t.Fatalf("upload from 127.0.0.1 in the next window: %d, want 201", code)
	}
}

// TestWindowsFullForgetOldest: the per-address windows, full of live ones
// (an attacker's many prefixes), forget the oldest for a new address, which
// is counted from 1 and not refused; ended windows go first.
func TestWindowsFullForgetOldest(t *testing.T) {
	ws := newWindows(time.Minute, 3)
	now := testNow
	for i := range 3 {
		ws.count(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 32), now.Add(time.Duration(i)*time.Second))
	}
	fresh := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, 1}), 32)
	if n, _ := ws.count(fresh, now.Add(5*time.Second)); n != 1 {
		t.Errorf("a new address in full windows: count %d, want 1", n)
	}
	if len(ws.m) != 3 {
		t.Errorf("%d windows, want the bound 3", len(ws.m))
	}
	if _, ok := ws.m[netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, 0}), 32)]; ok {
		t.Error("the oldest window was kept")
	}
	// After a minute every window has ended: all dropped for the next one.
	ws.count(netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, 2}), 32), now.Add(2*time.Minute))
	if n, _ := ws.count(fresh, now.Add(2*time.Minute)); n != 1 || len(ws.m) != 2 {
		t.Errorf("after the windows ended: count %d, %d windows; want 1 and 2", n, len(ws.m))
	}
}
