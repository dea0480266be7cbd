package flow

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	b "github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/datapath/events"
)

// Filters read a stored record through a View without building its flow:
// every answer must be the built flow's.
func TestViewIsTheBuiltFlow(t *testing.T) {
	c := goldenConverter()
	for _, in := range goldenInputs() {
		r := storedRecord(t, c, in)
		e := Entry{rec: r}
		var got View
		require.True(t, e.View(&got))
		f := e.Flow()
		want := ViewOf(f)
		ctx := fmt.Sprintf("%s: %s", in.name, protojson.Format(f))

		require.True(t, want.Time().Equal(got.Time()), ctx)
		require.Equal(t, want.NodeName(), got.NodeName(), ctx)
		require.Equal(t, want.SourceIP(), got.SourceIP(), ctx)
		require.Equal(t, want.DestinationIP(), got.DestinationIP(), ctx)
		require.Equal(t, want.SourceIPXlated(), got.SourceIPXlated(), ctx)
		require.Equal(t, want.IPVersion(), got.IPVersion(), ctx)
		require.Same(t, want.Source(), got.Source(), ctx)
		require.Same(t, want.Destination(), got.Destination(), ctx)
		require.Same(t, want.SourceService(), got.SourceService(), ctx)
		require.Same(t, want.DestinationService(), got.DestinationService(), ctx)
		require.Equal(t, want.Verdict(), got.Verdict(), ctx)
		require.Equal(t, want.Verdict(), r.Verdict(), ctx)
		require.Equal(t, want.DropReasonDesc(), got.DropReasonDesc(), ctx)
		require.Equal(t, want.TrafficDirection(), got.TrafficDirection(), ctx)
		for _, pair := range [][2]any{
			{tuple(want.L4()), tuple(got.L4())},
			{tuple(want.TCPFlags()), tuple(got.TCPFlags())},
			{tuple(want.L7()), tuple(got.L7())},
			{tuple(want.EventType()), tuple(got.EventType())},
			{tuple(want.IsReply()), tuple(got.IsReply())},
		} {
			require.Equal(t, pair[0], pair[1], ctx)
		}
	}
}

// tuple packs multiple results for comparison.
func tuple(v ...any) []any { return v }

// The agent's per-event path, reading a record and storing it, allocates
// nothing once the record's ends, service and rule have been seen: a
// second of 100k events makes no garbage.
func TestRecordPathAllocatesNothing(t *testing.T) {
	c := goldenConverter()
	s, err := NewStore(64)
	require.NoError(t, err)
	var recs []events.Record
	for _, in := range goldenInputs() {
		if in.expired != nil {
			continue
		}
		var rec events.Record
		require.NoError(t, events.DecodeRecord(encodeRecord(t, in.rec), &rec))
		recs = append(recs, rec)
	}
	store := func() {
		for i := range recs {
			r := c.Record(&recs[i], goldenEpoch)
			s.AddRecord(&r)
		}
	}
	store() // the first sight of each end, service and rule resolves it
	if n := testing.AllocsPerRun(100, store); n != 0 {
		t.Errorf("reading and storing %d records allocates %.1f times", len(recs), n)
	}
}

// A stored flow costs its ring slot: well under half a KiB, since ends,
// services and policies are shared.
func TestEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(Entry{}); n > 256 {
		t.Errorf("a store entry is %d bytes, want at most 256", n)
	}
}

// Records of the same ends share one endpoint message.
func TestRecordsShareEnds(t *testing.T) {
	c := goldenConverter()
	in := goldenInputs()[0]
	r1, r2 := storedRecord(t, c, in), storedRecord(t, c, in)
	require.Same(t, r1.src, r2.src)
	require.Same(t, r1.dst, r2.dst)
	require.NotNil(t, r1.src)
}

// trace is a record of a new connection from the web pod, source port n.
func traceRecord(n uint16) events.Record {
	r := rec4(evNew, out, 12, pUDP, "10.244.1.5", n, "10.244.2.7", 53)
	r.Ts = uint64(n) * uint64(time.Millisecond)
	return events.Record(r)
}

func recordPorts(t *testing.T, es []Entry) []int {
	var out []int
	for _, e := range es {
		if !e.IsFlow() {
			out = append(out, -1)
			continue
		}
		var v View
		require.True(t, e.View(&v))
		_, sport, _ := v.L4()
		out = append(out, int(sport))
	}
	return out
}

// The store holds its capacity of records: the newest, in order, as the
// ring wraps around again and again.
func TestStoreRecordsWrapAround(t *testing.T) {
	c := goldenConverter()
	s, err := NewStore(5)
	require.NoError(t, err)
	for n := uint16(1); n <= 23; n++ {
		rec := traceRecord(n)
		r := c.Record(&rec, goldenEpoch)
		s.AddRecord(&r)
		es, next := s.Snapshot()
		want := []int{}
		for p := max(1, int(n)-4); p <= int(n); p++ {
			want = append(want, p)
		}
		require.Equal(t, want, recordPorts(t, es), "after %d records", n)
		require.Equal(t, uint64(n), next)
		oldest, next2 := s.Range()
		require.Equal(t, next, next2)
		require.Equal(t, uint64(max(0, int(n)-5)), oldest)
	}
	st := s.Stats()
	require.Equal(t, 5, st.Flows)
	require.Equal(t, uint64(23), st.Seen)

	// Read from an overwritten sequence number starts at the oldest.
	buf := make([]Entry, 3)
	first, n := s.Read(2, buf)
	require.Equal(t, uint64(18), first)
	require.Equal(t, []int{19, 20, 21}, recordPorts(t, buf[:n]))
	first, n = s.Read(21, buf)
	require.Equal(t, uint64(21), first)
	require.Equal(t, []int{22, 23}, recordPorts(t, buf[:n]))
	_, n = s.Read(23, buf)
	require.Zero(t, n)
}

// A follower that stops reading never holds up the writer: records keep
// going in, and when it reads again it is told how many it missed and
// gets the newest ones.
func TestSlowFollowerNeverBlocksTheWriter(t *testing.T) {
	c := goldenConverter()
	s, err := NewStore(8)
	require.NoError(t, err)
	slow := s.Follow(0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := uint16(1); n <= 1000; n++ {
			rec := traceRecord(n)
			r := c.Record(&rec, goldenEpoch)
			s.AddRecord(&r)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer is blocked by a follower that does not read")
	}
	got, lost, err := slow.Next(context.Background(), make([]Entry, MaxBatch))
	require.NoError(t, err)
	require.Equal(t, uint64(992), lost)
	require.Equal(t, []int{993, 994, 995, 996, 997, 998, 999, 1000}, recordPorts(t, got))
	require.Equal(t, uint64(992), s.Stats().FollowersLost)
}

// A record keeps the ends it was resolved with: deleting the pod, or
// giving its address to another, after the event was read does not change
// the flow built later.
func TestRecordKeepsDeletedPod(t *testing.T) {
	e := goldenEnricher()
	c := &Converter{NodeName: "node-a", Enricher: e}
	s, err := NewStore(4)
	require.NoError(t, err)
	rec := events.Record(rec4(evNew, out, 12, pTCP, "10.244.1.5", 40000, "10.244.2.7", 5432))
	r := c.Record(&rec, goldenEpoch)
	s.AddRecord(&r)
	delete(e.local, 12)
	delete(e.byIP, webPod.IPs[0])
	e.byIP[dbPod.IPs[0]] = Endpoint{Identity: 999}

	es, _ := s.Snapshot()
	f := es[0].Flow()
	require.Equal(t, "web-7d9f8c6b5d-x2x4q", f.GetSource().GetPodName())
	require.Equal(t, "db-0", f.GetDestination().GetPodName())
	require.Equal(t, uint32(301), f.GetDestination().GetIdentity())

	// A record read after the deletion sees the cluster as it is now.
	r2 := c.Record(&rec, goldenEpoch)
	f2 := r2.Build()
	require.Empty(t, f2.GetSource().GetPodName())
	require.Equal(t, uint32(999), f2.GetDestination().GetIdentity())
}

// The caches are bounded: a converter that sees ever new ends (pods that
// come and go) starts over rather than grow, and records keep theirs.
func TestConverterCachesAreBounded(t *testing.T) {
	e := &fakeEnricher{}
	c := &Converter{Enricher: e}
	var first Record
	for i := range maxEnds + 10 {
		ip := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		rec := events.Record(rec4(evNew, out, 0, pUDP, "192.0.2.1", 1, ip.String(), 53))
		rec.DstIdentity, rec.Verdict = uint32(1000+i), uint8(b.EndpointSlPolicyVerdictSL_VERDICT_ALLOW)
		r := c.Record(&rec, goldenEpoch)
		if i == 0 {
			first = r
		}
	}
	require.LessOrEqual(t, len(c.cache.ends), maxEnds)
	require.Equal(t, uint32(1000), first.Build().GetDestination().GetIdentity())
}

// What a client's read costs per stored record: the flow built, and its
// wire encoding (what the observer sends).
func BenchmarkBuild(b *testing.B) {
	c := goldenConverter()
	r := storedRecord(b, c, goldenInputs()[27]) // trace to a service, translated per packet
	b.ReportAllocs()
	for b.Loop() {
		_ = r.Build()
	}
}

func BenchmarkBuildMarshal(b *testing.B) {
	c := goldenConverter()
	r := storedRecord(b, c, goldenInputs()[27])
	var out []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if out, err = (proto.MarshalOptions{}).MarshalAppend(out[:0], r.Build()); err != nil {
			b.Fatal(err)
		}
	}
}

// The agent's per-event cost: a record resolved and stored.
func BenchmarkRecordAndStore(b *testing.B) {
	c := goldenConverter()
	s, _ := NewStore(4096)
	var rec events.Record
	in := goldenInputs()[0]
	if err := events.DecodeRecord(encodeRecord(b, in.rec), &rec); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		r := c.Record(&rec, goldenEpoch)
		s.AddRecord(&r)
	}
}

// The response bytes the observer sends for a record are proto.Marshal's
// of the response built the plain way, for every golden record, sent
// once or many times (shared messages encoded once).
func TestAppendResponse(t *testing.T) {
	c := goldenConverter()
	var buf []byte
	for round := range 2 {
		for _, in := range goldenInputs() {
			r := storedRecord(t, c, in)
			f := r.Build()
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(&observerpb.GetFlowsResponse{
				ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}, NodeName: f.GetNodeName(), Time: f.GetTime(),
			})
			require.NoError(t, err)
			got := r.AppendResponse([]byte("prefix"), &buf)
			require.Equal(t, "prefix", string(got[:6]))
			require.Equal(t, want, got[6:], "round %d: %s", round, in.name)
		}
	}
}

// randomRecord is a ring record with random fields, of the kinds,
// directions, protocols and verdicts the datapath writes and a few it
// does not, between addresses the enricher knows and others.
func randomRecord(rng *rand.Rand) events.Record {
	addrs := []string{"10.244.1.5", "10.244.2.7", "192.168.0.1", "192.168.0.2", "203.0.113.9", "0.0.0.0", "10.244.3.3"}
	pick := func(l []uint8) uint8 { return l[rng.IntN(len(l))] }
	r := rec4(b.EndpointSlEventType(pick([]uint8{1, 2, 3, 4, 9})), b.EndpointSlDir(pick([]uint8{0, 1, 2})), []uint32{0, 12, 5, 40}[rng.IntN(4)],
		pick([]uint8{pTCP, pUDP, pICMP, pICMPv6, pSCTP, 47}), addrs[rng.IntN(len(addrs))], uint16(rng.IntN(3)*rng.IntN(65536)),
		addrs[rng.IntN(len(addrs))], uint16(rng.IntN(3)*rng.IntN(65536)))
	if rng.IntN(4) == 0 {
		r = rec6(b.EndpointSlEventType(r.Type), b.EndpointSlDir(r.Dir), r.EpId, r.Proto, "fd00::5", 1, "2001:db8::1", 443)
	}
	r.Ts = rng.Uint64() >> 4
	r.Ifindex = uint32(rng.IntN(3) * rng.IntN(1<<20))
	r.TcpFlags, r.Flags = uint8(rng.Uint32()), uint8(rng.IntN(4))
	r.Reason = []uint16{0, 133, 158, 1002, 1001, 7, 1099}[rng.IntN(7)]
	if rng.IntN(2) == 0 {
		r.SvcId, r.Vip.Addr6, r.VipPort = []uint32{7, 77}[rng.IntN(2)], addr16("10.96.0.20"), be16(80)
		r.SockCookie, r.CgroupId = rng.Uint64(), []uint64{0, 4242, 999}[rng.IntN(3)]
	}
	if rng.IntN(2) == 0 {
		r.Verdict = pick([]uint8{vAllow, vRedirect, vDeny, vAudit, 9})
		r.SrcIdentity, r.DstIdentity = []uint32{0, 2, 300, 301, 1<<24 + 1}[rng.IntN(5)], []uint32{0, 6, 300, 301}[rng.IntN(4)]
		r.PolicyRule, r.ProxyPort = []uint32{0, 3, 4, 99}[rng.IntN(4)], uint16(rng.IntN(65536))
	}
	if rng.IntN(3) == 0 { // totals that make the summary long
		r.PacketsOrig, r.BytesOrig, r.PacketsReply, r.BytesReply = rng.Uint64(), rng.Uint64(), rng.Uint64(), rng.Uint64()
		r.DurationNs = rng.Uint64() >> 1
	}
	return events.Record(r)
}

// Random records: the encoder writes what proto.Marshal writes for the
// built flow, whatever the record holds.
func TestAppendResponseOfRandomRecords(t *testing.T) {
	c := goldenConverter()
	rng := rand.New(rand.NewPCG(3, 4))
	var buf []byte
	for i := range 5000 {
		rec := randomRecord(rng)
		r := c.Record(&rec, goldenEpoch)
		f := r.Build()
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(&observerpb.GetFlowsResponse{
			ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}, NodeName: f.GetNodeName(), Time: f.GetTime(),
		})
		require.NoError(t, err)
		require.Equal(t, want, r.AppendResponse(nil, &buf), "record %d: %s", i, protojson.Format(f))
	}
}

func BenchmarkAppendResponse(b *testing.B) {
	c := goldenConverter()
	r := storedRecord(b, c, goldenInputs()[27])
	var out, buf []byte
	b.ReportAllocs()
	for b.Loop() {
		out = r.AppendResponse(out[:0], &buf)
	}
}
