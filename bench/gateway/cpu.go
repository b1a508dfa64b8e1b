package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// which Linux fixes at 100 for user space whatever the kernel's HZ.
const clockTick = 10 * time.Millisecond

// processCPU returns the user + system CPU time process pid has used
// (all its threads; not its children), from /proc/<pid>/stat.
func processCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu time of process %d: %w", pid, err)
	}
	return parseStat(string(raw))
}

// parseStat reads utime and stime (fields 14 and 15) from a /proc/<pid>/stat
// line. The second field, the command name in parentheses, may hold spaces
// and parentheses, so fields are counted after its last ')'.
func parseStat(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc stat: no command name")
	}
	// After ")": field 3 (state) onwards.
	f := strings.Fields(stat[i+1:])
	const utime, stime = 14 - 3, 15 - 3
	if len(f) <= stime {
		return 0, fmt.Errorf("/proc stat: %d fields after the command name, want more than %d", len(f), stime)
	}
	var total int64
	for _, k := range []int{utime, stime} {
		n, err := strconv.ParseInt(f[k], 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("/proc stat: field %d is %q, not a tick count", k+3, f[k])
		}
		total += n
	}
	return time.Duration(total) * clockTick, nil
}

// cpuMeter measures the CPU time processes use during a run.
type cpuMeter struct {
	pids  []int
	start []time.Duration
}

// startCPU records the CPU time of each pid now.
func startCPU(pids ...int) (*cpuMeter, error) {
	m := &cpuMeter{pids: pids}
	for _, p := range pids {
		t, err := processCPU(p)
		if err != nil {
			return nil, err
		}
		m.start = append(m.start, t)
	}
	return m, nil
}

// stop returns the CPU time each pid used since startCPU.
func (m *cpuMeter) stop() ([]time.Duration, error) {
	used := make([]time.Duration, len(m.pids))
	for i, p := range m.pids {
		t, err := processCPU(p)
		if err != nil {
			return nil, err
		}
		used[i] = t - m.start[i]
	}
	return used, nil
}
