package e2e

// An allowed peer's first packet is never denied while policy is being put
// in place: enforcement must not turn on before what allows the peer (its
// address in the ipcache, the allow entries) is written. Fresh connections
// are made right after each change, many times:
//
//	node1
//	  a, a1…a10 (app=a) ──TCP 80──► b (app=b, policy: ingress from app=a)
//
//	1. a fresh agent (empty pins) starts with the policy in place;
//	2. new pods a1…a10 appear and connect as soon as they are endpoints;
//	3. the policy is removed, placed, and replaced by an equivalent one.
//
// After each step, no flow of an app=a pod is a POLICY_DENIED drop.

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
)

// allowFromNamespacePolicy allows app=from pods of namespace x into
// app=target, through a namespace selector: another rule than
// allowFromPolicy's for the same peers.
func allowFromNamespacePolicy(name, target, from string) string {
	return "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: " + name + "\n  namespace: x\nspec:\n" +
		"  podSelector:\n    matchLabels:\n      app: " + target + "\n  policyTypes: [Ingress]\n" +
		"  ingress:\n  - from:\n    - namespaceSelector:\n        matchLabels:\n          kubernetes.io/metadata.name: x\n" +
		"      podSelector:\n        matchLabels:\n          app: " + from + "\n    ports:\n    - protocol: TCP\n      port: 80\n"
}

func TestPolicyNeverDeniesAnAllowedPeerWhilePlaced(t *testing.T) {
	e := newEnv(t)
	n1 := e.node("node1", harness.Routed)
	a := e.pod(n1, "x", "a", map[string]string{"app": "a"})
	b := e.pod(n1, "x", "b", map[string]string{"app": "b"})
	_, err := b.StartTCPEchoServer(80)
	require.NoError(t, err)
	require.NoError(t, e.c.WriteManifest("netpol.yaml", allowFromPolicy("allow-a", "b", "a")))
	require.NoError(t, e.c.SyncManifests())

	// connect makes fresh connections from p to b; a denied first SYN is
	// retransmitted (and then allowed), so success proves nothing: the
	// flows are checked.
	connect := func(p *harness.Pod, n int) {
		for range n {
			c, cancel := context.WithTimeout(ctx(t), 5*time.Second)
			_, err := p.TCPRequest(c, b.IP, 80, "whoami")
			cancel()
			require.NoError(t, err, "%s is allowed into b", p)
		}
	}
	// noDenials fails on any POLICY_DENIED drop of an app=a pod's flow.
	noDenials := func(step string) {
		t.Helper()
		flows := getFlows(t, hubbleClient(t, n1), &observerpb.GetFlowsRequest{Number: 10000,
			Whitelist: []*flowpb.FlowFilter{{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}}})
		for _, f := range flows {
			if strings.HasPrefix(f.GetSource().GetPodName(), "a") && f.GetDropReasonDesc() == flowpb.DropReason_POLICY_DENIED {
				t.Fatalf("%s: the allowed peer %s was denied: %v", step, f.GetSource().GetPodName(), f)
			}
		}
	}

	// 1. Fresh agents: nothing pinned, so nothing from a previous agent
	// allows a; connect as soon as the agent says b is enforced.
	for i := range 5 {
		if ag := e.agents[n1]; ag != nil {
			require.NoError(t, ag.Stop())
			require.NoError(t, os.RemoveAll(n1.BPFRoot))
			require.NoError(t, os.Mkdir(n1.BPFRoot, 0o700))
		}
		e.startAgent(n1)
		require.Equal(t, 1, e.status(n1).Policy.EnforcedEndpoints, "start %d", i)
		connect(a, 3)
		noDenials("a fresh agent")
	}

	// 2. New clients: connect as soon as they are endpoints.
	for i := range 10 {
		p := e.pod(n1, "x", fmt.Sprintf("a%d", i+1), map[string]string{"app": "a"})
		require.NoError(t, e.c.SyncManifests())
		e.waitEndpointsReady(n1)
		connect(p, 2)
	}
	noDenials("new clients")

	// 3. The policy removed (allowed: nothing enforced), placed, and
	// replaced by another that allows a too; a connects right after each
	// change, while it is being applied.
	policies := []string{"", allowFromPolicy("allow-a", "b", "a"), allowFromNamespacePolicy("allow-a-ns", "b", "a")}
	for i := range 51 {
		if p := policies[i%3]; p != "" {
			require.NoError(t, e.c.WriteManifest("netpol.yaml", p)) // atomic: placed, or replaced
		} else {
			require.NoError(t, e.c.RemoveManifest("netpol.yaml"))
		}
		connect(a, 1)
	}
	noDenials("policies placed and replaced")
}
