package datapath

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/testutil"
)

// requireFeature skips t, naming the feature and its fallback, unless the
// kernel has the named feature (see testutil.RequireFeature for when the
// skip is a failure instead).
func requireFeature(t *testing.T, name string, have bool) {
	t.Helper()
	kf, ok := LookupKernelFeature(name)
	require.True(t, ok, "unknown kernel feature %q", name)
	testutil.RequireFeature(t, name, have, fmt.Sprintf("%s, Linux %s+; without it: %s", kf.What, kf.MinKernel, kf.Without))
}

// TestKernelFeatures logs what the kernel offers, one line the VM matrix
// runner reads ("sluice-kernel-features: ..."), and, in the matrix, fails
// when the probes disagree with what vagrant/matrix.yaml expects of the
// kernel, either way.
func TestKernelFeatures(t *testing.T) {
	dp := loadTest(t, Config{})
	f, err := ProbeFeatures(dp)
	t.Logf("sluice-kernel-features: %s (kernel %s)", f, f.Release)
	require.NoError(t, err)
	expected, inMatrix := testutil.ExpectedKernelFeatures()
	if !inMatrix {
		return
	}
	for _, kf := range KernelFeatures {
		switch want, have := expected[kf.Name], f.Have(kf.Name); {
		case want && !have:
			t.Errorf("kernel %s lacks %s (%s), which the kernel matrix (vagrant/matrix.yaml) expects of it", f.Release, kf.Name, kf.What)
		case !want && have:
			t.Errorf("kernel %s has %s (%s), which the kernel matrix (vagrant/matrix.yaml) says it lacks: correct the matrix", f.Release, kf.Name, kf.What)
		}
	}
}
