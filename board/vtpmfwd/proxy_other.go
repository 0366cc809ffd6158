//go:build !linux

package main

import (
	"errors"
	"fmt"
	"net"
	"os"
)

// proxy is the server side of a vTPM proxy device: Linux only.
type proxy struct{ num uint32 }

// openProxy reports that the vTPM proxy exists on Linux only.
func openProxy(vtpmx string) (*proxy, error) {
	return nil, fmt.Errorf("vtpmfwd: %s: the vTPM proxy (tpm_vtpm_proxy) is Linux-only: not supported on this platform: %w", vtpmx, errors.ErrUnsupported)
}

func (p *proxy) Read([]byte) (int, error)  { return 0, errors.ErrUnsupported }
func (p *proxy) Write([]byte) (int, error) { return 0, errors.ErrUnsupported }
func (p *proxy) Close() error              { return nil }
func (p *proxy) String() string            { return "no proxy" }

// statsSignals is empty: no signal prints the statistics here.
var statsSignals []os.Signal

// checkIdle cannot look at a connection without reading from it here: it
// takes every connection as open.
func checkIdle(net.Conn) error { return nil }
