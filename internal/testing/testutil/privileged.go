// Package testutil holds helpers shared by Sluice's tests, the privileged
// ones in particular.
package testutil

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf/rlimit"
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
	// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK, whose default
	// (a few MiB) the datapath's maps exceed: lift it once for the test
	// process, as the agent does at start (a no-op on newer kernels).
	memlockOnce.Do(func() { memlockErr = rlimit.RemoveMemlock() })
	if memlockErr != nil {
		tb.Fatalf("lift RLIMIT_MEMLOCK for BPF maps: %v", memlockErr)
	}
}

var (
	memlockOnce sync.Once
	memlockErr  error
)

// EnvKernelFeatures lists, comma-separated, the kernel features (names as
// pkg/datapath.KernelFeatures spells them) that the kernel under test is
// expected to have. tools/vmtest sets it from vagrant/matrix.yaml for each
// kernel of the VM matrix; set, even empty, it lets RequireFeature skip a
// test of a feature the kernel lacks and is not expected to have.
const EnvKernelFeatures = "SLUICE_KERNEL_FEATURES"

// ExpectedKernelFeatures returns the features $SLUICE_KERNEL_FEATURES
// lists, and whether it is set at all.
func ExpectedKernelFeatures() (map[string]bool, bool) {
	v, ok := os.LookupEnv(EnvKernelFeatures)
	if !ok {
		return nil, false
	}
	m := map[string]bool{}
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			m[f] = true
		}
	}
	return m, true
}

// RequireFeature skips a test of a kernel feature the kernel lacks, with a
// message naming the feature and what covers its absence (without). The
// skip is a failure when the kernel matrix expects the feature of this
// kernel, and, outside the matrix, under CI (whose kernel has every
// feature): a probe that stopped finding a feature must not pass quietly.
func RequireFeature(tb testing.TB, feature string, have bool, without string) {
	tb.Helper()
	if have {
		return
	}
	msg := fmt.Sprintf("kernel lacks %s: %s", feature, without)
	expected, inMatrix := ExpectedKernelFeatures()
	switch {
	case expected[feature]:
		tb.Fatalf("%s; but the kernel matrix expects %s of this kernel (%s)", msg, feature, EnvKernelFeatures)
	case inMatrix:
		tb.Skip(msg)
	default:
		SkipOrFail(tb, msg)
	}
}
