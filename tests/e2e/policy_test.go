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
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/tests/harness"
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
	ev := e.waitEvent(n2, "allowed verdict", func(ev api.Event) bool {
		return ev.Verdict == "allowed" && ev.Src.Addr() == a.IP && ev.Pod == "b"
	})
	require.Equal(t, "x/allow-a ingress[0]", ev.Policy, "the verdict names the deciding rule")
	require.NotZero(t, ev.SrcIdentity)

	short, cancel := context.WithTimeout(ctx(t), 2*time.Second)
	defer cancel()
	_, err = c.TCPRequest(short, b.IP, 80, "whoami")
	require.Error(t, err, "c is not allowed into b")
	ev = e.waitEvent(n2, "policy drop", func(ev api.Event) bool {
		return ev.Type == "drop" && ev.Reason == "POLICY_DENIED" && ev.Src.Addr() == c.IP
	})
	require.Equal(t, "default-deny", ev.Policy)
	require.Equal(t, "ingress", ev.Dir)

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
	e.waitEvent(n2, "revocation", func(ev api.Event) bool {
		return ev.Type == "drop" && ev.Reason == "POLICY_REVOKED"
	})
	who, err = c.TCPRequest(ctx(t), b.IP, 80, "whoami")
	require.NoError(t, err, "c is now allowed")
	require.Equal(t, "x/b", who)

	// The CLI shows the effective policy with identities resolved.
	out := e.cli(n2, "policy", "get", "x/b")
	require.Contains(t, out, "allow-a")
	require.Contains(t, out, "app=c")
}
