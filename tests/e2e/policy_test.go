package e2e

// Kubernetes NetworkPolicy on simulated nodes: enforcement on identities
// across nodes, verdict events naming the rule, the node's own traffic,
// and revocation of an established connection when the policy changes.
//
//	node1 (routed)             node2 (bridge)
//	  a (app=a) ──────────────►  b (app=b) :80   allowed by x/allow-a
//	  c (app=c) ─────────✗────►                  default deny
//	  node1 (host) ─────✗──►     node2 (host) ──► b   kubelet probes: allowed

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/flow"
)

func allowFromPolicy(name, target, from string) string {
	return "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: " + name + "\n  namespace: x\nspec:\n" +
		"  podSelector:\n    matchLabels:\n      app: " + target + "\n  policyTypes: [Ingress]\n" +
		"  ingress:\n  - from:\n    - podSelector:\n        matchLabels:\n          app: " + from + "\n    ports:\n    - protocol: TCP\n      port: 80\n"
}

func TestNetworkPolicyIngressAcrossNodesAndRevocation(t *testing.T) {
	e := newEnv(t)
	n1 := e.node("node1", harness.Routed)
	n2 := e.node("node2", harness.Bridge)
	a := e.pod(n1, "x", "a", map[string]string{"app": "a"})
	c := e.pod(n1, "x", "c", map[string]string{"app": "c"})
	b := e.pod(n2, "x", "b", map[string]string{"app": "b"})
	for _, p := range []*harness.Pod{a, b, c} {
		_, err := p.StartTCPEchoServer(80)
		require.NoError(t, err)
	}
	require.NoError(t, e.c.SyncManifests())
	e.startAgent(n1)
	e.startAgent(n2)
	e.waitEndpointsReady(n1)
	e.waitEndpointsReady(n2)

	// No policy: everyone reaches b.
	for _, from := range []*harness.Pod{a, c} {
		who, err := from.TCPRequest(ctx(t), b.IP, 80, "whoami")
		require.NoError(t, err)
		require.Equal(t, "x/b", who)
	}

	require.NoError(t, e.c.WriteManifest("netpol.yaml", allowFromPolicy("allow-a", "b", "a")))
	require.Eventually(t, func() bool { return e.status(n2).Policy.EnforcedEndpoints == 1 }, 10*time.Second, 50*time.Millisecond)

	who, err := a.TCPRequest(ctx(t), b.IP, 80, "whoami")
	require.NoError(t, err, "a is allowed into b")
	require.Equal(t, "x/b", who)
	f := e.waitFlow(n2, "allowed verdict", func(f *flowpb.Flow) bool {
		return f.GetEventType().GetType() == flow.MessageTypePolicyVerdict && f.GetVerdict() == flowpb.Verdict_FORWARDED &&
			f.GetIP().GetSource() == a.IP.String() && f.GetDestination().GetPodName() == "b"
	})
	require.Len(t, f.GetIngressAllowedBy(), 1, "the verdict names the deciding rule")
	require.Equal(t, "x", f.GetIngressAllowedBy()[0].GetNamespace())
	require.Equal(t, "allow-a", f.GetIngressAllowedBy()[0].GetName())
	require.Equal(t, uint32(flow.MatchL3L4), f.GetPolicyMatchType(), "the rule's peer and port")
	require.NotZero(t, f.GetSource().GetIdentity())

	short, cancel := context.WithTimeout(ctx(t), 2*time.Second)
	defer cancel()
	_, err = c.TCPRequest(short, b.IP, 80, "whoami")
	require.Error(t, err, "c is not allowed into b")
	f = e.waitFlow(n2, "policy drop", func(f *flowpb.Flow) bool {
		return isDrop(f, "POLICY_DENIED") && f.GetIP().GetSource() == c.IP.String()
	})
	require.Empty(t, f.GetIngressDeniedBy(), "default deny: no rule")
	require.Equal(t, flowpb.TrafficDirection_INGRESS, f.GetTrafficDirection())

	// The node's own traffic (kubelet probes) is allowed; another node's is not.
	who, err = n2.TCPRequest(ctx(t), b.IP, 80, "whoami")
	require.NoError(t, err, "node2 probes its pod")
	require.Equal(t, "x/b", who)
	short2, cancel2 := context.WithTimeout(ctx(t), 2*time.Second)
	defer cancel2()
	_, err = n1.TCPRequest(short2, b.IP, 80, "whoami")
	require.Error(t, err, "node1 is a remote node, not b's host")

	// Egress is not restricted: b still reaches out.
	who, err = b.TCPRequest(ctx(t), c.IP, 80, "whoami")
	require.NoError(t, err)
	require.Equal(t, "x/c", who)

	// Revocation: a's established connection is cut when the policy
	// stops allowing it, with an RST, not left to time out.
	cl, err := a.StartTCPClient(b.IP, 80, 100*time.Millisecond)
	require.NoError(t, err)
	require.NoError(t, cl.WaitRoundTrips(ctx(t), 3))
	require.NoError(t, e.c.WriteManifest("netpol.yaml", allowFromPolicy("allow-a", "b", "c")))
	require.Eventually(t, func() bool { return cl.Closed() != nil }, 10*time.Second, 50*time.Millisecond,
		"the connection from a survives a policy that no longer allows it (%d round trips)", cl.RoundTrips())
	require.Contains(t, strings.ToLower(cl.Closed().Error()), "reset", "cut with an RST")
	e.waitFlow(n2, "revocation", func(f *flowpb.Flow) bool { return isDrop(f, "POLICY_REVOKED") })
	who, err = c.TCPRequest(ctx(t), b.IP, 80, "whoami")
	require.NoError(t, err, "c is now allowed")
	require.Equal(t, "x/b", who)

	// The CLI shows the effective policy with identities resolved.
	out := e.cli(n2, "policy", "get", "x/b")
	require.Contains(t, out, "allow-a")
	require.Contains(t, out, "app=c")
}

func denyAllIngress(ns, name string) string {
	return "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: " + name + "\n  namespace: " + ns +
		"\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n"
}

// Egress to a service is judged against the backend the LB chose, on the
// per-packet path and with socket LB.
//
//	client (egress: only to app=b1) ──► VIP-1 ──► b1   allowed
//	                                ──► VIP-2 ──► b2   denied
func TestNetworkPolicyEgressToServiceJudgesTheBackend(t *testing.T) {
	for _, mode := range socketLBModes {
		t.Run(mode.name, func(t *testing.T) {
			e, client, backends := serviceCluster(t, mode.args...)
			b1, b2 := backends[0], backends[1]
			vip2 := netip.MustParseAddr("10.96.0.20")
			require.NoError(t, e.c.WriteManifest("svc1.yaml", serviceYAML("default", "one", vip, webPorts[:1], ready(b1), "")))
			require.NoError(t, e.c.WriteManifest("svc2.yaml", serviceYAML("default", "two", vip2, webPorts[:1], ready(b2), "")))
			require.NoError(t, e.c.WriteManifest("netpol.yaml", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n"+
				"  name: client-egress\n  namespace: default\nspec:\n  podSelector:\n    matchLabels: {role: client}\n"+
				"  policyTypes: [Egress]\n  egress:\n  - to:\n    - podSelector:\n        matchLabels: {name: b1}\n"))
			client.Labels = map[string]string{"role": "client"}
			b1.Labels = map[string]string{"app": "web", "name": "b1"}
			require.NoError(t, e.c.SyncManifests())
			n1 := e.c.Node("node1")
			e.startAgent(n1)
			e.startAgent(e.c.Node("node2"))
			e.waitServicesOn(n1, 2)
			require.Eventually(t, func() bool { return e.status(n1).Policy.EnforcedEndpoints == 1 }, 10*time.Second, 50*time.Millisecond)

			who, err := client.TCPRequest(ctx(t), vip, 80, "whoami")
			require.NoError(t, err, "the service whose backend is allowed")
			require.Equal(t, "default/b1", who)
			short, cancel := context.WithTimeout(ctx(t), 2*time.Second)
			defer cancel()
			_, err = client.TCPRequest(short, vip2, 80, "whoami")
			require.Error(t, err, "the service whose backend is not allowed")
			e.waitFlow(n1, "egress denial of the backend", func(f *flowpb.Flow) bool {
				return isDrop(f, "POLICY_DENIED") && f.GetTrafficDirection() == flowpb.TrafficDirection_EGRESS &&
					f.GetIP().GetDestination() == b2.IP.String()
			})
		})
	}
}

// The host identity covers what the node originates, not what it
// forwards: external clients reaching a pod through NodePort are denied
// by a deny-all ingress policy, whether the node delivers them as they are
// (local backend) or source-NATed to itself (remote backend), while the
// node's own probes still get in.
//
//	ext ──► node1:30080 ──► b1 (node1)          world: denied
//	ext ──► node2:30080 ──SNAT node2──► b1      remote-node: denied
//	node1 (host) ──► b1                          host: allowed
func TestNetworkPolicyNodePortDoesNotInheritHost(t *testing.T) {
	e, _, backends := serviceCluster(t)
	b1 := backends[0]
	ext, err := e.c.AddExternal(ctx(t), "ext1")
	require.NoError(t, err)
	y := serviceYAML("default", "np", vip, webPorts[:1], ready(b1), "  type: NodePort\n")
	y = strings.Replace(y, "    protocol: TCP\n", "    protocol: TCP\n    nodePort: 30080\n", 1)
	require.NoError(t, e.c.WriteManifest("svc.yaml", y))
	n1, n2 := e.c.Node("node1"), e.c.Node("node2")
	e.startAgent(n1)
	e.startAgent(n2)
	e.waitServicesOn(n1, 3)
	e.waitServicesOn(n2, 3)
	who, err := ext.TCPRequest(ctx(t), n2.IP, 30080, "whoami")
	require.NoError(t, err, "before the policy")
	require.Equal(t, "default/b1", who)

	require.NoError(t, e.c.WriteManifest("netpol.yaml", denyAllIngress("default", "deny-all")))
	require.Eventually(t, func() bool { return e.status(n1).Policy.EnforcedEndpoints >= 2 }, 10*time.Second, 50*time.Millisecond)
	for _, via := range []*harness.Node{n1, n2} {
		short, cancel := context.WithTimeout(ctx(t), 2*time.Second)
		_, err := ext.TCPRequest(short, via.IP, 30080, "whoami")
		cancel()
		require.Error(t, err, "external client through NodePort on %s", via.Name)
	}
	f := e.waitFlow(n1, "denial of the SNATed connection", func(f *flowpb.Flow) bool {
		return isDrop(f, "POLICY_DENIED") && f.GetIP().GetSource() == n2.IP.String()
	})
	require.Equal(t, uint32(6), f.GetSource().GetIdentity(), "source-NATed by node2: remote-node, not host")
	f = e.waitFlow(n1, "denial of the external client", func(f *flowpb.Flow) bool {
		return isDrop(f, "POLICY_DENIED") && f.GetIP().GetSource() == ext.IP.String()
	})
	require.Equal(t, uint32(2), f.GetSource().GetIdentity(), "world")
	who, err = n1.TCPRequest(ctx(t), b1.IP, 8080, "whoami")
	require.NoError(t, err, "the node's own probe")
	require.Equal(t, "default/b1", who)
}

// An endpoint whose policy does not fit its map fails closed, and status
// says which endpoint and why.
func TestNetworkPolicyOverflowFailsClosed(t *testing.T) {
	e := newEnv(t, "--policy-map-max=16")
	n1 := e.node("node1", harness.Routed)
	a := e.pod(n1, "x", "a", map[string]string{"app": "a"})
	b := e.pod(n1, "x", "b", map[string]string{"app": "b"})
	_, err := b.StartTCPEchoServer(80)
	require.NoError(t, err)
	require.NoError(t, e.c.SyncManifests())
	var ports strings.Builder
	for p := 1000; p < 1040; p++ {
		ports.WriteString("    - protocol: TCP\n      port: " + strconv.Itoa(p) + "\n")
	}
	ports.WriteString("    - protocol: TCP\n      port: 80\n")
	require.NoError(t, e.c.WriteManifest("netpol.yaml", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n"+
		"  name: many-ports\n  namespace: x\nspec:\n  podSelector:\n    matchLabels: {app: b}\n  policyTypes: [Ingress]\n"+
		"  ingress:\n  - from:\n    - podSelector:\n        matchLabels: {app: a}\n    ports:\n"+ports.String()))
	e.startAgent(n1)
	e.waitEndpointsReady(n1)
	var st *api.Status
	require.Eventually(t, func() bool { st = e.status(n1); return len(st.Policy.FailedClosed) == 1 }, 10*time.Second, 50*time.Millisecond)
	require.Equal(t, "x/b", st.Policy.FailedClosed[0].Pod)
	require.Contains(t, st.Policy.FailedClosed[0].Error, "limit of 16")
	require.Contains(t, e.cli(n1, "status"), "x/b needs")

	short, cancel := context.WithTimeout(ctx(t), 2*time.Second)
	defer cancel()
	_, err = a.TCPRequest(short, b.IP, 80, "whoami")
	require.Error(t, err, "a rule allows it, but the policy did not fit: fail closed")
	e.waitFlow(n1, "overflow drop", func(f *flowpb.Flow) bool { return isDrop(f, "POLICY_OVERFLOW") })
}

// A --policy-map-max change is a ConfigMap edit and a restart: the new
// agent replaces the pinned policy maps (their inner maps have the old
// size) and policy is enforced throughout. A denied peer that keeps
// trying never gets through, before, during or after the restart, and an
// allowed connection established before it carries on.
func TestNetworkPolicyMapSizeChangeAcrossRestart(t *testing.T) {
	e := newEnv(t, "--policy-map-max=64")
	n1 := e.node("node1", harness.Routed)
	a := e.pod(n1, "x", "a", map[string]string{"app": "a"})
	c := e.pod(n1, "x", "c", map[string]string{"app": "c"})
	b := e.pod(n1, "x", "b", map[string]string{"app": "b"})
	_, err := b.StartTCPEchoServer(80)
	require.NoError(t, err)
	require.NoError(t, e.c.SyncManifests())
	require.NoError(t, e.c.WriteManifest("netpol.yaml", allowFromPolicy("allow-a", "b", "a")))
	agent := e.startAgent(n1)
	require.Eventually(t, func() bool { return e.status(n1).Policy.EnforcedEndpoints == 1 }, 10*time.Second, 50*time.Millisecond)
	conn, err := a.StartTCPClient(b.IP, 80, 50*time.Millisecond)
	require.NoError(t, err)
	require.NoError(t, conn.WaitRoundTrips(ctx(t), 3))

	// c tries new connections to b all along.
	stop := make(chan struct{})
	stopTrying := sync.OnceFunc(func() { close(stop) })
	t.Cleanup(stopTrying)
	leaked := make(chan string, 1)
	tried := make(chan int, 1)
	go func() {
		n := 0
		defer func() { tried <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			who, err := c.TCPRequest(short, b.IP, 80, "whoami")
			cancel()
			n++
			if err == nil {
				leaked <- who
				return
			}
		}
	}()

	require.NoError(t, agent.Stop())
	e.agentArgs = []string{"--policy-map-max=128"}
	e.startAgent(n1)
	require.Eventually(t, func() bool { return e.status(n1).Policy.EnforcedEndpoints == 1 }, 10*time.Second, 50*time.Millisecond)
	require.Contains(t, e.problems(n1), "datapath: sl_policy: replaced (inner maps of 64 entries, this agent's hold 128)")
	k := conn.RoundTrips()
	require.NoError(t, conn.WaitRoundTrips(ctx(t), k+5), "the allowed connection carries on after the restart")
	require.Zero(t, conn.Failures(), "%v", conn.LastErr())
	who, err := a.TCPRequest(ctx(t), b.IP, 80, "whoami")
	require.NoError(t, err, "a new allowed connection after the restart")
	require.Equal(t, "x/b", who)

	stopTrying()
	n := <-tried
	select {
	case who := <-leaked:
		t.Fatalf("c reached %s across the restart: policy failed open", who)
	default:
	}
	require.Greater(t, n, 3, "c kept trying through the restart")
}

// Audit mode forwards what policy would deny, and reports it.
func TestNetworkPolicyAuditMode(t *testing.T) {
	e := newEnv(t, "--policy-audit")
	n1 := e.node("node1", harness.Routed)
	a := e.pod(n1, "x", "a", nil)
	b := e.pod(n1, "x", "b", nil)
	_, err := b.StartTCPEchoServer(80)
	require.NoError(t, err)
	require.NoError(t, e.c.SyncManifests())
	require.NoError(t, e.c.WriteManifest("netpol.yaml", denyAllIngress("x", "deny-all")))
	e.startAgent(n1)
	e.waitEndpointsReady(n1)
	require.Eventually(t, func() bool { return e.status(n1).Policy.EnforcedEndpoints == 2 }, 10*time.Second, 50*time.Millisecond)
	who, err := a.TCPRequest(ctx(t), b.IP, 80, "whoami")
	require.NoError(t, err, "audit forwards")
	require.Equal(t, "x/b", who)
	f := e.waitFlow(n1, "audit verdict", func(f *flowpb.Flow) bool {
		return f.GetVerdict() == flowpb.Verdict_AUDIT && f.GetDestination().GetPodName() == "b"
	})
	require.Empty(t, f.GetIngressDeniedBy(), "default deny: no rule")
}

// A named egress port resolves per destination pod: d1 and d2 share an
// identity (same labels) but name different numbers "web", so the same
// rule allows d1:80 and d2:81 and nothing else.
//
//	client ──► d1 (app=d, web=80) :80 ok  :81 denied
//	       ──► d2 (app=d, web=81) :81 ok  :80 denied
func TestNetworkPolicyNamedEgressPortPerDestination(t *testing.T) {
	e := newEnv(t)
	n1 := e.node("node1", harness.Routed)
	n2 := e.node("node2", harness.Bridge)
	client := e.pod(n1, "x", "client", map[string]string{"role": "client"})
	d1, err := n1.AddPod(ctx(t), "x", "d1", map[string]string{"app": "d"}, harness.Port{Name: "web", Port: 80})
	require.NoError(t, err)
	d2, err := n2.AddPod(ctx(t), "x", "d2", map[string]string{"app": "d"}, harness.Port{Name: "web", Port: 81})
	require.NoError(t, err)
	for _, p := range []*harness.Pod{d1, d2} {
		for _, port := range []int{80, 81} {
			_, err := p.StartTCPEchoServer(port)
			require.NoError(t, err)
		}
	}
	require.NoError(t, e.c.SyncManifests())
	require.NoError(t, e.c.WriteManifest("netpol.yaml", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n"+
		"  name: client-web\n  namespace: x\nspec:\n  podSelector:\n    matchLabels: {role: client}\n  policyTypes: [Egress]\n"+
		"  egress:\n  - to:\n    - podSelector:\n        matchLabels: {app: d}\n    ports:\n    - {protocol: TCP, port: web}\n"))
	e.startAgent(n1)
	e.startAgent(n2)
	require.Eventually(t, func() bool { return e.status(n1).Policy.EnforcedEndpoints == 1 }, 10*time.Second, 50*time.Millisecond)
	for _, c := range []struct {
		pod  *harness.Pod
		port int
		ok   bool
	}{{d1, 80, true}, {d1, 81, false}, {d2, 81, true}, {d2, 80, false}} {
		short, cancel := context.WithTimeout(ctx(t), 2*time.Second)
		_, err := client.TCPRequest(short, c.pod.IP, c.port, "whoami")
		cancel()
		if c.ok {
			require.NoError(t, err, "%s:%d is the pod's web port", c.pod, c.port)
		} else {
			require.Error(t, err, "%s:%d is not the pod's web port", c.pod, c.port)
		}
	}
	// d1 and d2 do share one identity: the ports came from the pods.
	ids := map[string]string{}
	for _, l := range strings.Split(e.cli(n1, "bpf", "ipcache", "list"), "\n") {
		if f := strings.Fields(l); len(f) >= 2 {
			ids[f[0]] = f[1]
		}
	}
	require.NotEmpty(t, ids[d1.IP.String()+"/32"])
	require.Equal(t, ids[d1.IP.String()+"/32"], ids[d2.IP.String()+"/32"])
}
