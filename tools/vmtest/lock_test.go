package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A second run of one kernel waits until the first one's run directory is
// released, instead of emptying it under the first one's VM.
func TestLockRunDirWaits(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "runs", "6.1-amd64")
	unlock, err := lockRunDir(dir, t.Logf)
	require.NoError(t, err)

	var said []string
	got := make(chan struct{})
	go func() {
		unlock2, err := lockRunDir(dir, func(f string, a ...any) { said = append(said, f) })
		if err == nil {
			unlock2()
		}
		close(got)
	}()
	select {
	case <-got:
		t.Fatal("the second run got the run directory while the first one held it")
	case <-time.After(200 * time.Millisecond):
	}
	unlock()
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the second run did not get the run directory after the first one released it")
	}
	require.Len(t, said, 1)
	require.True(t, strings.HasPrefix(said[0], "another vmtest run uses"), said[0])
}
