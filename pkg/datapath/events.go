package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"

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

// DecodeEvent turns a raw record into an Event. bootTime maps the
// monotonic timestamp to wall time.
func DecodeEvent(raw []byte, bootTime time.Time) (Event, error) {
	var r bpfobj.BpfSlEvent
	if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, &r); err != nil {
		return Event{}, fmt.Errorf("decode event of %d bytes: %w", len(raw), err)
	}
	ev := Event{
		Time: bootTime.Add(time.Duration(r.Ts)), Type: EventTypeName(r.Type),
		Dir: DirName(r.Dir), IfIndex: r.Ifindex, EndpointID: r.EpId, Len: r.Len,
		Proto: ProtoName(r.Proto), TCPFlags: r.TcpFlags,
		Tracked: r.Flags&uint8(bpfobj.BpfSlEventFlagSL_EVENT_F_TRACKED) != 0,
		Reply:   r.Flags&uint8(bpfobj.BpfSlEventFlagSL_EVENT_F_REPLY) != 0,
		Src:     netip.AddrPortFrom(addrFrom(r.Saddr.Addr6, r.Family), ntohs(r.Sport)),
		Dst:     netip.AddrPortFrom(addrFrom(r.Daddr.Addr6, r.Family), ntohs(r.Dport)),
	}
	if r.SvcId != 0 {
		ev.ServiceID = r.SvcId
		ev.VIP = netip.AddrPortFrom(addrFrom(r.Vip.Addr6, r.Family), ntohs(r.VipPort))
		ev.SockCookie = r.SockCookie
		ev.CgroupID = r.CgroupId
	}
	if r.Type == uint8(bpfobj.BpfSlEventTypeSL_EVENT_CONN_END) {
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
	return ev, nil
}

// MonotonicEpoch is the wall-clock time at which CLOCK_MONOTONIC was zero.
func MonotonicEpoch() time.Time {
	return time.Now().Add(-time.Duration(MonotonicNow()))
}

// EventReader reads the datapath's ring buffer. There is one reader per
// agent: a ring buffer has a single consumer.
type EventReader struct {
	rd       *ringbuf.Reader
	epoch    time.Time
	deadline time.Time // set by SetDeadline; zero: poll until an event comes
}

// NewEventReader opens a reader on the loaded datapath's event ring.
func (dp *Datapath) NewEventReader() (*EventReader, error) {
	rd, err := ringbuf.NewReader(dp.objs.SlEvents)
	if err != nil {
		return nil, fmt.Errorf("open event ring buffer: %w", err)
	}
	return &EventReader{rd: rd, epoch: MonotonicEpoch()}, nil
}

// pollInterval bounds how late an event is read: the datapath submits
// events without waking the reader (a wakeup per new connection would
// dominate the cost of a SYN) unless the ring fills up.
const pollInterval = 50 * time.Millisecond

// Read blocks for the next event. It returns ErrClosed after Close.
func (r *EventReader) Read() (Event, error) {
	for {
		if r.deadline.IsZero() {
			r.rd.SetDeadline(time.Now().Add(pollInterval))
		}
		rec, err := r.rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) && r.deadline.IsZero() {
			continue // nothing yet: poll again
		}
		if err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				return Event{}, ErrClosed
			}
			return Event{}, err
		}
		return DecodeEvent(rec.RawSample, r.epoch)
	}
}

// SetDeadline makes Read return os.ErrDeadlineExceeded after t (tests);
// the zero time restores polling forever.
func (r *EventReader) SetDeadline(t time.Time) {
	r.deadline = t
	r.rd.SetDeadline(t)
}

// Close unblocks Read.
func (r *EventReader) Close() error { return r.rd.Close() }

// ErrClosed is returned by Read after Close.
var ErrClosed = errors.New("event reader closed")
