package datapath

// BPF unit tests: the endpoint programs run through BPF_PROG_TEST_RUN with
// packets built in Go. Each case sets map state, runs one or more packets
// and checks the verdict, the emitted events, the counters and CT.
//
//	  pod 10.0.0.1 (endpoint 7, ifindex 1 = lo during test runs)
//	     │  sl_from_ep: packets the pod sends   (egress)
//	     │  sl_to_ep:   packets the pod receives (ingress)
//	  peer 10.0.0.2

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/internal/testing/testutil"
	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/datapath/events"
	"github.com/sluice-net/sluice/pkg/datapath/internal/raw"
)

const (
	verdictNext = ^uint32(0) // TC_ACT_UNSPEC / TCX_NEXT (-1)
	verdictDrop = 2          // TC_ACT_SHOT
	loIfindex   = 1          // BPF_PROG_TEST_RUN runs on loopback
)

var (
	podIP  = netip.MustParseAddr("10.0.0.1")
	peerIP = netip.MustParseAddr("10.0.0.2")
)

// testRoot makes a fresh bpffs directory removed at the end of the test
// (and by a later test process if this one is killed first).
func testRoot(t testing.TB) string {
	t.Helper()
	testutil.RequireRoot(t)
	if err := checkBPFFS("/sys/fs/bpf"); err != nil {
		testutil.SkipOrFail(t, fmt.Sprintf("needs bpffs mounted at /sys/fs/bpf: %v", err))
	}
	return testutil.BPFRoot(t)
}

func loadTest(t *testing.T, cfg Config) *Datapath {
	t.Helper()
	if cfg.BPFRoot == "" {
		cfg.BPFRoot = testRoot(t)
	}
	dp, err := Load(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { dp.Close() })
	require.NoError(t, dp.Maps().PutEndpoint(EndpointEntry{IfIndex: loIfindex, ID: 7, IPv4: podIP}))
	return dp
}

type pktOpt func(*layers.IPv4)

func withOptions(ip *layers.IPv4) {
	// A 4-byte "no-op, no-op, no-op, end of list" option: IHL 6.
	ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
}

func firstFragment(ip *layers.IPv4) { ip.Id = 4242; ip.Flags = layers.IPv4MoreFragments }

func serialize(t testing.TB, src, dst netip.Addr, proto layers.IPProtocol, l4 []gopacket.SerializableLayer, opts ...pktOpt) []byte {
	t.Helper()
	eth := &layers.Ethernet{
		SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		EthernetType: layers.EthernetTypeIPv4,
	}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	for _, o := range opts {
		o(ip)
	}
	for _, l := range l4 {
		if n, ok := l.(interface {
			SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
		}); ok {
			require.NoError(t, n.SetNetworkLayerForChecksum(ip))
		}
	}
	buf := gopacket.NewSerializeBuffer()
	layersAll := append([]gopacket.SerializableLayer{eth, ip}, l4...)
	require.NoError(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, layersAll...))
	return buf.Bytes()
}

type flags struct{ syn, ack, fin, rst bool }

func tcpPkt(t testing.TB, src, dst netip.Addr, sport, dport uint16, f flags, opts ...pktOpt) []byte {
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), SYN: f.syn, ACK: f.ack, FIN: f.fin, RST: f.rst, Window: 1000}
	return serialize(t, src, dst, layers.IPProtocolTCP, []gopacket.SerializableLayer{tcp, gopacket.Payload("hello")}, opts...)
}

func udpPkt(t testing.TB, src, dst netip.Addr, sport, dport uint16, opts ...pktOpt) []byte {
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	return serialize(t, src, dst, layers.IPProtocolUDP, []gopacket.SerializableLayer{udp, gopacket.Payload("ping")}, opts...)
}

func icmpEcho(t testing.TB, src, dst netip.Addr, id uint16, reply bool) []byte {
	typ := uint8(layers.ICMPv4TypeEchoRequest)
	if reply {
		typ = layers.ICMPv4TypeEchoReply
	}
	ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, 0), Id: id, Seq: 1}
	return serialize(t, src, dst, layers.IPProtocolICMPv4, []gopacket.SerializableLayer{ic, gopacket.Payload("x")})
}

// icmpUnreachable is what a host sends back to src for a UDP datagram it
// could not deliver: the error embeds the datagram's IP and UDP headers.
func icmpUnreachable(t testing.TB, from netip.Addr, inner []byte) []byte {
	ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort)}
	innerIP := inner[14 : 14+28] // IPv4 header + 8 bytes of UDP
	dst := netip.AddrFrom4([4]byte(inner[14+12 : 14+16]))
	return serialize(t, from, dst, layers.IPProtocolICMPv4, []gopacket.SerializableLayer{ic, gopacket.Payload(innerIP)})
}

// laterFragment is a non-first fragment: raw payload, no L4 header.
func laterFragment(t testing.TB, src, dst netip.Addr, id uint16) []byte {
	return serialize(t, src, dst, layers.IPProtocolUDP, []gopacket.SerializableLayer{gopacket.Payload("fragment-tail-bytes")},
		func(ip *layers.IPv4) { ip.Id = id; ip.FragOffset = 2 })
}

func arpPkt(t testing.TB) []byte {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP}
	arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: layers.ARPRequest, SourceHwAddress: eth.SrcMAC, SourceProtAddress: podIP.AsSlice(),
		DstHwAddress: make([]byte, 6), DstProtAddress: peerIP.AsSlice()}
	buf := gopacket.NewSerializeBuffer()
	require.NoError(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{}, eth, arp))
	return buf.Bytes()
}

func ipv6Pkt(t testing.TB) []byte {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: net.ParseIP("fd00::1"), DstIP: net.ParseIP("fd00::2")}
	udp := &layers.UDP{SrcPort: 1, DstPort: 2}
	require.NoError(t, udp.SetNetworkLayerForChecksum(ip))
	buf := gopacket.NewSerializeBuffer()
	require.NoError(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, udp))
	return buf.Bytes()
}

// step is one packet through one program and what must come of it.
type step struct {
	egress  bool // through sl_from_ep (pod sends) rather than sl_to_ep
	pkt     func(t testing.TB) []byte
	verdict uint32
	events  []string // "trace" / "drop:<REASON>", in order
}

func out(pkt func(t testing.TB) []byte, events ...string) step {
	return step{egress: true, pkt: pkt, verdict: verdictNext, events: events}
}

func in(pkt func(t testing.TB) []byte, events ...string) step {
	return step{pkt: pkt, verdict: verdictNext, events: events}
}

func dropped(egress bool, pkt func(t testing.TB) []byte, reason string) step {
	return step{egress: egress, pkt: pkt, verdict: verdictDrop, events: []string{"drop:" + reason}}
}

func runStep(t *testing.T, dp *Datapath, rd *events.Reader, i int, s step) {
	t.Helper()
	prog := dp.objs.SlToEp
	if s.egress {
		prog = dp.objs.SlFromEp
	}
	ret, err := prog.Run(&ebpf.RunOptions{Data: s.pkt(t)})
	require.NoError(t, err, "step %d", i)
	require.Equal(t, s.verdict, ret, "step %d verdict", i)
	var got []string
	for {
		rd.SetDeadline(time.Now().Add(20 * time.Millisecond))
		ev, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		require.NoError(t, err)
		if ev.Type == events.Drop {
			got = append(got, "drop:"+ev.Reason.String())
		} else {
			got = append(got, ev.Type.String())
		}
		require.Equal(t, uint32(7), ev.EndpointID, "step %d event endpoint", i)
	}
	require.Equal(t, s.events, got, "step %d events", i)
}

// A closed connection is reported once, with its totals in both
// directions and its duration, under the tuple of its first packet.
func TestConnectionEndEvent(t *testing.T) {
	dp := loadTest(t, Config{})
	rd, err := events.NewReader(dp.EventRing())
	require.NoError(t, err)
	defer rd.Close()
	for _, st := range []struct {
		in  bool // toward the pod (sl_to_ep)
		pkt []byte
	}{
		{false, tcpPkt(t, podIP, peerIP, 40000, 80, flags{syn: true})},
		{true, tcpPkt(t, peerIP, podIP, 80, 40000, flags{syn: true, ack: true})},
		{false, tcpPkt(t, podIP, peerIP, 40000, 80, flags{ack: true})},
		{false, tcpPkt(t, podIP, peerIP, 40000, 80, flags{fin: true, ack: true})},
		{true, tcpPkt(t, peerIP, podIP, 80, 40000, flags{fin: true, ack: true})},
		{false, tcpPkt(t, podIP, peerIP, 40000, 80, flags{ack: true})},
	} {
		prog := dp.objs.SlFromEp
		if st.in {
			prog = dp.objs.SlToEp
		}
		_, err := prog.Run(&ebpf.RunOptions{Data: st.pkt})
		require.NoError(t, err)
	}
	var end events.Event
	for {
		rd.SetDeadline(time.Now().Add(100 * time.Millisecond))
		ev, err := rd.Read()
		require.NoError(t, err, "no end event")
		if ev.Type == events.ConnEnd {
			end = ev
			break
		}
	}
	require.Equal(t, events.DirEgress, end.Dir, "the connection's origin")
	require.Equal(t, netip.AddrPortFrom(podIP, 40000), end.Src, "the tuple of the first packet")
	require.Equal(t, netip.AddrPortFrom(peerIP, 80), end.Dst)
	require.EqualValues(t, 3, end.PacketsOrig, "SYN, ACK, FIN")
	require.EqualValues(t, 2, end.PacketsReply, "SYN-ACK, FIN")
	require.NotZero(t, end.BytesOrig)
	require.Greater(t, end.Duration, time.Duration(0))
	require.False(t, end.Expired)
	rd.SetDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = rd.Read()
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "reported once: the last ACK after close is not another end")
}

// Repeated drops of one flow are one event per interval, the next one
// carrying how many were not reported; counters count them all.
func TestDropEventsAreRateLimited(t *testing.T) {
	dp := loadTest(t, Config{DropEventInterval: 300 * time.Millisecond})
	rd, err := events.NewReader(dp.EventRing())
	require.NoError(t, err)
	defer rd.Close()
	spoofed := udpPkt(t, netip.MustParseAddr("10.9.9.9"), peerIP, 5000, 53)
	other := udpPkt(t, netip.MustParseAddr("10.9.9.9"), peerIP, 5001, 53)
	send := func(pkt []byte) {
		ret, err := dp.objs.SlFromEp.Run(&ebpf.RunOptions{Data: pkt})
		require.NoError(t, err)
		require.Equal(t, uint32(verdictDrop), ret)
	}
	for range 4 {
		send(spoofed)
	}
	send(other) // another flow: its own event
	var got []events.Event
	for {
		rd.SetDeadline(time.Now().Add(50 * time.Millisecond))
		ev, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		require.NoError(t, err)
		got = append(got, ev)
	}
	require.Len(t, got, 2, "one event per flow: %+v", got)
	time.Sleep(350 * time.Millisecond)
	send(spoofed)
	ev := nextEvent(t, rd)
	require.Equal(t, "INVALID_SOURCE_IP", ev.Reason.String())
	require.EqualValues(t, 3, ev.Suppressed, "the three drops not reported")
	cs, err := dp.Maps().Counters()
	require.NoError(t, err)
	var n uint64
	for _, c := range cs {
		if c.Reason == "INVALID_SOURCE_IP" {
			n += c.Packets
		}
	}
	require.EqualValues(t, 6, n, "counters count every drop")
}

// A full ring buffer loses events, and the loss is counted exactly:
// events read + events counted lost = events emitted.
func TestLostEventsAreCountedExactly(t *testing.T) {
	dp := loadTest(t, Config{EventsBufBytes: 4096})
	const conns = 200 // each a new connection: one trace event
	for i := range conns {
		_, err := dp.objs.SlFromEp.Run(&ebpf.RunOptions{Data: tcpPkt(t, podIP, peerIP, uint16(20000+i), 80, flags{syn: true})})
		require.NoError(t, err)
	}
	rd, err := events.NewReader(dp.EventRing())
	require.NoError(t, err)
	defer rd.Close()
	read := 0
	for {
		rd.SetDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		require.NoError(t, err)
		read++
	}
	cs, err := dp.Maps().Counters()
	require.NoError(t, err)
	var lost uint64
	for _, c := range cs {
		if c.Metric == "events-lost" {
			lost += c.Packets
		}
	}
	require.NotZero(t, lost, "a 4 KiB ring cannot hold %d events", conns)
	require.Less(t, read, conns)
	require.EqualValues(t, conns, uint64(read)+lost, "read %d + lost %d", read, lost)
}

// Idle connections end by expiring: the CT GC reports them.
func TestExpiredConnectionsAreReported(t *testing.T) {
	dp := loadTest(t, Config{CTTimeoutOther: time.Second})
	_, err := dp.objs.SlFromEp.Run(&ebpf.RunOptions{Data: udpPkt(t, podIP, peerIP, 5000, 53)})
	require.NoError(t, err)
	_, err = dp.objs.SlToEp.Run(&ebpf.RunOptions{Data: udpPkt(t, peerIP, podIP, 53, 5000)})
	require.NoError(t, err)
	time.Sleep(1100 * time.Millisecond)
	var ended []events.Event
	st, err := dp.Maps().GCCT(nil, func(ev events.Event) { ended = append(ended, ev) })
	require.NoError(t, err)
	require.EqualValues(t, 1, st.Expired)
	require.Len(t, ended, 1)
	require.True(t, ended[0].Expired)
	require.Equal(t, uint8(unix.IPPROTO_UDP), ended[0].Proto)
	require.EqualValues(t, 1, ended[0].PacketsOrig)
	require.EqualValues(t, 1, ended[0].PacketsReply)
	require.Equal(t, uint32(7), ended[0].EndpointID)
}

func ctOf(t *testing.T, dp *Datapath) []CTEntry {
	ct, err := dp.Maps().ListCT()
	require.NoError(t, err)
	return ct
}

func TestEndpointPrograms(t *testing.T) {
	p := func(f func(t testing.TB) []byte) func(t testing.TB) []byte { return f }
	syn := p(func(t testing.TB) []byte { return tcpPkt(t, podIP, peerIP, 40000, 80, flags{syn: true}) })
	synAck := p(func(t testing.TB) []byte { return tcpPkt(t, peerIP, podIP, 80, 40000, flags{syn: true, ack: true}) })
	ack := p(func(t testing.TB) []byte { return tcpPkt(t, podIP, peerIP, 40000, 80, flags{ack: true}) })
	fin := p(func(t testing.TB) []byte { return tcpPkt(t, podIP, peerIP, 40000, 80, flags{fin: true, ack: true}) })
	finBack := p(func(t testing.TB) []byte { return tcpPkt(t, peerIP, podIP, 80, 40000, flags{fin: true, ack: true}) })
	rst := p(func(t testing.TB) []byte { return tcpPkt(t, peerIP, podIP, 80, 40000, flags{rst: true}) })
	udpOut := p(func(t testing.TB) []byte { return udpPkt(t, podIP, peerIP, 5000, 53) })

	cases := []struct {
		name  string
		steps []step
		// ct checks the CT table after the steps (nil: no check).
		ct func(t *testing.T, ct []CTEntry)
		// counters that must be present (metric/dir[/reason]) with packets >= 1.
		counters []string
	}{
		{
			name:  "tcp handshake is tracked, one trace event per connection",
			steps: []step{out(syn, "trace"), in(synAck), out(ack), out(ack), in(synAck)},
			ct: func(t *testing.T, ct []CTEntry) {
				require.Len(t, ct, 1)
				require.Equal(t, "established", ct[0].State)
				require.Equal(t, "egress", ct[0].Origin)
				require.Equal(t, "10.0.0.1:40000", ct[0].Src)
				require.Equal(t, "10.0.0.2:80", ct[0].Dst)
				require.EqualValues(t, 3, ct[0].PacketsOrig)
				require.EqualValues(t, 2, ct[0].PacketsReply)
			},
			counters: []string{"forwarded/egress", "forwarded/ingress"},
		},
		{
			name:  "inbound connection has ingress origin",
			steps: []step{in(p(func(t testing.TB) []byte { return tcpPkt(t, peerIP, podIP, 33000, 8080, flags{syn: true}) }), "trace")},
			ct: func(t *testing.T, ct []CTEntry) {
				require.Len(t, ct, 1)
				require.Equal(t, "ingress", ct[0].Origin)
				require.Equal(t, "syn-sent", ct[0].State)
			},
		},
		{
			name:  "FIN both ways closes; a new SYN on the closed tuple is a new connection",
			steps: []step{out(syn, "trace"), in(synAck), out(ack), out(fin), in(finBack, "end"), out(syn, "trace")},
			ct: func(t *testing.T, ct []CTEntry) {
				require.Len(t, ct, 1)
				require.Equal(t, "syn-sent", ct[0].State)
				require.EqualValues(t, 1, ct[0].PacketsOrig, "reopened entry starts counting afresh")
			},
		},
		{
			name:  "RST closes",
			steps: []step{out(syn, "trace"), in(rst, "end")},
			ct:    func(t *testing.T, ct []CTEntry) { require.Equal(t, "closed", ct[0].State) },
		},
		{
			name:  "mid-stream TCP is picked up as established",
			steps: []step{out(ack, "trace"), in(synAck)},
			ct:    func(t *testing.T, ct []CTEntry) { require.Equal(t, "established", ct[0].State) },
		},
		{
			name:  "IP options are skipped to find the ports",
			steps: []step{out(p(func(t testing.TB) []byte { return tcpPkt(t, podIP, peerIP, 41000, 443, flags{syn: true}, withOptions) }), "trace")},
			ct: func(t *testing.T, ct []CTEntry) {
				require.Equal(t, "10.0.0.2:443", ct[0].Dst)
				require.Equal(t, "10.0.0.1:41000", ct[0].Src)
			},
		},
		{
			name:  "UDP request and reply",
			steps: []step{out(udpOut, "trace"), in(p(func(t testing.TB) []byte { return udpPkt(t, peerIP, podIP, 53, 5000) }))},
			ct: func(t *testing.T, ct []CTEntry) {
				require.Len(t, ct, 1)
				require.Equal(t, "UDP", ct[0].Proto)
				require.Equal(t, "established", ct[0].State)
			},
		},
		{
			name: "fragments: the first carries ports, later ones reuse them",
			steps: []step{
				out(p(func(t testing.TB) []byte { return udpPkt(t, podIP, peerIP, 6000, 7000, firstFragment) }), "trace"),
				out(p(func(t testing.TB) []byte { return laterFragment(t, podIP, peerIP, 4242) })),
			},
			ct: func(t *testing.T, ct []CTEntry) {
				require.Len(t, ct, 1, "the later fragment must not be misparsed into a flow of its own")
				require.Equal(t, "10.0.0.2:7000", ct[0].Dst)
				require.EqualValues(t, 2, ct[0].PacketsOrig)
			},
		},
		{
			name:     "a later fragment whose first fragment was never seen is dropped",
			steps:    []step{dropped(true, p(func(t testing.TB) []byte { return laterFragment(t, podIP, peerIP, 999) }), "FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND")},
			ct:       func(t *testing.T, ct []CTEntry) { require.Empty(t, ct) },
			counters: []string{"dropped/egress/FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND"},
		},
		{
			name: "ICMP echo request and reply",
			steps: []step{
				out(p(func(t testing.TB) []byte { return icmpEcho(t, podIP, peerIP, 77, false) }), "trace"),
				in(p(func(t testing.TB) []byte { return icmpEcho(t, peerIP, podIP, 77, true) })),
			},
			ct: func(t *testing.T, ct []CTEntry) {
				require.Len(t, ct, 1)
				require.Equal(t, "ICMP", ct[0].Proto)
				require.Equal(t, "10.0.0.1:77", ct[0].Src)
				require.Equal(t, "established", ct[0].State)
			},
		},
		{
			name: "ICMP error about a tracked flow is related, creates nothing",
			steps: []step{
				out(udpOut, "trace"),
				in(p(func(t testing.TB) []byte { return icmpUnreachable(t, peerIP, udpPkt(t, podIP, peerIP, 5000, 53)) })),
			},
			ct:       func(t *testing.T, ct []CTEntry) { require.Len(t, ct, 1) },
			counters: []string{"related-icmp/ingress"},
		},
		{
			name: "spoofed source address is dropped",
			steps: []step{dropped(true, p(func(t testing.TB) []byte {
				return tcpPkt(t, netip.MustParseAddr("10.9.9.9"), peerIP, 1, 2, flags{syn: true})
			}), "INVALID_SOURCE_IP")},
			ct:       func(t *testing.T, ct []CTEntry) { require.Empty(t, ct) },
			counters: []string{"dropped/egress/INVALID_SOURCE_IP"},
		},
		{
			name: "truncated TCP header is dropped",
			steps: []step{dropped(true, p(func(t testing.TB) []byte {
				b := tcpPkt(t, podIP, peerIP, 1, 2, flags{syn: true})
				return b[:14+20+8]
			}), "CT_TRUNCATED_OR_INVALID_HEADER")},
		},
		{
			name: "IHL below 5 is dropped",
			steps: []step{dropped(false, p(func(t testing.TB) []byte {
				b := udpPkt(t, peerIP, podIP, 1, 2)
				b[14] = 0x44
				return b
			}), "INVALID_PACKET_DROPPED")},
		},
		{
			// Routing advice is not an error of a flow: never translated
			// back, and no pod takes it (a bridge node's own redirect
			// would route a VIP around the translation).
			name: "an ICMP redirect is dropped both ways",
			steps: []step{
				dropped(false, p(func(t testing.TB) []byte { return icmpRedirectPkt(t, peerIP, podIP) }), "ICMP_REDIRECT"),
				dropped(true, p(func(t testing.TB) []byte { return icmpRedirectPkt(t, podIP, peerIP) }), "ICMP_REDIRECT"),
			},
			ct: func(t *testing.T, ct []CTEntry) { require.Empty(t, ct) },
		},
		{
			name:     "ARP passes untouched",
			steps:    []step{out(arpPkt)},
			ct:       func(t *testing.T, ct []CTEntry) { require.Empty(t, ct) },
			counters: []string{"passed-non-ip/egress"},
		},
		{
			name:     "IPv6 neighbour discovery is counted and passed, untracked",
			steps:    []step{out(ndPkt), in(ndPkt)},
			ct:       func(t *testing.T, ct []CTEntry) { require.Empty(t, ct) },
			counters: []string{"passed-ipv6/egress", "passed-ipv6/ingress"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dp := loadTest(t, Config{})
			rd, err := events.NewReader(dp.EventRing())
			require.NoError(t, err)
			defer rd.Close()
			for i, s := range tc.steps {
				runStep(t, dp, rd, i, s)
			}
			if tc.ct != nil {
				tc.ct(t, ctOf(t, dp))
			}
			counters, err := dp.Maps().Counters()
			require.NoError(t, err)
			have := map[string]uint64{}
			for _, c := range counters {
				k := c.Metric + "/" + c.Dir
				if c.Reason != "" {
					k += "/" + c.Reason
				}
				have[k] += c.Packets
			}
			for _, want := range tc.counters {
				require.NotZero(t, have[want], "counter %s missing; have %v", want, have)
			}
		})
	}
}

// Same-node pod-to-pod traffic passes the client's egress program and the
// server's ingress program; each endpoint keeps its own CT view.
func TestConntrackIsPerEndpoint(t *testing.T) {
	dp := loadTest(t, Config{})
	rd, err := events.NewReader(dp.EventRing())
	require.NoError(t, err)
	defer rd.Close()
	syn := func(t testing.TB) []byte { return tcpPkt(t, podIP, peerIP, 40000, 80, flags{syn: true}) }
	runStep(t, dp, rd, 0, out(syn, "trace"))

	// The same packet seen by another endpoint (the server, ID 8) is new there.
	require.NoError(t, dp.Maps().PutEndpoint(EndpointEntry{IfIndex: loIfindex, ID: 8, IPv4: peerIP}))
	rd2 := rd
	ret, err := dp.objs.SlToEp.Run(&ebpf.RunOptions{Data: syn(t)})
	require.NoError(t, err)
	require.Equal(t, verdictNext, ret)
	rd2.SetDeadline(time.Now().Add(50 * time.Millisecond))
	ev, err := rd2.Read()
	require.NoError(t, err)
	require.Equal(t, events.ConnNew, ev.Type)
	require.Equal(t, uint32(8), ev.EndpointID)
	require.Equal(t, events.DirIngress, ev.Dir)

	ct := ctOf(t, dp)
	require.Len(t, ct, 2)
	require.ElementsMatch(t, []uint32{7, 8}, []uint32{ct[0].EndpointID, ct[1].EndpointID})

	// GC of a removed endpoint takes only its entries.
	st, err := dp.Maps().GCCT(func(id uint32) bool { return id == 7 }, nil)
	require.NoError(t, err)
	require.Equal(t, 1, st.Deleted)
	require.Equal(t, 1, st.Live)
}

// A full CT table drops new connections with a visible reason rather than
// letting them through untracked.
func TestConntrackFullIsCountedDrop(t *testing.T) {
	dp := loadTest(t, Config{CTMax: 1024})
	rd, err := events.NewReader(dp.EventRing())
	require.NoError(t, err)
	defer rd.Close()
	v := bpfobj.EndpointSlCtEntry{Expires: ^uint64(0) >> 1, State: 3}
	for i := range 1024 {
		k := bpfobj.EndpointSlCtKey{EpId: 99, Family: 2, Proto: 6, Sport: uint16(i)}
		require.NoError(t, dp.objs.SlCt.Put(&k, &v))
	}
	syn := func(t testing.TB) []byte { return tcpPkt(t, podIP, peerIP, 40000, 80, flags{syn: true}) }
	runStep(t, dp, rd, 0, dropped(true, syn, "CT_MAP_INSERTION_FAILED"))

	// Expired entries are reclaimed by GC and traffic flows again.
	v.Expires = 1
	k := bpfobj.EndpointSlCtKey{EpId: 99, Family: 2, Proto: 6, Sport: 0}
	require.NoError(t, dp.objs.SlCt.Put(&k, &v))
	st, err := dp.Maps().GCCT(nil, nil)
	require.NoError(t, err)
	require.Equal(t, 1, st.Deleted)
	runStep(t, dp, rd, 1, out(syn, "trace"))
}

// Expired entries are dead for the datapath even before GC runs.
func TestConntrackExpiryWithoutGC(t *testing.T) {
	dp := loadTest(t, Config{})
	rd, err := events.NewReader(dp.EventRing())
	require.NoError(t, err)
	defer rd.Close()
	udp := func(t testing.TB) []byte { return udpPkt(t, podIP, peerIP, 5000, 53) }
	runStep(t, dp, rd, 0, out(udp, "trace"))
	var (
		k bpfobj.EndpointSlCtKey
		v bpfobj.EndpointSlCtEntry
	)
	it := dp.objs.SlCt.Iterate()
	require.True(t, it.Next(&k, &v))
	v.Expires = raw.MonotonicNow() - 1
	require.NoError(t, dp.objs.SlCt.Put(&k, &v))
	runStep(t, dp, rd, 1, out(udp, "trace"))
}

// Maps are adopted across loads; a resized map is migrated with its
// entries; a changed layout fingerprint forces a replacement.
func TestPinAdoptionAndMigration(t *testing.T) {
	root := testRoot(t)
	dp1, err := Load(Config{BPFRoot: root, CTMax: 2048}, nil)
	require.NoError(t, err)
	require.False(t, dp1.Adopted)
	k := bpfobj.EndpointSlCtKey{EpId: 1, Family: 2, Proto: 6, Sport: 7}
	v := bpfobj.EndpointSlCtEntry{Expires: ^uint64(0) >> 1, State: 3}
	require.NoError(t, dp1.objs.SlCt.Put(&k, &v))
	require.NoError(t, dp1.Maps().PutEndpoint(EndpointEntry{IfIndex: 5, ID: 3, IPv4: podIP}))
	dp1.Close()

	dp2, err := Load(Config{BPFRoot: root, CTMax: 2048}, nil)
	require.NoError(t, err)
	require.True(t, dp2.Adopted)
	require.Empty(t, dp2.Replaced)
	var got bpfobj.EndpointSlCtEntry
	require.NoError(t, dp2.objs.SlCt.Lookup(&k, &got))
	dp2.Close()

	dp3, err := Load(Config{BPFRoot: root, CTMax: 4096}, nil)
	require.NoError(t, err)
	require.Len(t, dp3.Replaced, 1)
	require.Contains(t, dp3.Replaced[0], "migrated 2048 -> 4096")
	require.EqualValues(t, 4096, dp3.objs.SlCt.MaxEntries())
	require.NoError(t, dp3.objs.SlCt.Lookup(&k, &got), "CT entry survives the resize")
	eps, err := dp3.Maps().ListEndpoints()
	require.NoError(t, err)
	require.Len(t, eps, 1)

	// Simulate an older agent's different value layout for sl_endpoints.
	lk := layoutKey(bpfobj.EndpointMapSlEndpoints)
	require.NoError(t, dp3.objs.SlLayout.Put(&lk, uint64(12345)))
	dp3.Close()
	dp4, err := Load(Config{BPFRoot: root, CTMax: 4096}, nil)
	require.NoError(t, err)
	defer dp4.Close()
	require.Len(t, dp4.Replaced, 1)
	require.Contains(t, dp4.Replaced[0], "sl_endpoints: replaced (type, key/value or inner map layout changed: fingerprint 0x3039")
	eps, err = dp4.Maps().ListEndpoints()
	require.NoError(t, err)
	require.Empty(t, eps, "a map with another layout is replaced, never misread")
	require.NoError(t, dp4.objs.SlCt.Lookup(&k, &got))
}

// The CLI reads pins without loading programs.
func TestOpenPinned(t *testing.T) {
	dp := loadTest(t, Config{})
	m, err := OpenPinned(dp.cfg.BPFRoot)
	require.NoError(t, err)
	defer m.Close()
	eps, err := m.ListEndpoints()
	require.NoError(t, err)
	require.Equal(t, []EndpointEntry{{IfIndex: loIfindex, ID: 7, IPv4: podIP}}, eps)

	_, err = OpenPinned(filepath.Join(dp.cfg.BPFRoot, "nope"))
	require.ErrorContains(t, err, "--bpf-root")
}

func TestLockRoot(t *testing.T) {
	root := testRoot(t)
	l1, err := LockRoot(root)
	require.NoError(t, err)
	_, err = LockRoot(root)
	require.ErrorContains(t, err, "locked by another sluice agent")
	require.NoError(t, l1.Close())
	l2, err := LockRoot(root)
	require.NoError(t, err)
	l2.Close()
}

func TestConfigValidate(t *testing.T) {
	err := Config{CTMax: 10, EventsBufBytes: 5000}.Validate()
	require.ErrorContains(t, err, "ct-max 10")
	require.ErrorContains(t, err, "events-buffer 5000")
	require.NoError(t, Defaults().Validate())
	_ = fmt.Sprint
}

// What each --flow-events level reports of the same traffic: a connection
// into the pod from another pod of the node (its client's endpoint sees it
// too), one from outside, and a drop; counters count all of it always.
//
//	local  10.0.0.9 (endpoint 9) ──► pod 10.0.0.1:80 (endpoint 7)
//	remote 10.0.0.2              ──► pod 10.0.0.1:80
//	pod ──► 192.0.2.1 with a forged source: dropped (INVALID_SOURCE_IP)
func TestFlowEventsLevels(t *testing.T) {
	localPeer := netip.MustParseAddr("10.0.0.9")
	for _, tc := range []struct {
		level FlowEvents
		// want: events of the local connection (new, end), of the
		// remote one (new, end), drops.
		want string
	}{
		{FlowEventsAll, "local:trace,end remote:trace,end drop"},
		{FlowEventsConnections, "remote:trace,end drop"},
		{FlowEventsDropsAndVerdicts, "drop"},
		{FlowEventsNone, ""},
	} {
		t.Run(string(tc.level), func(t *testing.T) {
			dp := loadTest(t, Config{FlowEvents: tc.level})
			_, _, err := dp.Maps().SyncIPCache(map[netip.Prefix]IPCacheEntry{
				netip.PrefixFrom(podIP, 32):     {Identity: 1000, EndpointID: 7},
				netip.PrefixFrom(localPeer, 32): {Identity: 1001, EndpointID: 9},
			})
			require.NoError(t, err)
			rd, err := events.NewReader(dp.EventRing())
			require.NoError(t, err)
			defer rd.Close()
			conn := func(peer netip.Addr, sport uint16) {
				for _, st := range []struct {
					in  bool
					pkt []byte
				}{
					{true, tcpPkt(t, peer, podIP, sport, 80, flags{syn: true})},
					{false, tcpPkt(t, podIP, peer, 80, sport, flags{syn: true, ack: true})},
					{true, tcpPkt(t, peer, podIP, sport, 80, flags{fin: true, ack: true})},
					{false, tcpPkt(t, podIP, peer, 80, sport, flags{fin: true, ack: true})},
				} {
					prog := dp.objs.SlFromEp
					if st.in {
						prog = dp.objs.SlToEp
					}
					ret, _ := runPolicy(t, prog, st.pkt, fromWire)
					require.Equal(t, verdictNext, ret)
				}
			}
			conn(localPeer, 41000)
			conn(peerIP, 42000)
			ret, _ := runPolicy(t, dp.objs.SlFromEp, udpPkt(t, peer3IP, worldIP, 5000, 53), fromWire)
			require.Equal(t, uint32(verdictDrop), ret)

			var got []string
			byPeer := map[string][]string{}
			for {
				rd.SetDeadline(time.Now().Add(50 * time.Millisecond))
				ev, err := rd.Read()
				if err != nil {
					break
				}
				switch {
				case ev.Type == events.Drop:
					got = append(got, "drop")
				case ev.Src.Addr() == localPeer:
					byPeer["local"] = append(byPeer["local"], ev.Type.String())
				default:
					byPeer["remote"] = append(byPeer["remote"], ev.Type.String())
				}
			}
			var parts []string
			for _, p := range []string{"local", "remote"} {
				if len(byPeer[p]) > 0 {
					parts = append(parts, p+":"+strings.Join(byPeer[p], ","))
				}
			}
			parts = append(parts, got...)
			require.Equal(t, tc.want, strings.Join(parts, " "))

			cs, err := dp.Maps().Counters()
			require.NoError(t, err)
			var fwd, dropped uint64
			for _, c := range cs {
				switch c.Metric {
				case "forwarded":
					fwd += c.Packets
				case "dropped":
					dropped += c.Packets
				}
			}
			require.Equal(t, uint64(8), fwd, "every level counts every packet")
			require.Equal(t, uint64(1), dropped)
		})
	}
}

// The CT GC walks the table in batches: on a table of 40,000 entries, half
// expired, it deletes exactly the expired half and counts the rest, and
// reports how long the walk took next to a key-by-key one (not a pass/fail
// figure: the machine is shared).
func TestGCCTLargeTable(t *testing.T) {
	dp := loadTest(t, Config{CTMax: 65536})
	m := dp.Maps()
	now := MonotonicNow()
	keys := make([]bpfobj.EndpointSlCtKey, 40000)
	vals := make([]bpfobj.EndpointSlCtEntry, len(keys))
	for i := range keys {
		keys[i] = bpfobj.EndpointSlCtKey{EpId: 7, Family: 2, Proto: 6, Sport: uint16(i), Dport: uint16(i >> 16)}
		vals[i] = bpfobj.EndpointSlCtEntry{Expires: now + uint64(time.Hour), State: 3}
		if i%2 == 0 {
			vals[i].Expires = now - 1
		}
	}
	_, err := m.CT.BatchUpdate(keys, vals, nil)
	require.NoError(t, err)

	start := time.Now()
	n := 0
	require.NoError(t, walkIterate(m.CT, func(*bpfobj.EndpointSlCtKey, *bpfobj.EndpointSlCtEntry) bool { n++; return true }))
	iterated := time.Since(start)
	require.Equal(t, len(keys), n)

	start = time.Now()
	st, err := m.GCCT(nil, nil)
	require.NoError(t, err)
	t.Logf("40,000 entries: key-by-key walk %s; batched GC pass (walk + 20,000 deletes) %s", iterated, time.Since(start))
	require.Equal(t, CTStats{Live: 20000, Expired: 20000, Deleted: 20000}, st)
	live, total, err := m.ctUsage()
	require.NoError(t, err)
	require.Equal(t, 20000, live)
	require.Equal(t, 20000, total)
}

// icmpRedirectPkt is an ICMP redirect (host) from src to dst, quoting a
// UDP datagram of dst's.
func icmpRedirectPkt(t testing.TB, src, dst netip.Addr) []byte {
	inner := udpPkt(t, dst, netip.MustParseAddr("10.96.0.10"), 5000, 53)[14:]
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeRedirect, layers.ICMPv4CodeHost)}
	buf := gopacket.NewSerializeBuffer()
	require.NoError(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, icmp, gopacket.Payload(inner[:28])))
	return buf.Bytes()
}
