package mqttlink

import (
	"strings"
	"testing"
)

func TestCheckTopicPrefix(t *testing.T) {
	for _, p := range []string{"keyframe", "site/kf", "a/b/c", strings.Repeat("x", 128)} {
		if err := CheckTopicPrefix(p); err != nil {
			t.Errorf("CheckTopicPrefix(%q): %v", p, err)
		}
	}
	for _, p := range []string{"", "k/+", "k/#", "k//f", "/k", "k/", "k\x00", strings.Repeat("x", 129), "k\xff"} {
		if err := CheckTopicPrefix(p); err == nil {
			t.Errorf("CheckTopicPrefix(%q) accepted", p)
		}
	}
}

// The receiver parses exactly what the device builds.
func TestEventTopicRoundTrip(t *testing.T) {
	topic := EventTopic("site/kf", "dev1", "ev1", "thumb")
	if want := "site/kf/dev1/events/ev1/thumb"; topic != want {
		t.Fatalf("EventTopic = %q, want %q", topic, want)
	}
	d, e, k, ok := ParseEventTopic("site/kf", topic)
	if !ok || d != "dev1" || e != "ev1" || k != "thumb" {
		t.Fatalf("ParseEventTopic(%q) = %q, %q, %q, %v", topic, d, e, k, ok)
	}
	if f := EventFilter("site/kf"); f != "site/kf/+/events/+/+" {
		t.Errorf("EventFilter = %q", f)
	}
	for _, bad := range []string{
		"site/kf/dev1/events/ev1",
		"site/kf/dev1/events/ev1/thumb/x",
		"site/kf/dev1/status",
		"site/kf//events/ev1/thumb",
		"site/kf/dev1/events//thumb",
		"site/kf/dev1/events/ev1/",
		"site/kfx/dev1/events/ev1/thumb",
		"other/dev1/events/ev1/thumb",
	} {
		if _, _, _, ok := ParseEventTopic("site/kf", bad); ok {
			t.Errorf("ParseEventTopic(%q) accepted", bad)
		}
	}
}
