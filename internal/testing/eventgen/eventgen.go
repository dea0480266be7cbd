// Package eventgen makes a running agent's datapath emit events at will,
// for rates and volumes real connections between simulated pods cannot
// reach: it runs the program the agent attached to a pod's interface on
// prepared packets with BPF_PROG_TEST_RUN.
//
//	node netns
//	  client pod's host veth (ifindex N), ingress: sl_from_ep ◄── the agent attached it (tcx or tc)
//	     ▲ BPF_PROG_TEST_RUN, skb->dev = that veth:
//	     │   SYN  client:port → server:dport   new connection: a trace event
//	     │   RST  client:port → server:dport   closed:         a connection-end event
//	  the caller (in the node's netns: the kernel resolves the ifindex of
//	  the query and of the test run in the caller's namespace)
//
// The program is the agent's own, found through BPF_PROG_QUERY on the
// interface, so it writes into the agent's ring buffer (sl_events) and CT,
// and the agent's reader, converter, flow store and observer see the
// events as they see a pod's. Nothing is loaded and the agent's bpf root
// lock is not touched. Each source port is one CT entry, reused: a SYN on
// a closed entry starts a new connection, so CT stays at Ports entries and
// the agent's CT GC reports nothing (closed connections were reported when
// they closed). The packets are never transmitted.
//
// tools/benchflows drives it for throughput; tests/e2e for exact
// lost-event accounting.
package eventgen

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/datapath/events"
)

// ProgName is the program a Generator runs: the pod's egress, attached to
// the host-side veth's tcx ingress.
const ProgName = "sl_from_ep"

// VerdictNext is the verdict of a packet the program lets through
// (TC_ACT_UNSPEC / TCX_NEXT, -1).
const VerdictNext = ^uint32(0)

// VerdictRedirect is the verdict of a packet the program sent on itself
// (TC_ACT_REDIRECT, 7): BPF host routing to a pod of the same node.
const VerdictRedirect = 7

// Passed reports whether a verdict lets the packet through.
func Passed(v uint32) bool { return v == VerdictNext || v == VerdictRedirect }

// Config says which connections a Generator makes.
type Config struct {
	// Ifindex is the source pod's host-side interface, in the caller's
	// network namespace.
	Ifindex int
	// Src is the source pod's address, Dst the destination's; the packets
	// are never sent, so Dst need not answer.
	Src, Dst netip.Addr
	// DstPort is the destination port.
	DstPort uint16
	// FirstPort and Ports are the source ports used in turn: one CT entry
	// each.
	FirstPort, Ports int
}

// Generator emits datapath events, one per Run: a connection's SYN (a
// trace event), then its RST (a connection-end event), port after port.
type Generator struct {
	prog *ebpf.Program
	runs []testRun
	n    uint64
}

// testRun is one prepared BPF_PROG_TEST_RUN: the library's Program.Run
// copies its buffers on every call, which at 100k runs/s would be the
// generator's cost rather than the kernel's.
type testRun struct {
	pkt, ctx []byte
}

// New finds the program the agent attached to cfg.Ifindex and prepares
// every packet up front, so that Run only makes a syscall. Call it, and
// Run, from a thread in the interface's network namespace.
func New(cfg Config) (*Generator, error) {
	if !cfg.Src.Is4() || !cfg.Dst.Is4() {
		return nil, fmt.Errorf("source %s and destination %s must be IPv4 addresses", cfg.Src, cfg.Dst)
	}
	if cfg.Ports < 1 || cfg.FirstPort < 1 || cfg.FirstPort+cfg.Ports > 65536 {
		return nil, fmt.Errorf("first port %d and ports %d must stay within 1-65535", cfg.FirstPort, cfg.Ports)
	}
	prog, err := AttachedProgram(cfg.Ifindex, ProgName)
	if err != nil {
		return nil, err
	}
	g := &Generator{prog: prog, runs: make([]testRun, 2*cfg.Ports)}
	// skb->dev is the veth of that index in this netns, as if the packet
	// had arrived on it.
	ctx := datapath.SkbContext{Ifindex: uint32(cfg.Ifindex)}.Encode()
	for i := range cfg.Ports {
		sport := uint16(cfg.FirstPort + i)
		g.runs[2*i] = testRun{TCPPacket(cfg.Src, cfg.Dst, sport, cfg.DstPort, events.TCPSYN, 1000), ctx}
		g.runs[2*i+1] = testRun{TCPPacket(cfg.Src, cfg.Dst, sport, cfg.DstPort, events.TCPRST|events.TCPACK, 1001), ctx}
	}
	return g, nil
}

// Run runs the program on the next packet and returns its verdict
// (VerdictNext unless the program dropped it, and then the event emitted
// is not the one counted on).
func (g *Generator) Run() (uint32, error) {
	r := &g.runs[g.n%uint64(len(g.runs))]
	ret, _, err := datapath.TestRun(g.prog, r.pkt, r.ctx)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", ProgName, err)
	}
	g.n++
	return ret, nil
}

// Runs is how many runs were made: the events the datapath was asked to
// emit (each either in the ring or counted lost).
func (g *Generator) Runs() uint64 { return g.n }

// Close releases the program (the agent's attachment stays).
func (g *Generator) Close() error { return g.prog.Close() }

// AttachedProgram returns the program called name attached to the ingress
// of interface ifindex in the caller's netns: with tcx, or (kernels before
// 6.6, --attach-mode tc) as a cls_bpf filter of the clsact ingress hook.
func AttachedProgram(ifindex int, name string) (*ebpf.Program, error) {
	if ifindex <= 0 {
		return nil, errors.New("want the source pod's host-side interface index")
	}
	var ids []ebpf.ProgramID
	q, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXIngress})
	if err == nil {
		for _, ap := range q.Programs {
			ids = append(ids, ap.ID)
		}
	}
	if err != nil || len(ids) == 0 {
		filters, ferr := netlink.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}, netlink.HANDLE_MIN_INGRESS)
		if ferr != nil {
			return nil, fmt.Errorf("query ingress programs of ifindex %d: tcx: %v; tc filters: %w", ifindex, err, ferr)
		}
		for _, f := range filters {
			if bf, ok := f.(*netlink.BpfFilter); ok && bf.Id > 0 {
				ids = append(ids, ebpf.ProgramID(bf.Id))
			}
		}
	}
	var seen []string
	for _, id := range ids {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			return nil, fmt.Errorf("open program %d: %w", id, err)
		}
		info, err := p.Info()
		if err == nil && info.Name == name {
			return p, nil
		}
		if err == nil {
			seen = append(seen, info.Name)
		}
		p.Close()
	}
	return nil, fmt.Errorf("no %s attached to ifindex %d (its ingress has %v): is the agent running and the pod an endpoint?", name, ifindex, seen)
}

// TCPPacket is an Ethernet frame with an IPv4 TCP segment without
// payload, checksums filled in.
func TCPPacket(src, dst netip.Addr, sport, dport uint16, flags uint8, seq uint32) []byte {
	const ethLen, ipLen, tcpLen = 14, 20, 20
	b := make([]byte, ethLen+ipLen+tcpLen)
	copy(b[0:6], []byte{0x02, 0, 0, 0, 0, 2})  // destination MAC
	copy(b[6:12], []byte{0x02, 0, 0, 0, 0, 1}) // source MAC
	binary.BigEndian.PutUint16(b[12:], unix.ETH_P_IP)
	ip := b[ethLen : ethLen+ipLen]
	ip[0] = 0x45 // version 4, 5 words
	binary.BigEndian.PutUint16(ip[2:], ipLen+tcpLen)
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // don't fragment
	ip[8] = 64
	ip[9] = unix.IPPROTO_TCP
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:], Checksum(ip, 0))
	tcp := b[ethLen+ipLen:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	if flags&events.TCPACK != 0 {
		binary.BigEndian.PutUint32(tcp[8:], 1)
	}
	tcp[12] = 5 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	// The pseudo-header: addresses, protocol, TCP length.
	var pseudo uint32
	for i := 0; i < 8; i += 2 {
		pseudo += uint32(binary.BigEndian.Uint16(ip[12+i:]))
	}
	pseudo += unix.IPPROTO_TCP + tcpLen
	binary.BigEndian.PutUint16(tcp[16:], Checksum(tcp, pseudo))
	return b
}

// Checksum is the Internet checksum of b, starting from the partial sum
// initial.
func Checksum(b []byte, initial uint32) uint16 {
	sum := initial
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
