//go:build !linux

package capture

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/keyframe-cam/keyframe/internal/clock"
)

// V4L2 is a V4L2 camera source. V4L2 exists only on Linux: on this platform
// OpenV4L2 and Probe return [ErrUnsupported].
type V4L2 struct{}

// OpenV4L2 returns [ErrUnsupported] on this platform.
func OpenV4L2(cfg V4L2Config, clk clock.Clock) (*V4L2, error) {
	return nil, fmt.Errorf("%w (%s)", ErrUnsupported, cfg.Device)
}

// Geometry is the format the driver set; there is none on this platform.
func (v *V4L2) Geometry() V4L2Geometry { return V4L2Geometry{} }

// Stats returns the counters; all zero on this platform.
func (v *V4L2) Stats() V4L2Stats { return V4L2Stats{} }

// Next returns [ErrUnsupported] on this platform.
func (v *V4L2) Next(ctx context.Context, f *Frame) error { return ErrUnsupported }

// Close does nothing on this platform.
func (v *V4L2) Close() error { return nil }

// Probe returns [ErrUnsupported] on this platform.
func Probe(devDir string) ([]DeviceInfo, error) {
	return nil, fmt.Errorf("%w (probe %s)", ErrUnsupported, devDir)
}

// SetControls returns [ErrUnsupported] on this platform.
func SetControls(path string, cs []Control, log *slog.Logger) error {
	return fmt.Errorf("%w (%s)", ErrUnsupported, path)
}
