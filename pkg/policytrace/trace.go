package policytrace

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/policy"
	"github.com/sluice-net/sluice/pkg/service"
)

// PolicyView runs a function with the live policy engine, under the lock
// of its owner (the policy reconciler), so that its answers agree with
// each other.
type PolicyView interface {
	View(fn func(*policy.Engine))
}

// Services gives the computed service table (nil before the first pass).
type Services interface {
	Desired() *service.Desired
}

// ModelSource gives the model as it is now.
type ModelSource interface {
	Snapshot() *model.State
}

// Maps is what a trace reads of the datapath: pkg/datapath's typed
// lookups.
type Maps interface {
	ListEndpoints() ([]datapath.EndpointEntry, error)
	LookupIPCache(addr netip.Addr) (datapath.IPCacheEntry, bool, error)
	LookupPolicy(epID uint32, q datapath.PolicyQuery) (datapath.PolicyMatch, error)
	LookupLB(key datapath.LBFrontendKey) (datapath.LBService, bool, error)
}

// Tracer answers traces from an agent's parts.
type Tracer struct {
	// NodeName is this node: its pods' decisions are read from Maps too.
	NodeName string
	// Audit is the agent's --policy-audit, for the engine of WhatIf.
	Audit    bool
	Policy   PolicyView
	Services Services
	Model    ModelSource
	// Maps, if nil, leaves the datapath out: model answers only.
	Maps Maps
}

// BadQueryError is a query that names something that does not exist or
// cannot be traced; its message says which part of the query.
type BadQueryError struct{ msg string }

func (e *BadQueryError) Error() string { return e.msg }

func badQuery(format string, args ...any) error {
	return &BadQueryError{msg: fmt.Sprintf(format, args...)}
}

// IsBadQuery reports whether err is the query's fault.
func IsBadQuery(err error) bool {
	var b *BadQueryError
	return errors.As(err, &b)
}

// Trace answers q from the live engine and, for this node's endpoints,
// the datapath's maps.
func (t *Tracer) Trace(q Query) (*Result, error) {
	var (
		res *Result
		err error
	)
	t.Policy.View(func(e *policy.Engine) {
		res, err = t.trace(e, q, t.Maps)
	})
	return res, err
}

// trace answers q with engine e, reading maps when not nil.
func (t *Tracer) trace(e *policy.Engine, q Query, maps Maps) (*Result, error) {
	st := e.State()
	if q.Protocol == "" {
		q.Protocol = model.ProtocolTCP
	}
	proto, ok := protoNumber(q.Protocol)
	if !ok {
		return nil, badQuery("--protocol %q: use tcp, udp or sctp", q.Protocol)
	}
	from, err := t.resolveEnd(e, st, q.From, "--from")
	if err != nil {
		return nil, err
	}
	toSpec, port, err := splitPort(q.To, q.Port)
	if err != nil {
		return nil, err
	}
	if port == 0 {
		return nil, badQuery("no destination port: give --port or --to %s:PORT", q.To)
	}
	res := &Result{From: from, Protocol: q.Protocol, Port: port}
	var svc *service.Desired
	if t.Services != nil {
		svc = t.Services.Desired()
	}
	fe, to, err := t.resolveDestination(e, st, svc, toSpec, port, q.Protocol)
	if err != nil {
		return nil, err
	}
	res.To = to
	c := &checker{t: t, e: e, st: st, maps: maps}
	if fe == nil {
		res.Paths = append(res.Paths, c.path(from, to, proto, port))
	} else {
		res.Service = c.serviceHop(fe, &res.Problems)
		for _, b := range res.Service.Backends {
			dst := t.endOfAddr(e, st, b.Address.Addr())
			res.Paths = append(res.Paths, c.path(from, dst, proto, b.Address.Port()))
		}
	}
	for _, p := range res.Paths {
		res.Problems = append(res.Problems, p.Problems...)
	}
	res.Verdict = summarize(res.Paths)
	return res, nil
}

func protoNumber(p model.Protocol) (uint8, bool) {
	switch model.Protocol(strings.ToUpper(string(p))) {
	case model.ProtocolTCP:
		return policy.ProtoTCP, true
	case model.ProtocolUDP:
		return policy.ProtoUDP, true
	case model.ProtocolSCTP:
		return policy.ProtoSCTP, true
	}
	return 0, false
}

// splitPort separates "dest:PORT" and checks it against --port.
func splitPort(to string, flag uint16) (string, uint16, error) {
	spec, port := to, flag
	if ap, err := netip.ParseAddrPort(to); err == nil {
		spec = ap.Addr().String()
		port = ap.Port()
	} else if i := strings.LastIndexByte(to, ':'); i > 0 && !strings.Contains(to[i:], "/") && strings.Contains(to[:i], "/") {
		n, err := strconv.ParseUint(to[i+1:], 10, 16)
		if err != nil || n == 0 {
			return "", 0, badQuery("--to %q: the port after ':' must be a number from 1 to 65535", to)
		}
		spec, port = to[:i], uint16(n)
	}
	if flag != 0 && port != flag {
		return "", 0, badQuery("--to %s names port %d but --port says %d: give one", to, port, flag)
	}
	return spec, port, nil
}

// resolveEnd resolves NAMESPACE/POD or an address.
func (t *Tracer) resolveEnd(e *policy.Engine, st *model.State, spec, flag string) (End, error) {
	if spec == "" {
		return End{}, badQuery("%s is empty: give NAMESPACE/POD or an IP address", flag)
	}
	if ns, name, ok := strings.Cut(spec, "/"); ok {
		if ns == "" || name == "" {
			return End{}, badQuery("%s %q: want NAMESPACE/POD", flag, spec)
		}
		p, ok := st.Pods[model.NamespacedName{Namespace: ns, Name: name}]
		if !ok {
			return End{}, badQuery("%s %s: no such pod", flag, spec)
		}
		return t.podEnd(e, p)
	}
	a, err := netip.ParseAddr(spec)
	if err != nil {
		return End{}, badQuery("%s %q: want NAMESPACE/POD or an IP address", flag, spec)
	}
	return t.endOfAddr(e, st, a.Unmap()), nil
}

func (t *Tracer) podEnd(e *policy.Engine, p *model.Pod) (End, error) {
	nn := model.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	a := ipv4Of(p)
	if !a.IsValid() {
		return End{}, badQuery("pod %s has no IPv4 address: the datapath judges IPv4 connections only", nn)
	}
	if p.HostNetwork {
		return End{}, badQuery("pod %s uses the host's network: it is its node, not an endpoint; give the node's address", nn)
	}
	end := End{Kind: EndPod, Name: nn.String(), Address: a, Node: p.NodeName, Local: p.NodeName == t.NodeName}
	end.Identity, _ = e.PodIdentity(nn)
	end.Labels = e.IdentityLabelStrings(end.Identity)
	return end, nil
}

func ipv4Of(p *model.Pod) netip.Addr {
	for _, a := range p.IPs {
		if a.Unmap().Is4() {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

// endOfAddr says what an address is: a pod's (one with an identity, so
// not host-network), a node's, or another.
func (t *Tracer) endOfAddr(e *policy.Engine, st *model.State, a netip.Addr) End {
	if n := nodeOf(st, a); n != "" {
		id := identity.RemoteNode
		if n == t.NodeName {
			id = identity.Host
		}
		return End{Kind: EndNode, Name: n, Address: a, Node: n, Local: n == t.NodeName, Identity: id, Labels: e.IdentityLabelStrings(id)}
	}
	if p := podOf(st, a); p != nil {
		if end, err := t.podEnd(e, p); err == nil {
			return end
		}
	}
	id := e.IdentityOf(a)
	return End{Kind: EndAddress, Name: a.String(), Address: a, Identity: id, Labels: e.IdentityLabelStrings(id)}
}

// podOf returns the pod with an identity that holds a, the first by name
// when several claim it (as the ipcache decides).
func podOf(st *model.State, a netip.Addr) *model.Pod {
	var best *model.Pod
	for _, p := range st.Pods {
		if !identity.HasIdentity(p) || !slices.Contains(p.IPs, a) {
			continue
		}
		if best == nil || p.Namespace < best.Namespace || (p.Namespace == best.Namespace && p.Name < best.Name) {
			best = p
		}
	}
	return best
}

// nodeOf returns the node that has a as an internal or external address.
func nodeOf(st *model.State, a netip.Addr) string {
	for _, n := range st.Nodes {
		for _, na := range n.Addresses {
			if na.Type != model.NodeInternalIP && na.Type != model.NodeExternalIP {
				continue
			}
			if x, err := netip.ParseAddr(na.Address); err == nil && x.Unmap() == a {
				return n.Name
			}
		}
	}
	return ""
}

// resolveDestination resolves --to: a pod or address (no frontend), or a
// service's frontend.
func (t *Tracer) resolveDestination(e *policy.Engine, st *model.State, svc *service.Desired, spec string, port uint16, proto model.Protocol) (*service.Frontend, End, error) {
	proto = model.Protocol(strings.ToUpper(string(proto)))
	forceSvc, forcePod := false, false
	for _, p := range []string{"svc:", "service:"} {
		if s, ok := strings.CutPrefix(spec, p); ok {
			spec, forceSvc = s, true
		}
	}
	if s, ok := strings.CutPrefix(spec, "pod:"); ok {
		spec, forcePod = s, true
	}
	if ns, name, ok := strings.Cut(spec, "/"); ok {
		nn := model.NamespacedName{Namespace: ns, Name: name}
		_, isPod := st.Pods[nn]
		var ports []string
		var match *service.Frontend
		isSvc := false
		if svc != nil {
			for i := range svc.Frontends {
				f := &svc.Frontends[i]
				if f.Service != nn || f.Kind != service.KindClusterIP {
					continue
				}
				isSvc = true
				ports = append(ports, string(f.Protocol)+"/"+strconv.Itoa(int(f.Port)))
				if f.Port == port && f.Protocol == proto && f.Address.Is4() && match == nil {
					match = f
				}
			}
		}
		switch {
		case isPod && isSvc && !forcePod && !forceSvc:
			return nil, End{}, badQuery("--to %s is both a pod and a service: write pod:%s or svc:%s", spec, spec, spec)
		case isPod && !forceSvc:
			end, err := t.resolveEnd(e, st, spec, "--to")
			return nil, end, err
		case isSvc && !forcePod:
			if match == nil {
				slices.Sort(ports)
				return nil, End{}, badQuery("service %s has no IPv4 ClusterIP port %s/%d (it has %s)", nn, proto, port, strings.Join(slices.Compact(ports), ", "))
			}
			return match, End{Kind: EndService, Name: nn.String(), Address: match.Address}, nil
		}
		return nil, End{}, badQuery("--to %s: no such pod or service", spec)
	}
	a, err := netip.ParseAddr(spec)
	if err != nil {
		return nil, End{}, badQuery("--to %q: want NAMESPACE/POD, NAMESPACE/SERVICE or an IP address", spec)
	}
	a = a.Unmap()
	if svc != nil {
		isNode := nodeOf(st, a) != ""
		var wildcard *service.Frontend
		for i := range svc.Frontends {
			f := &svc.Frontends[i]
			if f.Port != port || f.Protocol != proto {
				continue
			}
			if f.Address == a {
				return f, End{Kind: EndService, Name: f.Service.String(), Address: a}, nil
			}
			if isNode && f.IsWildcard() && wildcard == nil {
				wildcard = f
			}
		}
		if wildcard != nil {
			return wildcard, End{Kind: EndService, Name: wildcard.Service.String(), Address: a}, nil
		}
	}
	return nil, t.endOfAddr(e, st, a), nil
}

// summarize is the result's verdict over its paths.
func summarize(paths []Path) string {
	if len(paths) == 0 {
		return VerdictRefused
	}
	v := paths[0].Verdict
	for _, p := range paths[1:] {
		if p.Verdict != v {
			return VerdictDepends
		}
	}
	return v
}
