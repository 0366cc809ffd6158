package uploader

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/keyframe-cam/keyframe/internal/backoff/backofftest"
	"github.com/keyframe-cam/keyframe/internal/clock"
	"github.com/keyframe-cam/keyframe/internal/mqttlink"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/uploader/mosquittotest"
)

// Tests against a real broker wait for real network events; waitTimeout
// bounds each wait (they take milliseconds when things work).
const waitTimeout = 10 * time.Second

// quietWait is how long a test waits to be confident a message that must
// not arrive does not arrive.
const quietWait = 300 * time.Millisecond

func TestNewMQTTRejectsBadConfig(t *testing.T) {
	key := newKey(t)
	other := newKey(t)
	id := deviceID(t, key)
	chain := selfSigned(t, key, id)
	good := MQTTConfig{Broker: "tls://b.example", DeviceID: id, ClientChain: chain, ClientKey: key}
	if _, err := NewMQTT(good); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for name, mod := range map[string]func(*MQTTConfig){
		"tcp to a remote host":    func(c *MQTTConfig) { c.Broker = "tcp://b.example" },
		"empty device":            func(c *MQTTConfig) { c.DeviceID = "" },
		"device with a slash":     func(c *MQTTConfig) { c.DeviceID = "a/b" },
		"device with a wildcard":  func(c *MQTTConfig) { c.DeviceID = "a+" },
		"prefix with a wildcard":  func(c *MQTTConfig) { c.TopicPrefix = "kf/#" },
		"prefix with empty level": func(c *MQTTConfig) { c.TopicPrefix = "kf//x" },
		"discovery with slash":    func(c *MQTTConfig) { c.DiscoveryPrefix = "/ha" },
		"chain without key":       func(c *MQTTConfig) { c.ClientKey = nil },
		"key without chain":       func(c *MQTTConfig) { c.ClientChain = nil },
		"no credentials":          func(c *MQTTConfig) { c.ClientChain, c.ClientKey = nil, nil },
		"password without user":   func(c *MQTTConfig) { c.Password = "pw" },
		"key of another cert":     func(c *MQTTConfig) { c.ClientKey = other },
		"garbage certificate":     func(c *MQTTConfig) { c.ClientChain = [][]byte{[]byte("not DER")} },
		"negative MaxPayload":     func(c *MQTTConfig) { c.MaxPayload = -1 },
	} {
		c := good
		mod(&c)
		if _, err := NewMQTT(c); err == nil {
			t.Errorf("%s: NewMQTT accepted it", name)
		} else if !strings.HasPrefix(err.Error(), "uploader: mqtt: ") {
			t.Errorf("%s: error %q lacks the package prefix", name, err)
		}
	}
	// A username alone is enough (brokers with password authentication).
	c := good
	c.ClientChain, c.ClientKey, c.Username, c.Password = nil, nil, "cam1", "secret"
	if _, err := NewMQTT(c); err != nil {
		t.Errorf("username and password: %v", err)
	}
}

func TestSendWithoutConnectionIsRetriedInvalidRecordIsPermanent(t *testing.T) {
	key := newKey(t)
	id := deviceID(t, key)
	m, err := NewMQTT(MQTTConfig{Broker: "tls://b.example", DeviceID: id, ClientChain: selfSigned(t, key, id), ClientKey: key, MaxPayload: 100})
	if err != nil {
		t.Fatal(err)
	}
	err = m.Send(t.Context(), Record{Seq: 1, Event: "ev1", Kind: provenance.KindStart, Data: []byte{1}})
	if !errors.Is(err, ErrNotConnected) || isPermanent(err) {
		t.Errorf("Send without a connection = %v, want a retryable ErrNotConnected", err)
	}
	for _, r := range []Record{
		{Seq: 1, Event: "ev/1", Kind: provenance.KindStart},
		{Seq: 1, Event: "ev1", Kind: "middle"},
		{Seq: 1, Event: "+", Kind: provenance.KindEnd},
		{Seq: 1, Event: "ev1", Kind: provenance.KindEnd, Data: make([]byte, 101)}, // over MaxPayload
	} {
		if err := m.Send(t.Context(), r); !isPermanent(err) {
			t.Errorf("Send(%q/%q) = %v, want a permanent error", r.Event, r.Kind, err)
		}
	}
	if err := m.PublishMotion(t.Context(), true); !errors.Is(err, ErrNotConnected) {
		t.Errorf("PublishMotion without a connection = %v, want ErrNotConnected", err)
	}
}

func TestReceivedCommandTopicIsCheckedAgain(t *testing.T) {
	key := newKey(t)
	id := deviceID(t, key)
	m, err := NewMQTT(MQTTConfig{Broker: "tls://b.example", DeviceID: id, ClientChain: selfSigned(t, key, id), ClientKey: key})
	if err != nil {
		t.Fatal(err)
	}
	// What a broken or hostile broker could deliver despite the
	// subscription: none of it may reach the handler's queue.
	for _, topic := range []string{
		"keyframe/otherdevice/cmd/snapshot",
		"keyframe/" + id + "/cmd/",
		"keyframe/" + id + "/cmd/snapshot/extra",
		"keyframe/" + id + "/cmdx/snapshot",
		"keyframe/" + id + "/events/e/start",
		"kf/" + id + "/cmd/snapshot",
		"keyframe/" + id + "x/cmd/snapshot",
		"",
	} {
		m.receiveCommand(nil, topic, nil, false, -1)
	}
	m.receiveCommand(nil, "keyframe/"+id+"/cmd/snapshot", nil, true, -1) // retained
	if n := len(m.cmds); n != 0 {
		t.Fatalf("%d foreign or retained messages were queued as commands", n)
	}
	if got := m.Stats().CommandsRefused; got != 9 {
		t.Errorf("CommandsRefused = %d, want 9", got)
	}
	m.receiveCommand(nil, "keyframe/"+id+"/cmd/snapshot", []byte("x"), false, -1)
	if c := <-m.cmds; c.name != CommandSnapshot || c.err != nil || string(c.payload) != "x" {
		t.Errorf("own snapshot command queued as %+v", c)
	}
	m.receiveCommand(nil, "keyframe/"+id+"/cmd/snapshot", make([]byte, MaxCommandPayload+1), false, -1)
	if c := <-m.cmds; c.err == nil {
		t.Error("an oversized command was queued without an error")
	}
	// One cut by the framing reader (not read: an empty payload) is
	// answered with an error, never run as the empty snapshot it looks like.
	m.receiveCommand(nil, "keyframe/"+id+"/cmd/snapshot", nil, false, 200<<20)
	if c := <-m.cmds; c.err == nil || !strings.Contains(c.err.Error(), "not read") {
		t.Errorf("a cut command was queued as %+v", c)
	}
	// A full queue drops and counts.
	for range commandQueue + 2 {
		m.receiveCommand(nil, "keyframe/"+id+"/cmd/status", nil, false, -1)
	}
	if got := m.Stats().CommandsDropped; got != 2 {
		t.Errorf("CommandsDropped = %d, want 2", got)
	}
}

// fakeReceiver subscribes as the receiver and answers each event message
// on its device's ack topic with answer's Ack (none if answer returns false).
func fakeReceiver(t *testing.T, b *mosquittotest.Broker, answer func(topic string, payload []byte) (mqttlink.Ack, bool)) *subscription {
	t.Helper()
	c := connectClient(t, b, mosquittotest.Receiver, "fake-receiver-"+strconv.FormatInt(clientSeq.Add(1), 10))
	s := &subscription{ch: make(chan received, 64)}
	tok := c.Subscribe("keyframe/+/events/+/+", 1, func(_ paho.Client, m paho.Message) {
		s.ch <- received{m.Topic(), append([]byte(nil), m.Payload()...), m.Qos(), m.Retained()}
		a, ok := answer(m.Topic(), m.Payload())
		if !ok {
			return
		}
		b, err := a.Marshal()
		if err != nil {
			t.Errorf("ack: %v", err)
			return
		}
		dev, _, _, _ := mqttlink.ParseEventTopic("keyframe", m.Topic())
		// First an ack of another payload, which must not end the wait.
		decoy := a
		decoy.SHA256, decoy.Status, decoy.Reason, decoy.RetryAfter = mqttlink.PayloadSum([]byte("decoy")), 201, "", 0
		db, _ := decoy.Marshal()
		c.Publish(mqttlink.AckTopic("keyframe", dev), 1, false, db)
		c.Publish(mqttlink.AckTopic("keyframe", dev), 1, false, b)
	})
	if err := wait(tok); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	return s
}

func TestMQTTSendReturnsOnlyOnTheReceiversAck(t *testing.T) {
	b := mosquittotest.Start(t)
	dev := startDevice(t, b, func(c *MQTTConfig) { c.AckTimeout = time.Second })
	var status atomic.Int64
	status.Store(201)
	sub := fakeReceiver(t, b, func(topic string, p []byte) (mqttlink.Ack, bool) {
		_, ev, kind, _ := mqttlink.ParseEventTopic("keyframe", topic)
		st := int(status.Load())
		if st == 0 {
			return mqttlink.Ack{}, false
		}
		return mqttlink.NewAck(mqttlink.PayloadSum(p), ev, kind, st, "why", 3*time.Second), true
	})
	data := bytes.Repeat([]byte("bundle-bytes "), 1000)
	r := Record{Seq: 7, Event: "ev-7", Kind: provenance.KindEnd, Data: data}
	send := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
		defer cancel()
		return dev.m.Send(ctx, r)
	}
	if err := send(); err != nil {
		t.Fatalf("Send: %v", err)
	}
	msg := sub.next(t)
	if want := "keyframe/" + dev.id + "/events/ev-7/end"; msg.topic != want {
		t.Errorf("topic %q, want %q", msg.topic, want)
	}
	if !bytes.Equal(msg.payload, data) || msg.qos != 1 || msg.retained {
		t.Errorf("delivered %d bytes with qos %d retained %v, want the record's %d at qos 1 not retained", len(msg.payload), msg.qos, msg.retained, len(data))
	}

	// A refusal is the HTTP transport's permanent error; a 429 a retryable
	// one with its delay; no ack at all a retryable error after AckTimeout.
	status.Store(409)
	err := send()
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 409 || !se.Permanent() || se.Reason != "why" {
		t.Errorf("409 ack: Send = %v, want a permanent 409", err)
	}
	status.Store(429)
	if err := send(); !errors.As(err, &se) || se.Code != 429 || se.Permanent() || se.RetryAfter != 3*time.Second {
		t.Errorf("429 ack: Send = %v, want a retryable 429 after 3s", err)
	}
	status.Store(0)
	if err := send(); err == nil || !errors.Is(err, errNoAck) {
		t.Errorf("no ack: Send = %v, want errNoAck", err)
	} else if p, ok := err.(interface{ Permanent() bool }); ok && p.Permanent() {
		t.Errorf("no ack: Send = %v is permanent", err)
	}
	st := dev.m.Stats()
	if st.Published != 4 || st.Acked != 1 || st.AckRefused != 2 || st.AckTimeouts != 1 || !st.Connected || st.Connects != 1 {
		t.Errorf("stats = %+v, want 4 published, 1 acked, 2 refused, 1 timeout, connected once", st)
	}
}

// TestMQTTDeviceCannotAckItself: the ack topic is the receiver's alone. A
// device (its own certificate) publishing a valid ack for its own pending
// record on its own ack topic is acknowledged by the broker and dropped; the
// record is not taken as delivered.
func TestMQTTDeviceCannotAckItself(t *testing.T) {
	b := mosquittotest.Start(t)
	dev := startDevice(t, b, func(c *MQTTConfig) { c.AckTimeout = 2 * time.Second })
	self := connectClient(t, b, dev.id, "self-acker")
	r := Record{Seq: 1, Event: "ev-1", Kind: provenance.KindStart, Data: []byte("never seen by a receiver")}
	ack, err := mqttlink.NewAck(mqttlink.PayloadSum(r.Data), r.Event, r.Kind, 201, "", 0).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- dev.m.Send(t.Context(), r) }()
	waitFor(t, "the publish", func() bool { return dev.m.Stats().Published == 1 })
	publish(t, self, mqttlink.AckTopic("keyframe", dev.id), string(ack), false)
	if err := <-done; !errors.Is(err, errNoAck) {
		t.Errorf("Send after the device's own ack = %v, want no ack (errNoAck)", err)
	}
	denied := strings.Count(b.Log(), "Denied PUBLISH from self-acker")
	t.Logf("device's own ack: Send = no ack; broker denials logged: %d; device stats %+v", denied, dev.m.Stats())
	if denied != 1 {
		t.Errorf("the broker logged %d denials of the device's ack, want 1", denied)
	}
	if st := dev.m.Stats(); st.Acked != 0 || st.BadAcks != 0 {
		t.Errorf("stats %+v: the device's own ack reached it", st)
	}
}

func TestMQTTCommandsOnlyFromTheDevicesOwnTopic(t *testing.T) {
	b := mosquittotest.Start(t)
	type call struct {
		name    string
		payload string
	}
	calls := make(chan call, 16)
	ha := connectClient(t, b, mosquittotest.HomeAssistant, "ha")
	// A retained command left at the broker would run on every connect:
	// it is refused when the subscription delivers it.
	key := newKey(t)
	id := deviceID(t, key)
	publish(t, ha, "keyframe/"+id+"/cmd/snapshot", "stale", true)
	dev := startDeviceKey(t, b, key, func(c *MQTTConfig) {
		c.OnCommand = func(ctx context.Context, name string, payload []byte) (any, error) {
			calls <- call{name, string(payload)}
			if name == CommandSnapshot {
				return map[string]int{"thumbnail_bytes": 1234}, nil
			}
			return map[string]string{"spool": "empty"}, nil
		}
	})
	waitFor(t, "the retained command to be refused", func() bool { return dev.m.Stats().CommandsRefused == 1 })
	states := subscribe(t, b, mosquittotest.HomeAssistant, "keyframe/"+dev.id+"/state")

	// Another device may not command this one: the broker's ACL drops it.
	otherKey := newKey(t)
	otherID := deviceID(t, otherKey)
	other := connectClient(t, b, otherID, "other")
	publish(t, other, "keyframe/"+dev.id+"/cmd/snapshot", "from another device", false)
	// A command for another device is not this device's business.
	publish(t, ha, "keyframe/"+otherID+"/cmd/snapshot", "for the other device", false)

	publish(t, ha, "keyframe/"+dev.id+"/cmd/snapshot", "now", false)
	if c := nextCall(t, calls); c != (call{CommandSnapshot, "now"}) {
		t.Fatalf("first command delivered = %+v, want the own snapshot", c)
	}
	rep := nextReply(t, states)
	if rep.Device != dev.id || rep.Command != CommandSnapshot || !rep.OK || rep.Error != "" || rep.MQTT != nil {
		t.Errorf("snapshot reply = %+v", rep)
	}
	if res, _ := rep.Result.(map[string]any); res["thumbnail_bytes"] != float64(1234) {
		t.Errorf("snapshot reply result = %v, want the handler's", rep.Result)
	}

	publish(t, ha, "keyframe/"+dev.id+"/cmd/status", "", false)
	if c := nextCall(t, calls); c.name != CommandStatus {
		t.Fatalf("second command = %+v, want status", c)
	}
	rep = nextReply(t, states)
	if !rep.OK || rep.MQTT == nil || !rep.MQTT.Connected || rep.MQTT.Connects != 1 {
		t.Errorf("status reply = %+v, want ok with the connection counters", rep)
	}

	publish(t, ha, "keyframe/"+dev.id+"/cmd/reboot", "", false)
	rep = nextReply(t, states)
	if rep.OK || rep.Command != "reboot" || !strings.Contains(rep.Error, "unknown command") {
		t.Errorf("reply to an unknown command = %+v, want an error", rep)
	}
	select {
	case c := <-calls:
		t.Errorf("handler was called for %+v", c)
	case <-time.After(quietWait):
	}
	st := dev.m.Stats()
	if st.Commands != 2 || st.CommandsRefused != 2 { // the retained one + unknown
		t.Errorf("stats = %+v, want 2 commands, 2 refused", st)
	}
	if !strings.Contains(b.Log(), "Denied PUBLISH from other") {
		t.Errorf("the broker did not log denying the other device's command")
	}
}

// TestMQTTOversizedCommandIsNotReadNorRun: a command far over
// MaxCommandPayload (1 MiB, under the broker's packet limit) is cut by the
// framing reader before it is read: answered with an error, never run, and
// the connection stays up for the next command.
func TestMQTTOversizedCommandIsNotReadNorRun(t *testing.T) {
	b := mosquittotest.Start(t)
	calls := make(chan string, 4)
	dev := startDevice(t, b, func(c *MQTTConfig) {
		c.OnCommand = func(ctx context.Context, name string, payload []byte) (any, error) {
			calls <- name
			return nil, nil
		}
	})
	states := subscribe(t, b, mosquittotest.HomeAssistant, "keyframe/"+dev.id+"/state")
	ha := connectClient(t, b, mosquittotest.HomeAssistant, "ha")
	const size = 1 << 20
	publish(t, ha, "keyframe/"+dev.id+"/cmd/snapshot", strings.Repeat("x", size), false)
	rep := nextReply(t, states)
	if rep.OK || rep.Command != CommandSnapshot || !strings.Contains(rep.Error, "not read") {
		t.Errorf("reply to a %d-byte snapshot command = %+v, want an error", size, rep)
	}
	publish(t, ha, "keyframe/"+dev.id+"/cmd/status", "", false)
	if c := nextCall(t, calls); c != CommandStatus {
		t.Errorf("handler called for %q, want only the status command", c)
	}
	// The command is counted before its reply is published: wait for it.
	if rep := nextReply(t, states); !rep.OK || rep.Command != CommandStatus {
		t.Errorf("reply to status = %+v, want ok", rep)
	}
	st := dev.m.Stats()
	t.Logf("a %d-byte command: refused unread (%q); handler calls: status only; connects %d, losses %d", size, rep.Error, st.Connects, st.Losses)
	if st.Connects != 1 || st.Losses != 0 || st.CommandsRefused != 1 || st.Commands != 1 {
		t.Errorf("stats %+v: want one connection, 1 refused, 1 command", st)
	}
}

func TestMQTTStatusOnlineOfflineAndLastWill(t *testing.T) {
	b := mosquittotest.Start(t)
	tn := &mosquittotest.Net{}
	dev := startDevice(t, b, func(c *MQTTConfig) { c.Dial = tn.Dial })
	status := "keyframe/" + dev.id + "/status"
	if got := retained(t, b, status); got != StatusOnline {
		t.Fatalf("retained status after connect = %q, want online", got)
	}
	live := subscribe(t, b, mosquittotest.HomeAssistant, status)
	if m := live.next(t); string(m.payload) != StatusOnline {
		t.Fatalf("live status = %q, want online", m.payload)
	}

	// Cut the TCP connection under the device: no DISCONNECT reaches the
	// broker, so it publishes the will.
	tn.SetDown(true)
	tn.Cut()
	if m := live.next(t); string(m.payload) != StatusOffline {
		t.Fatalf("status after the connection was cut = %q, want offline (the will)", m.payload)
	}
	if got := retained(t, b, status); got != StatusOffline {
		t.Fatalf("retained status while the device is away = %q, want offline (the will is retained)", got)
	}
	waitFor(t, "the device to see the loss", func() bool { return dev.m.Stats().Losses == 1 })

	tn.SetDown(false)
	if m := live.next(t); string(m.payload) != StatusOnline {
		t.Fatalf("status after reconnect = %q, want online", m.payload)
	}
	waitFor(t, "the device to finish connecting", dev.m.Connected)
	// A clean stop says offline itself.
	dev.stop()
	if m := live.next(t); string(m.payload) != StatusOffline {
		t.Fatalf("status after stop = %q, want offline", m.payload)
	}
	if got := retained(t, b, status); got != StatusOffline {
		t.Fatalf("retained status after stop = %q, want offline", got)
	}
	if st := dev.m.Stats(); st.Connects != 2 || st.Losses != 1 || st.DialFailures == 0 {
		t.Errorf("stats = %+v, want 2 connects, 1 loss, failed dials while refused", st)
	}
}

func TestMQTTHomeAssistantDiscoveryMotionAndThumbnail(t *testing.T) {
	b := mosquittotest.Start(t)
	tn := &mosquittotest.Net{}
	dev := startDevice(t, b, func(c *MQTTConfig) {
		c.DeviceName = "Front door"
		c.SWVersion = "1.2.3"
		c.Dial = tn.Dial
	})
	node := "keyframe_" + dev.id
	cfgs := subscribe(t, b, mosquittotest.HomeAssistant, "homeassistant/+/"+node+"/+/config")
	got := map[string]map[string]any{}
	for range 2 {
		m := cfgs.next(t)
		if !m.retained {
			t.Errorf("discovery config %s is not retained", m.topic)
		}
		var doc map[string]any
		if err := json.Unmarshal(m.payload, &doc); err != nil {
			t.Fatalf("discovery config %s: %v", m.topic, err)
		}
		got[m.topic] = doc
	}
	base := "keyframe/" + dev.id + "/"
	sensor := got["homeassistant/binary_sensor/"+node+"/motion/config"]
	camera := got["homeassistant/camera/"+node+"/thumbnail/config"]
	if sensor == nil || camera == nil {
		t.Fatalf("discovery configs on %v, want the binary_sensor and the camera", keys(got))
	}
	for k, want := range map[string]string{
		"device_class": "motion", "state_topic": base + "motion", "payload_on": "ON", "payload_off": "OFF",
		"availability_topic": base + "status", "payload_available": "online", "payload_not_available": "offline",
		"unique_id": node + "_motion",
	} {
		if sensor[k] != want {
			t.Errorf("binary_sensor %s = %v, want %q", k, sensor[k], want)
		}
	}
	if camera["topic"] != base+"thumbnail" || camera["availability_topic"] != base+"status" || camera["unique_id"] != node+"_thumbnail" {
		t.Errorf("camera config = %v", camera)
	}
	for _, doc := range []map[string]any{sensor, camera} {
		d, _ := doc["device"].(map[string]any)
		ids, _ := d["identifiers"].([]any)
		if len(ids) != 1 || ids[0] != node || d["name"] != "Front door" || d["manufacturer"] != "keyframe" || d["sw_version"] != "1.2.3" {
			t.Errorf("device block = %v", d)
		}
	}

	motion := subscribe(t, b, mosquittotest.HomeAssistant, base+"motion")
	thumbs := subscribe(t, b, mosquittotest.HomeAssistant, base+"thumbnail")
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if err := dev.m.PublishMotion(ctx, true); err != nil {
		t.Fatal(err)
	}
	if m := motion.next(t); string(m.payload) != MotionOn {
		t.Fatalf("motion = %q, want ON", m.payload)
	}
	jpeg := []byte("\xff\xd8\xff\xe0 a thumbnail \xff\xd9")
	if err := dev.m.PublishThumbnail(ctx, jpeg); err != nil {
		t.Fatal(err)
	}
	if m := thumbs.next(t); !bytes.Equal(m.payload, jpeg) {
		t.Fatalf("thumbnail = %q", m.payload)
	}
	if got := retained(t, b, base+"motion"); got != MotionOn {
		t.Errorf("retained motion = %q, want ON", got)
	}

	// Motion ends while the broker is unreachable: the state is kept and
	// published on reconnect, so Home Assistant does not stay at ON.
	tn.SetDown(true)
	tn.Cut()
	waitFor(t, "the device to see the loss", func() bool { return !dev.m.Connected() })
	if err := dev.m.PublishMotion(ctx, false); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("PublishMotion while disconnected = %v, want ErrNotConnected", err)
	}
	tn.SetDown(false)
	if m := motion.next(t); string(m.payload) != MotionOff {
		t.Fatalf("motion after reconnect = %q, want OFF", m.payload)
	}
	if m := thumbs.next(t); !bytes.Equal(m.payload, jpeg) {
		t.Fatalf("thumbnail after reconnect = %q, want the last one again", m.payload)
	}
	// Discovery is published again on every connect.
	if m := cfgs.next(t); !strings.HasSuffix(m.topic, "/config") {
		t.Fatalf("unexpected message %s", m.topic)
	}
}

func TestMQTTDeviceWhoseCertificateIsAnotherDeviceCannotConnect(t *testing.T) {
	b := mosquittotest.Start(t)
	keyA := newKey(t)
	idA := deviceID(t, keyA)
	idB := deviceID(t, newKey(t))
	m, err := NewMQTT(MQTTConfig{
		Broker: b.URL, DeviceID: idB, // claims to be B
		ClientChain: b.ClientCert(idA, keyA.Public()), ClientKey: keyA, // with A's certificate
		RootCAs: b.RootCAs, Schedule: mqttlink.Schedule{BackoffBase: 10 * time.Millisecond, BackoffCap: 50 * time.Millisecond,
			RetryWindow: 20 * time.Millisecond, QuickRetry: 20 * time.Millisecond}, ConnectTimeout: 5 * time.Second,
		SendTimeout: 300 * time.Millisecond, // how long the identity probe waits
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	waitFor(t, "failed connection attempts", func() bool { return m.Stats().DialFailures >= 2 })
	cancel()
	<-done
	st := m.Stats()
	if st.Connects != 0 || st.Connected {
		t.Errorf("stats = %+v: a device with another device's identity got a usable connection", st)
	}
	if !strings.Contains(st.LastError, "refuses this device's topics") {
		t.Errorf("last error = %q, want the failed identity probe", st.LastError)
	}
	if err := m.Send(t.Context(), Record{Seq: 1, Event: "e", Kind: provenance.KindStart, Data: []byte{1}}); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Send = %v, want ErrNotConnected (a record must not be acknowledged into the void)", err)
	}
	if !strings.Contains(b.Log(), "Denied PUBLISH from keyframe-"+idB) {
		t.Error("the broker did not log denying the probe: the test did not exercise the ACL")
	}
}

// --- helpers ---

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func deviceID(t *testing.T, k *ecdsa.PrivateKey) string {
	t.Helper()
	id, err := provenance.DeviceID(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// selfSigned returns a chain with a self-signed certificate for k, enough
// for NewMQTT's checks (no broker involved).
func selfSigned(t *testing.T, k *ecdsa.PrivateKey, cn string) [][]byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	return [][]byte{der}
}

type testDevice struct {
	id   string
	key  *ecdsa.PrivateKey
	m    *MQTT
	stop func()
}

// startDevice runs an MQTT transport for a fresh device against b, with
// short reconnect delays, and waits until it is connected.
func startDevice(t *testing.T, b *mosquittotest.Broker, mod func(*MQTTConfig)) *testDevice {
	t.Helper()
	return startDeviceKey(t, b, newKey(t), mod)
}

// startDeviceKey is startDevice with a given device key.
func startDeviceKey(t *testing.T, b *mosquittotest.Broker, key *ecdsa.PrivateKey, mod func(*MQTTConfig)) *testDevice {
	t.Helper()
	id := deviceID(t, key)
	cfg := MQTTConfig{
		Broker:      b.URL,
		DeviceID:    id,
		ClientChain: b.ClientCert(id, key.Public()),
		ClientKey:   key,
		RootCAs:     b.RootCAs,
		Schedule: mqttlink.Schedule{BackoffBase: 10 * time.Millisecond, BackoffCap: 100 * time.Millisecond,
			RetryWindow: 50 * time.Millisecond, QuickRetry: 50 * time.Millisecond}, ConnectTimeout: 5 * time.Second, SendTimeout: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	m, err := NewMQTT(cfg)
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
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		})
	}
	t.Cleanup(stop)
	waitFor(t, "the device to connect", m.Connected)
	return &testDevice{id: id, key: key, m: m, stop: stop}
}

// connectClient connects a plain paho client as user cn (its certificate's
// CN).
func connectClient(t *testing.T, b *mosquittotest.Broker, cn, clientID string) paho.Client {
	t.Helper()
	return connectTLS(t, b, b.ClientTLS(cn), clientID)
}

func connectTLS(t *testing.T, b *mosquittotest.Broker, tc *tls.Config, clientID string) paho.Client {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker(b.URL).SetClientID(clientID).SetTLSConfig(tc).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(opts)
	if err := wait(c.Connect()); err != nil {
		t.Fatalf("connect %s: %v", clientID, err)
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func wait(tok paho.Token) error {
	if !tok.WaitTimeout(waitTimeout) {
		return errors.New("token did not complete")
	}
	return tok.Error()
}

func publish(t *testing.T, c paho.Client, topic, payload string, retain bool) {
	t.Helper()
	if err := wait(c.Publish(topic, 1, retain, payload)); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

type received struct {
	topic    string
	payload  []byte
	qos      byte
	retained bool
}

type subscription struct{ ch chan received }

var clientSeq atomic.Int64

// subscribe subscribes a fresh client of user cn to filter.
func subscribe(t *testing.T, b *mosquittotest.Broker, cn, filter string) *subscription {
	t.Helper()
	c := connectClient(t, b, cn, "sub-"+strings.ReplaceAll(cn, "/", "_")+"-"+strconv.FormatInt(clientSeq.Add(1), 10))
	s := &subscription{ch: make(chan received, 64)}
	tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		s.ch <- received{m.Topic(), append([]byte(nil), m.Payload()...), m.Qos(), m.Retained()}
	})
	if err := wait(tok); err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	return s
}

func (s *subscription) next(t *testing.T) received {
	t.Helper()
	select {
	case m := <-s.ch:
		return m
	case <-time.After(waitTimeout):
		t.Fatal("no message within the wait")
		return received{}
	}
}

// retained returns the retained payload of topic as a new subscriber of
// user homeassistant sees it ("" if none).
func retained(t *testing.T, b *mosquittotest.Broker, topic string) string {
	t.Helper()
	s := subscribe(t, b, mosquittotest.HomeAssistant, topic)
	select {
	case m := <-s.ch:
		if !m.retained {
			t.Fatalf("first message on %s is not the retained one", topic)
		}
		return string(m.payload)
	case <-time.After(quietWait):
		return ""
	}
}

func nextReply(t *testing.T, s *subscription) StateReply {
	t.Helper()
	m := s.next(t)
	var r StateReply
	if err := json.Unmarshal(m.payload, &r); err != nil {
		t.Fatalf("state reply %q: %v", m.payload, err)
	}
	return r
}

func nextCall[T any](t *testing.T, ch chan T) T {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(waitTimeout):
		t.Fatal("the command handler was not called")
		var zero T
		return zero
	}
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

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestMQTTReconnectDelaysComeFromInjectedRand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		key := newKey(t)
		id := deviceID(t, key)
		rnd := backofftest.Seeded(11)
		var mu sync.Mutex
		var dials []time.Time
		m, err := NewMQTT(MQTTConfig{
			Broker: "tls://broker.invalid", DeviceID: id, ClientChain: selfSigned(t, key, id), ClientKey: key,
			Schedule: mqttlink.Schedule{BackoffBase: time.Second, BackoffCap: 4 * time.Second, RetryWindow: 3 * time.Second, QuickRetry: 500 * time.Millisecond},
			Clock:    clock.System{}, Rand: rnd,
			Dial: func(context.Context, string, string) (net.Conn, error) {
				mu.Lock()
				defer mu.Unlock()
				dials = append(dials, time.Now())
				return nil, errors.New("test: connection refused")
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		for {
			synctest.Wait()
			mu.Lock()
			n := len(dials)
			mu.Unlock()
			if n == 6 {
				break
			}
			time.Sleep(time.Second)
		}
		cancel()
		<-done
		s := time.Second
		want := []time.Duration{s / 2, 3 * s, 4 * s, 4 * s, 4 * s} // quick, then max(window, 2^n) capped
		asked := rnd.Asked()[:5]
		for i, n := range asked {
			if time.Duration(n-1) != want[i] {
				t.Fatalf("ceilings asked = %v, want %v", asked, want)
			}
		}
		drawn := rnd.Drawn()
		// In the bubble's clock, each gap between dials is exactly the
		// delay drawn from the injected Rand.
		for i := 1; i < 6; i++ {
			gap, d := dials[i].Sub(dials[i-1]), time.Duration(drawn[i-1])
			if gap != d {
				t.Errorf("gap before dial %d = %v, want the drawn %v", i, gap, d)
			}
		}
		if st := m.Stats(); st.DialFailures < 6 || st.Connects != 0 {
			t.Errorf("stats = %+v", st)
		}
	})
}
