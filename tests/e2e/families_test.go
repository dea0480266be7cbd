package e2e

// The address-family dimension of the service suite: one test body runs
// as subtest IPv4, then IPv6, on the same cluster of dual-stack pods, with
// the family's service addresses, pod, node and external addresses and
// EndpointSlices of the family's addressType (issue 17: "parameterised,
// not copied").

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/api"
)

// ipFamily is one address family a test body runs in.
type ipFamily struct {
	// name is "IPv4" or "IPv6": the subtest's name, a Service's
	// ipFamilies entry and an EndpointSlice's addressType.
	name string
	v6   bool
}

var ipFamilies = []ipFamily{{"IPv4", false}, {"IPv6", true}}

// svc is the family's service address for IPv4 address 10.96.X.Y: itself,
// or fd00:96::X:Y (so vip, 10.96.0.10, is vip6, fd00:96::a).
func (f ipFamily) svc(v4 netip.Addr) netip.Addr {
	if !f.v6 {
		return v4
	}
	a := v4.As4()
	return netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x96, 13: a[2], 15: a[3]})
}

// vip is the family's address of the suite's main service.
func (f ipFamily) vip() netip.Addr { return f.svc(vip) }

// pod is p's address of the family (the pods of serviceCluster have both).
func (f ipFamily) pod(p *harness.Pod) netip.Addr {
	if f.v6 {
		return p.IPv6()
	}
	return p.IP
}

// node is n's underlay address of the family.
func (f ipFamily) node(n *harness.Node) netip.Addr {
	if f.v6 {
		return n.IP6
	}
	return n.IP
}

// ext is x's address of the family.
func (f ipFamily) ext(x *harness.External) netip.Addr {
	if f.v6 {
		return x.IP6
	}
	return x.IP
}

// host is the single-address prefix of a: /32 or /128.
func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// ipVersion is the family as flows name it.
func (f ipFamily) ipVersion() flowpb.IPVersion {
	if f.v6 {
		return flowpb.IPVersion_IPv6
	}
	return flowpb.IPVersion_IPv4
}

// eachFamily runs body as subtests IPv4 and IPv6, one after the other, on
// e's cluster; body's env is bound to its subtest. The manifests a family
// writes are removed after it, and the next family starts once every
// running agent has dropped that family's frontends: its counts (frontends,
// backends) are then those of its own services, as the first family's are.
// (The last family's are left to the cluster's cleanup.) Agents a body
// starts with ensureAgent keep running into the next family.
func (e *env) eachFamily(body func(t *testing.T, e *env, fam ipFamily)) {
	for i, fam := range ipFamilies {
		e.t.Run(fam.name, func(t *testing.T) {
			fe := *e
			fe.t = t
			if i < len(ipFamilies)-1 {
				before := fe.manifestFiles()
				t.Cleanup(func() { fe.dropFamily(fam, before) })
			}
			body(t, &fe, fam)
		})
	}
}

// manifestFiles are the files in the first node's manifest directory
// (every node's holds the same).
func (e *env) manifestFiles() map[string]bool {
	ents, err := os.ReadDir(e.c.Nodes()[0].ManifestDir)
	require.NoError(e.t, err)
	out := map[string]bool{}
	for _, de := range ents {
		out[de.Name()] = true
	}
	return out
}

// dropFamily removes the manifests written since before and waits until
// no running agent has a frontend of fam left.
func (e *env) dropFamily(fam ipFamily, before map[string]bool) {
	for name := range e.manifestFiles() {
		if !before[name] && filepath.Ext(name) == ".yaml" {
			require.NoError(e.t, e.c.RemoveManifest(name))
		}
	}
	for n, a := range e.agents {
		if !running(a) {
			continue
		}
		left := func() []api.Frontend {
			return slices.DeleteFunc(e.services(n).Frontends, func(f api.Frontend) bool { return f.Address.Is6() != fam.v6 })
		}
		if !assert.Eventually(e.t, func() bool { return len(left()) == 0 }, 10*time.Second, 50*time.Millisecond) {
			require.FailNowf(e.t, "services not dropped", "%s frontends left on %s after the %s subtest: %+v", fam.name, n.Name, fam.name, left())
		}
	}
}

// running reports whether a's process has not exited.
func running(a *harness.Agent) bool {
	select {
	case <-a.Done():
		return false
	default:
		return true
	}
}

// ensureAgent starts n's agent unless it runs already (started by an
// earlier family's body), and returns it.
func (e *env) ensureAgent(n *harness.Node) *harness.Agent {
	e.t.Helper()
	if a, ok := e.agents[n]; ok && running(a) {
		return a
	}
	return e.startAgent(n)
}
