package datapath

// IPv6 service frontends in the LB maps: socket LB translates them (the
// e2e suite's TestServiceDualStack); the per-packet path translates IPv4
// only and drops an IPv6 packet that reaches a frontend untranslated. The
// family byte keeps an IPv6 address from ever matching an IPv4 frontend.

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/datapath/internal/raw"
)

var vip6 = netip.MustParseAddr("fd00:96::a")

func TestIPv6ServiceFrontendOnThePacketPath(t *testing.T) {
	syn := tcp6(40000, 80, flags{syn: true})
	// fd00:96:: is fd 00 00 96 and twelve zero bytes: the same sixteen
	// bytes as the IPv4 address 253.0.0.150 in an address union.
	lookalike6 := netip.MustParseAddr("fd00:96::")
	lookalike4 := netip.AddrFrom4([4]byte{0xfd, 0, 0, 0x96})
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a SYN to an IPv6 frontend: dropped with the reason",
			[]step{dropped(true, fixed(pkt6(pod6, vip6, nil, tcp, syn)), "SERVICE_NEEDS_SOCKET_LB")}},
		{"a UDP datagram to an IPv6 frontend: dropped with the reason",
			[]step{dropped(true, fixed(pkt6(pod6, vip6, nil, udp, udp6(5000, 53))), "SERVICE_NEEDS_SOCKET_LB")}},
		{"the frontend's address on a port that is no frontend: as addressed",
			[]step{out(fixed(pkt6(pod6, vip6, nil, tcp, tcp6(40001, 81, flags{syn: true}))), "trace")}},
		{"an IPv6 address that is an IPv4 frontend's bytes: not that frontend",
			[]step{out(fixed(pkt6(pod6, lookalike6, nil, tcp, syn)), "trace")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dp, rd := ipv6Datapath(t, 0)
			putService(t, dp, 5, netip.AddrPortFrom(vip6, 80), tcp, 0, netip.AddrPortFrom(peer6, 8080))
			putService(t, dp, 6, netip.AddrPortFrom(vip6, 53), udp, 0, netip.AddrPortFrom(peer6, 5353))
			putService(t, dp, 7, netip.AddrPortFrom(lookalike4, 80), tcp, 0, netip.AddrPortFrom(backend1, 8080))
			for i, s := range tc.steps {
				runStep(t, dp, rd, i, s)
			}
		})
	}
}

// The LB maps and their dump read IPv6 frontends and backends back as
// written, beside IPv4 ones with the same bytes.
func TestLBDumpBothFamilies(t *testing.T) {
	dp := loadTest(t, Config{})
	putService(t, dp, 5, netip.AddrPortFrom(vip6, 80), tcp, 0, netip.AddrPortFrom(peer6, 8080))
	st, err := dp.Maps().LBDump()
	require.NoError(t, err)
	f, ok := st.Frontends[LBFrontendKey{Addr: vip6, Port: 80, Proto: tcp}]
	require.True(t, ok, "the IPv6 frontend by its IPv6 key: %+v", st.Frontends)
	require.Equal(t, []uint32{9}, f.Slots)
	require.Equal(t, peer6, st.Backends[9].Addr)
}

// The LB maps' family byte was padding: an upgrade from an agent that
// pinned them with the padding layout adopts them with their entries
// (IPv4 is 0 in both), so frontends, backend IDs and socket LB's reverse
// translations survive it.
func TestLBFamilyByteUpgradeAdoptsTheMaps(t *testing.T) {
	root := testRoot(t)
	dp, err := Load(Config{BPFRoot: root}, nil)
	require.NoError(t, err)
	putService(t, dp, 5, netip.AddrPortFrom(vip, 80), tcp, 0, netip.AddrPortFrom(backend1, 8080))
	sk := bpfobj.EndpointSlLbSockKey{Cookie: 42, Port: raw.Htons(8080)}
	sk.Backend.Addr6 = raw.AddrTo(backend1)
	require.NoError(t, dp.objs.SlLbSock.Put(&sk, &bpfobj.EndpointSlLbVip{Port: raw.Htons(80)}))
	dp.Close()

	// sl_layout as the older agent left it.
	layouts, err := ebpf.LoadPinnedMap(filepath.Join(root, bpfobj.EndpointMapSlLayout), nil)
	require.NoError(t, err)
	for name, fps := range samePinnedBytes {
		k := layoutKey(name)
		require.NoError(t, layouts.Put(&k, fps[0]))
	}
	layouts.Close()

	dp, err = Load(Config{BPFRoot: root}, nil)
	require.NoError(t, err)
	for _, r := range dp.Replaced {
		name, _, _ := strings.Cut(r, ":")
		require.NotContains(t, samePinnedBytes, name, "replaced: %s", r)
	}
	st, err := dp.Maps().LBDump()
	require.NoError(t, err)
	require.Contains(t, st.Frontends, LBFrontendKey{Addr: vip, Port: 80, Proto: tcp}, "the frontend survives")
	require.Equal(t, backend1, st.Backends[9].Addr, "backend ID 9 survives")
	var v bpfobj.EndpointSlLbVip
	require.NoError(t, dp.objs.SlLbSock.Lookup(&sk, &v), "the socket's reverse translation survives")
	dp.Close()

	// The fingerprints are this agent's now: the next start adopts as usual.
	dp, err = Load(Config{BPFRoot: root}, nil)
	require.NoError(t, err)
	defer dp.Close()
	require.Empty(t, dp.Replaced)
	_, err = os.Stat(filepath.Join(root, bpfobj.EndpointMapSlLbSvc))
	require.NoError(t, err)
}
