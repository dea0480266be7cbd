package harness

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ProcMem is what /proc/<pid>/status says about a process's memory, in KiB.
type ProcMem struct {
	// VmRSS is the resident set; VmHWM its peak so far.
	VmRSS int64 `json:"vmRSSKiB"`
	VmHWM int64 `json:"vmHWMKiB"`
	// RssAnon and RssFile split VmRSS into the process's own memory and
	// mapped files (the binary, shared libraries).
	RssAnon int64 `json:"rssAnonKiB"`
	RssFile int64 `json:"rssFileKiB"`
}

// ReadProcMem reads pid's memory figures.
func ReadProcMem(pid int) (ProcMem, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcMem{}, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	defer f.Close()
	return parseProcStatus(f)
}

// parseProcStatus reads the Vm and Rss lines (in kB) of /proc/<pid>/status.
func parseProcStatus(r io.Reader) (ProcMem, error) {
	var m ProcMem
	fields := map[string]*int64{"VmRSS:": &m.VmRSS, "VmHWM:": &m.VmHWM, "RssAnon:": &m.RssAnon, "RssFile:": &m.RssFile}
	s := bufio.NewScanner(r)
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) == 0 {
			continue
		}
		if p, ok := fields[f[0]]; ok && len(f) >= 2 {
			v, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return m, fmt.Errorf("parse %q: %w", s.Text(), err)
			}
			*p = v
		}
	}
	if m.VmRSS == 0 {
		return m, errors.New("no VmRSS in /proc/<pid>/status")
	}
	return m, s.Err()
}

// WaitExec waits until the agent's process is the agent itself: Pid is
// first nsenter's (and maybe a wrapper script's), which exec the agent in
// the same process, and memory read before that is theirs.
func (a *Agent) WaitExec(timeout time.Duration) error {
	var comm []byte
	var err error
	for deadline := time.Now().Add(timeout); ; {
		comm, err = os.ReadFile(fmt.Sprintf("/proc/%d/comm", a.Pid()))
		if err == nil && strings.TrimSpace(string(comm)) == "sluice-agent" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d is %q, not the agent, after %s", a.Pid(), strings.TrimSpace(string(comm)), timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// GCTraceWrapper writes dir/<bin's name>-gctrace, a script that execs bin
// with GODEBUG=gctrace=1, for StartAgent: the pid nsenter execs is still
// the agent's, and the runtime's trace goes to the agent's log only
// (ParseGCTrace reads it).
func GCTraceWrapper(dir, bin string) (string, error) {
	wrapper := filepath.Join(dir, filepath.Base(bin)+"-gctrace")
	script := fmt.Sprintf("#!/bin/sh\nGODEBUG=gctrace=1 exec %q \"$@\"\n", bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		return "", fmt.Errorf("write gctrace wrapper: %w", err)
	}
	return wrapper, nil
}

// GCStats are taken from the last and the largest gctrace lines of a log,
// in MB as the runtime prints them.
type GCStats struct {
	GCs int `json:"gcs"`
	// LiveMB is the heap marked live by the last GC, GoalMB the goal it
	// set; PeakMB the largest heap size at which a GC started.
	LiveMB int `json:"liveMB"`
	GoalMB int `json:"goalMB"`
	PeakMB int `json:"peakMB"`
}

// gcLine matches the heap part of a gctrace line, e.g. "…, 96->101->52 MB,
// 105 MB goal, …": heap at GC start, at GC end, live, and the next goal.
var gcLine = regexp.MustCompile(`^gc \d+ @.* (\d+)->(\d+)->(\d+) MB, (\d+) MB goal`)

// ParseGCTrace reads the GODEBUG=gctrace=1 lines of logs.
func ParseGCTrace(logs string) GCStats {
	var h GCStats
	for _, l := range strings.Split(logs, "\n") {
		m := gcLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		n := make([]int, 4)
		for i := range n {
			n[i], _ = strconv.Atoi(m[i+1])
		}
		h.GCs++
		h.LiveMB, h.GoalMB = n[2], n[3]
		h.PeakMB = max(h.PeakMB, n[0], n[1])
	}
	return h
}
