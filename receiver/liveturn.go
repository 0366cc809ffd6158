package receiver

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v5"

	"github.com/keyframe-cam/keyframe/internal/livestream"
)

// The WebRTC live view's relay (docs/live.md, "WebRTC"): when the browser
// cannot reach the camera (the camera behind NAT, the browser elsewhere),
// media flows through a TURN server the receiver runs (pion/turn). The
// relay carries DTLS-SRTP packets it cannot read: the DTLS session is the
// browser's and the camera's, whose fingerprint the camera signs. Only a
// signed-in owner (on the live page) and a proven camera (with an offer at
// its wait) get credentials, valid for LiveOptions.MaxTime and a minute:
// "EXPIRY:WHO", the password an HMAC-SHA-256 of it under a key the
// receiver draws at start.
//
// The relay is no open proxy into the receiver's network: it relays UDP
// only (TCP allocations are refused), grants permissions to public
// addresses only (never unspecified, 0.0.0.0/8, 240.0.0.0/4 with the
// broadcast address, multicast or link-local; nor, without
// AllowPrivatePeers, loopback, private, 100.64.0.0/10 or NAT64
// 64:ff9b::/96, 64:ff9b:1::/48), never sends to its own TURN port, and
// sends to RelayIP only at the ports of its own live allocations (relay to
// relay, both ends on this relay), not to other services on the host
// (unless AllowPrivatePeers).
// Allocations are bounded at once overall and per credential holder (an
// owner's pages, a camera).

// TURNOptions configure the relay; without Listen there is none.
type TURNOptions struct {
	// Listen is the relay's UDP address, e.g. ":3478".
	Listen string
	// RelayIP is the address peers send relayed media to: the receiver's
	// address as browsers and cameras reach it. Required with Listen.
	RelayIP net.IP
	// Host is the host name or address in the turn: URL given out; ""
	// means the host name the page's or camera's request named.
	Host string
	// RelayOnly makes both ends use the relay only (ICE transport policy
	// "relay"): media always through the receiver, the cameras' and
	// browsers' addresses never shown to each other.
	RelayOnly bool
	// MaxAllocations bounds the relay's allocations at once; 0: 64.
	MaxAllocations int
	// MaxUserAllocations bounds one credential holder's allocations at
	// once (an owner's live pages together, or one camera); 0: 4.
	MaxUserAllocations int
	// AllowPrivatePeers lets the relay send to loopback, private
	// (10/8, 172.16/12, 192.168/16, fc00::/7), shared (100.64.0.0/10)
	// and NAT64 addresses, and to any port but the TURN port on RelayIP:
	// for a LAN-only deployment or tests. Without it the relay sends to
	// RelayIP only at its own allocations' relay ports, and to no other
	// such address.
	AllowPrivatePeers bool
}

// turnRealm is the relay's realm.
const turnRealm = "keyframe"

// liveTURN is the running relay.
type liveTURN struct {
	opt TURNOptions
	// srv is set once turn.NewServer returned; its read loop runs (and
	// may call the quota handler) before that.
	srv   atomic.Pointer[turn.Server]
	port  int
	key   [32]byte
	relay netip.Addr // RelayIP, unmapped
	// deny are peers never relayed to; private those relayed to only
	// with AllowPrivatePeers (besides loopback and IsPrivate).
	deny, private []netip.Prefix

	mu    sync.Mutex
	users map[string]int // allocations at once by credential holder
	ports map[int]bool   // the live allocations' relay ports
}

// startTURN starts the relay when opt says so (nil, nil otherwise).
func (h *liveHub) startTURN(opt TURNOptions, log *slog.Logger) (*liveTURN, error) {
	if opt.Listen == "" {
		return nil, nil
	}
	if opt.RelayIP == nil {
		return nil, fmt.Errorf("receiver: TURN relay on %s: no relay IP (the receiver's address as peers reach it)", opt.Listen)
	}
	relay, ok := netip.AddrFromSlice(opt.RelayIP)
	if !ok {
		return nil, fmt.Errorf("receiver: TURN relay on %s: relay IP %v is no IP address", opt.Listen, opt.RelayIP)
	}
	if opt.MaxAllocations <= 0 {
		opt.MaxAllocations = 64
	}
	if opt.MaxUserAllocations <= 0 {
		opt.MaxUserAllocations = 4
	}
	pc, err := net.ListenPacket("udp", opt.Listen)
	if err != nil {
		return nil, fmt.Errorf("receiver: TURN relay: %w", err)
	}
	t := &liveTURN{
		opt: opt, port: pc.LocalAddr().(*net.UDPAddr).Port, relay: relay.Unmap(),
		deny: []netip.Prefix{
			netip.MustParsePrefix("0.0.0.0/8"),   // "this network"
			netip.MustParsePrefix("240.0.0.0/4"), // reserved, 255.255.255.255
		},
		private: []netip.Prefix{
			netip.MustParsePrefix("100.64.0.0/10"),  // shared (carrier-grade NAT)
			netip.MustParsePrefix("64:ff9b::/96"),   // NAT64 to any IPv4 address
			netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
		},
		users: map[string]int{},
		ports: map[int]bool{},
	}
	copy(t.key[:], h.key[:]) // the nonces' key serves: the MAC input differs
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm: turnRealm,
		AuthHandler: func(ra *turn.RequestAttributes) (string, []byte, bool) {
			if !t.valid(ra.Username, h.clk.Now()) {
				log.Info("receiver: TURN request refused", "username", clip(ra.Username), "remote", ra.SrcAddr)
				return "", nil, false
			}
			return ra.Username, turn.GenerateAuthKey(ra.Username, ra.Realm, t.password(ra.Username)), true
		},
		QuotaHandler: func(username, _ string, src net.Addr) bool {
			srv := t.srv.Load()
			if srv == nil {
				return false // still starting: the client asks again
			}
			if n := srv.AllocationCount(); n >= opt.MaxAllocations {
				log.Warn("receiver: TURN allocation refused: the relay is full", "allocations", n, "remote", src)
				return false
			}
			who := turnWho(username)
			t.mu.Lock()
			n := t.users[who]
			t.mu.Unlock()
			if n >= opt.MaxUserAllocations {
				log.Warn("receiver: TURN allocation refused: too many for one holder", "who", clip(who), "allocations", n, "remote", src)
				return false
			}
			return true
		},
		// Allocations are made and deleted on the relay's read loop and
		// timers; the quota counts them by holder.
		EventHandler: turn.EventHandler{
			OnAllocationCreated: func(_, _ net.Addr, _, username, _ string, _ net.Addr, _ int) {
				t.mu.Lock()
				t.users[turnWho(username)]++
				t.mu.Unlock()
			},
			OnAllocationDeleted: func(_, _ net.Addr, _, username, _ string) {
				who := turnWho(username)
				t.mu.Lock()
				if t.users[who]--; t.users[who] <= 0 {
					delete(t.users, who)
				}
				t.mu.Unlock()
			},
		},
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn:            pc,
			RelayAddressGenerator: &turnRelays{t: t, static: turn.RelayAddressGeneratorStatic{RelayAddress: opt.RelayIP, Address: "0.0.0.0"}},
			PermissionHandler: func(_ net.Addr, peer net.IP) bool {
				ip, ok := netip.AddrFromSlice(peer)
				return ok && t.peerIP(ip.Unmap())
			},
		}},
	})
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("receiver: TURN relay: %w", err)
	}
	t.srv.Store(srv)
	log.Info("receiver: TURN relay for the WebRTC live view", "listen", pc.LocalAddr().String(), "relay_ip", opt.RelayIP.String(), "relay_only", opt.RelayOnly)
	return t, nil
}

// turnWho is the holder a relay username names ("EXPIRY:WHO").
func turnWho(username string) string {
	_, who, _ := strings.Cut(username, ":")
	return who
}

// peerIP reports whether the relay grants a permission for ip (unmapped):
// RelayIP always (sending there is bounded by peer to the relay ports),
// otherwise public addresses, and private ones with AllowPrivatePeers.
func (t *liveTURN) peerIP(ip netip.Addr) bool {
	if ip == t.relay {
		return true
	}
	if !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsLinkLocalUnicast() {
		return false
	}
	for _, p := range t.deny {
		if p.Contains(ip) {
			return false
		}
	}
	if t.opt.AllowPrivatePeers {
		return true
	}
	if ip.IsLoopback() || ip.IsPrivate() {
		return false
	}
	for _, p := range t.private {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// peer reports whether the relay sends to a: a permitted address, never
// the TURN port on RelayIP or loopback, and there (the receiver's host)
// only a live allocation's relay port unless AllowPrivatePeers.
func (t *liveTURN) peer(a netip.AddrPort) bool {
	ip := a.Addr().Unmap()
	if !t.peerIP(ip) {
		return false
	}
	if ip != t.relay && !ip.IsLoopback() {
		return true
	}
	if a.Port() == uint16(t.port) {
		return false
	}
	if t.opt.AllowPrivatePeers {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ports[int(a.Port())]
}

// errTURNTCP refuses TCP allocations (RFC 6062): the live view relays UDP.
var errTURNTCP = errors.New("receiver: TURN relay: TCP allocations are refused")

// turnRelays makes the relay's allocations: UDP sockets on RelayIP whose
// sends go only to peers t allows, and whose ports t knows while open.
type turnRelays struct {
	t      *liveTURN
	static turn.RelayAddressGeneratorStatic
}

func (g *turnRelays) Validate() error { return g.static.Validate() }

func (g *turnRelays) AllocatePacketConn(c turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	pc, addr, err := g.static.AllocatePacketConn(c)
	if err != nil {
		return nil, nil, err
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		pc.Close()
		return nil, nil, fmt.Errorf("receiver: TURN relay: relay address %v is not UDP", addr)
	}
	g.t.mu.Lock()
	g.t.ports[ua.Port] = true
	g.t.mu.Unlock()
	return &turnRelayConn{PacketConn: pc, t: g.t, port: ua.Port}, addr, nil
}

func (g *turnRelays) AllocateListener(turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	return nil, nil, errTURNTCP
}

func (g *turnRelays) AllocateConn(turn.AllocateConnConfig) (net.Conn, error) {
	return nil, errTURNTCP
}

// turnRelayConn is an allocation's relay socket.
type turnRelayConn struct {
	net.PacketConn
	t    *liveTURN
	port int
	once sync.Once
}

// WriteTo sends p to addr if the relay allows addr as a peer.
func (c *turnRelayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok || !c.t.peer(ua.AddrPort()) {
		return 0, fmt.Errorf("receiver: TURN relay: peer %v refused", addr)
	}
	return c.PacketConn.WriteTo(p, addr)
}

// Close forgets the relay port before the socket frees it for reuse.
func (c *turnRelayConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.ports, c.port)
		c.t.mu.Unlock()
	})
	return c.PacketConn.Close()
}

func (t *liveTURN) close() {
	if t != nil {
		_ = t.srv.Load().Close()
	}
}

// password is a username's password.
func (t *liveTURN) password(username string) string {
	m := hmac.New(sha256.New, t.key[:])
	m.Write([]byte("keyframe turn v1\x00"))
	m.Write([]byte(username))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:18])
}

// turnOwner is the relay's holder name for an owner's pages: "o-" and 16
// characters of a MAC of the account name, not the name, which would
// travel in the clear in every TURN request (STUN's USERNAME) and sit in
// the relay's logs. One owner's pages share it (MaxUserAllocations).
func (h *liveHub) turnOwner(account string) string {
	m := hmac.New(sha256.New, h.key[:])
	m.Write([]byte("keyframe turn owner v1\x00"))
	m.Write([]byte(account))
	return "o-" + base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:12])
}

// valid reports whether username is one of the relay's, unexpired.
func (t *liveTURN) valid(username string, now time.Time) bool {
	exp, who, ok := strings.Cut(username, ":")
	n, err := strconv.ParseInt(exp, 10, 64)
	return ok && err == nil && who != "" && len(username) <= 128 && now.Unix() <= n
}

// config is the ICE configuration for who (an owner's page, a camera)
// reaching the receiver as host (a request's Host); nil without a relay.
func (h *liveHub) iceConfig(who, host string) *livestream.ICEConfig {
	t := h.turn
	if t == nil {
		return nil
	}
	if t.opt.Host != "" {
		host = t.opt.Host
	} else if hn, _, err := net.SplitHostPort(host); err == nil {
		host = hn
	}
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]"
	}
	user := strconv.FormatInt(h.clk.Now().Add(h.opt.MaxTime+time.Minute).Unix(), 10) + ":" + who
	policy := "all"
	if t.opt.RelayOnly {
		policy = "relay"
	}
	return &livestream.ICEConfig{Policy: policy, Servers: []livestream.ICEServer{{
		URLs:     []string{"turn:" + host + ":" + strconv.Itoa(t.port) + "?transport=udp"},
		Username: user, Credential: t.password(user),
	}}}
}

// turnAllocations is the relay's allocations now.
func (h *liveHub) turnAllocations() int {
	if h.turn == nil {
		return 0
	}
	return h.turn.srv.Load().AllocationCount()
}
