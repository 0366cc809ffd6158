package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/keyframe-cam/keyframe/internal/logthrottle"
	"github.com/keyframe-cam/keyframe/uploader"
	"github.com/keyframe-cam/keyframe/uploader/mosquittotest"
)

// TestCommandBurstLogsStayBounded is the flash-wear attack: whoever may
// send commands (Home Assistant's credentials) sends 20,000 snapshot
// commands as fast as the broker takes them to a running agent, over a real
// Mosquitto, with the logger `keyframe run` builds (logthrottle.NewText at
// the default level). Without the throttle each dropped command wrote its
// own warning (18,599 identical lines for 20,000 commands). Held: the agent
// writes at most maxLines lines for the whole run, and the suppressed=N
// counts it writes add up to every line it left out.
func TestCommandBurstLogsStayBounded(t *testing.T) {
	const (
		commands = 20000
		// The run's own lines (start, connect, ...) and, for each repeated
		// message (command dropped, command handled, event start and end),
		// a burst of 5 and one count per minute.
		maxLines = 50
	)
	broker := mosquittotest.Start(t)
	dir := t.TempDir()
	cfg := testConfig(dir, 160, 120)
	cfg.UploadURL = broker.URL
	key, device := brokerIdentity(t, broker, &cfg, dir)
	closeKey(key)

	// The attacker: Home Assistant's identity, which may send commands.
	replies := make(chan uploader.StateReply, 64)
	online := make(chan struct{}, 1)
	opts := paho.NewClientOptions().AddBroker(broker.URL).SetClientID("attacker").SetTLSConfig(broker.ClientTLS(mosquittotest.HomeAssistant)).
		SetProtocolVersion(4).SetAutoReconnect(false)
	ha := paho.NewClient(opts)
	if tok := ha.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer ha.Disconnect(100)
	base := "keyframe/" + device + "/"
	if tok := ha.Subscribe(base+"state", 1, func(_ paho.Client, m paho.Message) {
		var r uploader.StateReply
		if json.Unmarshal(m.Payload(), &r) == nil && r.Command == uploader.CommandStatus {
			replies <- r
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if tok := ha.Subscribe(base+"status", 1, func(_ paho.Client, m paho.Message) {
		if string(m.Payload()) == uploader.StatusOnline {
			select {
			case online <- struct{}{}:
			default:
			}
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	out := &lineWatcher{ch: make(chan struct{}, 1)}
	log, throttle := logthrottle.NewText(out, slog.LevelInfo) // as cmd/keyframe/run.go builds it
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a, err := New(cfg, Deps{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-online:
	case err := <-done:
		t.Fatalf("agent stopped: %v\n%s", err, strings.Join(out.snapshot(), "\n"))
	case <-ctx.Done():
		t.Fatalf("the agent did not come online\n%s", strings.Join(out.snapshot(), "\n"))
	}

	for range commands {
		ha.Publish(base+"cmd/"+uploader.CommandSnapshot, 0, false, "{}")
	}
	// Commands of one connection arrive in order and are handled one at a
	// time: the first status reply accounts for every command before it.
	var st *uploader.MQTTStats
	for st == nil {
		if tok := ha.Publish(base+"cmd/"+uploader.CommandStatus, 1, false, "{}"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("status command: %v", tok.Error())
		}
		select {
		case r := <-replies:
			st = r.MQTT
			if st == nil {
				t.Fatalf("status reply %+v without MQTT stats", r)
			}
		case <-time.After(time.Second): // the status command itself may have found the queue full: ask again
		case <-ctx.Done():
			t.Fatal("no status reply")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("agent: %v", err)
	}
	if err := throttle.Flush(); err != nil { // as cmd/keyframe/run.go does on exit
		t.Fatal(err)
	}

	received := st.Commands + st.CommandsRefused + st.CommandsDropped
	lines := out.snapshot()
	ts := throttle.Stats()
	var counted uint64
	re := regexp.MustCompile(` suppressed=(\d+) window=`)
	for _, l := range lines {
		if m := re.FindStringSubmatch(l); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			counted += n
		}
	}
	t.Logf("%d commands sent; the agent received %d (%d handled, %d refused, %d dropped: queue full); it wrote %d log lines (bound %d) for %d records, %d suppressed and counted in %d lines",
		commands, received, st.Commands, st.CommandsRefused, st.CommandsDropped, len(lines), maxLines, ts.Passed+ts.Suppressed, ts.Suppressed, ts.Summaries)
	if received < commands/2 {
		t.Fatalf("the agent received only %d of %d commands: the burst did not reach it, so the bound proves nothing", received, commands)
	}
	if st.CommandsDropped == 0 {
		t.Errorf("no command dropped: the burst did not fill the agent's queue")
	}
	if len(lines) > maxLines {
		t.Errorf("%d log lines for a burst of %d commands, want at most %d:\n%s", len(lines), commands, maxLines, strings.Join(lines, "\n"))
	}
	if counted != ts.Suppressed {
		t.Errorf("the suppressed=N lines count %d records, the throttle suppressed %d: some left out without a count", counted, ts.Suppressed)
	}
	if got := out.count("command dropped"); got == 0 {
		t.Errorf("no line says commands were dropped")
	}
}

// snapshot returns the lines written so far.
func (w *lineWatcher) snapshot() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.lines...)
}
