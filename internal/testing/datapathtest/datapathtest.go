// Package datapathtest loads Sluice's datapath for tests of the packages
// built on it: a private bpffs directory per test, removed at its end.
// (pkg/datapath's own tests have their equivalents: they cannot import
// this package, which imports theirs.)
package datapathtest

import (
	"testing"

	"github.com/sluice-net/sluice/internal/testing/testutil"
	"github.com/sluice-net/sluice/pkg/datapath"
)

// Root returns a fresh directory on the bpffs at /sys/fs/bpf, removed when
// the test ends (testutil.BPFRoot). Without root or bpffs the test skips
// (fails under CI).
func Root(tb testing.TB) string {
	tb.Helper()
	return testutil.BPFRoot(tb)
}

// Load loads the datapath with cfg, under a fresh Root unless cfg names a
// BPFRoot, and closes it when the test ends.
func Load(tb testing.TB, cfg datapath.Config) *datapath.Datapath {
	tb.Helper()
	if cfg.BPFRoot == "" {
		cfg.BPFRoot = Root(tb)
	}
	dp, err := datapath.Load(cfg, nil)
	if err != nil {
		tb.Fatalf("load datapath: %v", err)
	}
	tb.Cleanup(func() { dp.Close() })
	return dp
}

// Drops is how many packets the datapath's counters show dropped for
// reason (its name, e.g. "PROXY_UNAVAILABLE"), over directions.
func Drops(tb testing.TB, m *datapath.Maps, reason string) uint64 {
	tb.Helper()
	cs, err := m.Counters()
	if err != nil {
		tb.Fatalf("read counters: %v", err)
	}
	var n uint64
	for _, c := range cs {
		if c.Reason == reason {
			n += c.Packets
		}
	}
	return n
}
