package netaddr

import "testing"

func TestIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LocalHost": true, "127.0.0.1": true, "127.1.2.3": true, "::1": true,
		"": false, "10.0.0.1": false, "::": false, "0.0.0.0": false, "example.com": false,
		"localhost.example": false, "[::1]": false,
	} {
		if got := IsLoopbackHost(host); got != want {
			t.Errorf("IsLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestIsPrivateHost(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1": true, "::1": true, "10.1.2.3": true, "172.16.0.1": true, "172.31.255.254": true,
		"192.168.1.10": true, "fd00::2": true, "fc12::1": true, "169.254.3.4": true, "fe80::1": true,
		"fe80::1%eth0": true, "::ffff:192.168.0.1": true,
		"172.32.0.1": false, "192.0.2.2": false, "8.8.8.8": false, "2001:db8::1": false, "100.64.0.1": false,
		"0.0.0.0": false, "::": false, "": false, "homeassistant.local": false, "localhost": false, "[fd00::2]": false,
	} {
		if got := IsPrivateHost(host); got != want {
			t.Errorf("IsPrivateHost(%q) = %v, want %v", host, got, want)
		}
	}
}
