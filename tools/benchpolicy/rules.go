package main

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/sluice-net/sluice/pkg/datapath"
)

// rule is one allow rule of the server pod's ingress policy, the common
// input every variant is generated from, so that all enforce the same
// thing. Port ranges are port prefixes, which is how Sluice's policy maps
// hold them; iptables and nftables express such aligned ranges exactly.
type rule struct {
	// Peer is a pod's /32 (a peer identity) or an ipBlock CIDR.
	Peer netip.Prefix
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
	fillerBase = netip.MustParseAddr("10.200.0.0")
	// ipBlockBase is where the fillers' ipBlock CIDRs are.
	ipBlockBase = netip.MustParseAddr("172.16.0.0")
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
// address, tcp serverPort) is first, in the middle or last (at).
func genRules(n int, client netip.Addr, serverPort uint16, at string) ruleSet {
	var rs ruleSet
	ports := []struct {
		proto uint8
		port  uint16
	}{{protoTCP, 80}, {protoTCP, 443}, {protoTCP, 8080}, {protoUDP, 53}}
	fillers := n - 1
	for slot := 0; len(rs.Rules) < fillers; slot++ {
		if slot%5 == 1 {
			k := slot / 5
			rs.Rules = append(rs.Rules, rule{Peer: netip.PrefixFrom(nthAddr(ipBlockBase, k*256), 24),
				Identity: cidrClassBase + uint32(k), Proto: protoTCP, Port: 443, PortBits: 16})
			rs.CIDRClasses++
			continue
		}
		peer := netip.PrefixFrom(nthAddr(fillerBase, slot+1), 32)
		id := fillerIdentity + uint32(slot)
		for _, p := range ports {
			if len(rs.Rules) < fillers {
				rs.Rules = append(rs.Rules, rule{Peer: peer, Identity: id, Proto: p.proto, Port: p.port, PortBits: 16})
			}
		}
		if slot%4 == 0 && len(rs.Rules) < fillers {
			rs.Rules = append(rs.Rules, rule{Peer: peer, Identity: id, Proto: protoTCP, Port: 8192, PortBits: 8})
			rs.PortRanges++
		}
	}
	allowed := rule{Peer: netip.PrefixFrom(client, 32), Identity: clientIdentity, Proto: protoTCP, Port: serverPort, PortBits: 16}
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
// ipcache entries of the fillers' peers.
func (rs ruleSet) sluicePolicy() (datapath.EndpointPolicy, map[netip.Prefix]datapath.IPCacheEntry) {
	var p datapath.EndpointPolicy
	ipc := map[netip.Prefix]datapath.IPCacheEntry{}
	for i, r := range rs.Rules {
		if r.Identity >= cidrClassBase {
			p.CIDRs = append(p.CIDRs, datapath.PolicyCIDR{Dir: dirIn, Prefix: r.Peer, Class: r.Identity})
		} else {
			ipc[r.Peer] = datapath.IPCacheEntry{Identity: r.Identity}
		}
		p.Entries = append(p.Entries, datapath.PolicyEntry{Identity: r.Identity, Dir: dirIn, Proto: r.Proto,
			Port: r.Port, PortPrefixLen: r.PortBits, Verdict: datapath.VerdictAllow, Rule: uint32(i + 1)})
	}
	return p, ipc
}

// iptablesChain is the server's ingress chain, named after its host-side
// veth as Calico names its to-workload chains.
func iptablesChain(serverIf string) string { return "BENCH-TW-" + serverIf }

// iptablesRules is the filter table for iptables-restore: FORWARD accepts
// packets of established connections first (so only a connection's first
// packet meets the policy), then sends what goes out of the server's veth
// through the server's chain: one ACCEPT per rule, then DROP.
func iptablesRules(rs ruleSet, serverIf string) string {
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
		fmt.Fprintf(&b, "-A %s -s %s -p %s -m %s --dport %s -j ACCEPT\n", chain, r.Peer, r.protoName(), r.protoName(), ports)
	}
	fmt.Fprintf(&b, "-A %s -j DROP\nCOMMIT\n", chain)
	return b.String()
}

// iptablesEmpty empties the filter table (restore without --noflush
// flushes every chain and deletes user chains).
const iptablesEmpty = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"

// nftTable is the nftables variant's table.
const nftTable = "benchpolicy"

// nftRules is the nftables variant for nft -f: one interval set of
// (address . protocol . port) elements (prefixes and port ranges are
// intervals, so one set holds every rule) and one rule that looks the
// packet up in it; established connections are accepted first, as above.
func nftRules(rs ruleSet, serverIf string) string {
	var b strings.Builder
	b.Grow(len(rs.Rules) * 40)
	fmt.Fprintf(&b, `table ip %s {
	set allowed {
		type ipv4_addr . inet_proto . inet_service
		flags interval
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state established,related accept
		oifname %q jump ingress-server
	}
	chain ingress-server {
		ip saddr . meta l4proto . th dport @allowed accept
		drop
	}
}
`, nftTable, serverIf)
	fmt.Fprintf(&b, "add element ip %s allowed {\n", nftTable)
	for i, r := range rs.Rules {
		ports := fmt.Sprint(r.Port)
		if r.PortBits < 16 {
			ports = fmt.Sprintf("%d-%d", r.Port, r.lastPort())
		}
		sep := ","
		if i == len(rs.Rules)-1 {
			sep = ""
		}
		fmt.Fprintf(&b, "\t%s . %s . %s%s\n", r.Peer, r.protoName(), ports, sep)
	}
	b.WriteString("}\n")
	return b.String()
}

func nthAddr(base netip.Addr, i int) netip.Addr {
	a := base.As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) + uint32(i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
