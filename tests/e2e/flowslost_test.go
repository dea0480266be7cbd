package e2e

// Lost events through a real agent whose ring is one page: the datapath is
// made to emit far more events than the ring holds, faster than the agent
// reads them, and every view of the loss agrees with the kernel's counter:
// `sluice status`, the Prometheus counter and the LostEvent notices of the
// Hubble stream; the flows stored and the events lost add up to the events
// emitted.
//
//	node1 (agent --events-buffer <page size>: ~20 events)
//	  client's veth, tcx ingress: sl_from_ep ◄── BPF_PROG_TEST_RUN × 4000 (internal/testing/eventgen:
//	        │                                     SYN, RST per source port: one event each)
//	        ├─► sl_events ─► agent reader ─► flow store ─► GetFlows --follow (this test)
//	        └─► ring full: sl_metrics events-lost ─► CT GC tick ─► LostEvent notice
//	                                               ─► sluice status, sluice_events_lost_total

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/eventgen"
	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/datapath"
)

func TestFlowsLostEventsAreCountedExactly(t *testing.T) {
	const (
		emitted   = 4000 // events: SYN and RST of 2000 connections
		firstPort = 20000
	)
	e := newEnv(t, "--events-buffer", strconv.Itoa(os.Getpagesize()), "--flow-buffer", "16384")
	n1 := e.node("node1", harness.Routed)
	client := e.pod(n1, "default", "client", map[string]string{"app": "client"})
	server := e.pod(n1, "default", "server", map[string]string{"app": "server"})
	require.NoError(t, e.c.SyncManifests())
	e.startAgent(n1)

	// The kernel's count, read from the pinned map, not through the agent.
	kernelLost := func() uint64 {
		var cs []datapath.Counter
		require.NoError(t, json.Unmarshal([]byte(e.cli(n1, "bpf", "metrics", "list", "-o", "json")), &cs))
		var n uint64
		for _, c := range cs {
			if c.Metric == "events-lost" {
				n += c.Packets
			}
		}
		return n
	}
	lostBefore := kernelLost()
	require.Eventually(t, func() bool { return e.status(n1).Flows.Lost == lostBefore }, 5*time.Second, 100*time.Millisecond,
		"the agent has reported what was lost before the flood")

	// Follow the client's flows from before the flood: every flow and
	// every lost notice from now on.
	fctx, cancel := context.WithTimeout(ctx(t), 45*time.Second)
	defer cancel()
	follow, err := hubbleClient(t, n1).GetFlows(fctx, &observerpb.GetFlowsRequest{Follow: true,
		Whitelist: []*flowpb.FlowFilter{{SourceIp: []string{client.IP.String()}}}})
	require.NoError(t, err)
	type seen struct{ flows, lost, followerLost uint64 }
	got := make(chan seen, 1)
	go func() {
		var s seen
		defer func() { got <- s }()
		for {
			r, err := follow.Recv()
			if err != nil {
				return
			}
			if l := r.GetLostEvents(); l != nil {
				if l.GetSource() == flowpb.LostEventSource_PERF_EVENT_RING_BUFFER {
					s.lost += l.GetNumEventsLost()
				} else {
					s.followerLost += l.GetNumEventsLost()
				}
			}
			if p := r.GetFlow().GetL4().GetTCP().GetSourcePort(); p >= firstPort && p < firstPort+emitted/2 {
				s.flows++
			}
			if s.flows > 0 && s.flows+s.lost >= emitted {
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // the follower is registered

	// The flood, in node1's netns, where the client's veth has its ifindex.
	var bad uint64
	require.NoError(t, n1.InNetns(func() error {
		veth, err := net.InterfaceByName(client.HostIfName)
		if err != nil {
			return err
		}
		gen, err := eventgen.New(eventgen.Config{Ifindex: veth.Index, Src: client.IP, Dst: server.IP,
			DstPort: 9, FirstPort: firstPort, Ports: emitted / 2})
		if err != nil {
			return err
		}
		defer gen.Close()
		for range emitted {
			v, err := gen.Run()
			if err != nil {
				return err
			}
			if !eventgen.Passed(v) {
				bad++
			}
		}
		return nil
	}))
	require.Zero(t, bad, "every run passed: each emitted exactly its event")

	total := kernelLost()
	lost := total - lostBefore
	require.NotZero(t, lost, "a one-page ring cannot hold %d events emitted at test-run speed", emitted)
	require.Less(t, lost, uint64(emitted), "the agent read some")

	// The Hubble stream: the flows that made it and the notices of the
	// rest add up to what was emitted (the notice comes with the agent's
	// next CT GC tick, every second here).
	s := <-got
	t.Logf("emitted %d events: %d flows stored, %d lost (kernel: %d)", emitted, s.flows, s.lost, lost)
	require.Zero(t, s.followerLost, "the follower kept up: its count is the store's")
	require.Equal(t, lost, s.lost, "LostEvent notices in the stream = the kernel's count")
	require.Equal(t, uint64(emitted), s.flows+s.lost, "stored %d + lost %d = emitted", s.flows, s.lost)

	// sluice status and the Prometheus counter: the kernel's total.
	var st api.Status
	require.NoError(t, json.Unmarshal([]byte(e.cli(n1, "status", "-o", "json")), &st))
	require.Equal(t, total, st.EventsLost, "sluice status: events lost")
	require.Equal(t, total, st.Flows.Lost, "sluice status: lost notices in the flow store")
	_, body := mustAgentGet(t, n1, metricsPort, "/metrics")
	m, ok := sample(body, "sluice_events_lost_total")
	require.True(t, ok, "sluice_events_lost_total in:\n%s", body)
	require.Equal(t, float64(total), m, "sluice_events_lost_total")
	require.Equal(t, total, kernelLost(), "nothing lost since the flood")
}
