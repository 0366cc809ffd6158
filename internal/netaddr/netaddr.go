// Package netaddr holds the one loopback test of the tree: which hosts may
// be spoken to in clear text (the uploader's http:// and tcp:// URLs, the
// broker URLs of both sides) and which listen addresses stay on the machine
// (the receiver's); and the one private-network test (a broker on the LAN
// reached in clear text by explicit opt-in). It imports nothing but the
// standard library.
package netaddr

import (
	"net"
	"net/netip"
	"strings"
)

// IsLoopbackHost reports whether host (a URL's or address's host, without
// port or brackets) names only the loopback interface: "localhost" in any
// case, or an IP in 127.0.0.0/8 or ::1.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// IsPrivateHost reports whether host (without port or brackets) is an IP
// address of a private network, where a home's devices talk to each other:
// the loopback interface, RFC 1918 (10/8, 172.16/12, 192.168/16), IPv6
// unique local addresses (fc00::/7) and link-local addresses (169.254/16,
// fe80::/10, with or without a zone). A host name is not: what it resolves
// to is known only when connecting (IsPrivateAddr).
func IsPrivateHost(host string) bool {
	ip, err := netip.ParseAddr(host)
	return err == nil && IsPrivateAddr(ip)
}

// IsPrivateAddr is IsPrivateHost for an address (an IPv4-mapped IPv6
// address counts as its IPv4 address).
func IsPrivateAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast()
}
