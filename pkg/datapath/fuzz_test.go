package datapath

// Fuzzing the programs with frames nobody thought of, through
// BPF_PROG_TEST_RUN, against invariants that hold for every input:
//
//	pod 10.0.0.1 (endpoint 7) under default deny both ways, no rule allows anything
//	  services: 10.96.0.10:80/TCP → 10.0.0.9:8080, 10.0.0.10:8080 (a NodePort too),
//	            10.96.0.11:53/UDP → none (reject), 10.96.0.12:80 → the pod itself (hairpin)
//
//	1. every verdict is one of next, drop, redirect;
//	2. the endpoint programs forward nothing IPv4 and nothing IPv6 but
//	   neighbour discovery: nothing is allowed, so anything forwarded is a
//	   side door; non-IP frames (ARP) pass; a redirect is only the reject
//	   of a service without endpoints, back into the pod;
//	3. a packet the programs rewrote and let go has valid IPv4 and L4
//	   checksums (inputs are given valid ones first);
//	4. the maps the agent owns (services, backends, endpoints, ipcache,
//	   policy, uplinks) are never written by the datapath.
//
// An input is a sequence of up to 8 frames, each [program byte][length
// byte pair][frame], so that state one frame leaves (CT, SNAT, fragments)
// meets the next; CT, NAT and fragment state start empty for each input.
// `make fuzz` runs these longer; CI runs each for seconds. Crashers are
// committed under testdata/fuzz as regression inputs.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/datapath/internal/raw"
)

var (
	fuzzOnce sync.Once
	fuzzDP   *Datapath
	fuzzErr  error
)

// fuzzDatapath loads the programs once per fuzzing process, with the map
// state the invariants assume.
func fuzzDatapath(f *testing.F) *Datapath {
	root := testRoot(f) // skips (or fails under CI) without root and bpffs
	fuzzOnce.Do(func() {
		fuzzDP, fuzzErr = Load(Config{BPFRoot: root, DropEventInterval: -1, EventsBufBytes: 4096}, nil)
		if fuzzErr != nil {
			return
		}
		fuzzErr = fuzzState(fuzzDP)
	})
	if fuzzErr != nil {
		f.Fatalf("load the datapath for fuzzing: %v", fuzzErr)
	}
	return fuzzDP
}

func fuzzState(dp *Datapath) error {
	m := dp.Maps()
	if err := m.PutEndpoint(EndpointEntry{IfIndex: loIfindex, ID: 7, IPv4: podIP, Identity: 1000,
		PolicyFlags: EPFlagPolicyIngress | EPFlagPolicyEgress}); err != nil {
		return err
	}
	if err := m.WriteEndpointPolicy(7, EndpointPolicy{}); err != nil {
		return err
	}
	if _, _, err := m.SyncIPCache(map[netip.Prefix]IPCacheEntry{
		netip.PrefixFrom(podIP, 32):  {Identity: 1000, EndpointID: 7},
		netip.PrefixFrom(peerIP, 32): {Identity: 2000},
	}); err != nil {
		return err
	}
	if err := m.PutUplink(loIfindex, netip.MustParseAddr("172.16.0.1"), netip.MustParseAddr("fd00:16::1")); err != nil {
		return err
	}
	o := dp.Objects()
	put := func(svc uint32, front netip.AddrPort, proto uint8, flags uint16, backends ...netip.AddrPort) error {
		for i, b := range backends {
			id := svc*10 + uint32(i)
			be := bpfobj.EndpointSlLbBackend{Port: raw.Htons(b.Port()), Proto: proto}
			be.Addr.Addr6 = raw.AddrTo(b.Addr())
			if err := o.SlLbBackends.Put(id, &be); err != nil {
				return err
			}
			k := bpfobj.EndpointSlLbKey{Port: raw.Htons(front.Port()), Proto: proto, Slot: uint16(i + 1)}
			k.Addr.Addr6 = raw.AddrTo(front.Addr())
			if err := o.SlLbSvc.Put(&k, &bpfobj.EndpointSlLbEntry{BackendId: id, SvcId: svc}); err != nil {
				return err
			}
		}
		rn := bpfobj.EndpointSlLbVip{Port: raw.Htons(front.Port())}
		rn.Addr.Addr6 = raw.AddrTo(front.Addr())
		if err := o.SlLbRevnat.Put(svc, &rn); err != nil {
			return err
		}
		k := bpfobj.EndpointSlLbKey{Port: raw.Htons(front.Port()), Proto: proto}
		k.Addr.Addr6 = raw.AddrTo(front.Addr())
		return o.SlLbSvc.Put(&k, &bpfobj.EndpointSlLbEntry{SvcId: svc, Count: uint16(len(backends)), Flags: flags, AffinityTimeout: 60})
	}
	b1, b2 := netip.MustParseAddrPort("10.0.0.9:8080"), netip.MustParseAddrPort("10.0.0.10:8080")
	for _, err := range []error{
		put(1, netip.MustParseAddrPort("10.96.0.10:80"), 6, 0, b1, b2),
		put(2, netip.MustParseAddrPort("10.96.0.11:53"), 17, 0),
		put(3, netip.MustParseAddrPort("10.96.0.12:80"), 6, 0, netip.AddrPortFrom(podIP, 8080)),
		put(4, netip.MustParseAddrPort("172.16.0.1:30080"), 6, LBFlagExternal, b1, b2),
		put(5, netip.MustParseAddrPort("172.16.0.1:30053"), 17, LBFlagExternal, b2),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// fuzzSeeds are frames the table-driven tests use: every parser branch.
func fuzzSeeds(t testing.TB) [][]byte {
	syn := tcpPkt(t, podIP, peerIP, 40000, 80, flags{syn: true})
	return [][]byte{
		syn,
		tcpPkt(t, peerIP, podIP, 80, 40000, flags{syn: true, ack: true}),
		tcpPkt(t, podIP, vip, 40001, 80, flags{syn: true}),
		tcpPkt(t, podIP, netip.MustParseAddr("10.96.0.12"), 40002, 80, flags{syn: true}),
		tcpPkt(t, netip.MustParseAddr("10.96.0.12"), podIP, 80, 40002, flags{syn: true, ack: true}),
		tcpPkt(t, peerIP, netip.MustParseAddr("172.16.0.1"), 50000, 30080, flags{syn: true}),
		udpPkt(t, podIP, netip.MustParseAddr("10.96.0.11"), 5000, 53),
		udpPkt(t, peerIP, netip.MustParseAddr("172.16.0.1"), 5000, 30053, firstFragment),
		udpPkt(t, podIP, peerIP, 5000, 53, withOptions),
		udpPkt(t, podIP, peerIP, 5000, 53, firstFragment),
		laterFragment(t, podIP, peerIP, 4242),
		icmpEcho(t, podIP, peerIP, 7, false),
		icmpUnreachable(t, peerIP, udpPkt(t, podIP, peerIP, 5000, 53)),
		icmpUnreachable(t, netip.MustParseAddr("10.0.0.10"), udpPkt(t, netip.MustParseAddr("172.16.0.1"), netip.MustParseAddr("10.0.0.10"), 61000, 8080)),
		arpPkt(t),
		ipv6Pkt(t),
		ndPkt(t),
		syn[:14+20+4], // truncated TCP header
	}
}

// encodeFuzz packs frames for program sel into one fuzz input.
func encodeFuzz(frames ...[]byte) []byte {
	var b []byte
	for i, f := range frames {
		b = append(b, byte(i))
		b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
		b = append(b, f...)
	}
	return b
}

type fuzzFrame struct {
	prog  int
	frame []byte
}

func decodeFuzz(in []byte) []fuzzFrame {
	var out []fuzzFrame
	for len(in) >= 3 && len(out) < 8 {
		n := int(binary.BigEndian.Uint16(in[1:3]))
		sel := int(in[0])
		in = in[3:]
		n = min(n, len(in), 1514)
		if n >= 14 {
			out = append(out, fuzzFrame{sel % 4, bytes.Clone(in[:n])})
		}
		in = in[n:]
	}
	return out
}

func FuzzPrograms(f *testing.F) {
	dp := fuzzDatapath(f)
	seeds := fuzzSeeds(f)
	for i, s := range seeds {
		f.Add(encodeFuzz(s))
		// And pairs: a frame, then the next seed through the other
		// direction's program, so CT-dependent branches are seeded too.
		f.Add(encodeFuzz(s, seeds[(i+1)%len(seeds)]))
	}
	progs := []*ebpf.Program{dp.objs.SlFromEp, dp.objs.SlToEp, dp.host.SlFromNetdev, dp.host.SlToNetdev}
	names := []string{"sl_from_ep", "sl_to_ep", "sl_from_netdev", "sl_to_netdev"}
	f.Fuzz(func(t *testing.T, in []byte) {
		requireSkbContext(t, progs[0])
		resetFuzzState(t, dp)
		owned := ownedMapsDigest(t, dp)
		for i, fr := range decodeFuzz(in) {
			frame := fixChecksums(fr.frame)
			opts := &ebpf.RunOptions{Data: frame, DataOut: make([]byte, 1600), Context: SkbContext{IngressIfindex: loIfindex}}
			ret, err := progs[fr.prog].Run(opts)
			if errors.Is(err, unix.EINVAL) {
				// BPF_PROG_TEST_RUN itself refuses some frames (an
				// IPv4 ethertype with no room for a header): they
				// never reach the program.
				continue
			}
			if err != nil {
				t.Fatalf("frame %d through %s: %v", i, names[fr.prog], err)
			}
			what := fmt.Sprintf("frame %d (%x) through %s: verdict %#x", i, frame, names[fr.prog], ret)
			if ret != verdictNext && ret != verdictDrop && ret != tcActRedirect {
				t.Fatalf("%s: not a tc verdict", what)
			}
			out := opts.DataOut
			if ret != verdictDrop && fr.prog < 2 {
				checkNothingAllowed(t, what, frame, out, ret)
			}
			if ret != verdictDrop && !bytes.Equal(frame, out) {
				checkChecksums(t, what, out)
			}
		}
		if d := ownedMapsDigest(t, dp); d != owned {
			t.Fatalf("the datapath wrote a map the agent owns (input %x)", in)
		}
	})
}

// checkNothingAllowed enforces invariant 2 on a frame an endpoint program
// let go (next or redirect).
func checkNothingAllowed(t *testing.T, what string, in, out []byte, ret uint32) {
	p := gopacket.NewPacket(in, layers.LayerTypeEthernet, gopacket.NoCopy)
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if eth == nil {
		return
	}
	switch eth.EthernetType {
	case layers.EthernetTypeIPv4:
		if ret == tcActRedirect && isRejectToPod(out) {
			return
		}
		t.Fatalf("%s: an IPv4 packet passed an endpoint under default deny with nothing allowed", what)
	case layers.EthernetTypeIPv6:
		if !isND(in) {
			t.Fatalf("%s: an IPv6 packet (not neighbour discovery) passed an endpoint under policy", what)
		}
	}
}

// isRejectToPod: the ICMP port unreachable a service without endpoints
// answers with, sent back to the pod.
func isRejectToPod(out []byte) bool {
	p := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.NoCopy)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	ic, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	return ip != nil && ic != nil && netip.AddrFrom4([4]byte(ip.DstIP.To4())) == podIP &&
		ic.TypeCode == layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort)
}

// isND mirrors the datapath's neighbour discovery and MLD test (parse.h:
// ipv6_walk, then icmp6_is_nd and icmp6_nd_hop_limit): past at most
// SL_IPV6_MAX_EXT extension headers (a real MLD message carries a
// hop-by-hop Router Alert) and no Fragment header, an ICMPv6 message of
// type 133-137 (router and neighbour solicitation and advertisement;
// redirect, which the programs drop) with hop limit 255, or 130-132 and
// 143 (MLD query, report, done; MLDv2 report) with hop limit 1.
func isND(f []byte) bool {
	if len(f) < 14+40 {
		return false
	}
	next, off := f[14+6], 14+40
	for range 6 {
		isExt := next == 0 || next == 43 || next == 60 || next == 51 || next == 44
		if isExt && off+8 > len(f) {
			return false
		}
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			next, off = f[off], off+(int(f[off+1])+1)*8
		case 51: // authentication
			next, off = f[off], off+(int(f[off+1])+2)*4
		case 44: // fragment: neighbour discovery is never fragmented
			return false
		}
	}
	if next != 58 || off >= len(f) {
		return false
	}
	typ, hopLimit := f[off], f[14+7]
	if typ >= 133 && typ <= 137 {
		return hopLimit == 255
	}
	return (typ >= 130 && typ <= 132 || typ == 143) && hopLimit == 1
}

// fixChecksums gives a frame valid IPv4 and TCP/UDP checksums where it is
// well formed enough to have them, so that invariant 3 is about what the
// programs wrote, not what the fuzzer made up.
func fixChecksums(f []byte) []byte {
	if len(f) < 14+20 || binary.BigEndian.Uint16(f[12:14]) != 0x0800 {
		return f
	}
	ihl := int(f[14]&0x0f) * 4
	if f[14]>>4 != 4 || ihl < 20 || len(f) < 14+ihl {
		return f
	}
	ip := f[14:]
	binary.BigEndian.PutUint16(ip[10:12], 0)
	binary.BigEndian.PutUint16(ip[10:12], inet(ip[:ihl], 0))
	totLen := int(binary.BigEndian.Uint16(ip[2:4]))
	frag := binary.BigEndian.Uint16(ip[6:8])
	if totLen > len(ip) || totLen < ihl || frag&0x3fff != 0 {
		return f
	}
	l4 := ip[ihl:totLen]
	off := map[byte]int{6: 16, 17: 6}[ip[9]]
	if off == 0 || len(l4) < off+2 || (ip[9] == 6 && len(l4) < 20) || (ip[9] == 17 && len(l4) < 8) {
		return f
	}
	binary.BigEndian.PutUint16(l4[off:], 0)
	binary.BigEndian.PutUint16(l4[off:], inet(l4, pseudo(ip, len(l4))))
	return f
}

func pseudo(ip []byte, l4len int) uint32 {
	var s uint32
	for i := 12; i < 20; i += 2 {
		s += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	return s + uint32(ip[9]) + uint32(l4len)
}

func inet(b []byte, s uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// checkChecksums enforces invariant 3 on a frame a program rewrote.
func checkChecksums(t *testing.T, what string, out []byte) {
	if len(out) < 14+20 || binary.BigEndian.Uint16(out[12:14]) != 0x0800 {
		return
	}
	ip := out[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < 20 || len(ip) < ihl {
		return
	}
	if inet(ip[:ihl], 0) != 0 {
		t.Fatalf("%s: rewritten IPv4 header checksum is wrong: %x", what, out)
	}
	totLen := int(binary.BigEndian.Uint16(ip[2:4]))
	frag := binary.BigEndian.Uint16(ip[6:8])
	if totLen > len(ip) || totLen < ihl || frag&0x3fff != 0 {
		return
	}
	l4 := ip[ihl:totLen]
	switch {
	case ip[9] == 6 && len(l4) >= 20, ip[9] == 17 && len(l4) >= 8 && binary.BigEndian.Uint16(l4[6:8]) != 0:
		if inet(l4, pseudo(ip, len(l4))) != 0 {
			t.Fatalf("%s: rewritten L4 checksum is wrong: %x", what, out)
		}
	case ip[9] == 1:
		if inet(l4, 0) != 0 {
			t.Fatalf("%s: rewritten ICMP checksum is wrong: %x", what, out)
		}
	}
}

// resetFuzzState empties what one input's frames build up, so every input
// starts from the same state and a crasher reproduces alone.
func resetFuzzState(t *testing.T, dp *Datapath) {
	for _, m := range []*ebpf.Map{dp.objs.SlCt, dp.objs.SlNat, dp.objs.SlFrag, dp.objs.SlLbAffinity, dp.objs.SlDropRl} {
		var keys [][]byte
		k := make([]byte, m.KeySize())
		it := m.Iterate()
		v := make([]byte, int(m.ValueSize())*max(1, ebpfPossibleCPUs(m)))
		for it.Next(&k, &v) {
			keys = append(keys, bytes.Clone(k))
		}
		for _, k := range keys {
			_ = m.Delete(k)
		}
	}
}

func ebpfPossibleCPUs(m *ebpf.Map) int {
	if m.Type() == ebpf.PerCPUHash || m.Type() == ebpf.PerCPUArray {
		n, _ := ebpf.PossibleCPU()
		return n
	}
	return 1
}

// ownedMapsDigest hashes the maps only the agent writes.
func ownedMapsDigest(t *testing.T, dp *Datapath) [32]byte {
	h := sha256.New()
	o := &dp.objs
	for _, m := range []*ebpf.Map{o.SlLbSvc, o.SlLbBackends, o.SlLbRevnat, o.SlEndpoints, o.SlIpcache, o.SlUplinks, o.SlPolicyRev} {
		k := make([]byte, m.KeySize())
		v := make([]byte, m.ValueSize())
		var rows [][]byte
		it := m.Iterate()
		for it.Next(&k, &v) {
			rows = append(rows, append(bytes.Clone(k), v...))
		}
		// Hash order is iteration order: sort for a stable digest.
		sortBytes(rows)
		for _, r := range rows {
			h.Write(r)
		}
	}
	var d [32]byte
	copy(d[:], h.Sum(nil))
	return d
}

func sortBytes(rows [][]byte) {
	for i := 1; i < len(rows); i++ {
		for j := i; j > 0 && bytes.Compare(rows[j-1], rows[j]) > 0; j-- {
			rows[j-1], rows[j] = rows[j], rows[j-1]
		}
	}
}
