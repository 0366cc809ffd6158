//go:build linux

package board

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// openTPMDevice opens a TPM character device (/dev/tpmrm0, /dev/tpm0) under
// the root.
func (fs *FS) openTPMDevice(path string) (transport.TPMCloser, error) {
	host := fs.Path(path)
	st, err := os.Stat(host)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("board: tpm: no TPM at %s: %w (%w)", path, ErrNoTPM, ErrAbsent)
	}
	if err != nil {
		return nil, fmt.Errorf("board: tpm: %w", err)
	}
	if st.Mode()&os.ModeCharDevice == 0 {
		return nil, fmt.Errorf("board: tpm: %s: not a character device", path)
	}
	tr, err := linuxtpm.Open(host)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ENODEV), errors.Is(err, syscall.ENXIO):
			// The node exists but no driver is behind it.
			return nil, fmt.Errorf("board: tpm: open %s: %w (%w): %w", path, ErrNoTPM, ErrAbsent, err)
		case errors.Is(err, syscall.EBUSY):
			return nil, fmt.Errorf("board: tpm: open %s: held by another process (use %s, the resource manager, to share the TPM): %w", path, DefaultTPMDevice, err)
		}
		return nil, fmt.Errorf("board: tpm: open %s: %w", path, err)
	}
	return tr, nil
}
