package flow

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	b "github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/datapath/events"
)

// The golden flows: a table of datapath records (as the ring carries them)
// and connection expiries (as the CT GC reports them), and the flows the
// converter made of them when the flow store still kept finished
// flowpb.Flow messages (testdata/golden_flows.json, written by that
// converter with -update-golden). Whatever the store keeps, the flows
// clients read must stay these.
var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/golden_flows.json from the current converter")

const goldenFile = "testdata/golden_flows.json"

// goldenEpoch is the wall time of CLOCK_MONOTONIC zero in the golden
// table: a record's ts is nanoseconds after it.
var goldenEpoch = time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)

// goldenInput is one case: a ring record, or an expiry (expired set).
type goldenInput struct {
	name    string
	rec     b.EndpointSlEvent
	expired *events.Event
}

func addr16(s string) [16]uint8 {
	a := netip.MustParseAddr(s)
	var out [16]uint8
	if a.Is4() {
		v4 := a.As4()
		copy(out[:], v4[:])
		return out
	}
	return a.As16()
}

func be16(p uint16) uint16 { return p<<8 | p>>8 }

// rec4 is a record between two IPv4 addresses; ports in host order.
func rec4(typ b.EndpointSlEventType, dir b.EndpointSlDir, ep uint32, proto uint8, src string, sport uint16, dst string, dport uint16) b.EndpointSlEvent {
	var r b.EndpointSlEvent
	r.Type, r.Dir, r.EpId, r.Family, r.Proto = uint8(typ), uint8(dir), ep, 2, proto
	r.Saddr.Addr6, r.Daddr.Addr6 = addr16(src), addr16(dst)
	r.Sport, r.Dport = be16(sport), be16(dport)
	r.Len = 74
	return r
}

func rec6(typ b.EndpointSlEventType, dir b.EndpointSlDir, ep uint32, proto uint8, src string, sport uint16, dst string, dport uint16) b.EndpointSlEvent {
	r := rec4(typ, dir, ep, proto, src, sport, dst, dport)
	r.Family = 10
	r.Saddr.Addr6, r.Daddr.Addr6 = addr16(src), addr16(dst)
	return r
}

const (
	evNew       = b.EndpointSlEventTypeSL_EVENT_CONN_NEW
	evDrop      = b.EndpointSlEventTypeSL_EVENT_DROP
	evTranslate = b.EndpointSlEventTypeSL_EVENT_TRANSLATE
	evEnd       = b.EndpointSlEventTypeSL_EVENT_CONN_END
	in          = b.EndpointSlDirSL_DIR_INGRESS
	out         = b.EndpointSlDirSL_DIR_EGRESS
	fTracked    = uint8(b.EndpointSlEventFlagSL_EVENT_F_TRACKED)
	fReply      = uint8(b.EndpointSlEventFlagSL_EVENT_F_REPLY)
	vAllow      = uint8(b.EndpointSlPolicyVerdictSL_VERDICT_ALLOW)
	vRedirect   = uint8(b.EndpointSlPolicyVerdictSL_VERDICT_REDIRECT)
	vDeny       = uint8(b.EndpointSlPolicyVerdictSL_VERDICT_DENY)
	vAudit      = uint8(b.EndpointSlPolicyVerdictSL_VERDICT_AUDIT)
	pTCP        = 6
	pUDP        = 17
	pICMP       = 1
	pICMPv6     = 58
	pSCTP       = 132
)

// with applies changes to a record.
func with(r b.EndpointSlEvent, f func(*b.EndpointSlEvent)) b.EndpointSlEvent {
	f(&r)
	return r
}

func goldenInputs() []goldenInput {
	web, db := "10.244.1.5", "10.244.2.7"
	svc := func(id uint32, vip string, port uint16) func(*b.EndpointSlEvent) {
		return func(r *b.EndpointSlEvent) { r.SvcId, r.Vip.Addr6, r.VipPort = id, addr16(vip), be16(port) }
	}
	policy := func(v uint8, src, dst, rule uint32) func(*b.EndpointSlEvent) {
		return func(r *b.EndpointSlEvent) { r.Verdict, r.SrcIdentity, r.DstIdentity, r.PolicyRule = v, src, dst, rule }
	}
	tcpFlags := func(fl uint8) func(*b.EndpointSlEvent) { return func(r *b.EndpointSlEvent) { r.TcpFlags = fl } }
	all := func(fs ...func(*b.EndpointSlEvent)) func(*b.EndpointSlEvent) {
		return func(r *b.EndpointSlEvent) {
			for _, f := range fs {
				f(r)
			}
		}
	}
	l := []goldenInput{
		{name: "trace egress from a pod, no policy", rec: with(rec4(evNew, out, 12, pTCP, web, 40000, db, 5432), all(tcpFlags(0x02), func(r *b.EndpointSlEvent) { r.Ifindex = 9 }))},
		{name: "trace ingress into a pod, no policy", rec: with(rec4(evNew, in, 12, pTCP, db, 33000, web, 8080), tcpFlags(0x02))},
		{name: "trace ingress on an uplink (host program)", rec: with(rec4(evNew, in, 0, pTCP, "203.0.113.9", 51000, "192.168.0.1", 30080), all(tcpFlags(0x02), func(r *b.EndpointSlEvent) { r.Ifindex = 2 }))},
		{name: "trace egress on an uplink (host program)", rec: with(rec4(evNew, out, 0, pTCP, "192.168.0.1", 40000, "203.0.113.9", 443), tcpFlags(0x02))},
		{name: "trace with unknown direction", rec: rec4(evNew, 0, 12, pUDP, web, 1000, db, 53)},
		{name: "end closed", rec: with(rec4(evEnd, out, 12, pTCP, web, 40000, db, 5432), func(r *b.EndpointSlEvent) {
			r.TcpFlags, r.Ifindex = 0x11, 9
			r.PacketsOrig, r.PacketsReply, r.BytesOrig, r.BytesReply, r.DurationNs = 5, 4, 340, 9000, uint64(3200*time.Millisecond)
		})},
		{name: "end closed ingress, service", rec: with(rec4(evEnd, in, 12, pTCP, db, 33000, web, 8080), all(svc(7, "10.96.0.20", 80), func(r *b.EndpointSlEvent) {
			r.TcpFlags = 0x04
			r.PacketsOrig, r.PacketsReply, r.BytesOrig, r.BytesReply, r.DurationNs = 1, 1, 60, 40, uint64(1234567)
		}))},
		{name: "allowed by an ingress rule", rec: with(rec4(evNew, in, 12, pTCP, db, 33000, web, 8080), all(tcpFlags(0x02), policy(vAllow, 301, 300, 3)))},
		{name: "allowed, no rule (unenforced direction)", rec: with(rec4(evNew, out, 12, pTCP, web, 33001, db, 8080), all(tcpFlags(0x02), policy(vAllow, 300, 301, 0)))},
		{name: "allowed by an unknown rule", rec: with(rec4(evNew, out, 12, pTCP, web, 33002, db, 8080), all(tcpFlags(0x02), policy(vAllow, 300, 301, 99)))},
		{name: "redirected by an egress rule", rec: with(rec4(evNew, out, 12, pTCP, web, 40001, db, 80), all(tcpFlags(0x02), policy(vRedirect, 300, 301, 4), func(r *b.EndpointSlEvent) { r.ProxyPort = 15001 }))},
		{name: "redirected by an ingress rule", rec: with(rec4(evNew, in, 12, pTCP, db, 40001, web, 80), all(tcpFlags(0x02), policy(vRedirect, 301, 300, 3), func(r *b.EndpointSlEvent) { r.ProxyPort = 15002 }))},
		{name: "audit, no rule", rec: with(rec4(evNew, in, 12, pUDP, db, 5353, web, 53), policy(vAudit, 301, 300, 0))},
		{name: "audit by a rule", rec: with(rec4(evNew, in, 12, pUDP, db, 5353, web, 53), policy(vAudit, 301, 300, 3))},
		{name: "denied trace by an egress rule", rec: with(rec4(evNew, out, 12, pTCP, web, 40010, db, 22), all(tcpFlags(0x02), policy(vDeny, 300, 301, 4)))},
		{name: "denied trace by an ingress rule", rec: with(rec4(evNew, in, 12, pTCP, db, 40010, web, 22), all(tcpFlags(0x02), policy(vDeny, 301, 300, 3)))},
		{name: "unknown verdict number", rec: with(rec4(evNew, in, 12, pTCP, db, 40011, web, 22), all(tcpFlags(0x02), policy(9, 301, 300, 0)))},
		{name: "policy drop from the world, default deny", rec: with(rec4(evDrop, in, 12, pTCP, "203.0.113.9", 51000, web, 22), all(tcpFlags(0x02), policy(vDeny, 2, 300, 0), func(r *b.EndpointSlEvent) { r.Reason = 133 }))},
		{name: "policy drop by an egress rule, Sluice reason", rec: with(rec4(evDrop, out, 12, pTCP, web, 40002, db, 5432), all(tcpFlags(0x02), policy(vDeny, 300, 301, 4), func(r *b.EndpointSlEvent) { r.Reason = 1002 }))},
		{name: "policy drop by an ingress rule", rec: with(rec4(evDrop, in, 12, pTCP, db, 40003, web, 5432), all(tcpFlags(0x02), policy(vDeny, 301, 300, 3), func(r *b.EndpointSlEvent) { r.Reason = 133 }))},
		{name: "drop of a tracked reply", rec: with(rec4(evDrop, in, 12, pTCP, db, 5432, web, 40002), all(tcpFlags(0x10), policy(vDeny, 301, 300, 0), func(r *b.EndpointSlEvent) {
			r.Reason, r.Flags = 1002, fTracked|fReply
		}))},
		{name: "drop of a tracked first packet", rec: with(rec4(evDrop, in, 12, pTCP, "203.0.113.9", 51001, web, 22), all(tcpFlags(0x02), policy(vDeny, 2, 300, 0), func(r *b.EndpointSlEvent) {
			r.Reason, r.Flags = 133, fTracked
		}))},
		{name: "drop, suppressed count", rec: with(rec4(evDrop, out, 12, pUDP, web, 999, db, 53), func(r *b.EndpointSlEvent) { r.Reason, r.Suppressed = 132, 17 })},
		{name: "drop, unknown reason number", rec: with(rec4(evDrop, out, 12, pUDP, web, 999, db, 53), func(r *b.EndpointSlEvent) { r.Reason = 7 })},
		{name: "drop, unknown Sluice reason number", rec: with(rec4(evDrop, out, 12, pUDP, web, 999, db, 53), func(r *b.EndpointSlEvent) { r.Reason = 1099 })},
		{name: "drop, reason 0", rec: rec4(evDrop, out, 12, pUDP, web, 999, db, 53)},
		{name: "Sluice drop on an uplink with a service", rec: with(rec4(evDrop, in, 0, pTCP, "203.0.113.9", 51000, "192.168.0.1", 30080), all(tcpFlags(0x02), svc(7, "192.168.0.1", 30080), func(r *b.EndpointSlEvent) {
			r.Reason, r.Ifindex = 1001, 2
		}))},
		{name: "trace to a service, translated per packet", rec: with(rec4(evNew, out, 12, pTCP, web, 40003, db, 5432), all(tcpFlags(0x02), svc(7, "10.96.0.20", 80), func(r *b.EndpointSlEvent) {
			r.Ifindex, r.Flags = 9, fTracked
		}))},
		{name: "trace to an unknown service", rec: with(rec4(evNew, out, 12, pTCP, web, 40004, db, 5432), all(tcpFlags(0x02), svc(77, "10.96.0.77", 8080)))},
		{name: "socket LB translation", rec: with(rec4(evTranslate, out, 0, pTCP, "0.0.0.0", 0, db, 5432), all(svc(7, "10.96.0.20", 5432), func(r *b.EndpointSlEvent) {
			r.SockCookie, r.CgroupId = 99, 4242
		}))},
		{name: "socket LB translation, UDP sendmsg", rec: with(rec4(evTranslate, out, 0, pUDP, "0.0.0.0", 0, db, 53), all(svc(7, "10.96.0.10", 53), func(r *b.EndpointSlEvent) {
			r.SockCookie, r.CgroupId = 100, 4242
		}))},
		{name: "socket LB translation from an unknown cgroup", rec: with(rec4(evTranslate, out, 0, pTCP, "0.0.0.0", 0, db, 5432), all(svc(7, "10.96.0.20", 5432), func(r *b.EndpointSlEvent) {
			r.SockCookie, r.CgroupId = 101, 999
		}))},
		{name: "socket LB refusal", rec: with(rec4(evDrop, out, 0, pTCP, "0.0.0.0", 0, "10.96.0.20", 5432), all(svc(7, "10.96.0.20", 5432), func(r *b.EndpointSlEvent) {
			r.Reason, r.SockCookie, r.CgroupId = 158, 98, 4242
		}))},
		{name: "unknown event type", rec: rec4(9, out, 12, pUDP, web, 1000, db, 53)},
		{name: "ICMP echo request from a node", rec: rec4(evNew, in, 12, pICMP, "192.168.0.2", 17, web, 0)},
		{name: "ICMP echo reply to the host", rec: rec4(evNew, in, 12, pICMP, "192.168.0.1", 0, web, 17)},
		{name: "ICMP without identifier", rec: rec4(evNew, in, 12, pICMP, db, 0, web, 0)},
		{name: "SCTP into an unknown endpoint, datapath identity", rec: with(rec4(evNew, in, 40, pSCTP, db, 3868, "10.244.1.99", 3868), func(r *b.EndpointSlEvent) { r.DstIdentity = 301 })},
		{name: "GRE, no L4", rec: rec4(evNew, out, 12, 47, web, 0, db, 0)},
		{name: "IPv6 TCP to the world", rec: with(rec6(evNew, out, 12, pTCP, "fd00::5", 40000, "2001:db8::1", 443), tcpFlags(0x02))},
		{name: "ICMPv6", rec: rec6(evNew, in, 12, pICMPv6, "2001:db8::1", 0, "fd00::5", 0)},
		{name: "IPv4-mapped addresses", rec: with(rec6(evNew, out, 12, pTCP, "::ffff:10.244.1.5", 40005, "::ffff:10.244.2.7", 5432), tcpFlags(0x12))},
		{name: "local CIDR identity is not shown", rec: with(rec4(evNew, out, 12, pTCP, web, 40006, "198.51.100.1", 443), all(tcpFlags(0x02), policy(vAllow, 300, 1<<24+3, 4)))},
		{name: "datapath identity wins over the agent's", rec: with(rec4(evNew, out, 12, pTCP, web, 40007, db, 5432), all(tcpFlags(0x02), policy(vAllow, 300, 305, 4)))},
		{name: "reserved identity of a node address", rec: with(rec4(evNew, in, 12, pTCP, "192.168.0.2", 40008, web, 10250), all(tcpFlags(0x02), policy(vAllow, 6, 300, 0)))},
		{name: "all TCP flags", rec: with(rec4(evNew, out, 12, pTCP, web, 40009, db, 5432), tcpFlags(0xff))},
		{name: "pod known only by its own labels", rec: rec4(evNew, out, 5, pUDP, "10.244.3.3", 1000, "198.51.100.1", 53)},
	}
	exp := func(name string, ev events.Event) goldenInput {
		ev.Type, ev.Expired = events.ConnEnd, true
		return goldenInput{name: name, expired: &ev}
	}
	l = append(l,
		exp("expired TCP egress", events.Event{Dir: events.DirEgress, EndpointID: 12, Proto: unix.IPPROTO_TCP,
			Src: ap("10.244.1.5:40000"), Dst: ap("10.244.2.7:5432"),
			PacketsOrig: 7, BytesOrig: 700, PacketsReply: 6, BytesReply: 6000, Duration: 95 * time.Second}),
		exp("expired UDP ingress", events.Event{Dir: events.DirIngress, EndpointID: 12, Proto: unix.IPPROTO_UDP,
			Src: ap("10.244.2.7:5353"), Dst: ap("10.244.1.5:53"),
			PacketsOrig: 1, BytesOrig: 70, Duration: 30 * time.Second}),
		exp("expired ICMP on an uplink", events.Event{Dir: events.DirIngress, Proto: unix.IPPROTO_ICMP,
			Src: ap("203.0.113.9:4"), Dst: ap("192.168.0.1:0"), PacketsOrig: 1, BytesOrig: 84, Duration: time.Second}),
	)
	for i := range l {
		if l[i].expired == nil {
			l[i].rec.Ts = uint64(i+1) * uint64(time.Millisecond)
		} else {
			l[i].expired.Time = goldenEpoch.Add(time.Duration(i+1) * time.Millisecond)
		}
	}
	return l
}

// goldenEnricher is testEnricher with a pod known only by its labels (no
// identity labels): endpoint 5.
func goldenEnricher() *fakeEnricher {
	e := testEnricher()
	p := *dbPod
	p.Name, p.IPs = "db-1", []netip.Addr{netip.MustParseAddr("10.244.3.3")}
	e.local[5] = Endpoint{ID: 5, Identity: 400, Pod: &p}
	e.ids[305] = dbLabels
	return e
}

// encodeRecord is a record as the ring carries it.
func encodeRecord(t testing.TB, r b.EndpointSlEvent) []byte {
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.NativeEndian, &r); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// oldPathFlow is the flow the pre-store path made: the record decoded
// into a events.Event, converted.
func oldPathFlow(t testing.TB, c *Converter, in goldenInput) *flowpb.Flow {
	if in.expired != nil {
		ev := *in.expired
		return c.Convert(&ev)
	}
	ev, err := events.Decode(encodeRecord(t, in.rec), goldenEpoch)
	if err != nil {
		t.Fatal(err)
	}
	return c.Convert(&ev)
}

func readGolden(t *testing.T) map[string]json.RawMessage {
	raw, err := os.ReadFile(goldenFile)
	if err != nil {
		t.Fatalf("read golden flows: %v (run go test -run TestGoldenFlows -update-golden)", err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: %v", goldenFile, err)
	}
	return m
}

func goldenConverter() *Converter {
	return &Converter{NodeName: "node-a", ClusterName: "c1", Version: "golden", Enricher: goldenEnricher()}
}

// storedRecord is what the agent stores for an input: the record read
// from the ring, or the expiry, resolved.
func storedRecord(t testing.TB, c *Converter, in goldenInput) Record {
	if in.expired != nil {
		ev := *in.expired
		return c.RecordEvent(&ev)
	}
	var rec events.Record
	if err := events.DecodeRecord(encodeRecord(t, in.rec), &rec); err != nil {
		t.Fatal(err)
	}
	return c.Record(&rec, goldenEpoch)
}

// storePathFlows are the flows a client reads when the agent stored the
// inputs as records: resolved when read from the ring, copied into the
// store, built when read back.
func storePathFlows(t testing.TB, c *Converter, inputs []goldenInput) []*flowpb.Flow {
	s, err := NewStore(len(inputs))
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range inputs {
		r := storedRecord(t, c, in)
		s.AddRecord(&r)
	}
	entries, _ := s.Snapshot()
	out := make([]*flowpb.Flow, len(entries))
	for i := range entries {
		out[i] = entries[i].Flow()
	}
	return out
}

// TestGoldenFlows checks the converter's flows against the golden file:
// converted at once (Convert) and stored as records, then built.
func TestGoldenFlows(t *testing.T) {
	inputs := goldenInputs()
	if *updateGolden {
		c := goldenConverter()
		m := map[string]json.RawMessage{}
		for _, in := range inputs {
			js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(oldPathFlow(t, c, in))
			if err != nil {
				t.Fatal(err)
			}
			m[in.name] = js
		}
		js, err := json.MarshalIndent(m, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(goldenFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenFile, append(js, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %d golden flows to %s", len(m), goldenFile)
	}
	golden := readGolden(t)
	if len(golden) != len(inputs) {
		t.Errorf("golden file has %d flows, the table %d: run with -update-golden only on a converter known to be right", len(golden), len(inputs))
	}
	c := goldenConverter()
	stored := storePathFlows(t, goldenConverter(), inputs)
	for i, in := range inputs {
		t.Run(in.name, func(t *testing.T) {
			want := &flowpb.Flow{}
			js, ok := golden[in.name]
			if !ok {
				t.Fatalf("no golden flow %q", in.name)
			}
			if err := protojson.Unmarshal(js, want); err != nil {
				t.Fatal(err)
			}
			if got := oldPathFlow(t, c, in); !proto.Equal(got, want) {
				t.Errorf("converted flow differs from the golden one\n got: %s\nwant: %s", protojson.Format(got), protojson.Format(want))
			}
			if got := stored[i]; !proto.Equal(got, want) {
				t.Errorf("stored record's flow differs from the golden one\n got: %s\nwant: %s", protojson.Format(got), protojson.Format(want))
			}
		})
	}
}
