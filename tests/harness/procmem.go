package harness

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
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
