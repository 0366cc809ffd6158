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
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/keyframe-cam/keyframe/internal/backoff"
	"github.com/keyframe-cam/keyframe/internal/clock"
	"github.com/keyframe-cam/keyframe/internal/mqttlink"
)

// DefaultMQTTClientID is the receiver's MQTT client ID when
// MQTTConfig.ClientID is empty. The broker keeps the receiver's session
// (subscription and undelivered messages) under it.
const DefaultMQTTClientID = "keyframe-receiver"

// subackFailure is the SUBACK return code of a refused subscription.
const subackFailure = 0x80

// MQTTConfig configures an MQTTIngest. Zero durations take their defaults
// (mqttlink.DefaultKeepAlive, mqttlink.DefaultConnectTimeout and the
// schedule's backoff defaults, the same as the devices').
type MQTTConfig struct {
	// Broker is the broker URL, checked by mqttlink.CheckBrokerURL: tls://
	// (mqtts://, ssl://), or tcp:// only to a loopback host.
	Broker string
	// ClientID names the receiver's persistent session; "" means
	// DefaultMQTTClientID. Two receivers must not share one.
	ClientID string
	// Certificate is the receiver's client certificate (its CN is its
	// username with Mosquitto's use_identity_as_username); RootCAs verifies
	// the broker (nil: the system roots).
	Certificate *tls.Certificate
	RootCAs     *x509.CertPool
	// Username and Password, for brokers that authenticate by password.
	// At least a certificate or a username is required.
	Username, Password string
	// TopicPrefix is the devices' topic prefix; "" means
	// mqttlink.DefaultTopicPrefix. It is checked as the devices check
	// theirs (mqttlink.CheckTopicPrefix).
	TopicPrefix string

	KeepAlive, ConnectTimeout time.Duration
	mqttlink.Schedule         // the reconnect delays

	Clock  clock.Clock  // nil: the system clock
	Rand   backoff.Rand // nil: a randomly seeded generator
	Logger *slog.Logger // nil: discard
	// Dial opens the TCP connection under TLS; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// An Ingester verifies and stores a bundle; *Server is one.
type Ingester interface {
	Ingest(bundle []byte, c Claim) IngestResult
}

// MQTTStats are an MQTTIngest's counters since NewMQTTIngest.
type MQTTStats struct {
	Connected    bool   `json:"connected"`
	Connects     int    `json:"connects"`
	Losses       int    `json:"losses"`
	DialFailures int    `json:"dial_failures"`
	Received     uint64 `json:"received"`   // messages handled (a redelivered one counts again)
	Stored       uint64 `json:"stored"`     // newly stored
	Duplicates   uint64 `json:"duplicates"` // identical re-sends, acknowledged
	Refused      uint64 `json:"refused"`    // refused by Ingest (4xx): logged and counted by it, acknowledged, never retried
	BadTopic     uint64 `json:"bad_topic"`  // not an event topic: logged, acknowledged, not ingested
	Deferred     uint64 `json:"deferred"`   // not acknowledged (the store answered 503) or held back after one: redelivered by the broker
	LastError    string `json:"last_error,omitempty"`
}

// MQTTIngest subscribes to every device's event topic,
// <prefix>/+/events/+/+, at QoS 1 and passes each message to an Ingester
// (the Server) with the topic's device, event and kind as the Claim, so a
// bundle is stored only if its verified signer is the device of its topic.
//
// It acknowledges a message only after Ingest returned: a stored record is
// durable before the broker forgets it. A bundle Ingest refuses (400, 403,
// 409, 413, 422) is logged and counted (by Ingest, and in Refused here) and
// acknowledged: it is not retried. When Ingest answers 503 (the store
// failed, or the server is shutting down) the message is left
// unacknowledged, as is every message after it on that connection (so the
// per-device sequence order holds), and the connection is dropped: the
// broker delivers them again after the reconnect. That needs the persistent
// session the ingest uses (clean session off), which also keeps records
// published while the receiver is away; the broker should persist sessions
// across its own restarts (Mosquitto: persistence true).
//
// The connection is kept up by mqttlink.Redialer: paho's own reconnect is
// off, every reconnect waits a full-jitter delay.
type MQTTIngest struct {
	cfg    MQTTConfig
	srv    Ingester
	broker *url.URL
	tls    *tls.Config
	clk    clock.Clock
	log    *slog.Logger
	redial *mqttlink.Redialer
	filter string

	running atomic.Bool

	mu    sync.Mutex
	live  bool
	stats MQTTStats
}

// NewMQTTIngest checks cfg and returns an ingest for srv; Run connects it.
func NewMQTTIngest(cfg MQTTConfig, srv Ingester) (*MQTTIngest, error) {
	if srv == nil {
		return nil, errors.New("receiver: mqtt: no Ingester")
	}
	u, err := mqttlink.CheckBrokerURL(cfg.Broker)
	if err != nil {
		return nil, fmt.Errorf("receiver: mqtt: %w", err)
	}
	if cfg.ClientID == "" {
		cfg.ClientID = DefaultMQTTClientID
	}
	if len(cfg.ClientID) > 128 || strings.ContainsAny(cfg.ClientID, "+#/\x00") {
		return nil, fmt.Errorf("receiver: mqtt: ClientID %q: want at most 128 bytes without +, #, / or NUL", clip(cfg.ClientID))
	}
	if cfg.TopicPrefix == "" {
		cfg.TopicPrefix = mqttlink.DefaultTopicPrefix
	}
	if err := mqttlink.CheckTopicPrefix(cfg.TopicPrefix); err != nil {
		return nil, fmt.Errorf("receiver: mqtt: TopicPrefix: %w", err)
	}
	if cfg.Certificate == nil && cfg.Username == "" {
		return nil, errors.New("receiver: mqtt: no credentials: set Certificate or Username")
	}
	if cfg.Password != "" && cfg.Username == "" {
		return nil, errors.New("receiver: mqtt: Password without Username")
	}
	def := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&cfg.KeepAlive, mqttlink.DefaultKeepAlive)
	def(&cfg.ConnectTimeout, mqttlink.DefaultConnectTimeout)
	m := &MQTTIngest{
		cfg: cfg, srv: srv, broker: u, clk: clock.Or(cfg.Clock), log: cfg.Logger,
		filter: mqttlink.EventFilter(cfg.TopicPrefix),
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.tls = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs, ServerName: u.Hostname()}
	if cfg.Certificate != nil {
		m.tls.Certificates = []tls.Certificate{*cfg.Certificate}
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
func (m *MQTTIngest) Stats() MQTTStats {
	r := m.redial.Stats()
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.stats
	st.Connected = m.live
	st.Connects, st.Losses, st.DialFailures, st.LastError = r.Connects, r.Losses, r.Failures, r.LastError
	return st
}

// Run connects, subscribes and ingests until ctx is done, reconnecting with
// jittered backoff; it returns ctx's error. Run must not be called twice at
// once.
func (m *MQTTIngest) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("receiver: mqtt: Run is already running")
	}
	defer m.running.Store(false)
	return m.redial.Run(ctx, m.dial)
}

// errDeferred is the loss reason when the ingest drops its connection to
// get messages delivered again.
var errDeferred = errors.New("dropped the connection to have unacknowledged records delivered again")

// ingestSession is one paho client, used for one connection.
type ingestSession struct {
	m     *MQTTIngest
	c     paho.Client
	lost  chan error
	close sync.Once
	// deferring is set once a message was left unacknowledged: every later
	// message on this connection is left too, so none overtakes it.
	deferring atomic.Bool
}

func (s *ingestSession) Lost() <-chan error { return s.lost }

func (s *ingestSession) Close() {
	s.close.Do(func() {
		s.m.setLive(false)
		s.c.Disconnect(250)
	})
}

func (s *ingestSession) lose(err error) {
	s.m.setLive(false)
	select {
	case s.lost <- err:
	default:
	}
}

func (m *MQTTIngest) setLive(v bool) {
	m.mu.Lock()
	m.live = v
	m.mu.Unlock()
}

func (m *MQTTIngest) count(f func(*MQTTStats)) {
	m.mu.Lock()
	f(&m.stats)
	m.mu.Unlock()
}

// dial connects with a persistent session and subscribes.
func (m *MQTTIngest) dial(ctx context.Context) (mqttlink.Session, error) {
	s := &ingestSession{m: m, lost: make(chan error, 1)}
	opts := paho.NewClientOptions()
	opts.AddBroker(m.broker.String())
	opts.SetClientID(m.cfg.ClientID)
	opts.SetProtocolVersion(4)
	opts.SetCleanSession(false) // the broker keeps what arrives while we are away
	opts.SetAutoReconnect(false)
	opts.SetConnectRetry(false)
	opts.SetStore(paho.NewMemoryStore())
	opts.SetOrderMatters(true)    // one message at a time, in order
	opts.SetAutoAckDisabled(true) // acknowledged after Ingest, see onMessage
	opts.SetKeepAlive(m.cfg.KeepAlive)
	opts.SetConnectTimeout(m.cfg.ConnectTimeout)
	if m.cfg.Username != "" {
		opts.SetUsername(m.cfg.Username)
		opts.SetPassword(m.cfg.Password)
	}
	opts.SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, m.cfg.ConnectTimeout)
		defer cancel()
		return mqttlink.DialBroker(dctx, m.broker, m.tls, m.cfg.Dial)
	})
	opts.SetConnectionLostHandler(func(_ paho.Client, err error) {
		if err == nil {
			err = errors.New("connection closed")
		}
		s.lose(err)
	})
	// Messages of the kept session can arrive before Subscribe returns.
	opts.SetDefaultPublishHandler(s.onMessage)
	s.c = paho.NewClient(opts)

	tok := s.c.Connect()
	if err := m.await(ctx, tok, m.cfg.ConnectTimeout+time.Second); err != nil {
		go func() { <-tok.Done(); s.c.Disconnect(0) }()
		return nil, fmt.Errorf("receiver: mqtt: connect to %s: %w", m.broker.Host, err)
	}
	stok := s.c.Subscribe(m.filter, 1, s.onMessage)
	err := m.await(ctx, stok, m.cfg.ConnectTimeout)
	if st, ok := stok.(*paho.SubscribeToken); err == nil && ok {
		if code, ok := st.Result()[m.filter]; !ok || code == subackFailure {
			err = errors.New("the broker refused the subscription (check the receiver's ACL: read on <prefix>/+/events/#)")
		}
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("receiver: mqtt: subscribe %s: %w", m.filter, err)
	}
	m.setLive(true)
	return s, nil
}

// await waits for a paho token, ctx or the timeout.
func (m *MQTTIngest) await(ctx context.Context, tok paho.Token, timeout time.Duration) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-m.clk.After(timeout):
		return fmt.Errorf("no answer from the broker within %s", timeout)
	}
}

// onMessage ingests one message. paho calls it for one message at a time
// (OrderMatters) and does not acknowledge it by itself (AutoAckDisabled).
func (s *ingestSession) onMessage(_ paho.Client, msg paho.Message) {
	m := s.m
	if s.deferring.Load() {
		m.count(func(st *MQTTStats) { st.Deferred++ })
		return // not acknowledged: delivered again after the reconnect
	}
	m.count(func(st *MQTTStats) { st.Received++ })
	device, event, kind, ok := m.parseTopic(msg.Topic())
	if !ok {
		m.count(func(st *MQTTStats) { st.BadTopic++ })
		m.log.Warn("receiver: mqtt: message on a topic that is not <prefix>/<device>/events/<event>/<kind>; dropped",
			"topic", clip(msg.Topic()), "bytes", len(msg.Payload()))
		msg.Ack()
		return
	}
	res := m.srv.Ingest(msg.Payload(), Claim{Device: device, Event: event, Kind: kind, CheckEventKind: true})
	switch {
	case res.Status == http.StatusCreated:
		m.count(func(st *MQTTStats) { st.Stored++ })
	case res.Status == http.StatusOK:
		m.count(func(st *MQTTStats) { st.Duplicates++ })
	case (res.Status == http.StatusServiceUnavailable || res.Status == http.StatusTooManyRequests) && res.Reason != ReasonSeqJump:
		// A sequence jump is refused, not deferred: waiting for its
		// allowance would hold every device's messages behind it.
		s.deferring.Store(true)
		m.count(func(st *MQTTStats) { st.Deferred++ })
		m.log.Warn("receiver: mqtt: cannot store a record now; leaving it unacknowledged and reconnecting so the broker delivers it again",
			"device", clip(device), "event", clip(event), "kind", clip(kind), "reason", res.Reason, "detail", res.Message)
		s.lose(errDeferred)
		return
	default:
		// Ingest logged and counted the refusal; acknowledging drops it.
		m.count(func(st *MQTTStats) { st.Refused++ })
	}
	msg.Ack()
}

// parseTopic splits <prefix>/<device>/events/<event>/<kind>, the topic the
// devices build (mqttlink.EventTopic).
func (m *MQTTIngest) parseTopic(topic string) (device, event, kind string, ok bool) {
	return mqttlink.ParseEventTopic(m.cfg.TopicPrefix, topic)
}
