package receiver

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
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
}

// turnRealm is the relay's realm.
const turnRealm = "keyframe"

// liveTURN is the running relay.
type liveTURN struct {
	opt  TURNOptions
	srv  *turn.Server
	port int
	key  [32]byte
}

// startTURN starts the relay when opt says so (nil, nil otherwise).
func (h *liveHub) startTURN(opt TURNOptions, log *slog.Logger) (*liveTURN, error) {
	if opt.Listen == "" {
		return nil, nil
	}
	if opt.RelayIP == nil {
		return nil, fmt.Errorf("receiver: TURN relay on %s: no relay IP (the receiver's address as peers reach it)", opt.Listen)
	}
	if opt.MaxAllocations <= 0 {
		opt.MaxAllocations = 64
	}
	pc, err := net.ListenPacket("udp", opt.Listen)
	if err != nil {
		return nil, fmt.Errorf("receiver: TURN relay: %w", err)
	}
	t := &liveTURN{opt: opt, port: pc.LocalAddr().(*net.UDPAddr).Port}
	copy(t.key[:], h.key[:]) // the nonces' key serves: the MAC input differs
	loopback := opt.RelayIP.IsLoopback()
	var srv *turn.Server
	srv, err = turn.NewServer(turn.ServerConfig{
		Realm: turnRealm,
		AuthHandler: func(ra *turn.RequestAttributes) (string, []byte, bool) {
			if !t.valid(ra.Username, h.clk.Now()) {
				log.Info("receiver: TURN request refused", "username", clip(ra.Username), "remote", ra.SrcAddr)
				return "", nil, false
			}
			return ra.Username, turn.GenerateAuthKey(ra.Username, ra.Realm, t.password(ra.Username)), true
		},
		QuotaHandler: func(string, string, net.Addr) bool { return srv.AllocationCount() < opt.MaxAllocations },
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn:            pc,
			RelayAddressGenerator: &turn.RelayAddressGeneratorStatic{RelayAddress: opt.RelayIP, Address: "0.0.0.0"},
			// No relaying to the receiver's own host or to nowhere
			// (unless the relay itself is on loopback, as in tests).
			PermissionHandler: func(_ net.Addr, peer net.IP) bool {
				if peer.IsUnspecified() || peer.IsMulticast() || peer.IsLinkLocalUnicast() {
					return false
				}
				return loopback || !peer.IsLoopback()
			},
		}},
	})
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("receiver: TURN relay: %w", err)
	}
	t.srv = srv
	log.Info("receiver: TURN relay for the WebRTC live view", "listen", pc.LocalAddr().String(), "relay_ip", opt.RelayIP.String(), "relay_only", opt.RelayOnly)
	return t, nil
}

func (t *liveTURN) close() {
	if t != nil {
		_ = t.srv.Close()
	}
}

// password is a username's password.
func (t *liveTURN) password(username string) string {
	m := hmac.New(sha256.New, t.key[:])
	m.Write([]byte("keyframe turn v1\x00"))
	m.Write([]byte(username))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:18])
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
	return h.turn.srv.AllocationCount()
}
