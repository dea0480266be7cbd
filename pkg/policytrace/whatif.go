package policytrace

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"path"
	"slices"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/policy"
	"github.com/sluice-net/sluice/pkg/source/files"
)

// WhatIf evaluates the NetworkPolicies and ClusterNetworkPolicies of a
// manifest that is not applied
// (name is its file name, for errors; it is decoded as the files source
// decodes its directory): the connections among flows that they would
// deny, and, when q is not nil, the trace of q under them. The live state
// is not touched.
func (t *Tracer) WhatIf(name string, manifest []byte, q *Query, flows []*flowpb.Flow) (*WhatIf, error) {
	objs, err := files.Decode(name, manifest)
	if err != nil {
		return nil, &BadQueryError{msg: "--what-if " + err.Error()}
	}
	snap := t.Model.Snapshot()
	// The applied ClusterNetworkPolicies decide too: Admin before the
	// manifest's NetworkPolicies, Baseline after.
	st := &model.State{Namespaces: snap.Namespaces, Nodes: snap.Nodes, Pods: snap.Pods,
		NetworkPolicies: maps.Clone(snap.NetworkPolicies), ClusterPolicies: maps.Clone(snap.ClusterPolicies)}
	out := &WhatIf{}
	for _, o := range objs {
		var applied bool
		var label string
		switch p := o.(type) {
		case *model.NetworkPolicy:
			nn := model.NamespacedName{Namespace: p.Namespace, Name: p.Name}
			_, applied = st.NetworkPolicies[nn]
			st.NetworkPolicies = putState(st.NetworkPolicies, nn, p)
			label = nn.String()
		case *model.ClusterNetworkPolicy:
			_, applied = st.ClusterPolicies[p.Name]
			st.ClusterPolicies = putState(st.ClusterPolicies, p.Name, p)
			label = "cnp/" + p.Name
		default:
			return nil, badQuery("--what-if %s: %s: only NetworkPolicy and ClusterNetworkPolicy objects can be evaluated", name, o.Key())
		}
		if applied {
			out.Replaced = append(out.Replaced, label)
		}
		out.Policies = append(out.Policies, label)
	}
	if len(out.Policies) == 0 {
		return nil, badQuery("--what-if %s holds no NetworkPolicy or ClusterNetworkPolicy", name)
	}
	eng, err := policy.NewEngine(policy.Options{NodeName: t.NodeName, Audit: t.Audit}, nil)
	if err != nil {
		return nil, err
	}
	if res := eng.Sync(st); len(res.Errors) > 0 {
		return nil, fmt.Errorf("evaluate --what-if %s: %w", name, errors.Join(res.Errors...))
	}
	if q != nil {
		if out.Trace, err = t.trace(eng, *q, nil); err != nil {
			return nil, err
		}
	}

	// Each distinct (client, server, port) is judged once per engine.
	type tuple struct {
		client, server netip.Addr
		proto          model.Protocol
		port           uint16
	}
	conns := map[flow.ConnectionKey]flow.Connection{}
	byTuple := map[tuple][]flow.ConnectionKey{}
	for _, f := range flows {
		c, ok := flow.ConnectionOf(f)
		if !ok || !c.Client.Addr.Is4() {
			continue
		}
		k := c.Key()
		if old, seen := conns[k]; seen && !c.Time.Before(old.Time) {
			continue // the earliest flow of a connection stands for it
		}
		if _, seen := conns[k]; !seen {
			tk := tuple{c.Client.Addr, c.Server.Addr, c.Protocol, c.Port}
			byTuple[tk] = append(byTuple[tk], k)
		}
		conns[k] = c
	}
	out.Connections = len(conns)
	judge := func(e *policy.Engine, tk tuple) Path {
		proto, _ := protoNumber(tk.proto)
		ck := &checker{t: t, e: e, st: e.State()}
		return ck.path(t.endOfAddr(e, ck.st, tk.client), t.endOfAddr(e, ck.st, tk.server), proto, tk.port)
	}
	now := map[tuple]Path{}
	t.Policy.View(func(e *policy.Engine) {
		for tk := range byTuple {
			now[tk] = judge(e, tk)
		}
	})
	groups := map[string]*DeniedGroup{}
	for tk, keys := range byTuple {
		after := judge(eng, tk)
		at, how := deniedAt(after)
		if at == "" {
			continue
		}
		before := now[tk]
		for _, k := range keys {
			c := conns[k]
			g := DeniedGroup{From: endName(c.Client), To: endName(c.Server), Protocol: c.Protocol, Port: c.Port,
				At: at + " (" + how + ")", Now: decidedNow(before, at)}
			gk := strings.Join([]string{g.From, g.To, string(g.Protocol), fmt.Sprint(g.Port), g.At, g.Now}, "\x00")
			have := groups[gk]
			if have == nil {
				g.Example = c.String()
				have = &g
				groups[gk] = have
			}
			have.Count++
			if have.First.IsZero() || c.Time.Before(have.First) {
				have.First = c.Time
			}
			if c.Time.After(have.Last) {
				have.Last = c.Time
			}
		}
	}
	for _, g := range groups {
		out.Denied = append(out.Denied, *g)
	}
	slices.SortFunc(out.Denied, func(a, b DeniedGroup) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To), cmp.Compare(a.Port, b.Port))
	})
	return out, nil
}

// deniedAt says where a path is denied ("egress" at the client, "ingress"
// at the server) and by what; "" when it is not.
func deniedAt(p Path) (string, string) {
	for _, d := range []*Decision{p.Egress, p.Ingress} {
		if d != nil && (d.Verdict == VerdictDenied || d.Verdict == VerdictAudit) {
			how := d.Rule
			if d.Verdict == VerdictAudit {
				how += ", audit mode: reported, not dropped"
			}
			return d.Direction, how
		}
	}
	return "", ""
}

// putState sets m[k] = v, making the map when needed.
func putState[K comparable, V any](m map[K]V, k K, v V) map[K]V {
	if m == nil {
		m = map[K]V{}
	}
	m[k] = v
	return m
}

// decidedNow is how the live policy decides a path at the same point.
func decidedNow(p Path, at string) string {
	d := p.Ingress
	if at == policy.Egress.String() {
		d = p.Egress
	}
	switch {
	case d == nil:
		return ""
	case d.Verdict == VerdictNotEnforced:
		return "no policy selects the pod"
	case d.Rule != "":
		return d.Verdict + " by " + d.Rule
	}
	return d.Verdict
}

// endName names a connection's end for grouping: its workload, else its
// pod, else what its identity says (world, host, remote-node), else its
// address.
func endName(e flow.ConnectionEnd) string {
	ep := e.Endpoint
	if ws := ep.GetWorkloads(); len(ws) > 0 && ws[0].GetName() != "" && ep.GetNamespace() != "" {
		return path.Join(ep.GetNamespace(), ws[0].GetName()) + " (" + ws[0].GetKind() + ")"
	}
	if ep.GetPodName() != "" {
		return path.Join(ep.GetNamespace(), ep.GetPodName())
	}
	for _, l := range ep.GetLabels() {
		if r, ok := strings.CutPrefix(l, "reserved:"); ok {
			return r + " " + e.Addr.String()
		}
	}
	return e.Addr.String()
}
