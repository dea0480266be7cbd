package datapath

// The cost of ingress policy in sl_to_ep, through BPF_PROG_TEST_RUN:
//
//	peer 10.0.0.2 fd00::2 (identity 2000: tcp/8080 and udp/53 allowed) ─┐
//	peer 10.0.0.3 fd00::3 (identity 3000: no rule, denied)             ─┼─ sl_to_ep ─► pod 10.0.0.1 fd00::1 (endpoint 7)
//	                                                                     │
//	  "pol":   a datapath whose endpoint has n policy entries, ingress enforced
//	  "nopol": a second datapath, same programs and ipcache, endpoint flags 0
//	  "noop":  a program that only returns TC_ACT_UNSPEC
//
// The three are measured in one loop, so the ratios compare runs made
// under the same machine conditions; IPv4 and IPv6 packets too, against
// the same policy entries (they name identities) and a dual-stack ipcache.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/datapath/events"
)

// Ports the benchmark's connections use on the pod.
const (
	benchTCPPort = 8080
	benchUDPPort = 53
)

// BenchmarkPolicy measures sl_to_ep (the pod's ingress) deciding new
// connections with n entries in the endpoint's policy maps (n from
// SLUICE_BENCH_POLICY_SCALES, default 10, 1000, 10000), against the same
// program with no policy on the endpoint (flags 0) and a no-op program, all
// in the same loop, one BPF_PROG_TEST_RUN with repeat=1 per sample:
//
//   - syn:  a SYN from the allowed peer to tcp/8080: a new connection,
//     decided by the policy (three LPM lookups: identity, CIDR class, any
//     peer) and remembered in its new CT entry.
//   - udp:  a first datagram from the allowed peer to udp/53, likewise.
//   - deny: a SYN from a peer no rule allows: every lookup misses, the CT
//     entry just created is deleted again and the drop is reported.
//   - est:  an ACK of an admitted connection: a CT hit, the decision is
//     not made again (the policy revision is unchanged).
//
// Every syn and udp sample is a new connection: the source port walks a
// range, one port per iteration, so every tuple is unused, and CT is
// emptied (untimed) before the range wraps, so no SYN ever meets the
// closed entry of an earlier one. A denied SYN leaves no CT entry, so its
// fixed tuple is new every time. Repeat=1 because the kernel reruns one skb
// for repeats: every repeat after the first would find the CT entry the
// first made and measure an established packet.
//
// The kernel times the program run alone; every repeat=1 sample carries
// the same few tens of ns of clock reads, in the baseline too, which is why
// the ratios (x-noop, x-nopol) are the figures to compare. Medians are
// reported, with the interquartile range, since single samples catch
// interrupts on a busy machine. The order of the eight runs rotates every
// iteration, so none always runs with a cache the previous one warmed.
//
// The entries are shaped like compiled NetworkPolicies: identities of four
// ports each (tcp 80, 443, 8080, udp 53), a port range (tcp 8192-8447) for
// every fourth identity, and ipBlock CIDR classes (172.16.k.0/24, tcp 443)
// for one identity slot in five; the ipcache holds every identity's address.
// The allowed peer's two entries sit in the middle of the list; a trie
// lookup does not depend on where an entry was written.
//
// With IPv6 (the default), every identity also has an IPv6 address in the
// ipcache (fd00:200::/64), every ipBlock class an IPv6 CIDR as well
// (fd00:172:16:k::/64), the pod and the peers their IPv6 addresses, and the
// four packet kinds are measured for IPv6 too, in the same loop: metrics
// syn6-pol-…, udp6-…, deny6-…, est6-…, and <kind>6-x-ipv4, the IPv6 median
// over the IPv4 one. N counts policy entries, the same for both families:
// the ipcache and the CIDR trie hold one address or prefix per family.
//
//	go test -run '^$' -bench Policy -benchtime 20000x ./pkg/datapath/
//
// SLUICE_BENCH_POLICY_FAMILIES picks the families ("ipv4,ipv6"; "ipv4"
// alone is the benchmark as it was before IPv6, with an IPv4-only ipcache).
func BenchmarkPolicy(b *testing.B) {
	scales := []int{10, 1_000, 10_000}
	if s := os.Getenv("SLUICE_BENCH_POLICY_SCALES"); s != "" {
		scales = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			require.NoError(b, err, "SLUICE_BENCH_POLICY_SCALES")
			require.GreaterOrEqual(b, n, 2, "SLUICE_BENCH_POLICY_SCALES: the allowed peer alone has 2 entries")
			scales = append(scales, n)
		}
	}
	fams := benchFamilies(b, "SLUICE_BENCH_POLICY_FAMILIES")
	logVerifierCounts(b)
	for _, n := range scales {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) { benchPolicyScale(b, n, fams) })
	}
}

// policyBenchConfig leaves CT room for two windows of new connections (tcp
// and udp per iteration) and the policy maps room for the largest scale.
func policyBenchConfig(root string) Config {
	return Config{BPFRoot: root, CTMax: 262144, PolicyMapMax: 16384, IPCacheMax: 65536}
}

// policyBenchState returns n ingress entries for endpoint 7 (see
// BenchmarkPolicy for their shape), including the allowed peer's two, and
// the ipcache that goes with them, with IPv6 addresses and CIDRs beside
// the IPv4 ones when ipv6 is set.
func policyBenchState(n int, ipv6 bool) (EndpointPolicy, map[netip.Prefix]IPCacheEntry) {
	ipc := map[netip.Prefix]IPCacheEntry{
		netip.PrefixFrom(podIP, 32):   {Identity: podID, EndpointID: 7},
		netip.PrefixFrom(peerIP, 32):  {Identity: peerID},
		netip.PrefixFrom(peer3IP, 32): {Identity: peer3},
	}
	if ipv6 {
		ipc[netip.PrefixFrom(pod6, 128)] = IPCacheEntry{Identity: podID, EndpointID: 7}
		ipc[netip.PrefixFrom(peer6, 128)] = IPCacheEntry{Identity: peerID}
		ipc[netip.PrefixFrom(peer36, 128)] = IPCacheEntry{Identity: peer3}
	}
	var p EndpointPolicy
	rule := uint32(1)
	add := func(e PolicyEntry) {
		e.Dir, e.Verdict, e.Rule = dirIn, VerdictAllow, rule
		rule++
		p.Entries = append(p.Entries, e)
	}
	ports := []struct {
		proto uint8
		port  uint16
	}{{tcp, 80}, {tcp, 443}, {tcp, benchTCPPort}, {udp, benchUDPPort}}
	fillers := n - 2
	for slot := 0; len(p.Entries) < fillers; slot++ {
		if slot%5 == 1 {
			// An ipBlock: its CIDR is a class, an identity of its own.
			k := slot / 5
			class := class1 + uint32(k)
			p.CIDRs = append(p.CIDRs, PolicyCIDR{Dir: dirIn, Prefix: netip.PrefixFrom(nthAddr(netip.MustParseAddr("172.16.0.0"), k*256), 24), Class: class})
			if ipv6 {
				net6 := netip.MustParseAddr("fd00:172:16::").As16()
				binary.BigEndian.PutUint16(net6[6:], uint16(k))
				p.CIDRs = append(p.CIDRs, PolicyCIDR{Dir: dirIn, Prefix: netip.PrefixFrom(netip.AddrFrom16(net6), 64), Class: class})
			}
			add(PolicyEntry{Identity: class, Proto: tcp, Port: 443, PortPrefixLen: 16})
			continue
		}
		id := uint32(100_000 + slot)
		ipc[netip.PrefixFrom(nthAddr(netip.MustParseAddr("10.200.0.0"), slot+1), 32)] = IPCacheEntry{Identity: id}
		if ipv6 {
			ipc[netip.PrefixFrom(nthAddr(netip.MustParseAddr("fd00:200::"), slot+1), 128)] = IPCacheEntry{Identity: id}
		}
		for _, pp := range ports {
			if len(p.Entries) < fillers {
				add(PolicyEntry{Identity: id, Proto: pp.proto, Port: pp.port, PortPrefixLen: 16})
			}
		}
		if slot%4 == 0 && len(p.Entries) < fillers {
			add(PolicyEntry{Identity: id, Proto: tcp, Port: 8192, PortPrefixLen: 8})
		}
	}
	allowed := []PolicyEntry{
		{Identity: peerID, Dir: dirIn, Proto: tcp, Port: benchTCPPort, PortPrefixLen: 16, Verdict: VerdictAllow, Rule: 900_001},
		{Identity: peerID, Dir: dirIn, Proto: udp, Port: benchUDPPort, PortPrefixLen: 16, Verdict: VerdictAllow, Rule: 900_002},
	}
	p.Entries = slices.Insert(p.Entries, len(p.Entries)/2, allowed...)
	return p, ipc
}

// policyBenchDatapath loads a datapath for the benchmark with endpoint 7
// under the given flags and, when flags enforce anything, policy p. Its
// events are drained as the agent drains them; the returned stop ends that.
func policyBenchDatapath(b *testing.B, flags uint32, p EndpointPolicy, ipc map[netip.Prefix]IPCacheEntry, ipv6 bool) (*Datapath, func()) {
	dp, err := Load(policyBenchConfig(testRoot(b)), nil)
	require.NoError(b, err)
	m := dp.Maps()
	ep := EndpointEntry{IfIndex: loIfindex, ID: 7, IPv4: podIP, Identity: podID, PolicyFlags: flags}
	if ipv6 {
		ep.IPv6 = pod6 // a dual-stack pod
	}
	require.NoError(b, m.PutEndpoint(ep))
	_, _, err = m.SyncIPCache(ipc)
	require.NoError(b, err)
	if flags != 0 {
		require.NoError(b, m.WriteEndpointPolicy(7, p))
	}
	_, err = m.BumpPolicyRevision()
	require.NoError(b, err)
	// Drained like the agent does it: a reader in epoll is what every
	// submit may have to wake; unread, the ring fills and later events are
	// failed, cheaper, reservations.
	rd, err := events.NewReader(dp.EventRing())
	require.NoError(b, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := rd.Read(); errors.Is(err, events.ErrClosed) {
				return
			}
		}
	}()
	return dp, func() { rd.Close(); <-done; dp.Close() }
}

// policyBenchFamily is one address family's addresses and packets in
// BenchmarkPolicy.
type policyBenchFamily struct {
	// suffix follows the packet kind in the metrics: none for IPv4 (the
	// names the reports have always read), "6" for IPv6.
	suffix            string
	pod, peer, denied netip.Addr
	tcp               func(src, dst netip.Addr, sport, dport uint16, f flags) []byte
	udp               func(src, dst netip.Addr, sport, dport uint16) []byte
}

func policyBenchFamilies(b *testing.B, fams []string) []policyBenchFamily {
	var out []policyBenchFamily
	for _, f := range fams {
		if f == "ipv6" {
			out = append(out, policyBenchFamily{suffix: "6", pod: pod6, peer: peer6, denied: peer36,
				tcp: func(src, dst netip.Addr, sport, dport uint16, fl flags) []byte {
					return pkt6(src, dst, nil, tcp, append(tcp6(sport, dport, fl), "hello"...))
				},
				udp: func(src, dst netip.Addr, sport, dport uint16) []byte {
					return pkt6(src, dst, nil, udp, udp6(sport, dport))
				}})
			continue
		}
		out = append(out, policyBenchFamily{pod: podIP, peer: peerIP, denied: peer3IP,
			tcp: func(src, dst netip.Addr, sport, dport uint16, fl flags) []byte {
				return tcpPkt(b, src, dst, sport, dport, fl)
			},
			udp: func(src, dst netip.Addr, sport, dport uint16) []byte { return udpPkt(b, src, dst, sport, dport) }})
	}
	return out
}

func benchPolicyScale(b *testing.B, n int, fams []string) {
	ipv6 := slices.Contains(fams, "ipv6")
	p, ipc := policyBenchState(n, ipv6)
	require.Len(b, p.Entries, n)
	start := time.Now()
	pol, stopPol := policyBenchDatapath(b, EPFlagPolicyIngress, p, ipc, ipv6)
	defer stopPol()
	b.Logf("entries=%d: %d entries (%d CIDR prefixes), %d ipcache entries (%s), written in %s",
		n, len(p.Entries), len(p.CIDRs), len(ipc), strings.Join(fams, ", "), time.Since(start).Round(time.Millisecond))
	nopol, stopNopol := policyBenchDatapath(b, 0, p, ipc, ipv6)
	defer stopNopol()
	noop, err := ebpf.NewProgram(passThroughSpec())
	require.NoError(b, err)
	defer noop.Close()

	fromWireCtx := SkbContext{IngressIfindex: fromWire}.Encode()
	const estPort = 40000
	families := policyBenchFamilies(b, fams)
	establish := func(dp *Datapath) {
		for _, f := range families {
			for _, s := range []struct {
				prog *ebpf.Program
				pkt  []byte
			}{
				{dp.objs.SlToEp, f.tcp(f.peer, f.pod, estPort, benchTCPPort, flags{syn: true})},
				{dp.objs.SlFromEp, f.tcp(f.pod, f.peer, benchTCPPort, estPort, flags{syn: true, ack: true})},
				{dp.objs.SlToEp, f.tcp(f.peer, f.pod, estPort, benchTCPPort, flags{ack: true})},
			} {
				ret, _, err := TestRun(s.prog, s.pkt, fromWireCtx)
				require.NoError(b, err)
				require.Equal(b, verdictNext, ret, "establishing the connection of the est%s samples", f.suffix)
			}
		}
	}
	establish(pol)
	establish(nopol)

	type sampleKind struct {
		name    string
		prog    *ebpf.Program
		pkt     func(sport uint16) []byte
		verdict uint32
		d       []time.Duration
	}
	fixed := func(pkt []byte) func(uint16) []byte { return func(uint16) []byte { return pkt } }
	first := families[0]
	kinds := []*sampleKind{{name: "noop", prog: noop, verdict: verdictNext,
		pkt: func(sport uint16) []byte {
			return first.tcp(first.peer, first.pod, sport, benchTCPPort, flags{syn: true})
		}}}
	for _, f := range families {
		syn := func(sport uint16) []byte { return f.tcp(f.peer, f.pod, sport, benchTCPPort, flags{syn: true}) }
		udpFirst := func(sport uint16) []byte { return f.udp(f.peer, f.pod, sport, benchUDPPort) }
		estPkt := f.tcp(f.peer, f.pod, estPort, benchTCPPort, flags{ack: true})
		denyPkt := f.tcp(f.denied, f.pod, 41000, benchTCPPort, flags{syn: true})
		s := f.suffix
		kinds = append(kinds,
			&sampleKind{name: "syn" + s + "-nopol", prog: nopol.objs.SlToEp, pkt: syn, verdict: verdictNext},
			&sampleKind{name: "syn" + s + "-pol", prog: pol.objs.SlToEp, pkt: syn, verdict: verdictNext},
			&sampleKind{name: "udp" + s + "-nopol", prog: nopol.objs.SlToEp, pkt: udpFirst, verdict: verdictNext},
			&sampleKind{name: "udp" + s + "-pol", prog: pol.objs.SlToEp, pkt: udpFirst, verdict: verdictNext},
			&sampleKind{name: "deny" + s + "-pol", prog: pol.objs.SlToEp, pkt: fixed(denyPkt), verdict: verdictDrop},
			&sampleKind{name: "est" + s + "-nopol", prog: nopol.objs.SlToEp, pkt: fixed(estPkt), verdict: verdictNext},
			&sampleKind{name: "est" + s + "-pol", prog: pol.objs.SlToEp, pkt: fixed(estPkt), verdict: verdictNext})
	}
	for _, k := range kinds {
		k.d = make([]time.Duration, 0, b.N)
	}

	// Source ports of new connections: [firstPort, firstPort+window). Both
	// CTs are emptied before a port comes round again.
	const firstPort, window = 1024, 16384
	b.ResetTimer()
	for i := range b.N {
		if i > 0 && i%window == 0 {
			b.StopTimer()
			clearCT(b, pol.Maps())
			clearCT(b, nopol.Maps())
			establish(pol)
			establish(nopol)
			b.StartTimer()
		}
		sport := uint16(firstPort + i%window)
		for j := range kinds {
			k := kinds[(i+j)%len(kinds)]
			ret, d, err := TestRun(k.prog, k.pkt(sport), fromWireCtx)
			require.NoError(b, err)
			require.Equal(b, k.verdict, ret, "%s verdict", k.name)
			k.d = append(k.d, d)
		}
	}
	b.StopTimer()

	med := map[string]time.Duration{}
	for _, k := range kinds {
		q1, m, q3 := durationQuartiles(k.d)
		med[k.name] = m
		b.ReportMetric(float64(m.Nanoseconds()), k.name+"-ns/pkt")
		b.ReportMetric(float64(q1.Nanoseconds()), k.name+"-q1-ns")
		b.ReportMetric(float64(q3.Nanoseconds()), k.name+"-q3-ns")
	}
	ratio := func(unit string, a, base time.Duration) {
		if base > 0 && a > 0 {
			b.ReportMetric(float64(a)/float64(base), unit)
		}
	}
	for _, k := range kinds[1:] {
		ratio(k.name+"-x-noop", med[k.name], med["noop"])
	}
	for _, f := range families {
		for _, c := range []string{"syn", "udp", "est"} {
			c += f.suffix
			ratio(c+"-pol-x-nopol", med[c+"-pol"], med[c+"-nopol"])
		}
		// A denied SYN against an admitted one without policy.
		ratio("deny"+f.suffix+"-pol-x-nopol", med["deny"+f.suffix+"-pol"], med["syn"+f.suffix+"-nopol"])
	}
	// IPv6 over IPv4, every packet kind, measured in the same loop.
	for _, k := range kinds[1:] {
		if packet, variant, _ := strings.Cut(k.name, "-"); !strings.HasSuffix(packet, "6") {
			v6 := packet + "6-" + variant
			ratio(v6+"-x-ipv4", med[v6], med[k.name])
		}
	}
}

// durationQuartiles returns the first quartile, the median and the third
// quartile (nearest rank).
func durationQuartiles(d []time.Duration) (q1, med, q3 time.Duration) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	at := func(p float64) time.Duration { return s[int(p*float64(len(s)-1)+0.5)] }
	return at(0.25), at(0.5), at(0.75)
}
