package servicesync

// The LB diff: what Plan writes and deletes for each kind of change
// (pure), and the writes carried out on a loaded datapath's maps with a
// connection through sl_from_ep.
//
//	pod 10.244.1.5:40000 ──► VIP 10.96.0.10:80 ══ sl_from_ep ══► backend 10.0.0.9:8080 or 10.0.0.10:8080

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/datapathtest"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
)

var (
	planVIP = datapath.LBFrontendKey{Addr: netip.MustParseAddr("10.96.0.10"), Port: 80, Proto: 6}
	planB1  = netip.MustParseAddr("10.0.0.9")
	planB2  = netip.MustParseAddr("10.0.0.10")
)

func planBackend(id uint32, a netip.Addr) datapath.LBBackend {
	return datapath.LBBackend{ID: id, Addr: a, Port: 8080, Proto: 6}
}

// lbState is a state with the given frontends and backends.
func lbState(fs []datapath.LBFrontend, bs ...datapath.LBBackend) datapath.LBState {
	st := datapath.LBState{Frontends: map[datapath.LBFrontendKey]datapath.LBFrontend{}, Backends: map[uint32]datapath.LBBackend{}}
	for _, f := range fs {
		st.Frontends[f.Key] = f
	}
	for _, b := range bs {
		st.Backends[b.ID] = b
	}
	return st
}

func slot(n uint16, backend, frontend uint32) datapath.LBSlot {
	return datapath.LBSlot{Key: planVIP, Slot: n, Backend: backend, Frontend: frontend}
}

func TestPlan(t *testing.T) {
	b1, b2 := planBackend(10, planB1), planBackend(11, planB2)
	two := datapath.LBFrontend{Key: planVIP, ID: 1, Slots: []uint32{10, 11}}
	one := datapath.LBFrontend{Key: planVIP, ID: 1, Slots: []uint32{10}}
	table := []uint32{10, 11, 10, 11, 10}
	maglev := two
	maglev.Flags, maglev.Maglev, maglev.HasMaglev = datapath.LBFlagMaglev, table, true
	// A dump says a table is there, not what it holds.
	dumped := maglev
	dumped.Maglev = nil
	ranged := one
	ranged.Flags, ranged.SourceRanges = datapath.LBFlagSrcRange, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	renumbered := one
	renumbered.ID = 2
	terminating := b2
	terminating.Terminating = true

	for _, tc := range []struct {
		name       string
		have, want datapath.LBState
		writes     datapath.LBWrites
	}{{
		name: "a new frontend: backends, reverse NAT, slots and the frontend",
		have: lbState(nil), want: lbState([]datapath.LBFrontend{two}, b1, b2),
		writes: datapath.LBWrites{PutBackends: []datapath.LBBackend{b1, b2}, PutRevNat: []datapath.LBFrontend{two},
			PutSlots: []datapath.LBSlot{slot(1, 10, 1), slot(2, 11, 1)}, PutFrontends: []datapath.LBFrontend{two}},
	}, {
		name: "nothing changed",
		have: lbState([]datapath.LBFrontend{two}, b1, b2), want: lbState([]datapath.LBFrontend{two}, b1, b2),
	}, {
		name: "a backend terminates: its entry changes, its slot goes, the count shrinks",
		have: lbState([]datapath.LBFrontend{two}, b1, b2), want: lbState([]datapath.LBFrontend{one}, b1, terminating),
		writes: datapath.LBWrites{PutBackends: []datapath.LBBackend{terminating}, PutFrontends: []datapath.LBFrontend{one},
			DelSlots: []datapath.LBSlot{{Key: planVIP, Slot: 2}}},
	}, {
		name: "a frontend removed: everything keyed by it and its ID, and its backends",
		have: lbState([]datapath.LBFrontend{dumped}, b1, b2), want: lbState(nil),
		writes: datapath.LBWrites{DelFrontends: []datapath.LBFrontendKey{planVIP},
			DelSlots:  []datapath.LBSlot{{Key: planVIP, Slot: 1}, {Key: planVIP, Slot: 2}},
			DelRevNat: []uint32{1}, DelMaglev: []uint32{1}, DelBackends: []uint32{10, 11}},
	}, {
		name: "a Maglev table read back from the maps is written again: its content is unknown",
		have: lbState([]datapath.LBFrontend{dumped}, b1, b2), want: lbState([]datapath.LBFrontend{maglev}, b1, b2),
		writes: datapath.LBWrites{PutMaglev: []datapath.LBFrontend{maglev}},
	}, {
		name: "a Maglev table written before is not written again",
		have: lbState([]datapath.LBFrontend{maglev}, b1, b2), want: lbState([]datapath.LBFrontend{maglev}, b1, b2),
	}, {
		name: "Maglev turned off: the frontend loses the flag, the table goes",
		have: lbState([]datapath.LBFrontend{dumped}, b1, b2), want: lbState([]datapath.LBFrontend{two}, b1, b2),
		writes: datapath.LBWrites{PutFrontends: []datapath.LBFrontend{two}, DelMaglev: []uint32{1}},
	}, {
		name: "source ranges added",
		have: lbState([]datapath.LBFrontend{one}, b1), want: lbState([]datapath.LBFrontend{ranged}, b1),
		writes: datapath.LBWrites{PutFrontends: []datapath.LBFrontend{ranged},
			PutSourceRanges: []datapath.LBSourceRange{{Frontend: 1, Prefix: ranged.SourceRanges[0]}}},
	}, {
		name: "source ranges removed",
		have: lbState([]datapath.LBFrontend{ranged}, b1), want: lbState([]datapath.LBFrontend{one}, b1),
		writes: datapath.LBWrites{PutFrontends: []datapath.LBFrontend{one},
			DelSourceRanges: []datapath.LBSourceRange{{Frontend: 1, Prefix: ranged.SourceRanges[0]}}},
	}, {
		name: "a frontend renumbered: reverse NAT and slots under the new ID",
		have: lbState([]datapath.LBFrontend{one}, b1), want: lbState([]datapath.LBFrontend{renumbered}, b1),
		writes: datapath.LBWrites{PutRevNat: []datapath.LBFrontend{renumbered}, PutSlots: []datapath.LBSlot{slot(1, 10, 2)},
			PutFrontends: []datapath.LBFrontend{renumbered}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			w := Plan(tc.have, tc.want)
			sortWrites(w)
			require.Equal(t, tc.writes, *w)
			require.Equal(t, tc.writes.Empty(), w.Empty())
		})
	}
}

// sortWrites orders what Plan collects from maps, for comparison.
func sortWrites(w *datapath.LBWrites) {
	slices.SortFunc(w.PutBackends, func(a, b datapath.LBBackend) int { return int(a.ID) - int(b.ID) })
	slices.SortFunc(w.PutSlots, func(a, b datapath.LBSlot) int { return int(a.Slot) - int(b.Slot) })
	slices.SortFunc(w.DelSlots, func(a, b datapath.LBSlot) int { return int(a.Slot) - int(b.Slot) })
	slices.Sort(w.DelBackends)
}

// Plan's writes, applied: a new frontend's backends and slots go in
// before the entry that makes it reachable, a shrink leaves no dangling
// slot, and removing a frontend removes everything of it.
func TestPlanApply(t *testing.T) {
	dp := datapathtest.Load(t, datapath.Config{})
	client := netip.MustParseAddr("10.244.1.5")
	require.NoError(t, dp.Maps().PutEndpoint(datapath.EndpointEntry{IfIndex: 1, ID: 7, IPv4: client}))
	m := dp.Maps()
	want := lbState([]datapath.LBFrontend{{Key: planVIP, ID: 1, Slots: []uint32{10, 11}}}, planBackend(10, planB1), planBackend(11, planB2))
	have, err := m.LBDump()
	require.NoError(t, err)
	p := Plan(have, want)
	require.Equal(t, "+1/-0 frontends, +2/-0 slots, +2/-0 backends, +0/-0 maglev tables", p.String())
	require.NoError(t, m.ApplyLB(p))
	have, err = m.LBDump()
	require.NoError(t, err)
	require.Equal(t, want, have)
	require.True(t, Plan(have, want).Empty(), "applying twice changes nothing")

	// Traffic uses it.
	vip := netip.AddrPortFrom(planVIP.Addr, planVIP.Port)
	_, to := datapathtest.Run(t, dp.Objects().SlFromEp, datapathtest.TCP(t, netip.AddrPortFrom(client, 40000), vip, true), 0)
	require.Contains(t, []netip.Addr{planB1, planB2}, to.Addr())

	// Shrink to one backend; the other is terminating (kept, not in a slot).
	want.Frontends[planVIP] = datapath.LBFrontend{Key: planVIP, ID: 1, Slots: []uint32{10}}
	tb := planBackend(11, planB2)
	tb.Terminating = true
	want.Backends[11] = tb
	require.NoError(t, m.ApplyLB(Plan(have, want)))
	have, err = m.LBDump()
	require.NoError(t, err)
	require.Equal(t, want, have)

	// Remove the frontend and backends.
	p = Plan(have, lbState(nil))
	require.ElementsMatch(t, []uint32{10, 11}, p.DelBackends)
	require.NoError(t, m.ApplyLB(p))
	n, err := m.DeleteCTForBackends(p.DelBackends)
	require.NoError(t, err)
	require.Equal(t, 2, n, "the connection's service and flow entries")
	have, err = m.LBDump()
	require.NoError(t, err)
	require.Empty(t, have.Frontends)
	require.Empty(t, have.Backends)
	var rk uint32
	var rv bpfobj.EndpointSlLbVip
	require.False(t, dp.Objects().SlLbRevnat.Iterate().Next(&rk, &rv), "no reverse NAT entry left")
}
