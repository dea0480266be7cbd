package servicesync

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/service"
)

func TestToLBState(t *testing.T) {
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	active := service.Backend{ID: 1, Address: a("10.244.1.5"), Port: 8080, Protocol: model.ProtocolTCP, State: service.BackendActive, NodeName: "node1"}
	terminating := service.Backend{ID: 2, Address: a("10.244.2.5"), Port: 8080, Protocol: model.ProtocolTCP, State: service.BackendTerminating}
	sctp := service.Backend{ID: 3, Address: a("10.244.3.5"), Port: 9, Protocol: model.ProtocolSCTP, State: service.BackendActive}
	d := &service.Desired{
		Backends: []service.Backend{active, terminating, sctp},
		Frontends: []service.Frontend{
			{ID: 7, Kind: service.KindClusterIP, Address: a("10.96.0.10"), Port: 80, Protocol: model.ProtocolTCP, SessionAffinity: true, AffinityTimeout: 30,
				Backends: []service.Backend{active, terminating}},
			{ID: 8, Kind: service.KindClusterIP, Address: a("10.96.0.11"), Port: 80, Protocol: model.ProtocolTCP, Algorithm: service.AlgorithmMaglev,
				Backends: []service.Backend{active}, Maglev: []uint32{1, 1, 1}},
			{ID: 9, Kind: service.KindClusterIP, Address: a("10.96.0.12"), Port: 9, Protocol: model.ProtocolSCTP, Backends: []service.Backend{sctp}},
			{ID: 10, Kind: service.KindClusterIP, Address: a("10.96.0.13"), Port: 80, Protocol: model.ProtocolTCP, NoEndpoints: true},
			{ID: 11, Kind: service.KindNodePort, Address: a("172.31.0.10"), Port: 30080, Protocol: model.ProtocolTCP,
				TrafficPolicyLocal: true, NoLocalEndpoints: true},
			{ID: 12, Kind: service.KindLoadBalancer, Address: a("203.0.113.5"), Port: 80, Protocol: model.ProtocolTCP, NoEndpoints: true,
				SourceRanges: []netip.Prefix{netip.MustParsePrefix("198.51.100.7/24"), netip.MustParsePrefix("2001:db8::/32")}},
			{ID: 13, Kind: service.KindLoadBalancer, Address: a("203.0.113.6"), Port: 80, Protocol: model.ProtocolTCP, NoEndpoints: true,
				SourceRanges: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}},
			{ID: 14, Kind: service.KindLoadBalancer, Address: a("2001:db8:5::6"), Port: 80, Protocol: model.ProtocolTCP, NoEndpoints: true,
				SourceRanges: []netip.Prefix{netip.MustParsePrefix("198.51.100.7/24"), netip.MustParsePrefix("2001:db8:1::7/48")}},
		},
	}
	st := toLBState(d, "node1")
	require.Len(t, st.Backends, 2, "SCTP waits for datapath support")
	require.True(t, st.Backends[2].Terminating)
	require.True(t, st.Backends[1].Local, "a pod of this node")
	require.False(t, st.Backends[2].Local)

	f := st.Frontends[datapath.LBFrontendKey{Addr: a("10.96.0.10"), Port: 80, Proto: 6}]
	require.Equal(t, []uint32{1}, f.Slots, "terminating backends take no new connections")
	require.Equal(t, datapath.LBFlagAffinity, f.Flags)
	require.EqualValues(t, 30, f.AffinityTimeout)

	m := st.Frontends[datapath.LBFrontendKey{Addr: a("10.96.0.11"), Port: 80, Proto: 6}]
	require.Equal(t, datapath.LBFlagMaglev, m.Flags)
	require.Equal(t, []uint32{1, 1, 1}, m.Maglev)

	empty, ok := st.Frontends[datapath.LBFrontendKey{Addr: a("10.96.0.13"), Port: 80, Proto: 6}]
	require.True(t, ok, "a service without endpoints is programmed, so it can reject")
	require.Empty(t, empty.Slots)
	np := st.Frontends[datapath.LBFrontendKey{Addr: a("172.31.0.10"), Port: 30080, Proto: 6}]
	require.Equal(t, datapath.LBFlagExternal|datapath.LBFlagLocal|datapath.LBFlagNoLocal, np.Flags,
		"served on uplinks, keeps the client address, drops without a local endpoint")
	lb := st.Frontends[datapath.LBFrontendKey{Addr: a("203.0.113.5"), Port: 80, Proto: 6}]
	require.Equal(t, datapath.LBFlagExternal|datapath.LBFlagSrcRange, lb.Flags)
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, lb.SourceRanges,
		"masked; IPv6 ranges allow no client of an IPv4 frontend")
	v6only := st.Frontends[datapath.LBFrontendKey{Addr: a("203.0.113.6"), Port: 80, Proto: 6}]
	require.Equal(t, datapath.LBFlagExternal|datapath.LBFlagSrcRange, v6only.Flags, "ranges that are all IPv6 allow nobody")
	require.Empty(t, v6only.SourceRanges)
	lb6 := st.Frontends[datapath.LBFrontendKey{Addr: a("2001:db8:5::6"), Port: 80, Proto: 6}]
	require.Equal(t, datapath.LBFlagExternal|datapath.LBFlagSrcRange, lb6.Flags)
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/48")}, lb6.SourceRanges,
		"an IPv6 frontend keeps its IPv6 ranges, masked, for the per-packet path")
	require.Len(t, st.Frontends, 7)
}

func TestNodeAddrs(t *testing.T) {
	s := &model.State{}
	s.Upsert(&model.Node{Name: "n1", Addresses: []model.NodeAddress{{Type: "Hostname", Address: "n1"}, {Type: "InternalIP", Address: "172.31.0.10"}}})
	require.Equal(t, []netip.Addr{netip.MustParseAddr("172.31.0.10")}, nodeAddrs(s, "n1", nil))
	fb := []netip.Addr{netip.MustParseAddr("192.0.2.1")}
	require.Equal(t, fb, nodeAddrs(s, "other", fb), "no Node object: configured addresses")
}
