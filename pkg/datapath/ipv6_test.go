package datapath

// IPv6 through the endpoint programs (BPF_PROG_TEST_RUN): extension header
// chains walked to the transport header within SL_IPV6_MAX_EXT headers,
// fragments, truncated headers, ICMPv6 echo and errors, anti-spoofing, and
// the same identity-based policy as IPv4, revocation with RSTs included.
//
//	peer  fd00::2 (identity 2000) ─┐                 ┌─ pod fd00::1 / 10.0.0.1 (endpoint 7, identity 1000)
//	peer3 fd00::3 (identity 3000) ─┼── sl_to_ep ────►│   ingress: peers to the pod's ports
//	world 2001:db8::1 (no entry)  ─┘◄── sl_from_ep ──┘   egress:  the pod to peers' ports
//	ipBlock fd00:1::/64 except fd00:1::5 (CIDR classes)

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath/events"
)

var (
	pod6   = netip.MustParseAddr("fd00::1")
	peer6  = netip.MustParseAddr("fd00::2")
	peer36 = netip.MustParseAddr("fd00::3")
	world6 = netip.MustParseAddr("2001:db8::1")
)

const (
	nhHop      = 0
	nhRouting  = 43
	nhFragment = 44
	nhAuth     = 51
	nhDest     = 60
	nhMobility = 135
	icmp6      = 58
)

// ext6 is one extension header; its first byte (next header) is filled in
// by pkt6.
type ext6 struct {
	typ uint8
	raw []byte
}

func optsHdr(typ uint8) ext6 { return ext6{typ, make([]byte, 8)} } // hop-by-hop, destination options: PadN only
func routingHdr() ext6       { return ext6{nhRouting, []byte{0, 0, 4, 0, 0, 0, 0, 0}} }
func authHdr() ext6          { return ext6{nhAuth, []byte{0, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0}} } // 16 bytes: (2+2)*4
func fragHdr(offset uint16, more bool, id uint32) ext6 {
	b := make([]byte, 8)
	v := offset << 3
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(b[2:], v)
	binary.BigEndian.PutUint32(b[4:], id)
	return ext6{nhFragment, b}
}

// pkt6 is an Ethernet frame carrying IPv6 from src to dst with the
// extension headers exts, then proto's header l4. The datapath verifies
// no checksums, so none are computed.
func pkt6(src, dst netip.Addr, exts []ext6, proto uint8, l4 []byte) []byte {
	b := []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd}
	var payload []byte
	for i, e := range exts {
		next := proto
		if i+1 < len(exts) {
			next = exts[i+1].typ
		}
		h := append([]byte(nil), e.raw...)
		h[0] = next
		payload = append(payload, h...)
	}
	payload = append(payload, l4...)
	first := proto
	if len(exts) > 0 {
		first = exts[0].typ
	}
	ip := make([]byte, 40)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(payload)))
	ip[6], ip[7] = first, 64
	s, d := src.As16(), dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	return append(append(b, ip...), payload...)
}

var (
	linkLocal1, linkLocal2 = netip.MustParseAddr("fe80::1"), netip.MustParseAddr("fe80::2")
	allNodes, allRouters   = netip.MustParseAddr("ff02::1"), netip.MustParseAddr("ff02::2")
	mldRouters             = netip.MustParseAddr("ff02::16") // MLDv2-capable routers
)

// withHopLimit sets the hop limit of pkt6's frame b.
func withHopLimit(b []byte, hl uint8) []byte {
	b[14+7] = hl
	return b
}

// icmp6Msg is an ICMPv6 message of type typ with a 20-byte body.
func icmp6Msg(typ uint8) []byte { return append([]byte{typ, 0, 0, 0}, make([]byte, 20)...) }

func tcp6(sport, dport uint16, f flags) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	h[12] = 5 << 4
	for bit, on := range map[byte]bool{0x01: f.fin, 0x02: f.syn, 0x04: f.rst, 0x10: f.ack} {
		if on {
			h[13] |= bit
		}
	}
	binary.BigEndian.PutUint16(h[14:], 1000)
	return h
}

func udp6(sport, dport uint16) []byte {
	h := make([]byte, 12)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], 12)
	copy(h[8:], "ping")
	return h
}

func echo6(id uint16, reply bool) []byte {
	h := []byte{128, 0, 0, 0, 0, 0, 0, 1, 'x'}
	if reply {
		h[0] = 129
	}
	binary.BigEndian.PutUint16(h[4:], id)
	return h
}

// icmp6Error is an ICMPv6 error of type typ (1 unreachable, 2 packet too
// big) from `from` about frame inner (the IPv6 packet without Ethernet,
// cut to cut bytes), sent to inner's source.
func icmp6Error(from netip.Addr, typ uint8, inner []byte, cut int) []byte {
	ip := inner[14:]
	if cut < len(ip) {
		ip = ip[:cut]
	}
	dst := netip.AddrFrom16([16]byte(ip[8:24]))
	body := append([]byte{typ, 0, 0, 0, 0, 0, 5, 0}, ip...)
	return pkt6(from, dst, nil, icmp6, body)
}

func fixed(b []byte) func(testing.TB) []byte { return func(testing.TB) []byte { return b } }

// ipv6Datapath loads the programs with a dual-stack pod (policy flags
// flags) and the IPv6 peers in the ipcache beside the IPv4 ones.
func ipv6Datapath(t *testing.T, flags uint32) (*Datapath, *events.Reader) {
	dp := loadTest(t, Config{})
	m := dp.Maps()
	require.NoError(t, m.PutEndpoint(EndpointEntry{IfIndex: loIfindex, ID: 7, IPv4: podIP, IPv6: pod6, Identity: podID, PolicyFlags: flags}))
	_, _, err := m.SyncIPCache(map[netip.Prefix]IPCacheEntry{
		netip.PrefixFrom(podIP, 32):            {Identity: podID, EndpointID: 7},
		netip.PrefixFrom(pod6, 128):            {Identity: podID, EndpointID: 7},
		netip.PrefixFrom(peer6, 128):           {Identity: peerID},
		netip.PrefixFrom(peer36, 128):          {Identity: peer3},
		netip.PrefixFrom(peerIP, 32):           {Identity: peerID},
		netip.MustParsePrefix("::/0"):          {Identity: IdentityWorld},
		netip.MustParsePrefix("fd00:1::5/128"): {Identity: peer3},
	})
	require.NoError(t, err)
	rd, err := events.NewReader(dp.EventRing())
	require.NoError(t, err)
	t.Cleanup(func() { rd.Close() })
	return dp, rd
}

// Extension header chains, fragments and truncated headers: what is
// tracked (with the ports found past the chain), what is dropped and why.
// No policy: every well-formed packet passes.
func TestIPv6Parsing(t *testing.T) {
	syn := tcp6(40000, 80, flags{syn: true})
	chain := func(n int) []ext6 {
		var e []ext6
		for range n {
			e = append(e, optsHdr(nhDest))
		}
		return e
	}
	for _, tc := range []struct {
		name  string
		steps []step
		ct    []string // "proto src dst" of the CT entries left
	}{
		{"plain TCP is tracked", []step{out(fixed(pkt6(pod6, peer6, nil, tcp, syn)), "trace")},
			[]string{"TCP [fd00::1]:40000 [fd00::2]:80"}},
		{"hop-by-hop, routing, destination options, authentication: ports past the chain",
			[]step{out(fixed(pkt6(pod6, peer6, []ext6{optsHdr(nhHop), routingHdr(), optsHdr(nhDest), authHdr()}, udp, udp6(5000, 53))), "trace")},
			[]string{"UDP [fd00::1]:5000 [fd00::2]:53"}},
		{"six extension headers: within the bound",
			[]step{out(fixed(pkt6(pod6, peer6, chain(6), tcp, syn)), "trace")},
			[]string{"TCP [fd00::1]:40000 [fd00::2]:80"}},
		{"seven extension headers: dropped", []step{dropped(true, fixed(pkt6(pod6, peer6, chain(7), tcp, syn)), "INVALID_IPV6_EXTENSION_HEADER")}, nil},
		{"a chain cut short: dropped",
			[]step{dropped(false, fixed(pkt6(peer6, pod6, []ext6{optsHdr(nhHop), {nhRouting, []byte{0}}}, tcp, nil)), "INVALID_IPV6_EXTENSION_HEADER")}, nil},
		{"a header the walk does not know (mobility): dropped",
			[]step{dropped(false, fixed(pkt6(peer6, pod6, []ext6{{nhMobility, make([]byte, 8)}}, tcp, syn)), "INVALID_IPV6_EXTENSION_HEADER")}, nil},
		{"a truncated TCP header: dropped", []step{dropped(true, fixed(pkt6(pod6, peer6, nil, tcp, syn[:10])), "CT_TRUNCATED_OR_INVALID_HEADER")}, nil},
		{"a Fragment header cut short: dropped",
			[]step{dropped(false, fixed(pkt6(peer6, pod6, []ext6{optsHdr(nhHop), {nhFragment, []byte{0, 0, 0, 1}}}, udp, nil)), "INVALID_IPV6_EXTENSION_HEADER")}, nil},
		{"fragments: the first one's ports carry to the next",
			[]step{
				out(fixed(pkt6(pod6, peer6, []ext6{fragHdr(0, true, 77)}, udp, udp6(5001, 53))), "trace"),
				out(fixed(pkt6(pod6, peer6, []ext6{fragHdr(2, false, 77)}, udp, []byte("tail-of-the-datagram")))),
			},
			[]string{"UDP [fd00::1]:5001 [fd00::2]:53"}},
		{"fragments with destination options after the Fragment header: the later one is of the first one's connection",
			[]step{
				out(fixed(pkt6(pod6, peer6, []ext6{fragHdr(0, true, 79), optsHdr(nhDest)}, udp, udp6(5005, 53))), "trace"),
				out(fixed(pkt6(pod6, peer6, []ext6{fragHdr(2, false, 79)}, nhDest, []byte("tail-of-the-datagram")))),
			},
			[]string{"UDP [fd00::1]:5005 [fd00::2]:53"}},
		{"a later fragment without its first: dropped",
			[]step{dropped(false, fixed(pkt6(peer6, pod6, []ext6{fragHdr(2, false, 78)}, udp, []byte("tail"))), "FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND")}, nil},
		{"ICMPv6 echo: the reply belongs to the request",
			[]step{out(fixed(pkt6(pod6, peer6, nil, icmp6, echo6(9, false))), "trace"), in(fixed(pkt6(peer6, pod6, nil, icmp6, echo6(9, true))))},
			[]string{"ICMPv6 [fd00::1]:9 [fd00::2]:0"}},
		{"ICMPv6 error about a tracked connection: related (no event, nothing new)",
			[]step{
				out(fixed(pkt6(pod6, peer6, nil, udp, udp6(5002, 53))), "trace"),
				in(fixed(icmp6Error(peer6, 1, pkt6(pod6, peer6, nil, udp, udp6(5002, 53)), 48))),
				in(fixed(icmp6Error(world6, 2, pkt6(pod6, peer6, []ext6{optsHdr(nhDest)}, udp, udp6(5002, 53)), 56))),
			},
			[]string{"UDP [fd00::1]:5002 [fd00::2]:53"}},
		{"ICMPv6 error embedding a truncated header: dropped",
			[]step{dropped(false, fixed(icmp6Error(peer6, 1, pkt6(pod6, peer6, nil, udp, udp6(5003, 53)), 20)), "CT_TRUNCATED_OR_INVALID_HEADER")}, nil},
		{"neighbour discovery passes untracked", []step{out(ndPkt), in(ndPkt)}, nil},
		{"MLD with hop limit 1 passes untracked, behind its hop-by-hop Router Alert", []step{
			out(fixed(withHopLimit(pkt6(linkLocal1, mldRouters, []ext6{optsHdr(nhHop)}, icmp6, icmp6Msg(143)), 1))),
			in(fixed(withHopLimit(pkt6(linkLocal2, allNodes, nil, icmp6, icmp6Msg(130)), 1))),
		}, nil},
		// ND and MLD pass without policy, so what the receiving stack must
		// discard never passes: routed (hop limit decremented), crafted or
		// fragmented (RFC 4861, 3810, 6980).
		{"neighbour discovery and MLD their receivers must refuse: dropped", []step{
			dropped(false, fixed(withHopLimit(pkt6(peer6, pod6, nil, icmp6, icmp6Msg(135)), 254)), "FORBIDDEN_ICMPV6_MESSAGE"),
			dropped(true, fixed(withHopLimit(pkt6(pod6, peer6, nil, icmp6, icmp6Msg(136)), 64)), "FORBIDDEN_ICMPV6_MESSAGE"),
			dropped(true, fixed(withHopLimit(pkt6(linkLocal1, allRouters, nil, icmp6, icmp6Msg(133)), 1)), "FORBIDDEN_ICMPV6_MESSAGE"),
			dropped(true, fixed(withHopLimit(pkt6(linkLocal1, mldRouters, []ext6{optsHdr(nhHop)}, icmp6, icmp6Msg(143)), 2)), "FORBIDDEN_ICMPV6_MESSAGE"),
			dropped(false, fixed(withHopLimit(pkt6(linkLocal2, allNodes, nil, icmp6, icmp6Msg(130)), 255)), "FORBIDDEN_ICMPV6_MESSAGE"),
			dropped(false, fixed(withHopLimit(pkt6(linkLocal2, linkLocal1, []ext6{fragHdr(0, true, 81)}, icmp6, icmp6Msg(134)), 255)), "FORBIDDEN_ICMPV6_MESSAGE"),
			dropped(true, fixed(withHopLimit(pkt6(pod6, peer36, []ext6{fragHdr(0, true, 82)}, icmp6, icmp6Msg(135)), 255)), "FORBIDDEN_ICMPV6_MESSAGE"), // (another peer: drop events are limited per flow)
		}, nil},
		{"an ND redirect is dropped both ways", []step{
			dropped(true, func(t testing.TB) []byte { return icmp6LinkPkt(t, layers.ICMPv6TypeRedirect) }, "ICMP_REDIRECT"),
			dropped(false, func(t testing.TB) []byte { return icmp6LinkPkt(t, layers.ICMPv6TypeRedirect) }, "ICMP_REDIRECT")}, nil},
		{"a spoofed source: dropped", []step{dropped(true, fixed(pkt6(peer36, peer6, nil, tcp, syn)), "INVALID_SOURCE_IP")}, nil},
		{"the pod's link-local source passes",
			[]step{out(fixed(pkt6(linkLocal1, linkLocal2, nil, udp, udp6(5004, 53))), "trace")},
			[]string{"UDP [fe80::1]:5004 [fe80::2]:53"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dp, rd := ipv6Datapath(t, 0)
			for i, s := range tc.steps {
				runStep(t, dp, rd, i, s)
			}
			var got []string
			for _, e := range ctOf(t, dp) {
				got = append(got, e.Proto+" "+e.SrcAddr.String()+" "+e.DstAddr.String())
			}
			require.Equal(t, tc.ct, got)
		})
	}
}

// The same identity-based policy decides IPv6: identities from the
// ipcache's IPv6 entries, ipBlock classes with exceptions, replies,
// unrelated ICMPv6 errors judged, related ones passing.
func TestIPv6Policy(t *testing.T) {
	dp, rd := ipv6Datapath(t, EPFlagPolicyIngress|EPFlagPolicyEgress)
	setPolicy(t, dp, EndpointPolicy{
		Entries: []PolicyEntry{
			{Identity: peerID, Dir: dirIn, Proto: tcp, Port: 80, PortPrefixLen: 16, Verdict: VerdictAllow, Rule: 1},
			{Identity: class1, Dir: dirIn, Proto: tcp, Port: 8080, PortPrefixLen: 16, Verdict: VerdictAllow, Rule: 2},
			{Identity: peerID, Dir: dirOut, Proto: udp, Port: 53, PortPrefixLen: 16, Verdict: VerdictAllow, Rule: 3},
		},
		CIDRs: []PolicyCIDR{
			{Dir: dirIn, Prefix: netip.MustParsePrefix("fd00:1::/64"), Class: class1},
			{Dir: dirIn, Prefix: netip.MustParsePrefix("fd00:1::5/128"), Class: class1 + 1},
		},
	})
	for i, tc := range []struct {
		name     string
		egress   bool
		pkt      []byte
		rule     uint32 // 0: denied
		src, dst uint32 // identities in the event
	}{
		{"from the allowed identity", false, pkt6(peer6, pod6, nil, tcp, tcp6(41000, 80, flags{syn: true})), 1, peerID, podID},
		{"from another identity", false, pkt6(peer36, pod6, nil, tcp, tcp6(41001, 80, flags{syn: true})), 0, peer3, podID},
		{"to another port", false, pkt6(peer6, pod6, nil, tcp, tcp6(41002, 81, flags{syn: true})), 0, peerID, podID},
		{"ipBlock", false, pkt6(netip.MustParseAddr("fd00:1::9"), pod6, nil, tcp, tcp6(41003, 8080, flags{syn: true})), 2, IdentityWorld, podID},
		{"ipBlock except", false, pkt6(netip.MustParseAddr("fd00:1::5"), pod6, nil, tcp, tcp6(41004, 8080, flags{syn: true})), 0, peer3, podID},
		{"outside the ipBlock", false, pkt6(world6, pod6, nil, tcp, tcp6(41005, 8080, flags{syn: true})), 0, IdentityWorld, podID},
		{"egress allowed", true, pkt6(pod6, peer6, nil, udp, udp6(5000, 53)), 3, podID, peerID},
		{"egress to the world", true, pkt6(pod6, world6, nil, udp, udp6(5001, 53)), 0, podID, IdentityWorld},
		{"ICMPv6 echo: no rule without ports", false, pkt6(peer6, pod6, nil, icmp6, echo6(3, false)), 0, peerID, podID},
		{"an ICMPv6 error about no connection: judged as what it is",
			false, icmp6Error(peer6, 1, pkt6(pod6, world6, nil, udp, udp6(5002, 53)), 48), 0, peerID, podID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prog := dp.objs.SlToEp
			if tc.egress {
				prog = dp.objs.SlFromEp
			}
			ret, _ := runPolicy(t, prog, tc.pkt, fromWire)
			ev := nextEvent(t, rd)
			require.Equal(t, tc.src, ev.SrcIdentity, "case %d: %+v", i, ev)
			require.Equal(t, tc.dst, ev.DstIdentity, "case %d: %+v", i, ev)
			require.True(t, ev.Src.Addr().Is6() && ev.Dst.Addr().Is6(), "%+v", ev)
			if tc.rule == 0 {
				require.Equal(t, uint32(verdictDrop), ret)
				require.Equal(t, "POLICY_DENIED", ev.Reason.String())
				require.Equal(t, events.VerdictDeny, ev.Verdict)
				return
			}
			require.Equal(t, verdictNext, ret)
			require.Equal(t, events.ConnNew, ev.Type)
			require.Equal(t, events.VerdictAllow, ev.Verdict)
			require.Equal(t, tc.rule, ev.PolicyRule)
		})
	}
	t.Run("the maps read from user space (sluice policy trace) decide as the program did", func(t *testing.T) {
		for addr, rule := range map[string]uint32{"fd00:1::9": 2, "fd00:1::5": 0, "2001:db8::1": 0} {
			match, err := dp.Maps().LookupPolicy(7, PolicyQuery{Dir: dirIn, Proto: tcp, Port: 8080, PeerIdentity: IdentityWorld,
				PeerAddr: netip.MustParseAddr(addr)})
			require.NoError(t, err)
			require.Equal(t, rule, match.Entry.Rule, "%s: %+v", addr, match)
		}
	})
	t.Run("the unrelated error's event names its own sender and ICMPv6", func(t *testing.T) {
		ret, _ := runPolicy(t, dp.objs.SlToEp, icmp6Error(peer36, 1, pkt6(pod6, world6, nil, udp, udp6(5003, 53)), 48), fromWire)
		require.Equal(t, uint32(verdictDrop), ret)
		ev := nextEvent(t, rd)
		require.Equal(t, uint8(unix.IPPROTO_ICMPV6), ev.Proto)
		require.Equal(t, peer36, ev.Src.Addr())
		require.Equal(t, pod6, ev.Dst.Addr())
	})
	t.Run("replies and related errors of an allowed connection pass", func(t *testing.T) {
		q := pkt6(pod6, peer6, nil, udp, udp6(5010, 53))
		ret, _ := runPolicy(t, dp.objs.SlFromEp, q, fromWire)
		require.Equal(t, verdictNext, ret)
		require.Equal(t, uint32(3), nextEvent(t, rd).PolicyRule)
		ret, _ = runPolicy(t, dp.objs.SlToEp, pkt6(peer6, pod6, nil, udp, udp6(53, 5010)), fromWire)
		require.Equal(t, verdictNext, ret, "the reply")
		ret, _ = runPolicy(t, dp.objs.SlToEp, icmp6Error(world6, 2, q, 48), fromWire)
		require.Equal(t, verdictNext, ret, "packet too big about it, from a router: path MTU discovery works")
		rd.SetDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := rd.Read()
		require.Error(t, err, "replies and related errors are not new connections")
	})
}

// A connection the new policy no longer allows is cut on its next packet,
// over IPv6 as over IPv4: the packet becomes an RST to its destination and
// a clone an RST back to its sender (run in a private network namespace:
// the clone is really sent, on that namespace's loopback).
func TestIPv6PolicyRevocation(t *testing.T) {
	privateNetns(t)

	dp, rd := ipv6Datapath(t, EPFlagPolicyEgress)
	setPolicy(t, dp, EndpointPolicy{Entries: []PolicyEntry{
		{Identity: peerID, Dir: dirOut, Proto: tcp, Port: 80, PortPrefixLen: 16, Verdict: VerdictAllow, Rule: 50},
	}})
	ret, _ := runPolicy(t, dp.objs.SlFromEp, pkt6(pod6, peer6, nil, tcp, tcp6(40000, 80, flags{syn: true})), fromWire)
	require.Equal(t, verdictNext, ret)
	ret, _ = runPolicy(t, dp.objs.SlToEp, pkt6(peer6, pod6, nil, tcp, tcp6(80, 40000, flags{syn: true, ack: true})), fromWire)
	require.Equal(t, verdictNext, ret)
	require.Equal(t, events.VerdictAllow, nextEvent(t, rd).Verdict)
	require.Len(t, ctOf(t, dp), 1)

	lo, err := netlink.LinkByIndex(loIfindex)
	require.NoError(t, err)
	require.NoError(t, netlink.LinkSetUp(lo))
	back := capture(t, loIfindex)
	setPolicy(t, dp, EndpointPolicy{})
	reply := tcp6(80, 40000, flags{ack: true})
	binary.BigEndian.PutUint32(reply[4:], 7000)
	binary.BigEndian.PutUint32(reply[8:], 9000)
	ret, out := runPolicy(t, dp.objs.SlToEp, pkt6(peer6, pod6, nil, tcp, reply), fromWire)
	require.Equal(t, verdictNext, ret, "the packet continues, as an RST")
	rst := requireRST6(t, out, peer6, 80, pod6, 40000)
	require.Equal(t, uint32(7000), rst.Seq, "in the sequence the pod expects")
	backRST := back.next(t, func(p gopacket.Packet) bool {
		l, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		ip, ok6 := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		return ok && ok6 && l.RST && ip.SrcIP.Equal(pod6.AsSlice())
	})
	require.Equal(t, uint32(9000), requireRST6(t, backRST, pod6, 40000, peer6, 80).Seq,
		"the peer, which sent the packet, gets an RST at the sequence number it acknowledged")
	ev := nextEvent(t, rd)
	require.Equal(t, "POLICY_REVOKED", ev.Reason.String())
	require.Equal(t, peerID, ev.SrcIdentity)
	require.Equal(t, podID, ev.DstIdentity)
	require.True(t, ev.Tracked && ev.Reply, "%+v", ev)
	require.Empty(t, ctOf(t, dp), "the connection is forgotten")
}

// requireRST6 checks that p is a bare IPv6 TCP RST from src:sport to
// dst:dport with a valid checksum, and returns its TCP header.
func requireRST6(t *testing.T, p gopacket.Packet, src netip.Addr, sport uint16, dst netip.Addr, dport uint16) *layers.TCP {
	t.Helper()
	ip, ok := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	require.True(t, ok, "no IPv6 header: %v", p)
	l4, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	require.True(t, ok, "no TCP header: %v", p)
	require.True(t, l4.RST, "an RST: %v", p)
	require.Equal(t, src.AsSlice(), []byte(ip.SrcIP.To16()))
	require.Equal(t, dst.AsSlice(), []byte(ip.DstIP.To16()))
	require.Equal(t, uint8(64), ip.HopLimit)
	require.Equal(t, layers.TCPPort(sport), l4.SrcPort)
	require.Equal(t, layers.TCPPort(dport), l4.DstPort)
	seg := append(append([]byte(nil), l4.Contents...), l4.Payload...)
	seg[16], seg[17] = 0, 0
	ph := append(append([]byte(nil), ip.SrcIP.To16()...), ip.DstIP.To16()...)
	ph = append(ph, 0, 0, byte(len(seg)>>8), byte(len(seg)), 0, 0, 0, 6)
	require.Equal(t, l4.Checksum, fold(sum(ph)+sum(seg)), "TCP checksum over the IPv6 pseudo-header")
	return l4
}

// Audit mode forwards what IPv6 policy would deny, and reports it.
func TestIPv6PolicyAudit(t *testing.T) {
	dp, rd := ipv6Datapath(t, EPFlagPolicyIngress|EPFlagPolicyAudit)
	setPolicy(t, dp, EndpointPolicy{})
	ret, _ := runPolicy(t, dp.objs.SlToEp, pkt6(peer6, pod6, nil, tcp, tcp6(40000, 80, flags{syn: true})), fromWire)
	require.Equal(t, verdictNext, ret)
	ev := nextEvent(t, rd)
	require.Equal(t, events.VerdictAudit, ev.Verdict)
	require.Equal(t, peerID, ev.SrcIdentity)
}
