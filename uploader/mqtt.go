package uploader

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/keyframe-cam/keyframe/internal/backoff"
	"github.com/keyframe-cam/keyframe/internal/clock"
	"github.com/keyframe-cam/keyframe/internal/mqttlink"
	"github.com/keyframe-cam/keyframe/provenance"
)

// MQTT topic layout and payloads; docs/mqtt.md describes them.
const (
	// DefaultTopicPrefix is the first level of every keyframe topic.
	DefaultTopicPrefix = mqttlink.DefaultTopicPrefix
	// DefaultDiscoveryPrefix is Home Assistant's MQTT discovery prefix.
	DefaultDiscoveryPrefix = "homeassistant"

	// StatusOnline and StatusOffline are the retained payloads of
	// <prefix>/<device>/status; "offline" is also the last will.
	StatusOnline  = "online"
	StatusOffline = "offline"
	// MotionOn and MotionOff are the retained payloads of
	// <prefix>/<device>/motion.
	MotionOn  = "ON"
	MotionOff = "OFF"

	// CommandSnapshot asks the device for a fresh thumbnail.
	CommandSnapshot = "snapshot"
	// CommandStatus asks the device to publish its state.
	CommandStatus = "status"

	// MaxCommandPayload bounds a command's payload; a larger one is refused.
	MaxCommandPayload = 4 << 10
	// MaxThumbnail bounds PublishThumbnail's JPEG.
	MaxThumbnail = 4 << 20
	// DefaultMaxPayload is MQTTConfig.MaxPayload's default, the receiver's
	// default body limit.
	DefaultMaxPayload = mqttlink.DefaultMaxPayload

	// Defaults of MQTTConfig.
	DefaultKeepAlive      = mqttlink.DefaultKeepAlive
	DefaultConnectTimeout = mqttlink.DefaultConnectTimeout
	DefaultSendTimeout    = 30 * time.Second
	// DefaultAckTimeout is MQTTConfig.AckTimeout's default.
	DefaultAckTimeout = time.Minute

	// commandQueue is how many commands wait for the handler; more are
	// dropped, logged and counted.
	commandQueue = 8
	// closeTimeout bounds the "offline" publish at shutdown.
	closeTimeout = 2 * time.Second
	// subackFailure is the SUBACK return code of a refused subscription.
	subackFailure = 0x80
)

// ErrNotConnected is wrapped by MQTT's methods when no broker connection is
// up. Send's error is retried by the Uploader like any network failure.
var ErrNotConnected = errors.New("not connected to the MQTT broker")

// MQTTConfig configures an MQTT transport for one device. Zero durations take
// their defaults.
type MQTTConfig struct {
	// Broker is the broker URL: tls://host[:8883] (also mqtts:// and
	// ssl://), or tcp://host[:1883] only for a loopback host, or a
	// private-network one with AllowPlaintextLAN (see
	// mqttlink.CheckBrokerURL).
	Broker string
	// AllowPlaintextLAN allows a tcp:// Broker on a private network
	// (mqttlink.URLRules): the password, records (still signed) and
	// thumbnails then cross the LAN in the clear.
	AllowPlaintextLAN bool
	// DeviceID is the device's ID (provenance.DeviceID); the topics are
	// under <TopicPrefix>/<DeviceID>/. With Mosquitto's
	// use_identity_as_username it must equal the certificate's CN.
	DeviceID string
	// ClientChain is the client certificate chain (DER, leaf first) and
	// ClientKey its private key, e.g. the device key held in a TPM: it only
	// has to be a crypto.Signer. Both or neither.
	ClientChain [][]byte
	ClientKey   crypto.Signer
	// RootCAs verifies the broker's certificate; nil means the system roots.
	RootCAs *x509.CertPool
	// Username and Password, for brokers that authenticate by password
	// (over TLS). At least a client certificate or a username is required.
	Username, Password string

	// TopicPrefix is the first topic level; "" means DefaultTopicPrefix.
	TopicPrefix string
	// DiscoveryPrefix is Home Assistant's discovery prefix; "" means
	// DefaultDiscoveryPrefix. NoDiscovery turns discovery off.
	DiscoveryPrefix string
	NoDiscovery     bool
	// DeviceName names the device in Home Assistant; "" means
	// "keyframe <DeviceID>". SWVersion, if set, is shown there too.
	DeviceName, SWVersion string

	// OnCommand handles "snapshot" and "status"; nil answers "status" with
	// the connection counters only and refuses "snapshot".
	OnCommand CommandFunc

	// MaxPayload is the largest bundle Send publishes; a larger one is a
	// permanent error (quarantined, as the receiver's 413 would be), never
	// handed to a broker that may drop it after acknowledging it (Mosquitto
	// does so above its message_size_limit). 0 means DefaultMaxPayload.
	MaxPayload int

	// KeepAlive is the MQTT keep-alive; ConnectTimeout bounds a connection
	// attempt (TCP, TLS, CONNECT); SendTimeout bounds the wait for a PUBACK
	// (Send also stops at its context's end); AckTimeout bounds Send's wait,
	// after the PUBACK, for the receiver's ack of the record (default
	// DefaultAckTimeout): without it in time the record stays in the spool
	// and is sent again.
	KeepAlive, ConnectTimeout, SendTimeout, AckTimeout time.Duration
	// Schedule shapes the reconnect delays.
	mqttlink.Schedule

	Clock  clock.Clock  // nil: the system clock
	Rand   backoff.Rand // nil: a randomly seeded generator
	Logger *slog.Logger // nil: discard
	// Dial opens the TCP connection under TLS; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// MQTTStats are an MQTT transport's counters since NewMQTT.
type MQTTStats struct {
	Connected       bool   `json:"connected"`
	Connects        int    `json:"connects"`         // successful connections
	Losses          int    `json:"losses"`           // connections lost
	DialFailures    int    `json:"dial_failures"`    // failed connection attempts
	Published       int    `json:"published"`        // event records acknowledged (PUBACK) by the broker
	Acked           int    `json:"acked"`            // event records the receiver acknowledged as stored (201) or already stored (200)
	AckRefused      int    `json:"ack_refused"`      // event records the receiver answered with a 4xx (429 included)
	AckTimeouts     int    `json:"ack_timeouts"`     // sends that got no ack in AckTimeout (or lost the connection first): sent again later
	BadAcks         int    `json:"bad_acks"`         // malformed, cut or retained messages on the ack topic: ignored
	Commands        int    `json:"commands"`         // commands answered successfully
	CommandsRefused int    `json:"commands_refused"` // unknown, oversized, retained, failed or off-topic commands
	CommandsDropped int    `json:"commands_dropped"` // commands dropped because the queue was full
	LastError       string `json:"last_error,omitempty"`
}

// MQTT is an MQTT 3.1.1 transport for one device (paho.mqtt.golang
// underneath). It implements Transport: Send publishes a record's bundle at
// QoS 1 on <prefix>/<device>/events/<event>/<kind> and returns once the
// receiver acknowledged it on <prefix>/<device>/ack (an mqttlink.Ack naming
// the bundle's SHA-256), not when the broker did. Run keeps the connection up with its own
// jittered reconnect loop (paho's auto-reconnect and connect-retry are off,
// its store is in memory only: the Spool is the source of truth). On every
// connect it publishes the retained status "online" (with "offline" as the
// retained last will), Home Assistant discovery, and the last motion state
// and thumbnail; it subscribes to <prefix>/<device>/cmd/+.
//
// A PUBACK means only that the broker took the record: a broker drops
// messages it acknowledged (a full queue, a size limit, a refused topic),
// so the spool keeps a record until the receiver's ack (docs/mqtt.md).
// Every packet read from the broker is bounded (mqttlink.LimitConn): a
// command over MaxCommandPayload is never read into memory, nor run.
type MQTT struct {
	cfg    MQTTConfig
	broker *url.URL
	tls    *tls.Config
	clk    clock.Clock
	log    *slog.Logger
	redial *mqttlink.Redialer
	topics mqttTopics
	retain [][2]string // discovery topic and payload, published on connect
	cmds   chan command

	running atomic.Bool

	mu     sync.Mutex
	acks   []*ackWait // Sends waiting for their ack
	cur    *mqttSession
	motion string // last motion payload, "" if none yet
	thumb  []byte // last thumbnail, nil if none yet
	stats  MQTTStats
}

type mqttTopics struct {
	status, motion, thumbnail, state string
	cmdPrefix, cmdFilter, probe, ack string
}

// ackWait is a Send waiting for the receiver's ack of the payload sum.
type ackWait struct {
	sum, event, kind string
	ch               chan mqttlink.Ack // buffered: one ack
}

// NewMQTT checks cfg and returns a transport; Run connects it.
func NewMQTT(cfg MQTTConfig) (*MQTT, error) {
	u, err := mqttlink.CheckBrokerURL(cfg.Broker, mqttlink.URLRules{PlaintextLAN: cfg.AllowPlaintextLAN})
	if err != nil {
		return nil, fmt.Errorf("uploader: mqtt: %w", err)
	}
	if !provenance.ValidID(cfg.DeviceID) {
		return nil, fmt.Errorf("uploader: mqtt: DeviceID %q is not 1-64 characters of [A-Za-z0-9_-]", cfg.DeviceID)
	}
	if cfg.TopicPrefix == "" {
		cfg.TopicPrefix = DefaultTopicPrefix
	}
	if err := mqttlink.CheckTopicPrefix(cfg.TopicPrefix); err != nil {
		return nil, fmt.Errorf("uploader: mqtt: TopicPrefix: %w", err)
	}
	if cfg.DiscoveryPrefix == "" {
		cfg.DiscoveryPrefix = DefaultDiscoveryPrefix
	}
	if err := mqttlink.CheckTopicPrefix(cfg.DiscoveryPrefix); err != nil {
		return nil, fmt.Errorf("uploader: mqtt: DiscoveryPrefix: %w", err)
	}
	if (len(cfg.ClientChain) == 0) != (cfg.ClientKey == nil) {
		return nil, errors.New("uploader: mqtt: ClientChain and ClientKey go together: set both or neither")
	}
	if cfg.ClientKey == nil && cfg.Username == "" {
		return nil, errors.New("uploader: mqtt: no credentials: set ClientChain and ClientKey (a client certificate) or Username")
	}
	if cfg.Password != "" && cfg.Username == "" {
		return nil, errors.New("uploader: mqtt: Password without Username")
	}
	def := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&cfg.KeepAlive, DefaultKeepAlive)
	def(&cfg.ConnectTimeout, DefaultConnectTimeout)
	def(&cfg.SendTimeout, DefaultSendTimeout)
	def(&cfg.AckTimeout, DefaultAckTimeout)
	if cfg.MaxPayload < 0 {
		return nil, fmt.Errorf("uploader: mqtt: MaxPayload %d is negative", cfg.MaxPayload)
	}
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	if cfg.DeviceName == "" {
		cfg.DeviceName = "keyframe " + cfg.DeviceID
	}
	m := &MQTT{cfg: cfg, broker: u, clk: clock.Or(cfg.Clock), log: cfg.Logger, cmds: make(chan command, commandQueue)}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs, ServerName: u.Hostname()}
	if cfg.ClientKey != nil {
		leaf, err := x509.ParseCertificate(cfg.ClientChain[0])
		if err != nil {
			return nil, fmt.Errorf("uploader: mqtt: client certificate: %w", err)
		}
		pub, ok := cfg.ClientKey.Public().(interface{ Equal(crypto.PublicKey) bool })
		if !ok || !pub.Equal(leaf.PublicKey) {
			return nil, errors.New("uploader: mqtt: ClientKey is not the key of the client certificate")
		}
		if leaf.Subject.CommonName != cfg.DeviceID {
			m.log.Warn("uploader: mqtt: the client certificate's CN is not the device ID; a broker that takes the identity as the username will refuse this device's topics",
				"cn", leaf.Subject.CommonName, "device", cfg.DeviceID)
		}
		tc.Certificates = []tls.Certificate{{Certificate: cfg.ClientChain, PrivateKey: cfg.ClientKey, Leaf: leaf}}
	}
	m.tls = tc
	base := mqttlink.DeviceTopic(cfg.TopicPrefix, cfg.DeviceID)
	m.topics = mqttTopics{
		status:    base + "status",
		motion:    base + "motion",
		thumbnail: base + "thumbnail",
		state:     base + "state",
		cmdPrefix: base + "cmd/",
		cmdFilter: base + "cmd/+",
		probe:     base + "probe",
		ack:       mqttlink.AckTopic(cfg.TopicPrefix, cfg.DeviceID),
	}
	if !cfg.NoDiscovery {
		m.retain, err = discovery(cfg, m.topics)
		if err != nil {
			return nil, err
		}
	}
	m.redial = mqttlink.NewRedialer(mqttlink.RedialConfig{
		Name:     "mqtt broker " + u.Host,
		Schedule: cfg.Schedule,
		Clock:    m.clk,
		Rand:     cfg.Rand,
		Logger:   m.log,
	})
	return m, nil
}

// Stats returns the counters.
func (m *MQTT) Stats() MQTTStats {
	r := m.redial.Stats()
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.stats
	st.Connected = m.cur != nil
	st.Connects, st.Losses, st.DialFailures = r.Connects, r.Losses, r.Failures
	st.LastError = r.LastError
	return st
}

// Connected reports whether a broker connection is up and announced.
func (m *MQTT) Connected() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur != nil
}

// Run connects and keeps the connection up until ctx is done; then it
// publishes the retained status "offline", disconnects and returns ctx's
// error. Commands are handled while Run runs. Run must not be called twice at
// once.
func (m *MQTT) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("uploader: mqtt: Run is already running")
	}
	defer m.running.Store(false)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { m.commandLoop(ctx) })
	err := m.redial.Run(ctx, m.dial)
	cancel()
	wg.Wait()
	return err
}

// Send publishes r's bundle at QoS 1 and waits, up to AckTimeout, for the
// receiver's ack of it. It returns nil once the receiver stored it (or had
// it already); a *StatusError for a refusal (permanent for 400, 403, 409,
// 413, 422, as over HTTP) or a 429 (with its RetryAfter). Without a
// connection it fails at once with ErrNotConnected; a lost connection,
// SendTimeout (for the PUBACK), AckTimeout or ctx end it with an error. All
// but the permanent refusals are retried by the Uploader; an invalid event
// or kind, or a bundle over MaxPayload, is a permanent error.
func (m *MQTT) Send(ctx context.Context, r Record) error {
	if !provenance.ValidID(r.Event) || !validKind(r.Kind) {
		return &permanentError{fmt.Errorf("uploader: mqtt: send %d: invalid event %q or kind %q", r.Seq, r.Event, r.Kind)}
	}
	if len(r.Data) > m.cfg.MaxPayload {
		return &permanentError{fmt.Errorf("uploader: mqtt: send %d (%s/%s): bundle of %d bytes is over MaxPayload %d", r.Seq, r.Event, r.Kind, len(r.Data), m.cfg.MaxPayload)}
	}
	s := m.current()
	if s == nil {
		return fmt.Errorf("uploader: mqtt: send %d (%s/%s): %w", r.Seq, r.Event, r.Kind, ErrNotConnected)
	}
	// Waiting before publishing: the ack may overtake the PUBACK.
	w := &ackWait{sum: mqttlink.PayloadSum(r.Data), event: r.Event, kind: r.Kind, ch: make(chan mqttlink.Ack, 1)}
	m.mu.Lock()
	m.acks = append(m.acks, w)
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.acks = slices.DeleteFunc(m.acks, func(x *ackWait) bool { return x == w })
		m.mu.Unlock()
	}()
	tok := s.c.Publish(mqttlink.EventTopic(m.cfg.TopicPrefix, m.cfg.DeviceID, r.Event, r.Kind), 1, false, r.Data)
	if err := m.await(ctx, tok, m.cfg.SendTimeout); err != nil {
		return fmt.Errorf("uploader: mqtt: send %d (%s/%s): %w", r.Seq, r.Event, r.Kind, err)
	}
	m.count(func(st *MQTTStats) { st.Published++ })
	var a mqttlink.Ack
	select {
	case a = <-w.ch:
	case <-ctx.Done():
		return fmt.Errorf("uploader: mqtt: send %d (%s/%s): waiting for the receiver's ack: %w", r.Seq, r.Event, r.Kind, ctx.Err())
	case <-s.gone:
		m.count(func(st *MQTTStats) { st.AckTimeouts++ })
		return fmt.Errorf("uploader: mqtt: send %d (%s/%s): the connection was lost before the receiver's ack; will send again", r.Seq, r.Event, r.Kind)
	case <-m.clk.After(m.cfg.AckTimeout):
		m.count(func(st *MQTTStats) { st.AckTimeouts++ })
		return fmt.Errorf("uploader: mqtt: send %d (%s/%s): %w: no ack from the receiver within %s (the broker took the record; the receiver may be away); will send again",
			r.Seq, r.Event, r.Kind, errNoAck, m.cfg.AckTimeout)
	}
	if a.Status == 200 || a.Status == 201 {
		m.count(func(st *MQTTStats) { st.Acked++ })
		return nil
	}
	m.count(func(st *MQTTStats) { st.AckRefused++ })
	return &StatusError{Code: a.Status, Reason: a.Reason, RetryAfter: time.Duration(a.RetryAfter) * time.Second}
}

// receiveAck hands an ack to the Send waiting for it. An ack nobody waits
// for (a late one, for a send that timed out) is dropped.
func (m *MQTT) receiveAck(payload []byte, retained, cut bool) {
	a, err := mqttlink.ParseAck(payload)
	switch {
	case cut:
		err = errors.New("ack over the packet limit")
	case retained:
		err = errors.New("retained ack")
	}
	if err != nil {
		var n int
		m.count(func(st *MQTTStats) { st.BadAcks++; n = st.BadAcks })
		if n&(n-1) == 0 { // the 1st, 2nd, 4th...: bounded lines
			m.log.Warn("uploader: mqtt: ignored a bad message on the ack topic", "err", err, "bad_acks", n)
		}
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range m.acks {
		if w.sum == a.SHA256 && w.event == a.Event && w.kind == a.Kind {
			select {
			case w.ch <- a:
			default:
			}
		}
	}
}

func (m *MQTT) count(f func(*MQTTStats)) {
	m.mu.Lock()
	f(&m.stats)
	m.mu.Unlock()
}

// PublishMotion publishes the retained motion state ("ON"/"OFF") for Home
// Assistant's binary_sensor. The value is kept and published again on every
// connect, so after an outage Home Assistant sees the current state; without
// a connection the error wraps ErrNotConnected.
func (m *MQTT) PublishMotion(ctx context.Context, on bool) error {
	v := MotionOff
	if on {
		v = MotionOn
	}
	m.mu.Lock()
	m.motion = v
	m.mu.Unlock()
	return m.publishRetained(ctx, m.topics.motion, []byte(v))
}

// PublishThumbnail publishes a JPEG, retained, for Home Assistant's camera
// entity. Like PublishMotion, the last one is published again on connect.
func (m *MQTT) PublishThumbnail(ctx context.Context, jpeg []byte) error {
	if len(jpeg) == 0 || len(jpeg) > MaxThumbnail {
		return fmt.Errorf("uploader: mqtt: thumbnail of %d bytes: want 1 to %d", len(jpeg), MaxThumbnail)
	}
	b := append([]byte(nil), jpeg...)
	m.mu.Lock()
	m.thumb = b
	m.mu.Unlock()
	return m.publishRetained(ctx, m.topics.thumbnail, b)
}

func (m *MQTT) publishRetained(ctx context.Context, topic string, payload []byte) error {
	s := m.current()
	if s == nil {
		return fmt.Errorf("uploader: mqtt: publish %s: %w (kept for the next connect)", topic, ErrNotConnected)
	}
	if err := m.await(ctx, s.c.Publish(topic, 1, true, payload), m.cfg.SendTimeout); err != nil {
		return fmt.Errorf("uploader: mqtt: publish %s: %w", topic, err)
	}
	return nil
}

func (m *MQTT) current() *mqttSession {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur
}

func (m *MQTT) setCurrent(s *mqttSession) {
	m.mu.Lock()
	m.cur = s
	m.mu.Unlock()
}

// dropCurrent forgets s if it is the current session.
func (m *MQTT) dropCurrent(s *mqttSession) {
	m.mu.Lock()
	if m.cur == s {
		m.cur = nil
	}
	m.mu.Unlock()
}

// errClosed is the loss reason when paho reports a lost connection without
// an error.
var errClosed = errors.New("connection closed")

// errNoAck is returned when a token did not complete in time.
var errNoAck = errors.New("no answer from the broker in time")

// await waits for a paho token, ctx or the timeout.
func (m *MQTT) await(ctx context.Context, tok paho.Token, timeout time.Duration) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-m.clk.After(timeout):
		return fmt.Errorf("%w (%s)", errNoAck, timeout)
	}
}

// mqttSession is one paho client, used for one connection only (paho warns
// that reusing a client after Disconnect may panic).
type mqttSession struct {
	m     *MQTT
	c     paho.Client
	lost  chan error
	close sync.Once
	nonce string        // the identity probe's payload
	echo  chan struct{} // the probe came back
	gone  chan struct{} // closed when the connection is lost or closed
	once  sync.Once     // closes gone
}

func (s *mqttSession) ended() { s.once.Do(func() { close(s.gone) }) }

func (s *mqttSession) Lost() <-chan error { return s.lost }

// Close publishes the retained "offline" (if the connection is still open)
// and disconnects cleanly, so the broker discards the will.
func (s *mqttSession) Close() {
	s.close.Do(func() {
		s.m.dropCurrent(s)
		defer s.ended()
		if s.c.IsConnectionOpen() {
			tok := s.c.Publish(s.m.topics.status, 1, true, StatusOffline)
			if err := s.m.await(context.Background(), tok, closeTimeout); err != nil {
				s.m.log.Warn("uploader: mqtt: could not publish offline status; the broker's last will says it instead", "err", err)
			}
		}
		s.c.Disconnect(250)
	})
}

// connLost is paho's connection-lost callback.
func (s *mqttSession) connLost(_ paho.Client, err error) {
	s.m.dropCurrent(s)
	s.ended()
	if err == nil {
		err = errClosed
	}
	select {
	case s.lost <- err:
	default:
	}
}

// onMessage is paho's message callback. It must not block (paho's router
// waits for it): commands go to a bounded queue.
func (s *mqttSession) onMessage(_ paho.Client, msg paho.Message) {
	topic, cutSize := msg.Topic(), -1
	if orig, size, _, ok := mqttlink.ParseCut(topic); ok {
		topic, cutSize = orig, size // over the packet limit: not read
	}
	switch topic {
	case s.m.topics.probe:
		if cutSize < 0 && string(msg.Payload()) == s.nonce {
			select {
			case s.echo <- struct{}{}:
			default:
			}
		}
	case s.m.topics.ack:
		s.m.receiveAck(msg.Payload(), msg.Retained(), cutSize >= 0)
	default:
		s.m.receiveCommand(s, topic, msg.Payload(), msg.Retained(), cutSize)
	}
}

// dial makes one connection: connect, subscribe to the command topic,
// publish the retained status, discovery and last states.
func (m *MQTT) dial(ctx context.Context) (mqttlink.Session, error) {
	s := &mqttSession{m: m, lost: make(chan error, 1), nonce: rand.Text(), echo: make(chan struct{}, 1), gone: make(chan struct{})}
	opts := paho.NewClientOptions()
	opts.AddBroker(m.broker.String())
	opts.SetClientID("keyframe-" + m.cfg.DeviceID)
	opts.SetProtocolVersion(4) // MQTT 3.1.1
	opts.SetCleanSession(true) // stale commands are not wanted; the Spool keeps records
	opts.SetAutoReconnect(false)
	opts.SetConnectRetry(false)
	opts.SetStore(paho.NewMemoryStore())
	opts.SetOrderMatters(true)
	opts.SetKeepAlive(m.cfg.KeepAlive)
	opts.SetConnectTimeout(m.cfg.ConnectTimeout)
	opts.SetBinaryWill(m.topics.status, []byte(StatusOffline), 1, true)
	if m.cfg.Username != "" {
		opts.SetUsername(m.cfg.Username)
		opts.SetPassword(m.cfg.Password)
	}
	opts.SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, m.cfg.ConnectTimeout)
		defer cancel()
		c, err := mqttlink.DialBroker(dctx, m.broker, m.tls, m.cfg.Dial)
		if err != nil {
			return nil, err
		}
		// Commands (MaxCommandPayload), acks and the probe are small:
		// nothing larger is read into memory.
		return mqttlink.LimitConn(c, MaxCommandPayload+mqttlink.PacketOverhead), nil
	})
	opts.SetConnectionLostHandler(s.connLost)
	opts.SetDefaultPublishHandler(s.onMessage)
	s.c = paho.NewClient(opts)

	tok := s.c.Connect()
	if err := m.await(ctx, tok, m.cfg.ConnectTimeout+time.Second); err != nil {
		go func() { <-tok.Done(); s.c.Disconnect(0) }()
		return nil, fmt.Errorf("uploader: mqtt: connect to %s: %w", m.broker.Host, mqttlink.ExplainConnect(err, m.cfg.Username))
	}
	fail := func(err error) (mqttlink.Session, error) {
		// "online" may be out already: Close says "offline" again.
		s.Close()
		return nil, err
	}
	filters := map[string]byte{m.topics.cmdFilter: 1, m.topics.probe: 1, m.topics.ack: 1}
	stok := s.c.SubscribeMultiple(filters, s.onMessage)
	if err := m.await(ctx, stok, m.cfg.SendTimeout); err != nil {
		return fail(fmt.Errorf("uploader: mqtt: subscribe %s: %w", m.topics.cmdFilter, err))
	}
	if st, ok := stok.(*paho.SubscribeToken); ok {
		for f := range filters {
			if code, ok := st.Result()[f]; !ok || code == subackFailure {
				return fail(fmt.Errorf("uploader: mqtt: the broker refused the subscription to %s (is the certificate's CN, or the username, this device's ID?)", f))
			}
		}
	}
	// Identity probe. An MQTT 3.1.1 broker acknowledges a publish its ACL
	// refuses and drops it silently: a device whose broker identity is not
	// its device ID would see every record "delivered" and lose it. So the
	// device publishes a nonce on its own probe topic and waits to receive
	// it back before it calls the connection usable.
	if err := m.await(ctx, s.c.Publish(m.topics.probe, 1, false, s.nonce), m.cfg.SendTimeout); err != nil {
		return fail(fmt.Errorf("uploader: mqtt: publish %s: %w", m.topics.probe, err))
	}
	select {
	case <-s.echo:
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-m.clk.After(m.cfg.SendTimeout):
		return fail(fmt.Errorf("uploader: mqtt: the broker did not deliver this device's own message on %s within %s: it refuses this device's topics, and would drop its records silently (with Mosquitto's use_identity_as_username the certificate's CN must be the device ID %s)",
			m.topics.probe, m.cfg.SendTimeout, m.cfg.DeviceID))
	}
	m.mu.Lock()
	pubs := append([][2]string{{m.topics.status, StatusOnline}}, m.retain...)
	if m.motion != "" {
		pubs = append(pubs, [2]string{m.topics.motion, m.motion})
	}
	thumb := m.thumb
	m.mu.Unlock()
	for _, p := range pubs {
		if err := m.await(ctx, s.c.Publish(p[0], 1, true, p[1]), m.cfg.SendTimeout); err != nil {
			return fail(fmt.Errorf("uploader: mqtt: publish %s: %w", p[0], err))
		}
	}
	if thumb != nil {
		if err := m.await(ctx, s.c.Publish(m.topics.thumbnail, 1, true, thumb), m.cfg.SendTimeout); err != nil {
			return fail(fmt.Errorf("uploader: mqtt: publish %s: %w", m.topics.thumbnail, err))
		}
	}
	m.setCurrent(s)
	// A loss during the announcements above is already in s.lost; the
	// Redialer sees it at once.
	return s, nil
}
