package receiver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/keyframe-cam/keyframe/internal/mqttlink"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/uploader"
	"github.com/keyframe-cam/keyframe/uploader/mosquittotest"
)

// Tests against a real broker wait for real network events; waitTimeout
// bounds each wait (they take milliseconds when things work), quietWait is
// how long a message that must not arrive is waited for.
const (
	waitTimeout = 10 * time.Second
	quietWait   = 300 * time.Millisecond
)

func TestMQTTIngestParsesOnlyEventTopics(t *testing.T) {
	m, err := NewMQTTIngest(MQTTConfig{Broker: "tls://b.example", Username: "receiver", TopicPrefix: "site/kf"}, &fakeIngester{})
	if err != nil {
		t.Fatal(err)
	}
	dev, ev, kind, ok := m.parseTopic("site/kf/dev1/events/ev1/start")
	if !ok || dev != "dev1" || ev != "ev1" || kind != "start" {
		t.Errorf("parseTopic of a good topic = %q %q %q %v", dev, ev, kind, ok)
	}
	for _, topic := range []string{
		"kf/dev1/events/ev1/start",
		"site/kf/dev1/events/ev1",
		"site/kf/dev1/events/ev1/start/x",
		"site/kf/dev1/state/ev1/start",
		"site/kf//events/ev1/start",
		"site/kf/dev1/events//start",
		"site/kf/dev1/events/ev1/",
		"site/kfx/dev1/events/ev1/start",
		"",
	} {
		if _, _, _, ok := m.parseTopic(topic); ok {
			t.Errorf("parseTopic(%q) accepted it", topic)
		}
	}
}

// The ingest's default payload limit is the Server's default body limit, and
// the device's: the broker's max_packet_size (docs/mqtt.md) is sized on it.
func TestMQTTPayloadLimitIsTheBodyLimit(t *testing.T) {
	if DefaultMaxBody != mqttlink.DefaultMaxPayload || uploader.DefaultMaxPayload != mqttlink.DefaultMaxPayload {
		t.Errorf("DefaultMaxBody %d, uploader.DefaultMaxPayload %d, mqttlink.DefaultMaxPayload %d: want one value",
			DefaultMaxBody, uploader.DefaultMaxPayload, mqttlink.DefaultMaxPayload)
	}
	m, err := NewMQTTIngest(MQTTConfig{Broker: "tls://b.example", Username: "receiver"}, &fakeIngester{})
	if err != nil {
		t.Fatal(err)
	}
	if m.limit != DefaultMaxBody+mqttlink.PacketOverhead {
		t.Errorf("packet limit %d, want %d", m.limit, DefaultMaxBody+mqttlink.PacketOverhead)
	}
}

func TestNewMQTTIngestRejectsBadConfig(t *testing.T) {
	good := MQTTConfig{Broker: "tls://b.example", Username: "receiver"}
	for name, mod := range map[string]func(*MQTTConfig){
		"clear text to a remote host": func(c *MQTTConfig) { c.Broker = "tcp://b.example" },
		"no credentials":              func(c *MQTTConfig) { c.Username = "" },
		"password without user":       func(c *MQTTConfig) { c.Username, c.Password = "", "pw" },
		"wildcard in client ID":       func(c *MQTTConfig) { c.ClientID = "r#" },
		"wildcard in prefix":          func(c *MQTTConfig) { c.TopicPrefix = "k/+" },
		"empty prefix level":          func(c *MQTTConfig) { c.TopicPrefix = "k//f" },
		"prefix over 128 bytes":       func(c *MQTTConfig) { c.TopicPrefix = strings.Repeat("k", 129) },
		"prefix not UTF-8":            func(c *MQTTConfig) { c.TopicPrefix = "k\xff" },
		"negative MaxPayload":         func(c *MQTTConfig) { c.MaxPayload = -1 },
	} {
		c := good
		mod(&c)
		if _, err := NewMQTTIngest(c, &fakeIngester{}); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !strings.HasPrefix(err.Error(), "receiver: ") {
			t.Errorf("%s: error %q lacks the package prefix", name, err)
		}
	}
	if _, err := NewMQTTIngest(good, nil); err == nil {
		t.Error("nil Ingester accepted")
	}
}

func TestMQTTRoundTripStoresSignedBundle(t *testing.T) {
	b := mosquittotest.Start(t)
	env := newEnv(t, Options{})
	dev := newDevice(t)
	env.enroll(dev, "alice")
	ing := startIngest(t, b, env.srv, nil)
	tr := startTransport(t, b, dev, nil)

	rec := dev.record(t, "ev-1", provenance.KindStart, 1)
	send(t, tr, rec)
	waitFor(t, "the record to be stored", func() bool { return env.srv.Stats().Stored == 1 })
	if got := env.lines.lines(); len(got) != 1 || !strings.Contains(got[0], "event=ev-1 kind=start device="+dev.id+" seq=1") {
		t.Errorf("event lines = %q", got)
	}
	code, body, _ := env.getAs("alice", mediaURL(dev, rec))
	if code != http.StatusOK || !bytes.Equal(body, rec.thumb) {
		t.Errorf("stored thumbnail: status %d, %d bytes, want the sent %d bytes", code, len(body), len(rec.thumb))
	}

	// A bundle the receiver refuses (not CBOR) is logged, counted and
	// acknowledged, to the broker and to the device, which gets the same
	// permanent error as from an HTTP 400: not retried, not stored.
	err := sendErr(t, tr, &record{event: "ev-2", kind: provenance.KindStart, seq: 2, body: []byte("not a bundle")})
	if se := (*uploader.StatusError)(nil); !errors.As(err, &se) || se.Code != http.StatusBadRequest || !se.Permanent() ||
		!strings.HasPrefix(se.Reason, ReasonMalformed+": ") {
		t.Errorf("Send of a malformed bundle = %v, want a permanent 400 %s", err, ReasonMalformed)
	}
	// A bundle of this device on its topic but for another event is refused
	// too: the topic's event must agree with the signed payload.
	other := dev.record(t, "ev-3", provenance.KindStart, 3)
	err = sendErr(t, tr, &record{event: "ev-4", kind: provenance.KindStart, seq: 3, body: other.body})
	if se := (*uploader.StatusError)(nil); !errors.As(err, &se) || se.Code != http.StatusUnprocessableEntity || !se.Permanent() {
		t.Errorf("Send on another event's topic = %v, want a permanent 422", err)
	}
	// Sent again, a stored record is answered as a duplicate: success.
	send(t, tr, rec)
	if n := env.srv.Stats().Duplicates; n != 1 {
		t.Errorf("re-send: %d duplicates, want 1", n)
	}

	st := ing.Stats()
	if st.Received != 4 || st.Stored != 1 || st.Duplicates != 1 || st.Refused != 2 || st.Deferred != 0 || st.BadTopic != 0 || st.Acks != 4 {
		t.Errorf("ingest stats = %+v, want 4 received, 1 stored, 1 duplicate, 2 refused, 4 acks", st)
	}
	// Refused messages were acknowledged: a reconnect of the receiver's
	// persistent session does not bring them back. (The device has its ack
	// before the broker its PUBACK: let that reach the broker first.)
	time.Sleep(quietWait)
	ing.net.Cut()
	waitFor(t, "the receiver to reconnect", func() bool { s := ing.Stats(); return s.Connects == 2 && s.Connected })
	time.Sleep(quietWait)
	if st := ing.Stats(); st.Received != 4 {
		t.Errorf("after a reconnect, %d messages received, want still 4 (refused ones are acknowledged)", st.Received)
	}
	if got := env.srv.Stats(); got.Stored != 1 || got.Duplicates != 1 {
		t.Errorf("server stats = %+v, want 1 stored and 1 duplicate", got)
	}
}

func TestMQTTDeviceCannotPublishAsAnotherDevice(t *testing.T) {
	b := mosquittotest.Start(t)
	env := newEnv(t, Options{})
	devA, devB := newDevice(t), newDevice(t)
	env.enroll(devA, "alice")
	env.enroll(devB, "bob")
	ing := startIngest(t, b, env.srv, nil)

	// A, with its own certificate, replays a record B signed, on B's topic.
	recB := devB.record(t, "ev-b", provenance.KindStart, 1)
	a := connectRaw(t, b, devA.id, "device-a-raw")
	tok := a.Publish("keyframe/"+devB.id+"/events/ev-b/start", 1, false, recB.body)
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("A's publish was not acknowledged by the broker: %v", tok.Error())
	}
	// And a record of its own on B's topic.
	recA := devA.record(t, "ev-a", provenance.KindStart, 1)
	tok = a.Publish("keyframe/"+devB.id+"/events/ev-a/start", 1, false, recA.body)
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("A's publish was not acknowledged by the broker: %v", tok.Error())
	}
	// B's own publish arrives.
	trB := startTransport(t, b, devB, nil)
	send(t, trB, recB)
	waitFor(t, "B's record to be stored", func() bool { return env.srv.Stats().Stored == 1 })
	time.Sleep(quietWait)

	if st := ing.Stats(); st.Received != 1 {
		t.Errorf("the receiver got %d messages, want only B's own (A's were delivered)", st.Received)
	}
	if st := env.srv.Stats(); st.Stored != 1 || st.Duplicates != 0 || len(st.Rejected) != 0 {
		t.Errorf("server stats = %+v, want B's record stored once and nothing else seen", st)
	}
	if n := strings.Count(b.Log(), "Denied PUBLISH from device-a-raw"); n != 2 {
		t.Errorf("the broker logged %d denials of A's publishes, want 2", n)
	}
}

func TestMQTTIngestDefersWhenStoreFailsAndBrokerRedelivers(t *testing.T) {
	b := mosquittotest.Start(t)
	env := newEnv(t, Options{})
	dev := newDevice(t)
	env.enroll(dev, "alice")
	// The store fails the first record, and only once every record is on
	// its way to the receiver: the later ones are in flight on the same
	// connection when the first fails.
	flaky := &flakyIngester{srv: env.srv, gate: make(chan struct{})}
	ing := startIngest(t, b, flaky, nil)
	// Published with the device's certificate without waiting for acks, so
	// that all are on their way at once.
	raw := connectRaw(t, b, dev.id, "device-raw")

	recs := make([]*record, 4)
	for i := range recs {
		recs[i] = dev.record(t, fmt.Sprintf("ev-%d", i+1), provenance.KindStart, uint64(i+1))
		tok := raw.Publish("keyframe/"+dev.id+"/events/"+recs[i].event+"/start", 1, false, recs[i].body)
		if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", recs[i].event, tok.Error())
		}
	}
	close(flaky.gate)
	waitFor(t, "every record to be stored", func() bool { return env.srv.Stats().Stored == uint64(len(recs)) })
	time.Sleep(quietWait)

	st := env.srv.Stats()
	if st.Stored != uint64(len(recs)) || len(st.Rejected) != 0 {
		t.Errorf("server stats = %+v, want %d stored in order (a replay refusal means one overtook another)", st, len(recs))
	}
	for _, r := range recs {
		if env.srv.lookup(dev.id, r.event, r.kind) == nil {
			t.Errorf("record %s not stored", r.event)
		}
	}
	ist := ing.Stats()
	if flaky.fails.Load() != 1 || ist.Deferred == 0 || ist.Losses != 1 || ist.Connects != 2 {
		t.Errorf("ingest stats = %+v after %d store failures, want one failure, deferred messages and one reconnect", ist, flaky.fails.Load())
	}
	t.Logf("ingest stats %+v; server duplicates %d", ist, st.Duplicates)
}

func TestMQTTOutageLosesNoRecord(t *testing.T) {
	b := mosquittotest.Start(t)
	env := newEnv(t, Options{})
	dev := newDevice(t)
	env.enroll(dev, "alice")
	ing := startIngest(t, b, env.srv, nil)
	tr := startTransport(t, b, dev, nil)

	sp, err := uploader.OpenSpool(uploader.SpoolConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	up := uploader.New(uploader.Config{
		BackoffBase: 10 * time.Millisecond, BackoffCap: 100 * time.Millisecond,
		RetryWindow: 50 * time.Millisecond, QuickRetry: 50 * time.Millisecond, Rate: 1e12,
	}, sp, tr, nil, nil, testLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- up.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	const before, total = 3, 12
	var recs []*record
	put := func(seq int) {
		r := dev.record(t, fmt.Sprintf("ev-%02d", seq), provenance.KindStart, uint64(seq))
		recs = append(recs, r)
		if err := sp.Put(uploader.Record{Seq: r.seq, Event: r.event, Kind: r.kind, Data: r.body}); err != nil {
			t.Fatal(err)
		}
	}
	for seq := 1; seq <= before; seq++ {
		put(seq)
	}
	waitFor(t, "the first records to be stored", func() bool { return env.srv.Stats().Stored == before })

	b.Stop()
	waitFor(t, "both clients to see the outage", func() bool { return !tr.Connected() && !ing.Stats().Connected })
	failuresBefore := up.Stats().Failures
	for seq := before + 1; seq <= total; seq++ {
		put(seq)
	}
	waitFor(t, "the uploader to try and fail", func() bool { return up.Stats().Failures > failuresBefore+1 })
	if p := sp.Stats().Pending; p != total-before {
		t.Fatalf("spool holds %d records during the outage, want %d", p, total-before)
	}

	b.Restart()
	waitFor(t, "every record to be stored", func() bool { return env.srv.Stats().Stored == total })
	waitFor(t, "the spool to drain", func() bool { return sp.Stats().Pending == 0 })
	time.Sleep(quietWait)

	st := env.srv.Stats()
	if st.Stored != total || st.Records != total || len(st.Rejected) != 0 {
		t.Errorf("server stats = %+v, want each of %d records stored exactly once, nothing refused", st, total)
	}
	for _, r := range recs {
		if env.srv.lookup(dev.id, r.event, r.kind) == nil {
			t.Errorf("record %s (seq %d) lost", r.event, r.seq)
		}
	}
	if us := up.Stats(); us.Sent != total || us.Quarantined != 0 {
		t.Errorf("uploader stats = %+v, want %d sent, none quarantined", us, total)
	}
	t.Logf("identical re-sends counted as duplicates: %d; uploader failures during the outage: %d; device reconnects: %d; receiver reconnects: %d",
		st.Duplicates, up.Stats().Failures, tr.Stats().Connects-1, ing.Stats().Connects-1)
}

// --- helpers ---

type fakeIngester struct{}

func (*fakeIngester) Ingest([]byte, Claim) IngestResult {
	return IngestResult{Status: http.StatusCreated}
}

// flakyIngester answers its first call with 503, as a failing store does,
// once gate is closed; later calls go to srv.
type flakyIngester struct {
	srv   *Server
	gate  chan struct{}
	calls atomic.Int64
	fails atomic.Int64
}

func (f *flakyIngester) Ingest(b []byte, c Claim) IngestResult {
	if f.calls.Add(1) == 1 {
		select {
		case <-f.gate:
		case <-time.After(waitTimeout):
		}
		f.fails.Add(1)
		return IngestResult{Status: http.StatusServiceUnavailable, Reason: ReasonInternal, Message: "storage failed, retry later"}
	}
	return f.srv.Ingest(b, c)
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testIngest struct {
	*MQTTIngest
	net  *mosquittotest.Net
	stop func() // ends Run (the broker keeps the session)
}

// startIngest runs an MQTT ingest as user "receiver" with short reconnect
// delays and waits until it is subscribed.
func startIngest(t *testing.T, b *mosquittotest.Broker, srv Ingester, mod func(*MQTTConfig)) *testIngest {
	t.Helper()
	tn := &mosquittotest.Net{}
	cert := b.ClientTLS(mosquittotest.Receiver).Certificates[0]
	cfg := MQTTConfig{
		Broker: b.URL, Certificate: &cert, RootCAs: b.RootCAs,
		Schedule:       mqttlink.Schedule{BackoffBase: 10 * time.Millisecond, BackoffCap: 100 * time.Millisecond, RetryWindow: 50 * time.Millisecond, QuickRetry: 50 * time.Millisecond},
		ConnectTimeout: 5 * time.Second, Logger: testLogger(t), Dial: tn.Dial,
	}
	if mod != nil {
		mod(&cfg)
	}
	m, err := NewMQTTIngest(cfg, srv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("ingest Run returned %v", err)
			}
		})
	}
	t.Cleanup(stop)
	waitFor(t, "the ingest to subscribe", func() bool { return m.Stats().Connected })
	return &testIngest{m, tn, stop}
}

// startTransport runs the device's MQTT transport with its device key as
// the TLS client key and waits until it is connected.
func startTransport(t *testing.T, b *mosquittotest.Broker, d *testDevice, mod func(*uploader.MQTTConfig)) *uploader.MQTT {
	t.Helper()
	cfg := uploader.MQTTConfig{
		Broker: b.URL, DeviceID: d.id,
		ClientChain: b.ClientCert(d.id, d.key.Public()), ClientKey: d.key, RootCAs: b.RootCAs,
		Schedule:       mqttlink.Schedule{BackoffBase: 10 * time.Millisecond, BackoffCap: 100 * time.Millisecond, RetryWindow: 50 * time.Millisecond, QuickRetry: 50 * time.Millisecond},
		ConnectTimeout: 5 * time.Second, SendTimeout: 5 * time.Second, Logger: testLogger(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	m, err := uploader.NewMQTT(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("transport Run returned %v", err)
		}
	})
	waitFor(t, "the device to connect", m.Connected)
	return m
}

// send sends r through the device's transport, which returns once the
// receiver acknowledged it as stored.
func send(t *testing.T, tr *uploader.MQTT, r *record) {
	t.Helper()
	if err := sendErr(t, tr, r); err != nil {
		t.Fatalf("Send %s: %v", r.event, err)
	}
}

func sendErr(t *testing.T, tr *uploader.MQTT, r *record) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	return tr.Send(ctx, uploader.Record{Seq: r.seq, Event: r.event, Kind: r.kind, Data: r.body})
}

// connectRaw connects a plain paho client as user cn.
func connectRaw(t *testing.T, b *mosquittotest.Broker, cn, clientID string) paho.Client {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker(b.URL).SetClientID(clientID).SetTLSConfig(b.ClientTLS(cn)).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", clientID, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMQTTSeqJumpRefusedNotDeferred: over MQTT a record whose seq jumps
// implausibly far (429 seq_jump, as over HTTP) is answered to the device
// with its retry delay and acknowledged to the broker, not deferred:
// deferring would hold every device's later messages behind it until the
// jump's allowance, for ever for a jump near 2^62. The device's next record
// in sequence is stored.
func TestMQTTSeqJumpRefusedNotDeferred(t *testing.T) {
	b := mosquittotest.Start(t)
	env := newEnv(t, Options{})
	dev := newDevice(t)
	env.enroll(dev, "alice")
	ing := startIngest(t, b, env.srv, nil)
	tr := startTransport(t, b, dev, nil)
	send(t, tr, dev.record(t, "ev-1", provenance.KindStart, 1))
	err := sendErr(t, tr, dev.record(t, "ev-jump", provenance.KindStart, 1<<40))
	if se := (*uploader.StatusError)(nil); !errors.As(err, &se) || se.Code != http.StatusTooManyRequests || se.Permanent() || se.RetryAfter < time.Second {
		t.Errorf("Send of a seq jump = %v, want a retryable 429 with a delay", err)
	}
	send(t, tr, dev.record(t, "ev-2", provenance.KindStart, 2))
	waitFor(t, "two records stored", func() bool { return env.srv.Stats().Stored == 2 })
	if st := ing.Stats(); st.Throttled != 1 || st.Deferred != 0 || env.srv.Stats().Rejected[ReasonSeqJump] != 1 {
		t.Errorf("ingest stats %+v, seq_jump %d; want 1 throttled, none deferred, 1 seq_jump", st, env.srv.Stats().Rejected[ReasonSeqJump])
	}
}

// --- attacks (issue 13) ---

// TestMQTTDeviceOverQuotaDoesNotStallOthers: a device over its quota floods
// valid records over MQTT; each is refused 429 quota, answered with its
// delay and acknowledged to the broker (never deferred), so the one ingest
// connection goes on, and another device's record sent after the flood is
// stored.
func TestMQTTDeviceOverQuotaDoesNotStallOthers(t *testing.T) {
	b := mosquittotest.Start(t)
	env := newEnv(t, Options{Quota: Quota{RecordsPerHour: 2}})
	devA, devV := newDevice(t), newDevice(t)
	env.enroll(devA, "mallory")
	env.enroll(devV, "victim")
	ing := startIngest(t, b, env.srv, nil)

	const flood = 200
	a := connectRaw(t, b, devA.id, "over-quota")
	toks := make([]paho.Token, 0, flood)
	for i := range flood {
		r := devA.record(t, fmt.Sprintf("ev-a%d", i), provenance.KindStart, uint64(i+1))
		toks = append(toks, a.Publish(mqttlink.EventTopic(mqttlink.DefaultTopicPrefix, devA.id, r.event, r.kind), 1, false, r.body))
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
			t.Fatalf("flood publish: %v", tok.Error())
		}
	}
	tr := startTransport(t, b, devV, nil)
	send(t, tr, devV.record(t, "ev-v", provenance.KindStart, 1))
	waitFor(t, "the flood to be handled", func() bool { return ing.Stats().Received >= flood+1 })
	st, ist := env.srv.Stats(), ing.Stats()
	t.Logf("%d records of a device with a quota of 2 an hour: stored %d, refused quota %d (throttled %d, deferred %d); the other device's record stored after them",
		flood, st.Stored-1, st.Rejected[ReasonQuota], ist.Throttled, ist.Deferred)
	if st.Stored != 3 || st.Rejected[ReasonQuota] != flood-2 || ist.Throttled != flood-2 || ist.Deferred != 0 {
		t.Errorf("stored %d, quota refusals %d, throttled %d, deferred %d; want 3 stored (2 of the flood, the victim's), %d refused and throttled, none deferred",
			st.Stored, st.Rejected[ReasonQuota], ist.Throttled, ist.Deferred, flood-2)
	}
	if env.srv.lookup(devV.id, "ev-v", provenance.KindStart) == nil {
		t.Error("the other device's record is not stored")
	}
}

// TestMQTTFloodLosesNoRecordOfAnotherDevice: with the receiver away, device
// M floods its own event topic past the broker's queue limit for the
// receiver (max_queued_messages, mosquittotest.Limits as docs/mqtt.md
// prescribes), so the broker drops what comes next, after acknowledging it.
// Device V's genuine record is among what is dropped: V's Send must not
// report success (the record stays in its spool), and once the receiver is
// back V's record is stored.
func TestMQTTFloodLosesNoRecordOfAnotherDevice(t *testing.T) {
	b := mosquittotest.Start(t)
	env := newEnv(t, Options{})
	devM, devV := newDevice(t), newDevice(t)
	env.enroll(devM, "mallory")
	env.enroll(devV, "victim")
	ing := startIngest(t, b, env.srv, nil)
	ing.stop() // away; the broker keeps its session and queues for it

	const queueLimit, flood = 10000, 10050
	if !strings.Contains(mosquittotest.Limits, fmt.Sprintf("max_queued_messages %d\n", queueLimit)) {
		t.Fatalf("the documented queue limit is not %d: update the test", queueLimit)
	}
	m := connectRaw(t, b, devM.id, "flooder")
	toks := make([]paho.Token, 0, flood)
	for i := range flood {
		toks = append(toks, m.Publish("keyframe/"+devM.id+"/events/junk/start", 1, false, fmt.Sprintf("junk %d", i)))
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
			t.Fatalf("flood publish: %v", tok.Error())
		}
	}
	waitFor(t, "the broker to drop messages for the receiver", func() bool {
		return strings.Contains(b.Log(), "Outgoing messages are being dropped for client "+DefaultMQTTClientID)
	})

	// V, through the real transport, spool and upload loop.
	tr := startTransport(t, b, devV, func(c *uploader.MQTTConfig) { c.AckTimeout = 500 * time.Millisecond })
	sp, err := uploader.OpenSpool(uploader.SpoolConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	up := uploader.New(uploader.Config{
		BackoffBase: 10 * time.Millisecond, BackoffCap: 100 * time.Millisecond,
		RetryWindow: 50 * time.Millisecond, QuickRetry: 50 * time.Millisecond, Rate: 1e12,
	}, sp, tr, nil, nil, testLogger(t))
	rec := devV.record(t, "ev-v", provenance.KindStart, 1)
	if err := sp.Put(uploader.Record{Seq: rec.seq, Event: rec.event, Kind: rec.kind, Data: rec.body}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- up.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "V's sends to be taken by the broker and not acknowledged", func() bool {
		return tr.Stats().Published >= 2 && tr.Stats().AckTimeouts >= 2
	})
	if us, p := up.Stats(), sp.Stats().Pending; us.Sent != 0 || p != 1 {
		t.Fatalf("with the receiver away, V's uploader sent %d and its spool holds %d records; want 0 sent, the record kept", us.Sent, p)
	}
	publishedOffline := tr.Stats().Published

	ing = startIngest(t, b, env.srv, nil)
	waitFor(t, "V's record to be stored", func() bool { return env.srv.lookup(devV.id, rec.event, rec.kind) != nil })
	waitFor(t, "V's spool to drain", func() bool { return sp.Stats().Pending == 0 })
	st, ist, ts := env.srv.Stats(), ing.Stats(), tr.Stats()
	t.Logf("flood of %d junk messages against a queue of %d: the receiver got %d of them back (the broker dropped the rest); "+
		"V published its record %d times while the receiver was away (broker PUBACKs, no receiver ack: kept in its spool), %d in all; "+
		"V's record stored %d, duplicates %d, lost 0",
		flood, queueLimit, st.Rejected[ReasonMalformed], publishedOffline, ts.Published, st.Stored, st.Duplicates)
	if st.Stored != 1 || up.Stats().Sent != 1 || up.Stats().Quarantined != 0 {
		t.Errorf("server stored %d, V's uploader sent %d and quarantined %d; want V's one record stored and sent once", st.Stored, up.Stats().Sent, up.Stats().Quarantined)
	}
	if n := st.Rejected[ReasonMalformed]; n > queueLimit+uint64(20) || ist.Refused != n {
		t.Errorf("%d junk messages ingested (ingest refused %d); want at most the queue (%d) plus the in-flight window", n, ist.Refused, queueLimit)
	}
}

// TestMQTTRetainedEventMessagesAreIgnored: retained messages on event topics
// are handed over again on every subscribe; the ingest counts and
// acknowledges them without ingesting, so they cost nothing at a reconnect,
// and a victim's record is stored as usual.
func TestMQTTRetainedEventMessagesAreIgnored(t *testing.T) {
	b := mosquittotest.Start(t)
	env := newEnv(t, Options{})
	devM, devV := newDevice(t), newDevice(t)
	env.enroll(devM, "mallory")
	env.enroll(devV, "victim")
	ing := startIngest(t, b, env.srv, nil)
	m := connectRaw(t, b, devM.id, "retainer")
	junk := bytes.Repeat([]byte{0xbf}, 64<<10) // not a bundle
	for i := range 3 {
		tok := m.Publish(fmt.Sprintf("keyframe/%s/events/junk-%d/start", devM.id, i), 1, true, junk)
		if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
			t.Fatalf("retained publish: %v", tok.Error())
		}
	}
	// Published while the receiver is subscribed they arrive as live
	// messages (the retain flag cleared) and are refused like any junk.
	waitFor(t, "the live copies to be refused", func() bool { return ing.Stats().Refused == 3 })
	// Let their PUBACKs reach the broker: one still in flight at the cut
	// below would be delivered again, as a live message.
	time.Sleep(quietWait)
	for round := 1; round <= 2; round++ {
		ing.net.Cut()
		waitFor(t, "the retained copies after a reconnect", func() bool { return ing.Stats().Retained == uint64(3*round) })
		// The same for the retained copies' PUBACKs before the next
		// cut: one in flight would come back as a live message.
		time.Sleep(quietWait)
	}
	tr := startTransport(t, b, devV, nil)
	rec := devV.record(t, "ev-v", provenance.KindStart, 1)
	send(t, tr, rec)
	st, ist := env.srv.Stats(), ing.Stats()
	t.Logf("3 retained junk messages: ingested %d times over 2 reconnects (ignored %d); V's record stored %d",
		st.Rejected[ReasonMalformed]-3, ist.Retained, st.Stored)
	if st.Rejected[ReasonMalformed] != 3 || st.Stored != 1 || ist.Retained != 6 || ist.Deferred != 0 {
		t.Errorf("server %+v, ingest %+v: want the junk ingested only live (3), 6 retained copies ignored, V's record stored", st, ist)
	}
}

// TestMQTTOversizedPublishRefusedByTheBroker: under the documented
// max_packet_size a publish larger than the receiver's body limit plus the
// topic's overhead is refused by the broker (its sender is disconnected)
// and never reaches the receiver.
func TestMQTTOversizedPublishRefusedByTheBroker(t *testing.T) {
	b := mosquittotest.Start(t)
	env := newEnv(t, Options{})
	devM, devV := newDevice(t), newDevice(t)
	env.enroll(devM, "mallory")
	env.enroll(devV, "victim")
	ing := startIngest(t, b, env.srv, nil)
	m := connectRaw(t, b, devM.id, "oversized")
	size := mqttlink.DefaultMaxPayload + mqttlink.PacketOverhead
	tok := m.Publish("keyframe/"+devM.id+"/events/big/start", 1, false, make([]byte, size))
	tok.WaitTimeout(waitTimeout)
	waitFor(t, "the broker to disconnect the sender", func() bool { return !m.IsConnectionOpen() })
	tr := startTransport(t, b, devV, nil)
	send(t, tr, devV.record(t, "ev-v", provenance.KindStart, 1))
	// The largest payload a device sends (MaxPayload, the receiver's body
	// limit) still passes the broker: this one is junk, refused by Ingest.
	err := sendErr(t, tr, &record{event: "ev-max", kind: provenance.KindStart, seq: 2, body: make([]byte, mqttlink.DefaultMaxPayload)})
	if se := (*uploader.StatusError)(nil); !errors.As(err, &se) || se.Code != http.StatusBadRequest {
		t.Errorf("Send of a %d-byte payload = %v, want it delivered and refused as malformed (400)", mqttlink.DefaultMaxPayload, err)
	}
	ist := ing.Stats()
	var brokerSaid string
	for _, l := range strings.Split(b.Log(), "\n") {
		if strings.Contains(l, "oversized disconnected") {
			brokerSaid += l + "; "
		}
	}
	t.Logf("a %d-byte payload against max_packet_size %d: publish error %v; broker: %sthe receiver got %d messages (V's two), oversized %d",
		size, size, tok.Error(), brokerSaid, ist.Received, ist.Oversized)
	if ist.Received != 2 || ist.Stored != 1 || ist.Refused != 1 || ist.Oversized != 0 {
		t.Errorf("ingest stats %+v: want only V's two messages received", ist)
	}
}

// TestMQTTOversizedMessageCutNotRead: a broker that does deliver a message
// over the receiver's limit (here the receiver's MaxPayload is below the
// broker's limit) has it cut by the framing reader: never read into memory,
// answered 413 to its device (which quarantines it, as after an HTTP 413),
// acknowledged to the broker, so it is not redelivered for ever; the ingest
// goes on without reconnecting.
func TestMQTTOversizedMessageCutNotRead(t *testing.T) {
	b := mosquittotest.Start(t)
	env := newEnv(t, Options{})
	dev := newDevice(t)
	env.enroll(dev, "alice")
	const limit = 64 << 10
	ing := startIngest(t, b, env.srv, func(c *MQTTConfig) { c.MaxPayload = limit })
	tr := startTransport(t, b, dev, nil)
	big := &record{event: "ev-big", kind: provenance.KindStart, seq: 1, body: bytes.Repeat([]byte{0xa5}, 3<<20)}
	err := sendErr(t, tr, big)
	if se := (*uploader.StatusError)(nil); !errors.As(err, &se) || se.Code != http.StatusRequestEntityTooLarge || !se.Permanent() {
		t.Errorf("Send of a %d-byte bundle to a receiver limited to %d = %v, want a permanent 413", len(big.body), limit, err)
	}
	send(t, tr, dev.record(t, "ev-2", provenance.KindStart, 2))
	time.Sleep(quietWait) // the PUBACKs follow the acks the device has seen
	ing.net.Cut()         // a reconnect does not bring the cut message back
	waitFor(t, "the receiver to reconnect", func() bool { s := ing.Stats(); return s.Connects == 2 && s.Connected })
	time.Sleep(quietWait)
	ist := ing.Stats()
	t.Logf("a %d-byte message against a %d-byte limit: oversized %d, answered 413 to the device; next record stored %d; received %d after a reconnect",
		len(big.body), limit, ist.Oversized, ist.Stored, ist.Received)
	if ist.Oversized != 1 || ist.Stored != 1 || ist.Received != 2 || ist.Losses != 1 {
		t.Errorf("ingest stats %+v: want 1 oversized, 1 stored, 2 received, only the one loss the test caused", ist)
	}
}
