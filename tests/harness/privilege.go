package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// skipOrFail skips the test with msg, or fails it when $CI is set: CI runs
// as root and must run every privileged test.
func skipOrFail(tb testing.TB, msg string) {
	tb.Helper()
	if os.Getenv("CI") != "" {
		tb.Fatalf("%s (CI is set, so this is a failure, not a skip)", msg)
	}
	tb.Skip(msg)
}

// RequireRoot skips the test unless it runs as root (CAP_SYS_ADMIN and
// CAP_NET_ADMIN are needed for namespaces, cgroups, bpffs and links); with
// $CI set it fails instead.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(tb, "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF) to create network namespaces, cgroups and bpffs directories")
	}
}

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
