package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/internal/testing/testutil"
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/flow"
)

const (
	agentPkg = "github.com/sluice-net/sluice/cmd/sluice-agent"
	cliPkg   = "github.com/sluice-net/sluice/cmd/sluice"
)

// env is one test's cluster with the binaries it needs.
type env struct {
	t        *testing.T
	c        *harness.Cluster
	agentBin string
	cliBin   string
	// agentArgs are extra agent flags (the attach mode under test);
	// nodeArgs more for one node's agent only.
	agentArgs []string
	nodeArgs  map[*harness.Node][]string
	agents    map[*harness.Node]*harness.Agent
}

func newEnv(t *testing.T, agentArgs ...string) *env {
	harness.RequireRoot(t)
	harness.RequireBPFFS(t)
	harness.RequireCgroup2(t)
	harness.RequireTools(t)
	if slices.Contains(agentArgs, "--attach-mode=tcx") {
		// Kernels before 6.6 run the same test with --attach-mode=tc.
		kf, _ := datapath.LookupKernelFeature(datapath.FeatureTCX)
		testutil.RequireFeature(t, datapath.FeatureTCX, datapath.ProbeTCX(),
			fmt.Sprintf("%s, Linux %s+; the legacy-tc variant of this test covers the fallback", kf.What, kf.MinKernel))
	}
	e := &env{
		t: t, c: harness.NewTestCluster(t, harness.Options{Name: "e2e", Logf: t.Logf}),
		agentBin: harness.BuildBinary(t, agentPkg), cliBin: harness.BuildBinary(t, cliPkg),
		agentArgs: agentArgs, nodeArgs: map[*harness.Node][]string{}, agents: map[*harness.Node]*harness.Agent{},
	}
	t.Cleanup(func() {
		if t.Failed() {
			for n, a := range e.agents {
				t.Logf("--- agent log of %s:\n%s", n.Name, a.Logs())
			}
		}
	})
	return e
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func (e *env) node(name string, mode harness.Mode) *harness.Node {
	n, err := e.c.AddNode(ctx(e.t), name, mode)
	require.NoError(e.t, err)
	return n
}

func (e *env) pod(n *harness.Node, ns, name string, labels map[string]string) *harness.Pod {
	p, err := n.AddPod(ctx(e.t), ns, name, labels)
	require.NoError(e.t, err)
	return p
}

// dualPod is pod with an address of each family.
func (e *env) dualPod(n *harness.Node, ns, name string, labels map[string]string) *harness.Pod {
	p, err := n.AddPodFamily(ctx(e.t), harness.DualStack, ns, name, labels)
	require.NoError(e.t, err)
	return p
}

// startAgent starts (or restarts) n's agent and waits until it is ready
// and every local pod is an attached endpoint.
func (e *env) startAgent(n *harness.Node) *harness.Agent {
	e.t.Helper()
	args := append(append([]string{"--ct-gc-interval", "1s"}, e.agentArgs...), e.nodeArgs[n]...)
	a, err := n.StartAgent(e.agentBin, args...)
	require.NoError(e.t, err)
	e.agents[n] = a
	require.NoError(e.t, a.WaitReady(ctx(e.t)), "agent on %s not ready:\n%s", n.Name, a.Logs())
	e.waitEndpointsReady(n)
	return a
}

func (e *env) endpoints(n *harness.Node) []api.Endpoint {
	var eps []api.Endpoint
	require.NoError(e.t, n.AgentGet(ctx(e.t), api.PathEndpoints, &eps))
	return eps
}

func (e *env) waitEndpointsReady(n *harness.Node) {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		var eps []api.Endpoint
		if err := n.AgentGet(ctx(e.t), api.PathEndpoints, &eps); err != nil {
			return false
		}
		ready := map[string]bool{}
		for _, ep := range eps {
			if ep.State == "ready" {
				ready[ep.Namespace+"/"+ep.Pod] = true
			}
		}
		for _, p := range n.Pods() {
			if !ready[p.String()] {
				return false
			}
		}
		return true
	}, 20*time.Second, 100*time.Millisecond, "endpoints of %s not ready: %+v", n.Name, e.endpoints(n))
}

// waitFlow waits for a flow on n's Hubble observer matching f: the
// agent's events are flows.
func (e *env) waitFlow(n *harness.Node, what string, f func(*flowpb.Flow) bool) *flowpb.Flow {
	e.t.Helper()
	hub := hubbleClient(e.t, n)
	// What the last look saw, for the failure message: testify formats
	// its message arguments when Eventually is called, not when it gives
	// up, and runs the condition in another goroutine.
	var (
		mu    sync.Mutex
		found *flowpb.Flow
		seen  []string
	)
	ok := assert.Eventually(e.t, func() bool {
		flows, err := recentFlows(ctx(e.t), hub)
		var saw []string
		if err != nil {
			saw = []string{err.Error()}
		}
		for _, fl := range flows {
			if f(fl) {
				mu.Lock()
				found = fl
				mu.Unlock()
				return true
			}
			saw = append(saw, fl.GetSummary()+" "+fl.GetIP().GetSource()+" -> "+fl.GetIP().GetDestination()+" "+fl.GetVerdict().String())
		}
		mu.Lock()
		seen = saw
		mu.Unlock()
		return false
	}, 10*time.Second, 50*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if !ok {
		require.FailNow(e.t, fmt.Sprintf("no %s flow on %s; the observer's last %d flows: %v", what, n.Name, len(seen), lastN(seen, 30)))
	}
	return found
}

// lastN is the last n of s.
func lastN(s []string, n int) []string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// recentFlows reads the flows n's observer holds.
func recentFlows(c context.Context, hub observerpb.ObserverClient) ([]*flowpb.Flow, error) {
	cctx, cancel := context.WithTimeout(c, 5*time.Second)
	defer cancel()
	stream, err := hub.GetFlows(cctx, &observerpb.GetFlowsRequest{Number: 4096})
	if err != nil {
		return nil, err
	}
	var out []*flowpb.Flow
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if fl := r.GetFlow(); fl != nil {
			out = append(out, fl)
		}
	}
}

// flowEnds are a flow's source and destination address and port.
func flowEnds(f *flowpb.Flow) (src, dst netip.AddrPort) {
	var sport, dport uint32
	switch l4 := f.GetL4(); {
	case l4.GetTCP() != nil:
		sport, dport = l4.GetTCP().GetSourcePort(), l4.GetTCP().GetDestinationPort()
	case l4.GetUDP() != nil:
		sport, dport = l4.GetUDP().GetSourcePort(), l4.GetUDP().GetDestinationPort()
	}
	s, _ := netip.ParseAddr(f.GetIP().GetSource())
	d, _ := netip.ParseAddr(f.GetIP().GetDestination())
	return netip.AddrPortFrom(s, uint16(sport)), netip.AddrPortFrom(d, uint16(dport))
}

// isDrop reports whether f is a drop for reason: Hubble's name, or a
// Sluice-only reason, which the summary names first.
func isDrop(f *flowpb.Flow, reason string) bool {
	return f.GetVerdict() == flowpb.Verdict_DROPPED &&
		(f.GetDropReasonDesc().String() == reason || strings.HasPrefix(f.GetSummary(), reason+";"))
}

// isNewConnection reports whether f is a connection's first packet: a
// trace, or a policy verdict when policy decided it.
func isNewConnection(f *flowpb.Flow) bool {
	t := f.GetEventType().GetType()
	return f.GetTraceReason() == flowpb.TraceReason_NEW && (t == flow.MessageTypeTrace || t == flow.MessageTypePolicyVerdict)
}

func (e *env) status(n *harness.Node) *api.Status {
	st, err := n.AgentStatus(ctx(e.t))
	require.NoError(e.t, err)
	return st
}

// services are the frontends n's agent programmed, with their backends.
func (e *env) services(n *harness.Node) api.Services {
	var svcs api.Services
	require.NoError(e.t, n.AgentGet(ctx(e.t), api.PathServices, &svcs))
	return svcs
}

// problems lists the errors n's agent reports, as "component: message".
func (e *env) problems(n *harness.Node) []string {
	var out []string
	for _, p := range e.status(n).Errors {
		out = append(out, p.Component+": "+p.Message)
	}
	return out
}

// cli runs the sluice CLI against n's agent and pins.
func (e *env) cli(n *harness.Node, args ...string) string {
	e.t.Helper()
	full := append([]string{"--state-dir", n.StateDir, "--bpf-root", n.BPFRoot}, args...)
	out, err := exec.CommandContext(ctx(e.t), e.cliBin, full...).CombinedOutput()
	require.NoError(e.t, err, "sluice %s: %s", strings.Join(args, " "), out)
	return string(out)
}

// ct reads n's CT table through the CLI (pins only; works without an agent).
func (e *env) ct(n *harness.Node) []datapath.CTEntry {
	var entries []datapath.CTEntry
	require.NoError(e.t, json.Unmarshal([]byte(e.cli(n, "bpf", "ct", "list", "-o", "json")), &entries))
	return entries
}

func endpointID(t *testing.T, eps []api.Endpoint, p *harness.Pod) uint32 {
	for _, ep := range eps {
		if ep.Namespace == p.Namespace && ep.Pod == p.Name {
			return ep.ID
		}
	}
	t.Fatalf("no endpoint for %s in %+v", p, eps)
	return 0
}

// findCT returns the entry of endpoint id for proto from src to dst:port.
func findCT(entries []datapath.CTEntry, id uint32, proto string, src netip.Addr, dst netip.AddrPort) (datapath.CTEntry, bool) {
	for _, c := range entries {
		s, _ := netip.ParseAddrPort(c.Src)
		d, _ := netip.ParseAddrPort(c.Dst)
		if c.EndpointID == id && c.Proto == proto && s.Addr() == src && d == dst {
			return c, true
		}
	}
	return datapath.CTEntry{}, false
}

func echo(t *testing.T, from *harness.Host, proto string, to netip.Addr, port int) {
	t.Helper()
	payload := fmt.Sprintf("hello-%s-%d", proto, port)
	var (
		reply string
		err   error
	)
	if proto == "UDP" {
		reply, err = from.UDPRequest(ctx(t), to, port, payload)
	} else {
		reply, err = from.TCPRequest(ctx(t), to, port, payload)
	}
	require.NoError(t, err, "%s to %s:%d", proto, to, port)
	require.Contains(t, reply, payload)
}
