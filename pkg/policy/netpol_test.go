package policy

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/sluice-net/sluice/pkg/model"
)

type probe struct {
	from, to, port string
	want           bool
}

func ok(from, to, port string) probe { return probe{from, to, port, true} }
func no(from, to, port string) probe { return probe{from, to, port, false} }

// TestNetworkPolicyBehaviour follows the upstream network-policy e2e suite
// (test/e2e/network/netpol): namespaces x, y, z with pods a, b, c, serving
// 80 and 81 on TCP, UDP and SCTP. Each case installs policies, optionally
// changes the model, and probes connections through the computed entries
// the way the datapath looks them up. Every case runs twice: with the final
// state applied at once, and incrementally from the initial one.
func TestNetworkPolicyBehaviour(t *testing.T) {
	allNS := nsPeer(sel())
	tests := []struct {
		name     string
		policies []*model.NetworkPolicy
		before   []probe // probed before update, if any
		update   func(s *model.State)
		probes   []probe
	}{
		{
			name:     "default-deny-ingress",
			policies: []*model.NetworkPolicy{netpol("x/deny", sel()).build()},
			probes: []probe{
				no("y/a", "x/a", "TCP/80"), no("x/b", "x/a", "TCP/80"), no("192.0.2.1", "x/a", "TCP/80"),
				no("node:n2", "x/a", "TCP/80"),
				ok("node:n1", "x/a", "TCP/80"), // kubelet probes
				ok("x/a", "y/a", "TCP/80"),     // egress is not covered
				ok("y/a", "y/b", "TCP/80"),     // other namespaces are not selected
			},
		},
		{
			name:     "default-deny-egress",
			policies: []*model.NetworkPolicy{netpol("x/deny", sel()).types(model.PolicyTypeEgress).build()},
			probes: []probe{
				no("x/a", "y/a", "TCP/80"), no("x/a", "x/b", "UDP/81"), no("x/a", "192.0.2.1", "TCP/443"),
				ok("y/a", "x/a", "TCP/80"),
			},
		},
		{
			name:     "default-deny-all",
			policies: []*model.NetworkPolicy{netpol("x/deny", sel()).types(model.PolicyTypeIngress, model.PolicyTypeEgress).build()},
			probes:   []probe{no("x/a", "x/b", "TCP/80"), no("y/a", "x/a", "TCP/80"), ok("y/a", "z/a", "TCP/80")},
		},
		{
			name: "allow-all ingress",
			policies: []*model.NetworkPolicy{
				netpol("x/deny", sel()).build(),
				netpol("x/allow", sel()).ingress(rl(nil)).build(),
			},
			probes: []probe{ok("y/a", "x/a", "TCP/80"), ok("192.0.2.1", "x/b", "UDP/81"), ok("node:n2", "x/c", "SCTP/80")},
		},
		{
			name: "podSelector: pods of the policy's namespace",
			policies: []*model.NetworkPolicy{
				netpol("x/allow-b", sel("pod", "a")).ingress(rl(peers(podPeer(sel("pod", "b"))))).build(),
			},
			probes: []probe{
				ok("x/b", "x/a", "TCP/80"), no("x/c", "x/a", "TCP/80"), no("y/b", "x/a", "TCP/80"),
				ok("y/a", "x/b", "TCP/80"),
			},
		},
		{
			name: "empty podSelector peer: all pods of the namespace, nothing else",
			policies: []*model.NetworkPolicy{
				netpol("x/same-ns", sel()).ingress(rl(peers(podPeer(sel())))).build(),
			},
			probes: []probe{ok("x/b", "x/a", "TCP/80"), no("y/a", "x/a", "TCP/80"), no("192.0.2.1", "x/a", "TCP/80")},
		},
		{
			name: "namespaceSelector alone",
			policies: []*model.NetworkPolicy{
				netpol("x/from-y", sel("pod", "a")).ingress(rl(peers(nsPeer(sel("ns", "y"))))).build(),
			},
			probes: []probe{ok("y/a", "x/a", "TCP/80"), ok("y/c", "x/a", "UDP/81"), no("x/b", "x/a", "TCP/80"), no("z/a", "x/a", "TCP/80")},
		},
		{
			name: "empty namespaceSelector: all pods, not the world",
			policies: []*model.NetworkPolicy{
				netpol("x/from-pods", sel("pod", "a")).ingress(rl(peers(allNS))).build(),
			},
			probes: []probe{
				ok("x/b", "x/a", "TCP/80"), ok("z/c", "x/a", "TCP/80"),
				no("192.0.2.1", "x/a", "TCP/80"), no("node:n2", "x/a", "TCP/80"),
			},
		},
		{
			name: "namespaceSelector with matchExpressions NotIn",
			policies: []*model.NetworkPolicy{
				netpol("x/not-x", sel("pod", "a")).ingress(rl(peers(nsPeer(expr("ns", model.SelectorOpNotIn, "x"))))).build(),
			},
			probes: []probe{ok("y/a", "x/a", "TCP/80"), ok("z/b", "x/a", "TCP/80"), no("x/b", "x/a", "TCP/80")},
		},
		{
			name: "podSelector or namespaceSelector",
			policies: []*model.NetworkPolicy{
				netpol("x/or", sel("pod", "a")).ingress(rl(peers(
					nsPeer(expr("ns", model.SelectorOpNotIn, "x")), podPeer(sel("pod", "b"))))).build(),
			},
			probes: []probe{ok("x/b", "x/a", "TCP/80"), ok("y/a", "x/a", "TCP/80"), ok("z/c", "x/a", "TCP/80"), no("x/c", "x/a", "TCP/80")},
		},
		{
			name: "podSelector and namespaceSelector",
			policies: []*model.NetworkPolicy{
				netpol("x/and", sel("pod", "a")).ingress(rl(peers(
					bothPeer(expr("ns", model.SelectorOpNotIn, "x"), sel("pod", "b"))))).build(),
			},
			probes: []probe{
				ok("y/b", "x/a", "TCP/80"), ok("z/b", "x/a", "TCP/80"),
				no("y/a", "x/a", "TCP/80"), no("x/b", "x/a", "TCP/80"), no("z/c", "x/a", "TCP/80"),
			},
		},
		{
			name: "multiple podSelectors and namespaceSelectors",
			policies: []*model.NetworkPolicy{
				netpol("x/multi", sel("pod", "a")).ingress(rl(peers(
					bothPeer(expr("ns", model.SelectorOpNotIn, "x"), expr("pod", model.SelectorOpIn, "b", "c"))))).build(),
			},
			probes: []probe{ok("y/b", "x/a", "TCP/80"), ok("z/c", "x/a", "TCP/80"), no("y/a", "x/a", "TCP/80"), no("x/b", "x/a", "TCP/80")},
		},
		{
			name: "matchExpressions Exists and NotIn on pods",
			policies: []*model.NetworkPolicy{
				netpol("x/exprs", sel("pod", "a")).ingress(rl(peers(podPeer(&model.LabelSelector{
					MatchExpressions: []model.SelectorRequirement{
						{Key: "pod", Operator: model.SelectorOpExists},
						{Key: "pod", Operator: model.SelectorOpNotIn, Values: []string{"c"}},
					},
				})))).build(),
			},
			probes: []probe{ok("x/b", "x/a", "TCP/80"), no("x/c", "x/a", "TCP/80")},
		},
		{
			name: "ports: one TCP port",
			policies: []*model.NetworkPolicy{
				netpol("x/81", sel("pod", "a")).ingress(rl(peers(allNS), tcp(81))).build(),
			},
			probes: []probe{ok("y/a", "x/a", "TCP/81"), no("y/a", "x/a", "TCP/80"), no("y/a", "x/a", "UDP/81")},
		},
		{
			name: "stacked policies with overlapping podSelectors",
			policies: []*model.NetworkPolicy{
				netpol("x/80", sel("pod", "a")).ingress(rl(peers(allNS), tcp(80))).build(),
				netpol("x/81", sel()).ingress(rl(peers(allNS), tcp(81))).build(),
			},
			probes: []probe{ok("y/a", "x/a", "TCP/80"), ok("y/a", "x/a", "TCP/81"), no("y/a", "x/a", "UDP/80"), no("y/a", "x/b", "TCP/80")},
		},
		{
			name: "named port ingress",
			policies: []*model.NetworkPolicy{
				netpol("x/named", sel("pod", "a")).ingress(rl(nil, named(model.ProtocolTCP, "serve-81-tcp"))).build(),
			},
			probes: []probe{ok("y/a", "x/a", "TCP/81"), no("y/a", "x/a", "TCP/80"), no("y/a", "x/a", "UDP/81")},
		},
		{
			name: "named port ingress from a namespace",
			policies: []*model.NetworkPolicy{
				netpol("x/named", sel("pod", "a")).ingress(rl(peers(nsPeer(sel("ns", "y"))), named(model.ProtocolTCP, "serve-80-tcp"))).build(),
			},
			probes: []probe{ok("y/b", "x/a", "TCP/80"), no("y/b", "x/a", "TCP/81"), no("z/b", "x/a", "TCP/80")},
		},
		{
			name: "named port that the pod does not have matches nothing",
			policies: []*model.NetworkPolicy{
				netpol("x/named", sel("pod", "a")).ingress(rl(nil, named(model.ProtocolTCP, "serve-82-tcp"))).build(),
			},
			probes: []probe{no("y/a", "x/a", "TCP/80"), no("y/a", "x/a", "TCP/82")},
		},
		{
			name: "named port egress",
			policies: []*model.NetworkPolicy{
				netpol("x/named", sel("pod", "a")).egress(rl(nil, named(model.ProtocolTCP, "serve-80-tcp"))).build(),
			},
			probes: []probe{
				ok("x/a", "y/b", "TCP/80"), ok("x/a", "x/b", "TCP/80"),
				no("x/a", "y/b", "TCP/81"), no("x/a", "y/b", "UDP/80"),
				no("x/a", "192.0.2.1", "TCP/80"), // a name means nothing for a non-pod
			},
		},
		{
			name: "endPort range",
			policies: []*model.NetworkPolicy{
				netpol("x/range", sel("pod", "a")).ingress(rl(peers(allNS), portRangeOf(model.ProtocolTCP, 80, 81))).build(),
			},
			probes: []probe{ok("y/a", "x/a", "TCP/80"), ok("y/a", "x/a", "TCP/81"), no("y/a", "x/a", "TCP/79"), no("y/a", "x/a", "TCP/82")},
		},
		{
			name: "any port of one protocol",
			policies: []*model.NetworkPolicy{
				netpol("x/tcp", sel("pod", "a")).ingress(rl(peers(allNS), model.PolicyPort{Protocol: model.ProtocolTCP})).build(),
			},
			probes: []probe{ok("y/a", "x/a", "TCP/80"), ok("y/a", "x/a", "TCP/81"), no("y/a", "x/a", "UDP/80"), no("y/a", "x/a", "SCTP/80")},
		},
		{
			name: "UDP only",
			policies: []*model.NetworkPolicy{
				netpol("x/udp", sel("pod", "a")).ingress(rl(peers(allNS), udp(81))).build(),
			},
			probes: []probe{ok("y/a", "x/a", "UDP/81"), no("y/a", "x/a", "TCP/81"), no("y/a", "x/a", "UDP/80")},
		},
		{
			name: "SCTP is not TCP",
			policies: []*model.NetworkPolicy{
				netpol("x/sctp", sel("pod", "a")).ingress(rl(peers(allNS), sctp(80))).build(),
				netpol("x/tcp", sel("pod", "b")).ingress(rl(peers(allNS), tcp(80))).build(),
			},
			probes: []probe{
				ok("y/a", "x/a", "SCTP/80"), no("y/a", "x/a", "TCP/80"),
				ok("y/a", "x/b", "TCP/80"), no("y/a", "x/b", "SCTP/80"),
			},
		},
		{
			name: "egress to pods in another namespace",
			policies: []*model.NetworkPolicy{
				netpol("x/to-yb", sel("pod", "a")).egress(rl(peers(bothPeer(sel("ns", "y"), sel("pod", "b"))))).build(),
			},
			probes: []probe{ok("x/a", "y/b", "TCP/80"), no("x/a", "y/a", "TCP/80"), no("x/a", "x/b", "TCP/80")},
		},
		{
			name: "client egress deny wins over server allow",
			policies: []*model.NetworkPolicy{
				netpol("x/deny-egress", sel("pod", "a")).types(model.PolicyTypeEgress).build(),
				netpol("y/allow", sel()).ingress(rl(nil)).build(),
			},
			probes: []probe{no("x/a", "y/b", "TCP/80"), ok("x/b", "y/b", "TCP/80")},
		},
		{
			name: "ingress and egress controlled independently",
			policies: []*model.NetworkPolicy{
				netpol("x/both", sel("pod", "a")).
					ingress(rl(peers(podPeer(sel("pod", "b"))))).
					egress(rl(peers(podPeer(sel("pod", "c"))))).build(),
			},
			probes: []probe{ok("x/b", "x/a", "TCP/80"), no("x/c", "x/a", "TCP/80"), ok("x/a", "x/c", "TCP/80"), no("x/a", "x/b", "TCP/80")},
		},
		{
			name: "allow-all ingress takes precedence over narrower policies",
			policies: []*model.NetworkPolicy{
				netpol("x/narrow", sel("pod", "a")).ingress(rl(peers(podPeer(sel("pod", "b"))), tcp(80))).build(),
				netpol("x/all", sel("pod", "a")).ingress(rl(nil)).build(),
			},
			probes: []probe{ok("z/c", "x/a", "UDP/81"), ok("192.0.2.1", "x/a", "TCP/81")},
		},
		{
			name: "allow-all egress takes precedence",
			policies: []*model.NetworkPolicy{
				netpol("x/narrow", sel("pod", "a")).egress(rl(peers(podPeer(sel("pod", "b"))), tcp(80))).build(),
				netpol("x/all", sel("pod", "a")).egress(rl(nil)).build(),
			},
			probes: []probe{ok("x/a", "z/c", "UDP/81"), ok("x/a", "192.0.2.1", "TCP/443")},
		},
		{
			name: "ipBlock egress to one pod address",
			policies: []*model.NetworkPolicy{
				netpol("x/cidr", sel("pod", "a")).egress(rl(peers(ipPeer("10.244.2.2/32")))).build(),
			},
			probes: []probe{ok("x/a", "y/b", "TCP/80"), no("x/a", "y/a", "TCP/80")},
		},
		{
			name: "ipBlock with except on a pod address",
			policies: []*model.NetworkPolicy{
				netpol("x/cidr", sel("pod", "a")).egress(rl(peers(ipPeer("10.244.2.0/24", "10.244.2.2/32")))).build(),
			},
			probes: []probe{ok("x/a", "y/a", "TCP/80"), ok("x/a", "y/c", "TCP/80"), no("x/a", "y/b", "TCP/80"), no("x/a", "z/a", "TCP/80")},
		},
		{
			name: "an address in one rule's except and another rule's cidr is allowed",
			policies: []*model.NetworkPolicy{
				netpol("x/cidr", sel("pod", "a")).egress(
					rl(peers(ipPeer("10.244.2.2/4", "10.244.2.2/32"))),
					rl(peers(ipPeer("10.244.2.2/32")), tcp(80)),
				).build(),
			},
			probes: []probe{
				ok("x/a", "y/b", "TCP/80"), no("x/a", "y/b", "TCP/81"),
				ok("x/a", "y/a", "UDP/81"), no("x/a", "192.0.2.1", "TCP/80"),
			},
		},
		{
			name: "ipBlock ingress matches node addresses",
			policies: []*model.NetworkPolicy{
				netpol("x/from-n2", sel("pod", "a")).ingress(rl(peers(ipPeer("192.168.1.2/32")))).build(),
			},
			probes: []probe{ok("node:n2", "x/a", "TCP/80"), ok("node:n1", "x/a", "TCP/80"), no("y/a", "x/a", "TCP/80")},
		},
		{
			name: "ipBlock everything except the pod network",
			policies: []*model.NetworkPolicy{
				netpol("x/out", sel("pod", "a")).egress(rl(peers(ipPeer("0.0.0.0/0", "10.244.0.0/16")), tcp(443))).build(),
			},
			probes: []probe{ok("x/a", "192.0.2.1", "TCP/443"), ok("x/a", "node:n2", "TCP/443"), no("x/a", "y/a", "TCP/443"), no("x/a", "192.0.2.1", "TCP/80")},
		},
		{
			name:     "a policy in another namespace does not apply",
			policies: []*model.NetworkPolicy{netpol("y/deny", sel()).build()},
			probes:   []probe{ok("z/a", "x/a", "TCP/80"), no("z/a", "y/a", "TCP/80")},
		},
		{
			name: "rules of an uncovered direction are ignored",
			policies: []*model.NetworkPolicy{func() *model.NetworkPolicy {
				np := netpol("x/ingress-only", sel("pod", "a")).ingress(rl(nil)).build()
				np.Egress = []model.Rule{rl(peers(podPeer(sel("pod", "b"))))}
				return np
			}()},
			probes: []probe{ok("x/a", "y/c", "TCP/80")},
		},
		{
			name: "updated policy",
			policies: []*model.NetworkPolicy{
				netpol("x/p", sel("pod", "a")).ingress(rl(peers(allNS), tcp(81))).build(),
			},
			before: []probe{ok("y/a", "x/a", "TCP/81"), no("y/a", "x/a", "TCP/80")},
			update: func(s *model.State) {
				s.Upsert(netpol("x/p", sel("pod", "a")).ingress(rl(peers(allNS), tcp(80))).build())
			},
			probes: []probe{no("y/a", "x/a", "TCP/81"), ok("y/a", "x/a", "TCP/80")},
		},
		{
			name: "updated namespace labels",
			policies: []*model.NetworkPolicy{
				netpol("x/p", sel("pod", "a")).ingress(rl(peers(nsPeer(sel("ns", "y-new"))))).build(),
			},
			before: []probe{no("y/a", "x/a", "TCP/80")},
			update: func(s *model.State) { s.Upsert(namespace("y", "ns", "y-new")) },
			probes: []probe{ok("y/a", "x/a", "TCP/80"), ok("y/b", "x/a", "TCP/80"), no("z/a", "x/a", "TCP/80")},
		},
		{
			name: "updated pod labels of a client",
			policies: []*model.NetworkPolicy{
				netpol("x/p", sel("pod", "a")).ingress(rl(peers(podPeer(sel("pod", "b-new"))))).build(),
			},
			before: []probe{no("x/b", "x/a", "TCP/80")},
			update: func(s *model.State) { s.Upsert(pod("x/b", localNode, "10.244.1.2", "pod", "b-new")) },
			probes: []probe{ok("x/b", "x/a", "TCP/80"), no("x/c", "x/a", "TCP/80")},
		},
		{
			name:     "updated pod labels of a server",
			policies: []*model.NetworkPolicy{netpol("x/deny", sel("pod", "a-new")).build()},
			before:   []probe{ok("y/a", "x/b", "TCP/80")},
			update:   func(s *model.State) { s.Upsert(pod("x/b", localNode, "10.244.1.2", "pod", "a-new")) },
			probes:   []probe{no("y/a", "x/b", "TCP/80")},
		},
		{
			name:     "deleted policy stops being enforced",
			policies: []*model.NetworkPolicy{netpol("x/deny", sel()).build()},
			before:   []probe{no("y/a", "x/a", "TCP/80")},
			update:   func(s *model.State) { s.Delete(model.Key{Kind: model.KindNetworkPolicy, Namespace: "x", Name: "deny"}) },
			probes:   []probe{ok("y/a", "x/a", "TCP/80")},
		},
		{
			name: "client pod moves to a new address",
			policies: []*model.NetworkPolicy{
				netpol("x/p", sel("pod", "a")).egress(rl(peers(podPeer(sel("pod", "b"))), named(model.ProtocolTCP, "serve-81-tcp"))).build(),
			},
			before: []probe{ok("x/a", "x/b", "TCP/81")},
			update: func(s *model.State) {
				p := pod("x/b", "n2", "10.244.9.9", "pod", "b")
				p.Ports = []model.ContainerPort{{Name: "serve-81-tcp", Port: 8181, Protocol: model.ProtocolTCP}}
				s.Upsert(p)
			},
			probes: []probe{ok("x/a", "x/b", "TCP/8181"), no("x/a", "x/b", "TCP/81"), no("x/a", "10.244.1.2", "TCP/81")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			initial := netpolCluster()
			for _, np := range tt.policies {
				initial.Upsert(np)
			}
			final := initial.Clone()
			if tt.update != nil {
				tt.update(final)
			}

			incremental := newEngine(t, initial)
			for _, p := range tt.before {
				assert.Equal(t, p.want, reach(incremental, initial, p.from, p.to, p.port), "before update: %s -> %s %s", p.from, p.to, p.port)
			}
			res := incremental.Sync(final)
			assert.Empty(t, res.Errors)
			fresh := newEngine(t, final)
			for _, e := range []*Engine{fresh, incremental} {
				for _, p := range tt.probes {
					assert.Equal(t, p.want, reach(e, final, p.from, p.to, p.port), "%s -> %s %s", p.from, p.to, p.port)
				}
			}
		})
	}
}
