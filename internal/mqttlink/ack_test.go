package mqttlink

import (
	"strings"
	"testing"
	"time"
)

func TestAckRoundTripAndStrictParse(t *testing.T) {
	s := PayloadSum([]byte("bundle"))
	if got := AckTopic("site/kf", "dev1"); got != "site/kf/dev1/ack" {
		t.Errorf("AckTopic = %q", got)
	}
	for _, a := range []Ack{
		NewAck(s, "ev-1", "start", 201, "ignored", 0),
		NewAck(s, "ev-1", "end", 200, "", 0),
		NewAck(s, "ev-1", "start", 409, "replay: seq 3 is not above 7", 0),
		NewAck(s, "ev-1", "start", 429, "quota", 1500*time.Millisecond),
		NewAck(s, "ev-1", "start", 422, strings.Repeat("\x01long", 100), 0),
	} {
		b, err := a.Marshal()
		if err != nil {
			t.Fatalf("Marshal(%+v): %v", a, err)
		}
		got, err := ParseAck(b)
		if err != nil || got != a {
			t.Errorf("ParseAck(%s) = %+v, %v; want %+v", b, got, err, a)
		}
	}
	if a := NewAck(s, "e", "start", 429, "q", 1500*time.Millisecond); a.RetryAfter != 2 {
		t.Errorf("retry after 1.5 s rounds to %d s, want 2", a.RetryAfter)
	}
	if a := NewAck(s, "e", "start", 201, "x", 0); a.Reason != "" {
		t.Errorf("a 201 keeps its reason %q", a.Reason)
	}
	good := `{"sha256":"` + s + `","event":"ev-1","kind":"start","status":429,"reason":"quota","retry_after":5}`
	if _, err := ParseAck([]byte(good)); err != nil {
		t.Fatalf("ParseAck(good): %v", err)
	}
	for name, bad := range map[string]string{
		"empty":             ``,
		"not JSON":          `hello`,
		"array":             `[1]`,
		"unknown field":     strings.Replace(good, `"status"`, `"x":1,"status"`, 1),
		"two objects":       good + good,
		"trailing garbage":  good + `x`,
		"short sum":         strings.Replace(good, s, s[:63], 1),
		"upper-case sum":    strings.Replace(good, s, strings.ToUpper(s), 1),
		"no sum":            strings.Replace(good, `"sha256":"`+s+`",`, ``, 1),
		"bad event":         strings.Replace(good, `"ev-1"`, `"ev/1"`, 1),
		"empty kind":        strings.Replace(good, `"start"`, `""`, 1),
		"status 503":        strings.Replace(good, `429`, `503`, 1),
		"status 302":        strings.Replace(good, `429`, `302`, 1),
		"429 without delay": strings.Replace(good, `,"retry_after":5`, ``, 1),
		"delay over a day":  strings.Replace(good, `"retry_after":5`, `"retry_after":86401`, 1),
		"delay with 409":    strings.Replace(good, `429`, `409`, 1),
		"reason with 201":   strings.Replace(strings.Replace(good, `429`, `201`, 1), `,"retry_after":5`, ``, 1),
		"control in reason": strings.Replace(good, `quota`, `quo\u0000ta`, 1),
		"too large":         strings.Replace(good, `quota`, strings.Repeat("q", MaxAckPayload), 1),
	} {
		if a, err := ParseAck([]byte(bad)); err == nil {
			t.Errorf("%s: ParseAck accepted %+v", name, a)
		} else if !strings.HasPrefix(err.Error(), "ack: ") {
			t.Errorf("%s: error %q lacks its prefix", name, err)
		}
	}
}

func FuzzParseAck(f *testing.F) {
	f.Add([]byte(`{"sha256":"` + PayloadSum(nil) + `","event":"e","kind":"start","status":201}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseAck(b)
		if err != nil {
			return
		}
		// What is accepted encodes back to something accepted and equal.
		enc, err := a.Marshal()
		if err != nil {
			t.Fatalf("accepted %+v does not marshal: %v", a, err)
		}
		if a2, err := ParseAck(enc); err != nil || a2 != a {
			t.Fatalf("re-parse of %s: %+v, %v", enc, a2, err)
		}
	})
}
