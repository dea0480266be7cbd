// Package cgroups finds the cgroup v2 hierarchy (and, for the tests, other
// mounts), and in it the network namespaces of the node's processes and
// the pod of a cgroup (Pods). Hosts differ: a pure v2
// host mounts it at /sys/fs/cgroup, a hybrid host (like the development
// machine, where /sys/fs/cgroup is a v1 tmpfs) at /sys/fs/cgroup/unified,
// so the mount is read from mountinfo rather than assumed.
package cgroups
