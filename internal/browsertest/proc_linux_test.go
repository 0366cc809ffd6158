package browsertest

import (
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestKillUsing starts a process naming a file in a directory, and one
// naming a directory whose name only starts the same: killUsing kills the
// first (found by its command line) and leaves the other.
func TestKillUsing(t *testing.T) {
	dir := t.TempDir()
	start := func(arg string) *exec.Cmd {
		// $0 of the script is arg: it shows in the command line.
		cmd := exec.Command("sh", "-c", "sleep 60", arg)
		if err := cmd.Start(); err != nil {
			t.Skipf("sh: %v", err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
		return cmd
	}
	ours := start(filepath.Join(dir, "profile", "x"))
	other := start(dir + "-other/x")

	pids, err := processesUsing(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The shell forks to run sleep: for a moment its child carries the
	// shell's command line too, so ours may be found with a child; the
	// process naming the other directory must never be.
	if !slices.Contains(pids, ours.Process.Pid) || slices.Contains(pids, other.Process.Pid) {
		t.Fatalf("processes naming %s: %v, want %d among them and not %d", dir, pids, ours.Process.Pid, other.Process.Pid)
	}
	// killUsing keeps looking until it has seen nothing a few times; the
	// killed process stays a zombie (with an empty command line) until Wait.
	if killed := killUsing(dir, 10*time.Second); !slices.Contains(killed, ours.Process.Pid) {
		t.Errorf("killed %v, want %d among them", killed, ours.Process.Pid)
	}
	var exit *exec.ExitError
	if err := ours.Wait(); !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("process naming %s ended with %v, want killed", dir, err)
	}
	if err := other.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the process naming another directory was killed: %v", err)
	}
}
