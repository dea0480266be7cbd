package cgroups

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/model"
)

// inode is a directory's inode: on cgroup v2, the cgroup ID a socket
// program reports (bpf_get_current_cgroup_id).
func inode(t *testing.T, dir string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(dir, &st))
	return st.Ino
}

// mkdir makes dir under root and returns its cgroup ID.
func mkdir(t *testing.T, root, dir string) uint64 {
	t.Helper()
	p := filepath.Join(root, dir)
	require.NoError(t, os.MkdirAll(p, 0o755))
	return inode(t, p)
}

// A cgroup names its pod, the way kubelet's cgroupfs or systemd driver or
// a simulated node lays the tree out; a container's cgroup names the pod
// it is under. Plain directories stand in for the cgroup tree: the
// lookup reads names and inodes only.
func TestPodsByCgroup(t *testing.T) {
	root := t.TempDir()
	web := model.NamespacedName{Namespace: "shop", Name: "web-1"}
	db := model.NamespacedName{Namespace: "shop", Name: "db-0"}
	s := &model.State{Pods: map[model.NamespacedName]*model.Pod{
		web: {Namespace: "shop", Name: "web-1"},
		db:  {Namespace: "shop", Name: "db-0", UID: "5f1c2a9e-0b7d-4c1e-9a51-3d2f8e7c6b10"},
	}}
	simulated := mkdir(t, root, "sluice-node-1/shop_web-1")
	cgroupfs := mkdir(t, root, "kubepods/besteffort/pod5f1c2a9e-0b7d-4c1e-9a51-3d2f8e7c6b10")
	container := mkdir(t, root, "kubepods/besteffort/pod5f1c2a9e-0b7d-4c1e-9a51-3d2f8e7c6b10/0123abcd")
	// The systemd driver (kubeadm's default) spells "-" as "_" in the
	// UID and nests slices whose names all hold "kubepods".
	systemd := mkdir(t, root, "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod5f1c2a9e_0b7d_4c1e_9a51_3d2f8e7c6b10.slice")
	systemdContainer := mkdir(t, root, "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod5f1c2a9e_0b7d_4c1e_9a51_3d2f8e7c6b10.slice/cri-containerd-0123abcd.scope")
	gone := mkdir(t, root, "sluice-node-1/shop_deleted-0")
	system := mkdir(t, root, "system.slice/containerd.service")

	pods := NewPods(root)
	for _, tc := range []struct {
		name string
		id   uint64
		want model.NamespacedName
		ok   bool
	}{
		{"a simulated node's pod cgroup: namespace_name", simulated, web, true},
		{"kubelet's cgroupfs driver: pod<uid>", cgroupfs, db, true},
		{"a container's cgroup, under its pod's", container, db, true},
		{"kubelet's systemd driver: kubepods-<qos>-pod<uid>.slice", systemd, db, true},
		{"a container's scope under a systemd pod slice", systemdContainer, db, true},
		{"a cgroup of a pod the model does not have", gone, model.NamespacedName{}, false},
		{"a cgroup of no pod", system, model.NamespacedName{}, false},
		{"no cgroup at all", ^uint64(0), model.NamespacedName{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := pods.Pod(tc.id, s)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.want, got)
		})
	}

	// A cgroup made after the last walk is found by the next one.
	later := mkdir(t, root, "sluice-node-1/shop_db-0")
	got, ok := pods.Pod(later, s)
	require.True(t, ok)
	require.Equal(t, db, got)
}
