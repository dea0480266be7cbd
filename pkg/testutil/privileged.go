// Package testutil holds helpers shared by Sluice's privileged tests.
package testutil

import (
	"os"
	"testing"
)

// InCI reports whether the tests run under CI (CI set and non-empty), where
// privileged tests must run rather than skip.
func InCI() bool { return os.Getenv("CI") != "" }

// RequireRoot skips a test that needs root (BPF, netlink, namespaces),
// naming the missing privilege; under CI, where everything runs as root,
// it fails instead so a broken CI setup cannot hide behind skips.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	const msg = "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN) to load eBPF programs and build network namespaces"
	if InCI() {
		tb.Fatal(msg + "; CI must run privileged tests")
	}
	tb.Skip(msg)
}
