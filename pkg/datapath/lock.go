package datapath

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// RootLock is an exclusive lock on a bpf root directory.
type RootLock struct{ f *os.File }

// LockRoot takes an exclusive, non-blocking flock on the bpf root directory,
// so that a second agent pointed at the same root refuses to start instead
// of fighting the first over its maps and links. The kernel drops the lock
// when the process dies, so a SIGKILLed agent never leaves a stale lock.
func LockRoot(root string) (*RootLock, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("create bpf root %s: %w", root, err)
	}
	f, err := os.Open(root)
	if err != nil {
		return nil, fmt.Errorf("open bpf root %s: %w", root, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("bpf root %s is locked by another sluice agent: give each agent its own --bpf-root", root)
		}
		return nil, fmt.Errorf("lock bpf root %s: %w", root, err)
	}
	return &RootLock{f: f}, nil
}

// Close releases the lock.
func (l *RootLock) Close() error { return l.f.Close() }
