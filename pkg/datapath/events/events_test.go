package events

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
)

// A record decodes as encoding/binary reads the generated struct from the
// same bytes (the decoder before records were copied in place), whatever
// the bytes.
func TestDecodeRecordIsBinaryRead(t *testing.T) {
	require.Equal(t, binary.Size(bpfobj.EndpointSlEvent{}), RecordSize)
	rng := rand.New(rand.NewPCG(1, 2))
	raw := make([]byte, RecordSize+8) // ring samples may be longer
	for range 200 {
		for i := range raw {
			raw[i] = byte(rng.Uint32())
		}
		var want bpfobj.EndpointSlEvent
		require.NoError(t, binary.Read(bytes.NewReader(raw), binary.NativeEndian, &want))
		var got Record
		require.NoError(t, DecodeRecord(raw, &got))
		require.Equal(t, want, bpfobj.EndpointSlEvent(got))
	}
	var r Record
	require.ErrorContains(t, DecodeRecord(raw[:RecordSize-1], &r), "want 168")
}

// Reading a record from a sample allocates nothing: the agent reads
// every event this way.
func TestDecodeRecordAllocatesNothing(t *testing.T) {
	raw := make([]byte, RecordSize)
	var r Record
	if n := testing.AllocsPerRun(1000, func() { _ = DecodeRecord(raw, &r) }); n != 0 {
		t.Errorf("DecodeRecord allocates %.1f times per record", n)
	}
}

// The events the agent makes itself (CT GC expiries) go through records:
// Event.Record is Record.Event's inverse for every kind and family.
func TestEventRecordRoundTrip(t *testing.T) {
	epoch := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	at := epoch.Add(1234 * time.Millisecond)
	ap := netip.MustParseAddrPort
	for _, ev := range []Event{
		{Type: ConnNew, Dir: DirEgress, IfIndex: 9, EndpointID: 12, Len: 74, Proto: unix.IPPROTO_TCP, TCPFlags: 2,
			Src: ap("10.244.1.5:40000"), Dst: ap("10.244.2.7:5432"), Tracked: true},
		{Type: ConnNew, Dir: DirIngress, EndpointID: 12, Proto: unix.IPPROTO_UDP, Src: ap("10.244.2.7:5353"), Dst: ap("10.244.1.5:53"),
			Verdict: VerdictRedirect, SrcIdentity: 301, DstIdentity: 300, PolicyRule: 3, ProxyPort: 15001},
		{Type: Drop, Dir: DirIngress, EndpointID: 12, Proto: unix.IPPROTO_TCP, Src: ap("10.244.2.7:5432"), Dst: ap("10.244.1.5:40002"),
			Tracked: true, Reply: true, Reason: bpfobj.EndpointSlDropReasonSL_DROP_POLICY_REVOKED, Verdict: VerdictDeny, SrcIdentity: 301, DstIdentity: 300, Suppressed: 4},
		{Type: Translate, Dir: DirEgress, Proto: unix.IPPROTO_TCP, Src: netip.AddrPortFrom(netip.IPv4Unspecified(), 0), Dst: ap("10.244.2.7:5432"),
			ServiceID: 7, VIP: ap("10.96.0.20:5432"), SockCookie: 99, CgroupID: 4242},
		{Type: ConnEnd, Dir: DirEgress, EndpointID: 12, Proto: unix.IPPROTO_SCTP, Src: ap("[fd00::5]:3868"), Dst: ap("[fd00::7]:3868"),
			PacketsOrig: 5, BytesOrig: 340, PacketsReply: 4, BytesReply: 9000, Duration: 3 * time.Second},
		{Type: ConnEnd, Dir: DirIngress, Proto: unix.IPPROTO_ICMP, Src: ap("203.0.113.9:4"), Dst: ap("192.168.0.1:0"), PacketsOrig: 1, BytesOrig: 84},
		{Type: 9, Dir: DirUnknown, Proto: 47, Src: ap("10.0.0.1:0"), Dst: ap("10.0.0.2:0"), Reason: 7},
		{Type: ConnNew, Dir: DirEgress, Proto: unix.IPPROTO_ICMPV6, Src: ap("[::ffff:10.0.0.1]:0"), Dst: ap("[2001:db8::1]:0")},
	} {
		ev.Time = at
		rec := ev.Record(epoch)
		require.Equal(t, ev, rec.Event(epoch), "%s %d", ev.Type, ev.Proto)
	}
}
