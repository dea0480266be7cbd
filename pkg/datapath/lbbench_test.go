package datapath

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/datapath/events"
)

// BenchmarkLB measures service translation in sl_from_ep through
// BPF_PROG_TEST_RUN with N frontends per address family in the maps
// (written with ApplyLB, as the agent writes them), next to a pass-through
// program measured in the same loop as the baseline:
//
//   - syn: a SYN to the VIP, i.e. a new connection: service lookup, backend
//     selection, DNAT and the creation of both CT entries (service and flow
//     scope). Every SYN uses a distinct tuple (the source port walks a range)
//     and CT is emptied, untimed, before the range wraps, so every SYN really
//     is new and never meets a closed entry of an earlier one.
//   - est: an ACK of an established connection to the VIP: CT hit and DNAT.
//
// Both are measured for IPv4 (10.96.0.0/16 frontends, metrics syn-…, est-…)
// and IPv6 (fd00:96::/64 frontends, metrics syn6-…, est6-…) in the same
// loop, with the frontends of both families in the maps: a dual-stack
// cluster's N services. What the program did with each family's packets is
// reported beside the timing, and every timed sample must return the same
// verdict: syn6-to-backend is 1 when the SYN left translated to the
// backend, syn6-drop-reason the drop reason it was counted under (0: not
// dropped); the same for est. A datapath that drops IPv6 packets to a
// frontend (SERVICE_NEEDS_SOCKET_LB: IPv6 services are socket LB's) is
// then timed dropping them, and says so; the IPv4 packets must translate.
//
// Each sample is one BPF_PROG_TEST_RUN with repeat=1, not one call with a
// large repeat count: the kernel runs the repeats on the same skb, and the
// first run rewrites its destination to the backend, so later repeats would
// measure a packet to the backend (a different path), not one to the VIP.
// The kernel times the program run alone (ktime around the run, without the
// syscall or the packet copy); the ~tens of ns of clock overhead in every
// repeat=1 sample is the same in the baseline, which is why the ratio
// x-noop is the figure to compare (and syn6-x-ipv4, est6-x-ipv4: IPv6 over
// IPv4, medians of the same loop). The median of the samples is reported,
// since single samples catch interrupts on a busy machine.
//
// The target frontend is the last one programmed; with a hash map its
// position does not matter, unlike an iptables chain.
//
//	go test -run '^$' -bench LB -benchtime 20000x ./pkg/datapath/
//
// SLUICE_BENCH_LB_SCALES overrides the service counts ("10,10000,100000"),
// SLUICE_BENCH_LB_FAMILIES the families ("ipv4,ipv6"; "ipv4" alone is the
// benchmark as it was before IPv6, with IPv4 frontends only).
func BenchmarkLB(b *testing.B) {
	scales := []int{10, 10_000, 100_000}
	if s := os.Getenv("SLUICE_BENCH_LB_SCALES"); s != "" {
		scales = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			require.NoError(b, err, "SLUICE_BENCH_LB_SCALES")
			scales = append(scales, n)
		}
	}
	fams := benchFamilies(b, "SLUICE_BENCH_LB_FAMILIES")
	logVerifierCounts(b)
	for _, n := range scales {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) { benchLBScale(b, n, fams, true) })
	}
	// The same at the smallest scale with nobody reading events: the
	// difference is the ring buffer wakeup of the reader that every new
	// connection's event costs the SYN (large on VMs, where it is an IPI).
	b.Run(fmt.Sprintf("services=%d/events-unread", scales[0]), func(b *testing.B) { benchLBScale(b, scales[0], fams, false) })
}

// benchFamilies reads the address families a benchmark measures from the
// environment variable env: "ipv4", "ipv6" or both, comma-separated
// (default both), in the order the reports list them: IPv4 first.
func benchFamilies(b *testing.B, env string) []string {
	s := os.Getenv(env)
	if s == "" {
		return []string{"ipv4", "ipv6"}
	}
	var out []string
	for _, want := range []string{"ipv4", "ipv6"} {
		for _, f := range strings.Split(s, ",") {
			if strings.TrimSpace(f) == want && !slices.Contains(out, want) {
				out = append(out, want)
			}
		}
	}
	for _, f := range strings.Split(s, ",") {
		require.Contains(b, []string{"ipv4", "ipv6"}, strings.TrimSpace(f), "%s: families are ipv4 and ipv6", env)
	}
	return out
}

// benchLBConfig sizes the maps for up to 100k frontends of one backend
// each in each of fams families: sl_lb_svc holds a frontend entry plus one
// slot per frontend (200k a family), sl_lb_backends and sl_lb_revnat one
// entry per backend or frontend.
func benchLBConfig(root string, fams int) Config {
	return Config{BPFRoot: root, LBMax: uint32(262144 * fams), LBBackendsMax: uint32(131072 * fams), CTMax: 262144}
}

// backend6 is the IPv6 target frontend's backend, as backend1 is IPv4's.
var backend6 = netip.MustParseAddr("fd00::9")

// lbBenchFamily is one address family of BenchmarkLB.
type lbBenchFamily struct {
	name string
	// suffix follows syn/est in the metrics: none for IPv4 (the names
	// the reports have always read), "6" for IPv6.
	suffix  string
	client  netip.Addr
	target  LBFrontendKey
	backend netip.AddrPort
	// pkt is a TCP packet of the family with a 5-byte payload.
	pkt func(src, dst netip.Addr, sport, dport uint16, f flags) []byte
}

func (f *lbBenchFamily) syn(sport uint16) []byte {
	return f.pkt(f.client, f.target.Addr, sport, f.target.Port, flags{syn: true})
}

// lbBenchState returns n frontends :80/TCP with one backend each in every
// family of fams (IPv4 10.96.x.y, IPv6 fd00:96::x:y): fillers point at
// addresses that are never contacted (10.128/16, fd00:128::/64), the last
// frontend of each family (the target) at backend1 or backend6. IPv4
// frontends and backends have IDs 1..n, IPv6 ones n+1..2n.
func lbBenchState(b *testing.B, n int, fams []string) (LBState, []*lbBenchFamily) {
	st := LBState{Frontends: make(map[LBFrontendKey]LBFrontend, n*len(fams)), Backends: make(map[uint32]LBBackend, n*len(fams))}
	var out []*lbBenchFamily
	for fi, fam := range fams {
		f := &lbBenchFamily{name: fam}
		vips, fillers := netip.MustParseAddr("10.96.0.0"), netip.MustParseAddr("10.128.0.0")
		f.client, f.backend = podIP, netip.AddrPortFrom(backend1, 8080)
		f.pkt = func(src, dst netip.Addr, sport, dport uint16, fl flags) []byte {
			return tcpPkt(b, src, dst, sport, dport, fl)
		}
		if fam == "ipv6" {
			vips, fillers = netip.MustParseAddr("fd00:96::"), netip.MustParseAddr("fd00:128::")
			f.suffix, f.client, f.backend = "6", pod6, netip.AddrPortFrom(backend6, 8080)
			f.pkt = func(src, dst netip.Addr, sport, dport uint16, fl flags) []byte {
				return pkt6(src, dst, nil, tcp, append(tcp6(sport, dport, fl), "hello"...))
			}
		}
		for i := range n {
			id := uint32(fi*n + i + 1)
			key := LBFrontendKey{Addr: nthAddr(vips, i+1), Port: 80, Proto: 6}
			be := LBBackend{ID: id, Addr: nthAddr(fillers, i+1), Port: 8080, Proto: 6}
			if i == n-1 {
				be.Addr, f.target = f.backend.Addr(), key
			}
			st.Backends[id] = be
			st.Frontends[key] = LBFrontend{Key: key, ID: id, Slots: []uint32{id}}
		}
		out = append(out, f)
	}
	return st, out
}

// nthAddr is base plus i, in the last 32 bits for IPv6.
func nthAddr(base netip.Addr, i int) netip.Addr {
	if base.Is6() {
		a := base.As16()
		v := binary.BigEndian.Uint32(a[12:]) + uint32(i)
		binary.BigEndian.PutUint32(a[12:], v)
		return netip.AddrFrom16(a)
	}
	a := base.As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// lbOutcome is what sl_from_ep did with one packet: its verdict, where
// the packet it let through was addressed, and the drop reason it counted
// (0: none).
type lbOutcome struct {
	verdict uint32
	dst     netip.AddrPort
	reason  uint16
}

// toBackend reports whether the packet went on translated to backend.
func (o lbOutcome) toBackend(backend netip.AddrPort) bool {
	return o.verdict != verdictDrop && o.dst == backend
}

func (o lbOutcome) String() string {
	if o.reason != 0 {
		return fmt.Sprintf("verdict %d, dropped: %s", int32(o.verdict), events.DropReason(o.reason))
	}
	return fmt.Sprintf("verdict %d, on to %s", int32(o.verdict), o.dst)
}

// runOutcome runs pkt through prog once and returns what it did, the drop
// reason read from the datapath's counters.
func runOutcome(b *testing.B, m *Maps, prog *ebpf.Program, pkt []byte) lbOutcome {
	before, err := m.Counters()
	require.NoError(b, err)
	ret, out := runBench(b, prog, pkt)
	after, err := m.Counters()
	require.NoError(b, err)
	o := lbOutcome{verdict: ret, dst: dstOf(out), reason: droppedReason(before, after)}
	require.Equal(b, o.verdict == verdictDrop, o.reason != 0, "a drop verdict comes with a counted drop reason: %s", o)
	return o
}

// dstOf is the destination address and port of an IPv4 or IPv6 packet.
func dstOf(p gopacket.Packet) netip.AddrPort {
	var a netip.Addr
	if nl := p.NetworkLayer(); nl != nil {
		a, _ = netip.AddrFromSlice(nl.NetworkFlow().Dst().Raw())
	}
	var port uint16
	if tl := p.TransportLayer(); tl != nil {
		if raw := tl.TransportFlow().Dst().Raw(); len(raw) == 2 {
			port = binary.BigEndian.Uint16(raw)
		}
	}
	return netip.AddrPortFrom(a.Unmap(), port)
}

// droppedReason is the reason of the drop counter that grew from before
// to after, 0 if none did.
func droppedReason(before, after []Counter) uint16 {
	was := map[[2]uint16]uint64{}
	for _, c := range before {
		was[[2]uint16{uint16(c.MetricID)<<8 | uint16(c.DirID), c.ReasonID}] = c.Packets
	}
	for _, c := range after {
		if c.ReasonID != 0 && c.Packets > was[[2]uint16{uint16(c.MetricID)<<8 | uint16(c.DirID), c.ReasonID}] {
			return c.ReasonID
		}
	}
	return 0
}

func benchLBScale(b *testing.B, n int, fams []string, readEvents bool) {
	root := testRoot(b)
	dp, err := Load(benchLBConfig(root, len(fams)), nil)
	require.NoError(b, err)
	defer dp.Close()
	m := dp.Maps()
	ep := EndpointEntry{IfIndex: loIfindex, ID: 7, IPv4: podIP}
	if slices.Contains(fams, "ipv6") {
		ep.IPv6 = pod6 // the client pod is dual-stack
	}
	require.NoError(b, m.PutEndpoint(ep))
	want, families := lbBenchState(b, n, fams)
	start := time.Now()
	require.NoError(b, m.ApplyLB(putAll(want)))
	b.Logf("services=%d: programmed %d frontends, %d backends (%s) in %s", n, len(want.Frontends), len(want.Backends), strings.Join(fams, ", "), time.Since(start).Round(time.Millisecond))

	// New-connection and translation events go to the ring buffer; drain
	// it as the agent does (a reader blocked in epoll is what makes every
	// submit wake it). Unread, the buffer fills after some thousand events
	// and later ones are failed, cheaper, reservations.
	rd, err := events.NewReader(dp.EventRing())
	require.NoError(b, err)
	drained := make(chan struct{})
	if !readEvents {
		rd.Close()
		close(drained)
	}
	go func() {
		if !readEvents {
			return
		}
		defer close(drained)
		for {
			if _, err := rd.Read(); err != nil && strings.Contains(err.Error(), "closed") {
				return
			}
		}
	}()
	defer func() { rd.Close(); <-drained }()

	base, err := ebpf.NewProgram(passThroughSpec())
	require.NoError(b, err)
	defer base.Close()
	prog := dp.objs.SlFromEp
	one := func(p *ebpf.Program, pkt []byte) (uint32, time.Duration) {
		ret, d, err := p.Benchmark(pkt, 1, nil)
		require.NoError(b, err)
		return ret, d
	}

	// kind is one packet kind of one family: its packet, what the
	// program did with it untimed, and its timed samples.
	type kind struct {
		fam     *lbBenchFamily
		name    string // syn, est
		pkt     func(sport uint16) []byte
		outcome lbOutcome
		d       []time.Duration
	}
	const estPort = 40000
	var kinds []*kind
	for _, f := range families {
		est := f.pkt(f.client, f.target.Addr, estPort, f.target.Port, flags{ack: true})
		kinds = append(kinds,
			&kind{fam: f, name: "syn", pkt: f.syn},
			&kind{fam: f, name: "est", pkt: func(uint16) []byte { return est }})
	}
	// establish opens each family's connection of the est samples (SYN
	// out, SYN-ACK back), if its SYN is translated, and records what the
	// program does with the first packet of every kind. IPv4 must
	// translate; IPv6's outcome is reported as it is.
	establish := func() {
		for _, k := range kinds {
			f := k.fam
			if k.name == "syn" {
				k.outcome = runOutcome(b, m, prog, f.syn(estPort))
				if k.outcome.toBackend(f.backend) {
					ret, _ := runBench(b, dp.objs.SlToEp, f.pkt(f.backend.Addr(), f.client, f.backend.Port(), estPort, flags{syn: true, ack: true}))
					require.Equal(b, verdictNext, ret, "%s: the backend's SYN-ACK", f.name)
				}
			} else {
				k.outcome = runOutcome(b, m, prog, k.pkt(0))
			}
			if f.name == "ipv4" {
				require.True(b, k.outcome.toBackend(f.backend), "IPv4 %s to %s translates to its backend %s: %s", k.name, f.target, f.backend, k.outcome)
			}
		}
	}
	establish()
	for _, k := range kinds {
		b.Logf("services=%d %s %s to %s: %s", n, k.fam.name, k.name, k.fam.target, k.outcome)
	}

	// Source ports for new connections, [firstPort, firstPort+synRange);
	// CT is emptied before they repeat.
	const firstPort, synRange = 1024, 16384
	noop := make([]time.Duration, 0, b.N)
	for _, k := range kinds {
		k.d = make([]time.Duration, 0, b.N)
	}
	b.ResetTimer()
	for i := range b.N {
		if i > 0 && i%synRange == 0 {
			b.StopTimer()
			clearCT(b, m)
			establish()
			b.StartTimer()
		}
		sport := uint16(firstPort + i%synRange)
		_, d := one(base, kinds[0].pkt(sport))
		noop = append(noop, d)
		for _, k := range kinds {
			ret, d := one(prog, k.pkt(sport))
			if ret != k.outcome.verdict {
				b.Fatalf("%s %s sample %d: verdict %d, not the first packet's (%s)", k.fam.name, k.name, i, int32(ret), k.outcome)
			}
			k.d = append(k.d, d)
		}
	}
	b.StopTimer()
	mn := median(noop)
	b.ReportMetric(float64(mn.Nanoseconds()), "noop-ns/pkt")
	med := map[string]time.Duration{}
	for _, k := range kinds {
		name := k.name + k.fam.suffix
		mk := median(k.d)
		med[name] = mk
		b.ReportMetric(float64(mk.Nanoseconds()), name+"-ns/pkt")
		if mn > 0 {
			b.ReportMetric(float64(mk)/float64(mn), name+"-x-noop")
		}
		toBackend := 0.0
		if k.outcome.toBackend(k.fam.backend) {
			toBackend = 1
		}
		b.ReportMetric(toBackend, name+"-to-backend")
		b.ReportMetric(float64(k.outcome.reason), name+"-drop-reason")
	}
	for _, k := range []string{"syn", "est"} {
		if v4, v6 := med[k], med[k+"6"]; v4 > 0 && v6 > 0 {
			b.ReportMetric(float64(v6)/float64(v4), k+"6-x-ipv4")
		}
	}
}

// runBench is run (lb_test.go) for benchmarks.
func runBench(b *testing.B, prog *ebpf.Program, pkt []byte) (uint32, gopacket.Packet) {
	b.Helper()
	opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, 1600)}
	ret, err := prog.Run(opts)
	require.NoError(b, err)
	return ret, gopacket.NewPacket(opts.DataOut, layers.LayerTypeEthernet, gopacket.Default)
}

// clearCT empties the connection-tracking map.
func clearCT(b *testing.B, m *Maps) {
	var (
		k    bpfobj.EndpointSlCtKey
		v    bpfobj.EndpointSlCtEntry
		keys []bpfobj.EndpointSlCtKey
	)
	it := m.CT.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	require.NoError(b, it.Err())
	for i := range keys {
		_ = m.CT.Delete(&keys[i])
	}
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
