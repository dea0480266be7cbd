package datapath

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/datapath/internal/raw"
)

// The agent's SNAT GC runs beside the datapath, which takes a dead
// mapping's port over for a new connection at any moment (snat_alloc). A
// GC that deletes such a port after judging it dead may delete the new
// connection's mapping instead, and that connection's replies are lost
// (TestNodePortSNATReleasesPorts lost 1 connection in 10,000 that way,
// now and then). Here the datapath's takeover happens right before the
// delete, as it may: no mapping of a live connection may be gone after the
// pass, and what the datapath can never take over is still deleted.
func TestGCNATNeverDeletesAPortTheDatapathCanTakeOver(t *testing.T) {
	dp := loadTest(t, Config{})
	m := dp.Maps()
	var (
		uplinkAddr = netip.MustParseAddr("172.16.0.1")
		frontAddr  = netip.MustParseAddr("172.16.0.2") // SNAT to the frontend: its uplink is not known
		staleAddr  = netip.MustParseAddr("172.16.9.9") // an uplink address that changed
		client     = netip.MustParseAddr("192.0.2.7")
		backend    = netip.MustParseAddr("10.244.2.5")
	)
	require.NoError(t, m.PutUplink(loIfindex, uplinkAddr, netip.Addr{}))
	b := bpfobj.EndpointSlLbBackend{Port: raw.Htons(8080), Proto: 6, Family: afInet}
	b.Addr.Addr6 = raw.AddrTo(backend)
	require.NoError(t, m.LBBackends.Put(uint32(1), &b))

	clientPort := uint16(40000)
	// put records a mapping addr:port → client:clientPort → backend and
	// its owner, a live connection or one that ended a minute ago.
	put := func(addr netip.Addr, port uint16, live bool) bpfobj.EndpointSlNatKey {
		clientPort++
		k := bpfobj.EndpointSlNatKey{Port: raw.Htons(port), Proto: 6}
		k.Addr.Addr6 = raw.AddrTo(addr)
		var v bpfobj.EndpointSlNatVal
		v.Client.Addr6, v.Backend.Addr6, v.Front.Addr6 = raw.AddrTo(client), raw.AddrTo(backend), raw.AddrTo(addr)
		v.ClientPort, v.BackendPort, v.FrontPort = raw.Htons(clientPort), raw.Htons(8080), raw.Htons(30082)
		e := bpfobj.EndpointSlCtEntry{
			Expires: MonotonicNow() + uint64(time.Minute), State: uint8(bpfobj.EndpointSlCtStateSL_CT_ESTABLISHED),
			BackendId: 1, NatFlags: uint8(bpfobj.EndpointSlCtNatFlagSL_CT_NAT_SNAT), NatPort: k.Port,
		}
		if !live {
			e.Expires = MonotonicNow() - uint64(time.Minute)
		}
		ck := natOwnerKey(&k, &v)
		require.NoError(t, m.CT.Put(&ck, &e))
		require.NoError(t, m.NAT.Put(&k, &v))
		return k
	}
	liveOnUplink := put(uplinkAddr, 61001, true)
	liveOnFront := put(frontAddr, 61002, true)
	deadOnUplink := put(uplinkAddr, 61003, false)
	deadOnFront := put(frontAddr, 61004, false)
	deadOutOfRange := put(uplinkAddr, 40000, false)
	deadOnStale := put(staleAddr, 61005, false)

	// The datapath allocates only in its range, on the addresses it
	// translates to: those ports it takes over, if the GC gets that far.
	var takenOver []bpfobj.EndpointSlNatKey
	natGCBeforeDelete = func(k *bpfobj.EndpointSlNatKey) {
		if *k == deadOnUplink || *k == deadOnFront {
			addr := raw.AddrFrom(k.Addr.Addr6, afInet)
			require.NoError(t, m.NAT.Delete(k))
			put(addr, raw.Ntohs(k.Port), true)
			takenOver = append(takenOver, *k)
		}
	}
	t.Cleanup(func() { natGCBeforeDelete = nil })

	st, err := m.GCNAT()
	require.NoError(t, err)
	for _, k := range append([]bpfobj.EndpointSlNatKey{liveOnUplink, liveOnFront}, takenOver...) {
		var v bpfobj.EndpointSlNatVal
		require.NoError(t, m.NAT.Lookup(&k, &v), "the mapping of a live connection on %s port %d is gone",
			raw.AddrFrom(k.Addr.Addr6, afInet), raw.Ntohs(k.Port))
	}
	require.Empty(t, takenOver, "the GC never even considers deleting a port the datapath may take over")
	for _, k := range []bpfobj.EndpointSlNatKey{deadOnUplink, deadOnFront} {
		var v bpfobj.EndpointSlNatVal
		require.NoError(t, m.NAT.Lookup(&k, &v), "a dead mapping in the range is left for the datapath")
	}
	for _, k := range []bpfobj.EndpointSlNatKey{deadOutOfRange, deadOnStale} {
		var v bpfobj.EndpointSlNatVal
		require.Error(t, m.NAT.Lookup(&k, &v), "a dead mapping the datapath cannot take over is deleted: %s port %d",
			raw.AddrFrom(k.Addr.Addr6, afInet), raw.Ntohs(k.Port))
	}
	require.Equal(t, NATGCStats{Live: 2, Free: 2, Deleted: 2}, st)

	usage, err := m.NATUsage()
	require.NoError(t, err)
	inUse := 0
	for _, u := range usage {
		inUse += u.PortsInUse
	}
	require.Equal(t, 2, inUse, "dead mappings left in place are not in use: %+v", usage)
}
