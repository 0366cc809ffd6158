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
	"github.com/keyframe-cam/keyframe/provenance"
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
	// (mqtts://, ssl://), or tcp:// only to a loopback host, or to a
	// private-network one with AllowPlaintextLAN.
	Broker string
	// AllowPlaintextLAN allows a tcp:// Broker on a private network
	// (mqttlink.URLRules): the password and the records (still signed)
	// then cross the LAN in the clear.
	AllowPlaintextLAN bool
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
	// PasswordFile, if set and Password is empty, is read for the password
	// by NewMQTTIngest (mqttlink.ReadPasswordFile: its first line; not
	// readable by other users).
	PasswordFile string
	// TopicPrefix is the devices' topic prefix; "" means
	// mqttlink.DefaultTopicPrefix. It is checked as the devices check
	// theirs (mqttlink.CheckTopicPrefix).
	TopicPrefix string

	// MaxPayload is the largest message payload read (the Server's
	// MaxBody); 0 means mqttlink.DefaultMaxPayload. A larger message is
	// never read into memory: the connection's framing reader
	// (mqttlink.LimitConn) cuts it to nothing, and it is acknowledged to
	// the device as 413 and to the broker.
	MaxPayload int

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
	Refused      uint64 `json:"refused"`    // refused by Ingest (4xx but 429): logged and counted by it, acknowledged, never retried
	Throttled    uint64 `json:"throttled"`  // answered 429 by Ingest (quota, seq_jump): the device is told when to retry, the message acknowledged
	BadTopic     uint64 `json:"bad_topic"`  // not an event topic: logged, acknowledged, not ingested
	Retained     uint64 `json:"retained"`   // retained messages on event topics: ignored, acknowledged, never ingested
	Oversized    uint64 `json:"oversized"`  // over MaxPayload: cut unread, refused (413), acknowledged
	Deferred     uint64 `json:"deferred"`   // not acknowledged (the store answered 503) or held back after one: redelivered by the broker
	Acks         uint64 `json:"acks"`       // acks published to devices on <prefix>/<device>/ack
	AckErrors    uint64 `json:"ack_errors"` // messages that could not be acked (a topic level that is not an ID, no connection)
	LastError    string `json:"last_error,omitempty"`
}

// MQTTIngest subscribes to every device's event topic,
// <prefix>/+/events/+/+, at QoS 1 and passes each message to an Ingester
// (the Server) with the topic's device, event and kind as the Claim, so a
// bundle is stored only if its verified signer is the device of its topic.
//
// Every message Ingest answered is acknowledged twice, once Ingest returned
// (so a stored record is durable first): to its device, with an
// mqttlink.Ack on <prefix>/<device>/ack naming the payload's SHA-256 and
// the outcome (201 stored, 200 duplicate, 429 with retry_after, other 4xx
// refused), which the device waits for before it removes the record from
// its spool; then to the broker (PUBACK). A crash between the two leaves a
// record stored but unacknowledged to the device: the device sends it again
// and is answered 200. A bundle Ingest refuses is logged and counted (by
// Ingest, and in Refused here), never retried; a 429 (the device's quota, a
// sequence jump) is counted in Throttled and is the device's to retry,
// so one device over its quota does not hold the others up. When Ingest
// answers 503 (the store failed, or the server is shutting down) the
// message is left unacknowledged, as is every message after it on that
// connection (so the per-device sequence order holds), and the connection
// is dropped: the broker delivers them again after the reconnect. That
// needs the persistent session the ingest uses (clean session off), which
// also keeps records published while the receiver is away.
//
// A retained message on an event topic is never ingested (the broker would
// hand it over again on every subscribe): it is counted, logged and
// acknowledged. A message over MaxPayload is not read: see MaxPayload.
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
	limit  int // largest remaining length of a packet read

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
	u, err := mqttlink.CheckBrokerURL(cfg.Broker, mqttlink.URLRules{PlaintextLAN: cfg.AllowPlaintextLAN})
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
	if cfg.Password == "" && cfg.PasswordFile != "" {
		if cfg.Password, err = mqttlink.ReadPasswordFile(cfg.PasswordFile); err != nil {
			return nil, fmt.Errorf("receiver: mqtt: password file: %w", err)
		}
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
	if cfg.MaxPayload < 0 {
		return nil, fmt.Errorf("receiver: mqtt: MaxPayload %d is negative", cfg.MaxPayload)
	}
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = mqttlink.DefaultMaxPayload
	}
	m := &MQTTIngest{
		cfg: cfg, srv: srv, broker: u, clk: clock.Or(cfg.Clock), log: cfg.Logger,
		filter: mqttlink.EventFilter(cfg.TopicPrefix),
		limit:  cfg.MaxPayload + mqttlink.PacketOverhead,
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
		c, err := mqttlink.DialBroker(dctx, m.broker, m.tls, m.cfg.Dial)
		if err != nil {
			return nil, err
		}
		return mqttlink.LimitConn(c, m.limit), nil
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
		return nil, fmt.Errorf("receiver: mqtt: connect to %s: %w", m.broker.Host, mqttlink.ExplainConnect(err, m.cfg.Username))
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
	topic, payload := msg.Topic(), msg.Payload()
	orig, size, cutSum, cut := mqttlink.ParseCut(topic)
	if cut {
		topic = orig
	}
	device, event, kind, ok := m.parseTopic(topic)
	switch {
	case !ok:
		m.count(func(st *MQTTStats) { st.BadTopic++ })
		m.log.Warn("receiver: mqtt: message on a topic that is not <prefix>/<device>/events/<event>/<kind>; dropped",
			"topic", clip(topic), "bytes", max(size, len(payload)))
	case msg.Retained():
		// Handed over on every subscribe: ingesting it would repeat its
		// cost at each reconnect. A device never retains a record.
		var n uint64
		m.count(func(st *MQTTStats) { st.Retained++; n = st.Retained })
		if n&(n-1) == 0 { // the 1st, 2nd, 4th, 8th...: bounded lines
			m.log.Warn("receiver: mqtt: ignored a retained message on an event topic (devices never retain records; clear it at the broker)",
				"topic", clip(topic), "device", clip(device), "retained_so_far", n)
		}
	case cut:
		var n uint64
		m.count(func(st *MQTTStats) { st.Oversized++; n = st.Oversized })
		if n&(n-1) == 0 {
			m.log.Warn("receiver: mqtt: refused a message over the payload limit without reading it (set the broker's max_packet_size, docs/mqtt.md)",
				"device", clip(device), "event", clip(event), "bytes", size, "limit", m.cfg.MaxPayload, "oversized_so_far", n)
		}
		s.ack(device, mqttlink.NewAck(cutSum, event, kind, http.StatusRequestEntityTooLarge,
			fmt.Sprintf("%s: %d bytes is over the limit of %d", ReasonTooLarge, size, m.cfg.MaxPayload), 0))
	default:
		if !s.ingest(msg, device, event, kind) {
			return
		}
	}
	msg.Ack()
}

// ingest hands an event message to the Ingester and acks its outcome to
// the device; false means the message is deferred (no PUBACK).
func (s *ingestSession) ingest(msg paho.Message, device, event, kind string) bool {
	m := s.m
	res := m.srv.Ingest(msg.Payload(), Claim{Device: device, Event: event, Kind: kind, CheckEventKind: true})
	switch res.Status {
	case http.StatusCreated:
		m.count(func(st *MQTTStats) { st.Stored++ })
	case http.StatusOK:
		m.count(func(st *MQTTStats) { st.Duplicates++ })
	case http.StatusServiceUnavailable:
		s.deferring.Store(true)
		m.count(func(st *MQTTStats) { st.Deferred++ })
		m.log.Warn("receiver: mqtt: cannot store a record now; leaving it unacknowledged and reconnecting so the broker delivers it again",
			"device", clip(device), "event", clip(event), "kind", clip(kind), "reason", res.Reason, "detail", res.Message)
		s.lose(errDeferred)
		return false
	case http.StatusTooManyRequests:
		// The device's to retry (it is told when): waiting here would hold
		// every other device's messages behind this one.
		m.count(func(st *MQTTStats) { st.Throttled++ })
	default:
		// Ingest logged and counted the refusal.
		m.count(func(st *MQTTStats) { st.Refused++ })
	}
	reason := res.Reason
	if res.Message != "" {
		reason += ": " + res.Message
	}
	s.ack(device, mqttlink.NewAck(mqttlink.PayloadSum(msg.Payload()), event, kind, res.Status, reason, res.RetryAfter))
	return true
}

// ack publishes a to device's ack topic at QoS 1, without waiting for the
// broker (this runs inside paho's message handler, and a lost ack only
// makes the device send the record again).
func (s *ingestSession) ack(device string, a mqttlink.Ack) {
	m := s.m
	b, err := a.Marshal()
	if err == nil && !provenance.ValidID(device) {
		err = errors.New("the topic's device is not a device ID")
	}
	if err != nil {
		m.count(func(st *MQTTStats) { st.AckErrors++ })
		m.log.Warn("receiver: mqtt: cannot acknowledge a message to its device", "device", clip(device), "err", err)
		return
	}
	s.c.Publish(mqttlink.AckTopic(m.cfg.TopicPrefix, device), 1, false, b)
	m.count(func(st *MQTTStats) { st.Acks++ })
}

// parseTopic splits <prefix>/<device>/events/<event>/<kind>, the topic the
// devices build (mqttlink.EventTopic).
func (m *MQTTIngest) parseTopic(topic string) (device, event, kind string, ok bool) {
	return mqttlink.ParseEventTopic(m.cfg.TopicPrefix, topic)
}
