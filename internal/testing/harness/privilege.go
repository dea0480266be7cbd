package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/sluice-net/sluice/internal/testing/testutil"
)

var skipOrFail = testutil.SkipOrFail

// RequireRoot skips the test unless it runs as root; with $CI set it fails.
func RequireRoot(tb testing.TB) { tb.Helper(); testutil.RequireRoot(tb) }

// RequireCgroup2 skips (fails under CI) unless a cgroup v2 hierarchy is mounted.
func RequireCgroup2(tb testing.TB) {
	tb.Helper()
	if _, err := Cgroup2Mount(); err != nil {
		skipOrFail(tb, fmt.Sprintf("needs a cgroup v2 mount: %v", err))
	}
}

// RequireBPFFS skips (fails under CI) unless bpffs is, or can be, mounted at /sys/fs/bpf.
func RequireBPFFS(tb testing.TB) {
	tb.Helper()
	if _, err := BPFFSMount(); err != nil {
		skipOrFail(tb, fmt.Sprintf("needs bpffs at /sys/fs/bpf: %v", err))
	}
}

// RequireTools skips (fails under CI) unless the programs the harness runs
// (iproute2's ip, util-linux's nsenter) are installed.
func RequireTools(tb testing.TB) {
	tb.Helper()
	if err := checkTools(); err != nil {
		skipOrFail(tb, err.Error())
	}
}

func checkTools() error {
	var errs []error
	for _, t := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(t); err != nil {
			errs = append(errs, fmt.Errorf("needs %s in PATH (iproute2, util-linux): %w", t, err))
		}
	}
	return errors.Join(errs...)
}

// checkPrivileges is what NewCluster requires, as an error.
func checkPrivileges() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF) to create network namespaces, cgroups and bpffs directories")
	}
	return checkTools()
}
