package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
)

// Event is one decoded ring buffer record.
type Event struct {
	Time       time.Time      `json:"time"`
	Type       string         `json:"type"` // trace or drop
	Dir        string         `json:"direction"`
	Reason     string         `json:"reason,omitempty"`
	ReasonID   uint16         `json:"reasonID,omitempty"`
	IfIndex    uint32         `json:"ifindex"`
	EndpointID uint32         `json:"endpointID"`
	Len        uint32         `json:"len"`
	Proto      string         `json:"proto"`
	Src        netip.AddrPort `json:"src"`
	Dst        netip.AddrPort `json:"dst"`
	TCPFlags   uint8          `json:"tcpFlags,omitempty"`
	// Tracked reports that conntrack placed the packet in its connection;
	// Reply, that it went in the connection's reply direction (Src is then
	// the server). A drop before the lookup has neither: unknown.
	Tracked bool `json:"tracked,omitempty"`
	Reply   bool `json:"reply,omitempty"`
	// ServiceID is the frontend a translated connection was addressed to
	// (0: not translated); VIP is that frontend, Dst the chosen backend.
	ServiceID  uint32         `json:"serviceID,omitempty"`
	VIP        netip.AddrPort `json:"vip,omitzero"`
	SockCookie uint64         `json:"sockCookie,omitempty"`
	// CgroupID is the calling process's cgroup (socket-LB events), which
	// names its pod.
	CgroupID uint64 `json:"cgroupID,omitempty"`
	// Verdict is the policy decision of a new connection (allowed,
	// redirected, audit) or of a policy drop (denied); empty when no
	// policy applied. SrcIdentity and DstIdentity are the identities of
	// both ends and PolicyRule the deciding rule (0: default deny).
	Verdict     string `json:"verdict,omitempty"`
	SrcIdentity uint32 `json:"srcIdentity,omitempty"`
	DstIdentity uint32 `json:"dstIdentity,omitempty"`
	PolicyRule  uint32 `json:"policyRule,omitempty"`
	ProxyPort   uint16 `json:"proxyPort,omitempty"`
	// Connection ends ("end"): the connection's totals, orig being the
	// direction of its first packet, and how long it lasted. Expired
	// (idle) connections are reported by the agent's CT GC with
	// Expired set; closed TCP connections by the datapath.
	PacketsOrig  uint64        `json:"packetsOrig,omitempty"`
	BytesOrig    uint64        `json:"bytesOrig,omitempty"`
	PacketsReply uint64        `json:"packetsReply,omitempty"`
	BytesReply   uint64        `json:"bytesReply,omitempty"`
	Duration     time.Duration `json:"duration,omitempty"`
	Expired      bool          `json:"expired,omitempty"`
	// Suppressed counts drops of the same flow and reason not reported
	// since the previous event (rate limit).
	Suppressed uint32 `json:"suppressed,omitempty"`
}

// Record is one ring buffer record exactly as the datapath wrote it
// (struct sl_event, bpf/include/sluice/types.h): fixed size, no pointers,
// so it is read, copied and stored without allocating. Event turns it
// into the readable form; the flow store (pkg/flow) keeps records as they
// are and builds flows from them only when a client reads them.
//
// Its methods decode single facts; fields not set by the record's kind
// (a service on a record without svc_id, totals on one that is not a
// connection end) read as zero in Event, whatever the bytes hold.
type Record bpfobj.EndpointSlEvent

// RecordSize is the size of a record in the ring (without the ring's own
// 8-byte header).
const RecordSize = int(unsafe.Sizeof(Record{}))

// EventType is a record's kind, as enum sl_event_type.
type EventType uint8

// Event types.
const (
	EventConnNew   = EventType(bpfobj.EndpointSlEventTypeSL_EVENT_CONN_NEW)
	EventDrop      = EventType(bpfobj.EndpointSlEventTypeSL_EVENT_DROP)
	EventTranslate = EventType(bpfobj.EndpointSlEventTypeSL_EVENT_TRANSLATE)
	EventConnEnd   = EventType(bpfobj.EndpointSlEventTypeSL_EVENT_CONN_END)
)

// String is the name Event.Type carries ("trace", "drop", ...).
func (t EventType) String() string { return EventTypeName(uint8(t)) }

// Direction is a packet's direction relative to its endpoint, as enum
// sl_dir.
type Direction uint8

// Directions.
const (
	DirUnknown = Direction(bpfobj.EndpointSlDirSL_DIR_UNKNOWN)
	DirIngress = Direction(bpfobj.EndpointSlDirSL_DIR_INGRESS)
	DirEgress  = Direction(bpfobj.EndpointSlDirSL_DIR_EGRESS)
)

// String is the name Event.Dir carries ("ingress", "egress").
func (d Direction) String() string { return DirName(uint8(d)) }

// DecodeRecord copies a raw ring sample into r, without allocating. The
// record is in the host's byte order, as Record's layout is the C one.
func DecodeRecord(raw []byte, r *Record) error {
	if len(raw) < RecordSize {
		return fmt.Errorf("decode event of %d bytes: want %d", len(raw), RecordSize)
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(r)), RecordSize), raw)
	return nil
}

// Kind is the record's event type.
func (r *Record) Kind() EventType { return EventType(r.Type) }

// Direction is the packet's direction relative to the endpoint.
func (r *Record) Direction() Direction { return Direction(r.Dir) }

// Tracked reports that conntrack placed the packet in its connection.
func (r *Record) Tracked() bool { return r.Flags&uint8(bpfobj.EndpointSlEventFlagSL_EVENT_F_TRACKED) != 0 }

// Reply reports that the packet went in its connection's reply direction.
func (r *Record) Reply() bool { return r.Flags&uint8(bpfobj.EndpointSlEventFlagSL_EVENT_F_REPLY) != 0 }

// Src is the packet's source.
func (r *Record) Src() netip.AddrPort {
	return netip.AddrPortFrom(addrFrom(r.Saddr.Addr6, r.Family), ntohs(r.Sport))
}

// Dst is the packet's destination (the chosen backend, if translated).
func (r *Record) Dst() netip.AddrPort {
	return netip.AddrPortFrom(addrFrom(r.Daddr.Addr6, r.Family), ntohs(r.Dport))
}

// Frontend is the service frontend a translated connection was addressed
// to; invalid when the record has no service.
func (r *Record) Frontend() netip.AddrPort {
	if r.SvcId == 0 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(addrFrom(r.Vip.Addr6, r.Family), ntohs(r.VipPort))
}

// Time is the record's time, given the wall-clock time of CLOCK_MONOTONIC
// zero (MonotonicEpoch).
func (r *Record) Time(epoch time.Time) time.Time { return epoch.Add(time.Duration(r.Ts)) }

// Event is the record in readable form. epoch maps its monotonic
// timestamp to wall time.
func (r *Record) Event(epoch time.Time) Event {
	ev := Event{
		Time: r.Time(epoch), Type: r.Kind().String(),
		Dir: r.Direction().String(), IfIndex: r.Ifindex, EndpointID: r.EpId, Len: r.Len,
		Proto: ProtoName(r.Proto), TCPFlags: r.TcpFlags,
		Tracked: r.Tracked(), Reply: r.Reply(), Src: r.Src(), Dst: r.Dst(),
	}
	if r.SvcId != 0 {
		ev.ServiceID = r.SvcId
		ev.VIP = r.Frontend()
		ev.SockCookie = r.SockCookie
		ev.CgroupID = r.CgroupId
	}
	if r.Kind() == EventConnEnd {
		ev.PacketsOrig, ev.BytesOrig = r.PacketsOrig, r.BytesOrig
		ev.PacketsReply, ev.BytesReply = r.PacketsReply, r.BytesReply
		ev.Duration = time.Duration(r.DurationNs)
	}
	ev.Suppressed = r.Suppressed
	if r.Verdict != VerdictNone {
		ev.Verdict = VerdictName(r.Verdict)
		ev.SrcIdentity, ev.DstIdentity = r.SrcIdentity, r.DstIdentity
		ev.PolicyRule, ev.ProxyPort = r.PolicyRule, r.ProxyPort
	}
	if r.Reason != 0 {
		ev.ReasonID = r.Reason
		ev.Reason = DropReasonName(r.Reason)
	}
	return ev
}

// DecodeEvent turns a raw record into an Event. bootTime maps the
// monotonic timestamp to wall time.
func DecodeEvent(raw []byte, bootTime time.Time) (Event, error) {
	var r Record
	if err := DecodeRecord(raw, &r); err != nil {
		return Event{}, err
	}
	return r.Event(bootTime), nil
}

// Record is the event as a ring record would carry it, the inverse of
// Record.Event for the names this package gives (events the agent makes
// itself, such as the CT GC's expiries, go where records go). epoch maps
// the event's time back to a monotonic timestamp; Expired has no place in
// a record and is dropped.
func (ev *Event) Record(epoch time.Time) Record {
	r := Record{
		Type: uint8(number(eventTypeNames, ev.Type)), Dir: uint8(number(dirNames, ev.Dir)),
		Ifindex: ev.IfIndex, EpId: ev.EndpointID, Len: ev.Len,
		Proto: protoNumber(ev.Proto), TcpFlags: ev.TCPFlags, Suppressed: ev.Suppressed,
	}
	if d := ev.Time.Sub(epoch); d > 0 {
		r.Ts = uint64(d)
	}
	r.Family = unix.AF_INET
	if ev.Dst.Addr().Is6() || ev.Src.Addr().Is6() {
		r.Family = unix.AF_INET6
	}
	r.Saddr.Addr6, r.Sport = addrOf(ev.Src.Addr(), r.Family), ntohs(ev.Src.Port())
	r.Daddr.Addr6, r.Dport = addrOf(ev.Dst.Addr(), r.Family), ntohs(ev.Dst.Port())
	if ev.Tracked {
		r.Flags |= uint8(bpfobj.EndpointSlEventFlagSL_EVENT_F_TRACKED)
	}
	if ev.Reply {
		r.Flags |= uint8(bpfobj.EndpointSlEventFlagSL_EVENT_F_REPLY)
	}
	if ev.ServiceID != 0 {
		r.SvcId, r.SockCookie, r.CgroupId = ev.ServiceID, ev.SockCookie, ev.CgroupID
		r.Vip.Addr6, r.VipPort = addrOf(ev.VIP.Addr(), r.Family), ntohs(ev.VIP.Port())
	}
	r.PacketsOrig, r.BytesOrig = ev.PacketsOrig, ev.BytesOrig
	r.PacketsReply, r.BytesReply = ev.PacketsReply, ev.BytesReply
	if ev.Duration > 0 {
		r.DurationNs = uint64(ev.Duration)
	}
	if ev.Verdict != "" {
		r.Verdict = uint8(number(verdictNames, ev.Verdict))
		r.SrcIdentity, r.DstIdentity = ev.SrcIdentity, ev.DstIdentity
		r.PolicyRule, r.ProxyPort = ev.PolicyRule, ev.ProxyPort
	}
	r.Reason = ev.ReasonID
	return r
}

// addrOf is a in a record of family: IPv4 in the first four bytes, or
// IPv6 (an IPv4 address mapped, in an IPv6 record).
func addrOf(a netip.Addr, family uint8) [16]uint8 {
	if family == unix.AF_INET6 && a.Is4() {
		a = netip.AddrFrom16(a.As16())
	}
	return addrTo(a)
}

// MonotonicEpoch is the wall-clock time at which CLOCK_MONOTONIC was zero.
func MonotonicEpoch() time.Time {
	return time.Now().Add(-time.Duration(MonotonicNow()))
}

// EventReader reads the datapath's ring buffer. There is one reader per
// agent: a ring buffer has a single consumer.
type EventReader struct {
	rd       *ringbuf.Reader
	sample   ringbuf.Record // reused: reading allocates nothing
	epoch    time.Time
	deadline time.Time // set by SetDeadline; zero: poll until an event comes
}

// NewEventReader opens a reader on the loaded datapath's event ring.
func (dp *Datapath) NewEventReader() (*EventReader, error) {
	rd, err := ringbuf.NewReader(dp.objs.SlEvents)
	if err != nil {
		return nil, fmt.Errorf("open event ring buffer: %w", err)
	}
	r := &EventReader{rd: rd, epoch: MonotonicEpoch()}
	rd.SetDeadline(time.Now().Add(pollInterval))
	return r, nil
}

// pollInterval bounds how late an event is read: the datapath submits
// events without waking the reader (a wakeup per new connection would
// dominate the cost of a SYN) unless the ring fills up.
const pollInterval = 50 * time.Millisecond

// ReadRecord blocks for the next record and copies it into rec, without
// allocating. It returns ErrClosed after Close.
func (r *EventReader) ReadRecord(rec *Record) error {
	for {
		err := r.rd.ReadInto(&r.sample)
		if err == nil {
			return DecodeRecord(r.sample.RawSample, rec)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && r.deadline.IsZero() {
			// The ring is empty: wait for a wakeup or the next poll. The
			// deadline is armed only here, not per record: while records
			// keep coming, an expired one costs nothing.
			r.rd.SetDeadline(time.Now().Add(pollInterval))
			continue
		}
		if errors.Is(err, ringbuf.ErrClosed) {
			return ErrClosed
		}
		return err
	}
}

// Read blocks for the next event. It returns ErrClosed after Close.
func (r *EventReader) Read() (Event, error) {
	var rec Record
	if err := r.ReadRecord(&rec); err != nil {
		return Event{}, err
	}
	return rec.Event(r.epoch), nil
}

// Epoch is the wall-clock time of CLOCK_MONOTONIC zero that Read uses
// for event times (Record.Time, Record.Event).
func (r *EventReader) Epoch() time.Time { return r.epoch }

// SetDeadline makes Read return os.ErrDeadlineExceeded after t (tests);
// the zero time restores polling forever.
func (r *EventReader) SetDeadline(t time.Time) {
	r.deadline = t
	if t.IsZero() {
		t = time.Now().Add(pollInterval)
	}
	r.rd.SetDeadline(t)
}

// Close unblocks Read.
func (r *EventReader) Close() error { return r.rd.Close() }

// ErrClosed is returned by Read after Close.
var ErrClosed = errors.New("event reader closed")
