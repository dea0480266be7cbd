package cgroups

import (
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/sluice-net/sluice/pkg/model"
)

// Pods names the pod of a cgroup ID (the cgroup directory's inode on
// cgroup v2), for events raised by a process rather than an interface.
// Kubelet names pod cgroups after the pod UID ("pod<uid>", with "_" for
// "-" under systemd); the simulated nodes name them "<namespace>_<name>".
type Pods struct {
	root string
	mu   sync.Mutex
	// paths caches cgroup ID → directory; refreshed by a walk on a miss.
	paths map[uint64]string
}

// NewPods names pods from the cgroup v2 hierarchy mounted at root.
func NewPods(root string) *Pods {
	return &Pods{root: root, paths: map[uint64]string{}}
}

func (c *Pods) path(id uint64) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.paths[id]; ok {
		return p, true
	}
	c.paths = map[uint64]string{}
	_ = filepath.WalkDir(c.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				c.paths[st.Ino] = p
			}
		}
		return nil
	})
	p, ok := c.paths[id]
	return p, ok
}

// Pod returns the pod of s whose cgroup is id or contains it; false if
// id is no cgroup under the root or names no pod of s. A miss walks the
// tree.
func (c *Pods) Pod(id uint64, s *model.State) (model.NamespacedName, bool) {
	p, ok := c.path(id)
	if !ok {
		return model.NamespacedName{}, false
	}
	for _, dir := range strings.Split(p, "/") {
		if ns, name, ok := strings.Cut(dir, "_"); ok {
			if _, found := s.Pods[model.NamespacedName{Namespace: ns, Name: name}]; found {
				return model.NamespacedName{Namespace: ns, Name: name}, true
			}
		}
		// The last "pod": under the systemd driver every slice's name
		// holds "kubepods" before the pod's "pod<uid>".
		if i := strings.LastIndex(dir, "pod"); i >= 0 {
			uid := strings.TrimSuffix(dir[i+3:], ".slice")
			uid = strings.ReplaceAll(uid, "_", "-")
			for nn, pod := range s.Pods {
				if pod.UID != "" && pod.UID == uid {
					return nn, true
				}
			}
		}
	}
	return model.NamespacedName{}, false
}
