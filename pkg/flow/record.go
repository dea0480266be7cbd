package flow

import (
	"net/netip"
	"sync"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sluice-net/sluice/pkg/datapath/events"
	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
)

// Record is one datapath event as the store keeps it: the ring record as
// the datapath wrote it, its wall-clock time, and what the agent knew
// about its ends, service and rule when it read it, by reference to
// immutable values that every record with the same facts shares. It is a
// fixed-size value: making and storing one allocates nothing once its ends
// have been seen. Build makes the Hubble flow.
//
// The references keep what they name: a pod deleted a second after its
// event keeps its name, labels and workload in the flows built later.
type Record struct {
	rec      events.Record
	unixNano int64 // the event's time (rec.Ts is not used)
	expired  bool  // a connection end found by the CT GC, not the datapath
	refs
	conv *Converter // node name and emitter of the flow
}

// refs are what enrichment resolved for one event.
type refs struct {
	src, dst *endRef
	svc      *serviceRef
	rule     *ruleRef
}

// endRef is one end of a flow as the agent resolved it: the Hubble endpoint,
// made once and shared, read-only, by every flow with this end.
type endRef struct {
	ep *flowpb.Endpoint
	// podIPs are the pod's addresses: a socket event's source shows the
	// calling pod's.
	podIPs []netip.Addr
	wire   encoded // ep's wire bytes (AppendResponse)
}

func (e *endRef) endpoint() *flowpb.Endpoint {
	if e == nil {
		return nil
	}
	return e.ep
}

// serviceRef is a translated event's service (nil if the agent did not
// know the frontend) and the frontend the client addressed.
type serviceRef struct {
	service                  *flowpb.Service
	origDst                  *anypb.Any
	serviceWire, origDstWire encoded
}

// ruleRef is a deciding rule and its flow.Policy.
type ruleRef struct {
	rule   Rule
	policy *flowpb.Policy
	wire   encoded
}

// Cache bounds: when a cache reaches its bound it starts over (what
// stored records hold stays theirs). A node has a few hundred distinct
// ends at a time; pods that come and go add new ones.
const (
	maxEnds     = 8192
	maxServices = 4096
	maxRules    = 4096
)

// resolved are a converter's caches.
type resolved struct {
	ends     map[endKey]*endRef
	services map[serviceKey]*serviceRef
	rules    map[Rule]*ruleRef
}

// endKey is everything an endRef is made of: the endpoint the enricher
// returned (by its pod and the labels it chose, which the enricher keeps
// unchanged while they are current) and the identity the flow shows.
type endKey struct {
	id       uint32
	identity identity.ID
	pod      *model.Pod
	labels   *identity.Label // first of the labels shown; nil: none or the pod's
	nlabels  int
	podLabel bool // labels derived from the pod's own
}

type serviceKey struct {
	svc     Service
	known   bool
	origDst netip.AddrPort
}

// Record resolves a record read now: its ends, service and rule as the
// Enricher knows them at this moment. epoch maps the record's monotonic
// timestamp to wall time (events.Reader.Epoch).
func (c *Converter) Record(rec *events.Record, epoch time.Time) Record {
	return Record{rec: *rec, unixNano: rec.Time(epoch).UnixNano(), refs: c.resolve(recordFacts(rec)), conv: c}
}

// RecordEvent resolves an event the agent made itself (a connection end
// the CT GC found expired), as Record does a ring record.
func (c *Converter) RecordEvent(ev *events.Event) Record {
	rec := ev.Record(ev.Time)
	return Record{rec: rec, unixNano: ev.Time.UnixNano(), expired: ev.Expired, refs: c.resolve(eventFacts(ev)), conv: c}
}

// event is the record in readable form.
func (r *Record) event() events.Event {
	ev := r.rec.Event(time.Unix(0, 0))
	ev.Time = r.Time()
	ev.Expired = r.expired
	return ev
}

// Time is the event's time.
func (r *Record) Time() time.Time { return time.Unix(0, r.unixNano).UTC() }

// Kind is the datapath event type.
func (r *Record) Kind() events.Type { return r.rec.Kind() }

// Build makes the record's Hubble flow. Every call makes a new flow;
// sub-messages that records share (endpoints, services, policies) are
// shared by the flows: never modify a flow.
func (r *Record) Build() *flowpb.Flow {
	ev := r.event()
	return r.conv.build(&ev, r.refs)
}

// facts are what enrichment starts from: the ends as the datapath saw
// them, the service and the rule.
type facts struct {
	src, dst side
	svcID    uint32
	frontend netip.AddrPort
	ruleID   uint32
}

// recordFacts reads a record's facts as Record.Event reads its fields (a
// cgroup only with a service, identities and the rule only with a
// verdict), without making the readable event.
func recordFacts(rec *events.Record) facts {
	f := facts{src: side{addr: rec.Src().Addr()}, dst: side{addr: rec.Dst().Addr()}}
	if rec.PolicyVerdict() != events.VerdictNone {
		f.src.identity, f.dst.identity, f.ruleID = rec.SrcIdentity, rec.DstIdentity, rec.PolicyRule
	}
	if rec.SvcId != 0 {
		f.src.cgroup, f.svcID, f.frontend = rec.CgroupId, rec.SvcId, rec.Frontend()
	}
	// The endpoint is the source of egress, the destination of ingress;
	// host programs (on uplinks) report endpoint 0.
	switch rec.Direction() {
	case events.DirEgress:
		f.src.localID = rec.EpId
	case events.DirIngress:
		f.dst.localID = rec.EpId
	}
	return f
}

// eventFacts are an event's facts, as it holds them.
func eventFacts(ev *events.Event) facts {
	f := facts{
		src:   side{addr: ev.Src.Addr(), identity: ev.SrcIdentity, cgroup: ev.CgroupID},
		dst:   side{addr: ev.Dst.Addr(), identity: ev.DstIdentity},
		svcID: ev.ServiceID, frontend: ev.VIP, ruleID: ev.PolicyRule,
	}
	switch ev.Dir {
	case events.DirEgress:
		f.src.localID = ev.EndpointID
	case events.DirIngress:
		f.dst.localID = ev.EndpointID
	}
	return f
}

// resolve asks the Enricher about an event's ends, service and rule.
func (c *Converter) resolve(f facts) refs {
	e := c.Enricher
	if e == nil {
		e = noEnricher{}
	}
	var r refs
	r.src = c.resolveEnd(e, f.src)
	r.dst = c.resolveEnd(e, f.dst)
	if f.svcID != 0 {
		svc, ok := e.Service(f.svcID)
		r.svc = c.service(serviceKey{svc: svc, known: ok, origDst: f.frontend})
	}
	// Rule 0 is the default deny (or an allow without a rule, such as
	// an unenforced direction).
	if f.ruleID != 0 {
		if rule, ok := e.PolicyRule(f.ruleID); ok {
			r.rule = c.rule(rule)
		}
	}
	return r
}

// side is one end of an event as the datapath saw it.
type side struct {
	addr     netip.Addr
	identity uint32 // from the datapath; 0 if the event carries none
	localID  uint32 // the endpoint the event was observed at, if this end
	cgroup   uint64 // the calling process's cgroup (socket events, source)
}

// resolveEnd resolves one end: the local endpoint by ID, the caller by cgroup,
// anything else by address. Identities from the datapath win over the
// agent's, as in Hubble: they are what the decision was made with.
func (c *Converter) resolveEnd(e Enricher, s side) *endRef {
	var ep Endpoint
	ok := false
	if s.localID != 0 {
		ep, ok = e.LocalEndpoint(s.localID)
	}
	if !ok && s.cgroup != 0 {
		ep, ok = e.EndpointByCgroup(s.cgroup)
	}
	if !ok && s.addr.IsValid() && !s.addr.IsUnspecified() {
		ep, ok = e.EndpointByIP(s.addr.Unmap())
	}

	id := identity.ID(s.identity)
	if id.IsLocalCIDR() {
		// A CIDR class of one endpoint's policy: meaningless elsewhere.
		id = identity.Unknown
	}
	switch {
	case id != identity.Unknown:
	case ok:
		id = ep.Identity
	case s.addr.IsValid() && !s.addr.IsUnspecified():
		id = identity.World // not in the cluster
	}

	k := endKey{id: ep.ID, identity: id, pod: ep.Pod}
	if !ok && s.localID != 0 {
		k.id = s.localID
	}
	labels, fromPod := labelsOf(e, ep, id)
	if len(labels) > 0 {
		k.labels, k.nlabels = &labels[0], len(labels)
	}
	k.podLabel = fromPod

	return intern(&c.mu, &c.cache.ends, maxEnds, k, func() *endRef { return c.newEnd(k, labels) })
}

// intern returns the value cached under k, made by mk if there is none;
// the cache starts over when it holds max values.
func intern[K comparable, V any](mu *sync.Mutex, m *map[K]V, max int, k K, mk func() V) V {
	mu.Lock()
	defer mu.Unlock()
	if v, ok := (*m)[k]; ok {
		return v
	}
	if *m == nil || len(*m) >= max {
		*m = make(map[K]V)
	}
	v := mk()
	(*m)[k] = v
	return v
}

// newEnd makes the Hubble endpoint of k.
func (c *Converter) newEnd(k endKey, labels identity.Labels) *endRef {
	out := &flowpb.Endpoint{ID: k.id, Identity: uint32(k.identity)}
	end := &endRef{ep: out}
	if k.pod != nil {
		out.Namespace, out.PodName = k.pod.Namespace, k.pod.Name
		out.ClusterName = c.ClusterName
		if w, ok := WorkloadOf(k.pod); ok {
			out.Workloads = []*flowpb.Workload{w}
		}
		end.podIPs = k.pod.IPs
	}
	if k.podLabel {
		s := identity.SubjectOf(k.pod, nil)
		labels = s.Labels()
	}
	if len(labels) > 0 {
		out.Labels = labels.Strings()
	}
	return end
}

// labelsOf returns the labels an endpoint shows, in Hubble's
// "source:key=value" form once printed: the agent's labels for the
// endpoint, else those of the identity (reserved ones are fixed), else
// the pod's own labels (fromPod: derived when the end is made).
func labelsOf(e Enricher, ep Endpoint, id identity.ID) (ls identity.Labels, fromPod bool) {
	if len(ep.Labels) > 0 {
		return ep.Labels, false
	}
	if ls, ok := identity.ReservedLabels(id); ok {
		return ls, false
	}
	if id != identity.Unknown {
		if ls, ok := e.IdentityLabels(id); ok && len(ls) > 0 {
			return ls, false
		}
	}
	return nil, ep.Pod != nil
}

// service returns the shared reference of a translated event's service.
func (c *Converter) service(k serviceKey) *serviceRef {
	return intern(&c.mu, &c.cache.services, maxServices, k, func() *serviceRef {
		s := &serviceRef{}
		if k.known {
			s.service = &flowpb.Service{Namespace: k.svc.Namespace, Name: k.svc.Name}
		}
		// The frontend the client addressed: Hubble's flow names the
		// service but has no field for its address and port.
		if k.origDst.IsValid() {
			s.origDst = originalDestination(k.origDst)
		}
		return s
	})
}

// rule returns the shared reference of a deciding rule.
func (c *Converter) rule(r Rule) *ruleRef {
	return intern(&c.mu, &c.cache.rules, maxRules, r, func() *ruleRef {
		return &ruleRef{rule: r, policy: policyOf(r)}
	})
}

// Verdict is the flow's verdict (the built flow's, without building it).
func (r *Record) Verdict() flowpb.Verdict {
	switch r.rec.Kind() {
	case events.Drop:
		return flowpb.Verdict_DROPPED
	case events.Translate:
		return flowpb.Verdict_TRANSLATED
	case events.ConnEnd:
		return flowpb.Verdict_FORWARDED
	case events.ConnNew:
		switch r.rec.PolicyVerdict() {
		case events.VerdictNone, events.VerdictAllow:
			return flowpb.Verdict_FORWARDED
		case events.VerdictRedirect:
			return flowpb.Verdict_REDIRECTED
		case events.VerdictAudit:
			return flowpb.Verdict_AUDIT
		case events.VerdictDeny:
			return flowpb.Verdict_DROPPED
		}
	}
	return flowpb.Verdict_VERDICT_UNKNOWN
}
