package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/cgroups"
)

// What a run that starts real Kubernetes node software (tests/cluster: a
// kubelet and containerd inside a node's namespace) leaves besides the
// harness's own objects, and removeRun takes away with them: cgroups in the
// cgroup v1 hierarchies of a hybrid host (the kubelet's cgroupfs driver
// creates the pods' cgroups in every v1 controller, under its --cgroup-root,
// which such a run puts below <controller>/<run id>), and mounts under the
// run's temporary directory (containerd's container root filesystems and
// shm, its pod network namespaces, the kubelet's volumes).

// CgroupV1Mounts returns the mount points of the cgroup v1 hierarchies
// (cpu, memory, pids, name=systemd, ...), empty on a unified host.
func CgroupV1Mounts() ([]string, error) {
	mounts, err := cgroups.Mounts()
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, m := range mounts {
		if m.FSType == "cgroup" {
			dirs = append(dirs, m.Point)
		}
	}
	return dirs, nil
}

// MakeCgroupV1 creates the cgroup rel (such as "sl3f9a/node1") in every
// cgroup v1 hierarchy, parents first. A new cpuset cgroup has no CPUs and
// memory nodes, and no process can join it until it has, so each level
// takes its parent's.
func MakeCgroupV1(rel string) error {
	hierarchies, err := CgroupV1Mounts()
	if err != nil {
		return err
	}
	parts := strings.Split(strings.Trim(rel, "/"), "/")
	for _, h := range hierarchies {
		dir := h
		for _, p := range parts {
			parent := dir
			dir = filepath.Join(dir, p)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("create cgroup %s: %w", dir, err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(parent, f))
				if err != nil {
					continue // not the cpuset hierarchy
				}
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return fmt.Errorf("set %s of %s: %w", f, dir, err)
				}
			}
		}
	}
	return nil
}

// killCgroupsV1 kills every process in the cgroup v1 subtrees named id and
// removes them, deepest first. Without cgroup.kill in v1, it signals the
// processes the subtree lists until none is left.
func killCgroupsV1(id string, timeout time.Duration) error {
	hierarchies, err := CgroupV1Mounts()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hierarchies {
		root := filepath.Join(h, id)
		if _, err := os.Stat(root); err != nil {
			continue
		}
		deadline := time.Now().Add(timeout)
		for {
			var pids []int
			_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					pids = append(pids, cgroupPids(p)...)
				}
				return nil
			})
			if len(pids) == 0 {
				break
			}
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("cgroup %s still has processes %v after %s", root, pids, timeout))
				break
			}
			for _, pid := range pids {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
			time.Sleep(20 * time.Millisecond)
		}
		errs = append(errs, removeCgroupTree(root))
	}
	return errors.Join(errs...)
}

// unmountUnder detaches every mount at or below dir, deepest first, so
// that removing dir deletes only the run's own files and never reaches
// into a file system mounted there (a container's root, a bind mount).
func unmountUnder(dir string) error {
	mounts, err := cgroups.Mounts()
	if err != nil {
		return err
	}
	var points []string
	prefix := strings.TrimSuffix(dir, "/") + "/"
	for _, m := range mounts {
		if m.Point == dir || strings.HasPrefix(m.Point, prefix) {
			points = append(points, m.Point)
		}
	}
	// Deeper paths are longer; a path mounted twice is unmounted twice.
	sort.SliceStable(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}
