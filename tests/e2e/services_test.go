package e2e

// Kubernetes Services on simulated nodes: ClusterIP translation on the
// per-packet path and through socket LB, rejects without endpoints,
// session affinity, terminating and removed backends. The pods are
// dual-stack, and most tests run their body once per family (eachFamily):
// IPv4 services with IPv4 EndpointSlices, then IPv6 ones with IPv6 slices.
//
//	node1 (routed)                                 node2 (bridge)
//	 client ──► VIP 10.96.0.10:80 / [fd00:96::a]:80 ──┬──► b1 (node1) :8080
//	                                                   └──► b2 (node2) :8080

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/internal/testing/testutil"
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/datapath/sockdestroy"
	"github.com/sluice-net/sluice/pkg/flow"
)

var vip = netip.MustParseAddr("10.96.0.10")

type svcPort struct {
	name       string
	port       int
	targetPort string // number or name, as in the Service
	backend    int    // the port the pods listen on (EndpointSlice port)
	proto      string
}

var webPorts = []svcPort{
	{"http", 80, "http", 8080, "TCP"},
	{"dns", 53, "5353", 5353, "UDP"},
}

// endpoint of a service: a pod and its conditions.
type svcEndpoint struct {
	pod                         *harness.Pod
	ready, serving, terminating bool
}

func ready(pods ...*harness.Pod) []svcEndpoint {
	var out []svcEndpoint
	for _, p := range pods {
		out = append(out, svcEndpoint{pod: p, ready: true, serving: true})
	}
	return out
}

// serviceYAML is a single-stack Service of ip's family and its
// EndpointSlice of that addressType, as the API server and the
// EndpointSlice controller would hold them.
func serviceYAML(ns, name string, ip netip.Addr, ports []svcPort, eps []svcEndpoint, spec string) string {
	fam := "IPv4"
	if ip.Is6() {
		fam = "IPv6"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  clusterIP: %s\n  clusterIPs: [%s]\n  ipFamilies: [%s]\n  ports:\n", name, ns, ip, ip, fam)
	for _, p := range ports {
		tp := p.targetPort
		if _, err := fmt.Sscanf(tp, "%d", new(int)); err != nil {
			tp = fmt.Sprintf("%q", tp)
		}
		fmt.Fprintf(&b, "  - name: %s\n    port: %d\n    targetPort: %s\n    protocol: %s\n", p.name, p.port, tp, p.proto)
	}
	b.WriteString(spec)
	writeSlice(&b, ns, name, name+"-abc12", fam, ports, eps)
	return b.String()
}

// writeSlice writes an EndpointSlice of service ns/name: its pods'
// addresses of addressType ("IPv4": Pod.IP, "IPv6": Pod.IPv6()).
func writeSlice(b *strings.Builder, ns, name, slice, addressType string, ports []svcPort, eps []svcEndpoint) {
	fmt.Fprintf(b, "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: %s\n  namespace: %s\n  labels:\n    kubernetes.io/service-name: %s\naddressType: %s\nports:\n", slice, ns, name, addressType)
	for _, p := range ports {
		fmt.Fprintf(b, "- name: %s\n  port: %d\n  protocol: %s\n", p.name, p.backend, p.proto)
	}
	if len(eps) == 0 {
		b.WriteString("endpoints: []\n")
	} else {
		b.WriteString("endpoints:\n")
	}
	for _, e := range eps {
		addr := e.pod.IP
		if addressType == "IPv6" {
			addr = e.pod.IPv6()
		}
		fmt.Fprintf(b, "- addresses: [%s]\n  nodeName: %s\n  targetRef: {kind: Pod, namespace: %s, name: %s}\n  conditions: {ready: %t, serving: %t, terminating: %t}\n",
			addr, e.pod.Node.Name, e.pod.Namespace, e.pod.Name, e.ready, e.serving, e.terminating)
	}
}

// waitServices waits until every node's agent programmed n frontends.
func (e *env) waitServices(n int) {
	e.t.Helper()
	for _, node := range e.c.Nodes() {
		require.Eventually(e.t, func() bool {
			return e.status(node).Services.Frontends == n
		}, 10*time.Second, 50*time.Millisecond, "services on %s: %+v", node.Name, e.status(node).Services)
	}
}

// serviceCluster is two nodes, a client and two backends serving TCP and
// UDP, all dual-stack: the tests run each family on the same cluster
// (eachFamily).
func serviceCluster(t *testing.T, agentArgs ...string) (*env, *harness.Pod, []*harness.Pod) {
	e := newEnv(t, agentArgs...)
	n1 := e.node("node1", harness.Routed)
	n2 := e.node("node2", harness.Bridge)
	client := e.dualPod(n1, "default", "client", nil)
	b1 := e.dualPod(n1, "default", "b1", map[string]string{"app": "web"})
	b2 := e.dualPod(n2, "default", "b2", map[string]string{"app": "web"})
	serveWeb(t, b1, b2)
	require.NoError(t, e.c.SyncManifests())
	return e, client, []*harness.Pod{b1, b2}
}

// whoIsCalling is the client address in a "whoiscalling" answer: the
// address the backend saw.
func whoIsCalling(t *testing.T, answer string) netip.Addr {
	t.Helper()
	ap, err := netip.ParseAddrPort(answer)
	require.NoError(t, err, "whoiscalling answered %q", answer)
	return ap.Addr()
}

// serveWeb starts webPorts' backend servers in each pod: TCP echo on 8080
// and UDP echo on 5353.
func serveWeb(t *testing.T, pods ...*harness.Pod) {
	t.Helper()
	for _, p := range pods {
		_, err := p.StartTCPEchoServer(8080)
		require.NoError(t, err)
		_, err = p.StartUDPEchoServer(5353)
		require.NoError(t, err)
	}
}

var socketLBModes = []struct {
	name string
	args []string
}{
	{"per-packet", []string{"--socket-lb=off"}},
	{"socket-lb", []string{"--socket-lb=all"}},
}

func TestServiceClusterIP(t *testing.T) {
	for _, m := range socketLBModes {
		t.Run(m.name, func(t *testing.T) {
			e, client, backends := serviceCluster(t, m.args...)
			e.eachFamily(func(t *testing.T, e *env, fam ipFamily) {
				vip := fam.vip()
				require.NoError(t, e.c.WriteManifest("svc-web.yaml", serviceYAML("default", "web", vip, webPorts, ready(backends...), "")))
				for _, n := range e.c.Nodes() {
					e.ensureAgent(n)
				}
				e.waitServices(2)
				require.Equal(t, strings.TrimPrefix(m.args[0], "--socket-lb="), e.status(e.c.Node("node1")).SocketLB)

				// TCP by named targetPort, UDP by number; both backends serve.
				seen := whoamiVIP(t, client, vip, 30)
				require.Len(t, seen, 2, "connections spread over both backends: %v", seen)
				udpSeen := map[string]bool{}
				for range 20 {
					who, err := client.UDPRequest(ctx(t), vip, 53, "whoami")
					require.NoError(t, err)
					udpSeen[who] = true
				}
				require.Len(t, udpSeen, 2)

				// The application only ever sees the VIP.
				_, peer, err := client.PeerRequest(ctx(t), "tcp", vip, 80, "whoami")
				require.NoError(t, err)
				require.Equal(t, netip.AddrPortFrom(vip, 80), peer, "getpeername")
				_, from, err := client.PeerRequest(ctx(t), "udp", vip, 53, "whoami")
				require.NoError(t, err)
				require.Equal(t, netip.AddrPortFrom(vip, 53), from, "recvfrom source")

				// Flows name the service translation: the service, the
				// frontend the client addressed, and the backend chosen.
				n1 := e.c.Node("node1")
				f := e.waitFlow(n1, "translation", func(f *flowpb.Flow) bool {
					od, ok := flow.OriginalDestination(f)
					return ok && od == netip.AddrPortFrom(vip, 80)
				})
				_, dst := flowEnds(f)
				require.Contains(t, []netip.Addr{fam.pod(backends[0]), fam.pod(backends[1])}, dst.Addr())
				require.Equal(t, uint16(8080), dst.Port())
				require.Equal(t, fam.ipVersion(), f.GetIP().GetIpVersion())
				require.Equal(t, "default", f.GetDestinationService().GetNamespace(), "the flow names the service")
				require.Equal(t, "web", f.GetDestinationService().GetName(), "the flow names the service")
				require.Equal(t, "client", f.GetSource().GetPodName(), "and the client pod (socket LB: from the caller's cgroup)")
			})
		})
	}
}

// A service without endpoints refuses connections at once, as kube-proxy's
// REJECT does, and says why. Socket LB on a kernel without bpf_set_retval
// (forced with --no-set-retval) refuses at once too, with EPERM.
func TestServiceWithoutEndpointsRefuses(t *testing.T) {
	modes := append(socketLBModes[:len(socketLBModes):len(socketLBModes)],
		struct {
			name string
			args []string
		}{"socket-lb-without-set-retval", []string{"--socket-lb=all", "--no-set-retval"}})
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e, client, _ := serviceCluster(t, m.args...)
			e.eachFamily(func(t *testing.T, e *env, fam ipFamily) {
				require.NoError(t, e.c.WriteManifest("svc-empty.yaml", serviceYAML("default", "empty", fam.vip(), webPorts[:1], nil, "")))
				n1 := e.c.Node("node1")
				e.ensureAgent(n1)
				e.waitServicesOn(n1, 1)
				// EPERM with --no-set-retval, and from socket LB on
				// kernels without bpf_set_retval (before 5.18).
				refused := "connection refused"
				if slices.Contains(m.args, "--no-set-retval") || (m.name == "socket-lb" && !e.status(n1).Kernel.SetRetval) {
					refused = "operation not permitted"
				}
				start := time.Now()
				_, err := client.TCPRequest(ctx(t), fam.vip(), 80, "hello")
				require.Error(t, err)
				require.Contains(t, err.Error(), refused)
				require.Less(t, time.Since(start), 3*time.Second, "refused at once, not timed out")
				if refused != "connection refused" {
					require.Contains(t, e.cli(n1, "status"), "fails with EPERM, not ECONNREFUSED", "sluice status says which errno")
				}
				e.waitFlow(n1, "reject", func(f *flowpb.Flow) bool {
					return isDrop(f, "SERVICE_BACKEND_NOT_FOUND") && f.GetIP().GetDestination() == fam.vip().String()
				})
			})
		})
	}
}

func (e *env) waitServicesOn(n *harness.Node, frontends int) {
	e.t.Helper()
	require.Eventually(e.t, func() bool { return e.status(n).Services.Frontends == frontends },
		10*time.Second, 50*time.Millisecond, "services on %s: %+v, errors %+v", n.Name, e.status(n).Services, e.status(n).Errors)
}

func TestServiceSessionAffinity(t *testing.T) {
	for _, m := range socketLBModes {
		t.Run(m.name, func(t *testing.T) {
			e, client, backends := serviceCluster(t, m.args...)
			e.eachFamily(func(t *testing.T, e *env, fam ipFamily) {
				spec := "  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: 300\n"
				require.NoError(t, e.c.WriteManifest("svc-web.yaml", serviceYAML("default", "web", fam.vip(), webPorts[:1], ready(backends...), spec)))
				e.ensureAgent(e.c.Node("node1"))
				e.waitServicesOn(e.c.Node("node1"), 1)
				seen := whoamiVIP(t, client, fam.vip(), 25)
				require.Len(t, seen, 1, "every connection of the client sticks to one backend: %v", seen)
			})
		})
	}
}

// Backends change while a long-lived connection runs: a terminating
// backend keeps its established connection but gets no new ones; other
// updates never disturb it; a removed backend's connection is cleaned up.
func TestServiceBackendLifecycle(t *testing.T) {
	for _, m := range socketLBModes {
		t.Run(m.name, func(t *testing.T) {
			e, client, backends := serviceCluster(t, m.args...)
			b1, b2 := backends[0], backends[1]
			e.eachFamily(func(t *testing.T, e *env, fam ipFamily) {
				write := func(eps []svcEndpoint) {
					require.NoError(t, e.c.WriteManifest("svc-web.yaml", serviceYAML("default", "web", fam.vip(), webPorts[:1], eps, "")))
				}
				write(ready(b1)) // only b1 at first: the long connection lands there
				n1 := e.c.Node("node1")
				e.ensureAgent(n1)
				e.waitServicesOn(n1, 1)
				cleanedBefore := e.status(n1).Services.ConnectionsCleaned // by an earlier family
				conn, err := client.StartTCPClient(fam.vip(), 80, 50*time.Millisecond)
				require.NoError(t, err)
				t.Cleanup(func() { _ = conn.Stop() })
				require.NoError(t, conn.WaitRoundTrips(ctx(t), 5))

				// Adding b2 does not disturb the connection to b1.
				write(ready(b1, b2))
				require.Eventually(t, func() bool { return e.status(n1).Services.Backends == 2 }, 10*time.Second, 50*time.Millisecond)
				k := conn.RoundTrips()
				require.NoError(t, conn.WaitRoundTrips(ctx(t), k+5))

				// b1 terminates: its connection continues, new ones go to b2.
				write([]svcEndpoint{{pod: b1, serving: true, terminating: true}, {pod: b2, ready: true, serving: true}})
				require.Eventually(t, func() bool {
					for _, f := range e.services(n1).Frontends {
						for _, b := range f.Backends {
							if b.Address == fam.pod(b1) && b.State == "Terminating" {
								return true
							}
						}
					}
					return false
				}, 10*time.Second, 50*time.Millisecond)
				for range 10 {
					who, err := client.TCPRequest(ctx(t), fam.vip(), 80, "whoami")
					require.NoError(t, err)
					require.Equal(t, "default/b2", who, "no new connections to a terminating backend")
				}
				k = conn.RoundTrips()
				require.NoError(t, conn.WaitRoundTrips(ctx(t), k+5), "graceful termination: the established connection continues")
				require.Zero(t, conn.Failures(), "%v", conn.LastErr())

				// b1 is removed: its connections are cleaned up (not left half-open).
				write(ready(b2))
				require.Eventually(t, func() bool { return e.status(n1).Services.Backends == 1 }, 10*time.Second, 50*time.Millisecond)
				if m.name == "per-packet" {
					// The client's translation state for b1 is gone (b1's own
					// view of the connection is the server's business).
					require.Eventually(t, func() bool { return e.status(n1).Services.ConnectionsCleaned > cleanedBefore }, 10*time.Second, 50*time.Millisecond)
					clientID := endpointID(t, e.endpoints(n1), client)
					removed := netip.AddrPortFrom(fam.pod(b1), 8080).String()
					for _, c := range e.ct(n1) {
						if c.EndpointID == clientID {
							require.NotEqual(t, removed, c.Dst, "CT entry of the removed backend remains: %+v", c)
						}
					}
				}
			})
		})
	}
}

// whoamiVIP opens n connections from client to vip's port 80 and counts
// the backends that answered.
func whoamiVIP(t *testing.T, client *harness.Pod, vip netip.Addr, n int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range n {
		who, err := client.TCPRequest(ctx(t), vip, 80, "whoami")
		require.NoError(t, err)
		seen[who]++
	}
	return seen
}

// maglevWebYAML is service default/web on vip's port 80 with the Maglev
// algorithm (annotation).
func maglevWebYAML(vip netip.Addr, backends []*harness.Pod) string {
	y := serviceYAML("default", "web", vip, webPorts[:1], ready(backends...), "")
	return strings.Replace(y, "  namespace: default\nspec:", "  namespace: default\n  annotations:\n    sluice.io/lb-algorithm: maglev\nspec:", 1)
}

// Maglev per service (annotation): tables are programmed and used, and the
// CLI shows them with their memory.
func TestServiceMaglev(t *testing.T) {
	for _, m := range socketLBModes {
		t.Run(m.name, func(t *testing.T) {
			e, client, backends := serviceCluster(t, append(m.args, "--maglev-table-size=1021")...)
			e.eachFamily(func(t *testing.T, e *env, fam ipFamily) {
				require.NoError(t, e.c.WriteManifest("svc-web.yaml", maglevWebYAML(fam.vip(), backends)))
				n1 := e.c.Node("node1")
				e.ensureAgent(n1)
				e.waitServicesOn(n1, 1)
				require.Len(t, whoamiVIP(t, client, fam.vip(), 30), 2, "connections spread over both backends")
				out := e.cli(n1, "service", "list")
				require.Contains(t, out, "maglev")
				require.Contains(t, out, "maglev memory: default/web 1 tables, 4084 bytes")
				require.Contains(t, e.cli(n1, "bpf", "lb", "list"), "maglev")
			})
		})
	}
}

// A --maglev-table-size change is a ConfigMap edit and a restart. The new
// agent does not adopt the pinned table map (its tables have the old size,
// and the kernel would refuse every new one): it replaces it, writes every
// table at the new size before its programs take over, and a connection
// established before the restart carries on. Without that the service
// falls back to random selection with a "write Maglev table" error.
func TestServiceMaglevTableSizeChangeAcrossRestart(t *testing.T) {
	for _, m := range socketLBModes {
		t.Run(m.name, func(t *testing.T) {
			e, client, backends := serviceCluster(t, slices.Concat(m.args, []string{"--maglev-table-size=1021"})...)
			require.NoError(t, e.c.WriteManifest("svc-web.yaml", maglevWebYAML(vip, backends)))
			n1 := e.c.Node("node1")
			a := e.startAgent(n1)
			e.waitServicesOn(n1, 1)
			conn, err := client.StartTCPClient(vip, 80, 50*time.Millisecond)
			require.NoError(t, err)
			require.NoError(t, conn.WaitRoundTrips(ctx(t), 5))

			require.NoError(t, a.Stop())
			e.agentArgs = slices.Concat(m.args, []string{"--maglev-table-size=2039"})
			e.startAgent(n1)
			e.waitServicesOn(n1, 1)
			problems := e.problems(n1)
			require.Contains(t, problems, "datapath: sl_lb_maglev: replaced (inner maps of 1021 entries, this agent's hold 2039)")
			for _, p := range problems {
				require.False(t, strings.HasPrefix(p, "services:"), "every table written at the new size: %v", problems)
			}
			k := conn.RoundTrips()
			require.NoError(t, conn.WaitRoundTrips(ctx(t), k+10), "the established connection carries on after the restart")
			require.Zero(t, conn.Failures(), "%v", conn.LastErr())

			require.Len(t, whoamiVIP(t, client, vip, 30), 2, "connections spread over both backends")
			require.Contains(t, e.cli(n1, "service", "list"), "maglev memory: default/web 1 tables, 8156 bytes")
			require.Contains(t, e.cli(n1, "bpf", "lb", "list"), "maglev")
		})
	}
}

// Hairpin: a pod reaching its own service and landing on itself, on a
// routed node and on a bridge node.
func TestServiceHairpin(t *testing.T) {
	for _, m := range socketLBModes {
		t.Run(m.name, func(t *testing.T) {
			e, _, backends := serviceCluster(t, m.args...)
			e.eachFamily(func(t *testing.T, e *env, fam ipFamily) {
				self := func(i int) netip.Addr { return fam.svc(netip.AddrFrom4([4]byte{10, 96, 1, byte(10 + i)})) }
				for i, b := range backends {
					require.NoError(t, e.c.WriteManifest(fmt.Sprintf("svc-self-%d.yaml", i), serviceYAML("default", "self-"+b.Name, self(i), webPorts, ready(b), "")))
				}
				for _, n := range e.c.Nodes() {
					e.ensureAgent(n)
				}
				e.waitServices(4)
				for i, b := range backends {
					who, err := b.TCPRequest(ctx(t), self(i), 80, "whoami")
					require.NoError(t, err, "%s (%s node) to its own service", b, b.Node.Mode)
					require.Equal(t, b.String(), who)
					who, err = b.UDPRequest(ctx(t), self(i), 53, "whoami")
					require.NoError(t, err, "%s UDP to its own service", b)
					require.Equal(t, b.String(), who)
				}
			})
		})
	}
}

// A connection to a VIP keeps working while the agent is SIGKILLed and
// restarted: translations are pinned, and the new agent adopts the service
// IDs instead of renumbering them.
func TestServiceConnectionSurvivesAgentRestart(t *testing.T) {
	e, client, backends := serviceCluster(t, "--socket-lb=off")
	n1 := e.c.Node("node1")
	e.eachFamily(func(t *testing.T, e *env, fam ipFamily) {
		require.NoError(t, e.c.WriteManifest("svc-web.yaml", serviceYAML("default", "web", fam.vip(), webPorts, ready(backends...), "")))
		a := e.ensureAgent(n1)
		e.waitServicesOn(n1, 2)
		lbBefore := e.cli(n1, "bpf", "lb", "list")
		conn, err := client.StartTCPClient(fam.vip(), 80, 50*time.Millisecond)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Stop() })
		require.NoError(t, conn.WaitRoundTrips(ctx(t), 5))

		require.NoError(t, a.Kill())
		k := conn.RoundTrips()
		require.NoError(t, conn.WaitRoundTrips(ctx(t), k+10), "stalled while the agent was down")
		e.startAgent(n1)
		e.waitServicesOn(n1, 2)
		k = conn.RoundTrips()
		require.NoError(t, conn.WaitRoundTrips(ctx(t), k+10), "stalled after the restart")
		require.Zero(t, conn.Failures(), "%v", conn.LastErr())
		require.Equal(t, lbBefore, e.cli(n1, "bpf", "lb", "list"), "frontend and backend IDs are adopted, not renumbered")
		require.Zero(t, e.status(n1).Services.Applied, "nothing to rewrite after a restart with the same services")
	})
}

// A datagram to a VIP whose backend has nothing listening: the backend's
// port unreachable is translated back, so the client's connected socket
// gets ECONNREFUSED instead of waiting for a reply that never comes.
func TestServiceICMPErrorsReachTheClient(t *testing.T) {
	for _, m := range socketLBModes {
		t.Run(m.name, func(t *testing.T) {
			e, client, backends := serviceCluster(t, m.args...)
			e.eachFamily(func(t *testing.T, e *env, fam ipFamily) {
				ports := []svcPort{{"dns", 53, "5399", 5399, "UDP"}} // nothing listens on 5399
				require.NoError(t, e.c.WriteManifest("svc-deaf.yaml", serviceYAML("default", "deaf", fam.vip(), ports, ready(backends[1]), "")))
				n1 := e.c.Node("node1")
				e.ensureAgent(n1)
				e.ensureAgent(e.c.Node("node2"))
				e.waitServicesOn(n1, 1)
				start := time.Now()
				_, err := client.UDPRequest(ctx(t), fam.vip(), 53, "anyone?")
				require.Error(t, err)
				require.Contains(t, err.Error(), "connection refused")
				require.Less(t, time.Since(start), 3*time.Second)
			})
		})
	}
}

// The node's own processes reach services through socket LB (all or
// hostns-only); with hostns-only, pods use the per-packet path. With socket
// LB off, only pods reach services (README: "What reaches services").
func TestServiceFromNodeAndSocketLBModes(t *testing.T) {
	for _, c := range []struct {
		mode         string
		nodeReaches  bool
		podPerPacket bool
	}{
		{"all", true, false},
		{"hostns-only", true, true},
		{"off", false, true},
	} {
		t.Run(c.mode, func(t *testing.T) {
			if _, err := datapath.NetnsCookie(); c.mode == "hostns-only" && err != nil {
				t.Skipf("--socket-lb=hostns-only tells the node's sockets by their netns cookie, and the agent refuses it without one: %v", err)
			}
			e, client, backends := serviceCluster(t, "--socket-lb="+c.mode)
			e.eachFamily(func(t *testing.T, e *env, fam ipFamily) {
				vip := fam.vip()
				require.NoError(t, e.c.WriteManifest("svc-web.yaml", serviceYAML("default", "web", vip, webPorts[:1], ready(backends...), "")))
				n1 := e.c.Node("node1")
				e.ensureAgent(n1)
				e.waitServicesOn(n1, 1)

				// Without a path the SYN goes nowhere: bound the wait.
				short, cancel := context.WithTimeout(ctx(t), 2*time.Second)
				who, err := n1.TCPRequest(short, vip, 80, "whoami")
				cancel()
				if c.nodeReaches {
					require.NoError(t, err, "a host process reaches the service")
					require.Contains(t, []string{"default/b1", "default/b2"}, who)
				} else {
					require.Error(t, err, "without socket LB a host process has no path to the VIP")
				}

				_, err = client.TCPRequest(ctx(t), vip, 80, "whoami")
				require.NoError(t, err)
				clientID := endpointID(t, e.endpoints(n1), client)
				perPacket := false
				for _, ct := range e.ct(n1) {
					// The service entry's Dst is the VIP (not an earlier family's).
					if ct.EndpointID == clientID && ct.Scope == "service" && ct.Dst == netip.AddrPortFrom(vip, 80).String() {
						perPacket = true
					}
				}
				require.Equal(t, c.podPerPacket, perPacket, "pods translated per packet (service CT entry) or at connect()")
			})
		})
	}
}

// NodePort from inside the cluster: a pod (per-packet or socket LB) and
// the node itself reach <node IP>:<nodePort> of any node's address known
// to this node's agent. (From outside the cluster NodePort needs the
// uplink program: not yet.)
func TestServiceNodePortFromPods(t *testing.T) {
	for _, m := range socketLBModes {
		t.Run(m.name, func(t *testing.T) {
			e, client, backends := serviceCluster(t, m.args...)
			e.eachFamily(func(t *testing.T, e *env, fam ipFamily) {
				y := serviceYAML("default", "web", fam.vip(), webPorts[:1], ready(backends...), "  type: NodePort\n")
				y = strings.Replace(y, "    protocol: TCP\n", "    protocol: TCP\n    nodePort: 30080\n", 1)
				require.NoError(t, e.c.WriteManifest("svc-web.yaml", y))
				n1 := e.c.Node("node1")
				e.ensureAgent(n1)
				require.Eventually(t, func() bool { return e.status(n1).Services.Frontends >= 2 }, 10*time.Second, 50*time.Millisecond)
				require.Contains(t, e.cli(n1, "service", "list"), "NodePort")
				who, err := client.TCPRequest(ctx(t), fam.node(n1), 30080, "whoami")
				require.NoError(t, err, "pod to its own node's NodePort")
				require.Contains(t, []string{"default/b1", "default/b2"}, who)
			})
		})
	}
}

// NodePort from outside the cluster. externalTrafficPolicy Cluster: a node
// forwards to remote backends too, source-translated to itself so the reply
// comes back through it; Local: only this node's endpoints, and the backend
// sees the real client address.
func TestServiceNodePortFromOutside(t *testing.T) {
	for _, am := range attachModes {
		t.Run(am.name, func(t *testing.T) {
			e, _, backends := serviceCluster(t, am.args...)
			b1, b2 := backends[0], backends[1]
			ext, err := e.c.AddExternal(ctx(t), "ext1")
			require.NoError(t, err)
			ext2, err := e.c.AddExternal(ctx(t), "ext2")
			require.NoError(t, err)
			n1, n2 := e.c.Node("node1"), e.c.Node("node2")
			e.eachFamily(func(t *testing.T, e *env, fam ipFamily) {
				nodePort := func(name string, ip netip.Addr, port int, policy string) string {
					y := serviceYAML("default", name, fam.svc(ip), webPorts[:1], ready(b1, b2), "  type: NodePort\n  externalTrafficPolicy: "+policy+"\n")
					return strings.Replace(y, "    protocol: TCP\n", fmt.Sprintf("    protocol: TCP\n    nodePort: %d\n", port), 1)
				}
				require.NoError(t, e.c.WriteManifest("svc-cluster.yaml", nodePort("np-cluster", vip, 30080, "Cluster")))
				require.NoError(t, e.c.WriteManifest("svc-local.yaml", nodePort("np-local", netip.MustParseAddr("10.96.0.11"), 30081, "Local")))
				e.ensureAgent(n1)
				e.ensureAgent(n2)
				require.Eventually(t, func() bool { return e.status(n1).Services.Frontends >= 4 && e.status(n2).Services.Frontends >= 4 },
					10*time.Second, 50*time.Millisecond)
				// Cluster: both backends serve through node1, b2 via SNAT.
				seen := map[string]bool{}
				for range 30 {
					who, err := ext.TCPRequest(ctx(t), fam.node(n1), 30080, "whoami")
					require.NoError(t, err, "external client to node1:30080")
					seen[who] = true
				}
				require.Len(t, seen, 2, "local and remote backends both reached: %v", seen)

				// Local: node2 serves only b2, which sees the client's own address.
				for range 10 {
					who, err := ext.TCPRequest(ctx(t), fam.node(n2), 30081, "whoami")
					require.NoError(t, err)
					require.Equal(t, "default/b2", who)
				}
				peer, err := ext.TCPRequest(ctx(t), fam.node(n2), 30081, "whoiscalling")
				require.NoError(t, err)
				require.Equal(t, fam.ext(ext), whoIsCalling(t, peer), "externalTrafficPolicy Local keeps the client address")

				// Two external clients on the same source port, both SNATed by
				// node1 toward b2: each gets its own NAT port, both work.
				require.NoError(t, e.c.WriteManifest("svc-remote.yaml", strings.Replace(
					serviceYAML("default", "np-remote", fam.svc(netip.MustParseAddr("10.96.0.12")), webPorts[:1], ready(b2), "  type: NodePort\n"),
					"    protocol: TCP\n", "    protocol: TCP\n    nodePort: 30082\n", 1)))
				require.Eventually(t, func() bool { return e.status(n1).Services.Frontends >= 9 }, 10*time.Second, 50*time.Millisecond)
				for i, h := range []*harness.External{ext, ext2} {
					peer, err := h.TCPRequestFromPort(ctx(t), 40404, fam.node(n1), 30082, "whoiscalling")
					require.NoError(t, err, "external client %d from port 40404", i+1)
					require.Equal(t, fam.node(n1), whoIsCalling(t, peer), "Cluster policy toward a remote backend: b2 sees node1")
				}
			})
		})
	}
}

// A LoadBalancer service with externalTrafficPolicy Local: its ingress IP
// is served on the uplinks, and healthCheckNodePort tells the load
// balancer which nodes have endpoints (200) and which do not (503).
func TestServiceLoadBalancerLocalHealthCheck(t *testing.T) {
	e, _, backends := serviceCluster(t)
	b2 := backends[1]
	ext, err := e.c.AddExternal(ctx(t), "ext1")
	require.NoError(t, err)
	n1, n2 := e.c.Node("node1"), e.c.Node("node2")
	e.eachFamily(func(t *testing.T, e *env, fam ipFamily) {
		lbIP := fam.svc(netip.MustParseAddr("10.96.200.50"))
		y := serviceYAML("default", "lb", fam.vip(), webPorts[:1], ready(b2),
			"  type: LoadBalancer\n  externalTrafficPolicy: Local\n  healthCheckNodePort: 32000\n")
		y = strings.Replace(y, "    protocol: TCP\n", "    protocol: TCP\n    nodePort: 30090\n", 1)
		y = strings.Replace(y, "---\n", fmt.Sprintf("status:\n  loadBalancer:\n    ingress:\n    - ip: %s\n---\n", lbIP), 1)
		require.NoError(t, e.c.WriteManifest("svc-lb.yaml", y))
		e.ensureAgent(n1)
		e.ensureAgent(n2)
		require.Eventually(t, func() bool {
			return slices.ContainsFunc(e.services(n2).Frontends, func(f api.Frontend) bool { return f.Address == lbIP })
		}, 10*time.Second, 50*time.Millisecond, "the LB IP's frontend on node2")
		require.Contains(t, e.cli(n2, "service", "list"), "LoadBalancer")

		// The load balancer (here: a route on the client) sends to node2.
		_, err = ext.Exec(ctx(t), "ip", "route", "add", host(lbIP).String(), "via", fam.node(n2).String())
		require.NoError(t, err)
		who, err := ext.TCPRequest(ctx(t), lbIP, 80, "whoami")
		require.NoError(t, err)
		require.Equal(t, "default/b2", who)
		peer, err := ext.TCPRequest(ctx(t), lbIP, 80, "whoiscalling")
		require.NoError(t, err)
		require.Equal(t, fam.ext(ext), whoIsCalling(t, peer), "client address kept")

		get := "GET / HTTP/1.0\r\n\r"
		require.Eventually(t, func() bool {
			line, err := ext.TCPRequest(ctx(t), fam.node(n2), 32000, get)
			return err == nil && strings.Contains(line, " 200 ")
		}, 10*time.Second, 100*time.Millisecond, "node2 has a local endpoint: 200")
		line, err := ext.TCPRequest(ctx(t), fam.node(n1), 32000, get)
		require.NoError(t, err)
		require.Contains(t, line, " 503 ", "node1 has none: 503")
	})
}

// loadBalancerSourceRanges: only clients inside the ranges reach the
// load balancer IP, from outside (uplink) or from pods (per-packet path;
// socket LB leaves such frontends to it, since a socket has no source
// address at connect time). Others are dropped with DENIED_BY_LB_SRC_RANGE_CHECK.
//
//	ext1 (in range) ──► node1 uplink ──► LB 10.96.200.60:80 ──► b1/b2   ok
//	ext2 (not)      ──► node1 uplink ──✗ DENIED_BY_LB_SRC_RANGE_CHECK
//	client pod      ──► LB IP ──✗ (not in range either)
func TestServiceLoadBalancerSourceRanges(t *testing.T) {
	for _, mode := range socketLBModes {
		t.Run(mode.name, func(t *testing.T) {
			e, client, backends := serviceCluster(t, mode.args...)
			ext1, err := e.c.AddExternal(ctx(t), "ext1")
			require.NoError(t, err)
			ext2, err := e.c.AddExternal(ctx(t), "ext2")
			require.NoError(t, err)
			n1 := e.c.Node("node1")
			e.eachFamily(func(t *testing.T, e *env, fam ipFamily) {
				lbIP, inRange := fam.svc(netip.MustParseAddr("10.96.200.60")), host(fam.ext(ext1))
				y := serviceYAML("default", "lb", fam.vip(), webPorts[:1], ready(backends...),
					fmt.Sprintf("  type: LoadBalancer\n  loadBalancerSourceRanges: [%s]\n", inRange))
				y = strings.Replace(y, "    protocol: TCP\n", "    protocol: TCP\n    nodePort: 30095\n", 1)
				y = strings.Replace(y, "---\n", fmt.Sprintf("status:\n  loadBalancer:\n    ingress:\n    - ip: %s\n---\n", lbIP), 1)
				require.NoError(t, e.c.WriteManifest("svc-lb.yaml", y))
				e.ensureAgent(n1)
				e.ensureAgent(e.c.Node("node2"))
				require.Eventually(t, func() bool {
					for _, f := range e.services(n1).Frontends {
						if f.Address == lbIP && slices.Contains(f.SourceRanges, inRange) {
							return true
						}
					}
					return false
				}, 10*time.Second, 50*time.Millisecond, "the LB IP's frontend with its source range")
				for _, x := range []*harness.External{ext1, ext2} {
					_, err := x.Exec(ctx(t), "ip", "route", "add", host(lbIP).String(), "via", fam.node(n1).String())
					require.NoError(t, err)
				}

				// Both backends serve; the remote one through SNAT to node1's
				// own address (not the LB IP, which is not the node's).
				seen := map[netip.Addr]bool{}
				for i := 0; i < 40 && len(seen) < 2; i++ {
					who, err := ext1.TCPRequest(ctx(t), lbIP, 80, "whoiscalling")
					require.NoError(t, err, "ext1 is inside loadBalancerSourceRanges")
					seen[whoIsCalling(t, who)] = true
				}
				require.Equal(t, map[netip.Addr]bool{fam.ext(ext1): true, fam.node(n1): true}, seen,
					"the local backend sees the client, the remote one node1")
				short, cancel := context.WithTimeout(ctx(t), 2*time.Second)
				defer cancel()
				_, err = ext2.TCPRequest(short, lbIP, 80, "whoami")
				require.Error(t, err, "ext2 is outside loadBalancerSourceRanges")
				f := e.waitFlow(n1, "source range drop", func(f *flowpb.Flow) bool {
					return isDrop(f, "DENIED_BY_LB_SRC_RANGE_CHECK") && f.GetIP().GetSource() == fam.ext(ext2).String()
				})
				require.Equal(t, uint32(177), f.GetDropReason(), "Hubble's numbering for DENIED_BY_LB_SRC_RANGE_CHECK")

				// The ClusterIP of the same service has no source ranges.
				who, err := client.TCPRequest(ctx(t), fam.vip(), 80, "whoami")
				require.NoError(t, err)
				require.Contains(t, who, "default/b")
				short2, cancel2 := context.WithTimeout(ctx(t), 2*time.Second)
				defer cancel2()
				_, err = client.TCPRequest(short2, lbIP, 80, "whoami")
				require.Error(t, err, "the client pod is outside loadBalancerSourceRanges")
				e.waitFlow(n1, "source range drop of the pod", func(f *flowpb.Flow) bool {
					return isDrop(f, "DENIED_BY_LB_SRC_RANGE_CHECK") && f.GetIP().GetSource() == fam.pod(client).String()
				})

				// The pins hold the range, as `sluice bpf lb list` shows them.
				lbList := e.cli(n1, "bpf", "lb", "list")
				require.Contains(t, lbList, inRange.String())
			})
		})
	}
}

// Socket LB connects a UDP socket straight to a backend. When that backend
// is removed, the socket is destroyed (bpf_sock_destroy from a socket
// iterator in the pod's namespace), so the client reconnects and lands on
// a live backend instead of talking to the removed one forever.
func TestServiceRemovedBackendUDPSocketsAreDestroyed(t *testing.T) {
	for _, m := range []struct{ name, flag string }{
		{"bpf-iterator", "--force-sock-diag=false"},
		{"sock-diag", "--force-sock-diag"}, // the fallback of kernels before 6.5
	} {
		t.Run(m.name, func(t *testing.T) { testRemovedBackendUDPSockets(t, m.flag) })
	}
}

func testRemovedBackendUDPSockets(t *testing.T, flag string) {
	e, client, backends := serviceCluster(t, "--socket-lb=all", flag)
	b1, b2 := backends[0], backends[1]
	n1 := e.c.Node("node1")
	e.eachFamily(func(t *testing.T, e *env, fam ipFamily) {
		write := func(eps []svcEndpoint) {
			require.NoError(t, e.c.WriteManifest("svc-web.yaml", serviceYAML("default", "web", fam.vip(), webPorts[1:], eps, "")))
		}
		write(ready(b1))
		e.ensureAgent(n1)
		e.waitServicesOn(n1, 1)
		// The method under test, or a skip naming the feature: an agent asked
		// for the iterator falls back to sock_diag by itself before 6.5.
		method := e.status(n1).Kernel.SockDestroy
		if flag == "--force-sock-diag" {
			require.Equal(t, sockdestroy.SockDiag, method)
		} else if method != sockdestroy.Iterator {
			kf, _ := datapath.LookupKernelFeature(datapath.FeatureBPFSockDestroy)
			testutil.RequireFeature(t, datapath.FeatureBPFSockDestroy, false,
				fmt.Sprintf("%s, Linux %s+ (the agent uses %q); the sock-diag variant covers the fallback", kf.What, kf.MinKernel, method))
		}
		destroyedBefore := e.socketsDestroyed(n1) // by an earlier family
		c, err := client.StartUDPClient(fam.vip(), 53, 50*time.Millisecond)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Stop() })
		require.Eventually(t, func() bool { return len(c.Replies()) >= 3 }, 10*time.Second, 50*time.Millisecond)
		require.Equal(t, "default/b1", c.Replies()[0])

		write(ready(b2)) // b1 removed (its pod still answers: only destruction moves the client)
		require.Eventually(t, func() bool {
			r := c.Replies()
			return len(r) > 0 && r[len(r)-1] == "default/b2"
		}, 10*time.Second, 50*time.Millisecond, "the client still talks to b1: %v", c.Replies())
		require.GreaterOrEqual(t, c.SocketFailures(), 1, "the socket was destroyed, not silently redirected")
		require.Greater(t, e.socketsDestroyed(n1), destroyedBefore)
	})
}

// socketsDestroyed is how many sockets n's agent destroyed so far.
func (e *env) socketsDestroyed(n *harness.Node) uint64 {
	var destroyed uint64
	for _, ct := range e.status(n).Counters {
		if ct.Verdict == "sockets-destroyed" {
			destroyed += ct.Packets
		}
	}
	return destroyed
}
