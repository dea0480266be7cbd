package main

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strings"

	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

// svcSpec is one ClusterIP service port and its endpoints: the common input
// of every variant's configuration (Sluice manifests, kube-proxy iptables
// rules, kube-proxy nftables rules), so all variants program the same thing.
type svcSpec struct {
	Namespace, Name string
	VIP             netip.Addr
	Port            uint16
	Endpoints       []netip.AddrPort
	// Pod names the real backend pod (namespace/name) of the target
	// service's endpoints; empty for fillers.
	PodNamespace, PodName, NodeName string
}

// portName is kube-proxy's ServicePortName string, "ns/name:port".
func (s svcSpec) portName() string { return s.Namespace + "/" + s.Name + ":http" }

// ipFamily is what differs between the IPv4 and the IPv6 rendition of the
// same services: their addresses, and the commands and names kube-proxy
// uses for each (it programs the families separately: iptables and
// ip6tables, table ip and table ip6).
type ipFamily struct {
	benchkit.Family
	// serviceBase is where the VIPs are; fillerBase where fillers' fake
	// endpoints live: a range no route leads to, never contacted (only
	// the target service is used).
	serviceBase, fillerBase netip.Addr
	// clusterCIDR is the pod range kube-proxy is told about
	// (--cluster-cidr): traffic from outside it to a service is marked
	// for masquerade.
	clusterCIDR string
	// loopback is what kube-proxy's NodePort rule leaves out.
	loopback string
	// addressType is the EndpointSlice addressType and the Service's
	// ipFamilies entry.
	addressType string
}

var (
	familyIPv4 = ipFamily{Family: benchkit.IPv4, serviceBase: netip.MustParseAddr("10.96.0.0"), fillerBase: netip.MustParseAddr("10.128.0.0"),
		clusterCIDR: "10.244.0.0/16", loopback: "127.0.0.0/8", addressType: "IPv4"}
	// The harness gives node N the IPv6 pod range fd00:10:244:N::/64.
	familyIPv6 = ipFamily{Family: benchkit.IPv6, serviceBase: netip.MustParseAddr("fd00:96::"), fillerBase: netip.MustParseAddr("fd00:128::"),
		clusterCIDR: "fd00:10:244::/48", loopback: "::1", addressType: "IPv6"}
)

// familyNamed is the family of that name (benchkit.Families).
func familyNamed(name string) ipFamily {
	if name == familyIPv6.Name {
		return familyIPv6
	}
	return familyIPv4
}

// genServices returns n services bench/svc-NNNNN of family fam with VIPs
// 10.96.0.1... or fd00:96::1... port 80, each with eps endpoints. The last
// one is the target, backed by target (the real backend pod); the others
// are fillers with fake endpoints. The target is last so that kube-proxy's
// KUBE-SERVICES chain, matched rule by rule, reaches it only after every
// filler: the worst case iptables users hit. Two families' services of the
// same n are the same services, index by index: one dual-stack Service
// each in sluiceManifest.
func genServices(fam ipFamily, n, eps int, target netip.AddrPort, podNS, podName, node string) []svcSpec {
	out := make([]svcSpec, n)
	k := 0
	for i := range n {
		s := svcSpec{Namespace: "bench", Name: fmt.Sprintf("svc-%05d", i), VIP: benchkit.NthAddr(fam.serviceBase, i+1), Port: 80}
		if i == n-1 && podName != "" {
			s.Endpoints = []netip.AddrPort{target}
			s.PodNamespace, s.PodName, s.NodeName = podNS, podName, node
		} else {
			for range eps {
				k++
				s.Endpoints = append(s.Endpoints, netip.AddrPortFrom(benchkit.NthAddr(fam.fillerBase, k), 8080))
			}
		}
		out[i] = s
	}
	return out
}

// chainHash is kube-proxy's chain name suffix: base32 of the SHA-256 of
// the name, 16 characters (servicePortChainName and friends).
func chainHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(h[:])[:16]
}

// sluiceManifest is the services as Service + EndpointSlice documents, the
// way the API server and the EndpointSlice controller hold them, for the
// agent's --source=files. byFamily holds the services of each family
// (genServices), all of the same length: service i has a cluster IP of
// each family, the first family's being spec.clusterIP (RequireDualStack
// with two), and an EndpointSlice per family.
func sluiceManifest(fams []ipFamily, byFamily [][]svcSpec) string {
	var b strings.Builder
	b.Grow(len(byFamily) * len(byFamily[0]) * 700)
	policy := "SingleStack"
	if len(fams) > 1 {
		policy = "RequireDualStack"
	}
	for i, s := range byFamily[0] {
		if i > 0 {
			b.WriteString("---\n")
		}
		var vips, families []string
		for f := range fams {
			vips = append(vips, byFamily[f][i].VIP.String())
			families = append(families, fams[f].addressType)
		}
		fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  clusterIP: %s\n  clusterIPs: [%s]\n  ipFamilies: [%s]\n  ipFamilyPolicy: %s\n  ports:\n  - name: http\n    port: %d\n    targetPort: 8080\n    protocol: TCP\n",
			s.Name, s.Namespace, s.VIP, strings.Join(vips, ", "), strings.Join(families, ", "), policy, s.Port)
		for f, fam := range fams {
			s := byFamily[f][i]
			fmt.Fprintf(&b, "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: %s-%s\n  namespace: %s\n  labels:\n    kubernetes.io/service-name: %s\naddressType: %s\nports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n",
				s.Name, fam.Name, s.Namespace, s.Name, fam.addressType)
			for _, e := range s.Endpoints {
				fmt.Fprintf(&b, "- addresses: [%s]\n  conditions: {ready: true, serving: true, terminating: false}\n", e.Addr())
				if s.PodName != "" {
					fmt.Fprintf(&b, "  nodeName: %s\n  targetRef: {kind: Pod, namespace: %s, name: %s}\n", s.NodeName, s.PodNamespace, s.PodName)
				}
			}
		}
	}
	return b.String()
}

// iptablesRules is the nat table kube-proxy's iptables mode writes for
// svcs of family fam (kube-proxy 1.28+ shape, --cluster-cidr set, no
// NodePorts), as iptables-restore (IPv4) or ip6tables-restore (IPv6)
// input, the same rules in both. It replaces the whole nat table.
//
//	PREROUTING/OUTPUT → KUBE-SERVICES: one rule per service port,
//	  -d VIP/32 (/128) -p tcp --dport P → KUBE-SVC-<hash>
//	KUBE-SVC-*: traffic from outside the cluster CIDR → KUBE-MARK-MASQ,
//	  then per endpoint "-m statistic --mode random --probability 1/(n-i)"
//	  → KUBE-SEP-<hash> (the last endpoint unconditionally)
//	KUBE-SEP-*: hairpin (from the endpoint itself) → KUBE-MARK-MASQ, DNAT
//	POSTROUTING → KUBE-POSTROUTING: masquerade what is marked
func iptablesRules(fam ipFamily, svcs []svcSpec) string {
	var chains, rules strings.Builder
	chains.Grow(len(svcs) * 200)
	rules.Grow(len(svcs) * 800)
	chains.WriteString("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n" +
		":KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n")
	rules.WriteString(`-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
`)
	var svcRules strings.Builder
	for _, s := range svcs {
		pn := s.portName()
		svc := "KUBE-SVC-" + chainHash(pn+"tcp")
		fmt.Fprintf(&chains, ":%s - [0:0]\n", svc)
		fmt.Fprintf(&rules, "-A KUBE-SERVICES -m comment --comment \"%s cluster IP\" -m tcp -p tcp -d %s/%d --dport %d -j %s\n", pn, s.VIP, fam.HostBits, s.Port, svc)
		fmt.Fprintf(&svcRules, "-A %s -m comment --comment \"%s cluster IP\" -m tcp -p tcp -d %s/%d --dport %d ! -s %s -j KUBE-MARK-MASQ\n", svc, pn, s.VIP, fam.HostBits, s.Port, fam.clusterCIDR)
		n := len(s.Endpoints)
		for i, e := range s.Endpoints {
			sep := "KUBE-SEP-" + chainHash(pn+"tcp"+e.String())
			fmt.Fprintf(&chains, ":%s - [0:0]\n", sep)
			if i < n-1 {
				fmt.Fprintf(&svcRules, "-A %s -m comment --comment \"%s -> %s\" -m statistic --mode random --probability %.10f -j %s\n", svc, pn, e, 1/float64(n-i), sep)
			} else {
				fmt.Fprintf(&svcRules, "-A %s -m comment --comment \"%s -> %s\" -j %s\n", svc, pn, e, sep)
			}
			fmt.Fprintf(&svcRules, "-A %s -m comment --comment %s -s %s/%d -j KUBE-MARK-MASQ\n", sep, pn, e.Addr(), fam.HostBits)
			fmt.Fprintf(&svcRules, "-A %s -m comment --comment %s -m tcp -p tcp -j DNAT --to-destination %s\n", sep, pn, e)
		}
	}
	// kube-proxy's last KUBE-SERVICES rule: NodePorts, only for local
	// destinations, after every service rule.
	rules.WriteString("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n")
	return chains.String() + rules.String() + svcRules.String() + "COMMIT\n"
}

// iptablesEmpty is an iptables-restore input that empties the nat table
// (restore without --noflush flushes every chain and deletes user chains).
const iptablesEmpty = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n"

// nftTable is the table kube-proxy's nftables mode owns.
const nftTable = "kube-proxy"

// nftRules is kube-proxy's nftables mode (1.31+ shape, NAT part) for svcs
// of family fam, as `nft -f` input (table ip or ip6 kube-proxy, the same
// rules in both): one verdict map keyed by daddr . l4proto . dport gives
// the per-service chain in one lookup whatever the number of services; the
// service chain picks an endpoint chain with numgen random mod n, which
// DNATs.
func nftRules(fam ipFamily, svcs []svcSpec) string {
	var b strings.Builder
	b.Grow(len(svcs) * 900)
	fmt.Fprintf(&b, `add table %[2]s %[1]s { comment "rules for kube-proxy" ; }
flush table %[2]s %[1]s
table %[2]s %[1]s {
	chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; jump services; }
	chain nat-output { type nat hook output priority -100; policy accept; jump services; }
	chain nat-postrouting { type nat hook postrouting priority srcnat; policy accept; jump masquerading; }
	chain mark-for-masquerade { meta mark set meta mark | 0x4000; }
	chain masquerading {
		meta mark & 0x4000 == 0 return
		meta mark set meta mark ^ 0x4000
		masquerade fully-random
	}
	map service-ips { type %[3]s . inet_proto . inet_service : verdict; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic"; }
	map service-nodeports { type inet_proto . inet_service : verdict; comment "NodePort traffic"; }
	chain services {
		%[2]s daddr . meta l4proto . th dport vmap @service-ips
		fib daddr type local %[2]s daddr != %[4]s meta l4proto . th dport vmap @service-nodeports
	}
`, nftTable, fam.Nft, fam.NftAddr, fam.loopback)
	var elems strings.Builder
	for _, s := range svcs {
		pn := s.Namespace + "/" + s.Name + "/tcp/http"
		svc := "service-" + chainHash(pn)[:8] + "-" + pn
		fmt.Fprintf(&b, "\tchain %s {\n\t\t%s daddr %s tcp dport %d %s saddr != %s jump mark-for-masquerade\n\t\tnumgen random mod %d vmap { ", svc, fam.Nft, s.VIP, s.Port, fam.Nft, fam.clusterCIDR, len(s.Endpoints))
		var epChains strings.Builder
		for i, e := range s.Endpoints {
			// Chain names cannot hold an IPv6 address's colons: dots
			// stand in for them, as in kube-proxy's names.
			ep := "endpoint-" + chainHash(pn + e.String())[:8] + "-" + pn + "__" + strings.ReplaceAll(e.Addr().String(), ":", ".") + "/" + fmt.Sprint(e.Port())
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%d : goto %s", i, ep)
			fmt.Fprintf(&epChains, "\tchain %s {\n\t\t%s saddr %s jump mark-for-masquerade\n\t\tmeta l4proto tcp dnat to %s\n\t}\n", ep, fam.Nft, e.Addr(), e)
		}
		b.WriteString(" }\n\t}\n")
		b.WriteString(epChains.String())
		if elems.Len() > 0 {
			elems.WriteString(",\n\t\t")
		}
		fmt.Fprintf(&elems, "%s . tcp . %d : goto %s", s.VIP, s.Port, svc)
	}
	b.WriteString("}\n")
	if elems.Len() > 0 {
		fmt.Fprintf(&b, "add element %s %s service-ips {\n\t\t%s\n}\n", fam.Nft, nftTable, elems.String())
	}
	return b.String()
}
