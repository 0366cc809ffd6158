package capture

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Control is a V4L2 control setting. Name is the driver's control name
// normalised: lower case, each run of characters other than a-z and 0-9
// replaced by one '_', none at either end (vivid's "Horizontal Movement" is
// horizontal_movement, UVC's "Exposure, Absolute" is exposure_absolute).
// `keyframe probe` lists a camera's controls under these names.
type Control struct {
	Name  string
	Value int64
}

// String renders the control as name=value, the form [ParseControls] reads.
func (c Control) String() string { return c.Name + "=" + strconv.FormatInt(c.Value, 10) }

// controlName normalises a driver's control name (see [Control]).
func controlName(label string) string {
	var b strings.Builder
	b.Grow(len(label))
	gap := false
	for _, r := range strings.ToLower(label) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			if gap && b.Len() > 0 {
				b.WriteByte('_')
			}
			gap = false
			b.WriteRune(r)
			continue
		}
		gap = true
	}
	return b.String()
}

// ParseControls reads a list of control settings such as
// "horizontal_movement=6, exposure_absolute=100": name=value pairs separated
// by commas, spaces around them ignored. Names are normalised as the driver's
// are (so "Horizontal Movement=6" works too); a value is a decimal, 0x-hex
// or negative integer, or true/false (1/0). An empty string is no controls.
// A malformed entry, an empty one (",,"), a bad value or a control set twice
// is an error naming the entry.
func ParseControls(s string) ([]Control, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []Control
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			return nil, fmt.Errorf("capture: controls %q: entry %d is empty", s, i+1)
		}
		name, value, ok := strings.Cut(entry, "=")
		if !ok {
			return nil, fmt.Errorf("capture: controls: %q: want name=value", entry)
		}
		n := controlName(name)
		if n == "" {
			return nil, fmt.Errorf("capture: controls: %q: no control name before '='", entry)
		}
		v, err := parseControlValue(strings.TrimSpace(value))
		if err != nil {
			return nil, fmt.Errorf("capture: controls: %s: %w", n, err)
		}
		if slices.ContainsFunc(out, func(c Control) bool { return c.Name == n }) {
			return nil, fmt.Errorf("capture: controls: %s is set twice", n)
		}
		out = append(out, Control{Name: n, Value: v})
	}
	return out, nil
}

func parseControlValue(s string) (int64, error) {
	switch strings.ToLower(s) {
	case "":
		return 0, errors.New("no value after '='")
	case "true":
		return 1, nil
	case "false":
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		return 0, fmt.Errorf("value %q is not an integer (or true/false)", s)
	}
	return v, nil
}

// checkControls normalises and checks a configuration's control list.
func checkControls(cs []Control) ([]Control, error) {
	out := make([]Control, 0, len(cs))
	for _, c := range cs {
		n := controlName(c.Name)
		if n == "" {
			return nil, fmt.Errorf("control %q: no name", c.Name)
		}
		if slices.ContainsFunc(out, func(o Control) bool { return o.Name == n }) {
			return nil, fmt.Errorf("control %s is set twice", n)
		}
		out = append(out, Control{Name: n, Value: c.Value})
	}
	return out, nil
}

// ControlType is the type of a V4L2 control (V4L2_CTRL_TYPE_*).
type ControlType uint32

// Control types.
const (
	ControlInteger     ControlType = 1
	ControlBoolean     ControlType = 2
	ControlMenu        ControlType = 3
	ControlButton      ControlType = 4
	ControlInteger64   ControlType = 5
	ControlClass       ControlType = 6
	ControlString      ControlType = 7
	ControlBitmask     ControlType = 8
	ControlIntegerMenu ControlType = 9
)

// String is the short name `keyframe probe` shows.
func (t ControlType) String() string {
	switch t {
	case ControlInteger:
		return "int"
	case ControlBoolean:
		return "bool"
	case ControlMenu:
		return "menu"
	case ControlButton:
		return "button"
	case ControlInteger64:
		return "int64"
	case ControlClass:
		return "class"
	case ControlString:
		return "string"
	case ControlBitmask:
		return "bitmask"
	case ControlIntegerMenu:
		return "intmenu"
	}
	return "type " + strconv.FormatUint(uint64(t), 10)
}

// ControlInfo describes one control of a camera.
type ControlInfo struct {
	ID    uint32
	Name  string // normalised: the name V4L2Config.Controls takes
	Label string // the driver's name, e.g. "Exposure, Absolute"
	Type  ControlType
	// Min, Max, Step and Default as the driver reports them (VIDIOC_QUERYCTRL
	// reports none for 64-bit controls: all 0).
	Min, Max, Step, Default int64
	// Value is the current value when ValueErr is nil (probe only).
	Value    int64
	ValueErr error
	ReadOnly bool // cannot be set (also true for a control grabbed by a running stream)
	Inactive bool // settable, but without effect in the current mode (e.g. manual exposure under auto exposure)
	// Menu lists the valid values of a menu or integer-menu control.
	Menu []MenuItem
}

// MenuItem is one entry of a menu control.
type MenuItem struct {
	Index int64
	Name  string // for an integer menu, its value in decimal
}

// checkControlValue checks a setting against what the driver reported.
func checkControlValue(c Control, info ControlInfo) error {
	if info.ReadOnly {
		return fmt.Errorf("control %s is read-only", info.Name)
	}
	switch info.Type {
	case ControlButton, ControlInteger64:
		// A button takes any value; 64-bit ranges are the driver's to check.
		return nil
	case ControlInteger, ControlBoolean, ControlMenu, ControlIntegerMenu:
		if c.Value < info.Min || c.Value > info.Max {
			return fmt.Errorf("control %s=%d is out of range %d..%d", info.Name, c.Value, info.Min, info.Max)
		}
		if (info.Type == ControlMenu || info.Type == ControlIntegerMenu) && len(info.Menu) > 0 &&
			!slices.ContainsFunc(info.Menu, func(m MenuItem) bool { return m.Index == c.Value }) {
			return fmt.Errorf("control %s=%d is not one of its menu entries (%s)", info.Name, c.Value, menuString(info.Menu))
		}
		return nil
	case ControlBitmask:
		if c.Value < 0 || c.Value&^info.Max != 0 {
			return fmt.Errorf("control %s=%#x has bits outside its mask %#x", info.Name, c.Value, info.Max)
		}
		return nil
	}
	return fmt.Errorf("control %s has type %v, which capture cannot set", info.Name, info.Type)
}

// menuString renders menu entries as "0: Off, 1: 50 Hz".
func menuString(items []MenuItem) string {
	parts := make([]string, len(items))
	for i, m := range items {
		parts[i] = strconv.FormatInt(m.Index, 10) + ": " + m.Name
	}
	return strings.Join(parts, ", ")
}

// findControl looks a setting's control up by name; unknown names are an
// error listing the settable ones.
func findControl(infos []ControlInfo, name string) (ControlInfo, error) {
	for _, in := range infos {
		if in.Name == name {
			return in, nil
		}
	}
	var names []string
	for _, in := range infos {
		if !in.ReadOnly && in.Type != ControlClass {
			names = append(names, in.Name)
		}
	}
	if len(names) == 0 {
		return ControlInfo{}, fmt.Errorf("unknown control %q: this camera has no settable controls", name)
	}
	return ControlInfo{}, fmt.Errorf("unknown control %q (this camera has %s)", name, strings.Join(names, ", "))
}
