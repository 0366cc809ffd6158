package motion

import (
	"fmt"
	"time"
)

// Config tunes the [Detector] and the [Lifecycle]. Start from
// [DefaultConfig]; [Config.Validate] states the bounds of every field.
type Config struct {
	// AnalysisWidth is the width the luma plane is reduced to (by an
	// integer box average) before analysis: the input width divided by the
	// nearest whole factor. Default 160.
	AnalysisWidth int
	// NoiseFloor is the smallest per-pixel difference from the background,
	// in luma levels, that counts as change. Default 10.
	NoiseFloor int
	// NoiseK scales the measured noise level (the running mean absolute
	// difference of still pixels) into the per-pixel threshold:
	// threshold = max(NoiseFloor, NoiseK*noise). Default 3.
	NoiseK float64
	// FlickerK scales each pixel's own variability (its running mean
	// absolute difference from the background) into that pixel's
	// threshold, so pixels that keep changing (leaves, water, an on-screen
	// clock) stop counting as change: a pixel's threshold is
	// max(the global threshold, FlickerK*variability). Default 3.
	FlickerK float64
	// Shadow is the darkest a shadow may make a pixel, as a fraction of its
	// background level: a changed pixel darkened to between Shadow and
	// 0.92 of its background, with its neighbours darkened by the same
	// ratio (the texture under a shadow shows through; an object brings
	// its own), is shadow, not motion. 0 turns shadow detection off.
	// Default 0.4.
	Shadow float64
	// MinArea is the smallest blob of changed pixels, as a fraction of the
	// analysed frame, that counts as motion. Default 0.003.
	MinArea float64
	// LightSwitch is the fraction of pixels still changed after the
	// frame's brightness and contrast are matched to the background above
	// which a change is global (light switch, IR cut filter): the
	// background is re-seeded and no motion is reported. A contrast change
	// beyond ±25% or a brightness step is global whatever this says.
	// Default 0.7.
	LightSwitch float64
	// BrightnessStep is the smallest change of the frame's median
	// brightness against the background, in luma levels, that is a global
	// change (a light switch): the background is re-seeded. It is also at
	// least twice the per-pixel threshold. Default 16.
	BrightnessStep int
	// ContrastStep is the contrast ratio (the frame's spread of levels over
	// the background's) beyond which, or below whose inverse, a change is
	// global (an IR switch, a lamp); smaller contrast changes are matched
	// and compensated. Default 1.25.
	ContrastStep float64
	// BackgroundRate is the per-frame learning rate of the background for
	// pixels that are not changed. Default 0.05.
	BackgroundRate float64
	// AbsorbFrames is how many consecutive frames a pixel may stay changed
	// while nothing in its blob moves before the background takes its new
	// value (a parked car, a moved chair, a box put down). Default 100.
	AbsorbFrames int
	// HoldFrames is how many consecutive frames a pixel may stay changed,
	// at most, while its blob keeps moving a little (a person sitting or
	// standing: a hand, the head; some of its pixels change from one frame
	// to the next at least once every AbsorbFrames frames): it stays
	// foreground, so a person in view stays motion and in one event. A
	// value at or below AbsorbFrames holds nothing longer than
	// AbsorbFrames. Default 3000 (5 minutes at 10 fps).
	HoldFrames int
	// GhostFrames is how many consecutive frames a blob must look like a
	// ghost before its pixels are re-seeded from the frame: the place an
	// object that had become background left (a parked car drove off, a
	// box was taken away, a person who sat still got up). When a changed
	// pixel is absorbed, the detector keeps the background level it
	// replaces; a blob that does not move and of which at least half the
	// pixels show that old level again is a ghost. It is never motion,
	// from the first frame it looks like one, so an event ends when the
	// object has gone, not AbsorbFrames later. A still object in front of
	// the background is not a ghost (the frame shows the object, not the
	// old level). 0 turns ghost detection off. Default 5 (half a second
	// at 10 fps).
	GhostFrames int
	// Mask lists polygons whose pixels are never analysed (an on-screen
	// clock, a neighbour's window). Coordinates are fractions of the frame's
	// width and height, so a mask holds at any resolution. Default none.
	Mask []Polygon
	// Zones, when given, limit motion to blobs with pixels in a zone and
	// name the zones each event touched (a driveway, a door). Default
	// none: motion anywhere counts.
	Zones []Zone
	// MinMotionFrames is the number of consecutive motion frames that starts
	// an event. Default 3.
	MinMotionFrames int
	// PreRoll is how long before the trigger frame an event's Start is
	// reported to begin (never before the last event's end or the first
	// frame seen): for recordings that keep frames from before the
	// trigger. Default 0.
	PreRoll time.Duration
	// EventGap is the quiet time after the last motion frame that ends an
	// event. Default 3s.
	EventGap time.Duration
	// PostRoll is the time after the last motion frame that an event's end
	// includes (never beyond the frame that decided the end). Default 1s.
	PostRoll time.Duration
	// MaxLength ends an event that lasts this long; motion that goes on
	// starts a new one. Default 60s.
	MaxLength time.Duration
}

// DefaultConfig returns the defaults described at each [Config] field.
func DefaultConfig() Config {
	return Config{
		AnalysisWidth:   160,
		NoiseFloor:      10,
		NoiseK:          3,
		FlickerK:        3,
		Shadow:          0.4,
		MinArea:         0.003,
		LightSwitch:     0.7,
		BrightnessStep:  16,
		ContrastStep:    1.25,
		BackgroundRate:  0.05,
		AbsorbFrames:    100,
		HoldFrames:      3000,
		GhostFrames:     5,
		MinMotionFrames: 3,
		PreRoll:         0,
		EventGap:        3 * time.Second,
		PostRoll:        time.Second,
		MaxLength:       60 * time.Second,
	}
}

// Bounds of the Config fields, checked by Validate. They match the ranges
// the agent's configuration file accepts.
const (
	minAnalysisWidth, maxAnalysisWidth     = 32, 1280
	minNoiseFloor, maxNoiseFloor           = 1, 128
	minNoiseK, maxNoiseK                   = 0.5, 20
	minFlickerK, maxFlickerK               = 1, 20
	minShadow, maxShadow                   = 0, 0.9
	minMinArea, maxMinArea                 = 0.0001, 0.5
	minLightSwitch, maxLightSwitch         = 0.05, 1
	minBackgroundRate, maxBackgroundRate   = 0.001, 0.5 // ≤ 0.5 keeps the fixed-point update inside int32
	minAbsorbFrames, maxAbsorbFrames       = 1, 65535   // a uint16 counter per pixel
	minHoldFrames, maxHoldFrames           = 1, 65535   // a uint16 counter per pixel
	minGhostFrames, maxGhostFrames         = 0, 255     // a uint8 counter per pixel
	minMinMotionFrames, maxMinMotionFrames = 1, 100
	minEventGap, maxEventGap               = 0, time.Hour
	minPreRoll, maxPreRoll                 = 0, time.Hour
	minBrightnessStep, maxBrightnessStep   = 4, 255
	minContrastStep, maxContrastStep       = 1.05, 4
	minPostRoll, maxPostRoll               = 0, time.Hour
	minMaxLength, maxMaxLength             = time.Second, 24 * time.Hour
)

// Validate reports the first field that is out of range, naming it:
// "motion: MinArea: 1.5 out of range [0.0001, 0.5]". MinArea must also be
// below LightSwitch, or no motion could ever be reported.
func (c Config) Validate() error {
	if err := checkInt("AnalysisWidth", c.AnalysisWidth, minAnalysisWidth, maxAnalysisWidth); err != nil {
		return err
	}
	if err := checkInt("NoiseFloor", c.NoiseFloor, minNoiseFloor, maxNoiseFloor); err != nil {
		return err
	}
	if err := checkFloat("NoiseK", c.NoiseK, minNoiseK, maxNoiseK); err != nil {
		return err
	}
	if err := checkFloat("FlickerK", c.FlickerK, minFlickerK, maxFlickerK); err != nil {
		return err
	}
	if err := checkFloat("Shadow", c.Shadow, minShadow, maxShadow); err != nil {
		return err
	}
	if err := checkFloat("MinArea", c.MinArea, minMinArea, maxMinArea); err != nil {
		return err
	}
	if err := checkFloat("LightSwitch", c.LightSwitch, minLightSwitch, maxLightSwitch); err != nil {
		return err
	}
	if err := checkInt("BrightnessStep", c.BrightnessStep, minBrightnessStep, maxBrightnessStep); err != nil {
		return err
	}
	if err := checkFloat("ContrastStep", c.ContrastStep, minContrastStep, maxContrastStep); err != nil {
		return err
	}
	if err := checkFloat("BackgroundRate", c.BackgroundRate, minBackgroundRate, maxBackgroundRate); err != nil {
		return err
	}
	if err := checkInt("AbsorbFrames", c.AbsorbFrames, minAbsorbFrames, maxAbsorbFrames); err != nil {
		return err
	}
	if err := checkInt("HoldFrames", c.HoldFrames, minHoldFrames, maxHoldFrames); err != nil {
		return err
	}
	if err := checkInt("GhostFrames", c.GhostFrames, minGhostFrames, maxGhostFrames); err != nil {
		return err
	}
	if err := checkInt("MinMotionFrames", c.MinMotionFrames, minMinMotionFrames, maxMinMotionFrames); err != nil {
		return err
	}
	if err := checkDuration("PreRoll", c.PreRoll, minPreRoll, maxPreRoll); err != nil {
		return err
	}
	if err := checkDuration("EventGap", c.EventGap, minEventGap, maxEventGap); err != nil {
		return err
	}
	if err := checkDuration("PostRoll", c.PostRoll, minPostRoll, maxPostRoll); err != nil {
		return err
	}
	if err := checkDuration("MaxLength", c.MaxLength, minMaxLength, maxMaxLength); err != nil {
		return err
	}
	for i, poly := range c.Mask {
		if err := checkPolygon(fmt.Sprintf("Mask[%d]", i), poly); err != nil {
			return err
		}
	}
	if err := checkZones(c.Zones); err != nil {
		return err
	}
	if c.MinArea >= c.LightSwitch {
		return fmt.Errorf("motion: MinArea: %v must be below LightSwitch %v", c.MinArea, c.LightSwitch)
	}
	return nil
}

func checkInt(name string, v, lo, hi int) error {
	if v < lo || v > hi {
		return fmt.Errorf("motion: %s: %d out of range [%d, %d]", name, v, lo, hi)
	}
	return nil
}

func checkFloat(name string, v, lo, hi float64) error {
	if !(v >= lo && v <= hi) { // also rejects NaN
		return fmt.Errorf("motion: %s: %v out of range [%v, %v]", name, v, lo, hi)
	}
	return nil
}

func checkDuration(name string, v, lo, hi time.Duration) error {
	if v < lo || v > hi {
		return fmt.Errorf("motion: %s: %v out of range [%v, %v]", name, v, lo, hi)
	}
	return nil
}
