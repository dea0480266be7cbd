package datapath

// IPv6 service frontends on the per-packet path, as TestService* checks
// IPv4: the translated packet (addresses, ports, checksums over the IPv6
// pseudo-header) and the events. Socket LB's IPv6 hooks are the e2e
// suite's (TestServiceDualStack). The family byte keeps an IPv6 address
// from ever matching an IPv4 frontend.
//
//	pod [fd00::1]:40000 ──► VIP [fd00:96::a]:80 ══ sl_from_ep DNAT ══► backend [fd00::2]:8080
//	pod ◄── VIP:80 ══ sl_to_ep rev-NAT ══ backend [fd00::2]:8080

import (
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/datapath/events"
	"github.com/sluice-net/sluice/pkg/datapath/internal/raw"
)

var (
	vip6 = netip.MustParseAddr("fd00:96::a")
	// serviceLoopback6 is SL_SERVICE_LOOPBACK6 (bpf/lib/common.h).
	serviceLoopback6 = netip.MustParseAddr("fd00:5c:1ce::42:1")
)

// csum6 fills in the TCP, UDP or ICMPv6 checksum of an IPv6 frame without
// extension headers (pkt6 leaves them zero), so a test can check that a
// translation keeps it right.
func csum6(b []byte) []byte {
	ip := b[14:]
	off := map[byte]int{6: 16, 17: 6, icmp6: 2}[ip[6]]
	seg := ip[40:]
	seg[off], seg[off+1] = 0, 0
	binary.BigEndian.PutUint16(seg[off:], fold(pseudo6(ip[8:24], ip[24:40], ip[6], seg)+sum(seg)))
	return b
}

func pseudo6(src, dst []byte, proto byte, seg []byte) uint32 {
	ph := append(append([]byte(nil), src...), dst...)
	n := len(seg)
	return sum(append(ph, byte(n>>24), byte(n>>16), byte(n>>8), byte(n), 0, 0, 0, proto))
}

// run6 sends pkt through prog and returns the verdict and the output packet.
func run6(t *testing.T, prog *ebpf.Program, pkt []byte) (uint32, gopacket.Packet) {
	t.Helper()
	return runAs(t, prog, pkt, layers.LayerTypeIPv6)
}

// requireChecksums6 recomputes p's TCP, UDP or ICMPv6 checksum over the
// IPv6 pseudo-header and compares.
func requireChecksums6(t *testing.T, p gopacket.Packet) {
	t.Helper()
	ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	seg := append([]byte(nil), ip.Payload...)
	off := map[layers.IPProtocol]int{layers.IPProtocolTCP: 16, layers.IPProtocolUDP: 6, layers.IPProtocolICMPv6: 2}[ip.NextHeader]
	require.NotZero(t, off, "a TCP, UDP or ICMPv6 packet: %v", p)
	have := binary.BigEndian.Uint16(seg[off:])
	seg[off], seg[off+1] = 0, 0
	require.Equal(t, fold(pseudo6(ip.SrcIP.To16(), ip.DstIP.To16(), byte(ip.NextHeader), seg)+sum(seg)), have,
		"%s checksum over the IPv6 pseudo-header", ip.NextHeader)
}

func ends6(p gopacket.Packet) (src, dst netip.AddrPort) {
	ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	s, _ := netip.AddrFromSlice(ip.SrcIP.To16())
	d, _ := netip.AddrFromSlice(ip.DstIP.To16())
	var sp, dp uint16
	switch l4 := p.TransportLayer().(type) {
	case *layers.TCP:
		sp, dp = uint16(l4.SrcPort), uint16(l4.DstPort)
	case *layers.UDP:
		sp, dp = uint16(l4.SrcPort), uint16(l4.DstPort)
	}
	return netip.AddrPortFrom(s, sp), netip.AddrPortFrom(d, dp)
}

func TestIPv6ServiceTranslationTCP(t *testing.T) {
	dp, rd := ipv6Datapath(t, 0)
	putService(t, dp, 5, netip.AddrPortFrom(vip6, 80), tcp, 0, netip.AddrPortFrom(peer6, 8080))

	ret, out := run6(t, dp.objs.SlFromEp, csum6(pkt6(pod6, vip6, nil, tcp, tcp6(40000, 80, flags{syn: true}))))
	require.Equal(t, verdictNext, ret)
	s, d := ends6(out)
	require.Equal(t, netip.AddrPortFrom(peer6, 8080), d, "DNAT to the backend")
	require.Equal(t, netip.AddrPortFrom(pod6, 40000), s)
	requireChecksums6(t, out)
	ev := nextEvent(t, rd)
	require.Equal(t, events.ConnNew, ev.Type)
	require.Equal(t, uint32(5), ev.ServiceID)
	require.Equal(t, netip.AddrPortFrom(vip6, 80), ev.VIP)
	require.Equal(t, netip.AddrPortFrom(peer6, 8080), ev.Dst)

	ret, out = run6(t, dp.objs.SlToEp, csum6(pkt6(peer6, pod6, nil, tcp, tcp6(8080, 40000, flags{syn: true, ack: true}))))
	require.Equal(t, verdictNext, ret)
	s, d = ends6(out)
	require.Equal(t, netip.AddrPortFrom(vip6, 80), s, "the client only ever sees the VIP")
	require.Equal(t, netip.AddrPortFrom(pod6, 40000), d)
	requireChecksums6(t, out)

	for range 3 {
		_, out = run6(t, dp.objs.SlFromEp, csum6(pkt6(pod6, vip6, nil, tcp, tcp6(40000, 80, flags{ack: true}))))
		_, d = ends6(out)
		require.Equal(t, netip.AddrPortFrom(peer6, 8080), d, "later packets keep the backend")
	}
	var scopes []string
	for _, c := range ctOf(t, dp) {
		scopes = append(scopes, c.Scope+" "+c.Dst)
	}
	require.ElementsMatch(t, []string{"service [fd00:96::a]:80", "flow [fd00::2]:8080"}, scopes)
}

func TestIPv6ServiceTranslationUDP(t *testing.T) {
	dp, _ := ipv6Datapath(t, 0)
	putService(t, dp, 6, netip.AddrPortFrom(vip6, 53), udp, 0, netip.AddrPortFrom(peer6, 5353))
	ret, out := run6(t, dp.objs.SlFromEp, csum6(pkt6(pod6, vip6, nil, udp, udp6(5000, 53))))
	require.Equal(t, verdictNext, ret)
	_, d := ends6(out)
	require.Equal(t, netip.AddrPortFrom(peer6, 5353), d)
	requireChecksums6(t, out)
	_, out = run6(t, dp.objs.SlToEp, csum6(pkt6(peer6, pod6, nil, udp, udp6(5353, 5000))))
	s, _ := ends6(out)
	require.Equal(t, netip.AddrPortFrom(vip6, 53), s)
	requireChecksums6(t, out)

	// A fragmented datagram: the first fragment is translated with its
	// ports, a later one (no L4 header) follows it to the same backend.
	_, out = run6(t, dp.objs.SlFromEp, pkt6(pod6, vip6, []ext6{fragHdr(0, true, 77)}, udp, udp6(5002, 53)))
	ip := out.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	require.Equal(t, peer6.AsSlice(), []byte(ip.DstIP.To16()))
	require.Equal(t, uint16(5353), binary.BigEndian.Uint16(out.Data()[14+40+8+2:]), "past the Fragment header")
	ret, out = run6(t, dp.objs.SlFromEp, pkt6(pod6, vip6, []ext6{fragHdr(8, false, 77)}, udp, []byte("more payload")))
	require.Equal(t, verdictNext, ret)
	require.Equal(t, peer6.AsSlice(), []byte(out.Layer(layers.LayerTypeIPv6).(*layers.IPv6).DstIP.To16()))
}

// Without endpoints: an ICMPv6 port unreachable from the frontend, at once
// (ECONNREFUSED for TCP), like ip6tables' REJECT in kube-proxy.
func TestIPv6ServiceWithoutEndpointsRejects(t *testing.T) {
	dp, rd := ipv6Datapath(t, 0)
	putService(t, dp, 7, netip.AddrPortFrom(vip6, 80), tcp, 0)

	syn := csum6(pkt6(pod6, vip6, nil, tcp, tcp6(40000, 80, flags{syn: true})))
	ret, out := run6(t, dp.objs.SlFromEp, syn)
	require.Equal(t, uint32(tcActRedirect), ret, "sent back toward the pod")
	ip := out.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	require.Equal(t, vip6.AsSlice(), []byte(ip.SrcIP.To16()))
	require.Equal(t, pod6.AsSlice(), []byte(ip.DstIP.To16()))
	require.Equal(t, uint8(64), ip.HopLimit)
	ic, ok := out.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	require.True(t, ok, "an ICMPv6 message: %v", out)
	require.Equal(t, layers.CreateICMPv6TypeCode(layers.ICMPv6TypeDestinationUnreachable, layers.ICMPv6CodePortUnreachable), ic.TypeCode)
	require.Equal(t, syn[14:14+48], ic.Payload[4:4+48], "the offending IPv6 header and 8 bytes of TCP are quoted")
	eth := out.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	require.Equal(t, []byte{2, 0, 0, 0, 0, 1}, []byte(eth.DstMAC), "addressed back to the pod")
	requireChecksums6(t, out)
	ev := nextEvent(t, rd)
	require.Equal(t, events.Drop, ev.Type)
	require.Equal(t, "SERVICE_BACKEND_NOT_FOUND", ev.Reason.String())

	// Extension headers before TCP: the quote would not carry the ports;
	// dropped instead of answered.
	ret, _ = run6(t, dp.objs.SlFromEp, pkt6(pod6, vip6, []ext6{optsHdr(nhDest)}, tcp, tcp6(40001, 80, flags{syn: true})))
	require.Equal(t, uint32(2), ret, "TC_ACT_SHOT")
}

// A pod reaching itself through its IPv6 service: from the IPv6 service
// loopback, both directions straight back into the pod.
func TestIPv6ServiceHairpin(t *testing.T) {
	dp, rd := ipv6Datapath(t, 0)
	putService(t, dp, 5, netip.AddrPortFrom(vip6, 80), tcp, 0, netip.AddrPortFrom(pod6, 8080))

	ret, out := run6(t, dp.objs.SlFromEp, csum6(pkt6(pod6, vip6, nil, tcp, tcp6(40000, 80, flags{syn: true}))))
	require.Equal(t, uint32(tcActRedirect), ret, "sent straight back into the pod")
	s, d := ends6(out)
	require.Equal(t, netip.AddrPortFrom(serviceLoopback6, 40000), s)
	require.Equal(t, netip.AddrPortFrom(pod6, 8080), d)
	requireChecksums6(t, out)
	require.Equal(t, events.ConnNew, nextEvent(t, rd).Type)

	// The hairpinned SYN arriving is the pod itself, whatever its policy.
	ret, _ = run6(t, dp.objs.SlToEp, csum6(pkt6(serviceLoopback6, pod6, nil, tcp, tcp6(40000, 8080, flags{syn: true}))))
	require.Equal(t, verdictNext, ret)

	ret, out = run6(t, dp.objs.SlFromEp, csum6(pkt6(pod6, serviceLoopback6, nil, tcp, tcp6(8080, 40000, flags{syn: true, ack: true}))))
	require.Equal(t, uint32(tcActRedirect), ret)
	s, d = ends6(out)
	require.Equal(t, netip.AddrPortFrom(vip6, 80), s)
	require.Equal(t, netip.AddrPortFrom(pod6, 40000), d)
	requireChecksums6(t, out)
}

// An ICMPv6 error about a translated datagram is translated back, quote
// included, so the client's socket (which knows only the VIP) gets it.
func TestIPv6ServiceICMPErrorReverseTranslation(t *testing.T) {
	dp, _ := ipv6Datapath(t, 0)
	putService(t, dp, 6, netip.AddrPortFrom(vip6, 53), udp, 0, netip.AddrPortFrom(peer6, 5353))
	_, out := run6(t, dp.objs.SlFromEp, csum6(pkt6(pod6, vip6, nil, udp, udp6(5000, 53))))
	translated := append([]byte(nil), out.Data()...)

	ret, out := run6(t, dp.objs.SlToEp, csum6(icmp6Error(peer6, 1, translated, 1232)))
	require.Equal(t, verdictNext, ret)
	ip := out.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	require.Equal(t, vip6.AsSlice(), []byte(ip.SrcIP.To16()), "the error comes from the VIP")
	requireChecksums6(t, out)
	ic := out.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	quote := ic.Payload[4:]
	require.Equal(t, vip6.AsSlice(), quote[24:40], "quoted destination is the VIP")
	require.Equal(t, pod6.AsSlice(), quote[8:24])
	require.Equal(t, uint16(53), binary.BigEndian.Uint16(quote[42:]), "quoted destination port is the service port")

	// From a router on the way (not the backend): only the quote changes.
	router := netip.MustParseAddr("fd00:ff::1")
	_, out = run6(t, dp.objs.SlToEp, csum6(icmp6Error(router, 2, translated, 1232)))
	ip = out.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	require.Equal(t, router.AsSlice(), []byte(ip.SrcIP.To16()))
	requireChecksums6(t, out)
	require.Equal(t, vip6.AsSlice(), out.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6).Payload[4+24:4+40])
}

// loadBalancerSourceRanges of an IPv6 frontend: IPv6 prefixes, checked at
// the connection's first packet.
func TestIPv6ServiceSourceRanges(t *testing.T) {
	dp, _ := ipv6Datapath(t, 0)
	putService(t, dp, 5, netip.AddrPortFrom(vip6, 80), tcp, LBFlagSrcRange, netip.AddrPortFrom(peer6, 8080))
	putService(t, dp, 6, netip.AddrPortFrom(vip6, 81), tcp, LBFlagSrcRange, netip.AddrPortFrom(peer6, 8080))
	for _, r := range []LBSourceRange{
		{Frontend: 5, Prefix: netip.MustParsePrefix("fd00::/64")},
		{Frontend: 6, Prefix: netip.MustParsePrefix("2001:db8::/32")},
	} {
		k := r.raw()
		require.NoError(t, dp.objs.SlLbSrcRange.Put(&k, uint8(1)))
	}
	ret, out := run6(t, dp.objs.SlFromEp, csum6(pkt6(pod6, vip6, nil, tcp, tcp6(40000, 80, flags{syn: true}))))
	require.Equal(t, verdictNext, ret)
	_, d := ends6(out)
	require.Equal(t, netip.AddrPortFrom(peer6, 8080), d, "a client in the range")
	ret, _ = run6(t, dp.objs.SlFromEp, csum6(pkt6(pod6, vip6, nil, tcp, tcp6(40000, 81, flags{syn: true}))))
	require.Equal(t, uint32(2), ret, "a client outside the range: TC_ACT_SHOT")
}

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
		{"the frontend's address on a port that is no frontend: as addressed",
			[]step{out(fixed(pkt6(pod6, vip6, nil, tcp, tcp6(40001, 81, flags{syn: true}))), "trace")}},
		{"an IPv6 address that is an IPv4 frontend's bytes: not that frontend",
			[]step{out(fixed(pkt6(pod6, lookalike6, nil, tcp, syn)), "trace")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dp, rd := ipv6Datapath(t, 0)
			putService(t, dp, 5, netip.AddrPortFrom(vip6, 80), tcp, 0, netip.AddrPortFrom(peer6, 8080))
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
	putService(t, dp, 5, netip.AddrPortFrom(vip6, 80), tcp, LBFlagSrcRange, netip.AddrPortFrom(peer6, 8080))
	putService(t, dp, 6, netip.AddrPortFrom(vip, 80), tcp, LBFlagSrcRange)
	for _, r := range []LBSourceRange{
		{Frontend: 5, Prefix: netip.MustParsePrefix("2001:db8::/32")},
		{Frontend: 6, Prefix: netip.MustParsePrefix("198.51.100.0/24")},
	} {
		k := r.raw()
		require.NoError(t, dp.objs.SlLbSrcRange.Put(&k, uint8(1)))
	}
	st, err := dp.Maps().LBDump()
	require.NoError(t, err)
	f, ok := st.Frontends[LBFrontendKey{Addr: vip6, Port: 80, Proto: tcp}]
	require.True(t, ok, "the IPv6 frontend by its IPv6 key: %+v", st.Frontends)
	require.Equal(t, []uint32{9}, f.Slots)
	require.Equal(t, peer6, st.Backends[9].Addr)
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}, f.SourceRanges, "IPv6 ranges read back as IPv6")
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
		st.Frontends[LBFrontendKey{Addr: vip, Port: 80, Proto: tcp}].SourceRanges)
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

// The datapath counts each packet under its address family; Counters sums
// the families, CountersByFamily keeps them apart (Prometheus's family
// label).
func TestCountersByFamily(t *testing.T) {
	dp, _ := ipv6Datapath(t, 0)
	for range 2 {
		ret, _ := run6(t, dp.objs.SlFromEp, pkt6(pod6, peer6, nil, udp, udp6(5000, 53)))
		require.Equal(t, verdictNext, ret)
	}
	ret, _ := run(t, dp.objs.SlFromEp, udpPkt(t, podIP, peerIP, 5000, 53))
	require.Equal(t, verdictNext, ret)
	ret, _ = run6(t, dp.objs.SlFromEp, pkt6(peer36, peer6, nil, udp, udp6(5000, 53)))
	require.Equal(t, uint32(2), ret, "a spoofed IPv6 source: dropped")

	fam, err := dp.Maps().CountersByFamily()
	require.NoError(t, err)
	find := func(cs []Counter, metric, reason, family string) uint64 {
		for _, c := range cs {
			if c.Metric == metric && c.Dir == "egress" && c.Reason == reason && c.Family == family {
				return c.Packets
			}
		}
		return 0
	}
	require.EqualValues(t, 2, find(fam, "forwarded", "", "ipv6"), "%+v", fam)
	require.EqualValues(t, 1, find(fam, "forwarded", "", "ipv4"), "%+v", fam)
	require.EqualValues(t, 1, find(fam, "dropped", "INVALID_SOURCE_IP", "ipv6"), "%+v", fam)
	sum, err := dp.Maps().Counters()
	require.NoError(t, err)
	require.EqualValues(t, 3, find(sum, "forwarded", "", ""), "summed over families: %+v", sum)
}
