package mosquittotest

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
)

// ErrReset is what reads and writes on a connection cut by Net.Cut return.
var ErrReset = errors.New("mosquittotest: connection reset by the network")

// ErrDown is what Net.Dial returns while the network is down.
var ErrDown = errors.New("mosquittotest: network down")

// Net dials real TCP connections that a test can cut like a failing network
// and refuses new ones while it is down. A cut connection fails with
// ErrReset, not with a local close: paho takes "use of closed network
// connection" for its own deliberate close and would not report a loss.
// The zero Net is up.
type Net struct {
	down  atomic.Bool
	mu    sync.Mutex
	conns []*cutConn
}

// Dial is a dial function for a client's configuration (MQTTConfig.Dial).
func (n *Net) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if n.down.Load() {
		return nil, ErrDown
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	cc := &cutConn{Conn: c}
	n.mu.Lock()
	n.conns = append(n.conns, cc)
	n.mu.Unlock()
	return cc, nil
}

// SetDown makes Dial refuse (true) or connect again (false).
func (n *Net) SetDown(down bool) { n.down.Store(down) }

// Cut resets every connection dialled so far.
func (n *Net) Cut() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.conns {
		c.cut.Store(true)
		c.Conn.Close()
	}
	n.conns = nil
}

type cutConn struct {
	net.Conn
	cut atomic.Bool
}

func (c *cutConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && c.cut.Load() {
		err = ErrReset
	}
	return n, err
}

func (c *cutConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil && c.cut.Load() {
		err = ErrReset
	}
	return n, err
}
