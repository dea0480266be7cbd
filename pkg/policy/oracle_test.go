package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
)

// oracle decides a packet the slow and obvious way, from the model and the
// Kubernetes NetworkPolicy rules alone: does endpoint ep admit (Ingress) or
// send (Egress) a packet whose peer address is addr?
func oracle(s *model.State, nodeName string, ep *model.Pod, dir Direction, addr netip.Addr, proto uint8, port uint16) bool {
	return oracleVia(s, nodeName, ep, dir, addr, proto, port, func(*model.Peer) bool { return true })
}

// oracleVia is oracle counting only the rules' peers via accepts (nil is a
// rule's empty from/to: any peer).
func oracleVia(s *model.State, nodeName string, ep *model.Pod, dir Direction, addr netip.Addr, proto uint8, port uint16, via func(*model.Peer) bool) bool {
	pt := model.PolicyTypeIngress
	if dir == Egress {
		pt = model.PolicyTypeEgress
	}
	var policies []*model.NetworkPolicy
	for _, np := range s.NetworkPolicies {
		if np.Namespace == ep.Namespace && np.Covers(pt) && np.PodSelector.Matches(ep.Labels) {
			policies = append(policies, np)
		}
	}
	if len(policies) == 0 {
		return true
	}
	hostOwned, nodeOwned := false, false
	for _, n := range s.Nodes {
		for _, na := range n.Addresses {
			if a, err := netip.ParseAddr(na.Address); err == nil && a == addr &&
				(na.Type == model.NodeInternalIP || na.Type == model.NodeExternalIP) {
				nodeOwned = true
				hostOwned = hostOwned || n.Name == nodeName
			}
		}
	}
	if dir == Ingress && hostOwned {
		return true
	}
	// The pods with an identity holding addr, and the one the ipcache
	// gives the address to (none when a node has it).
	var holders []*model.Pod
	for _, p := range s.Pods {
		if identity.HasIdentity(p) && slices.Contains(p.IPs, addr) {
			holders = append(holders, p)
		}
	}
	slices.SortFunc(holders, func(a, b *model.Pod) int { return compareNames(a.Key().NamespacedName(), b.Key().NamespacedName()) })
	var owner *model.Pod
	if len(holders) > 0 && !nodeOwned {
		owner = holders[0]
	}
	selects := func(np *model.NetworkPolicy, peer *model.Peer, p *model.Pod) bool {
		if peer == nil {
			return true
		}
		if peer.IPBlock != nil {
			return peer.IPBlock.Contains(addr)
		}
		if p == nil {
			return false
		}
		ps := identity.PeerSelector{Namespace: np.Namespace, PodSelector: peer.PodSelector, NamespaceSelector: peer.NamespaceSelector}
		sub := identity.SubjectOf(p, s.NamespaceLabels(p.Namespace))
		return ps.Matches(&sub)
	}
	resolves := func(p *model.Pod, pp *model.PolicyPort) bool {
		for _, cp := range p.Ports {
			if cp.Name == pp.Port.Name && cp.Protocol == pp.Protocol && cp.Port == port {
				return true
			}
		}
		return false
	}
	portOK := func(pp *model.PolicyPort) bool {
		if pp == nil {
			return true
		}
		if n, ok := protoNumber(pp.Protocol); !ok || n != proto {
			return false
		}
		switch {
		case pp.Port.Name != "":
			return resolves(ep, pp) // ingress only, see below
		case pp.Port.Number == 0:
			return true
		case pp.EndPort != 0:
			return port >= pp.Port.Number && port <= pp.EndPort
		}
		return port == pp.Port.Number
	}
	for _, np := range policies {
		rules := np.Ingress
		if dir == Egress {
			rules = np.Egress
		}
		for _, r := range rules {
			peers := []*model.Peer{nil}
			if len(r.Peers) > 0 {
				peers = nil
				for i := range r.Peers {
					peers = append(peers, &r.Peers[i])
				}
			}
			ports := []*model.PolicyPort{nil}
			if len(r.Ports) > 0 {
				ports = nil
				for i := range r.Ports {
					ports = append(ports, &r.Ports[i])
				}
			}
			for _, peer := range peers {
				if !via(peer) {
					continue
				}
				for _, pp := range ports {
					if dir == Egress && pp != nil && pp.Port.Name != "" {
						// Resolved against the destination pod: any pod
						// holding the address that the peer selects.
						if n, ok := protoNumber(pp.Protocol); !ok || n != proto {
							continue
						}
						for _, d := range holders {
							if selects(np, peer, d) && resolves(d, pp) {
								return true
							}
						}
						continue
					}
					if selects(np, peer, owner) && portOK(pp) {
						return true
					}
				}
			}
		}
	}
	return false
}

// TestEntriesMatchOracle checks, on random states, that the datapath's
// lookup on the computed entries decides every probe as the oracle does.
func TestEntriesMatchOracle(t *testing.T) {
	var addrs []netip.Addr
	for i := 1; i <= 16; i++ {
		addrs = append(addrs, netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
	}
	for _, a := range []string{"fd00::1", "fd00::2", "fd00::3", "fd00::4", "192.168.0.1", "192.168.0.2", "203.0.113.5", "10.1.2.3"} {
		addrs = append(addrs, addr(a))
	}
	type pp struct {
		proto uint8
		port  uint16
	}
	ports := []pp{{ProtoTCP, 80}, {ProtoTCP, 8080}, {ProtoTCP, 8050}, {ProtoTCP, 9000}, {ProtoUDP, 53}, {ProtoTCP, 53}, {ProtoSCTP, 7}, {ProtoUDP, 80}}

	seeds, steps := 4, 150
	if testing.Short() {
		seeds, steps = 1, 50
	}
	probes := 0
	for seed := range seeds {
		g := gen{rand.New(rand.NewPCG(uint64(seed), 99))}
		state := &model.State{}
		e := newEngine(t, state)
		for step := range steps {
			c := g.change(state)
			if c.Op == model.OpDelete {
				state.Delete(c.Object.Key())
			} else {
				state.Upsert(c.Object)
			}
			e.Apply([]model.Change{c})
			ipc := e.IPCache()
			for _, p := range e.Endpoints() {
				pod := state.Pods[p.Pod]
				for _, dir := range []Direction{Ingress, Egress} {
					for _, a := range addrs {
						for _, q := range ports {
							got, _ := decide(p, ipc, dir, a, q.proto, q.port)
							want := oracle(state, localNode, pod, dir, a, q.proto, q.port)
							probes++
							if got != want {
								x, _ := e.Explain(p.Pod)
								require.Equal(t, want, got, "seed %d step %d: %s %s peer %s %s\n%s",
									seed, step, p.Pod, dir, a, entryPorts(q.proto, q.port, 16), fmt.Sprintf("%+v", x))
							}
						}
					}
				}
			}
		}
	}
	t.Logf("%d probes", probes)
}
