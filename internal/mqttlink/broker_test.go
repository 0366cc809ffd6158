package mqttlink

import "testing"

func TestCheckBrokerURL(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"tls://broker.example:8883", "tls://broker.example:8883"},
		{"mqtts://broker.example", "tls://broker.example:8883"},
		{"ssl://10.0.0.1:1234", "tls://10.0.0.1:1234"},
		{"tcp://127.0.0.1", "tcp://127.0.0.1:1883"},
		{"mqtt://localhost:1884", "tcp://localhost:1884"},
		{"tcp://[::1]:1883", "tcp://[::1]:1883"},
	} {
		u, err := CheckBrokerURL(c.in)
		if err != nil {
			t.Errorf("CheckBrokerURL(%q): %v", c.in, err)
			continue
		}
		if u.String() != c.want {
			t.Errorf("CheckBrokerURL(%q) = %q, want %q", c.in, u, c.want)
		}
	}
	for _, in := range []string{
		"tcp://broker.example:1883", // clear text over a network
		"tcp://10.0.0.1",
		"http://127.0.0.1",
		"ws://127.0.0.1",
		"tls://user:pw@broker.example",
		"tls://broker.example/path",
		"tls://broker.example?x=1",
		"tls://:8883",
		"tls://broker.example:0",
		"tls://broker.example:99999",
		"broker.example:8883",
		"",
	} {
		if u, err := CheckBrokerURL(in); err == nil {
			t.Errorf("CheckBrokerURL(%q) = %v, want an error", in, u)
		}
	}
}

func TestIsBrokerScheme(t *testing.T) {
	for scheme, want := range map[string]bool{
		"tls": true, "mqtts": true, "ssl": true, "tcp": true, "mqtt": true, "TLS": true,
		"https": false, "http": false, "ws": false, "": false,
	} {
		if got := IsBrokerScheme(scheme); got != want {
			t.Errorf("IsBrokerScheme(%q) = %v, want %v", scheme, got, want)
		}
	}
}
