package cgroups

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFindV2Mount(t *testing.T) {
	hybrid := `25 30 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw
27 25 0:25 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
`
	got, err := findMount(strings.NewReader(hybrid), "cgroup2")
	require.NoError(t, err)
	require.Equal(t, "/sys/fs/cgroup/unified", got)

	got, err = findMount(strings.NewReader(`30 1 0:26 / /mnt/my\040cg rw - cgroup2 none rw`+"\n"), "cgroup2")
	require.NoError(t, err)
	require.Equal(t, "/mnt/my cg", got)

	got, err = findMount(strings.NewReader("27 25 0:25 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"), "cgroup2")
	require.NoError(t, err)
	require.Empty(t, got)
}
