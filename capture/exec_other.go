//go:build !linux

package capture

import (
	"os"
	"os/exec"
	"syscall"
)

// execSysProcAttr: nothing beyond the defaults off Linux.
func execSysProcAttr() *syscall.SysProcAttr { return nil }

// stopProcess interrupts (or kills) the command itself; off Linux what it
// started is not reached.
func stopProcess(cmd *exec.Cmd, kill bool) {
	if kill {
		_ = cmd.Process.Kill()
		return
	}
	_ = cmd.Process.Signal(os.Interrupt)
}
