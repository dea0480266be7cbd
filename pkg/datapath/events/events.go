package events

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/datapath/internal/raw"
)

// Event is one datapath event in readable form: a decoded ring record,
// or one the agent makes itself (the CT GC's expired connections). Its
// enums are the C ones; String names them for display.
type Event struct {
	Time       time.Time
	Type       Type
	Dir        Direction
	Reason     DropReason // a drop's reason; 0: none
	IfIndex    uint32
	EndpointID uint32
	Len        uint32
	Proto      uint8 // IP protocol number
	Src        netip.AddrPort
	Dst        netip.AddrPort
	TCPFlags   uint8 // TCP* bits
	// Tracked reports that conntrack placed the packet in its connection;
	// Reply, that it went in the connection's reply direction (Src is then
	// the server). A drop before the lookup has neither: unknown.
	Tracked bool
	Reply   bool
	// ServiceID is the frontend a translated connection was addressed to
	// (0: not translated); VIP is that frontend, Dst the chosen backend.
	ServiceID  uint32
	VIP        netip.AddrPort
	SockCookie uint64
	// CgroupID is the calling process's cgroup (socket-LB events), which
	// names its pod.
	CgroupID uint64
	// Verdict is the policy decision of a new connection (allowed,
	// redirected, audit) or of a policy drop (denied); VerdictNone when no
	// policy applied. SrcIdentity and DstIdentity are the identities of
	// both ends and PolicyRule the deciding rule (0: default deny).
	Verdict     Verdict
	SrcIdentity uint32
	DstIdentity uint32
	PolicyRule  uint32
	ProxyPort   uint16
	// Connection ends (ConnEnd): the connection's totals, orig being the
	// direction of its first packet, and how long it lasted. Expired
	// (idle) connections are reported by the agent's CT GC with Expired
	// set; closed TCP connections by the datapath.
	PacketsOrig  uint64
	BytesOrig    uint64
	PacketsReply uint64
	BytesReply   uint64
	Duration     time.Duration
	Expired      bool
	// Suppressed counts drops of the same flow and reason not reported
	// since the previous event (rate limit).
	Suppressed uint32
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

// DecodeRecord copies a raw ring sample into r, without allocating. The
// record is in the host's byte order, as Record's layout is the C one.
func DecodeRecord(sample []byte, r *Record) error {
	if len(sample) < RecordSize {
		return fmt.Errorf("decode event of %d bytes: want %d", len(sample), RecordSize)
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(r)), RecordSize), sample)
	return nil
}

// Kind is the record's event type.
func (r *Record) Kind() Type { return Type(r.Type) }

// Direction is the packet's direction relative to the endpoint.
func (r *Record) Direction() Direction { return Direction(r.Dir) }

// PolicyVerdict is the record's policy verdict.
func (r *Record) PolicyVerdict() Verdict { return Verdict(r.Verdict) }

// Tracked reports that conntrack placed the packet in its connection.
func (r *Record) Tracked() bool {
	return r.Flags&uint8(bpfobj.EndpointSlEventFlagSL_EVENT_F_TRACKED) != 0
}

// Reply reports that the packet went in its connection's reply direction.
func (r *Record) Reply() bool { return r.Flags&uint8(bpfobj.EndpointSlEventFlagSL_EVENT_F_REPLY) != 0 }

// Src is the packet's source.
func (r *Record) Src() netip.AddrPort {
	return netip.AddrPortFrom(raw.AddrFrom(r.Saddr.Addr6, r.Family), raw.Ntohs(r.Sport))
}

// Dst is the packet's destination (the chosen backend, if translated).
func (r *Record) Dst() netip.AddrPort {
	return netip.AddrPortFrom(raw.AddrFrom(r.Daddr.Addr6, r.Family), raw.Ntohs(r.Dport))
}

// Frontend is the service frontend a translated connection was addressed
// to; invalid when the record has no service.
func (r *Record) Frontend() netip.AddrPort {
	if r.SvcId == 0 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(raw.AddrFrom(r.Vip.Addr6, r.Family), raw.Ntohs(r.VipPort))
}

// Time is the record's time, given the wall-clock time of CLOCK_MONOTONIC
// zero (MonotonicEpoch).
func (r *Record) Time(epoch time.Time) time.Time { return epoch.Add(time.Duration(r.Ts)) }

// Event is the record in readable form. epoch maps its monotonic
// timestamp to wall time.
func (r *Record) Event(epoch time.Time) Event {
	ev := Event{
		Time: r.Time(epoch), Type: r.Kind(), Dir: r.Direction(),
		IfIndex: r.Ifindex, EndpointID: r.EpId, Len: r.Len, Proto: r.Proto, TCPFlags: r.TcpFlags,
		Tracked: r.Tracked(), Reply: r.Reply(), Src: r.Src(), Dst: r.Dst(),
		Reason: DropReason(r.Reason), Suppressed: r.Suppressed,
	}
	if r.SvcId != 0 {
		ev.ServiceID = r.SvcId
		ev.VIP = r.Frontend()
		ev.SockCookie = r.SockCookie
		ev.CgroupID = r.CgroupId
	}
	if r.Kind() == ConnEnd {
		ev.PacketsOrig, ev.BytesOrig = r.PacketsOrig, r.BytesOrig
		ev.PacketsReply, ev.BytesReply = r.PacketsReply, r.BytesReply
		ev.Duration = time.Duration(r.DurationNs)
	}
	if v := r.PolicyVerdict(); v != VerdictNone {
		ev.Verdict = v
		ev.SrcIdentity, ev.DstIdentity = r.SrcIdentity, r.DstIdentity
		ev.PolicyRule, ev.ProxyPort = r.PolicyRule, r.ProxyPort
	}
	return ev
}

// Decode turns a raw record into an Event. epoch maps the monotonic
// timestamp to wall time.
func Decode(sample []byte, epoch time.Time) (Event, error) {
	var r Record
	if err := DecodeRecord(sample, &r); err != nil {
		return Event{}, err
	}
	return r.Event(epoch), nil
}

// Record is the event as a ring record would carry it, the inverse of
// Record.Event (events the agent makes itself, such as the CT GC's
// expiries, go where records go). epoch maps the event's time back to a
// monotonic timestamp; Expired has no place in a record and is dropped.
func (ev *Event) Record(epoch time.Time) Record {
	r := Record{
		Type: uint8(ev.Type), Dir: uint8(ev.Dir),
		Ifindex: ev.IfIndex, EpId: ev.EndpointID, Len: ev.Len,
		Proto: ev.Proto, TcpFlags: ev.TCPFlags, Suppressed: ev.Suppressed,
		Reason: uint16(ev.Reason),
	}
	if d := ev.Time.Sub(epoch); d > 0 {
		r.Ts = uint64(d)
	}
	r.Family = unix.AF_INET
	if ev.Dst.Addr().Is6() || ev.Src.Addr().Is6() {
		r.Family = unix.AF_INET6
	}
	r.Saddr.Addr6, r.Sport = addrOf(ev.Src.Addr(), r.Family), raw.Htons(ev.Src.Port())
	r.Daddr.Addr6, r.Dport = addrOf(ev.Dst.Addr(), r.Family), raw.Htons(ev.Dst.Port())
	if ev.Tracked {
		r.Flags |= uint8(bpfobj.EndpointSlEventFlagSL_EVENT_F_TRACKED)
	}
	if ev.Reply {
		r.Flags |= uint8(bpfobj.EndpointSlEventFlagSL_EVENT_F_REPLY)
	}
	if ev.ServiceID != 0 {
		r.SvcId, r.SockCookie, r.CgroupId = ev.ServiceID, ev.SockCookie, ev.CgroupID
		r.Vip.Addr6, r.VipPort = addrOf(ev.VIP.Addr(), r.Family), raw.Htons(ev.VIP.Port())
	}
	r.PacketsOrig, r.BytesOrig = ev.PacketsOrig, ev.BytesOrig
	r.PacketsReply, r.BytesReply = ev.PacketsReply, ev.BytesReply
	if ev.Duration > 0 {
		r.DurationNs = uint64(ev.Duration)
	}
	if ev.Verdict != VerdictNone {
		r.Verdict = uint8(ev.Verdict)
		r.SrcIdentity, r.DstIdentity = ev.SrcIdentity, ev.DstIdentity
		r.PolicyRule, r.ProxyPort = ev.PolicyRule, ev.ProxyPort
	}
	return r
}

// addrOf is a in a record of family: IPv4 in the first four bytes, or
// IPv6 (an IPv4 address mapped, in an IPv6 record).
func addrOf(a netip.Addr, family uint8) [16]uint8 {
	if family == unix.AF_INET6 && a.Is4() {
		a = netip.AddrFrom16(a.As16())
	}
	return raw.AddrTo(a)
}

// MonotonicEpoch is the wall-clock time at which CLOCK_MONOTONIC was zero.
func MonotonicEpoch() time.Time { return raw.MonotonicEpoch() }

// Reader reads the datapath's ring buffer. There is one reader per
// agent: a ring buffer has a single consumer.
type Reader struct {
	rd       *ringbuf.Reader
	sample   ringbuf.Record // reused: reading allocates nothing
	epoch    time.Time
	deadline time.Time // set by SetDeadline; zero: poll until an event comes
}

// NewReader opens a reader on the datapath's event ring (sl_events).
func NewReader(ring *ebpf.Map) (*Reader, error) {
	rd, err := ringbuf.NewReader(ring)
	if err != nil {
		return nil, fmt.Errorf("open event ring buffer: %w", err)
	}
	r := &Reader{rd: rd, epoch: MonotonicEpoch()}
	rd.SetDeadline(time.Now().Add(pollInterval))
	return r, nil
}

// pollInterval bounds how late an event is read: the datapath submits
// events without waking the reader (a wakeup per new connection would
// dominate the cost of a SYN) unless the ring fills up.
const pollInterval = 50 * time.Millisecond

// ReadRecord blocks for the next record and copies it into rec, without
// allocating. It returns ErrClosed after Close.
func (r *Reader) ReadRecord(rec *Record) error {
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
func (r *Reader) Read() (Event, error) {
	var rec Record
	if err := r.ReadRecord(&rec); err != nil {
		return Event{}, err
	}
	return rec.Event(r.epoch), nil
}

// Epoch is the wall-clock time of CLOCK_MONOTONIC zero that Read uses
// for event times (Record.Time, Record.Event).
func (r *Reader) Epoch() time.Time { return r.epoch }

// SetDeadline makes Read return os.ErrDeadlineExceeded after t (tests);
// the zero time restores polling forever.
func (r *Reader) SetDeadline(t time.Time) {
	r.deadline = t
	if t.IsZero() {
		t = time.Now().Add(pollInterval)
	}
	r.rd.SetDeadline(t)
}

// Close unblocks Read.
func (r *Reader) Close() error { return r.rd.Close() }

// ErrClosed is returned by Read after Close.
var ErrClosed = errors.New("event reader closed")
