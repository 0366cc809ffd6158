//go:build linux

package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The kernel's vTPM proxy interface (include/uapi/linux/vtpm_proxy.h).
const (
	// vtpmProxyIocNewDev is VTPM_PROXY_IOC_NEW_DEV,
	// _IOWR(0xa1, 0x00, struct vtpm_proxy_new_dev): the same number on
	// arm, arm64 and x86.
	vtpmProxyIocNewDev = 0xC014A100
	vtpmProxyFlagTPM2  = 1 // VTPM_PROXY_FLAG_TPM2
)

// vtpmProxyNewDev is struct vtpm_proxy_new_dev: flags in, the rest out.
type vtpmProxyNewDev struct {
	Flags  uint32
	TPMNum uint32
	FD     uint32
	Major  uint32
	Minor  uint32
}

// proxy is the server side of a TPM 2.0 created through /dev/vtpmx: the
// kernel hands each command for /dev/tpmN (and /dev/tpmrmN) to Read, one
// command per call, and takes the response from one Write.
type proxy struct {
	fd                int
	num, major, minor uint32
}

// openProxy creates a TPM 2.0 device through the vTPM proxy multiplexer at
// vtpmx (/dev/vtpmx, from the tpm_vtpm_proxy module). The kernel starts
// using it at once (TPM2_SelfTest, GetCapability, ...): serve it without
// delay.
func openProxy(vtpmx string) (*proxy, error) {
	x, err := unix.Open(vtpmx, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			return nil, fmt.Errorf("vtpmfwd: open %s: %w (load the tpm_vtpm_proxy module)", vtpmx, err)
		}
		return nil, fmt.Errorf("vtpmfwd: open %s: %w", vtpmx, err)
	}
	defer unix.Close(x)
	nd := vtpmProxyNewDev{Flags: vtpmProxyFlagTPM2}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(x), vtpmProxyIocNewDev, uintptr(unsafe.Pointer(&nd))); e != 0 {
		return nil, fmt.Errorf("vtpmfwd: %s: VTPM_PROXY_IOC_NEW_DEV: %w", vtpmx, e)
	}
	return &proxy{fd: int(nd.FD), num: nd.TPMNum, major: nd.Major, minor: nd.Minor}, nil
}

// Read reads one command. b must hold the largest command (maxMessage).
func (p *proxy) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(p.fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("vtpmfwd: read /dev/tpm%d proxy: %w", p.num, err)
		}
		if n == 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

// Write writes one whole response.
func (p *proxy) Write(b []byte) (int, error) {
	for {
		n, err := unix.Write(p.fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("vtpmfwd: write /dev/tpm%d proxy: %w", p.num, err)
		}
		if n != len(b) {
			return n, fmt.Errorf("vtpmfwd: write /dev/tpm%d proxy: %d of %d bytes: %w", p.num, n, len(b), io.ErrShortWrite)
		}
		return n, nil
	}
}

// Close closes the proxy: the kernel removes /dev/tpmN.
func (p *proxy) Close() error {
	if err := unix.Close(p.fd); err != nil {
		return fmt.Errorf("vtpmfwd: close /dev/tpm%d proxy: %w", p.num, err)
	}
	return nil
}

// String describes the device the proxy serves.
func (p *proxy) String() string {
	return fmt.Sprintf("/dev/tpm%d (%d:%d)", p.num, p.major, p.minor)
}

// statsSignals are the signals that make the forwarder print its statistics.
var statsSignals = []os.Signal{unix.SIGUSR1}

// checkIdle looks at a connection between commands without consuming
// anything: nil if it is open and quiet; an error if the TPM closed or reset
// it, or sent bytes nobody asked for. Connections that are not sockets are
// taken as open.
func checkIdle(c net.Conn) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("check connection: %w", err)
	}
	var (
		n    int
		rerr error
		b    [1]byte
	)
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return true
	})
	switch {
	case err != nil:
		return fmt.Errorf("check connection: %w", err)
	case errors.Is(rerr, unix.EAGAIN):
		return nil
	case rerr != nil:
		return fmt.Errorf("check connection: %w", rerr)
	case n == 0:
		return fmt.Errorf("check connection: the TPM closed it: %w", io.EOF)
	}
	return fmt.Errorf("check connection: %w", errStray)
}
