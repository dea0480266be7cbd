// Package testutil holds helpers shared by Sluice's privileged tests.
package testutil

import (
	"os"
	"testing"
)

// InCI reports whether the tests run under CI (CI set and non-empty), where
// privileged tests must run rather than skip.
func InCI() bool { return os.Getenv("CI") != "" }

// SkipOrFail skips the test with msg, which must name the missing privilege
// or kernel feature; under CI, which runs as root on a capable kernel, it
// fails instead, so a broken CI setup cannot hide behind skips.
func SkipOrFail(tb testing.TB, msg string) {
	tb.Helper()
	if InCI() {
		tb.Fatalf("%s (CI is set, so this is a failure, not a skip)", msg)
	}
	tb.Skip(msg)
}

// RequireRoot skips (fails under CI) a test that needs root: loading eBPF
// programs, netlink, network namespaces, cgroups and bpffs directories.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(tb, "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN) to load eBPF programs and build network namespaces")
	}
}
