//go:build linux

package clip

import (
	"os/exec"
	"syscall"
)

// encSysProcAttr puts the encoder command in its own process group (so
// stopping it reaches what it started) and has the kernel kill it if
// keyframe dies, as capture does for its frame command.
func encSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// stopCommand sends SIGTERM (or SIGKILL) to the command's process group.
func stopCommand(cmd *exec.Cmd, kill bool) {
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	if err := syscall.Kill(-cmd.Process.Pid, sig); err != nil {
		_ = cmd.Process.Signal(sig)
	}
}
