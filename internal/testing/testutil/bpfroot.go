package testutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bpfRootPrefix names the bpffs directories of tests: bpfRootPrefix, the
// test process's PID, "-", a random suffix.
const bpfRootPrefix = "sluice-test-"

var sweepOnce sync.Once

// BPFRoot returns a fresh directory on the bpffs at /sys/fs/bpf for a
// test's pins, removed when the test ends. A test process killed before
// its cleanup ran leaves its directory, with maps of full size pinned in
// it; the first BPFRoot of every later test process removes those whose
// process is gone. Without root the test skips (fails under CI); so does
// it without bpffs.
func BPFRoot(tb testing.TB) string {
	tb.Helper()
	RequireRoot(tb)
	sweepOnce.Do(func() { RemoveStaleBPFRoots("/sys/fs/bpf", time.Hour) })
	root, err := os.MkdirTemp("/sys/fs/bpf", fmt.Sprintf("%s%d-", bpfRootPrefix, os.Getpid()))
	if err != nil {
		SkipOrFail(tb, fmt.Sprintf("needs bpffs mounted at /sys/fs/bpf: %v", err))
	}
	tb.Cleanup(func() { os.RemoveAll(root) })
	return root
}

// RemoveStaleBPFRoots removes the test directories under dir whose process
// no longer runs, and those of the older naming without a PID once they
// are older than oldNaming. It returns what it removed.
func RemoveStaleBPFRoots(dir string, oldNaming time.Duration) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var removed []string
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, bpfRootPrefix) {
			continue
		}
		pidPart, _, hasPID := strings.Cut(strings.TrimPrefix(name, bpfRootPrefix), "-")
		pid, err := strconv.Atoi(pidPart)
		switch {
		case hasPID && err == nil:
			if processRuns(pid) {
				continue
			}
		default:
			info, err := e.Info()
			if err != nil || time.Since(info.ModTime()) < oldNaming {
				continue
			}
		}
		if os.RemoveAll(filepath.Join(dir, name)) == nil {
			removed = append(removed, name)
		}
	}
	return removed
}

// processRuns reports whether a process with pid exists (signal 0).
func processRuns(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
