package motion

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	if _, err := NewDetector(DefaultConfig()); err != nil {
		t.Fatalf("NewDetector(DefaultConfig()): %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		field string
		set   func(*Config)
	}{
		{"AnalysisWidth", func(c *Config) { c.AnalysisWidth = 31 }},
		{"AnalysisWidth", func(c *Config) { c.AnalysisWidth = 1281 }},
		{"NoiseFloor", func(c *Config) { c.NoiseFloor = 0 }},
		{"NoiseFloor", func(c *Config) { c.NoiseFloor = 129 }},
		{"NoiseK", func(c *Config) { c.NoiseK = 0.49 }},
		{"NoiseK", func(c *Config) { c.NoiseK = 20.01 }},
		{"NoiseK", func(c *Config) { c.NoiseK = math.NaN() }},
		{"MinArea", func(c *Config) { c.MinArea = 0.00009 }},
		{"MinArea", func(c *Config) { c.MinArea = 0.51 }},
		{"MinArea", func(c *Config) { c.MinArea = math.Inf(1) }},
		{"LightSwitch", func(c *Config) { c.LightSwitch = 0.049 }},
		{"LightSwitch", func(c *Config) { c.LightSwitch = 1.01 }},
		{"LightSwitch", func(c *Config) { c.LightSwitch = math.NaN() }},
		{"BackgroundRate", func(c *Config) { c.BackgroundRate = 0.0009 }},
		{"BackgroundRate", func(c *Config) { c.BackgroundRate = 0.51 }},
		{"AbsorbFrames", func(c *Config) { c.AbsorbFrames = 0 }},
		{"AbsorbFrames", func(c *Config) { c.AbsorbFrames = 65536 }},
		{"HoldFrames", func(c *Config) { c.HoldFrames = 0 }},
		{"HoldFrames", func(c *Config) { c.HoldFrames = 65536 }},
		{"GhostFrames", func(c *Config) { c.GhostFrames = -1 }},
		{"GhostFrames", func(c *Config) { c.GhostFrames = 256 }},
		{"MinMotionFrames", func(c *Config) { c.MinMotionFrames = 0 }},
		{"MinMotionFrames", func(c *Config) { c.MinMotionFrames = 101 }},
		{"EventGap", func(c *Config) { c.EventGap = -time.Nanosecond }},
		{"EventGap", func(c *Config) { c.EventGap = time.Hour + 1 }},
		{"PostRoll", func(c *Config) { c.PostRoll = -time.Second }},
		{"PostRoll", func(c *Config) { c.PostRoll = 2 * time.Hour }},
		{"MaxLength", func(c *Config) { c.MaxLength = 999 * time.Millisecond }},
		{"MaxLength", func(c *Config) { c.MaxLength = 25 * time.Hour }},
		{"MinArea", func(c *Config) { c.MinArea, c.LightSwitch = 0.3, 0.3 }}, // could never report motion
	} {
		c := DefaultConfig()
		tc.set(&c)
		err := c.Validate()
		if err == nil {
			t.Errorf("%s: %+v accepted", tc.field, c)
			continue
		}
		if want := "motion: " + tc.field + ": "; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: error %q does not start with %q", tc.field, err, want)
		}
		if _, nerr := NewDetector(c); nerr == nil || nerr.Error() != err.Error() {
			t.Errorf("%s: NewDetector error %v, want %v", tc.field, nerr, err)
		}
	}
	// Every bound itself is valid.
	for _, set := range []func(*Config){
		func(c *Config) { c.AnalysisWidth, c.NoiseFloor, c.NoiseK = 32, 1, 0.5 },
		func(c *Config) { c.AnalysisWidth, c.NoiseFloor, c.NoiseK = 1280, 128, 20 },
		func(c *Config) { c.MinArea, c.LightSwitch, c.BackgroundRate = 0.0001, 0.05, 0.001 },
		func(c *Config) { c.MinArea, c.LightSwitch, c.BackgroundRate = 0.5, 1, 0.5 },
		func(c *Config) {
			c.AbsorbFrames, c.MinMotionFrames, c.EventGap, c.PostRoll, c.MaxLength = 1, 1, 0, 0, time.Second
			c.HoldFrames, c.GhostFrames = 1, 0
		},
		func(c *Config) {
			c.AbsorbFrames, c.MinMotionFrames, c.EventGap, c.PostRoll, c.MaxLength = 65535, 100, time.Hour, time.Hour, 24*time.Hour
			c.HoldFrames, c.GhostFrames = 65535, 255
		},
	} {
		c := DefaultConfig()
		set(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("bound rejected: %v", err)
		}
	}
}

func TestConfigValidateMessage(t *testing.T) {
	c := DefaultConfig()
	c.MinArea = 1.5
	const want = "motion: MinArea: 1.5 out of range [0.0001, 0.5]"
	if err := c.Validate(); err == nil || err.Error() != want {
		t.Fatalf("error %v, want %q", err, want)
	}
}
