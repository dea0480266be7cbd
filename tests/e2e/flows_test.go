package e2e

// Flows over the Hubble observer API (a real gRPC client on the agent's
// unix socket): a connection and a policy drop become flows with pod
// names, verdicts, drop reasons and the deciding policy; filters select
// them; follow mode streams new flows.
//
//	node1                  node2
//	  a (x) ─────────────►  b (x) :80   allowed
//	  c (x) ──────✗──────►               denied by default deny

import (
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluice-net/sluice/internal/testing/harness"
)

func hubbleClient(t *testing.T, n *harness.Node) observerpb.ObserverClient {
	conn, err := grpc.NewClient("unix://"+filepath.Join(n.StateDir, "hubble.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return observerpb.NewObserverClient(conn)
}

func getFlows(t *testing.T, c observerpb.ObserverClient, req *observerpb.GetFlowsRequest) []*flowpb.Flow {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx(t), 5*time.Second)
	defer cancel()
	stream, err := c.GetFlows(cctx, req)
	require.NoError(t, err)
	var out []*flowpb.Flow
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return out
		}
		require.NoError(t, err)
		if f := resp.GetFlow(); f != nil {
			out = append(out, f)
		}
	}
}

func TestFlowsOverHubbleAPI(t *testing.T) {
	e := newEnv(t)
	n1 := e.node("node1", harness.Routed)
	n2 := e.node("node2", harness.Bridge)
	a := e.pod(n1, "x", "a", map[string]string{"app": "a"})
	c := e.pod(n1, "x", "c", map[string]string{"app": "c"})
	b := e.pod(n2, "x", "b", map[string]string{"app": "b"})
	_, err := b.StartTCPEchoServer(80)
	require.NoError(t, err)
	require.NoError(t, e.c.SyncManifests())
	require.NoError(t, e.c.WriteManifest("netpol.yaml", allowFromPolicy("allow-a", "b", "a")))
	e.startAgent(n1)
	e.startAgent(n2)
	e.waitEndpointsReady(n1)
	e.waitEndpointsReady(n2)
	require.Eventually(t, func() bool { return e.status(n2).Policy.EnforcedEndpoints == 1 }, 10*time.Second, 50*time.Millisecond)
	hub := hubbleClient(t, n2)

	st, err := hub.ServerStatus(ctx(t), &observerpb.ServerStatusRequest{})
	require.NoError(t, err)
	require.NotZero(t, st.MaxFlows)

	// Follow from now on, filtered to b's traffic.
	fctx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	follow, err := hub.GetFlows(fctx, &observerpb.GetFlowsRequest{Follow: true,
		Whitelist: []*flowpb.FlowFilter{{DestinationPod: []string{"x/b"}}}})
	require.NoError(t, err)

	who, err := a.TCPRequest(ctx(t), b.IP, 80, "whoami")
	require.NoError(t, err)
	require.Equal(t, "x/b", who)
	short, cancelShort := context.WithTimeout(ctx(t), 2*time.Second)
	_, err = c.TCPRequest(short, b.IP, 80, "whoami")
	cancelShort()
	require.Error(t, err)

	// The followed stream sees both: a's connection decided by policy,
	// and c's denied.
	var allowed, denied *flowpb.Flow
	for allowed == nil || denied == nil {
		resp, err := follow.Recv()
		require.NoError(t, err)
		f := resp.GetFlow()
		if f == nil || f.GetDestination().GetPodName() != "b" {
			continue
		}
		switch {
		case allowed == nil && f.GetSource().GetPodName() == "a" && f.GetEventType().GetType() == 5:
			allowed = f
		case denied == nil && f.GetSource().GetPodName() == "c" && f.GetVerdict() == flowpb.Verdict_DROPPED:
			denied = f
		}
	}
	require.Equal(t, flowpb.Verdict_FORWARDED, allowed.GetVerdict())
	require.Equal(t, "a", allowed.GetSource().GetPodName())
	require.Equal(t, "x", allowed.GetSource().GetNamespace())
	require.Contains(t, allowed.GetSource().GetLabels(), "k8s:app=a")
	require.Equal(t, flowpb.TrafficDirection_INGRESS, allowed.GetTrafficDirection())
	require.Equal(t, "node2", allowed.GetNodeName())
	require.NotEmpty(t, allowed.GetIngressAllowedBy(), "the deciding policy")
	require.Equal(t, "allow-a", allowed.GetIngressAllowedBy()[0].GetName())
	require.Equal(t, uint32(80), allowed.GetL4().GetTCP().GetDestinationPort())

	require.Equal(t, flowpb.Verdict_DROPPED, denied.GetVerdict())
	require.Equal(t, flowpb.DropReason_POLICY_DENIED, denied.GetDropReasonDesc())
	require.Equal(t, "c", denied.GetSource().GetPodName())

	// History with filters: drops only, and everything but drops.
	drops := getFlows(t, hub, &observerpb.GetFlowsRequest{Number: 100,
		Whitelist: []*flowpb.FlowFilter{{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}, DestinationPod: []string{"x/"}}}})
	require.NotEmpty(t, drops)
	for _, f := range drops {
		require.Equal(t, flowpb.Verdict_DROPPED, f.GetVerdict())
	}
	notDrops := getFlows(t, hub, &observerpb.GetFlowsRequest{Number: 100,
		Blacklist: []*flowpb.FlowFilter{{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}}})
	require.NotEmpty(t, notDrops)
	for _, f := range notDrops {
		require.NotEqual(t, flowpb.Verdict_DROPPED, f.GetVerdict())
	}

	// The CLI: the same flows, filtered, and --not inverting.
	out := e.cli(n2, "observe", "--last", "100", "--to-pod", "x/b", "--verdict", "DROPPED")
	require.Contains(t, out, "x/c:")
	require.Contains(t, out, "POLICY_DENIED")
	require.NotContains(t, out, "x/a:", "a was allowed")
	out = e.cli(n2, "observe", "--last", "100", "--to-pod", "x/b", "--not", "--verdict", "DROPPED")
	require.Contains(t, out, "x/a:")
	require.NotContains(t, out, "POLICY_DENIED")
	out = e.cli(n2, "map", "--last", "200")
	require.Contains(t, out, "x/b")
	require.Contains(t, out, "POLICY_DENIED")

	// A deleted pod's flows keep its name.
	require.NoError(t, c.Delete())
	require.NoError(t, e.c.SyncManifests())
	time.Sleep(500 * time.Millisecond)
	drops = getFlows(t, hub, &observerpb.GetFlowsRequest{Number: 100,
		Whitelist: []*flowpb.FlowFilter{{SourcePod: []string{"x/c"}}}})
	require.NotEmpty(t, drops, "flows of the deleted pod are still found by its name")
}
