package receiver

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/provenance"
)

// TestIngestClaimedDeviceMustBeSigner: a bundle signed by device A that
// arrives by a route naming device B (an MQTT topic of B) is refused as a
// path mismatch, even though both devices are enrolled and paired; nothing
// is stored, the refusal is counted and logged, and A's record is accepted
// afterwards by a route naming A (the refusal consumed nothing). The
// broker's ACL stops this before the receiver in the MQTT tests, so only a
// direct call reaches the check.
func TestIngestClaimedDeviceMustBeSigner(t *testing.T) {
	e := newEnv(t, Options{})
	a, b := newDevice(t), newDevice(t)
	e.enroll(a, "alice")
	e.enroll(b, "bob")
	r := a.record(t, "ev-1", provenance.KindStart, 1)

	res := e.srv.Ingest(r.body, Claim{Device: b.id})
	if res.Status != http.StatusUnprocessableEntity || res.Reason != ReasonPath || res.Stored() {
		t.Fatalf("A's record claimed for B: %+v, want 422 %s", res, ReasonPath)
	}
	if !strings.Contains(res.Message, b.id) || !strings.Contains(res.Message, "the signature is device "+a.id) {
		t.Errorf("refusal %q names neither the claimed device nor the signer", res.Message)
	}
	st := e.srv.Stats()
	if st.Rejected[ReasonPath] != 1 || st.Stored != 0 || st.Records != 0 {
		t.Errorf("stats %+v, want one %s refusal and nothing stored", st, ReasonPath)
	}
	if len(e.lines.lines()) != 0 {
		t.Errorf("a refused record produced a verified line: %q", e.lines.lines())
	}
	for _, d := range []*testDevice{a, b} {
		if _, err := os.Stat(filepath.Join(e.dir, "events", d.id)); !os.IsNotExist(err) {
			t.Errorf("events of device %s on disk after the refusal (err %v)", d.id, err)
		}
	}
	if logs := e.logs.buf.String(); !strings.Contains(logs, "reason="+ReasonPath) || !strings.Contains(logs, "device_claimed="+b.id) {
		t.Errorf("refusal not logged with its reason and the claimed device:\n%s", logs)
	}

	if res := e.srv.Ingest(r.body, Claim{Device: a.id}); res.Status != http.StatusCreated {
		t.Fatalf("A's record claimed for A after the refusal: %+v, want 201", res)
	}
	if st := e.srv.Stats(); st.Stored != 1 || st.Rejected[ReasonPath] != 1 {
		t.Errorf("stats %+v, want 1 stored and still one %s refusal", st, ReasonPath)
	}
}
