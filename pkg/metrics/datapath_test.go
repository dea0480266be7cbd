package metrics

// The collector against a loaded datapath: one UDP packet a pod sends runs
// through sl_from_ep with BPF_PROG_TEST_RUN, and a scrape sees it in the
// per-CPU counters, in conntrack and in the maps' entry counts.
//
//	  pod 10.0.0.1 (endpoint 7, ifindex 1 = lo during test runs)
//	     │  sl_from_ep: UDP 10.0.0.1:5000 → 10.0.0.2:53  (egress: forwarded)
//	  peer 10.0.0.2

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/datapathtest"
	"github.com/sluice-net/sluice/pkg/datapath"
)

const (
	verdictNext = ^uint32(0) // TC_ACT_UNSPEC / TCX_NEXT (-1): forwarded
	loIfindex   = 1          // BPF_PROG_TEST_RUN runs on loopback
)

var (
	podIP  = netip.MustParseAddr("10.0.0.1")
	peerIP = netip.MustParseAddr("10.0.0.2")
)

// loadDatapath loads the datapath pinned in a fresh bpffs directory, with
// the pod as endpoint 7 on loopback.
func loadDatapath(t *testing.T) *datapath.Datapath {
	t.Helper()
	dp := datapathtest.Load(t, datapath.Config{})
	require.NoError(t, dp.Maps().PutEndpoint(datapath.EndpointEntry{IfIndex: loIfindex, ID: 7, IPv4: podIP}))
	return dp
}

func udpPacket(t *testing.T, src, dst netip.Addr, sport, dport uint16) []byte {
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	return datapathtest.IPv4Packet(t, src, dst, layers.IPProtocolUDP, udp, gopacket.Payload("ping"))
}

func TestCollectorReadsLoadedDatapath(t *testing.T) {
	dp := loadDatapath(t)
	c := NewCollector(Options{Datapath: dp.Maps(), Version: "test"})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)

	forwarded := map[string]string{"metric": "forwarded", "direction": "egress", "reason": ""}
	before := scrape(t, reg)
	n, err := testutil.GatherAndCount(before, "sluice_datapath_packets_total")
	require.NoError(t, err)
	require.Zero(t, n, "no packet has run yet")
	require.Equal(t, 0.0, gathered(t, before, "sluice_conntrack_entries", nil))

	pkt := udpPacket(t, podIP, peerIP, 5000, 53)
	for range 2 {
		ret, err := dp.Objects().SlFromEp.Run(&ebpf.RunOptions{Data: pkt})
		require.NoError(t, err)
		require.Equal(t, verdictNext, ret, "the pod's packet is forwarded")
	}

	after := scrape(t, reg)
	n, err = testutil.GatherAndCount(after, "sluice_datapath_packets_total")
	require.NoError(t, err)
	require.Equal(t, 1, n, "only the forwarded packets are counted")
	require.Equal(t, 2.0, gathered(t, after, "sluice_datapath_packets_total", forwarded))
	require.Equal(t, float64(2*len(pkt)), gathered(t, after, "sluice_datapath_bytes_total", forwarded))
	require.Equal(t, 0.0, gathered(t, after, "sluice_events_lost_total", nil))
	require.Equal(t, 1.0, gathered(t, after, "sluice_conntrack_entries", nil), "one UDP flow")
	require.Equal(t, 1.0, gathered(t, after, "sluice_map_entries", map[string]string{"map": "sl_ct"}))
	require.Equal(t, float64(dp.Config().CTMax), gathered(t, after, "sluice_map_capacity", map[string]string{"map": "sl_ct"}))
	require.Equal(t, 1.0, gathered(t, after, "sluice_map_entries", map[string]string{"map": "sl_endpoints"}))
	for _, src := range []string{"counters", "maps", "conntrack"} {
		require.Equal(t, 0.0, gathered(t, after, "sluice_metrics_scrape_errors_total", map[string]string{"source": src}), src)
	}

	problems, err := testutil.GatherAndLint(after)
	require.NoError(t, err)
	require.Empty(t, problems)
}
