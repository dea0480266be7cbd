package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/cgroups"
)

// netnsDir is where named network namespaces are bind-mounted, as iproute2 does it.
// Agents are entered with `nsenter --net=<netnsDir>/<name>`.
const netnsDir = "/var/run/netns"

// bpffsDefault is the conventional bpffs mount point; the harness mounts bpffs
// there when nothing is mounted yet.
const bpffsDefault = "/sys/fs/bpf"

// addNetns creates the named network namespace with `ip netns add`, which also
// makes netnsDir a shared mount so the bind mount survives in other mount
// namespaces. The new namespace has only a loopback device, which is set up.
func addNetns(ctx context.Context, name string) (string, error) {
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return "", fmt.Errorf("create netns %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	path := filepath.Join(netnsDir, name)
	if out, err := exec.CommandContext(ctx, "ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return path, fmt.Errorf("set lo up in netns %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return path, nil
}

// deleteNetns removes a named network namespace. Interfaces inside it (veth
// ends included) go away once no process or file descriptor holds it.
// A namespace that does not exist is not an error.
func deleteNetns(name string) error {
	path := filepath.Join(netnsDir, name)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput()
	if err != nil {
		if _, statErr := os.Stat(path); errors.Is(statErr, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("delete netns %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// listNetns returns the names of all named network namespaces.
func listNetns() ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", netnsDir, err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

// InNetns runs fn on an OS thread that has joined the network namespace at path.
// Setns changes only the calling thread, so the goroutine is locked to its thread;
// if the thread cannot be moved back, it stays locked and the Go runtime
// discards it when the goroutine exits, so no goroutine ever runs in the wrong
// namespace by accident.
func InNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", path, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		fnErr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- errors.Join(fnErr, fmt.Errorf("return from netns %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

// setSysctls writes /proc/sys keys (dotted form, e.g. "net.ipv4.ip_forward")
// inside the network namespace at path. /proc/sys/net is resolved against the
// namespace of the thread that opens the file.
func setSysctls(path string, kv map[string]string) error {
	return InNetns(path, func() error {
		for k, v := range kv {
			file := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
			if err := os.WriteFile(file, []byte(v), 0o644); err != nil {
				return fmt.Errorf("set sysctl %s=%s in %s: %w", k, v, path, err)
			}
		}
		return nil
	})
}

// Cgroup2Mount returns where the cgroup v2 hierarchy is mounted. It is read
// from /proc/self/mountinfo because hosts differ: /sys/fs/cgroup on unified
// systems, /sys/fs/cgroup/unified on hybrid ones.
func Cgroup2Mount() (string, error) { return cgroups.FindV2Mount() }

// BPFFSMount returns the bpffs mount at /sys/fs/bpf, mounting bpffs there
// first when nothing is mounted. Node BPF roots are directories below it.
func BPFFSMount() (string, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(bpffsDefault, &st); err != nil {
		return "", fmt.Errorf("statfs %s: %w", bpffsDefault, err)
	}
	if st.Type == unix.BPF_FS_MAGIC {
		return bpffsDefault, nil
	}
	if err := unix.Mount("bpf", bpffsDefault, "bpf", 0, ""); err != nil {
		return "", fmt.Errorf("mount bpffs at %s: %w", bpffsDefault, err)
	}
	return bpffsDefault, nil
}

// killCgroup kills every process in the cgroup subtree at dir and waits until
// the subtree is empty, then removes the directories leaf first.
// A missing directory is not an error.
func killCgroup(dir string, timeout time.Duration) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	// cgroup.kill (Linux 5.14+) kills the whole subtree atomically. Older
	// kernels: signal what cgroup.procs lists, repeatedly, until empty.
	killFile := filepath.Join(dir, "cgroup.kill")
	hasKill := os.WriteFile(killFile, []byte("1"), 0o200) == nil
	deadline := time.Now().Add(timeout)
	for {
		populated, err := cgroupPopulated(dir)
		if err != nil {
			return err
		}
		if !populated {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s still has processes after %s", dir, timeout)
		}
		if !hasKill {
			_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
				if err != nil || !d.IsDir() {
					return nil
				}
				for _, pid := range cgroupPids(p) {
					_ = unix.Kill(pid, unix.SIGKILL)
				}
				return nil
			})
		}
		time.Sleep(20 * time.Millisecond)
	}
	return removeCgroupTree(dir)
}

// cgroupPopulated reports whether any process lives in the subtree at dir.
func cgroupPopulated(dir string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return false, fmt.Errorf("read cgroup.events of %s: %w", dir, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "populated "); ok {
			return v == "1", nil
		}
	}
	return false, fmt.Errorf("no populated field in %s/cgroup.events", dir)
}

// cgroupPids lists the processes directly in the cgroup at dir.
func cgroupPids(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// removeCgroupTree rmdirs dir and its descendant cgroups, deepest first
// (cgroupfs refuses to remove a cgroup that has children).
func removeCgroupTree(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("walk cgroup %s: %w", dir, err)
	}
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := unix.Rmdir(dirs[i]); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
		}
	}
	return errors.Join(errs...)
}

// processStartTime returns the start time of pid in clock ticks since boot
// (field 22 of /proc/<pid>/stat); together with the pid it identifies a
// process even when pids are reused.
func processStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces and parentheses; fields
	// after the last ')' are fixed.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state); start time is field 22.
	if len(fields) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat: too few fields", pid)
	}
	var st uint64
	if _, err := fmt.Sscan(fields[19], &st); err != nil {
		return 0, fmt.Errorf("parse start time in /proc/%d/stat: %w", pid, err)
	}
	return st, nil
}
