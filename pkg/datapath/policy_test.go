package datapath

// Network policy through BPF_PROG_TEST_RUN: rule precedence, CIDR classes
// with exceptions, the reply path, audit, redirect, SCTP, the host
// identity, IPv6, overflow and revocation.
//
//	peer 10.0.0.2 (identity 2000) ─┐                 ┌─ pod 10.0.0.1 (endpoint 7, identity 1000)
//	peer 10.0.0.3 (identity 3000) ─┼── sl_to_ep ────►│   ingress: peers to the pod's ports
//	world 192.0.2.1 (no entry)    ─┘◄── sl_from_ep ──┘   egress:  the pod to peers' ports
//	the node itself: a packet from no interface (ingress_ifindex 0)

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath/events"
	"github.com/sluice-net/sluice/pkg/datapath/internal/raw"
)

var (
	peer3IP = netip.MustParseAddr("10.0.0.3")
	worldIP = netip.MustParseAddr("192.0.2.1")
)

const (
	dirIn  uint8  = 1
	dirOut uint8  = 2
	tcp    uint8  = 6
	udp    uint8  = 17
	sctp   uint8  = 132
	podID  uint32 = 1000
	peerID uint32 = 2000
	peer3  uint32 = 3000
	class1 uint32 = 1<<24 + 1
)

// fromWire runs a packet as if it arrived on an interface (forwarded);
// fromNode as if the node's own stack sent it.
const (
	fromWire = 1
	fromNode = 0
)

func runPolicy(t *testing.T, prog *ebpf.Program, pkt []byte, ingressIfindex uint32) (uint32, gopacket.Packet) {
	t.Helper()
	requireSkbContext(t, prog)
	opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, 1600), Context: SkbContext{IngressIfindex: ingressIfindex}}
	ret, err := prog.Run(opts)
	require.NoError(t, err)
	return ret, gopacket.NewPacket(opts.DataOut, layers.LayerTypeEthernet, gopacket.Default)
}

// policyDatapath loads the programs with the pod under policy in both
// directions and the peers in the ipcache.
func policyDatapath(t *testing.T, flags uint32) (*Datapath, *events.Reader) {
	dp := loadTest(t, Config{})
	m := dp.Maps()
	require.NoError(t, m.PutEndpoint(EndpointEntry{IfIndex: loIfindex, ID: 7, IPv4: podIP, Identity: podID, PolicyFlags: flags}))
	_, _, err := m.SyncIPCache(map[netip.Prefix]IPCacheEntry{
		netip.PrefixFrom(podIP, 32):   {Identity: podID, EndpointID: 7},
		netip.PrefixFrom(peerIP, 32):  {Identity: peerID},
		netip.PrefixFrom(peer3IP, 32): {Identity: peer3},
	})
	require.NoError(t, err)
	rd, err := events.NewReader(dp.EventRing())
	require.NoError(t, err)
	t.Cleanup(func() { rd.Close() })
	return dp, rd
}

func setPolicy(t *testing.T, dp *Datapath, p EndpointPolicy) {
	t.Helper()
	m := dp.Maps()
	require.NoError(t, m.WriteEndpointPolicy(7, p))
	_, err := m.BumpPolicyRevision()
	require.NoError(t, err)
}

func sctpPkt(t testing.TB, src, dst netip.Addr, sport, dport uint16) []byte {
	return serialize(t, src, dst, layers.IPProtocolSCTP, []gopacket.SerializableLayer{
		&layers.SCTP{SrcPort: layers.SCTPPort(sport), DstPort: layers.SCTPPort(dport), VerificationTag: 1},
	})
}

// Which rule decides, when several could: the longest (protocol, port)
// match, then the most specific peer (identity, CIDR class, any).
func TestPolicyPrecedence(t *testing.T) {
	allow := func(id uint32, dir, proto uint8, port uint16, plen uint8, rule uint32) PolicyEntry {
		return PolicyEntry{Identity: id, Dir: dir, Proto: proto, Port: port, PortPrefixLen: plen, Verdict: VerdictAllow, Rule: rule}
	}
	cidr := []PolicyCIDR{
		// ipBlock 10.0.0.0/8 except 10.0.0.2/32: the exception is its own
		// class with no entries.
		{Dir: dirIn, Prefix: netip.MustParsePrefix("10.0.0.0/8"), Class: class1},
		{Dir: dirIn, Prefix: netip.MustParsePrefix("10.0.0.2/32"), Class: class1 + 1},
	}
	dp, rd := policyDatapath(t, EPFlagPolicyIngress|EPFlagPolicyEgress)
	for i, tc := range []struct {
		name    string
		entries []PolicyEntry
		cidrs   []PolicyCIDR
		from    netip.Addr
		proto   uint8
		port    uint16
		rule    uint32 // 0: denied
	}{
		{"nothing allows: default deny", nil, nil, peerIP, tcp, 80, 0},
		{"identity and port", []PolicyEntry{allow(peerID, dirIn, tcp, 80, 16, 11)}, nil, peerIP, tcp, 80, 11},
		{"identity and port, other port", []PolicyEntry{allow(peerID, dirIn, tcp, 80, 16, 11)}, nil, peerIP, tcp, 81, 0},
		{"identity and port, other identity", []PolicyEntry{allow(peerID, dirIn, tcp, 80, 16, 11)}, nil, peer3IP, tcp, 80, 0},
		{"identity and port, other protocol", []PolicyEntry{allow(peerID, dirIn, tcp, 80, 16, 11)}, nil, peerIP, udp, 80, 0},
		{"identity, any port", []PolicyEntry{allow(peerID, dirIn, 0, 0, 0, 12)}, nil, peerIP, udp, 9999, 12},
		{"any peer with a port beats identity with any port",
			[]PolicyEntry{allow(peerID, dirIn, 0, 0, 0, 12), allow(0, dirIn, tcp, 80, 16, 13)}, nil, peerIP, tcp, 80, 13},
		{"any peer with a port beats identity with a protocol",
			[]PolicyEntry{allow(peerID, dirIn, tcp, 0, 0, 14), allow(0, dirIn, tcp, 80, 16, 13)}, nil, peerIP, tcp, 80, 13},
		{"identity and port beats any peer and port",
			[]PolicyEntry{allow(0, dirIn, tcp, 80, 16, 13), allow(peerID, dirIn, tcp, 80, 16, 11)}, nil, peerIP, tcp, 80, 11},
		{"wildcard", []PolicyEntry{allow(0, dirIn, 0, 0, 0, 15)}, nil, worldIP, udp, 53, 15},
		{"port range 8192-8447 (8 prefix bits), inside", []PolicyEntry{allow(peerID, dirIn, tcp, 8192, 8, 16)}, nil, peerIP, tcp, 8300, 16},
		{"port range 8192-8447, outside", []PolicyEntry{allow(peerID, dirIn, tcp, 8192, 8, 16)}, nil, peerIP, tcp, 8448, 0},
		{"exact port beats a range", []PolicyEntry{allow(peerID, dirIn, tcp, 8192, 8, 16), allow(peerID, dirIn, tcp, 8300, 16, 17)}, nil, peerIP, tcp, 8300, 17},
		{"SCTP is not TCP", []PolicyEntry{allow(peerID, dirIn, tcp, 80, 16, 11)}, nil, peerIP, sctp, 80, 0},
		{"SCTP rule", []PolicyEntry{allow(peerID, dirIn, sctp, 80, 16, 18)}, nil, peerIP, sctp, 80, 18},
		{"CIDR class", []PolicyEntry{allow(class1, dirIn, tcp, 80, 16, 20)}, cidr, peer3IP, tcp, 80, 20},
		{"CIDR except on a pod address", []PolicyEntry{allow(class1, dirIn, tcp, 80, 16, 20)}, cidr, peerIP, tcp, 80, 0},
		{"CIDR or identity", []PolicyEntry{allow(class1, dirIn, tcp, 80, 16, 20), allow(peerID, dirIn, tcp, 80, 16, 11)}, cidr, peerIP, tcp, 80, 11},
		{"CIDR class outside the block", []PolicyEntry{allow(class1, dirIn, tcp, 80, 16, 20)}, cidr, worldIP, tcp, 80, 0},
		{"egress rule does not allow ingress", []PolicyEntry{allow(peerID, dirOut, tcp, 80, 16, 21)}, nil, peerIP, tcp, 80, 0},
	} {
		// One datapath for every case (a load is a second under software
		// emulation in the VM matrix): each case replaces the policy and
		// bumps the revision, and sends from a source port of its own, so
		// no earlier case's CT entry or drop rate limit applies to it.
		sport := uint16(40000 + i)
		t.Run(tc.name, func(t *testing.T) {
			setPolicy(t, dp, EndpointPolicy{Entries: tc.entries, CIDRs: tc.cidrs})
			var pkt []byte
			switch tc.proto {
			case tcp:
				pkt = tcpPkt(t, tc.from, podIP, sport, tc.port, flags{syn: true})
			case udp:
				pkt = udpPkt(t, tc.from, podIP, sport, tc.port)
			case sctp:
				pkt = sctpPkt(t, tc.from, podIP, sport, tc.port)
			}
			ret, _ := runPolicy(t, dp.objs.SlToEp, pkt, fromWire)
			ev := nextEvent(t, rd)
			// The maps read from user space (sluice policy trace) decide
			// as the program did.
			m := dp.Maps()
			peerIdentity := IdentityWorld
			if e, ok, err := m.LookupIPCache(tc.from); assert.NoError(t, err) && ok {
				peerIdentity = e.Identity
			}
			match, err := m.LookupPolicy(7, PolicyQuery{Dir: dirIn, Proto: tc.proto, Port: tc.port, PeerIdentity: peerIdentity, PeerAddr: tc.from})
			require.NoError(t, err)
			require.True(t, match.HasMaps)
			require.Equal(t, tc.rule != 0, match.Found, "LookupPolicy: %+v", match)
			require.Equal(t, tc.rule, match.Entry.Rule, "LookupPolicy: %+v", match)
			if tc.rule == 0 {
				require.Equal(t, uint32(verdictDrop), ret)
				require.Equal(t, events.Drop, ev.Type)
				require.Equal(t, "POLICY_DENIED", ev.Reason.String())
				require.Equal(t, uint16(133), uint16(ev.Reason), "Hubble's POLICY_DENIED")
				require.Equal(t, events.VerdictDeny, ev.Verdict)
				require.Zero(t, ev.PolicyRule, "default deny")
				peer := netip.AddrPortFrom(tc.from, sport)
				for _, e := range ctOf(t, dp) {
					require.False(t, e.SrcAddr == peer || e.DstAddr == peer, "a denied connection leaves no CT entry: %+v", e)
				}
				return
			}
			require.Equal(t, verdictNext, ret)
			require.Equal(t, events.ConnNew, ev.Type)
			require.Equal(t, events.VerdictAllow, ev.Verdict)
			require.Equal(t, tc.rule, ev.PolicyRule)
			require.Equal(t, podID, ev.DstIdentity)
			peer, tracked := netip.AddrPortFrom(tc.from, sport), false
			for _, e := range ctOf(t, dp) {
				tracked = tracked || e.SrcAddr == peer || e.DstAddr == peer
			}
			require.True(t, tracked, "an allowed connection is tracked")
		})
	}
}

// Replies of an allowed connection pass both ways; identities in events.
func TestPolicyReplyPathAndIdentities(t *testing.T) {
	dp, rd := policyDatapath(t, EPFlagPolicyIngress|EPFlagPolicyEgress)
	setPolicy(t, dp, EndpointPolicy{Entries: []PolicyEntry{
		{Identity: peerID, Dir: dirOut, Proto: tcp, Port: 80, PortPrefixLen: 16, Verdict: VerdictAllow, Rule: 31},
	}})
	ret, _ := runPolicy(t, dp.objs.SlFromEp, tcpPkt(t, podIP, peerIP, 40000, 80, flags{syn: true}), fromWire)
	require.Equal(t, verdictNext, ret)
	ev := nextEvent(t, rd)
	require.Equal(t, events.VerdictAllow, ev.Verdict)
	require.Equal(t, podID, ev.SrcIdentity)
	require.Equal(t, peerID, ev.DstIdentity)

	// No ingress rule, but the reply belongs to an allowed connection.
	ret, _ = runPolicy(t, dp.objs.SlToEp, tcpPkt(t, peerIP, podIP, 80, 40000, flags{syn: true, ack: true}), fromWire)
	require.Equal(t, verdictNext, ret)
	ret, _ = runPolicy(t, dp.objs.SlFromEp, tcpPkt(t, podIP, peerIP, 40000, 80, flags{ack: true}), fromWire)
	require.Equal(t, verdictNext, ret)
	// A new connection from the peer is not a reply.
	ret, _ = runPolicy(t, dp.objs.SlToEp, tcpPkt(t, peerIP, podIP, 41000, 80, flags{syn: true}), fromWire)
	require.Equal(t, uint32(verdictDrop), ret)

	// Egress to the world: not allowed, identity world.
	ret, _ = runPolicy(t, dp.objs.SlFromEp, udpPkt(t, podIP, worldIP, 40000, 53), fromWire)
	require.Equal(t, uint32(verdictDrop), ret)
	for {
		ev = nextEvent(t, rd)
		if ev.Type == events.Drop && ev.Dst.Addr() == worldIP {
			break
		}
	}
	require.Equal(t, IdentityWorld, ev.DstIdentity)
}

// The node itself is host only for what it originates: the same source
// address forwarded from an interface is not host.
func TestPolicyHostIdentity(t *testing.T) {
	dp, rd := policyDatapath(t, EPFlagPolicyIngress)
	setPolicy(t, dp, EndpointPolicy{Entries: []PolicyEntry{
		{Identity: IdentityHost, Dir: dirIn, Verdict: VerdictAllow, Rule: 1},
	}})
	node := netip.MustParseAddr("172.16.0.1")
	_, _, err := dp.Maps().SyncIPCache(map[netip.Prefix]IPCacheEntry{netip.PrefixFrom(node, 32): {Identity: IdentityHost}})
	require.NoError(t, err)
	_, err = dp.Maps().BumpPolicyRevision()
	require.NoError(t, err)

	ret, _ := runPolicy(t, dp.objs.SlToEp, tcpPkt(t, node, podIP, 40000, 8080, flags{syn: true}), fromNode)
	require.Equal(t, verdictNext, ret, "kubelet probe from the node")
	require.Equal(t, IdentityHost, nextEvent(t, rd).SrcIdentity)

	ret, _ = runPolicy(t, dp.objs.SlToEp, tcpPkt(t, node, podIP, 40001, 8080, flags{syn: true}), fromWire)
	require.Equal(t, uint32(verdictDrop), ret, "a forwarded packet with the node's address (SNAT) is not the node")
	require.Equal(t, IdentityWorld, nextEvent(t, rd).SrcIdentity)
}

// Audit mode forwards what would be denied, and says so.
func TestPolicyAudit(t *testing.T) {
	dp, rd := policyDatapath(t, EPFlagPolicyIngress|EPFlagPolicyAudit)
	setPolicy(t, dp, EndpointPolicy{})
	ret, _ := runPolicy(t, dp.objs.SlToEp, tcpPkt(t, peerIP, podIP, 40000, 80, flags{syn: true}), fromWire)
	require.Equal(t, verdictNext, ret)
	ev := nextEvent(t, rd)
	require.Equal(t, events.ConnNew, ev.Type)
	require.Equal(t, events.VerdictAudit, ev.Verdict)
	st, err := dp.Maps().Counters()
	require.NoError(t, err)
	var audited uint64
	for _, c := range st {
		if c.Metric == "policy-audit" {
			audited += c.Packets
		}
	}
	require.Equal(t, uint64(1), audited)
}

// A redirect verdict hands the connection to the node's L7 proxy where it
// enters the node; where that cannot be (the destination's own endpoint, a
// test run with no proxy listening), the connection fails closed with
// PROXY_UNAVAILABLE, never passes unproxied. (Hand-over itself needs real
// sockets: TestProxyRedirect.)
func TestPolicyRedirectVerdict(t *testing.T) {
	dp, rd := policyDatapath(t, EPFlagPolicyIngress|EPFlagPolicyEgress)
	setPolicy(t, dp, EndpointPolicy{Entries: []PolicyEntry{
		{Identity: 0, Dir: dirIn, Proto: tcp, Port: 80, PortPrefixLen: 16, Verdict: VerdictRedirect, ProxyPort: 15001, Rule: 41},
		{Identity: 0, Dir: dirOut, Proto: tcp, Port: 80, PortPrefixLen: 16, Verdict: VerdictRedirect, ProxyPort: 15002, Rule: 42},
	}})
	ret, _ := runPolicy(t, dp.objs.SlToEp, tcpPkt(t, peerIP, podIP, 40000, 80, flags{syn: true}), fromWire)
	require.Equal(t, uint32(verdictDrop), ret, "at the destination's own endpoint a redirect cannot be honoured")
	ev := nextEvent(t, rd)
	require.Equal(t, "PROXY_UNAVAILABLE", ev.Reason.String())
	require.Equal(t, events.VerdictRedirect, ev.Verdict)
	require.Equal(t, uint16(15001), ev.ProxyPort)
	require.Equal(t, uint32(41), ev.PolicyRule)

	syn := tcpPkt(t, podIP, peerIP, 40001, 80, flags{syn: true})
	ret, out := runPolicy(t, dp.objs.SlFromEp, syn, fromWire)
	require.Equal(t, uint32(tcActRedirect), ret, "no proxy listens: refused back into the pod")
	rst := out.Layer(layers.LayerTypeTCP).(*layers.TCP)
	require.True(t, rst.RST && rst.ACK, "an RST acknowledging the SYN: connect() fails at once")
	require.Equal(t, netip.AddrPortFrom(peerIP, 80), src(out))
	require.Equal(t, netip.AddrPortFrom(podIP, 40001), dst(out))
	requireChecksums(t, out)
	ev = nextEvent(t, rd)
	require.Equal(t, "PROXY_UNAVAILABLE", ev.Reason.String())
	require.Equal(t, uint16(15002), ev.ProxyPort)
	require.Empty(t, ctOf(t, dp), "a refused connection leaves no state")
}

// At equal length a Redirect outranks a more specific peer's entry, so that
// under NetworkPolicy + L7 an identity's Allow cannot bypass the proxy;
// entries of a direction compiled with ClusterNetworkPolicy tiers (Tiered)
// rank by length and peer only, so an identity's Deny beats the any-peer
// Redirect of an L7 port.
//
//	peer 10.0.0.2 (identity 2000) ─┐   TCP/80 entries: any peer  Redirect 15001
//	peer 10.0.0.3 (identity 3000) ─┴─► sl_to_ep ─►     identity 2000 Deny / Allow
func TestPolicyTieredRedirectRank(t *testing.T) {
	dp, rd := policyDatapath(t, EPFlagPolicyIngress)
	redirect := func(tiered bool) PolicyEntry {
		return PolicyEntry{Identity: IdentityAny, Dir: dirIn, Proto: tcp, Port: 80, PortPrefixLen: 16,
			Verdict: VerdictRedirect, ProxyPort: 15001, Rule: 41, Tiered: tiered}
	}
	peerEntry := func(verdict uint8, tiered bool) PolicyEntry {
		return PolicyEntry{Identity: peerID, Dir: dirIn, Proto: tcp, Port: 80, PortPrefixLen: 16, Verdict: verdict, Rule: 51, Tiered: tiered}
	}
	for i, tc := range []struct {
		name    string
		entries []PolicyEntry
		from    netip.Addr
		verdict events.Verdict
		reason  string
		rule    uint32
	}{
		{"tiered: an identity's Deny beats the any-peer Redirect",
			[]PolicyEntry{redirect(true), peerEntry(VerdictDeny, true)}, peerIP, events.VerdictDeny, "POLICY_DENIED", 51},
		{"tiered: another identity is redirected",
			[]PolicyEntry{redirect(true), peerEntry(VerdictDeny, true)}, peer3IP, events.VerdictRedirect, "PROXY_UNAVAILABLE", 41},
		{"plain: the any-peer Redirect beats an identity's Allow",
			[]PolicyEntry{redirect(false), peerEntry(VerdictAllow, false)}, peerIP, events.VerdictRedirect, "PROXY_UNAVAILABLE", 41},
	} {
		sport := uint16(41000 + i)
		t.Run(tc.name, func(t *testing.T) {
			setPolicy(t, dp, EndpointPolicy{Entries: tc.entries})
			ret, _ := runPolicy(t, dp.objs.SlToEp, tcpPkt(t, tc.from, podIP, sport, 80, flags{syn: true}), fromWire)
			// A redirect cannot be honoured at the destination's own
			// endpoint (TestPolicyRedirectVerdict): both drop, the event
			// says which verdict decided.
			require.Equal(t, uint32(verdictDrop), ret)
			ev := nextEvent(t, rd)
			require.Equal(t, tc.reason, ev.Reason.String())
			require.Equal(t, tc.verdict, ev.Verdict)
			require.Equal(t, tc.rule, ev.PolicyRule)

			// sluice policy trace reads the maps to the same decision, the
			// flag kept apart from the verdict.
			peer := peerID
			if tc.from == peer3IP {
				peer = peer3
			}
			m, err := dp.Maps().LookupPolicy(7, PolicyQuery{Dir: dirIn, Proto: tcp, Port: 80, PeerIdentity: peer, PeerAddr: tc.from})
			require.NoError(t, err)
			require.True(t, m.Found)
			require.Equal(t, tc.rule, m.Entry.Rule, "LookupPolicy: %+v", m)
			require.Equal(t, tc.entries[0].Tiered, m.Entry.Tiered)
			require.Equal(t, map[events.Verdict]uint8{events.VerdictDeny: VerdictDeny, events.VerdictRedirect: VerdictRedirect}[tc.verdict], m.Entry.Verdict)
		})
	}
}

// Fails closed when the policy did not fit, IPv6 as IPv4 (neighbour
// discovery excepted); without policy IPv6 passes.
func TestPolicyOverflowAndIPv6(t *testing.T) {
	dp, rd := policyDatapath(t, EPFlagPolicyIngress|EPFlagPolicyOverflow)
	setPolicy(t, dp, EndpointPolicy{Entries: []PolicyEntry{{Identity: 0, Dir: dirIn, Verdict: VerdictAllow, Rule: 1}}})
	ret, _ := runPolicy(t, dp.objs.SlToEp, tcpPkt(t, peerIP, podIP, 40000, 80, flags{syn: true}), fromWire)
	require.Equal(t, uint32(verdictDrop), ret)
	require.Equal(t, "POLICY_OVERFLOW", nextEvent(t, rd).Reason.String())

	ret, _ = runPolicy(t, dp.objs.SlToEp, ipv6Pkt(t), fromWire)
	require.Equal(t, uint32(verdictDrop), ret)
	ev := nextEvent(t, rd)
	require.Equal(t, "POLICY_OVERFLOW", ev.Reason.String())
	require.True(t, ev.Src.Addr().Is6())

	ns := ndPkt(t)
	ret, _ = runPolicy(t, dp.objs.SlToEp, ns, fromWire)
	require.Equal(t, verdictNext, ret, "neighbour solicitation passes")

	require.NoError(t, dp.Maps().PutEndpoint(EndpointEntry{IfIndex: loIfindex, ID: 7, IPv4: podIP, Identity: podID}))
	ret, _ = runPolicy(t, dp.objs.SlToEp, ipv6Pkt(t), fromWire)
	require.Equal(t, verdictNext, ret, "no policy: IPv6 passes")
}

func ndPkt(t testing.TB) []byte { return icmp6LinkPkt(t, layers.ICMPv6TypeNeighborSolicitation) }

// icmp6LinkPkt is an ICMPv6 message of type typ from fe80::1 to a
// solicited-node multicast address, as neighbour discovery sends them.
func icmp6LinkPkt(t testing.TB, typ uint8) []byte {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolICMPv6, HopLimit: 255,
		SrcIP: netip.MustParseAddr("fe80::1").AsSlice(), DstIP: netip.MustParseAddr("ff02::1:ff00:2").AsSlice()}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}
	require.NoError(t, icmp.SetNetworkLayerForChecksum(ip))
	buf := gopacket.NewSerializeBuffer()
	require.NoError(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, icmp, gopacket.Payload(make([]byte, 20))))
	return buf.Bytes()
}

// A connection the new policy no longer allows is cut on its next packet:
// the packet becomes an RST to its destination, and a clone an RST back
// to its sender (run in a private network namespace: the clone is really
// sent, on that namespace's loopback).
func TestPolicyRevocation(t *testing.T) {
	privateNetns(t)

	dp, rd := policyDatapath(t, EPFlagPolicyEgress)
	setPolicy(t, dp, EndpointPolicy{Entries: []PolicyEntry{
		{Identity: peerID, Dir: dirOut, Proto: tcp, Port: 80, PortPrefixLen: 16, Verdict: VerdictAllow, Rule: 50},
	}})
	ret, _ := runPolicy(t, dp.objs.SlFromEp, tcpPkt(t, podIP, peerIP, 40000, 80, flags{syn: true}), fromWire)
	require.Equal(t, verdictNext, ret)
	ret, _ = runPolicy(t, dp.objs.SlToEp, tcpPkt(t, peerIP, podIP, 80, 40000, flags{syn: true, ack: true}), fromWire)
	require.Equal(t, verdictNext, ret)
	require.Equal(t, events.VerdictAllow, nextEvent(t, rd).Verdict)

	// A policy change that keeps the connection allowed: it goes on.
	setPolicy(t, dp, EndpointPolicy{Entries: []PolicyEntry{
		{Identity: peerID, Dir: dirOut, Proto: tcp, Verdict: VerdictAllow, Rule: 51},
	}})
	ret, _ = runPolicy(t, dp.objs.SlFromEp, tcpPkt(t, podIP, peerIP, 40000, 80, flags{ack: true}), fromWire)
	require.Equal(t, verdictNext, ret)

	// Revoked: the next packet (a reply, here) is cut. The RST back to
	// its sender is a clone sent into the interface (tc egress: as if
	// the pod had sent it): capture it on lo, where the test runs.
	lo, err := netlink.LinkByIndex(loIfindex)
	require.NoError(t, err)
	require.NoError(t, netlink.LinkSetUp(lo))
	back := capture(t, loIfindex)
	setPolicy(t, dp, EndpointPolicy{})
	reply := serialize(t, peerIP, podIP, layers.IPProtocolTCP, []gopacket.SerializableLayer{
		&layers.TCP{SrcPort: 80, DstPort: 40000, ACK: true, Seq: 7000, Ack: 9000, Window: 1000}, gopacket.Payload("data")})
	ret, out := runPolicy(t, dp.objs.SlToEp, reply, fromWire)
	require.Equal(t, verdictNext, ret, "the packet continues, as an RST")
	tcpL := out.Layer(layers.LayerTypeTCP).(*layers.TCP)
	require.True(t, tcpL.RST, "the pod gets an RST")
	require.Equal(t, netip.AddrPortFrom(peerIP, 80), src(out))
	require.Equal(t, netip.AddrPortFrom(podIP, 40000), dst(out))
	require.Equal(t, uint32(7000), tcpL.Seq, "in the sequence the pod expects")
	requireChecksums(t, out)
	rst := back.next(t, func(p gopacket.Packet) bool {
		l, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		return ok && l.RST && src(p) == netip.AddrPortFrom(podIP, 40000)
	})
	require.Equal(t, netip.AddrPortFrom(peerIP, 80), dst(rst), "the peer, which sent the packet, gets an RST too")
	require.Equal(t, uint32(9000), rst.Layer(layers.LayerTypeTCP).(*layers.TCP).Seq, "at the sequence number it acknowledged")
	requireChecksums(t, rst)
	ev := nextEvent(t, rd)
	require.Equal(t, "POLICY_REVOKED", ev.Reason.String())
	require.Equal(t, events.VerdictDeny, ev.Verdict)
	// The reply's own ends, marked as a reply: the flow is the pod's
	// connection to the peer, not one from the peer.
	require.True(t, ev.Tracked && ev.Reply, "a reply-direction drop is reported as a reply: %+v", ev)
	require.Equal(t, netip.AddrPortFrom(peerIP, 80), ev.Src)
	require.Equal(t, netip.AddrPortFrom(podIP, 40000), ev.Dst)
	require.Equal(t, peerID, ev.SrcIdentity)
	require.Equal(t, podID, ev.DstIdentity)
	require.Empty(t, ctOf(t, dp), "the connection is forgotten")

	// A drop of a connection's first packet is tracked, not a reply.
	ret, _ = runPolicy(t, dp.objs.SlFromEp, tcpPkt(t, podIP, peerIP, 40001, 80, flags{syn: true}), fromWire)
	require.Equal(t, uint32(verdictDrop), ret)
	ev = nextEvent(t, rd)
	require.Equal(t, "POLICY_DENIED", ev.Reason.String())
	require.True(t, ev.Tracked, "%+v", ev)
	require.False(t, ev.Reply, "%+v", ev)
}

// icmpFragNeeded is what a router on the path sends back for a packet
// too big for its next hop: the error embeds the packet's IP header and
// the first 8 bytes of its payload.
func icmpFragNeeded(t testing.TB, from netip.Addr, inner []byte, mtu uint16) []byte {
	ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded), Seq: mtu}
	dst := netip.AddrFrom4([4]byte(inner[14+12 : 14+16]))
	return serialize(t, from, dst, layers.IPProtocolICMPv4, []gopacket.SerializableLayer{ic, gopacket.Payload(inner[14 : 14+28])})
}

// ICMP errors that belong to no tracked connection are new traffic and
// judged by policy, both ways; errors about an allowed connection (path
// MTU, port unreachable) pass as related.
//
//	peer ──(dest unreachable, embedding anything)──► pod   denied: isolated ingress
//	pod  ──(dest unreachable, embedding anything)──► peer  denied: isolated egress
//	pod ──TCP 80──► peer (allowed)   router ──frag needed about it──► pod: related
func TestPolicyICMPErrors(t *testing.T) {
	dp, rd := policyDatapath(t, EPFlagPolicyIngress|EPFlagPolicyEgress)
	setPolicy(t, dp, EndpointPolicy{Entries: []PolicyEntry{
		{Identity: peerID, Dir: dirOut, Proto: tcp, Port: 80, PortPrefixLen: 16, Verdict: VerdictAllow, Rule: 51},
		// Everything from peer3, ICMP included (a rule without ports).
		{Identity: peer3, Dir: dirIn, Verdict: VerdictAllow, Rule: 52},
	}})
	router := netip.MustParseAddr("10.0.0.254")
	drain := func() {
		for {
			rd.SetDeadline(time.Now().Add(20 * time.Millisecond))
			if _, err := rd.Read(); err != nil {
				return
			}
		}
	}

	// Into the isolated pod: an error about a flow the pod never had.
	forged := icmpUnreachable(t, peerIP, udpPkt(t, podIP, worldIP, 5000, 53))
	ret, _ := runPolicy(t, dp.objs.SlToEp, forged, fromWire)
	require.Equal(t, uint32(verdictDrop), ret, "unrelated ICMP error into an isolated pod")
	ev := nextEvent(t, rd)
	require.Equal(t, events.Drop, ev.Type)
	require.Equal(t, "POLICY_DENIED", ev.Reason.String())
	require.Equal(t, uint8(unix.IPPROTO_ICMP), ev.Proto)
	require.Equal(t, peerIP, ev.Src.Addr(), "the event names the error's own sender")
	require.Equal(t, podIP, ev.Dst.Addr())
	require.Equal(t, peerID, ev.SrcIdentity)

	// Out of the pod: bytes smuggled in an error to a peer egress denies.
	smuggled := icmpUnreachable(t, podIP, udpPkt(t, peer3IP, podIP, 5000, 53))
	ret, _ = runPolicy(t, dp.objs.SlFromEp, smuggled, fromWire)
	require.Equal(t, uint32(verdictDrop), ret, "unrelated ICMP error out of a pod under egress policy")
	ev = nextEvent(t, rd)
	require.Equal(t, "POLICY_DENIED", ev.Reason.String())
	require.Equal(t, podIP, ev.Src.Addr())
	require.Equal(t, peer3IP, ev.Dst.Addr())

	// A rule without ports allows ICMP, errors included.
	ret, _ = runPolicy(t, dp.objs.SlToEp, icmpUnreachable(t, peer3IP, udpPkt(t, podIP, worldIP, 5001, 53)), fromWire)
	require.Equal(t, verdictNext, ret, "peer3 may send the pod anything")
	ev = nextEvent(t, rd)
	require.Equal(t, events.VerdictAllow, ev.Verdict)
	require.Equal(t, uint32(52), ev.PolicyRule)

	// Related errors pass: a router's frag-needed about the pod's allowed
	// connection, and the peer's port unreachable about it.
	syn := tcpPkt(t, podIP, peerIP, 40000, 80, flags{syn: true})
	ret, _ = runPolicy(t, dp.objs.SlFromEp, syn, fromWire)
	require.Equal(t, verdictNext, ret)
	drain()
	ret, _ = runPolicy(t, dp.objs.SlToEp, icmpFragNeeded(t, router, syn, 1200), fromWire)
	require.Equal(t, verdictNext, ret, "path MTU discovery works under policy")
	ret, _ = runPolicy(t, dp.objs.SlToEp, icmpUnreachable(t, peerIP, syn), fromWire)
	require.Equal(t, verdictNext, ret, "an error about the allowed connection is related")
	st, err := dp.Maps().Counters()
	require.NoError(t, err)
	var related uint64
	for _, c := range st {
		if c.Metric == "related-icmp" {
			related += c.Packets
		}
	}
	require.Equal(t, uint64(2), related)
}

// Audit mode reports an unrelated ICMP error it would deny, and forwards it.
func TestPolicyICMPErrorsAudit(t *testing.T) {
	dp, rd := policyDatapath(t, EPFlagPolicyIngress|EPFlagPolicyAudit)
	setPolicy(t, dp, EndpointPolicy{})
	ret, _ := runPolicy(t, dp.objs.SlToEp, icmpUnreachable(t, peerIP, udpPkt(t, podIP, worldIP, 5000, 53)), fromWire)
	require.Equal(t, verdictNext, ret)
	ev := nextEvent(t, rd)
	require.Equal(t, events.VerdictAudit, ev.Verdict)
	require.Equal(t, uint8(unix.IPPROTO_ICMP), ev.Proto)
}

// privateNetns moves the test's goroutine, locked to its thread, into a
// new network namespace for the rest of the test, so that packets a
// program really sends (clone redirects) stay in it.
func privateNetns(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	require.NoError(t, err)
	ns, err := netns.New()
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, netns.Set(orig))
		ns.Close()
		orig.Close()
		runtime.UnlockOSThread()
	})
}

// packetTap reads the frames a test's network namespace sees on one
// interface (an AF_PACKET socket).
type packetTap struct{ fd int }

func capture(t *testing.T, ifindex int) *packetTap {
	t.Helper()
	proto := int(raw.Htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	require.NoError(t, unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifindex}))
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	require.NoError(t, unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv))
	return &packetTap{fd: fd}
}

// next returns the first frame matching want, failing after a while.
func (c *packetTap) next(t *testing.T, want func(gopacket.Packet) bool) gopacket.Packet {
	t.Helper()
	buf := make([]byte, 2048)
	for range 20 {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			continue
		}
		p := gopacket.NewPacket(append([]byte(nil), buf[:n]...), layers.LayerTypeEthernet, gopacket.Default)
		if want(p) {
			return p
		}
	}
	require.FailNow(t, "no matching frame captured")
	return nil
}

// --disable-policy-revoke: a policy change judges new connections only;
// an established one keeps flowing both ways.
func TestPolicyRevocationDisabled(t *testing.T) {
	dp := loadTest(t, Config{DisablePolicyRevoke: true})
	m := dp.Maps()
	require.NoError(t, m.PutEndpoint(EndpointEntry{IfIndex: loIfindex, ID: 7, IPv4: podIP, Identity: podID, PolicyFlags: EPFlagPolicyEgress}))
	_, _, err := m.SyncIPCache(map[netip.Prefix]IPCacheEntry{netip.PrefixFrom(peerIP, 32): {Identity: peerID}})
	require.NoError(t, err)
	setPolicy(t, dp, EndpointPolicy{Entries: []PolicyEntry{
		{Identity: peerID, Dir: dirOut, Proto: tcp, Port: 80, PortPrefixLen: 16, Verdict: VerdictAllow, Rule: 50},
	}})
	ret, _ := runPolicy(t, dp.objs.SlFromEp, tcpPkt(t, podIP, peerIP, 40000, 80, flags{syn: true}), fromWire)
	require.Equal(t, verdictNext, ret)
	ret, _ = runPolicy(t, dp.objs.SlToEp, tcpPkt(t, peerIP, podIP, 80, 40000, flags{syn: true, ack: true}), fromWire)
	require.Equal(t, verdictNext, ret)

	setPolicy(t, dp, EndpointPolicy{})
	for range 3 {
		ret, out := runPolicy(t, dp.objs.SlToEp, tcpPkt(t, peerIP, podIP, 80, 40000, flags{ack: true}), fromWire)
		require.Equal(t, verdictNext, ret, "the reply of the established connection passes")
		require.False(t, out.Layer(layers.LayerTypeTCP).(*layers.TCP).RST, "and is not turned into an RST")
		ret, _ = runPolicy(t, dp.objs.SlFromEp, tcpPkt(t, podIP, peerIP, 40000, 80, flags{ack: true}), fromWire)
		require.Equal(t, verdictNext, ret, "its own packets pass")
	}
	ret, _ = runPolicy(t, dp.objs.SlFromEp, tcpPkt(t, podIP, peerIP, 40001, 80, flags{syn: true}), fromWire)
	require.Equal(t, uint32(verdictDrop), ret, "a new connection is judged by the new policy")
	require.Len(t, ctOf(t, dp), 1, "the established connection is still tracked")
}

// A connection the policy denies keeps no state: not its FLOW entry, nor
// the SERVICE entry that pinned its backend. Otherwise a packet from the
// VIP (its hairpin reply path) walked in past the ingress policy, and a pod
// retrying a denied service filled the table with SERVICE entries.
// (Found by FuzzPrograms.)
//
//	pod ──SYN──► 10.96.0.12:80 (backend: the pod itself)   denied by egress policy
//	10.96.0.12:80 ──SYN-ACK──► pod                            must be denied too
func TestPolicyDeniedServiceConnectionKeepsNoState(t *testing.T) {
	dp, _ := policyDatapath(t, EPFlagPolicyIngress|EPFlagPolicyEgress)
	setPolicy(t, dp, EndpointPolicy{})
	hairpinVIP := netip.MustParseAddr("10.96.0.12")
	putService(t, dp, 3, netip.AddrPortFrom(hairpinVIP, 80), tcp, 0, netip.AddrPortFrom(podIP, 8080))
	putService(t, dp, 4, netip.AddrPortFrom(vip, 80), tcp, 0, netip.AddrPortFrom(peerIP, 8080))

	ret, _ := runPolicy(t, dp.objs.SlFromEp, tcpPkt(t, podIP, hairpinVIP, 40002, 80, flags{syn: true}), fromWire)
	require.Equal(t, uint32(verdictDrop), ret, "egress denied")
	ret, _ = runPolicy(t, dp.objs.SlToEp, tcpPkt(t, hairpinVIP, podIP, 80, 40002, flags{syn: true, ack: true}), fromWire)
	require.Equal(t, uint32(verdictDrop), ret, "a packet from the VIP is no reply of a denied connection")

	for sport := uint16(41000); sport < 41010; sport++ {
		ret, _ = runPolicy(t, dp.objs.SlFromEp, tcpPkt(t, podIP, vip, sport, 80, flags{syn: true}), fromWire)
		require.Equal(t, uint32(verdictDrop), ret)
	}
	require.Empty(t, ctOf(t, dp), "denied connections leave no CT entry of either scope")
}

var (
	skbCtxOnce sync.Once
	skbCtxErr  error
)

// requireSkbContext skips a test that needs BPF_PROG_TEST_RUN to take an skb context: where a
// packet came in (ingress_ifindex) decides the host identity, and kernels
// before 5.11 refuse a context with it (EINVAL). The programs themselves
// do not depend on it.
func requireSkbContext(t *testing.T, prog *ebpf.Program) {
	t.Helper()
	skbCtxOnce.Do(func() {
		_, skbCtxErr = prog.Run(&ebpf.RunOptions{Data: arpPkt(t), Context: SkbContext{IngressIfindex: loIfindex}})
	})
	if errors.Is(skbCtxErr, unix.EINVAL) {
		t.Skip("BPF_PROG_TEST_RUN takes no skb context (ingress_ifindex) on this kernel (Linux 5.11+): the packet's origin cannot be set in a test run")
	}
}

// Reading an endpoint's policy back while the agent swaps in a new one:
// the inner map the outer entry named may be freed between the lookup and
// its opening (tests/apiserver's CI run met it: "policy map of endpoint 7:
// no such file or directory"). A reader sees the old policy or the new
// one, never an error.
func TestDumpEndpointPolicyWhileItIsReplaced(t *testing.T) {
	dp := loadTest(t, Config{})
	m := dp.Maps()
	policy := func(port uint16) EndpointPolicy {
		return EndpointPolicy{Entries: []PolicyEntry{{Identity: peerID, Dir: 1, Proto: 6, Port: port, PortPrefixLen: 16, Verdict: VerdictAllow}},
			CIDRs: []PolicyCIDR{{Dir: 1, Class: 3, Prefix: netip.MustParsePrefix("198.51.100.0/24")}}}
	}
	require.NoError(t, m.WriteEndpointPolicy(7, policy(1)))
	done := make(chan error, 1)
	go func() {
		var err error
		for i := range 300 {
			if err = m.WriteEndpointPolicy(7, policy(uint16(i%2+1))); err != nil {
				break
			}
		}
		done <- err
	}()
	reads, failures := 0, 0
	var last error
	for writing := true; writing; reads++ {
		select {
		case err := <-done:
			require.NoError(t, err)
			writing = false
		default:
		}
		p, err := m.DumpEndpointPolicy(7)
		if err != nil {
			failures, last = failures+1, err
			continue
		}
		require.Len(t, p.Entries, 1)
		ids, err := m.PolicyEndpoints()
		if err != nil {
			failures, last = failures+1, err
			continue
		}
		require.Equal(t, []uint32{7}, ids)
	}
	require.Zero(t, failures, "%d of %d reads failed, the last with: %v", failures, reads, last)
}
