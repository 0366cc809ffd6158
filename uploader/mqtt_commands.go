package uploader

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// CommandFunc handles a command received on <prefix>/<device>/cmd/<name>.
// Its result (any JSON-encodable value, may be nil) or its error is published
// in a StateReply on <prefix>/<device>/state. It runs on its own goroutine,
// one command at a time, and may call the MQTT's Publish methods.
type CommandFunc func(ctx context.Context, name string, payload []byte) (result any, err error)

// StateReply is the JSON published on <prefix>/<device>/state in answer to
// a command.
type StateReply struct {
	Device  string     `json:"device"`
	Command string     `json:"command"`
	OK      bool       `json:"ok"`
	Error   string     `json:"error,omitempty"`
	Result  any        `json:"result,omitempty"`
	MQTT    *MQTTStats `json:"mqtt,omitempty"` // only in answer to "status"
	Time    time.Time  `json:"time"`           // the device's clock (may be unset on a board without RTC)
}

// command is a command waiting for the handler.
type command struct {
	name    string
	payload []byte
	sess    *mqttSession
	err     error // refused before the handler: answer with this error
}

// commandName returns the command named by topic if topic is exactly
// <prefix>/<device>/cmd/<name> for this device, with one level of name.
func (m *MQTT) commandName(topic string) (string, bool) {
	name, ok := strings.CutPrefix(topic, m.topics.cmdPrefix)
	if !ok || name == "" || strings.ContainsAny(name, "/+#") {
		return "", false
	}
	return name, true
}

// receiveCommand checks a received message's topic again (the broker's
// routing is not trusted) and queues it for the handler. cutSize is the
// size of a payload that was over the packet limit and not read (-1: none):
// such a command is answered with an error, never run.
func (m *MQTT) receiveCommand(s *mqttSession, topic string, payload []byte, retained bool, cutSize int) {
	name, ok := m.commandName(topic)
	if !ok {
		m.refused()
		m.log.Warn("uploader: mqtt: ignored a message on a topic that is not this device's command topic", "topic", clipTopic(topic))
		return
	}
	if retained {
		m.refused()
		m.log.Warn("uploader: mqtt: ignored a retained command (it would run again on every connect)", "command", clipTopic(name))
		return
	}
	c := command{name: name, sess: s}
	switch {
	case cutSize >= 0:
		c.err = fmt.Errorf("payload of %d bytes is over the limit of %d (not read)", cutSize, MaxCommandPayload)
	case len(payload) > MaxCommandPayload:
		c.err = fmt.Errorf("payload of %d bytes is over the limit of %d", len(payload), MaxCommandPayload)
	case name != CommandSnapshot && name != CommandStatus:
		c.err = fmt.Errorf("unknown command %q (known: %s, %s)", clipTopic(name), CommandSnapshot, CommandStatus)
	default:
		c.payload = append([]byte(nil), payload...)
	}
	select {
	case m.cmds <- c:
	default:
		m.mu.Lock()
		m.stats.CommandsDropped++
		m.mu.Unlock()
		m.log.Warn("uploader: mqtt: command queue full; command dropped", "command", clipTopic(name))
	}
}

func (m *MQTT) refused() {
	m.mu.Lock()
	m.stats.CommandsRefused++
	m.mu.Unlock()
}

func (m *MQTT) commandLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			// Commands of a connection that is gone are not answered. This
			// loop is the only receiver, so len > 0 means a receive will not
			// block.
			n := 0
			for len(m.cmds) > 0 {
				<-m.cmds
				n++
			}
			if n > 0 {
				m.mu.Lock()
				m.stats.CommandsDropped += n
				m.mu.Unlock()
				m.log.Info("uploader: mqtt: dropped commands still queued at shutdown", "commands", n)
			}
			return
		case c := <-m.cmds:
			m.runCommand(ctx, c)
		}
	}
}

// runCommand runs one command and publishes the reply on the session it
// came by.
func (m *MQTT) runCommand(ctx context.Context, c command) {
	reply := StateReply{Device: m.cfg.DeviceID, Command: c.name, Time: m.clk.Now().UTC()}
	err := c.err
	if err == nil {
		if c.name == CommandStatus {
			st := m.Stats()
			reply.MQTT = &st
		}
		switch {
		case m.cfg.OnCommand != nil:
			reply.Result, err = m.cfg.OnCommand(ctx, c.name, c.payload)
		case c.name != CommandStatus:
			err = fmt.Errorf("command %q is not supported by this device", c.name)
		}
	}
	if err != nil {
		reply.Error = err.Error()
	}
	reply.OK = err == nil
	b, merr := json.Marshal(reply)
	if merr != nil {
		reply.Result, reply.OK, reply.Error = nil, false, "result is not JSON-encodable: "+merr.Error()
		err = merr
		if b, merr = json.Marshal(reply); merr != nil {
			m.log.Error("uploader: mqtt: cannot encode a command reply", "err", merr)
			return
		}
	}
	m.mu.Lock()
	if err == nil {
		m.stats.Commands++
	} else {
		m.stats.CommandsRefused++
	}
	m.mu.Unlock()
	if err != nil {
		m.log.Warn("uploader: mqtt: command failed", "command", clipTopic(c.name), "err", err)
	} else {
		m.log.Info("uploader: mqtt: command handled", "command", c.name)
	}
	if perr := m.await(ctx, c.sess.c.Publish(m.topics.state, 1, false, b), m.cfg.SendTimeout); perr != nil {
		m.log.Warn("uploader: mqtt: cannot publish a command reply", "command", clipTopic(c.name), "err", perr)
	}
}

// clipTopic bounds an untrusted topic or name for a log line.
func clipTopic(s string) string {
	const max = 120
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
