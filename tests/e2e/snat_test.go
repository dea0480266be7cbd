package e2e

// Source translation of external connections toward remote backends
// (NodePort, externalTrafficPolicy: Cluster): each connection borrows a
// port of node1's SNAT range (61000-65535) and must give it back when it
// ends, or a few thousand connections exhaust the range for good.
//
//	ext ──► node1:30082 ──(node1:natport → b2:8080)──► b2 (node2)
//	    ◄── node1:30082 ◄─(b2:8080 → node1:natport)───

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/api"
)

// snatCluster is two nodes, b2 on node2 serving TCP and UDP, and a NodePort
// service whose only backend is b2, so every external connection node1
// takes is source-translated.
func snatCluster(t *testing.T, agentArgs ...string) (*env, *harness.Node, *harness.Pod) {
	e := newEnv(t, agentArgs...)
	n1 := e.node("node1", harness.Routed)
	n2 := e.node("node2", harness.Bridge)
	b2 := e.pod(n2, "default", "b2", map[string]string{"app": "web"})
	_, err := b2.StartTCPEchoServer(8080)
	require.NoError(t, err)
	_, err = b2.StartUDPEchoServer(5353)
	require.NoError(t, err)
	y := serviceYAML("default", "np-remote", netip.MustParseAddr("10.96.0.12"), webPorts, ready(b2), "  type: NodePort\n")
	y = strings.Replace(y, "    protocol: TCP\n", "    protocol: TCP\n    nodePort: 30082\n", 1)
	y = strings.Replace(y, "    protocol: UDP\n", "    protocol: UDP\n    nodePort: 30053\n", 1)
	require.NoError(t, e.c.WriteManifest("svc-remote.yaml", y))
	require.NoError(t, e.c.SyncManifests())
	e.startAgent(n1)
	e.startAgent(n2)
	require.Eventually(t, func() bool { return e.status(n1).Services.Frontends >= 4 }, 10*time.Second, 50*time.Millisecond)
	return e, n1, b2
}

// natInUse is node1's SNAT ports in use for proto, as `sluice status` says.
func natInUse(t *testing.T, s *api.Status, proto string) (inUse, total int) {
	t.Helper()
	for _, u := range s.NAT {
		if u.Proto == proto {
			inUse += u.PortsInUse
			total += u.PortsTotal
		}
	}
	return inUse, total
}

// Far more sequential connections than the SNAT range has ports, all from
// one external client: ports come back as connections close.
func TestNodePortSNATReleasesPorts(t *testing.T) {
	// More connections than the range (4,536 ports) has: at the host's
	// 1,500 connections/s about 3,000 ports are held at once (each for
	// 2 s after its close), so ports must come back for the run to
	// finish. The run gets 5 minutes: under TCG it is far slower.
	const conns = 6000
	e, n1, _ := snatCluster(t)
	ext, err := e.c.AddExternal(ctx(t), "ext1")
	require.NoError(t, err)

	run, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	res, err := ext.SequentialTCPRequests(run, n1.IP, 30082, conns, "whoami", 3*time.Second)
	require.NoError(t, err)
	took := time.Since(start)
	t.Logf("%d sequential connections through node1:30082 in %s (%.0f/s): %d failed %v",
		conns, took.Round(time.Millisecond), float64(conns)/took.Seconds(), res.Failed, res.Errors)
	require.Zero(t, res.Failed, "every connection succeeds: %v", res.Errors)
	require.Equal(t, conns, res.Replies["default/b2"], "replies: %v", res.Replies)

	// Closed connections give their ports back: within a few GC
	// intervals (1s here) next to nothing stays in use.
	st := e.status(n1)
	inUse, total := natInUse(t, st, "TCP")
	t.Logf("SNAT ports in use right after the run: %d of %d", inUse, total)
	require.NotZero(t, total, "sluice status reports the SNAT range: %+v", st.NAT)
	require.Eventually(t, func() bool {
		inUse, _ = natInUse(t, e.status(n1), "TCP")
		return inUse <= 10
	}, 30*time.Second, 500*time.Millisecond, "SNAT ports still in use after the connections closed")
	t.Logf("SNAT ports in use at steady state: %d", inUse)
	require.Contains(t, e.cli(n1, "status"), "SNAT")
	_, metrics := mustAgentGet(t, n1, metricsPort, "/metrics")
	require.Contains(t, metrics, `sluice_map_entries{map="sl_nat"}`)
}

// Several external clients on the same source port at once, all toward
// the same remote backend: each gets a NAT port of its own and all work.
func TestNodePortSNATClientsOnOnePort(t *testing.T) {
	e, n1, _ := snatCluster(t)
	var exts []*harness.External
	for i := range 4 {
		x, err := e.c.AddExternal(ctx(t), fmt.Sprintf("ext%d", i+1))
		require.NoError(t, err)
		exts = append(exts, x)
	}
	// Every client holds a TCP connection and a UDP socket from the same
	// source ports, all open at once.
	var tcps, udps []net.Conn
	for i, x := range exts {
		c, err := x.Dial("tcp", 40404, n1.IP, 30082, 3*time.Second)
		require.NoError(t, err, "TCP client %d", i+1)
		t.Cleanup(func() { c.Close() })
		tcps = append(tcps, c)
		u, err := x.Dial("udp", 40405, n1.IP, 30053, 3*time.Second)
		require.NoError(t, err, "UDP client %d", i+1)
		t.Cleanup(func() { u.Close() })
		udps = append(udps, u)
	}
	peers := map[string]bool{}
	for i, c := range tcps {
		peer, err := harness.RoundTrip(c, "whoiscalling", 3*time.Second)
		require.NoError(t, err, "TCP client %d", i+1)
		require.True(t, strings.HasPrefix(peer, n1.IP.String()+":"), "b2 sees node1, saw %q", peer)
		peers[peer] = true
	}
	require.Len(t, peers, len(exts), "a NAT port of its own for each client: %v", peers)
	for round := range 3 {
		for i := range exts {
			reply, err := harness.RoundTrip(tcps[i], "whoami", 3*time.Second)
			require.NoError(t, err, "TCP client %d, round %d", i+1, round)
			require.Equal(t, "default/b2", reply)
			reply, err = harness.RoundTrip(udps[i], "whoami", 3*time.Second)
			require.NoError(t, err, "UDP client %d, round %d", i+1, round)
			require.Equal(t, "default/b2", reply)
		}
	}
	inUse, _ := natInUse(t, e.status(n1), "UDP")
	require.GreaterOrEqual(t, inUse, len(exts), "one UDP mapping per client")
}

// A connection that stays open keeps its mapping across many GC passes
// (the agent runs with --ct-gc-interval 1s).
func TestNodePortSNATOpenConnectionKeepsItsPort(t *testing.T) {
	e, n1, _ := snatCluster(t)
	ext, err := e.c.AddExternal(ctx(t), "ext1")
	require.NoError(t, err)
	c, err := ext.Dial("tcp", 0, n1.IP, 30082, 3*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	peer, err := harness.RoundTrip(c, "whoiscalling", 3*time.Second)
	require.NoError(t, err)
	// Idle and busy stretches across five GC passes.
	for i := range 10 {
		time.Sleep(500 * time.Millisecond)
		reply, err := harness.RoundTrip(c, "whoiscalling", 3*time.Second)
		require.NoError(t, err, "round trip %d on the open connection", i)
		require.Equal(t, peer, reply, "same connection, same NAT port")
	}
	inUse, _ := natInUse(t, e.status(n1), "TCP")
	require.GreaterOrEqual(t, inUse, 1, "its mapping is in use")
}

// A range of 16 ports: every port is found, the last one too; a 17th
// connection is a counted NAT_PORTS_EXHAUSTED drop, never a silent one;
// ports of closed connections serve new ones.
func TestNodePortSNATNearlyFullRange(t *testing.T) {
	const ports = 16
	e, n1, _ := snatCluster(t, fmt.Sprintf("--snat-port-range=61000-%d", 61000+ports-1))
	ext, err := e.c.AddExternal(ctx(t), "ext1")
	require.NoError(t, err)
	var held []net.Conn
	for i := range ports {
		c, err := ext.Dial("tcp", 0, n1.IP, 30082, 3*time.Second)
		require.NoError(t, err, "connection %d of %d ports", i+1, ports)
		t.Cleanup(func() { c.Close() })
		reply, err := harness.RoundTrip(c, "whoami", 3*time.Second)
		require.NoError(t, err, "connection %d", i+1)
		require.Equal(t, "default/b2", reply)
		held = append(held, c)
	}
	inUse, total := natInUse(t, e.status(n1), "TCP")
	require.Equal(t, ports, total)
	require.Equal(t, ports, inUse, "every port held by a live connection")

	_, err = ext.Dial("tcp", 0, n1.IP, 30082, 2*time.Second)
	require.Error(t, err, "no port left for a 17th connection")
	require.Eventually(t, func() bool {
		for _, c := range e.status(n1).Counters {
			if c.Reason == "NAT_PORTS_EXHAUSTED" && c.Packets > 0 {
				return true
			}
		}
		return false
	}, 5*time.Second, 100*time.Millisecond, "the refused connection is a counted NAT_PORTS_EXHAUSTED drop")

	// Four connections end: their ports come back after the close grace.
	for _, c := range held[:4] {
		require.NoError(t, c.Close())
	}
	time.Sleep(3 * time.Second)
	for i := range 4 {
		c, err := ext.Dial("tcp", 0, n1.IP, 30082, 3*time.Second)
		require.NoError(t, err, "new connection %d on a port a closed one gave back", i+1)
		t.Cleanup(func() { c.Close() })
		reply, err := harness.RoundTrip(c, "whoami", 3*time.Second)
		require.NoError(t, err)
		require.Equal(t, "default/b2", reply)
	}
	for i, c := range held[4:] {
		reply, err := harness.RoundTrip(c, "whoami", 3*time.Second)
		require.NoError(t, err, "held connection %d still works", i+5)
		require.Equal(t, "default/b2", reply)
	}
}
