// Package e2e runs Sluice agents on simulated nodes (network namespaces,
// see internal/testing/harness) and drives real TCP, UDP and ICMP traffic between pods
// on one node, across nodes and from outside the cluster.
//
// The smoke subset that CI runs on every kernel of the VM matrix is a
// -test.run pattern in vagrant/matrix.yaml (suites: smoke): a renamed or
// new test that belongs in it is added there.
package e2e

import (
	"testing"

	"github.com/sluice-net/sluice/internal/testing/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }
