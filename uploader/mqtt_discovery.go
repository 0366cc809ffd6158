package uploader

import (
	"encoding/json"
	"fmt"
)

// Home Assistant discovery documents.
type haDevice struct {
	Identifiers  []string `json:"identifiers"`
	Name         string   `json:"name"`
	Manufacturer string   `json:"manufacturer"`
	Model        string   `json:"model"`
	SWVersion    string   `json:"sw_version,omitempty"`
}

type haAvailability struct {
	AvailabilityTopic   string `json:"availability_topic"`
	PayloadAvailable    string `json:"payload_available"`
	PayloadNotAvailable string `json:"payload_not_available"`
}

type haBinarySensor struct {
	Name        string `json:"name"`
	UniqueID    string `json:"unique_id"`
	DeviceClass string `json:"device_class"`
	StateTopic  string `json:"state_topic"`
	PayloadOn   string `json:"payload_on"`
	PayloadOff  string `json:"payload_off"`
	haAvailability
	Device haDevice `json:"device"`
}

type haCamera struct {
	Name     string `json:"name"`
	UniqueID string `json:"unique_id"`
	Topic    string `json:"topic"`
	haAvailability
	Device haDevice `json:"device"`
}

// discovery returns the retained Home Assistant discovery messages.
func discovery(cfg MQTTConfig, t mqttTopics) ([][2]string, error) {
	node := "keyframe_" + cfg.DeviceID
	dev := haDevice{
		Identifiers:  []string{node},
		Name:         cfg.DeviceName,
		Manufacturer: "keyframe",
		Model:        "keyframe camera agent",
		SWVersion:    cfg.SWVersion,
	}
	avail := haAvailability{AvailabilityTopic: t.status, PayloadAvailable: StatusOnline, PayloadNotAvailable: StatusOffline}
	motion, err := json.Marshal(haBinarySensor{
		Name: "Motion", UniqueID: node + "_motion", DeviceClass: "motion",
		StateTopic: t.motion, PayloadOn: MotionOn, PayloadOff: MotionOff,
		haAvailability: avail, Device: dev,
	})
	if err != nil {
		return nil, fmt.Errorf("uploader: mqtt: discovery: %w", err)
	}
	camera, err := json.Marshal(haCamera{
		Name: "Thumbnail", UniqueID: node + "_thumbnail", Topic: t.thumbnail,
		haAvailability: avail, Device: dev,
	})
	if err != nil {
		return nil, fmt.Errorf("uploader: mqtt: discovery: %w", err)
	}
	p := cfg.DiscoveryPrefix
	return [][2]string{
		{p + "/binary_sensor/" + node + "/motion/config", string(motion)},
		{p + "/camera/" + node + "/thumbnail/config", string(camera)},
	}, nil
}
