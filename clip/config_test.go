package clip

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigValid(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	// The frame cap holds the longest pre-roll at the highest rate.
	c.PreRoll, c.Rate = MaxPreRoll, maxRate
	if err := c.Validate(); err != nil {
		t.Fatalf("default caps at the longest pre-roll and highest rate: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		edit  func(c *Config)
		field string
	}{
		{func(c *Config) { c.PreRoll = -time.Second }, "PreRoll"},
		{func(c *Config) { c.PreRoll = 11 * time.Second }, "PreRoll"},
		{func(c *Config) { c.Rate = 0 }, "Rate"},
		{func(c *Config) { c.Rate = 31 }, "Rate"},
		{func(c *Config) { c.Rate = math.NaN() }, "Rate"},
		{func(c *Config) { c.Rate = math.Inf(1) }, "Rate"},
		{func(c *Config) { c.Quality = 0 }, "Quality"},
		{func(c *Config) { c.Quality = 101 }, "Quality"},
		{func(c *Config) { c.EncodeShare = 0 }, "EncodeShare"},
		{func(c *Config) { c.EncodeShare = 1.5 }, "EncodeShare"},
		{func(c *Config) { c.EncodeShare = math.NaN() }, "EncodeShare"},
		{func(c *Config) { c.MaxFrames = 0 }, "MaxFrames"},
		{func(c *Config) { c.MaxFrames = 50 }, "MaxFrames 50, want 51.."}, // 5 s at 10/s
		{func(c *Config) { c.PreRoll, c.Rate, c.MaxFrames = 10*time.Second, 30, 300 }, "MaxFrames 300, want 301.."},
		{func(c *Config) { c.MaxFrames = 1 << 20 }, "MaxFrames"},
		{func(c *Config) { c.MaxBytes = 1000 }, "MaxBytes"},
		{func(c *Config) { c.MaxBytes = 2 << 30 }, "MaxBytes"},
	} {
		c := DefaultConfig()
		tc.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "clip: config "+tc.field) {
			t.Errorf("%+v: %v, want an error naming %s", c, err, tc.field)
			continue
		}
		if _, err := NewRing(c); err == nil {
			t.Errorf("NewRing(%+v) accepted it", c)
		}
	}
	c := DefaultConfig()
	c.PreRoll, c.MaxFrames = 0, 1
	if err := c.Validate(); err != nil {
		t.Errorf("no pre-roll, one frame: %v", err)
	}
}
