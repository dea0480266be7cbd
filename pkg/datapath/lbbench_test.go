package datapath

import (
	"fmt"
	"maps"
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
// BPF_PROG_TEST_RUN with N frontends in the maps (written with ApplyLB, as
// the agent writes them), next to a pass-through program measured in the
// same loop as the baseline:
//
//   - syn: a SYN to the VIP, i.e. a new connection: service lookup, backend
//     selection, DNAT and the creation of both CT entries (service and flow
//     scope). Every SYN uses a distinct tuple (the source port walks a range)
//     and CT is emptied, untimed, before the range wraps, so every SYN really
//     is new and never meets a closed entry of an earlier one.
//   - est: an ACK of an established connection to the VIP: CT hit and DNAT.
//
// Each sample is one BPF_PROG_TEST_RUN with repeat=1, not one call with a
// large repeat count: the kernel runs the repeats on the same skb, and the
// first run rewrites its destination to the backend, so later repeats would
// measure a packet to the backend (a different path), not one to the VIP.
// The kernel times the program run alone (ktime around the run, without the
// syscall or the packet copy); the ~tens of ns of clock overhead in every
// repeat=1 sample is the same in the baseline, which is why the ratio
// x-noop is the figure to compare. The median of the samples is reported,
// since single samples catch interrupts on a busy machine.
//
// The target frontend is the last one programmed; with a hash map its
// position does not matter, unlike an iptables chain.
//
//	go test -run '^$' -bench LB -benchtime 20000x ./pkg/datapath/
//
// SLUICE_BENCH_LB_SCALES overrides the service counts ("10,10000,100000").
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
	logVerifierCounts(b)
	for _, n := range scales {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) { benchLBScale(b, n, true) })
	}
	// The same at the smallest scale with nobody reading events: the
	// difference is the ring buffer wakeup of the reader that every new
	// connection's event costs the SYN (large on VMs, where it is an IPI).
	b.Run(fmt.Sprintf("services=%d/events-unread", scales[0]), func(b *testing.B) { benchLBScale(b, scales[0], false) })
}

// benchLBConfig sizes the maps for up to 100k frontends of one backend
// each: sl_lb_svc holds a frontend entry plus one slot per frontend
// (200k), sl_lb_backends and sl_lb_revnat one entry per backend or frontend.
func benchLBConfig(root string) Config {
	return Config{BPFRoot: root, LBMax: 262144, LBBackendsMax: 131072, CTMax: 262144}
}

// lbBenchState returns n frontends 10.96.x.y:80/TCP with one backend each:
// fillers point at addresses that are never contacted, the last frontend
// (the target) at backend1.
func lbBenchState(n int) (LBState, LBFrontendKey) {
	st := LBState{Frontends: make(map[LBFrontendKey]LBFrontend, n), Backends: make(map[uint32]LBBackend, n)}
	var target LBFrontendKey
	for i := range n {
		id := uint32(i + 1)
		key := LBFrontendKey{Addr: nthAddr(netip.MustParseAddr("10.96.0.0"), i+1), Port: 80, Proto: 6}
		be := LBBackend{ID: id, Addr: nthAddr(netip.MustParseAddr("10.128.0.0"), i+1), Port: 8080, Proto: 6}
		if i == n-1 {
			be.Addr, target = backend1, key
		}
		st.Backends[id] = be
		st.Frontends[key] = LBFrontend{Key: key, ID: id, Slots: []uint32{id}}
	}
	return st, target
}

func nthAddr(base netip.Addr, i int) netip.Addr {
	a := base.As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func benchLBScale(b *testing.B, n int, readEvents bool) {
	root := testRoot(b)
	dp, err := Load(benchLBConfig(root), nil)
	require.NoError(b, err)
	defer dp.Close()
	m := dp.Maps()
	require.NoError(b, m.PutEndpoint(EndpointEntry{IfIndex: loIfindex, ID: 7, IPv4: podIP}))
	want, target := lbBenchState(n)
	start := time.Now()
	require.NoError(b, m.ApplyLB(putAll(want)))
	b.Logf("services=%d: programmed %d frontends, %d backends in %s", n, len(want.Frontends), len(want.Backends), time.Since(start).Round(time.Millisecond))

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
	one := func(p *ebpf.Program, pkt []byte) time.Duration {
		_, d, err := p.Benchmark(pkt, 1, nil)
		require.NoError(b, err)
		return d
	}

	const estPort = 40000
	synPkt := func(sport uint16) []byte { return tcpPkt(b, podIP, target.Addr, sport, 80, flags{syn: true}) }
	estPkt := tcpPkt(b, podIP, target.Addr, estPort, 80, flags{ack: true})
	establish := func() {
		ret, out := runBench(b, prog, synPkt(estPort))
		require.Equal(b, verdictNext, ret)
		require.Equal(b, netip.AddrPortFrom(backend1, 8080), dst(out), "the target VIP translates to its backend")
		ret, _ = runBench(b, dp.objs.SlToEp, tcpPkt(b, backend1, podIP, 8080, estPort, flags{syn: true, ack: true}))
		require.Equal(b, verdictNext, ret)
	}
	establish()

	// Source ports for new connections, [firstPort, firstPort+synRange);
	// CT is emptied before they repeat.
	const firstPort, synRange = 1024, 16384
	noop := make([]time.Duration, 0, b.N)
	syn := make([]time.Duration, 0, b.N)
	est := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		if i > 0 && i%synRange == 0 {
			b.StopTimer()
			clearCT(b, m)
			establish()
			b.StartTimer()
		}
		pkt := synPkt(uint16(firstPort + i%synRange))
		noop = append(noop, one(base, pkt))
		syn = append(syn, one(prog, pkt))
		est = append(est, one(prog, estPkt))
	}
	b.StopTimer()
	mn, ms, me := median(noop), median(syn), median(est)
	b.ReportMetric(float64(ms.Nanoseconds()), "syn-ns/pkt")
	b.ReportMetric(float64(me.Nanoseconds()), "est-ns/pkt")
	b.ReportMetric(float64(mn.Nanoseconds()), "noop-ns/pkt")
	if mn > 0 {
		b.ReportMetric(float64(ms)/float64(mn), "syn-x-noop")
		b.ReportMetric(float64(me)/float64(mn), "est-x-noop")
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

// logVerifierCounts logs how many instructions the verifier walked for
// every program (a deterministic complexity figure, independent of map
// contents), for the report next to the timings.
func logVerifierCounts(b *testing.B) {
	root := testRoot(b)
	dp, err := Load(benchLBConfig(root), nil)
	require.NoError(b, err)
	defer dp.Close()
	progs := map[string]*ebpf.Program{
		"sl_from_ep":           dp.objs.SlFromEp,
		"sl_to_ep":             dp.objs.SlToEp,
		"sl_sock_connect4":     dp.sock.SlSockConnect4,
		"sl_sock_sendmsg4":     dp.sock.SlSockSendmsg4,
		"sl_sock_recvmsg4":     dp.sock.SlSockRecvmsg4,
		"sl_sock_getpeername4": dp.sock.SlSockGetpeername4,
	}
	for _, name := range slices.Sorted(maps.Keys(progs)) {
		p := progs[name]
		if p == nil {
			continue
		}
		info, err := p.Info()
		require.NoError(b, err)
		insns, err := info.Instructions()
		require.NoError(b, err)
		if n, ok := info.VerifiedInstructions(); ok {
			fmt.Printf("verifier: %s: %d instructions, %d verified instructions\n", name, len(insns), n)
		} else {
			fmt.Printf("verifier: %s: %d instructions (verified count needs 5.16+)\n", name, len(insns))
		}
	}
}
