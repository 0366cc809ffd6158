package receiver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keyframe-cam/keyframe/internal/claimcode"
	"github.com/keyframe-cam/keyframe/internal/clock"
	"github.com/keyframe-cam/keyframe/provenance"
)

// The HTTP server limits Serve sets: a slow or idle client cannot hold a
// connection open for ever.
const (
	serveReadHeaderTimeout = 10 * time.Second
	serveReadTimeout       = 60 * time.Second
	serveWriteTimeout      = 60 * time.Second
	serveIdleTimeout       = 120 * time.Second
	serveMaxHeaderBytes    = 64 << 10
	// serveShutdownTimeout bounds the wait for uploads in progress when
	// Serve's context is done.
	serveShutdownTimeout = 10 * time.Second
)

// ServeConfig configures Serve.
type ServeConfig struct {
	// Options open the Server. Options.Logger also logs the serving (nil:
	// discard).
	Options
	// Listen is the address to listen on (host:port). It must bind only to
	// the loopback interface (IsLoopback) unless Public is set.
	// Options.AllowedHosts defaults to DefaultAllowedHosts of it (with the
	// port it got).
	Listen string
	// Public allows a non-loopback Listen address. Every page needs a
	// signed-in session, but passwords and session cookies then cross the
	// network: serve TLS (TLSCertFile) or put a TLS proxy in front; Serve
	// logs a warning without TLS.
	Public bool
	// TLSCertFile and TLSKeyFile (PEM) make Serve serve HTTPS; both or
	// neither. Claim codes pin the certificate's key (Options.TLSCertificate
	// is set from it when empty).
	TLSCertFile, TLSKeyFile string
	// TLS is the HTTPS mode: TLSAuto ("" too) serves TLSCertFile if set,
	// else TLSSelf on a non-loopback Listen, else plain HTTP on loopback;
	// TLSSelf serves a certificate from the receiver's own CA (SelfCert,
	// under Dir/SelfCertDir; claim codes pin the CA: Options.TLSCertificate
	// is set to it when empty); TLSOff serves plain HTTP.
	TLS string
	// TLSNames are the host names and addresses of TLSSelf's certificate;
	// empty: DefaultTLSNames. Options.AllowedHosts, when empty, answers
	// them too (with the port Serve listens on).
	TLSNames []string
	// ClientCAs, with TLS, makes uploads (/v1/) require a client certificate
	// that verifies to one of these CAs (mutual TLS, RequireClientCert); the
	// viewer pages and the claim endpoints need none. The certificate must
	// be for the key that signed the record it carries (or, for a rotate
	// record, the key it rotates to): 403 client_cert otherwise. A client
	// certificate for the key of a revoked device fails the handshake.
	ClientCAs *x509.CertPool
	// MQTT, if set, also ingests records from a broker (NewMQTTIngest) while
	// Serve runs; its Logger defaults to Options.Logger.
	MQTT *MQTTConfig
	// MaxConns bounds the connections open at once: one accepted over it
	// is closed at once. 0: DefaultMaxConns (1024); negative: no bound.
	MaxConns int
	// MaxConnsPerAddr bounds the connections open at once from one source
	// address (an IPv6 address by its /64): one accepted over it is closed
	// at once, so one client cannot take the descriptors others need.
	// Behind a proxy every connection has the proxy's address: raise it
	// there. 0: DefaultMaxConnsPerAddr (32); negative: no bound.
	MaxConnsPerAddr int
	// UploadsPerAddr bounds the upload requests (PUT /v1/events/) of one
	// source address per UploadRateWindow (a minute), counted before the
	// body is read or anything verified; more are answered 429 with
	// Retry-After, which the agent retries without losing the record.
	// Behind a proxy: raise it. 0: DefaultUploadsPerAddr (600); negative:
	// no limit.
	UploadsPerAddr int
	// Ready, if set, is called once Serve listens, with the URL it serves
	// (http://ADDR/ or https://ADDR/).
	Ready func(url string)
}

// A ConfigError is a ServeConfig that Serve refused before serving anything.
type ConfigError struct {
	Err error
}

func (e *ConfigError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *ConfigError) Unwrap() error { return e.Err }

// tlsMode resolves c.TLS for a listen address that is loopback or not:
// "files", TLSSelf or TLSOff.
func (c *ServeConfig) tlsMode(loopback bool) (string, error) {
	files := c.TLSCertFile != "" || c.TLSKeyFile != ""
	switch c.TLS {
	case "", TLSAuto:
		switch {
		case files:
			return "files", nil
		case !loopback:
			return TLSSelf, nil
		}
		return TLSOff, nil
	case TLSSelf, TLSOff:
		if files {
			return "", &ConfigError{fmt.Errorf("receiver: TLS mode %q takes no certificate and key files (-tls-cert, -tls-key): use auto", c.TLS)}
		}
		return c.TLS, nil
	}
	return "", &ConfigError{fmt.Errorf("receiver: TLS mode %q: want auto, self or off", clip(c.TLS))}
}

// check returns the listen address's loopback status, or a *ConfigError.
func (c *ServeConfig) check() (loopback bool, err error) {
	loop, err := IsLoopback(c.Listen)
	if err != nil {
		return false, &ConfigError{err}
	}
	if !loop && !c.Public {
		return false, &ConfigError{fmt.Errorf("receiver: refusing to listen on %s: it is not a loopback address; use a loopback address, or Public (-public) with TLS (or behind a TLS proxy) and the host names people use (-allow-host)", c.Listen)}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return false, &ConfigError{errors.New("receiver: the TLS certificate and key files go together")}
	}
	mode, err := c.tlsMode(loop)
	if err != nil {
		return false, err
	}
	if c.ClientCAs != nil && mode == TLSOff {
		return false, &ConfigError{errors.New("receiver: client CAs need TLS (a certificate and key, or -tls self)")}
	}
	return loop, nil
}

// Serve runs the reference receiver until ctx is done: it opens a Server
// over cfg.Options, serves its Handler on cfg.Listen (over TLS, and with
// RequireClientCert, as cfg says) with read, write and idle timeouts, and
// runs the MQTT ingest if cfg.MQTT is set. When ctx is done it stops
// accepting, waits a bounded time for requests in progress, stops the MQTT
// ingest and closes the Server, and returns nil. A configuration Serve
// refuses is a *ConfigError; any other error is one of opening or serving.
func Serve(ctx context.Context, cfg ServeConfig) error {
	loop, err := cfg.check()
	if err != nil {
		return err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mode, _ := cfg.tlsMode(loop) // checked
	if !loop && mode == TLSOff {
		log.Warn("listening on a non-loopback address without TLS: passwords and session cookies cross the network in the clear; serve TLS or put a TLS proxy in front", "listen", cfg.Listen)
	}
	var self *SelfCert
	if mode == TLSSelf {
		names := cfg.TLSNames
		if len(names) == 0 {
			names = DefaultTLSNames()
		}
		if self, err = LoadSelfCert(filepath.Join(cfg.Dir, SelfCertDir), names, cfg.Clock, cfg.Rand, log); err != nil {
			return err
		}
		if cfg.TLSCertificate == nil {
			cfg.TLSCertificate = self.CA().Raw // claim codes pin the CA: renewals keep joined cameras
		}
		log.Info("receiver: HTTPS with the receiver's own CA: trust it in browsers, or check its fingerprint", "ca", filepath.Join(cfg.Dir, SelfCertDir, selfCAFile), "sha256", fingerprint(self.CA().Raw), "hosts", self.Hosts())
	}
	if cfg.TLSCertFile != "" && cfg.TLSCertificate == nil {
		// Claim codes pin the certificate's key (docs/claim.md).
		kp, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return fmt.Errorf("receiver: TLS certificate: %w", err)
		}
		cfg.TLSCertificate = kp.Certificate[0]
	}
	srv, err := Open(cfg.Options)
	if err != nil {
		return err
	}
	defer srv.Close()

	var ing *MQTTIngest
	if cfg.MQTT != nil {
		mc := *cfg.MQTT
		if mc.Clock == nil {
			mc.Clock = cfg.Options.Clock
		}
		if mc.Logger == nil {
			mc.Logger = log
		}
		if mc.MaxPayload == 0 && cfg.Options.MaxBody > 0 {
			mc.MaxPayload = int(cfg.Options.MaxBody)
		}
		if ing, err = NewMQTTIngest(mc, srv); err != nil {
			return &ConfigError{err}
		}
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("receiver: %w", err)
	}
	defer ln.Close() // the server closes it too, except when ServeTLS fails to load the certificate
	if maxConns, perAddr := limitOr(cfg.MaxConns, DefaultMaxConns), limitOr(cfg.MaxConnsPerAddr, DefaultMaxConnsPerAddr); maxConns > 0 || perAddr > 0 {
		ln = newConnLimit(ln, maxConns, perAddr, func(remote net.Addr, total bool) {
			log.Debug("receiver: connection refused over the limit", "remote", remote.String(), "all", total)
		})
	}
	if len(cfg.AllowedHosts) == 0 {
		host, _, _ := net.SplitHostPort(cfg.Listen)
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		hosts := DefaultAllowedHosts(net.JoinHostPort(host, port))
		if self != nil {
			for _, h := range self.Hosts() {
				if hp := net.JoinHostPort(h, port); !slices.Contains(hosts, hp) {
					hosts = append(hosts, hp)
				}
			}
		}
		srv.SetAllowedHosts(hosts)
		log.Debug("receiver: serving host names", "hosts", hosts)
	}
	hs := newHTTPServer(srv.Handler(), log)
	if cfg.ClientCAs != nil {
		hs.TLSConfig = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: cfg.ClientCAs, MinVersion: tls.VersionTLS12,
			VerifyConnection: func(cs tls.ConnectionState) error { return srv.refuseRevoked(cs, log) }}
		hs.Handler = RequireClientCert(hs.Handler)
	}
	if self != nil {
		if hs.TLSConfig == nil {
			hs.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		hs.TLSConfig.GetCertificate = self.GetCertificate
	}
	if n := limitOr(cfg.UploadsPerAddr, DefaultUploadsPerAddr); n > 0 {
		hs.Handler = &uploadRate{next: hs.Handler, n: n, clk: clock.Or(cfg.Clock), windows: newWindows(UploadRateWindow, maxUploadRateAddrs),
			log: func(remote string) { log.Debug("receiver: upload refused over the address's rate", "remote", remote) }}
	}

	hs.RegisterOnShutdown(srv.hub.shutdown) // live streams end, so the shutdown need not wait for them
	hs.RegisterOnShutdown(srv.live.shutdown)

	mctx, stopMQTT := context.WithCancel(ctx)
	var mqttDone sync.WaitGroup
	defer mqttDone.Wait()
	defer stopMQTT()
	mqttDone.Go(func() { srv.sweepLoop(mctx, cfg.Clock, log) })
	if ing != nil {
		mqttDone.Go(func() {
			if err := ing.Run(mctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("receiver: mqtt ingest stopped", "err", err)
			}
		})
	}
	errc := make(chan error, 1)
	scheme := "http"
	switch {
	case cfg.TLSCertFile != "":
		scheme = "https"
		go func() { errc <- hs.ServeTLS(ln, cfg.TLSCertFile, cfg.TLSKeyFile) }()
	case self != nil:
		scheme = "https"
		go func() { errc <- hs.ServeTLS(ln, "", "") }()
	default:
		go func() { errc <- hs.Serve(ln) }()
	}
	if cfg.Ready != nil {
		cfg.Ready(fmt.Sprintf("%s://%s/", scheme, ln.Addr()))
	}

	select {
	case err := <-errc:
		return fmt.Errorf("receiver: %w", err)
	case <-ctx.Done():
	}
	log.Info("receiver: shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), serveShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("receiver: shutdown", "err", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("receiver: serve", "err", err)
	}
	stopMQTT()
	mqttDone.Wait()
	return srv.Close()
}

// limitOr returns n, or def for 0; a negative n (no limit) is returned as
// is.
func limitOr(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}

// newHTTPServer returns the HTTP server of Serve for h, with its timeouts
// and limits, logging its errors to log as warnings.
func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: serveReadHeaderTimeout,
		ReadTimeout:       serveReadTimeout,
		WriteTimeout:      serveWriteTimeout,
		IdleTimeout:       serveIdleTimeout,
		MaxHeaderBytes:    serveMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// RequireClientCert wraps a Server's Handler for a TLS server that verifies
// client certificates when given (tls.VerifyClientCertIfGiven with the fleet
// CAs): an upload (/v1/) that did not come with a verified client
// certificate gets 401, never 403, so the device keeps the record and
// retries (a 403 would make it quarantine the record). The pages need no
// certificate (they need a signed-in session), nor do the two claim
// endpoints: a camera being claimed has none yet, its claim code and key are
// its credentials; nor do the owner's end-to-end encryption routes
// (/v1/e2ee/keys, /v1/e2ee/requests...), which a browser calls with its
// session. /v1/stats, under /v1/, needs both.
func RequireClientCert(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		browser := p == claimcode.ChallengePath || p == claimcode.JoinPath || p == "/v1/e2ee/keys" || p == "/v1/e2ee/requests" ||
			strings.HasPrefix(p, "/v1/e2ee/requests/") && !strings.Contains(p[len("/v1/e2ee/requests/"):], "/") && path.Clean(p) == p
		if strings.HasPrefix(p, "/v1/") && !browser && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
			http.Error(w, "a client certificate from the fleet CA is required for uploads", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuseRevoked fails a TLS handshake whose verified client certificate is
// for the key of a device the registry says is revoked: such a device is
// refused before it can send anything. The registry is read as for an
// upload (a few stat calls when it has not changed); when it cannot be
// read the handshake goes on and the upload meets the same check.
func (s *Server) refuseRevoked(cs tls.ConnectionState, log *slog.Logger) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return nil
	}
	id, err := provenance.DeviceID(cs.VerifiedChains[0][0].PublicKey)
	if err != nil {
		return nil // not a device key: no record can be signed by it
	}
	reg, err := s.regs.read()
	if err != nil {
		return nil
	}
	if d := reg.Devices[id]; d != nil && d.Revoked {
		s.count(ReasonRevoked)
		log.Info("receiver: handshake refused: the client certificate is for a revoked device", "device", id)
		return fmt.Errorf("receiver: device %s is revoked", id)
	}
	return nil
}
