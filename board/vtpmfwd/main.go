// Command vtpmfwd gives a Linux machine without a TPM driver a TPM 2.0 that
// lives elsewhere: it creates /dev/tpmN and /dev/tpmrmN through the kernel's
// vTPM proxy (module tpm_vtpm_proxy, /dev/vtpmx) and relays every command
// the kernel passes it, one at a time, to a software TPM's raw command
// channel over TCP (swtpm socket --tpm2 --server type=tcp,...), and the
// response back.
//
// keyframe's board test uses it: Debian's ARM kernels have no tpm_tis, so a
// QEMU guest cannot see an emulated TPM device, but they have
// tpm_vtpm_proxy. The guest runs
//
//	modprobe tpm_vtpm_proxy
//	vtpmfwd -host 10.0.2.2:PORT &
//
// and programs use /dev/tpmrm0 as on a board with a TPM chip; the TPM's
// state (and the device key in it) is swtpm's, on the host.
//
// The relay connects before it creates the device (the kernel sends its
// first commands at once), reconnects when the connection drops, answers
// the proxy driver's own locality command itself, and answers TPM_RC_FAILURE
// when the TPM cannot be reached or a connection drops with a command
// outstanding. It logs to stderr; SIGUSR1 prints what it relayed, as does
// SIGTERM or SIGINT before it exits. The channel has no authentication or
// encryption: use it only on a trusted link (an emulator's host loopback).
// Linux only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	fl := flag.NewFlagSet("vtpmfwd", flag.ContinueOnError)
	fl.SetOutput(stderr)
	host := fl.String("host", "", "the TPM's raw command channel, HOST:PORT (swtpm --server type=tcp)")
	vtpmx := fl.String("vtpmx", "/dev/vtpmx", "the vTPM proxy multiplexer (module tpm_vtpm_proxy)")
	devDir := fl.String("dev", "/dev", "where the new /dev/tpmN and /dev/tpmrmN appear")
	connectWait := fl.Duration("connect-wait", 30*time.Second, "how long to wait for the TPM to be reachable, at start and for each command")
	timeout := fl.Duration("timeout", 2*time.Minute, "longest exchange of one command with the TPM")
	readyWait := fl.Duration("ready-wait", 30*time.Second, "how long to wait for the device nodes to appear")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *host == "" || fl.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: vtpmfwd -host HOST:PORT [-vtpmx /dev/vtpmx] [-connect-wait 30s] [-timeout 2m]")
		return 2
	}
	if _, _, err := net.SplitHostPort(*host); err != nil {
		fmt.Fprintf(stderr, "vtpmfwd: -host %q: want HOST:PORT: %v\n", *host, err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{ReplaceAttr: dropTime}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var d net.Dialer
	r := &Relay{
		Dial: func(ctx context.Context) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			return d.DialContext(ctx, "tcp", *host)
		},
		ConnectWait: *connectWait,
		Timeout:     *timeout,
		Backoff:     100 * time.Millisecond,
		BackoffCap:  2 * time.Second,
		Rand:        rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid()))),
		Log:         log,
	}
	// The kernel talks to the new device as soon as it exists: have the
	// TPM on the line first.
	if err := r.Connect(ctx); err != nil {
		log.Error("no TPM to forward to", "err", err)
		return 1
	}
	p, err := openProxy(*vtpmx)
	if err != nil {
		log.Error("cannot create the TPM device", "err", err)
		return 1
	}
	defer p.Close()
	log.Info("created TPM 2.0 device", "device", p.String(), "forwarding_to", *host)

	if len(statsSignals) > 0 {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, statsSignals...)
		defer signal.Stop(sig)
		go func() {
			for range sig {
				log.Info("relayed " + r.Stats().String())
			}
		}()
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve(ctx, p) }()
	nodes := []string{
		filepath.Join(*devDir, fmt.Sprintf("tpm%d", p.num)),
		filepath.Join(*devDir, fmt.Sprintf("tpmrm%d", p.num)),
	}
	go func() {
		if err := waitNodes(ctx, nodes, *readyWait, 50*time.Millisecond); err != nil {
			log.Error("device nodes missing", "err", err)
			return
		}
		log.Info("ready", "nodes", nodes)
	}()
	select {
	case <-ctx.Done():
		log.Info("stopping: relayed " + r.Stats().String())
		return 0
	case err := <-served:
		log.Error("the proxy failed", "err", err, "relayed", r.Stats().String())
		return 1
	}
}

// waitNodes waits until every path exists, checking every poll, for up to
// wait.
func waitNodes(ctx context.Context, paths []string, wait, poll time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		var missing []string
		for _, p := range paths {
			if _, err := os.Stat(p); err != nil {
				missing = append(missing, p)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("vtpmfwd: %v did not appear within %v: %w", missing, wait, errors.Join(ctx.Err(), os.ErrNotExist))
		case <-t.C:
		}
	}
}

// dropTime leaves the time out of log lines: the console shows when.
func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}
