package policysync

// Policy across an agent restart that changes --policy-map-max (the size
// of every endpoint's policy maps, the inner maps of sl_policy and
// sl_policy_cidr). Packets to pod b go through sl_to_ep with
// BPF_PROG_TEST_RUN, as forwarded from the wire.
//
//	pod a 10.244.1.2 (app=a) ──► :80 ─┐
//	pod a 10.244.1.2 (app=a) ──► :81 ─┼── sl_to_ep ──► pod b 10.244.1.3 (endpoint 7, lo)
//	pod c 10.244.2.9 (app=c) ──► :80 ─┘                policy allow-a: app=a to TCP 80 only

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/datapathtest"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
)

var (
	podA  = netip.MustParseAddr("10.244.1.2")
	podB  = netip.MustParseAddr("10.244.1.3")
	podC  = netip.MustParseAddr("10.244.2.9")
	nameB = model.NamespacedName{Namespace: "x", Name: "b"}
)

// startPolicy loads the datapath from root's pins with the given
// per-endpoint map size and places pod b as the endpoint manager does:
// Prepare (its maps), its entry, then Placed and a full pass.
func startPolicy(t *testing.T, root string, size uint32, store *model.Store) *datapath.Datapath {
	t.Helper()
	dp := datapathtest.Load(t, datapath.Config{BPFRoot: root, PolicyMapMax: size})
	r, err := New(Options{NodeName: "n1", Maps: dp.Maps(), Store: store, MaxEntries: int(size),
		Endpoints: fakeEndpoints{{ID: 7, Namespace: "x", Pod: "b", IPs: []string{podB.String()}}}})
	require.NoError(t, err)
	id, flags := r.Prepare(nameB, 7)
	require.Equal(t, datapath.EPFlagPolicyIngress, flags)
	require.NoError(t, dp.Maps().PutEndpoint(datapath.EndpointEntry{IfIndex: 1, ID: 7, IPv4: podB, Identity: id, PolicyFlags: flags}))
	r.Placed(nameB, 7, 1, id, flags)
	r.pass(true)
	require.Empty(t, r.Status().LastError)
	return dp
}

// sport numbers the connections verdicts opens: each SYN is a new
// connection, so conntrack (adopted across restarts) never answers for
// the policy.
var sport uint16 = 40000

// verdicts sends one SYN of each kind to b through prog.
func verdicts(t *testing.T, prog *ebpf.Program) (allowed, otherPort, otherPeer uint32) {
	t.Helper()
	send := func(from netip.Addr, port uint16) uint32 {
		sport++
		v, _ := datapathtest.Run(t, prog, datapathtest.TCP(t, netip.AddrPortFrom(from, sport), netip.AddrPortFrom(podB, port), true), 1)
		return v
	}
	return send(podA, 80), send(podA, 81), send(podC, 80)
}

func policyInnerSize(t *testing.T, dp *datapath.Datapath) uint32 {
	t.Helper()
	var inner *ebpf.Map
	require.NoError(t, dp.Objects().SlPolicy.Lookup(uint32(7), &inner), "endpoint 7 has a policy map")
	defer inner.Close()
	return inner.MaxEntries()
}

// TestPolicyMapSizeChangeAcrossRestart: a restart with another
// --policy-map-max replaces the pinned sl_policy and sl_policy_cidr (their
// inner template has the old size), and policy stays enforced throughout:
// the old programs keep the old maps until swapped, the new programs fail
// closed until the endpoint's maps are rewritten, and after Prepare (which
// the endpoint manager runs before it attaches the new programs) the
// allowed connection is allowed and the others denied, never open.
func TestPolicyMapSizeChangeAcrossRestart(t *testing.T) {
	root := datapathtest.Root(t)
	store := model.NewStore()
	_, err := store.Apply([]model.Change{
		{Op: model.OpUpsert, Object: &model.Namespace{Name: "x"}},
		{Op: model.OpUpsert, Object: pod("x", "a", "n1", podA.String(), map[string]string{"app": "a"})},
		{Op: model.OpUpsert, Object: pod("x", "b", "n1", podB.String(), map[string]string{"app": "b"})},
		{Op: model.OpUpsert, Object: pod("x", "c", "n2", podC.String(), map[string]string{"app": "c"})},
		{Op: model.OpUpsert, Object: allowA},
	})
	require.NoError(t, err)
	const next, drop = datapathtest.VerdictNext, datapathtest.VerdictDrop
	enforced := func(msg string, prog *ebpf.Program) {
		t.Helper()
		ok, port, peer := verdicts(t, prog)
		require.Equal(t, []uint32{next, drop, drop}, []uint32{ok, port, peer}, "%s: a:80 allowed, a:81 and c:80 denied", msg)
	}

	dp1 := startPolicy(t, root, 64, store)
	require.EqualValues(t, 64, policyInnerSize(t, dp1))
	enforced("before the restart", dp1.Objects().SlToEp)

	// The restart: load from the same pins with another size; the old
	// agent's programs stay in place (here: dp1 stays open) until swapped.
	dp2, err := datapath.Load(datapath.Config{BPFRoot: root, PolicyMapMax: 128}, nil)
	require.NoError(t, err)
	for _, name := range []string{"sl_policy", "sl_policy_cidr"} {
		require.True(t, slices.ContainsFunc(dp2.Replaced, func(s string) bool { return strings.HasPrefix(s, name+": replaced") }),
			"%s of 64-entry maps is replaced, not adopted: %v", name, dp2.Replaced)
	}
	enforced("old programs during the restart", dp1.Objects().SlToEp)
	ok, port, peer := verdicts(t, dp2.Objects().SlToEp)
	require.Equal(t, []uint32{drop, drop, drop}, []uint32{ok, port, peer},
		"new programs before the endpoint's maps are rewritten: closed, never open")
	require.NoError(t, dp2.Close())

	dp3 := startPolicy(t, root, 128, store)
	require.Empty(t, dp3.Replaced, "the maps are now of the configured size: adopted")
	require.EqualValues(t, 128, policyInnerSize(t, dp3))
	enforced("after the restart", dp3.Objects().SlToEp)
}
