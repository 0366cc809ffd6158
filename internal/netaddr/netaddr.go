// Package netaddr holds the one loopback test of the tree: which hosts may
// be spoken to in clear text (the uploader's http:// and tcp:// URLs, the
// broker URLs of both sides) and which listen addresses stay on the machine
// (the receiver's). It imports nothing but the standard library.
package netaddr

import (
	"net"
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
