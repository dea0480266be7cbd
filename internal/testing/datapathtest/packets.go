package datapathtest

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath"
)

// IPv4Packet is an Ethernet frame carrying an IPv4 packet from src to dst
// with the layers l4 after the IP header, lengths and checksums computed:
// what BPF_PROG_TEST_RUN takes for a tc program.
func IPv4Packet(tb testing.TB, src, dst netip.Addr, proto layers.IPProtocol, l4 ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	eth := &layers.Ethernet{
		SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		EthernetType: layers.EthernetTypeIPv4,
	}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	for _, l := range l4 {
		if n, ok := l.(interface {
			SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
		}); ok {
			if err := n.SetNetworkLayerForChecksum(ip); err != nil {
				tb.Fatalf("checksum layer: %v", err)
			}
		}
	}
	buf := gopacket.NewSerializeBuffer()
	all := append([]gopacket.SerializableLayer{eth, ip}, l4...)
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, all...); err != nil {
		tb.Fatalf("serialize packet: %v", err)
	}
	return buf.Bytes()
}

// TCP is a TCP segment from src to dst: the first of a connection (SYN)
// when syn, else a data segment (ACK) of an established one.
func TCP(tb testing.TB, src, dst netip.AddrPort, syn bool) []byte {
	tb.Helper()
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), SYN: syn, ACK: !syn, Window: 1000}
	return IPv4Packet(tb, src.Addr(), dst.Addr(), layers.IPProtocolTCP, tcp, gopacket.Payload("hello"))
}

// Verdicts of tc programs.
const (
	// VerdictNext is TC_ACT_UNSPEC / TCX_NEXT (-1): the packet goes on.
	VerdictNext = ^uint32(0)
	// VerdictDrop is TC_ACT_SHOT.
	VerdictDrop = 2
)

// Run runs the tc program prog once on pkt, as arrived on the interface
// ingressIfindex (0: sent by the node's own stack, which policy sees as
// the host identity), and returns its verdict and the IPv4 destination of
// the packet it leaves (after any translation).
func Run(tb testing.TB, prog *ebpf.Program, pkt []byte, ingressIfindex uint32) (uint32, netip.AddrPort) {
	tb.Helper()
	opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, 1600),
		Context: datapath.SkbContext{IngressIfindex: ingressIfindex}}
	ret, err := prog.Run(opts)
	if err != nil {
		if errors.Is(err, unix.EINVAL) && skbContextRefused(prog) {
			tb.Skip("BPF_PROG_TEST_RUN takes no skb context (ingress_ifindex) on this kernel (Linux 5.11+): the packet's origin cannot be set in a test run")
		}
		tb.Fatalf("run %s: %v", prog, err)
	}
	p := gopacket.NewPacket(opts.DataOut, layers.LayerTypeEthernet, gopacket.Default)
	ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if !ok {
		tb.Fatalf("output of %s has no IPv4 header: %v", prog, p.ErrorLayer())
	}
	a, _ := netip.AddrFromSlice(ip.DstIP.To4())
	var port uint16
	switch l4 := p.TransportLayer().(type) {
	case *layers.TCP:
		port = uint16(l4.DstPort)
	case *layers.UDP:
		port = uint16(l4.DstPort)
	}
	return ret, netip.AddrPortFrom(a, port)
}

var skbCtx struct {
	once    sync.Once
	refused bool
}

// skbContextRefused says whether this kernel's BPF_PROG_TEST_RUN refuses an
// skb context with ingress_ifindex (EINVAL before 5.11), trying prog once
// on an ARP frame, which every tc program of the datapath passes: a Run
// that failed for another reason still fails its test.
func skbContextRefused(prog *ebpf.Program) bool {
	skbCtx.once.Do(func() {
		arp := make([]byte, 14+28)
		copy(arp, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06})
		copy(arp[14:], []byte{0, 1, 8, 0, 6, 4, 0, 1})
		_, err := prog.Run(&ebpf.RunOptions{Data: arp, Context: datapath.SkbContext{IngressIfindex: 1}})
		skbCtx.refused = errors.Is(err, unix.EINVAL)
	})
	return skbCtx.refused
}

// FlowHash is the datapath's flow_hash of a connection as lb_select feeds
// it (bpf/lib/lb.h): addresses and ports as the packet carries them (network
// order) read as native integers. A Maglev pick is the entry
// FlowHash % table size of the frontend's table; a test that predicts it
// tells a Maglev lookup from the random fallback.
func FlowHash(src, dst netip.AddrPort, proto uint8) uint32 {
	s, d := src.Addr().As4(), dst.Addr().As4()
	var sp, dp [2]byte
	binary.BigEndian.PutUint16(sp[:], src.Port())
	binary.BigEndian.PutUint16(dp[:], dst.Port())
	ports := uint32(binary.NativeEndian.Uint16(sp[:]))<<16 | uint32(binary.NativeEndian.Uint16(dp[:]))
	a, b, c := binary.NativeEndian.Uint32(s[:]), binary.NativeEndian.Uint32(d[:]), ports^uint32(proto)
	h := a*0xcc9e2d51 ^ b*0x1b873593 ^ c*0xe6546b64
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}
