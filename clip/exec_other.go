//go:build !linux

package clip

import (
	"os"
	"os/exec"
	"syscall"
)

// encSysProcAttr: nothing beyond the defaults off Linux.
func encSysProcAttr() *syscall.SysProcAttr { return nil }

// stopCommand interrupts (or kills) the command itself; off Linux what it
// started is not reached.
func stopCommand(cmd *exec.Cmd, kill bool) {
	if kill {
		_ = cmd.Process.Kill()
		return
	}
	_ = cmd.Process.Signal(os.Interrupt)
}
