package events

import "github.com/sluice-net/sluice/pkg/datapath/bpfobj"

// Type is a record's kind, enum sl_event_type.
type Type = bpfobj.EndpointSlEventType

// Event types.
const (
	ConnNew   = bpfobj.EndpointSlEventTypeSL_EVENT_CONN_NEW
	Drop      = bpfobj.EndpointSlEventTypeSL_EVENT_DROP
	Translate = bpfobj.EndpointSlEventTypeSL_EVENT_TRANSLATE
	ConnEnd   = bpfobj.EndpointSlEventTypeSL_EVENT_CONN_END
)

// Direction is a packet's direction relative to its endpoint, enum sl_dir.
type Direction = bpfobj.EndpointSlDir

// Directions.
const (
	DirUnknown = bpfobj.EndpointSlDirSL_DIR_UNKNOWN
	DirIngress = bpfobj.EndpointSlDirSL_DIR_INGRESS
	DirEgress  = bpfobj.EndpointSlDirSL_DIR_EGRESS
)

// Verdict is a policy decision, enum sl_policy_verdict: of a new
// connection or a policy drop in events, of an entry in policy maps.
type Verdict = bpfobj.EndpointSlPolicyVerdict

// Verdicts.
const (
	VerdictNone     = bpfobj.EndpointSlPolicyVerdictSL_VERDICT_NONE
	VerdictAllow    = bpfobj.EndpointSlPolicyVerdictSL_VERDICT_ALLOW
	VerdictRedirect = bpfobj.EndpointSlPolicyVerdictSL_VERDICT_REDIRECT
	VerdictDeny     = bpfobj.EndpointSlPolicyVerdictSL_VERDICT_DENY
	VerdictAudit    = bpfobj.EndpointSlPolicyVerdictSL_VERDICT_AUDIT
)

// DropReason is why a packet was dropped, enum sl_drop_reason: Hubble's
// flow.DropReason number below SluiceDropReasonBase, Sluice's own from it.
type DropReason = bpfobj.EndpointSlDropReason

// SluiceDropReasonBase is the first drop reason with no Hubble equivalent.
const SluiceDropReasonBase = bpfobj.EndpointSlDropReasonSL_DROP_SLUICE_BASE

// TCP flag bits of Event.TCPFlags and Record.TcpFlags, enum sl_tcp_flag.
const (
	TCPFIN = uint8(bpfobj.EndpointSlTcpFlagTCPF_FIN)
	TCPSYN = uint8(bpfobj.EndpointSlTcpFlagTCPF_SYN)
	TCPRST = uint8(bpfobj.EndpointSlTcpFlagTCPF_RST)
	TCPPSH = uint8(bpfobj.EndpointSlTcpFlagTCPF_PSH)
	TCPACK = uint8(bpfobj.EndpointSlTcpFlagTCPF_ACK)
	TCPURG = uint8(bpfobj.EndpointSlTcpFlagTCPF_URG)
	TCPECE = uint8(bpfobj.EndpointSlTcpFlagTCPF_ECE)
	TCPCWR = uint8(bpfobj.EndpointSlTcpFlagTCPF_CWR)
)
