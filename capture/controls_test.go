package capture

import (
	"slices"
	"strings"
	"testing"
)

func TestControlName(t *testing.T) {
	for in, want := range map[string]string{
		"Horizontal Movement":             "horizontal_movement",
		"Exposure, Absolute":              "exposure_absolute",
		"White Balance Temperature, Auto": "white_balance_temperature_auto",
		"  Gain (dB) ":                    "gain_db",
		"H.264 Level":                     "h_264_level",
		"Brightness":                      "brightness",
		"--":                              "",
		"exposure_absolute":               "exposure_absolute",
		"Größe":                           "gr_e",
	} {
		if got := controlName(in); got != want {
			t.Errorf("controlName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseControls(t *testing.T) {
	for in, want := range map[string][]Control{
		"":   nil,
		"  ": nil,
		"horizontal_movement=6, exposure_absolute=100":            {{"horizontal_movement", 6}, {"exposure_absolute", 100}},
		"Horizontal Movement = 6":                                 {{"horizontal_movement", 6}},
		"brightness=-5,contrast=0x20":                             {{"brightness", -5}, {"contrast", 32}},
		"exposure_auto_priority=false, power_line_frequency=true": {{"exposure_auto_priority", 0}, {"power_line_frequency", 1}},
		"pixel_rate=1099511627776":                                {{"pixel_rate", 1 << 40}},
	} {
		got, err := ParseControls(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ParseControls(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"brightness":                `"brightness": want name=value`,
		"brightness=":               "brightness: no value after '='",
		"brightness=bright":         `brightness: value "bright" is not an integer`,
		"=5":                        "no control name",
		"a=1,,b=2":                  "entry 2 is empty",
		"a=1,":                      "entry 2 is empty",
		"a=1, A=2":                  "a is set twice",
		"gain=99999999999999999999": "is not an integer",
	} {
		_, err := ParseControls(in)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "capture: controls") {
			t.Errorf("ParseControls(%q) = %v, want an error with %q", in, err, want)
		}
	}
	// What Control.String writes, ParseControls reads.
	cs := []Control{{"a", -1}, {"b_c", 1 << 33}}
	s := cs[0].String() + "," + cs[1].String()
	if got, err := ParseControls(s); err != nil || !slices.Equal(got, cs) {
		t.Errorf("round trip %q: %v, %v", s, got, err)
	}
}

func TestCheckControlValue(t *testing.T) {
	intc := ControlInfo{Name: "brightness", Type: ControlInteger, Min: -10, Max: 10}
	menu := ControlInfo{Name: "power_line_frequency", Type: ControlMenu, Min: 0, Max: 2, Menu: []MenuItem{{0, "Disabled"}, {2, "60 Hz"}}}
	mask := ControlInfo{Name: "flags", Type: ControlBitmask, Max: 0x0f}
	for _, tc := range []struct {
		info  ControlInfo
		value int64
		want  string // "" = accepted
	}{
		{intc, -10, ""},
		{intc, 10, ""},
		{intc, 11, "brightness=11 is out of range -10..10"},
		{intc, -11, "out of range"},
		{menu, 2, ""},
		{menu, 1, "not one of its menu entries (0: Disabled, 2: 60 Hz)"},
		{menu, 3, "out of range"},
		{ControlInfo{Name: "auto", Type: ControlBoolean, Max: 1}, 2, "out of range 0..1"},
		{mask, 0x05, ""},
		{mask, 0x10, "bits outside its mask"},
		{mask, -1, "bits outside"},
		{ControlInfo{Name: "reset", Type: ControlButton}, 1, ""},
		{ControlInfo{Name: "big", Type: ControlInteger64}, 1 << 50, ""},
		{ControlInfo{Name: "temp", Type: ControlInteger, Max: 100, ReadOnly: true}, 1, "temp is read-only"},
		{ControlInfo{Name: "label", Type: ControlString}, 1, "has type string, which capture cannot set"},
	} {
		err := checkControlValue(Control{tc.info.Name, tc.value}, tc.info)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s=%d refused: %v", tc.info.Name, tc.value, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s=%d: %v, want an error with %q", tc.info.Name, tc.value, err, tc.want)
		}
	}
	if _, err := findControl(nil, "zoom"); err == nil || !strings.Contains(err.Error(), "no settable controls") {
		t.Errorf("no controls: %v", err)
	}
	if got := ControlType(42).String(); got != "type 42" {
		t.Errorf("unknown type %q", got)
	}
}
