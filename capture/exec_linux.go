package capture

import (
	"os/exec"
	"syscall"
)

// execSysProcAttr puts the command in its own process group (so stopping
// it reaches what it started) and has the kernel kill it if keyframe dies.
func execSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// stopProcess sends SIGTERM (or SIGKILL) to the command's process group.
func stopProcess(cmd *exec.Cmd, kill bool) {
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	if err := syscall.Kill(-cmd.Process.Pid, sig); err != nil {
		_ = cmd.Process.Signal(sig)
	}
}
