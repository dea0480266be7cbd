package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/model"
)

// Direction is relative to the endpoint, with the numbers of the datapath's
// enum sl_dir.
type Direction uint8

// Directions.
const (
	// Ingress is traffic into the pod.
	Ingress = Direction(bpfobj.EndpointSlDirSL_DIR_INGRESS)
	// Egress is traffic out of the pod.
	Egress = Direction(bpfobj.EndpointSlDirSL_DIR_EGRESS)
)

// String returns "ingress" or "egress".
func (d Direction) String() string {
	switch d {
	case Ingress:
		return "ingress"
	case Egress:
		return "egress"
	}
	return "Direction(" + strconv.Itoa(int(d)) + ")"
}

// MarshalText encodes the direction by name.
func (d Direction) MarshalText() ([]byte, error) {
	if d != Ingress && d != Egress {
		return nil, fmt.Errorf("invalid direction %d", d)
	}
	return []byte(d.String()), nil
}

// UnmarshalText is the inverse of MarshalText.
func (d *Direction) UnmarshalText(b []byte) error {
	switch string(b) {
	case "ingress":
		*d = Ingress
	case "egress":
		*d = Egress
	default:
		return fmt.Errorf("unknown direction %q", b)
	}
	return nil
}

// Verdict is what a matching entry does with the packet, with the numbers
// of the datapath's enum sl_policy_verdict.
type Verdict uint8

// Verdicts. Without a matching entry, traffic in an enforced direction is
// dropped.
const (
	Allow = Verdict(bpfobj.EndpointSlPolicyVerdictSL_VERDICT_ALLOW)
	// Redirect sends the connection to the node's L7 proxy on the entry's
	// ProxyPort. Kubernetes NetworkPolicy never produces it.
	Redirect = Verdict(bpfobj.EndpointSlPolicyVerdictSL_VERDICT_REDIRECT)
	// Deny drops the connection (or, in audit mode, reports it). Only
	// ClusterNetworkPolicy makes Deny entries: an Admin Deny, a Baseline
	// Deny, or NetworkPolicy's default deny in a direction compiled with
	// tiers (see cluster.go), where every peer must find an entry.
	Deny = Verdict(bpfobj.EndpointSlPolicyVerdictSL_VERDICT_DENY)
)

// String returns "allow", "redirect" or "deny".
func (v Verdict) String() string {
	switch v {
	case Allow:
		return "allow"
	case Redirect:
		return "redirect"
	case Deny:
		return "deny"
	}
	return "Verdict(" + strconv.Itoa(int(v)) + ")"
}

// MarshalText encodes the verdict by name.
func (v Verdict) MarshalText() ([]byte, error) {
	if v != Allow && v != Redirect && v != Deny {
		return nil, fmt.Errorf("invalid verdict %d", v)
	}
	return []byte(v.String()), nil
}

// UnmarshalText is the inverse of MarshalText.
func (v *Verdict) UnmarshalText(b []byte) error {
	switch string(b) {
	case "allow":
		*v = Allow
	case "redirect":
		*v = Redirect
	case "deny":
		*v = Deny
	default:
		return fmt.Errorf("unknown verdict %q", b)
	}
	return nil
}

// IP protocol numbers used in entries; ProtoAny matches any protocol (and
// then any port).
const (
	ProtoAny  uint8 = 0
	ProtoTCP  uint8 = unix.IPPROTO_TCP
	ProtoUDP  uint8 = unix.IPPROTO_UDP
	ProtoSCTP uint8 = unix.IPPROTO_SCTP
)

// protoNumber is the number of a port's protocol, one of those Kubernetes
// allows on ports (TCP, UDP, SCTP).
func protoNumber(p model.Protocol) (uint8, bool) {
	switch p {
	case model.ProtocolTCP, model.ProtocolUDP, model.ProtocolSCTP:
		return p.Number()
	}
	return 0, false
}

func protoName(p uint8) string {
	if p == ProtoAny {
		return "any"
	}
	return string(model.ProtocolOf(p))
}

// RuleID is a stable number for one rule of one policy, carried by entries
// so that verdict events can name the rule that decided. 0 is none.
type RuleID uint32

// Reserved rule IDs.
const (
	RuleNone RuleID = 0
	// RuleHostAllow decides the entry that always admits this node's own
	// traffic into its pods (see EndpointPolicy).
	RuleHostAllow RuleID = 1
	// RuleL7Open decides the entry that admits every peer into a pod that
	// no NetworkPolicy covers but a SluiceL7Policy does: its ingress is
	// enforced only so that its L7 ports are reached through the proxy.
	RuleL7Open RuleID = 2
	// RuleDefaultAllow decides what a direction compiled with
	// ClusterNetworkPolicy tiers admits because no tier decided it: no
	// Admin rule, no NetworkPolicy isolating the pod, no Baseline rule.
	RuleDefaultAllow RuleID = 3
	firstRuleID      RuleID = 4
)

// RuleRef names a rule: the Index-th rule of a NetworkPolicy's ingress or
// egress list, (L7) the Index-th entry of a SluiceL7Policy's ports, or
// (Cluster) the Index-th rule of a ClusterNetworkPolicy's ingress or
// egress list.
type RuleRef struct {
	Policy    model.NamespacedName `json:"policy"`
	Direction Direction            `json:"direction"`
	Index     int                  `json:"index"`
	// L7 is set for a SluiceL7Policy's port entry (Direction Ingress).
	L7 bool `json:"l7,omitempty"`
	// Cluster is set for a ClusterNetworkPolicy's rule (Policy has no
	// namespace).
	Cluster bool `json:"cluster,omitempty"`
}

// HostAllowRef is the RuleRef of RuleHostAllow; Index -1 marks it as not a
// rule of a real policy.
var HostAllowRef = RuleRef{Policy: model.NamespacedName{Name: "host-allow"}, Direction: Ingress, Index: -1}

// L7OpenRef is the RuleRef of RuleL7Open, not a rule of a real policy either.
var L7OpenRef = RuleRef{Policy: model.NamespacedName{Name: "no-network-policy"}, Direction: Ingress, Index: -1}

// DefaultAllowRef is the RuleRef of RuleDefaultAllow, not a rule of a real
// policy either.
var DefaultAllowRef = RuleRef{Policy: model.NamespacedName{Name: "default-allow"}, Index: -1}

// String returns e.g. "shop/allow-web ingress[0]", "shop/api l7 ports[1]",
// "cnp/guardrail egress[2]", "host-allow", "no-network-policy" or
// "default-allow".
func (r RuleRef) String() string {
	switch {
	case r == HostAllowRef:
		return "host-allow"
	case r == L7OpenRef:
		return "no-network-policy"
	case r == DefaultAllowRef:
		return "default-allow"
	case r.Cluster:
		return "cnp/" + r.Policy.Name + " " + r.Direction.String() + "[" + strconv.Itoa(r.Index) + "]"
	case r.L7:
		return r.Policy.String() + " l7 ports[" + strconv.Itoa(r.Index) + "]"
	}
	return r.Policy.String() + " " + r.Direction.String() + "[" + strconv.Itoa(r.Index) + "]"
}

func compareRuleRefs(a, b RuleRef) int {
	if a.Cluster != b.Cluster {
		if a.Cluster {
			return -1
		}
		return 1
	}
	if a.L7 != b.L7 {
		if a.L7 {
			return 1
		}
		return -1
	}
	if c := cmp.Compare(a.Policy.Namespace, b.Policy.Namespace); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Policy.Name, b.Policy.Name); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Direction, b.Direction); c != 0 {
		return c
	}
	return cmp.Compare(a.Index, b.Index)
}

// Entry is one policy map entry: an LPM key (Identity, Direction exact;
// Protocol exact or wildcard; the first PortPrefixLen bits of Port) and its
// value.
//
// The datapath looks a packet up three times: with the peer's identity from
// the ipcache, with the CIDR class the peer's address has in the endpoint's
// CIDR LPM (CIDRs), and with identity 0 (any peer). The longest match wins;
// on equal length Redirect beats Allow, then a specific identity beats a
// CIDR class, which beats any. Without a match the packet is dropped if
// the direction is enforced.
type Entry struct {
	// Identity is the peer: 0 is any peer (the world included), an ID at or
	// above identity.LocalCIDRBase is a CIDR class of this endpoint.
	Identity  identity.ID `json:"identity"`
	Direction Direction   `json:"direction"`
	// Protocol is IPPROTO_TCP, _UDP or _SCTP; ProtoAny matches any protocol
	// and then any port.
	Protocol uint8 `json:"protocol"`
	// Port is the destination port: the endpoint's own port for ingress, the
	// peer's for egress. Only its first PortPrefixLen bits are significant
	// (the others are zero): 16 is one port, 0 any port. Port ranges are
	// split into the fewest prefixes that cover them exactly.
	Port          uint16  `json:"port"`
	PortPrefixLen uint8   `json:"portPrefixLen"`
	Verdict       Verdict `json:"verdict"`
	// ProxyPort is the proxy listener a Redirect entry hands connections
	// to (l7.Listener.Port); 0 with Redirect fails closed (no port could be
	// allocated).
	ProxyPort uint16 `json:"proxyPort,omitempty"`
	// Rule is the rule reported in verdict events. When several rules give
	// the same key, the first in RuleRef order (namespace, name, direction,
	// index) is kept.
	Rule RuleID `json:"rule"`
}

func compareEntries(a, b Entry) int {
	if c := cmp.Compare(a.Direction, b.Direction); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Identity, b.Identity); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Protocol, b.Protocol); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Port, b.Port); c != 0 {
		return c
	}
	return cmp.Compare(a.PortPrefixLen, b.PortPrefixLen)
}

// CIDREntry is an entry of the endpoint's CIDR LPM: a peer address whose
// longest matching Prefix in the direction is this one is looked up in the
// policy entries as identity Class.
type CIDREntry struct {
	Direction Direction    `json:"direction"`
	Prefix    netip.Prefix `json:"prefix"`
	Class     identity.ID  `json:"class"`
}

func compareCIDRs(a, b CIDREntry) int {
	if c := cmp.Compare(a.Direction, b.Direction); c != 0 {
		return c
	}
	if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits())
}

// EndpointPolicy is the desired policy of one local endpoint. Values
// returned by the Engine are shared and must not be modified.
type EndpointPolicy struct {
	Pod      model.NamespacedName `json:"pod"`
	Identity identity.ID          `json:"identity"`
	// IngressEnforced is set when some policy that covers Ingress selects
	// the pod, or a SluiceL7Policy does (with the entry {any peer, Ingress,
	// any protocol, Allow, RuleL7Open} when no NetworkPolicy covers it, so
	// that its L7 ports fail closed when reached around the proxy): ingress
	// not matched by an entry is then denied. The entry
	// {Identity: Host, Ingress, any protocol, Rule: RuleHostAllow} is always
	// present then, because Kubernetes requires that the node can reach its
	// pods (kubelet probes) whatever the policy.
	IngressEnforced bool `json:"ingressEnforced"`
	EgressEnforced  bool `json:"egressEnforced"`
	// IngressTiered and EgressTiered are set where ClusterNetworkPolicy
	// rules apply: the direction is compiled with tiers (cluster.go), every
	// peer has an entry, and Deny entries name the deciding rule.
	IngressTiered bool `json:"ingressTiered,omitempty"`
	EgressTiered  bool `json:"egressTiered,omitempty"`
	// Audit asks the datapath to report, not drop, denied traffic: set by
	// Options.Audit or by the label sluice.io/policy-audit=true on the
	// pod's namespace.
	Audit bool `json:"audit"`
	// Entries are sorted by direction, identity, protocol, port and prefix
	// length, one per key. Entries made redundant by a shorter one with the
	// same verdict for the same peer or for any peer are left out.
	Entries []Entry `json:"entries,omitempty"`
	// CIDRs are sorted by direction and prefix.
	CIDRs []CIDREntry `json:"cidrs,omitempty"`
	// Overflow is set (to an *OverflowError) when Entries and CIDRs together
	// exceed Options.MaxEntriesPerEndpoint; the datapath must then deny the
	// endpoint's traffic in the enforced directions rather than install a
	// partial policy. Entries and CIDRs are still filled in, for diagnosis.
	Overflow error `json:"-"`
}

// Equal reports whether two endpoint policies are the same.
func (p *EndpointPolicy) Equal(o *EndpointPolicy) bool {
	if p == nil || o == nil {
		return p == o
	}
	return p.Pod == o.Pod && p.Identity == o.Identity &&
		p.IngressEnforced == o.IngressEnforced && p.EgressEnforced == o.EgressEnforced &&
		p.IngressTiered == o.IngressTiered && p.EgressTiered == o.EgressTiered &&
		p.Audit == o.Audit &&
		slices.Equal(p.Entries, o.Entries) && slices.Equal(p.CIDRs, o.CIDRs) &&
		errString(p.Overflow) == errString(o.Overflow)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// OverflowError reports an endpoint whose policy needs more entries than
// allowed.
type OverflowError struct {
	Pod   model.NamespacedName
	Count int
	Limit int
}

func (e *OverflowError) Error() string {
	return fmt.Sprintf("endpoint %s needs %d policy entries, more than the limit of %d per endpoint: "+
		"its traffic is denied; narrow the policies that select it or raise the limit", e.Pod, e.Count, e.Limit)
}

// AuditAnnotation on a namespace, with value "true", puts the policy of
// its pods in audit mode: denials are reported (verdict audit) and
// forwarded. An annotation is not part of the pods' identities, so setting
// it changes nothing else. The label of the same name is honoured too.
const AuditAnnotation = "sluice.io/policy-audit"

// AuditLabel is AuditAnnotation as a namespace label (part of identities).
const AuditLabel = AuditAnnotation

// Options configure an Engine.
type Options struct {
	// NodeName is this node: its pods are the local endpoints and its
	// addresses are identity Host.
	NodeName string
	// Audit puts every endpoint in audit mode.
	Audit bool
	// MaxEntriesPerEndpoint bounds len(Entries)+len(CIDRs) of one endpoint;
	// 0 means no limit.
	MaxEntriesPerEndpoint int
	// ProxyPorts allocates the proxy ports of L7 listeners; it may hold
	// ports restored from a previous run, which rule sets keep when the
	// first Apply (or Sync) sees them again. nil: a new one over
	// l7.DefaultPortRange. The engine owns it: read it (Snapshot) only
	// between calls to the engine.
	ProxyPorts *l7.Ports
}

// Validate reports options that cannot work.
func (o *Options) Validate() error {
	if o.NodeName == "" {
		return fmt.Errorf("policy: node name is empty; set it to this node's Kubernetes name")
	}
	if o.MaxEntriesPerEndpoint < 0 {
		return fmt.Errorf("policy: max entries per endpoint is %d; use 0 for no limit or a positive number", o.MaxEntriesPerEndpoint)
	}
	return nil
}

// Result is what one Engine.Apply changed.
type Result struct {
	// Endpoints are the local endpoints whose policy is new or changed,
	// sorted by pod.
	Endpoints []*EndpointPolicy
	// Removed are the local endpoints that are gone, sorted.
	Removed []model.NamespacedName
	// IPCacheUpserts and IPCacheDeletes are the ipcache changes, sorted by
	// prefix.
	IPCacheUpserts []identity.Mapping
	IPCacheDeletes []netip.Prefix
	// Errors are problems that did not stop the computation, such as an
	// identity that could not be allocated.
	Errors []error
}

// Empty reports whether nothing changed.
func (r *Result) Empty() bool {
	return len(r.Endpoints) == 0 && len(r.Removed) == 0 && len(r.IPCacheUpserts) == 0 &&
		len(r.IPCacheDeletes) == 0 && len(r.Errors) == 0
}
