package policytrace

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/policy"
	"github.com/sluice-net/sluice/pkg/policysync"
	"github.com/sluice-net/sluice/pkg/service"
)

// checker decides paths with one engine, and reads the maps (when not
// nil) for this node's endpoints.
type checker struct {
	t    *Tracer
	e    *policy.Engine
	st   *model.State
	maps Maps
	// endpoints are sl_endpoints by IPv4 address, read once.
	endpoints map[netip.Addr]datapath.EndpointEntry
	epErr     error
}

// path decides the connection from one end to a destination and port.
func (c *checker) path(from, to End, proto uint8, port uint16) Path {
	p := Path{To: to, Port: port}
	if from.Kind == EndPod {
		p.Egress = c.decide(from, policy.Egress, to.Address, proto, port, &p.Problems)
	}
	if to.Kind == EndPod {
		p.Ingress = c.decide(to, policy.Ingress, from.Address, proto, port, &p.Problems)
	}
	p.Verdict = VerdictAllowed
	for _, d := range []*Decision{p.Egress, p.Ingress} {
		switch {
		case d == nil:
		case d.Verdict == VerdictDenied:
			p.Verdict = VerdictDenied
		case d.Verdict == VerdictAudit && p.Verdict != VerdictDenied:
			p.Verdict = VerdictAudit
		case d.Verdict == VerdictRedirected && p.Verdict == VerdictAllowed:
			p.Verdict = VerdictRedirected
		}
	}
	return p
}

// peerIdentity is the identity the datapath at a pod of node gives a
// peer address: node addresses are host on their own node (a connection
// the node itself opens, or its kubelet's probe) and remote-node
// elsewhere; other addresses are what the ipcache says (pods' identities
// are the same on every node).
func peerIdentity(e *policy.Engine, st *model.State, node string, peer netip.Addr) identity.ID {
	if n := nodeOf(st, peer); n != "" {
		if n == node {
			return identity.Host
		}
		return identity.RemoteNode
	}
	return e.IdentityOf(peer)
}

// decide is the decision of pod end ep's policy in direction dir on a
// connection with peer address peer.
func (c *checker) decide(ep End, dir policy.Direction, peer netip.Addr, proto uint8, port uint16, problems *[]string) *Decision {
	nn := splitName(ep.Name)
	d := &Decision{Endpoint: nn, Node: ep.Node, Local: ep.Local, Direction: dir.String()}
	d.Peer = peerIdentity(c.e, c.st, ep.Node, peer)
	d.PeerLabels = c.e.IdentityLabelStrings(d.Peer)
	pol, err := c.e.PolicyOf(nn)
	if err != nil {
		*problems = append(*problems, fmt.Sprintf("%s at %s: %v", dir, nn, err))
		d.Verdict = VerdictDenied
		return d
	}
	d.Enforced = enforcedIn(pol, dir)
	d.Audit = pol.Audit
	var m policy.Match
	switch {
	case !d.Enforced:
		d.Verdict = VerdictNotEnforced
	case pol.Overflow != nil:
		d.Verdict, d.Rule = VerdictDenied, RuleFailsClosed
	default:
		m = pol.Decide(dir, proto, port, d.Peer, peer)
		d.Verdict, d.Rule, d.RuleID, d.Entry, d.ProxyPort = verdictOf(c.e, m)
		if pol.Tiered(dir) {
			d.Tier = c.e.RuleTier(policy.RuleID(d.RuleID))
		}
	}
	if d.Verdict == VerdictDenied && d.Audit {
		d.Verdict = VerdictAudit
	}
	if ep.Local && c.maps != nil {
		d.Maps = c.checkMaps(ep, dir, pol, d, peer, proto, port, problems)
	}
	return d
}

func splitName(s string) model.NamespacedName {
	ns, name, _ := strings.Cut(s, "/")
	return model.NamespacedName{Namespace: ns, Name: name}
}

func enforcedIn(p *policy.EndpointPolicy, dir policy.Direction) bool {
	if dir == policy.Ingress {
		return p.IngressEnforced
	}
	return p.EgressEnforced
}

// verdictOf reads a model match in an enforced direction.
func verdictOf(e *policy.Engine, m policy.Match) (verdict, rule string, ruleID uint32, entry string, proxy uint16) {
	if !m.Found {
		return VerdictDenied, RuleDefaultDeny, 0, "", 0
	}
	verdict = VerdictAllowed
	switch m.Entry.Verdict {
	case policy.Redirect:
		verdict, proxy = VerdictRedirected, m.Entry.ProxyPort
	case policy.Deny:
		// A direction ClusterNetworkPolicy rules apply to has an entry
		// for every peer: a Deny names the Admin or Baseline rule, or
		// (rule 0) NetworkPolicy's default deny.
		verdict = VerdictDenied
		if m.Entry.Rule == policy.RuleNone {
			return verdict, RuleDefaultDeny, 0, m.PeerText() + " " + m.Entry.PortsText(), 0
		}
	}
	return verdict, e.RuleName(m.Entry.Rule), uint32(m.Entry.Rule), m.PeerText() + " " + m.Entry.PortsText(), proxy
}

// checkMaps decides the same connection from the datapath's maps and
// reports every way they differ from the model's decision d.
func (c *checker) checkMaps(ep End, dir policy.Direction, pol *policy.EndpointPolicy, d *Decision, peer netip.Addr, proto uint8, port uint16, problems *[]string) *MapCheck {
	where := fmt.Sprintf("%s at %s", dir, ep.Name)
	fail := func(format string, args ...any) {
		*problems = append(*problems, where+": "+fmt.Sprintf(format, args...))
	}
	if c.endpoints == nil && c.epErr == nil {
		var eps []datapath.EndpointEntry
		eps, c.epErr = c.maps.ListEndpoints()
		c.endpoints = map[netip.Addr]datapath.EndpointEntry{}
		for _, en := range eps {
			if en.IPv4.IsValid() {
				c.endpoints[en.IPv4] = en
			}
		}
	}
	if c.epErr != nil {
		fail("read sl_endpoints: %v", c.epErr)
		return nil
	}
	en, ok := c.endpoints[ep.Address]
	if !ok {
		fail("the model has %s as an endpoint of this node, but sl_endpoints has no entry for %s (not attached yet? see sluice endpoint list)", ep.Name, ep.Address)
		return nil
	}
	mc := &MapCheck{EndpointID: en.ID, Flags: datapath.PolicyFlagNames(en.PolicyFlags), Agrees: true}
	disagree := func(format string, args ...any) {
		mc.Agrees = false
		fail(format, args...)
	}
	if want := datapath.PolicyFlagNames(policysync.EndpointFlags(pol)); !slices.Equal(want, mc.Flags) {
		disagree("endpoint %d's policy flags in sl_endpoints are [%s], the model's are [%s]", en.ID, strings.Join(mc.Flags, ","), strings.Join(want, ","))
	}

	// The peer's identity as the datapath finds it: a connection from
	// the node's own stack is host; otherwise the ipcache's (world when
	// it has none), and at ingress a node address that is not the node
	// originating it is world.
	mc.Peer = identity.World
	if dir == policy.Ingress && d.Peer == identity.Host {
		mc.Peer = identity.Host
	} else {
		ie, found, err := c.maps.LookupIPCache(peer)
		if err != nil {
			fail("%v", err)
			return mc
		}
		if found {
			mc.Peer = identity.ID(ie.Identity)
		}
		if dir == policy.Ingress && mc.Peer == identity.Host {
			mc.Peer = identity.World
		}
	}
	if mc.Peer != d.Peer {
		disagree("sl_ipcache gives the peer %s identity %s, the model %s", peer, mc.Peer, d.Peer)
	}

	flags := en.PolicyFlags
	enforced := flags&datapath.EPFlagPolicyIngress != 0
	if dir == policy.Egress {
		enforced = flags&datapath.EPFlagPolicyEgress != 0
	}
	switch {
	case !enforced:
		mc.Verdict = VerdictNotEnforced
	case flags&datapath.EPFlagPolicyOverflow != 0:
		mc.Verdict, mc.Rule = VerdictDenied, RuleFailsClosed
	default:
		m, err := c.maps.LookupPolicy(en.ID, datapath.PolicyQuery{Dir: uint8(dir), Proto: proto, Port: port,
			PeerIdentity: uint32(mc.Peer), PeerAddr: peer})
		if err != nil {
			fail("%v", err)
			return mc
		}
		switch {
		case !m.HasMaps:
			mc.Verdict, mc.Rule = VerdictDenied, RuleDefaultDeny
			mc.Entry = "endpoint has no policy map"
		case !m.Found:
			mc.Verdict, mc.Rule = VerdictDenied, RuleDefaultDeny
		default:
			mc.Verdict = VerdictAllowed
			switch m.Entry.Verdict {
			case datapath.VerdictRedirect:
				mc.Verdict = VerdictRedirected
			case datapath.VerdictDeny:
				mc.Verdict = VerdictDenied
			}
			mc.RuleID = m.Entry.Rule
			if mc.Verdict == VerdictDenied && m.Entry.Rule == 0 {
				mc.Rule, mc.Entry = RuleDefaultDeny, mapEntryText(m)
				break
			}
			mc.Rule = c.e.RuleName(policy.RuleID(m.Entry.Rule))
			if _, known := c.e.Rule(policy.RuleID(m.Entry.Rule)); !known {
				mc.Rule = "a rule no policy has"
			}
			mc.Entry = mapEntryText(m)
		}
	}
	if mc.Verdict == VerdictDenied && flags&datapath.EPFlagPolicyAudit != 0 {
		mc.Verdict = VerdictAudit
	}
	if mc.Verdict != d.Verdict || mc.RuleID != d.RuleID {
		disagree("the datapath's maps decide %s (%s), the model %s (%s)", mc.Verdict, decidedBy(mc.Rule, mc.RuleID, mc.Entry),
			d.Verdict, decidedBy(d.Rule, d.RuleID, d.Entry))
	}
	return mc
}

func decidedBy(rule string, id uint32, entry string) string {
	switch {
	case rule == "":
		return "no policy selects the pod in this direction"
	case id == 0:
		return rule
	}
	return fmt.Sprintf("%s, rule ID %d, entry %s", rule, id, entry)
}

// mapEntryText describes a matched map entry as the model's are described.
func mapEntryText(m datapath.PolicyMatch) string {
	var peer string
	switch m.Peer {
	case datapath.MatchPeerIdentity:
		peer = "identity " + identity.ID(m.Entry.Identity).String()
	case datapath.MatchPeerCIDR:
		peer = "cidr-class " + identity.ID(m.Class).String()
	default:
		peer = "any peer"
	}
	e := policy.Entry{Protocol: m.Entry.Proto, Port: m.Entry.Port, PortPrefixLen: m.Entry.PortPrefixLen}
	if m.Entry.Proto == 0 {
		e.Protocol = policy.ProtoAny
	}
	return peer + " " + e.PortsText()
}

// serviceHop is the translation of a connection to frontend f: the
// model's backends for new connections and, when the maps are read,
// those the frontend's slots name, which must be the same.
func (c *checker) serviceHop(f *service.Frontend, problems *[]string) *ServiceHop {
	h := &ServiceHop{Service: f.Service, Frontend: f.Key().String(), Kind: string(f.Kind)}
	var want []string
	for _, b := range f.Backends {
		if b.State != service.BackendActive || !b.Address.Is4() {
			continue
		}
		ap := netip.AddrPortFrom(b.Address, b.Port)
		h.Backends = append(h.Backends, Backend{Address: ap, Pod: b.Pod, Node: b.NodeName})
		want = append(want, ap.String())
	}
	if c.maps == nil {
		return h
	}
	proto, _ := f.Protocol.Number()
	key := datapath.LBFrontendKey{Addr: f.Address, Port: f.Port, Proto: proto}
	lb, found, err := c.maps.LookupLB(key)
	if err != nil {
		*problems = append(*problems, fmt.Sprintf("service %s: %v", f.Service, err))
		return h
	}
	h.MapsRead = true
	if !found {
		*problems = append(*problems, fmt.Sprintf("service %s: the model has frontend %s, sl_lb_svc has not", f.Service, h.Frontend))
		return h
	}
	for _, b := range lb.Backends {
		h.MapBackends = append(h.MapBackends, netip.AddrPortFrom(b.Addr, b.Port).String())
	}
	for _, id := range lb.Missing {
		*problems = append(*problems, fmt.Sprintf("service %s: a slot of frontend %s names backend %d, which sl_lb_backends does not hold", f.Service, h.Frontend, id))
	}
	got := slices.Sorted(slices.Values(h.MapBackends))
	slices.Sort(want)
	if !slices.Equal(got, want) {
		*problems = append(*problems, fmt.Sprintf("service %s: frontend %s's backends for new connections are [%s] in the maps, [%s] in the model",
			f.Service, h.Frontend, strings.Join(got, ", "), strings.Join(want, ", ")))
	}
	return h
}
