//go:build !linux

package board

import (
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2/transport"
)

// openTPMDevice reports that this platform has no Linux TPM device support:
// the error wraps ErrNoTPM, ErrAbsent and errors.ErrUnsupported. A software
// TPM over TCP ("tcp:HOST:PORT") still works.
func (fs *FS) openTPMDevice(path string) (transport.TPMCloser, error) {
	return nil, fmt.Errorf("board: tpm: %s: TPM devices are not supported on this platform: %w (%w, %w)", path, ErrNoTPM, ErrAbsent, errors.ErrUnsupported)
}
