package datapath

// Attach tests: the programs on a real veth, in both attach modes, next to
// a program that stands in for the CNI's.
//
//	 pod netns                     test netns ("node")
//	 p0 10.1.0.2/24 ===== veth ===== h0 10.1.0.1/24
//	                                 ├ ingress: [sluice sl_from_ep] → [cni]
//	                                 └ egress:  [sluice sl_to_ep]   → [cni]

import (
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

type vethPair struct {
	host, pod netns.NsHandle
	ifindex   int
}

// inNetns runs f on a locked OS thread inside ns.
func inNetns(t *testing.T, ns netns.NsHandle, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// The thread is dropped with its namespace, never reused.
		if err := netns.Set(ns); err != nil {
			t.Errorf("setns: %v", err)
			return
		}
		f()
	}()
	<-done
}

// newVethPair builds two fresh namespaces joined by a veth. Runs on a
// locked thread; the caller's namespace is restored afterwards.
func newVethPair(t *testing.T) *vethPair {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	require.NoError(t, err)
	defer func() { require.NoError(t, netns.Set(orig)); orig.Close() }()

	pod, err := netns.New()
	require.NoError(t, err)
	host, err := netns.New()
	require.NoError(t, err)
	t.Cleanup(func() { host.Close(); pod.Close() })

	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "h0"}, PeerName: "p0", PeerNamespace: netlink.NsFd(pod)}
	require.NoError(t, netlink.LinkAdd(veth))
	h0, err := netlink.LinkByName("h0")
	require.NoError(t, err)
	require.NoError(t, netlink.AddrAdd(h0, &netlink.Addr{IPNet: mustNet("10.1.0.1/24")}))
	require.NoError(t, netlink.LinkSetUp(h0))

	require.NoError(t, netns.Set(pod))
	p0, err := netlink.LinkByName("p0")
	require.NoError(t, err)
	require.NoError(t, netlink.AddrAdd(p0, &netlink.Addr{IPNet: mustNet("10.1.0.2/24")}))
	require.NoError(t, netlink.LinkSetUp(p0))
	return &vethPair{host: host, pod: pod, ifindex: h0.Attrs().Index}
}

func mustNet(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

// udpRoundTrip sends a datagram pod → node and the answer back, with
// sockets created in their namespaces (a socket keeps its netns).
func udpRoundTrip(t *testing.T, v *vethPair) {
	t.Helper()
	var srv, cli *net.UDPConn
	var err error
	inNetns(t, v.host, func() { srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 1, 0, 1), Port: 9999}) })
	require.NoError(t, err)
	defer srv.Close()
	inNetns(t, v.pod, func() { cli, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(10, 1, 0, 1), Port: 9999}) })
	require.NoError(t, err)
	defer cli.Close()

	_, err = cli.Write([]byte("ping"))
	require.NoError(t, err)
	buf := make([]byte, 16)
	require.NoError(t, srv.SetReadDeadline(time.Now().Add(3*time.Second)))
	n, from, err := srv.ReadFromUDP(buf)
	require.NoError(t, err, "datagram pod -> node lost")
	require.Equal(t, "ping", string(buf[:n]))
	_, err = srv.WriteToUDP([]byte("pong"), from)
	require.NoError(t, err)
	require.NoError(t, cli.SetReadDeadline(time.Now().Add(3*time.Second)))
	n, err = cli.Read(buf)
	require.NoError(t, err, "datagram node -> pod lost")
	require.Equal(t, "pong", string(buf[:n]))
}

// cniProgram stands in for a CNI's program: it only passes packets on.
func cniProgram(t *testing.T) *ebpf.Program {
	p, err := ebpf.NewProgram(cniSpec())
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

func cniSpec() *ebpf.ProgramSpec {
	return &ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, License: "GPL", Name: "cni_stand_in",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	}
}

func runCount(t *testing.T, p *ebpf.Program) uint64 {
	st, err := p.Stats()
	require.NoError(t, err)
	return st.RunCount
}

// kernelHasTCX probes for tcx once per test binary.
var kernelHasTCX = sync.OnceValue(ProbeTCX)

// tcxProgramIDs lists the tcx programs on the interface; a kernel without
// tcx (whose BPF_PROG_QUERY rejects tcx attach types) has none.
func tcxProgramIDs(t *testing.T, ifindex int, at ebpf.AttachType) []ebpf.ProgramID {
	if !kernelHasTCX() {
		return nil
	}
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
	require.NoError(t, err)
	var ids []ebpf.ProgramID
	for _, p := range res.Programs {
		ids = append(ids, p.ID)
	}
	return ids
}

func progID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	info, err := p.Info()
	require.NoError(t, err)
	id, ok := info.ID()
	require.True(t, ok)
	return id
}

func forwarded(t *testing.T, dp *Datapath) uint64 {
	cs, err := dp.Maps().Counters()
	require.NoError(t, err)
	var n uint64
	for _, c := range cs {
		if c.Metric == "forwarded" {
			n += c.Packets
		}
	}
	return n
}

func TestAttachTCXCoexistsWithCNI(t *testing.T) {
	root := testRoot(t)
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	require.NoError(t, err)
	defer stats.Close()
	v := newVethPair(t)
	cni := cniProgram(t)
	requireFeature(t, FeatureTCX, kernelHasTCX())

	inNetns(t, v.host, func() {
		// The CNI was there first.
		cniLink, err := link.AttachTCX(link.TCXOptions{Interface: v.ifindex, Program: cni, Attach: ebpf.AttachTCXIngress})
		require.NoError(t, err)
		defer cniLink.Close()

		dp, err := Load(Config{BPFRoot: root}, nil)
		require.NoError(t, err)
		require.True(t, HaveTCX(dp), "the datapath's programs attach as tcx where a test program does")
		require.NoError(t, dp.Maps().PutEndpoint(EndpointEntry{IfIndex: uint32(v.ifindex), ID: 1, IPv4: netip.MustParseAddr("10.1.0.2")}))
		a, err := NewAttacher(dp, AttachTCX, 0)
		require.NoError(t, err)
		require.NoError(t, a.Attach(v.ifindex))
		require.NoError(t, a.Attach(v.ifindex), "attach is idempotent")

		ids := tcxProgramIDs(t, v.ifindex, ebpf.AttachTCXIngress)
		require.Equal(t, []ebpf.ProgramID{progID(t, dp.objs.SlFromEp), progID(t, cni)}, ids, "sluice first (head), CNI after, once each")
		require.Equal(t, []ebpf.ProgramID{progID(t, dp.objs.SlToEp)}, tcxProgramIDs(t, v.ifindex, ebpf.AttachTCXEgress))

		before := runCount(t, cni)
		udpRoundTrip(t, v)
		require.Greater(t, runCount(t, cni), before, "TCX_NEXT hands packets on to the CNI's program")
		require.NotZero(t, forwarded(t, dp))
		ct, err := dp.Maps().ListCT()
		require.NoError(t, err)
		require.Len(t, ct, 1)
		require.Equal(t, "10.1.0.2", ct[0].SrcAddr.Addr().String())

		// A restarted agent (new programs) updates the pinned links in place.
		dp.Close()
		dp2, err := Load(Config{BPFRoot: root}, nil)
		require.NoError(t, err)
		defer dp2.Close()
		a2, err := NewAttacher(dp2, AttachTCX, 0)
		require.NoError(t, err)
		require.NoError(t, a2.Attach(v.ifindex))
		ids = tcxProgramIDs(t, v.ifindex, ebpf.AttachTCXIngress)
		require.Equal(t, []ebpf.ProgramID{progID(t, dp2.objs.SlFromEp), progID(t, cni)}, ids)
		pinned, err := a2.PinnedLinkIfindexes()
		require.NoError(t, err)
		require.Equal(t, []int{v.ifindex}, pinned)

		require.NoError(t, a2.Detach(v.ifindex))
		require.Equal(t, []ebpf.ProgramID{progID(t, cni)}, tcxProgramIDs(t, v.ifindex, ebpf.AttachTCXIngress), "detach leaves the CNI's program")
		require.Empty(t, tcxProgramIDs(t, v.ifindex, ebpf.AttachTCXEgress))
		udpRoundTrip(t, v)
	})
}

func TestAttachLegacyTCCoexistsWithCNI(t *testing.T) {
	root := testRoot(t)
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	require.NoError(t, err)
	defer stats.Close()
	v := newVethPair(t)
	cni := cniProgram(t)

	inNetns(t, v.host, func() {
		// The CNI's filter: its own clsact, priority and handle.
		require.NoError(t, ensureClsact(v.ifindex))
		cniFilter := &netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: v.ifindex, Parent: netlink.HANDLE_MIN_INGRESS, Handle: 1, Priority: 2, Protocol: unix.ETH_P_ALL},
			Fd:          cni.FD(), Name: "cni-ingress", DirectAction: true,
		}
		require.NoError(t, netlink.FilterAdd(cniFilter))

		dp, err := Load(Config{BPFRoot: root}, nil)
		require.NoError(t, err)
		defer dp.Close()
		require.NoError(t, dp.Maps().PutEndpoint(EndpointEntry{IfIndex: uint32(v.ifindex), ID: 1, IPv4: netip.MustParseAddr("10.1.0.2")}))
		a, err := NewAttacher(dp, AttachTC, 0)
		require.NoError(t, err)
		require.NoError(t, a.Attach(v.ifindex))
		require.NoError(t, a.Attach(v.ifindex), "attach is idempotent (replace)")

		names := func(parent uint32) []string {
			fs, err := netlink.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: v.ifindex}}, parent)
			require.NoError(t, err)
			var out []string
			for _, f := range fs {
				if bf, ok := f.(*netlink.BpfFilter); ok {
					out = append(out, bf.Name)
				}
			}
			return out
		}
		require.ElementsMatch(t, []string{a.filterName(hooks[0]), "cni-ingress"}, names(netlink.HANDLE_MIN_INGRESS))
		require.Equal(t, []string{a.filterName(hooks[1])}, names(netlink.HANDLE_MIN_EGRESS))
		require.Regexp(t, `^sluice-sl_from_ep-[0-9a-f]{8}$`, a.filterName(hooks[0]))

		// Another agent (another bpf root) in the same namespace neither
		// replaces nor removes this agent's filters.
		other, err := Load(Config{BPFRoot: testRoot(t)}, nil)
		require.NoError(t, err)
		defer other.Close()
		oa, err := NewAttacher(other, AttachTC, 0)
		require.NoError(t, err)
		require.ErrorContains(t, oa.Attach(v.ifindex), "another sluice agent")
		require.NoError(t, oa.Detach(v.ifindex))
		require.Contains(t, names(netlink.HANDLE_MIN_INGRESS), a.filterName(hooks[0]))
		require.Empty(t, tcxProgramIDs(t, v.ifindex, ebpf.AttachTCXIngress), "legacy mode leaves no tcx links")

		before := runCount(t, cni)
		udpRoundTrip(t, v)
		require.Greater(t, runCount(t, cni), before, "TC_ACT_UNSPEC hands packets on to the CNI's filter")
		require.NotZero(t, forwarded(t, dp))

		require.NoError(t, a.Detach(v.ifindex))
		require.Equal(t, []string{"cni-ingress"}, names(netlink.HANDLE_MIN_INGRESS), "detach never deletes filters Sluice did not create")
		require.Empty(t, names(netlink.HANDLE_MIN_EGRESS))

		// A foreign filter at Sluice's priority and handle is refused, not replaced.
		squatter := &netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: v.ifindex, Parent: netlink.HANDLE_MIN_INGRESS, Handle: tcHandle, Priority: DefaultTCPriority, Protocol: unix.ETH_P_ALL},
			Fd:          cni.FD(), Name: "someone-else", DirectAction: true,
		}
		require.NoError(t, netlink.FilterAdd(squatter))
		err = a.Attach(v.ifindex)
		require.ErrorContains(t, err, "--tc-priority")
		require.ElementsMatch(t, []string{"someone-else", "cni-ingress"}, names(netlink.HANDLE_MIN_INGRESS))
	})
}

// Switching attach mode across a restart leaves exactly one set attached.
func TestAttachModeSwitch(t *testing.T) {
	root := testRoot(t)
	requireFeature(t, FeatureTCX, kernelHasTCX())
	v := newVethPair(t)
	inNetns(t, v.host, func() {
		dp, err := Load(Config{BPFRoot: root}, nil)
		require.NoError(t, err)
		defer dp.Close()
		tcx, err := NewAttacher(dp, AttachTCX, 0)
		require.NoError(t, err)
		require.NoError(t, tcx.Attach(v.ifindex))
		tc, err := NewAttacher(dp, AttachTC, 0)
		require.NoError(t, err)
		require.NoError(t, tc.Attach(v.ifindex))
		require.Empty(t, tcxProgramIDs(t, v.ifindex, ebpf.AttachTCXIngress))
		require.NoError(t, tcx.Attach(v.ifindex))
		f, err := tcx.ourFilter(v.ifindex, hooks[0])
		require.NoError(t, err)
		require.Nil(t, f, "tc filter removed when tcx takes over")
		require.Len(t, tcxProgramIDs(t, v.ifindex, ebpf.AttachTCXIngress), 1)
	})
}
