package browsertest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// processesUsing returns the IDs of the processes whose command line
// names a file under dir. A browser started by start names its directory in
// every process: --user-data-dir in the zygotes, renderers, GPU and utility
// processes, --database in the crash handlers (which leave the browser's
// process tree). dir is a fresh directory of one test, so these are exactly
// that browser's processes. Chromium rewrites the command line of the
// processes it forks into one string of space-separated arguments, so this
// looks for the path in the whole command line.
func processesUsing(dir string) ([]int, error) {
	want := []byte(filepath.Clean(dir) + string(filepath.Separator))
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("browsertest: list processes: %w", err)
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue // gone meanwhile, or not ours to read
		}
		if bytes.Contains(cmdline, want) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// killUsing sends SIGKILL to each process naming dir (see processesUsing)
// until none has been seen for a few passes in a row (a process can fork as
// its parent dies) or until timeout, and returns the IDs it killed.
func killUsing(dir string, timeout time.Duration) []int {
	const (
		quietPasses = 3
		pause       = 20 * time.Millisecond
	)
	var killed []int
	deadline := time.Now().Add(timeout)
	for quiet := 0; quiet < quietPasses && time.Now().Before(deadline); time.Sleep(pause) {
		pids, err := processesUsing(dir)
		if err != nil {
			return killed
		}
		if len(pids) == 0 {
			quiet++
			continue
		}
		quiet = 0
		for _, pid := range pids {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed = append(killed, pid)
			}
		}
	}
	return killed
}

// memory returns the sum of the resident set sizes (VmRSS, which counts
// memory shared between the processes once per process) and of the
// proportional set sizes (Pss, which shares it out) of pids, in bytes.
func memory(pids []int) (rss, pss int64, err error) {
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
		if err != nil {
			return 0, 0, fmt.Errorf("browsertest: memory of %d: %w", pid, err)
		}
		rss += field(b, "Rss:")
		pss += field(b, "Pss:")
	}
	return rss, pss, nil
}

// field returns the value in kB of the line starting with name in a
// /proc/PID/smaps_rollup, in bytes, or 0.
func field(b []byte, name string) int64 {
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		rest, ok := bytes.CutPrefix(line, []byte(name))
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(string(bytes.TrimSuffix(bytes.TrimSpace(rest), []byte(" kB"))), 10, 64)
		return kb << 10
	}
	return 0
}
