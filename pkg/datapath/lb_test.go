package datapath

// Service translation through BPF_PROG_TEST_RUN, checked on the output
// packet (addresses, ports, checksums) and on the events.
//
//	pod 10.0.0.1:40000 ──► VIP 10.96.0.10:80 ══ sl_from_ep DNAT ══► backend 10.0.0.9:8080
//	pod ◄── VIP:80 ══ sl_to_ep rev-NAT ══ backend 10.0.0.9:8080

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/datapath/events"
	"github.com/sluice-net/sluice/pkg/datapath/internal/raw"
	"github.com/sluice-net/sluice/pkg/service"
)

var (
	vip      = netip.MustParseAddr("10.96.0.10")
	backend1 = netip.MustParseAddr("10.0.0.9")
	backend2 = netip.MustParseAddr("10.0.0.10")
)

const tcActRedirect = 7

// putService programs a frontend with the given backends (IDs 9, 10, ...).
func putService(t *testing.T, dp *Datapath, svcID uint32, front netip.AddrPort, proto uint8, flags uint16, backends ...netip.AddrPort) {
	t.Helper()
	o := dp.Objects()
	for i, b := range backends {
		id := uint32(9 + i)
		be := bpfobj.EndpointSlLbBackend{Port: raw.Htons(b.Port()), Proto: proto, Family: lbFamily(b.Addr())}
		be.Addr.Addr6 = raw.AddrTo(b.Addr())
		require.NoError(t, o.SlLbBackends.Put(id, &be))
		k := bpfobj.EndpointSlLbKey{Port: raw.Htons(front.Port()), Proto: proto, Slot: uint16(i + 1), Family: lbFamily(front.Addr())}
		k.Addr.Addr6 = raw.AddrTo(front.Addr())
		require.NoError(t, o.SlLbSvc.Put(&k, &bpfobj.EndpointSlLbEntry{BackendId: id, SvcId: svcID}))
	}
	rn := bpfobj.EndpointSlLbVip{Port: raw.Htons(front.Port())}
	rn.Addr.Addr6 = raw.AddrTo(front.Addr())
	require.NoError(t, o.SlLbRevnat.Put(svcID, &rn))
	k := bpfobj.EndpointSlLbKey{Port: raw.Htons(front.Port()), Proto: proto, Family: lbFamily(front.Addr())}
	k.Addr.Addr6 = raw.AddrTo(front.Addr())
	require.NoError(t, o.SlLbSvc.Put(&k, &bpfobj.EndpointSlLbEntry{SvcId: svcID, Count: uint16(len(backends)), Flags: flags, AffinityTimeout: 60}))
}

// run sends pkt through prog and returns the verdict and output packet.
func run(t *testing.T, prog *ebpf.Program, pkt []byte) (uint32, gopacket.Packet) {
	t.Helper()
	return runAs(t, prog, pkt, layers.LayerTypeIPv4)
}

// runAs is run for an output packet whose IP header is of type l3.
func runAs(t *testing.T, prog *ebpf.Program, pkt []byte, l3 gopacket.LayerType) (uint32, gopacket.Packet) {
	t.Helper()
	opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, 1600)}
	ret, err := prog.Run(opts)
	require.NoError(t, err)
	p := gopacket.NewPacket(opts.DataOut, layers.LayerTypeEthernet, gopacket.Default)
	// Only the headers matter: a payload gopacket takes for DNS may not decode.
	require.NotNil(t, p.Layer(l3), "output packet has no %s header: %v", l3, p.ErrorLayer())
	return ret, p
}

// requireChecksums recomputes the IP and L4 checksums of p and compares.
func requireChecksums(t *testing.T, p gopacket.Packet) {
	t.Helper()
	ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	raw := append([]byte(nil), ip.Contents...)
	raw[10], raw[11] = 0, 0
	require.Equal(t, ip.Checksum, fold(sum(raw)), "IPv4 header checksum")
	pseudo := func(proto byte, l4 []byte) uint32 {
		b := append(append(append([]byte{}, ip.SrcIP.To4()...), ip.DstIP.To4()...), 0, proto, byte(len(l4)>>8), byte(len(l4)))
		return sum(b)
	}
	switch l4 := p.TransportLayer().(type) {
	case *layers.TCP:
		seg := append(append([]byte(nil), l4.Contents...), l4.Payload...)
		seg[16], seg[17] = 0, 0
		require.Equal(t, l4.Checksum, fold(pseudo(6, seg)+sum(seg)), "TCP checksum")
	case *layers.UDP:
		if l4.Checksum == 0 {
			return // no checksum, and it must stay that way
		}
		seg := append(append([]byte(nil), l4.Contents...), l4.Payload...)
		seg[6], seg[7] = 0, 0
		require.Equal(t, l4.Checksum, fold(pseudo(17, seg)+sum(seg)), "UDP checksum")
	}
	if ic, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok {
		b := append(append([]byte(nil), ic.Contents...), ic.Payload...)
		b[2], b[3] = 0, 0
		require.Equal(t, ic.Checksum, fold(sum(b)), "ICMP checksum")
	}
}

func sum(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

func dst(p gopacket.Packet) netip.AddrPort {
	ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	a, _ := netip.AddrFromSlice(ip.DstIP.To4())
	switch l4 := p.TransportLayer().(type) {
	case *layers.TCP:
		return netip.AddrPortFrom(a, uint16(l4.DstPort))
	case *layers.UDP:
		return netip.AddrPortFrom(a, uint16(l4.DstPort))
	}
	return netip.AddrPortFrom(a, 0)
}

func src(p gopacket.Packet) netip.AddrPort {
	ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	a, _ := netip.AddrFromSlice(ip.SrcIP.To4())
	switch l4 := p.TransportLayer().(type) {
	case *layers.TCP:
		return netip.AddrPortFrom(a, uint16(l4.SrcPort))
	case *layers.UDP:
		return netip.AddrPortFrom(a, uint16(l4.SrcPort))
	}
	return netip.AddrPortFrom(a, 0)
}

func nextEvent(t *testing.T, rd *events.Reader) events.Event {
	t.Helper()
	rd.SetDeadline(time.Now().Add(100 * time.Millisecond))
	ev, err := rd.Read()
	require.NoError(t, err)
	return ev
}

func TestServiceTranslationTCP(t *testing.T) {
	dp := loadTest(t, Config{})
	rd, err := events.NewReader(dp.EventRing())
	require.NoError(t, err)
	defer rd.Close()
	putService(t, dp, 5, netip.AddrPortFrom(vip, 80), 6, 0, netip.AddrPortFrom(backend1, 8080))

	ret, out := run(t, dp.objs.SlFromEp, tcpPkt(t, podIP, vip, 40000, 80, flags{syn: true}))
	require.Equal(t, verdictNext, ret)
	require.Equal(t, netip.AddrPortFrom(backend1, 8080), dst(out), "DNAT to the backend")
	require.Equal(t, netip.AddrPortFrom(podIP, 40000), src(out))
	requireChecksums(t, out)

	ev := nextEvent(t, rd)
	require.Equal(t, events.ConnNew, ev.Type)
	require.Equal(t, uint32(5), ev.ServiceID)
	require.Equal(t, netip.AddrPortFrom(vip, 80), ev.VIP)
	require.Equal(t, netip.AddrPortFrom(backend1, 8080), ev.Dst)

	ret, out = run(t, dp.objs.SlToEp, tcpPkt(t, backend1, podIP, 8080, 40000, flags{syn: true, ack: true}))
	require.Equal(t, verdictNext, ret)
	require.Equal(t, netip.AddrPortFrom(vip, 80), src(out), "the client only ever sees the VIP")
	requireChecksums(t, out)

	// Later packets of the connection keep the backend.
	for range 3 {
		_, out = run(t, dp.objs.SlFromEp, tcpPkt(t, podIP, vip, 40000, 80, flags{ack: true}))
		require.Equal(t, netip.AddrPortFrom(backend1, 8080), dst(out))
	}
	ct := ctOf(t, dp)
	var scopes []string
	for _, c := range ct {
		scopes = append(scopes, c.Scope+" "+c.Dst)
	}
	require.ElementsMatch(t, []string{"service 10.96.0.10:80", "flow 10.0.0.9:8080"}, scopes)
}

func TestServiceTranslationUDP(t *testing.T) {
	dp := loadTest(t, Config{})
	putService(t, dp, 6, netip.AddrPortFrom(vip, 53), 17, 0, netip.AddrPortFrom(backend1, 5353))
	ret, out := run(t, dp.objs.SlFromEp, udpPkt(t, podIP, vip, 5000, 53))
	require.Equal(t, verdictNext, ret)
	require.Equal(t, netip.AddrPortFrom(backend1, 5353), dst(out))
	requireChecksums(t, out)
	_, out = run(t, dp.objs.SlToEp, udpPkt(t, backend1, podIP, 5353, 5000))
	require.Equal(t, netip.AddrPortFrom(vip, 53), src(out))
	requireChecksums(t, out)

	// A zero (absent) UDP checksum stays zero.
	pkt := udpPkt(t, podIP, vip, 5001, 53)
	pkt[14+20+6], pkt[14+20+7] = 0, 0
	_, out = run(t, dp.objs.SlFromEp, pkt)
	require.Equal(t, uint16(0), out.Layer(layers.LayerTypeUDP).(*layers.UDP).Checksum)
	requireChecksums(t, out)

	// A later fragment of the translated datagram follows its first one.
	_, out = run(t, dp.objs.SlFromEp, udpPkt(t, podIP, vip, 5002, 53, firstFragment))
	require.Equal(t, backend1.String(), dst(out).Addr().String())
	ret, out = run(t, dp.objs.SlFromEp, laterFragment(t, podIP, vip, 4242))
	require.Equal(t, verdictNext, ret)
	ip := out.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	require.Equal(t, backend1.AsSlice(), []byte(ip.DstIP.To4()))
	requireChecksums(t, out)
}

// A service without endpoints answers a connection attempt at once with an
// ICMP port unreachable (ECONNREFUSED for the client), like kube-proxy's REJECT.
func TestServiceWithoutEndpointsRejects(t *testing.T) {
	dp := loadTest(t, Config{})
	rd, err := events.NewReader(dp.EventRing())
	require.NoError(t, err)
	defer rd.Close()
	putService(t, dp, 7, netip.AddrPortFrom(vip, 80), 6, 0)

	syn := tcpPkt(t, podIP, vip, 40000, 80, flags{syn: true})
	ret, out := run(t, dp.objs.SlFromEp, syn)
	require.Equal(t, uint32(tcActRedirect), ret, "sent back toward the pod")
	ip := out.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	require.Equal(t, vip.AsSlice(), []byte(ip.SrcIP.To4()))
	require.Equal(t, podIP.AsSlice(), []byte(ip.DstIP.To4()))
	ic := out.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	require.Equal(t, layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort), ic.TypeCode)
	require.Equal(t, syn[14:14+28], ic.Payload[:28], "the offending header is quoted")
	eth := out.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	require.Equal(t, []byte{2, 0, 0, 0, 0, 1}, []byte(eth.DstMAC), "addressed back to the pod")
	requireChecksums(t, out)

	ev := nextEvent(t, rd)
	require.Equal(t, events.Drop, ev.Type)
	require.Equal(t, "SERVICE_BACKEND_NOT_FOUND", ev.Reason.String())
	require.Equal(t, uint16(158), uint16(ev.Reason))
}

func TestServiceBackendSelection(t *testing.T) {
	backends := []netip.AddrPort{netip.AddrPortFrom(backend1, 8080), netip.AddrPortFrom(backend2, 8080)}
	t.Run("random spreads connections", func(t *testing.T) {
		dp := loadTest(t, Config{})
		putService(t, dp, 5, netip.AddrPortFrom(vip, 80), 6, 0, backends...)
		seen := map[netip.Addr]int{}
		for i := range 200 {
			_, out := run(t, dp.objs.SlFromEp, tcpPkt(t, podIP, vip, uint16(20000+i), 80, flags{syn: true}))
			seen[dst(out).Addr()]++
		}
		require.Len(t, seen, 2)
		require.Greater(t, seen[backend1], 50)
		require.Greater(t, seen[backend2], 50)
	})
	t.Run("ClientIP affinity sticks", func(t *testing.T) {
		dp := loadTest(t, Config{})
		putService(t, dp, 5, netip.AddrPortFrom(vip, 80), 6, 1 /* SL_LB_F_AFFINITY */, backends...)
		seen := map[netip.Addr]int{}
		for i := range 100 {
			_, out := run(t, dp.objs.SlFromEp, tcpPkt(t, podIP, vip, uint16(20000+i), 80, flags{syn: true}))
			seen[dst(out).Addr()]++
		}
		require.Len(t, seen, 1, "every connection of one client lands on one backend")
	})
	t.Run("a removed backend's connection is reassigned", func(t *testing.T) {
		dp := loadTest(t, Config{})
		putService(t, dp, 5, netip.AddrPortFrom(vip, 80), 6, 0, backends[0])
		_, out := run(t, dp.objs.SlFromEp, tcpPkt(t, podIP, vip, 40000, 80, flags{syn: true}))
		require.Equal(t, backend1, dst(out).Addr())
		require.NoError(t, dp.objs.SlLbBackends.Delete(uint32(9)))
		putService(t, dp, 5, netip.AddrPortFrom(vip, 80), 6, 0, backends[1]) // ID 9 again, now backend2
		_, out = run(t, dp.objs.SlFromEp, tcpPkt(t, podIP, vip, 40000, 80, flags{ack: true}))
		require.Equal(t, backend2, dst(out).Addr())
	})
}

// putAll is the writes that put all of st into LB maps that hold none of
// it: the service reconciler's plan from empty maps (servicesync.Plan,
// which this package's tests cannot import; its tests hold the diff).
func putAll(st LBState) *LBWrites {
	w := &LBWrites{}
	for _, b := range st.Backends {
		w.PutBackends = append(w.PutBackends, b)
	}
	for k, f := range st.Frontends {
		w.PutRevNat = append(w.PutRevNat, f)
		w.PutFrontends = append(w.PutFrontends, f)
		for i, id := range f.Slots {
			w.PutSlots = append(w.PutSlots, LBSlot{Key: k, Slot: uint16(i + 1), Backend: id, Frontend: f.ID})
		}
		for _, r := range f.SourceRanges {
			w.PutSourceRanges = append(w.PutSourceRanges, LBSourceRange{Frontend: f.ID, Prefix: r})
		}
		if f.Maglev != nil {
			w.PutMaglev = append(w.PutMaglev, f)
		}
	}
	return w
}

// A full frontend map is an error that says so, not a silent partial program.
func TestLBMapFullIsAnError(t *testing.T) {
	dp := loadTest(t, Config{LBMax: 1024})
	want := LBState{Frontends: map[LBFrontendKey]LBFrontend{}, Backends: map[uint32]LBBackend{1: {ID: 1, Addr: backend1, Port: 80, Proto: 6}}}
	for i := range 1100 {
		k := LBFrontendKey{Addr: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}), Port: 80, Proto: 6}
		want.Frontends[k] = LBFrontend{Key: k, ID: uint32(i + 1), Slots: []uint32{1}}
	}
	err := dp.Maps().ApplyLB(putAll(want))
	require.ErrorIs(t, err, ErrMapFull)
	require.ErrorContains(t, err, "sl_lb_svc")
}

// Maglev: a flow's backend is a function of the flow and the table, so it
// survives losing its CT state, and removing one of N backends moves only
// about 1/N of the flows.
func TestMaglevSelection(t *testing.T) {
	const n = 10
	dp := loadTest(t, Config{MaglevTableSize: 16381})
	m := dp.Maps()
	fk := LBFrontendKey{Addr: vip, Port: 80, Proto: 6}
	state := func(ids []uint32) LBState {
		st := LBState{Frontends: map[LBFrontendKey]LBFrontend{}, Backends: map[uint32]LBBackend{}}
		var names []string
		for _, id := range ids {
			st.Backends[id] = LBBackend{ID: id, Addr: netip.AddrFrom4([4]byte{10, 1, 0, byte(id)}), Port: 8080, Proto: 6}
			names = append(names, fmt.Sprintf("backend-%d", id))
		}
		table := make([]uint32, 16381)
		for i, idx := range service.MaglevTable(names, 16381, "test-seed") {
			table[i] = ids[idx]
		}
		st.Frontends[fk] = LBFrontend{Key: fk, ID: 1, Slots: ids, Flags: LBFlagMaglev, Maglev: table, HasMaglev: true}
		return st
	}
	all := make([]uint32, n)
	for i := range all {
		all[i] = uint32(i + 1)
	}
	flush := func() {
		_, err := m.GCCT(func(uint32) bool { return true }, nil)
		require.NoError(t, err)
	}
	pick := func() map[uint16]netip.Addr {
		out := map[uint16]netip.Addr{}
		for i := range 2000 {
			sport := uint16(20000 + i)
			_, o := run(t, dp.objs.SlFromEp, tcpPkt(t, podIP, vip, sport, 80, flags{syn: true}))
			out[sport] = dst(o).Addr()
		}
		return out
	}

	require.NoError(t, m.ApplyLB(putAll(state(all))))
	st, err := m.LBDump()
	require.NoError(t, err)
	require.True(t, st.Frontends[fk].HasMaglev)
	first := pick()
	flush()
	again := pick()
	require.Equal(t, first, again, "the same flows land on the same backends without CT state")
	used := map[netip.Addr]bool{}
	for _, a := range first {
		used[a] = true
	}
	require.Len(t, used, n)

	// Remove backend 4: its flows move, the rest (almost all) stay.
	flush()
	w := putAll(state(append(append([]uint32{}, all[:3]...), all[4:]...)))
	w.DelSlots = []LBSlot{{Key: fk, Slot: n}}
	w.DelBackends = []uint32{4}
	require.NoError(t, m.ApplyLB(w))
	after := pick()
	// What the maps hold, read back as `sluice policy trace` reads them,
	// is what the program picks from.
	svc, ok, err := m.LookupLB(fk)
	require.NoError(t, err)
	require.True(t, ok)
	require.Empty(t, svc.Missing)
	require.Len(t, svc.Backends, n-1)
	inMaps := map[netip.Addr]bool{}
	for _, b := range svc.Backends {
		inMaps[b.Addr] = true
	}
	for sport, a := range after {
		require.True(t, inMaps[a], "source port %d went to %s, which LookupLB does not list", sport, a)
	}
	removed := netip.AddrFrom4([4]byte{10, 1, 0, 4})
	moved := 0
	for sport, a := range first {
		require.NotEqual(t, removed, after[sport])
		if a != removed && after[sport] != a {
			moved++
		}
	}
	frac := float64(moved) / float64(len(first))
	t.Logf("removing 1 of %d backends moved %.2f%% of the flows that did not use it", n, 100*frac)
	require.Less(t, frac, 0.5/float64(n), "Maglev keeps unrelated flows in place")

	// Turning Maglev off removes the table after the frontend stops using it.
	f := state(all).Frontends[fk]
	f.Flags, f.Maglev, f.HasMaglev = 0, nil, false
	require.NoError(t, m.ApplyLB(&LBWrites{PutFrontends: []LBFrontend{f}, DelMaglev: []uint32{f.ID}}))
	st, err = m.LBDump()
	require.NoError(t, err)
	require.False(t, st.Frontends[fk].HasMaglev)
}

// A Maglev table that cannot be written is an error, and the frontend still
// serves with random selection meanwhile: never a silent partial program.
func TestMaglevTableFailureKeepsServing(t *testing.T) {
	dp := loadTest(t, Config{MaglevTableSize: 251})
	m := dp.Maps()
	fk := LBFrontendKey{Addr: vip, Port: 80, Proto: 6}
	want := LBState{
		Frontends: map[LBFrontendKey]LBFrontend{fk: {Key: fk, ID: 1, Slots: []uint32{1}, Flags: LBFlagMaglev, Maglev: make([]uint32, 1021), HasMaglev: true}},
		Backends:  map[uint32]LBBackend{1: {ID: 1, Addr: backend1, Port: 8080, Proto: 6}},
	}
	err := m.ApplyLB(putAll(want))
	require.ErrorContains(t, err, "random selection meanwhile")
	require.ErrorContains(t, err, "1021 entries, the datapath expects 251")
	ret, out := run(t, dp.objs.SlFromEp, tcpPkt(t, podIP, vip, 40000, 80, flags{syn: true}))
	require.Equal(t, verdictNext, ret)
	require.Equal(t, netip.AddrPortFrom(backend1, 8080), dst(out))
	st, err := m.LBDump()
	require.NoError(t, err)
	require.Zero(t, st.Frontends[fk].Flags&LBFlagMaglev)
}

// Hairpin: a pod reaching its own service and landing on itself. The
// source becomes the service loopback (else the pod drops source ==
// destination == itself as a martian) and both directions go straight
// back into the pod.
func TestServiceHairpin(t *testing.T) {
	dp := loadTest(t, Config{})
	rd, err := events.NewReader(dp.EventRing())
	require.NoError(t, err)
	defer rd.Close()
	loopback := netip.MustParseAddr("169.254.42.1")
	putService(t, dp, 5, netip.AddrPortFrom(vip, 80), 6, 0, netip.AddrPortFrom(podIP, 8080))

	ret, out := run(t, dp.objs.SlFromEp, tcpPkt(t, podIP, vip, 40000, 80, flags{syn: true}))
	require.Equal(t, uint32(tcActRedirect), ret, "sent straight back into the pod")
	require.Equal(t, netip.AddrPortFrom(loopback, 40000), src(out))
	require.Equal(t, netip.AddrPortFrom(podIP, 8080), dst(out))
	eth := out.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	require.Equal(t, []byte{2, 0, 0, 0, 0, 1}, []byte(eth.DstMAC), "addressed to the pod")
	requireChecksums(t, out)
	require.Equal(t, events.ConnNew, nextEvent(t, rd).Type)

	// The hairpinned SYN arriving: part of the same connection.
	ret, _ = run(t, dp.objs.SlToEp, tcpPkt(t, loopback, podIP, 40000, 8080, flags{syn: true}))
	require.Equal(t, verdictNext, ret)

	// The server's answer leaves the pod toward the loopback address and
	// comes back from the VIP to the client's port.
	ret, out = run(t, dp.objs.SlFromEp, tcpPkt(t, podIP, loopback, 8080, 40000, flags{syn: true, ack: true}))
	require.Equal(t, uint32(tcActRedirect), ret)
	require.Equal(t, netip.AddrPortFrom(vip, 80), src(out))
	require.Equal(t, netip.AddrPortFrom(podIP, 40000), dst(out))
	requireChecksums(t, out)

	// Should the redirected reply meet sl_to_ep, it is a reply, not a new
	// inbound connection: no trace event, no new CT entry.
	before := len(ctOf(t, dp))
	ret, _ = run(t, dp.objs.SlToEp, tcpPkt(t, vip, podIP, 80, 40000, flags{syn: true, ack: true}))
	require.Equal(t, verdictNext, ret)
	require.Len(t, ctOf(t, dp), before)
	rd.SetDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = rd.Read()
	require.Error(t, err, "no event for the hairpin reply")
}

// An ICMP error about a translated datagram is translated back, quoted
// header included, so the client's socket (which knows only the VIP)
// receives it.
func TestServiceICMPErrorReverseTranslation(t *testing.T) {
	dp := loadTest(t, Config{})
	putService(t, dp, 6, netip.AddrPortFrom(vip, 53), 17, 0, netip.AddrPortFrom(backend1, 5353))
	_, out := run(t, dp.objs.SlFromEp, udpPkt(t, podIP, vip, 5000, 53))
	translated := out.Data()
	require.Equal(t, netip.AddrPortFrom(backend1, 5353), dst(out))

	ret, out := run(t, dp.objs.SlToEp, icmpUnreachable(t, backend1, translated))
	require.Equal(t, verdictNext, ret)
	ip := out.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	require.Equal(t, vip.AsSlice(), []byte(ip.SrcIP.To4()), "the error comes from the VIP")
	requireChecksums(t, out) // outer IP and ICMP

	ic := out.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	quoted := gopacket.NewPacket(ic.Payload, layers.LayerTypeIPv4, gopacket.Default)
	qip := quoted.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	require.Equal(t, vip.AsSlice(), []byte(qip.DstIP.To4()), "quoted destination is the VIP")
	require.Equal(t, podIP.AsSlice(), []byte(qip.SrcIP.To4()))
	hdr := append([]byte(nil), ic.Payload[:20]...)
	hdr[10], hdr[11] = 0, 0
	require.Equal(t, qip.Checksum, fold(sum(hdr)), "quoted IP header checksum")
	require.Equal(t, uint16(53), uint16(ic.Payload[22])<<8|uint16(ic.Payload[23]), "quoted destination port is the service port")
}
