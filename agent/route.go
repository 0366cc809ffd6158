package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/internal/mqttlink"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/recorder/rotation"
	"github.com/keyframe-cam/keyframe/uploader"
)

// CertPath is the device certificate file the configuration names
// (Layout(c).Cert).
func CertPath(c *Config) string { return Layout(c).Cert }

// isMQTT reports whether upload.url names an MQTT broker rather than an
// HTTP receiver.
func isMQTT(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	return mqttlink.IsBrokerScheme(u.Scheme)
}

// loadCert loads the device certificate chain (device.cert_file: PEM, the
// device's certificate first, then intermediates) for mutual TLS and the
// envelopes' x5chain. No file is no certificate; a chain that is not for
// this key, not yet or no longer valid, or unreadable is logged and not
// used: the device goes on recording, and a receiver or broker that
// requires a certificate says so.
func (a *Agent) loadCert() {
	path := CertPath(&a.cfg)
	chain, err := provenance.LoadCertChain(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err == nil {
		_, err = provenance.CheckCertChain(chain, a.key.Public(), a.deps.Clock.Now())
	}
	if err != nil {
		a.log.Error("device certificate not used", "file", path, "err", err)
		return
	}
	a.certMu.Lock()
	a.cert = &tls.Certificate{Certificate: chain, PrivateKey: a.key}
	a.certMu.Unlock()
}

// x5chain is the certificate chain the envelopes carry (nil: none).
func (a *Agent) x5chain() [][]byte {
	a.certMu.Lock()
	defer a.certMu.Unlock()
	if a.cert == nil {
		return nil
	}
	return a.cert.Certificate
}

// delivered hears of each record the receiver acknowledged: when it is the
// pending rotation's rotate record, the rotation is completed (the new key
// moves into device.key_file, the old one is kept as .retired, and the old
// key's certificate file is set aside).
func (a *Agent) delivered(e uploader.Entry) {
	p := a.rotation
	if p == nil || e.Seq != p.Seq || e.Kind != provenance.KindRotate {
		return
	}
	if err := rotation.Complete(Layout(&a.cfg)); err != nil {
		a.log.Error("key rotation: the receiver accepted the rotate record, but completing it failed; it completes on the next start", "err", err)
		return
	}
	// No certificate to drop: the old key's chain was never loaded for the
	// new key (loadCert checks the key). Install one for the new key with
	// keyframe identity cert install.
	a.log.Info("key rotation complete", "old_device", p.OldDevice, "device", p.NewDevice)
}

// rootCAs is the system's roots plus upload.ca_file, or nil (system roots)
// when no file is configured.
func rootCAs(c *Config) (*x509.CertPool, error) {
	if c.UploadCAFile == "" {
		return nil, nil
	}
	data, err := os.ReadFile(c.UploadCAFile)
	if err != nil {
		return nil, fmt.Errorf("agent: upload.ca_file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("agent: upload.ca_file %s: no PEM certificate in it", c.UploadCAFile)
	}
	return pool, nil
}

// httpClient is the uploads' HTTP client: the configured timeout, the
// system roots plus upload.ca_file (a self-hosted receiver's own CA), and
// the device certificate for mutual TLS when there is one.
func httpClient(c *Config, cert *tls.Certificate) (*http.Client, error) {
	client := &http.Client{Timeout: c.UploadTimeout}
	pool, err := rootCAs(c)
	if err != nil {
		return nil, err
	}
	if pool == nil && cert == nil {
		return client, nil
	}
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	client.Transport = tr
	return client, nil
}

// transport makes the upload route upload.url names: an HTTP receiver or an
// MQTT broker (then also returned as m, for Home Assistant and commands).
func (a *Agent) transport(cert *tls.Certificate) (tr uploader.Transport, m *uploader.MQTT, err error) {
	c := &a.cfg
	if !isMQTT(c.UploadURL) {
		client, err := httpClient(c, cert)
		if err != nil {
			return nil, nil, err
		}
		tr, err := uploader.NewHTTP(c.UploadURL, client)
		return tr, nil, err
	}
	pool, err := rootCAs(c)
	if err != nil {
		return nil, nil, err
	}
	password, err := readPassword(c.MQTTPasswordFile)
	if err != nil {
		return nil, nil, err
	}
	mc := uploader.MQTTConfig{
		Broker:            c.UploadURL,
		AllowPlaintextLAN: c.MQTTPlaintextLAN,
		Username:          c.MQTTUsername,
		Password:          password,
		DeviceID:          a.device,
		RootCAs:           pool,
		TopicPrefix:       c.MQTTPrefix,
		NoDiscovery:       !c.HADiscovery,
		SWVersion:         c.Version,
		OnCommand:         a.command,
		Schedule: mqttlink.Schedule{
			BackoffBase: c.BackoffBase,
			BackoffCap:  c.BackoffCap,
			RetryWindow: c.RetryWindow,
			QuickRetry:  c.QuickRetry,
			StableAfter: c.StableAfter,
		},
		SendTimeout: c.UploadTimeout,
		AckTimeout:  c.MQTTAckTimeout,
		Clock:       a.deps.Clock,
		Logger:      a.log,
	}
	if cert != nil {
		mc.ClientChain, mc.ClientKey = cert.Certificate, a.key
	} else if c.MQTTUsername == "" {
		a.log.Warn("no device certificate for MQTT: brokers that require client certificates will refuse the connection", "device.cert_file", CertPath(c))
	}
	m, err = uploader.NewMQTT(mc)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: upload.url: %w", err)
	}
	return m, m, nil
}

// readPassword reads the MQTT password from path (upload.mqtt_password_file;
// "" is no password), as mqttlink.ReadPasswordFile does.
func readPassword(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	pw, err := mqttlink.ReadPasswordFile(path)
	if err != nil {
		return "", fmt.Errorf("agent: upload.mqtt_password_file: %w", err)
	}
	return pw, nil
}

// snapshotPending in publisher.snap: the MQTT snapshot command asked for
// the next frame's thumbnail.
const snapshotPending = 1

// notice is what the frame loop hands to the MQTT publisher: the motion
// state and the thumbnail to show.
type notice struct {
	motion, hasMotion bool
	thumb             []byte
}

// publisher feeds Home Assistant's entities from the frame loop's notices
// without ever blocking the loop: a full queue drops the notice (counted).
type publisher struct {
	q       chan notice
	dropped atomic.Int64
	snap    atomic.Int32 // snapshotPending: the next frame's thumbnail is wanted
}

func newPublisher() *publisher { return &publisher{q: make(chan notice, 8)} }

func (p *publisher) offer(n notice) {
	select {
	case p.q <- n:
	default:
		p.dropped.Add(1)
	}
}

// run publishes notices until ctx ends. Failures are logged: the retained
// state is published again on the next connection anyway.
func (a *Agent) publish(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-a.pub.q:
			pctx, cancel := context.WithTimeout(ctx, a.cfg.UploadTimeout)
			if n.hasMotion {
				if err := a.mqtt.PublishMotion(pctx, n.motion); err != nil {
					a.log.Debug("mqtt: motion state not published", "err", err)
				}
			}
			if n.thumb != nil {
				if err := a.mqtt.PublishThumbnail(pctx, n.thumb); err != nil {
					a.log.Debug("mqtt: thumbnail not published", "err", err)
				}
			}
			cancel()
		}
	}
}

// status is the reply to the MQTT "status" command.
type status struct {
	Device      string `json:"device"`
	KeyStore    string `json:"keystore"`
	Version     string `json:"version,omitempty"`
	UptimeS     int64  `json:"uptime_s"`
	Frames      uint64 `json:"frames"`
	FramesLost  uint64 `json:"frames_lost"`       // gaps in the frames' sequence numbers
	FramesLate  uint64 `json:"frames_late"`       // taken up more than two frame intervals after capture
	LateMaxMs   int64  `json:"frame_late_max_ms"` // the longest a frame waited for the frame loop
	Events      uint64 `json:"events"`
	Pending     int    `json:"spool_pending"`
	PendingB    int64  `json:"spool_bytes"`
	Quarantined int    `json:"spool_quarantined"`
	Dropped     int64  `json:"notices_dropped"`
	// QueueDropped counts jobs a full record queue dropped (snapshots;
	// never records); QueueWaits the times the frame loop waited for the
	// record worker because every slot held a record.
	QueueDropped uint64 `json:"record_queue_dropped"`
	QueueWaits   uint64 `json:"record_queue_waits"`
	// Clips (absent with clip.enabled = false).
	*clipStats
}

// command answers a command from the device's own MQTT command topic.
func (a *Agent) command(_ context.Context, name string, _ []byte) (any, error) {
	switch name {
	case uploader.CommandSnapshot:
		if a.e2ee != nil {
			return nil, fmt.Errorf("snapshots are off: e2ee.owner is set, and a snapshot would be a picture in the clear")
		}
		a.pub.snap.Store(snapshotPending)
		return map[string]string{"snapshot": "the next frame's thumbnail will be published"}, nil
	case uploader.CommandStatus:
		st := a.spool.Stats()
		var clips *clipStats
		if a.clips != nil {
			cs := a.clips.stats()
			clips = &cs
		}
		return status{
			clipStats: clips,
			Device:    a.device, KeyStore: a.key.Backend(), Version: a.cfg.Version,
			UptimeS: int64(a.deps.Clock.Now().Sub(a.start) / time.Second),
			Frames:  a.frames.Load(), Events: a.events.Load(),
			FramesLost: a.FramesLost(), FramesLate: a.FramesLate(), LateMaxMs: a.FrameLateMax().Milliseconds(),
			Pending: st.Pending, PendingB: st.Bytes, Quarantined: st.Quarantined,
			Dropped:      a.pub.dropped.Load(),
			QueueDropped: a.recs.dropped.Load(), QueueWaits: a.recs.waits.Load(),
		}, nil
	}
	return nil, fmt.Errorf("unknown command %q (want %s or %s)", name, uploader.CommandSnapshot, uploader.CommandStatus)
}

// snapshot hands f to the record worker to publish its thumbnail, if a
// snapshot was asked for.
func (a *Agent) snapshot(f *capture.Frame) {
	if a.mqtt == nil || !a.pub.snap.CompareAndSwap(snapshotPending, 0) {
		return
	}
	a.hand(job{kind: jobSnapshot}, f)
}

// publishSnapshot publishes f's thumbnail, on the record worker.
func (a *Agent) publishSnapshot(f *capture.Frame) {
	var buf bytes.Buffer
	if err := capture.EncodeThumbnail(&buf, f, a.cfg.ThumbMaxSide, a.cfg.ThumbQuality); err != nil {
		a.log.Warn("snapshot not made", "err", err)
		return
	}
	a.pub.offer(notice{thumb: buf.Bytes()})
}
