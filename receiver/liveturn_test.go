package receiver

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"github.com/keyframe-cam/keyframe/internal/livestream"
)

// TestLiveTURN: the relay allocates for the credentials the receiver hands
// out (the owner's page, the camera at an offer), and refuses a wrong
// password, an expired username and a username the receiver never made.
// Only alice's page carries credentials; bob gets no page.
func TestLiveTURN(t *testing.T) {
	clk := &stepClock{t: time.Now()}
	e := newEnv(t, Options{Clock: clk, Live: LiveOptions{TURN: TURNOptions{Listen: "127.0.0.1:0", RelayIP: net.IPv4(127, 0, 0, 1)}}})
	a := newDevice(t)
	e.enroll(a, "alice")
	e.account("alice", RoleOwner)
	e.account("bob", RoleOwner)
	alice, err := e.srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := e.srv.NewSession("bob")
	if err != nil {
		t.Fatal(err)
	}
	resp, page := e.rawReq(http.MethodGet, "/live/"+a.id, "", nil, alice)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("alice's live page: %d", resp.StatusCode)
	}
	_, i, ok := strings.Cut(string(page), `data-ice="`)
	if !ok {
		t.Fatalf("alice's live page has no ICE servers:\n%s", page)
	}
	raw, _, _ := strings.Cut(i, `"`)
	var ic livestream.ICEConfig
	if err := json.Unmarshal([]byte(strings.ReplaceAll(raw, "&#34;", `"`)), &ic); err != nil || len(ic.Servers) != 1 || ic.Policy != "all" {
		t.Fatalf("the page's ICE configuration %q: %+v %v", raw, ic, err)
	}
	srv := ic.Servers[0]
	if !strings.HasPrefix(srv.URLs[0], "turn:127.0.0.1:") || !strings.HasSuffix(srv.Username, ":"+e.srv.live.turnOwner("alice")) {
		t.Errorf("the page's TURN server %+v", srv)
	}
	if strings.Contains(srv.Username, "alice") || e.srv.live.turnOwner("alice") == e.srv.live.turnOwner("bob") {
		t.Errorf("the TURN username %q names the account (it travels in the clear), or two owners share a holder", srv.Username)
	}
	if resp, body := e.rawReq(http.MethodGet, "/live/"+a.id, "", nil, bob); resp.StatusCode != http.StatusNotFound || strings.Contains(string(body), "turn:") {
		t.Errorf("bob's view of alice's live page: %d, with TURN credentials: %v", resp.StatusCode, strings.Contains(string(body), "turn:"))
	}
	addr := strings.TrimSuffix(strings.TrimPrefix(srv.URLs[0], "turn:"), "?transport=udp")
	allocate := func(user, pass string) error {
		conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: addr, TURNServerAddr: addr, Username: user, Password: pass, Realm: turnRealm, Conn: conn, RTO: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Listen(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		relay, err := c.AllocateWithContext(ctx)
		if err == nil {
			relay.Close()
		}
		return err
	}
	if err := allocate(srv.Username, srv.Credential); err != nil {
		t.Errorf("the page's credentials: %v", err)
	}
	if err := allocate(srv.Username, srv.Credential+"x"); err == nil {
		t.Errorf("a wrong password allocated")
	}
	if err := allocate("9999999999:o-alice", srv.Credential); err == nil {
		t.Errorf("a username of another expiry allocated with alice's password")
	}
	expired := e.srv.live.iceConfig("o-alice", "127.0.0.1").Servers[0]
	clk.add(DefaultLiveMaxTime + 2*time.Minute)
	if err := allocate(expired.Username, expired.Credential); err == nil {
		t.Errorf("expired credentials allocated")
	}
}

// turnTestClient is a TURN client of the relay at addr as who, with a
// UDP allocation (relay) unless the relay refuses it (err).
func turnTestClient(t *testing.T, e *testEnv, who string) (c *turn.Client, relay net.PacketConn, err error) {
	t.Helper()
	srv := e.srv.live.iceConfig(who, "127.0.0.1").Servers[0]
	addr := strings.TrimSuffix(strings.TrimPrefix(srv.URLs[0], "turn:"), "?transport=udp")
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c, err = turn.NewClient(&turn.ClientConfig{STUNServerAddr: addr, TURNServerAddr: addr, Username: srv.Username, Password: srv.Credential, Realm: turnRealm, Conn: conn, RTO: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	relay, err = c.AllocateWithContext(ctx)
	if err == nil {
		t.Cleanup(func() { relay.Close() })
	}
	return c, relay, err
}

func turnTestEnv(t *testing.T, opt TURNOptions) *testEnv {
	opt.Listen, opt.RelayIP = "127.0.0.1:0", net.IPv4(127, 0, 0, 1)
	return newEnv(t, Options{Live: LiveOptions{TURN: opt}})
}

// TestLiveTURNPeerFilter: an owner's credentials cannot make the relay a
// proxy into the receiver's network: permissions for private, shared,
// loopback (other than RelayIP), reserved and broadcast addresses are
// refused, a public address and RelayIP (relay to relay) are granted;
// sends to RelayIP reach a live allocation's relay port but not another
// port on the host (a UDP service on 127.0.0.1, the TURN port).
func TestLiveTURNPeerFilter(t *testing.T) {
	e := turnTestEnv(t, TURNOptions{})
	c, relay, err := turnTestClient(t, e, "o-alice")
	if err != nil {
		t.Fatalf("alice's allocation: %v", err)
	}
	for _, p := range []string{"10.0.0.1", "192.168.1.1", "172.16.0.1", "100.64.0.1", "127.0.0.2", "0.0.0.1", "255.255.255.255", "240.0.0.1", "169.254.169.254", "224.0.0.1"} {
		if err := c.CreatePermission(&net.UDPAddr{IP: net.ParseIP(p), Port: 9}); err == nil {
			t.Errorf("a permission for %s was granted", p)
		}
	}
	for _, p := range []string{"203.0.113.1", "127.0.0.1"} {
		if err := c.CreatePermission(&net.UDPAddr{IP: net.ParseIP(p), Port: 9}); err != nil {
			t.Errorf("a permission for %s: %v", p, err)
		}
	}

	// A service on the relay's host, and another allocation: the relay
	// handles alice's sends in order, so once bob's relay has the second
	// packet the first would already be in the service's socket.
	svc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	_, bob, err := turnTestClient(t, e, "o-bob")
	if err != nil {
		t.Fatalf("bob's allocation: %v", err)
	}
	if err := c.CreatePermission(bob.LocalAddr()); err != nil {
		t.Fatalf("a permission for bob's relay: %v", err)
	}
	if _, err := relay.WriteTo([]byte("to the service"), svc.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	// bob lets alice's relay in, then alice sends.
	if _, err := bob.WriteTo([]byte("hello"), relay.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if _, err := relay.WriteTo([]byte("to bob"), bob.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_ = bob.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := bob.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "to bob" {
		t.Fatalf("relay to relay: %q from %v, %v", buf[:n], from, err)
	}
	_ = svc.SetReadDeadline(time.Now().Add(200 * time.Millisecond)) // the packet, if sent, is in its buffer already
	if n, from, err := svc.ReadFrom(buf); err == nil {
		t.Errorf("the relay sent %q from %v to a service on its host", buf[:n], from)
	}

	turnPort := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(e.srv.live.turn.port))
	if e.srv.live.turn.peer(turnPort) {
		t.Errorf("the relay would send to its own TURN port %v", turnPort)
	}
	bobPort := bob.LocalAddr().(*net.UDPAddr).AddrPort()
	if !e.srv.live.turn.peer(bobPort) {
		t.Errorf("the relay would not send to bob's relay port %v", bobPort)
	}
}

// TestLiveTURNPeerFilterIPs: the permission rule on addresses either
// family, without and with AllowPrivatePeers.
func TestLiveTURNPeerFilterIPs(t *testing.T) {
	strict := turnTestEnv(t, TURNOptions{}).srv.live.turn
	lan := turnTestEnv(t, TURNOptions{AllowPrivatePeers: true}).srv.live.turn
	for _, c := range []struct {
		ip          string
		strict, lan bool
	}{
		{"203.0.113.1", true, true},
		{"2001:db8::1", true, true},
		{"127.0.0.1", true, true}, // RelayIP
		{"::ffff:127.0.0.1", true, true},
		{"10.0.0.1", false, true},
		{"::ffff:10.0.0.1", false, true},
		{"172.16.0.1", false, true},
		{"192.168.1.1", false, true},
		{"100.64.0.1", false, true},
		{"127.0.0.2", false, true},
		{"::1", false, true},
		{"fc00::1", false, true},
		{"fd12::1", false, true},
		{"64:ff9b::a00:1", false, true},
		{"64:ff9b:1::1", false, true},
		{"0.0.0.0", false, false},
		{"0.1.2.3", false, false},
		{"255.255.255.255", false, false},
		{"240.0.0.1", false, false},
		{"224.0.0.1", false, false},
		{"169.254.169.254", false, false},
		{"fe80::1", false, false},
		{"ff02::1", false, false},
		{"::", false, false},
	} {
		ip := netip.MustParseAddr(c.ip).Unmap()
		if got := strict.peerIP(ip); got != c.strict {
			t.Errorf("%s: permission %v, want %v", c.ip, got, c.strict)
		}
		if got := lan.peerIP(ip); got != c.lan {
			t.Errorf("%s with AllowPrivatePeers: permission %v, want %v", c.ip, got, c.lan)
		}
	}
	// Sends to the host itself: the TURN port never; other ports only
	// with AllowPrivatePeers (no relay port is live here).
	for _, s := range []*liveTURN{strict, lan} {
		turnPort := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(s.port))
		if s.peer(turnPort) {
			t.Errorf("AllowPrivatePeers %v: the relay would send to its TURN port", s.opt.AllowPrivatePeers)
		}
		other := netip.MustParseAddrPort("127.0.0.1:53")
		if got := s.peer(other); got != s.opt.AllowPrivatePeers {
			t.Errorf("AllowPrivatePeers %v: sending to %v allowed: %v", s.opt.AllowPrivatePeers, other, got)
		}
	}
	if !lan.peer(netip.MustParseAddrPort("10.0.0.1:5000")) || strict.peer(netip.MustParseAddrPort("10.0.0.1:5000")) {
		t.Errorf("sending to 10.0.0.1:5000: strict %v, with AllowPrivatePeers %v", strict.peer(netip.MustParseAddrPort("10.0.0.1:5000")), lan.peer(netip.MustParseAddrPort("10.0.0.1:5000")))
	}
}

// TestLiveTURNNoTCP: the relay makes no TCP allocations (RFC 6062).
func TestLiveTURNNoTCP(t *testing.T) {
	g := &turnRelays{t: turnTestEnv(t, TURNOptions{}).srv.live.turn}
	if ln, _, err := g.AllocateListener(turn.AllocateListenerConfig{Network: "tcp4"}); err == nil {
		ln.Close()
		t.Errorf("a TCP relay listener was made")
	}
	if conn, err := g.AllocateConn(turn.AllocateConnConfig{Network: "tcp4"}); err == nil {
		conn.Close()
		t.Errorf("a TCP relay connection was made")
	}
}

// TestLiveTURNUserQuota: one holder's credentials get at most
// MaxUserAllocations (4) allocations at once; another owner still gets
// one; a freed allocation makes room again.
func TestLiveTURNUserQuota(t *testing.T) {
	e := turnTestEnv(t, TURNOptions{})
	var relays []net.PacketConn
	for i := range 4 {
		_, r, err := turnTestClient(t, e, "o-alice")
		if err != nil {
			t.Fatalf("alice's allocation %d: %v", i+1, err)
		}
		relays = append(relays, r)
	}
	if _, _, err := turnTestClient(t, e, "o-alice"); err == nil {
		t.Errorf("alice's 5th allocation was made")
	}
	if _, _, err := turnTestClient(t, e, "o-bob"); err != nil {
		t.Errorf("bob's allocation next to alice's four: %v", err)
	}
	if n := e.srv.live.turnAllocations(); n != 5 {
		t.Errorf("%d allocations, want 5", n)
	}
	relays[0].Close() // deallocates (a refresh to lifetime 0)
	if _, _, err := turnTestClient(t, e, "o-alice"); err != nil {
		t.Errorf("alice's allocation after freeing one: %v", err)
	}
}
