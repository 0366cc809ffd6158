package receiver

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"github.com/keyframe-cam/keyframe/internal/livestream"
)

// TestLiveTURN: the relay allocates for the credentials the receiver hands
// out (the owner's page, the camera at an offer), and refuses a wrong
// password, an expired username and a username the receiver never made.
// Only alice's page carries credentials; bob gets no page.
func TestLiveTURN(t *testing.T) {
	clk := &stepClock{t: time.Now()}
	e := newEnv(t, Options{Clock: clk, Live: LiveOptions{TURN: TURNOptions{Listen: "127.0.0.1:0", RelayIP: net.IPv4(127, 0, 0, 1)}}})
	a := newDevice(t)
	e.enroll(a, "alice")
	e.account("alice", RoleOwner)
	e.account("bob", RoleOwner)
	alice, err := e.srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := e.srv.NewSession("bob")
	if err != nil {
		t.Fatal(err)
	}
	resp, page := e.rawReq(http.MethodGet, "/live/"+a.id, "", nil, alice)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("alice's live page: %d", resp.StatusCode)
	}
	_, i, ok := strings.Cut(string(page), `data-ice="`)
	if !ok {
		t.Fatalf("alice's live page has no ICE servers:\n%s", page)
	}
	raw, _, _ := strings.Cut(i, `"`)
	var ic livestream.ICEConfig
	if err := json.Unmarshal([]byte(strings.ReplaceAll(raw, "&#34;", `"`)), &ic); err != nil || len(ic.Servers) != 1 || ic.Policy != "all" {
		t.Fatalf("the page's ICE configuration %q: %+v %v", raw, ic, err)
	}
	srv := ic.Servers[0]
	if !strings.HasPrefix(srv.URLs[0], "turn:127.0.0.1:") || !strings.Contains(srv.Username, ":o-alice") {
		t.Errorf("the page's TURN server %+v", srv)
	}
	if resp, body := e.rawReq(http.MethodGet, "/live/"+a.id, "", nil, bob); resp.StatusCode != http.StatusNotFound || strings.Contains(string(body), "turn:") {
		t.Errorf("bob's view of alice's live page: %d, with TURN credentials: %v", resp.StatusCode, strings.Contains(string(body), "turn:"))
	}
	addr := strings.TrimSuffix(strings.TrimPrefix(srv.URLs[0], "turn:"), "?transport=udp")
	allocate := func(user, pass string) error {
		conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: addr, TURNServerAddr: addr, Username: user, Password: pass, Realm: turnRealm, Conn: conn, RTO: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Listen(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		relay, err := c.AllocateWithContext(ctx)
		if err == nil {
			relay.Close()
		}
		return err
	}
	if err := allocate(srv.Username, srv.Credential); err != nil {
		t.Errorf("the page's credentials: %v", err)
	}
	if err := allocate(srv.Username, srv.Credential+"x"); err == nil {
		t.Errorf("a wrong password allocated")
	}
	if err := allocate("9999999999:o-alice", srv.Credential); err == nil {
		t.Errorf("a username of another expiry allocated with alice's password")
	}
	expired := e.srv.live.iceConfig("o-alice", "127.0.0.1").Servers[0]
	clk.add(DefaultLiveMaxTime + 2*time.Minute)
	if err := allocate(expired.Username, expired.Credential); err == nil {
		t.Errorf("expired credentials allocated")
	}
}
