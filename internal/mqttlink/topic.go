package mqttlink

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// CheckTopicPrefix accepts a topic prefix (the device's and the receiver's
// TopicPrefix, Home Assistant's discovery prefix): one or more non-empty
// topic levels, at most 128 bytes of UTF-8, without wildcards or NUL.
func CheckTopicPrefix(p string) error {
	if len(p) > 128 || !utf8.ValidString(p) || strings.ContainsAny(p, "+#\x00") {
		return fmt.Errorf("%q: want at most 128 bytes of UTF-8 without +, # or NUL", p)
	}
	for _, l := range strings.Split(p, "/") {
		if l == "" {
			return fmt.Errorf("%q has an empty level", p)
		}
	}
	return nil
}

// DeviceTopic returns <prefix>/<device>/, the root of one device's topics.
func DeviceTopic(prefix, device string) string { return prefix + "/" + device + "/" }

// EventTopic returns the topic a device publishes a record's bundle on:
// <prefix>/<device>/events/<event>/<kind>.
func EventTopic(prefix, device, event, kind string) string {
	return DeviceTopic(prefix, device) + "events/" + event + "/" + kind
}

// EventFilter returns the subscription that matches every device's event
// topics under prefix: <prefix>/+/events/+/+.
func EventFilter(prefix string) string { return prefix + "/+/events/+/+" }

// ParseEventTopic splits an event topic under prefix into its device, event
// and kind; ok is false if topic is not <prefix>/<device>/events/<event>/<kind>
// with non-empty levels. The levels are not otherwise checked: the caller
// validates them as the IDs they claim to be.
func ParseEventTopic(prefix, topic string) (device, event, kind string, ok bool) {
	rest, ok := strings.CutPrefix(topic, prefix)
	if !ok {
		return "", "", "", false
	}
	if rest, ok = strings.CutPrefix(rest, "/"); !ok {
		return "", "", "", false
	}
	p := strings.Split(rest, "/")
	if len(p) != 4 || p[0] == "" || p[1] != "events" || p[2] == "" || p[3] == "" {
		return "", "", "", false
	}
	return p[0], p[2], p[3], true
}
