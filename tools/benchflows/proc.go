package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every
// Linux architecture Sluice builds for.
const clockTicks = 100

// procCPU is a process's user+system CPU time, in seconds, from
// /proc/<pid>/stat: every thread's, the exited ones' included.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu time of pid %d: %w", pid, err)
	}
	return parseProcStat(string(b))
}

// parseProcStat reads utime and stime (fields 14 and 15) of a
// /proc/<pid>/stat line. The command name (field 2) is in parentheses and
// may hold spaces and parentheses itself: fields are counted after the
// last ")".
func parseProcStat(s string) (float64, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc/<pid>/stat: no command name")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state): utime is field 14, f[11].
	if len(f) < 13 {
		return 0, errors.New("malformed /proc/<pid>/stat: too few fields")
	}
	var ticks uint64
	for _, s := range f[11:13] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed /proc/<pid>/stat: %w", err)
		}
		ticks += v
	}
	return float64(ticks) / clockTicks, nil
}

// machineCPU is the machine's busy and total CPU time in seconds, summed
// over CPUs, from the first line of /proc/stat: idle and iowait are not
// busy.
type machineCPU struct{ busy, total float64 }

func readMachineCPU() (machineCPU, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return machineCPU{}, err
	}
	defer f.Close()
	return parseMachineCPU(f)
}

func parseMachineCPU(r io.Reader) (machineCPU, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && line == "" {
		return machineCPU{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return machineCPU{}, fmt.Errorf("malformed /proc/stat line %q", strings.TrimSpace(line))
	}
	var m machineCPU
	// user nice system idle iowait irq softirq steal (guest time is
	// already in user).
	for i, s := range f[1:min(len(f), 9)] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return machineCPU{}, fmt.Errorf("malformed /proc/stat: %w", err)
		}
		t := float64(v) / clockTicks
		m.total += t
		if i != 3 && i != 4 {
			m.busy += t
		}
	}
	return m, nil
}
