// Package mqttlink is what the device's MQTT transport (package uploader)
// and the receiver's MQTT ingest (package receiver) share: the broker URL
// rules, the dial, the jittered Redialer that keeps a connection up, the
// defaults of both, and the event topic layout
// <prefix>/<device>/events/<event>/<kind> with its prefix check. Keeping it
// here, below both, is what lets the receiver import nothing device-side.
package mqttlink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/keyframe-cam/keyframe/internal/netaddr"
)

// Defaults of both sides' MQTT configurations.
const (
	// DefaultTopicPrefix is the first level of every keyframe topic.
	DefaultTopicPrefix = "keyframe"
	// DefaultKeepAlive is the MQTT keep-alive.
	DefaultKeepAlive = 30 * time.Second
	// DefaultConnectTimeout bounds a connection attempt (TCP, TLS, CONNECT).
	DefaultConnectTimeout = 20 * time.Second

	// Defaults of Schedule: the full-jitter backoff's base and cap, the
	// outage window, the one quick retry and the stable period. The
	// uploader's Config takes the same.
	DefaultBackoffBase = time.Second
	DefaultBackoffCap  = 5 * time.Minute
	DefaultRetryWindow = 2 * time.Minute
	DefaultQuickRetry  = 2 * time.Second
	DefaultStableAfter = 60 * time.Second
)

// ErrPlaintextNotLoopback is CheckBrokerURL's refusal of tcp:// to a host
// that is not on the loopback interface, without URLRules.PlaintextLAN.
var ErrPlaintextNotLoopback = errors.New("tcp:// is allowed only to a loopback host (127.0.0.0/8, ::1, localhost), or to a private-network address with the plain-text LAN opt-in; use tls://")

// ErrPublicPlaintext is DialBroker's refusal of a tcp:// broker whose
// address is not on the loopback interface or a private network.
var ErrPublicPlaintext = errors.New("clear-text MQTT only to a loopback or private-network address: the broker's is neither; use tls://")

// IsBrokerScheme reports whether a URL scheme names an MQTT broker (tls,
// mqtts, ssl, tcp, mqtt; any case) rather than an HTTP receiver.
// CheckBrokerURL accepts these schemes and no others.
func IsBrokerScheme(scheme string) bool {
	switch strings.ToLower(scheme) {
	case "tls", "mqtts", "ssl", "tcp", "mqtt":
		return true
	}
	return false
}

// URLRules are the exceptions a broker URL may need to CheckBrokerURL.
type URLRules struct {
	// PlaintextLAN allows tcp:// (mqtt://) to a broker on a private
	// network, not only on the loopback interface: a private IP address
	// (netaddr.IsPrivateHost: RFC 1918, fc00::/7, link-local), or a host
	// name that DialBroker then checks resolves to one. What crosses the
	// LAN in the clear: the username and password, the records (still
	// signed, so a change is detected, but readable) and the thumbnails.
	PlaintextLAN bool
}

// CheckBrokerURL parses and checks a broker URL and returns it with the
// scheme normalised to "tls" (tls, mqtts, ssl) or "tcp" (tcp, mqtt) and an
// explicit port (8883 for TLS, 1883 for TCP). tcp:// is allowed only to a
// loopback host (127.0.0.0/8, ::1, localhost), since records would otherwise
// cross a network in clear text, unless rules.PlaintextLAN allows a
// private-network host too. Credentials, a path, a query or a fragment are
// refused. The error says what is wrong with the URL; the caller prefixes
// it with its own package.
func CheckBrokerURL(raw string, rules URLRules) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("broker URL: %w", err)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("broker URL %q has no host", raw)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("broker URL %q: credentials, path, query and fragment are not allowed (use Username and Password)", raw)
	}
	if !IsBrokerScheme(u.Scheme) {
		return nil, fmt.Errorf("broker URL %q: scheme must be tls://, mqtts:// or ssl:// (or tcp:// to a loopback host)", raw)
	}
	port := "8883"
	switch strings.ToLower(u.Scheme) {
	case "tls", "mqtts", "ssl":
		u.Scheme = "tls"
	default: // tcp, mqtt
		host := u.Hostname()
		switch {
		case netaddr.IsLoopbackHost(host):
		case !rules.PlaintextLAN:
			return nil, fmt.Errorf("broker URL %q: %w", raw, ErrPlaintextNotLoopback)
		case net.ParseIP(host) != nil && !netaddr.IsPrivateHost(host):
			return nil, fmt.Errorf("broker URL %q: tcp:// is allowed only to a private-network address (10/8, 172.16/12, 192.168/16, fc00::/7, link-local), not %s; use tls://", raw, host)
		}
		u.Scheme = "tcp"
		port = "1883"
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("broker URL %q: bad port", raw)
		}
	} else {
		u.Host = net.JoinHostPort(u.Hostname(), port)
	}
	u.Path, u.RawPath = "", ""
	return u, nil
}

// DialBroker opens the network connection to a broker URL returned by
// CheckBrokerURL: TCP through dial (nil: a net.Dialer), then a TLS handshake
// with tc when the scheme is tls. ctx bounds the whole of it. A tcp://
// connection whose peer is not on the loopback interface or a private
// network (netaddr.IsPrivateAddr: a host name that resolved elsewhere) is
// closed before anything is sent on it.
func DialBroker(ctx context.Context, u *url.URL, tc *tls.Config, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (net.Conn, error) {
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	raw, err := dial(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "tls" {
		ap, err := netip.ParseAddrPort(raw.RemoteAddr().String())
		if err != nil || !netaddr.IsPrivateAddr(ap.Addr()) {
			raw.Close()
			return nil, fmt.Errorf("%w: %s resolved to %s", ErrPublicPlaintext, u.Hostname(), raw.RemoteAddr())
		}
		return raw, nil
	}
	conn := tls.Client(raw, tc)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	return conn, nil
}

// ErrCredentials is wrapped by ExplainConnect when the broker refused the
// connection's credentials (CONNACK 4 or 5).
var ErrCredentials = errors.New("the broker refused the credentials")

// ExplainConnect makes a failed CONNECT's error say what to fix when the
// broker refused the credentials: the username (never the password) and
// what it may mean. Other errors are returned as they are.
func ExplainConnect(err error, username string) error {
	if !errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) && !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
		return err
	}
	if username == "" {
		return fmt.Errorf("%w: no username, and the client certificate was not accepted as one: %w", ErrCredentials, err)
	}
	return fmt.Errorf("%w: wrong password for user %q, no such user, or the user is not allowed to connect: %w", ErrCredentials, username, err)
}
