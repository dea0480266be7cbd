package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

func TestRemoveStaleBPFRoots(t *testing.T) {
	dir := t.TempDir()
	// A process that has ended: its PID names a stale directory.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := cmd.Process.Pid
	old := time.Now().Add(-2 * time.Hour)
	for name, mtime := range map[string]time.Time{
		fmt.Sprintf("sluice-test-%d-111", dead):        {},
		fmt.Sprintf("sluice-test-%d-222", os.Getpid()): {},
		"sluice-test-333":                              old, // the older naming, old
		"sluice-test-444":                              {},  // the older naming, recent
		"other-555":                                    old,
	} {
		p := filepath.Join(dir, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if !mtime.IsZero() {
			if err := os.Chtimes(p, mtime, mtime); err != nil {
				t.Fatal(err)
			}
		}
	}
	removed := RemoveStaleBPFRoots(dir, time.Hour)
	sort.Strings(removed)
	want := []string{fmt.Sprintf("sluice-test-%d-111", dead), "sluice-test-333"}
	sort.Strings(want)
	if fmt.Sprint(removed) != fmt.Sprint(want) {
		t.Fatalf("removed %v, want %v", removed, want)
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 3 {
		t.Fatalf("left %d entries, want 3 (this process's, the recent one, another prefix)", len(left))
	}
}
