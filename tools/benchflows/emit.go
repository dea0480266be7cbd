package main

// `benchflows emit`: datapath events at a chosen rate, for rates real
// connections between simulated pods cannot reach on a small machine.
//
//	node netns
//	  client pod's host veth (ifindex N), tcx ingress: sl_from_ep ◄── the agent attached it
//	     ▲ BPF_PROG_TEST_RUN, skb->dev = that veth:
//	     │   SYN  client:port → server:8080   new connection: a trace event
//	     │   RST  client:port → server:8080   closed:         a connection-end event
//	  emit (this process, in the node's netns: the kernel resolves the
//	        test run's ifindex in the caller's namespace)
//
// The program is the one the agent attached, found through BPF_PROG_QUERY on
// the interface, so it writes into the agent's own ring buffer (sl_events)
// and CT, and the agent's reader, converter, flow store and observer see the
// events as they see a pod's. Nothing is loaded and the agent's bpf root
// lock is not touched. Each source port is one CT entry, reused: a SYN on a
// closed entry starts a new connection, so CT stays at -ports entries and
// the agent's CT GC has nothing to report.

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf"

	"github.com/cilium/ebpf/link"
	"github.com/sluice-net/sluice/pkg/datapath"
	"golang.org/x/sys/unix"
)

// emitProgName is the program emit runs: the pod's egress, attached to
// the host-side veth's tcx ingress.
const emitProgName = "sl_from_ep"

// tcActNext is the verdict of a packet the program lets through
// (TC_ACT_UNSPEC / TCX_NEXT, -1).
const tcActNext = ^uint32(0)

// emitResult is what emit prints (one JSON line).
type emitResult struct {
	// Events are the test runs made: one SYN (trace event) or RST
	// (connection-end event) each.
	Events  uint64  `json:"events"`
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"rate"`
	// BadVerdicts counts runs whose verdict was not "next": the program
	// dropped the packet, so its event is not the one counted on.
	BadVerdicts  uint64 `json:"badVerdicts"`
	FirstVerdict string `json:"firstBadVerdict,omitempty"`
	// CPUSeconds is this process's user+system time while emitting.
	CPUSeconds float64 `json:"cpuSeconds"`
}

func runEmit(args []string) error {
	fs := flag.NewFlagSet("emit", flag.ExitOnError)
	ifindex := fs.Int("ifindex", 0, "host-side veth of the source pod, in this netns")
	src := fs.String("src", "", "source pod address")
	dst := fs.String("dst", "", "destination address")
	dport := fs.Int("dport", 8080, "destination port")
	firstPort := fs.Int("first-port", 10000, "first source port")
	ports := fs.Int("ports", 16384, "source ports used in turn (CT entries)")
	rate := fs.Float64("rate", 1000, "events per second; 0: as fast as possible")
	duration := fs.Duration("duration", 5*time.Second, "how long to emit (unless -count)")
	count := fs.Uint64("count", 0, "emit this many events (even), then stop")
	_ = fs.Parse(args)
	srcIP, err := netip.ParseAddr(*src)
	if err != nil {
		return fmt.Errorf("-src: %w", err)
	}
	dstIP, err := netip.ParseAddr(*dst)
	if err != nil {
		return fmt.Errorf("-dst: %w", err)
	}
	if *ports < 1 || *firstPort < 1 || *firstPort+*ports > 65536 {
		return fmt.Errorf("-first-port %d and -ports %d must stay within 1-65535", *firstPort, *ports)
	}
	prog, err := attachedProgram(*ifindex, emitProgName)
	if err != nil {
		return err
	}
	defer prog.Close()

	// Every packet built up front: the loop only makes syscalls.
	runs := make([]testRun, 2*(*ports))
	// skb->dev is the veth of that index in this netns, as if the packet
	// had arrived on it.
	ctx := datapath.SkbContext{Ifindex: uint32(*ifindex)}.Encode()
	for i := range *ports {
		sport := uint16(*firstPort + i)
		runs[2*i] = newTestRun(prog, tcpPacket(srcIP, dstIP, sport, uint16(*dport), tcpSYN, 1000), ctx)
		runs[2*i+1] = newTestRun(prog, tcpPacket(srcIP, dstIP, sport, uint16(*dport), tcpRST|tcpACK, 1001), ctx)
	}
	if err := waitGo(); err != nil {
		return err
	}

	var res emitResult
	cpu0 := selfCPU()
	start := time.Now()
	var n uint64
	run := func() error {
		r := &runs[n%uint64(len(runs))]
		v, err := r.run()
		if err != nil {
			return err
		}
		if v != tcActNext {
			if res.BadVerdicts == 0 {
				res.FirstVerdict = fmt.Sprintf("run %d: verdict %d", n, int32(v))
			}
			res.BadVerdicts++
		}
		n++
		return nil
	}
	switch {
	case *count > 0:
		for n < *count {
			if err := run(); err != nil {
				return err
			}
		}
	default:
		end := start.Add(*duration)
		for {
			now := time.Now()
			if !now.Before(end) {
				break
			}
			due := uint64(now.Sub(start).Seconds() * *rate)
			if *rate == 0 {
				due = n + 256
			}
			due &^= 1 // whole SYN+RST pairs: every connection ends in the window
			if n >= due {
				// Ahead of the schedule: sleep until the next pair is due.
				next := start.Add(time.Duration(float64(n+2) / *rate * float64(time.Second)))
				time.Sleep(max(time.Until(next), 50*time.Microsecond))
				continue
			}
			for n < due {
				if err := run(); err != nil {
					return err
				}
			}
		}
	}
	res.Seconds = time.Since(start).Seconds()
	res.CPUSeconds = selfCPU() - cpu0
	res.Events = n
	res.Rate = float64(n) / res.Seconds
	return json.NewEncoder(os.Stdout).Encode(res)
}

// waitGo says "ready" and waits for a line on stdin: the caller samples
// the agent's CPU between the two, so set-up is outside the window.
func waitGo() error {
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return fmt.Errorf("wait for go on stdin: %w", err)
	}
	return nil
}

// selfCPU is this process's user+system CPU time in seconds.
func selfCPU() float64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// attachedProgram returns the program called name attached with tcx to
// the ingress of interface ifindex in this netns.
func attachedProgram(ifindex int, name string) (*ebpf.Program, error) {
	if ifindex <= 0 {
		return nil, errors.New("-ifindex: want the source pod's host-side interface")
	}
	q, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return nil, fmt.Errorf("query tcx ingress programs of ifindex %d: %w", ifindex, err)
	}
	var seen []string
	for _, ap := range q.Programs {
		p, err := ebpf.NewProgramFromID(ap.ID)
		if err != nil {
			return nil, fmt.Errorf("open program %d: %w", ap.ID, err)
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
	return nil, fmt.Errorf("no %s attached to ifindex %d (tcx ingress has %v): is the agent running with --attach-mode tcx and the pod an endpoint?", name, ifindex, seen)
}

// testRun is one prepared BPF_PROG_TEST_RUN: the library's Program.Run
// copies its buffers on every call, which at 100k runs/s would be the
// generator's cost rather than the kernel's.
type testRun struct {
	prog     *ebpf.Program
	pkt, ctx []byte
}

func newTestRun(prog *ebpf.Program, pkt, ctx []byte) testRun {
	return testRun{prog: prog, pkt: pkt, ctx: ctx}
}

// run runs the program once on the packet and returns its verdict.
func (t *testRun) run() (uint32, error) {
	ret, _, err := datapath.TestRun(t.prog, t.pkt, t.ctx)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", emitProgName, err)
	}
	return ret, nil
}

// TCP flags (the 14th byte of the header).
const (
	tcpFIN = 1 << iota
	tcpSYN
	tcpRST
	tcpPSH
	tcpACK
)

// tcpPacket is an Ethernet frame with an IPv4 TCP segment without payload,
// checksums filled in.
func tcpPacket(src, dst netip.Addr, sport, dport uint16, flags uint8, seq uint32) []byte {
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
	binary.BigEndian.PutUint16(ip[10:], checksum(ip, 0))
	tcp := b[ethLen+ipLen:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	if flags&tcpACK != 0 {
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
	binary.BigEndian.PutUint16(tcp[16:], checksum(tcp, pseudo))
	return b
}

// checksum is the Internet checksum of b, starting from the partial sum
// initial.
func checksum(b []byte, initial uint32) uint16 {
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
