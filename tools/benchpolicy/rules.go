package main

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

// rule is one allow rule of the server pod's ingress policy, the common
// input every variant is generated from, so that all enforce the same
// thing. Port ranges are port prefixes, which is how Sluice's policy maps
// hold them; iptables and nftables express such aligned ranges exactly.
type rule struct {
	// Peer is a pod's /32 (a peer identity) or an ipBlock CIDR; Peer6 the
	// pod's IPv6 /128 or the ipBlock's IPv6 CIDR (a dual-stack pod, an
	// ipBlock of each family in the same class), invalid when IPv6 is not
	// measured.
	Peer, Peer6 netip.Prefix
	// Identity is the pod's identity; for an ipBlock, the CIDR class.
	Identity uint32
	Proto    uint8 // 6 tcp, 17 udp
	Port     uint16
	PortBits uint8 // 16: one port; fewer: a range of 2^(16-PortBits) ports
}

const (
	protoTCP = 6
	protoUDP = 17
	dirIn    = 1
)

func (r rule) lastPort() uint16 { return r.Port | uint16(0xffff>>r.PortBits) }

func (r rule) protoName() string {
	if r.Proto == protoUDP {
		return "udp"
	}
	return "tcp"
}

// ruleSet is the server's ingress policy.
type ruleSet struct {
	Rules []rule
	// Allowed is the index of the client's rule.
	Allowed int
	// CIDRClasses counts ipBlock rules, PortRanges rules with a port range.
	CIDRClasses, PortRanges int
}

var (
	// fillerBase is where the fillers' peer pods live: a range no route
	// leads to, never contacted; only the client connects.
	fillerBase, fillerBase6 = netip.MustParseAddr("10.200.0.0"), netip.MustParseAddr("fd00:200::")
	// ipBlockBase is where the fillers' ipBlock CIDRs are: 172.16.k.0/24,
	// and fd00:172:16:k::/64 for IPv6.
	ipBlockBase, ipBlockBase6 = netip.MustParseAddr("172.16.0.0"), netip.MustParseAddr("fd00:172:16::")
)

// Identities: the pods of the benchmark, the fillers' peers, and CIDR
// classes (per-endpoint, from identity.LocalCIDRBase).
const (
	clientIdentity   = 10001
	serverIdentity   = 10002
	intruderIdentity = 10003
	fillerIdentity   = 100000
	cidrClassBase    = 1 << 24
)

// genRules returns n rules shaped like compiled NetworkPolicies: peer
// identities with four ports each (tcp 80, 443, 8080, udp 53), a port
// range (tcp 8192-8447) for every fourth identity, and ipBlock CIDRs
// (172.16.k.0/24, tcp 443) for one slot in five; the client's rule (its
// address, tcp serverPort) is first, in the middle or last (at). With a
// valid client6 (IPv6 measured) every rule has its IPv6 peer too: the
// fillers' pods fd00:200::N, the ipBlocks fd00:172:16:k::/64, the client
// client6.
func genRules(n int, client, client6 netip.Addr, serverPort uint16, at string) ruleSet {
	var rs ruleSet
	ports := []struct {
		proto uint8
		port  uint16
	}{{protoTCP, 80}, {protoTCP, 443}, {protoTCP, 8080}, {protoUDP, 53}}
	fillers := n - 1
	for slot := 0; len(rs.Rules) < fillers; slot++ {
		if slot%5 == 1 {
			k := slot / 5
			r := rule{Peer: netip.PrefixFrom(benchkit.NthAddr(ipBlockBase, k*256), 24),
				Identity: cidrClassBase + uint32(k), Proto: protoTCP, Port: 443, PortBits: 16}
			if client6.IsValid() {
				net6 := ipBlockBase6.As16()
				binary.BigEndian.PutUint16(net6[6:], uint16(k))
				r.Peer6 = netip.PrefixFrom(netip.AddrFrom16(net6), 64)
			}
			rs.Rules = append(rs.Rules, r)
			rs.CIDRClasses++
			continue
		}
		peer := netip.PrefixFrom(benchkit.NthAddr(fillerBase, slot+1), 32)
		var peer6 netip.Prefix
		if client6.IsValid() {
			peer6 = netip.PrefixFrom(benchkit.NthAddr(fillerBase6, slot+1), 128)
		}
		id := fillerIdentity + uint32(slot)
		for _, p := range ports {
			if len(rs.Rules) < fillers {
				rs.Rules = append(rs.Rules, rule{Peer: peer, Peer6: peer6, Identity: id, Proto: p.proto, Port: p.port, PortBits: 16})
			}
		}
		if slot%4 == 0 && len(rs.Rules) < fillers {
			rs.Rules = append(rs.Rules, rule{Peer: peer, Peer6: peer6, Identity: id, Proto: protoTCP, Port: 8192, PortBits: 8})
			rs.PortRanges++
		}
	}
	allowed := rule{Peer: netip.PrefixFrom(client, 32), Identity: clientIdentity, Proto: protoTCP, Port: serverPort, PortBits: 16}
	if client6.IsValid() {
		allowed.Peer6 = netip.PrefixFrom(client6, 128)
	}
	switch at {
	case "first":
		rs.Allowed = 0
	case "middle":
		rs.Allowed = len(rs.Rules) / 2
	default:
		rs.Allowed = len(rs.Rules)
	}
	rs.Rules = slices.Insert(rs.Rules, rs.Allowed, allowed)
	return rs
}

// sluicePolicy is the rules as the server endpoint's policy maps, and the
// ipcache entries of the fillers' peers, of both families when the rules
// have IPv6 peers. Entries name identities, so they serve both families;
// an ipBlock class has a CIDR of each.
func (rs ruleSet) sluicePolicy() (datapath.EndpointPolicy, map[netip.Prefix]datapath.IPCacheEntry) {
	var p datapath.EndpointPolicy
	ipc := map[netip.Prefix]datapath.IPCacheEntry{}
	cidrs := map[netip.Prefix]bool{}
	for i, r := range rs.Rules {
		for _, peer := range []netip.Prefix{r.Peer, r.Peer6} {
			switch {
			case !peer.IsValid():
			case r.Identity >= cidrClassBase && !cidrs[peer]:
				cidrs[peer] = true
				p.CIDRs = append(p.CIDRs, datapath.PolicyCIDR{Dir: dirIn, Prefix: peer, Class: r.Identity})
			case r.Identity < cidrClassBase:
				ipc[peer] = datapath.IPCacheEntry{Identity: r.Identity}
			}
		}
		p.Entries = append(p.Entries, datapath.PolicyEntry{Identity: r.Identity, Dir: dirIn, Proto: r.Proto,
			Port: r.Port, PortPrefixLen: r.PortBits, Verdict: datapath.VerdictAllow, Rule: uint32(i + 1)})
	}
	return p, ipc
}

// iptablesChain is the server's ingress chain, named after its host-side
// veth as Calico names its to-workload chains.
func iptablesChain(serverIf string) string { return "BENCH-TW-" + serverIf }

// peerOf is r's peer in family fam.
func (r rule) peerOf(fam benchkit.Family) netip.Prefix {
	if fam == benchkit.IPv6 {
		return r.Peer6
	}
	return r.Peer
}

// iptablesRules is the filter table for iptables-restore or
// ip6tables-restore (fam's): FORWARD accepts packets of established
// connections first (so only a connection's first packet meets the
// policy), then sends what goes out of the server's veth through the
// server's chain: one ACCEPT per rule, then DROP. Both families have the
// same rules, of their own peers.
func iptablesRules(rs ruleSet, serverIf string, fam benchkit.Family) string {
	chain := iptablesChain(serverIf)
	var b strings.Builder
	b.Grow(len(rs.Rules) * 80)
	fmt.Fprintf(&b, "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:%s - [0:0]\n", chain)
	b.WriteString("-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n")
	fmt.Fprintf(&b, "-A FORWARD -o %s -j %s\n", serverIf, chain)
	for _, r := range rs.Rules {
		ports := fmt.Sprint(r.Port)
		if r.PortBits < 16 {
			ports = fmt.Sprintf("%d:%d", r.Port, r.lastPort())
		}
		fmt.Fprintf(&b, "-A %s -s %s -p %s -m %s --dport %s -j ACCEPT\n", chain, r.peerOf(fam), r.protoName(), r.protoName(), ports)
	}
	fmt.Fprintf(&b, "-A %s -j DROP\nCOMMIT\n", chain)
	return b.String()
}

// iptablesEmpty empties the filter table (restore without --noflush
// flushes every chain and deletes user chains).
const iptablesEmpty = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"

// nftTable is the nftables variant's table.
const nftTable = "benchpolicy"

// nftRules is the nftables variant for nft -f, table ip or ip6 (fam's):
// one interval set of (address . protocol . port) elements (prefixes and
// port ranges are intervals, so one set holds every rule) and one rule
// that looks the packet up in it; established connections are accepted
// first, as above.
func nftRules(rs ruleSet, serverIf string, fam benchkit.Family) string {
	var b strings.Builder
	b.Grow(len(rs.Rules) * 40)
	fmt.Fprintf(&b, `table %[3]s %[1]s {
	set allowed {
		type %[4]s . inet_proto . inet_service
		flags interval
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state established,related accept
		oifname %[2]q jump ingress-server
	}
	chain ingress-server {
		%[3]s saddr . meta l4proto . th dport @allowed accept
		drop
	}
}
`, nftTable, serverIf, fam.Nft, fam.NftAddr)
	fmt.Fprintf(&b, "add element %s %s allowed {\n", fam.Nft, nftTable)
	for i, r := range rs.Rules {
		ports := fmt.Sprint(r.Port)
		if r.PortBits < 16 {
			ports = fmt.Sprintf("%d-%d", r.Port, r.lastPort())
		}
		sep := ","
		if i == len(rs.Rules)-1 {
			sep = ""
		}
		fmt.Fprintf(&b, "\t%s . %s . %s%s\n", r.peerOf(fam), r.protoName(), ports, sep)
	}
	b.WriteString("}\n")
	return b.String()
}
