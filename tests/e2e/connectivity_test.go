package e2e

// Pod-to-pod traffic through the endpoint programs on simulated nodes, for
// each node wiring (routed veth, cni0 bridge) and each attach mode.
//
//	 node1 (mode under test)            node2 (routed)          ext1
//	 ┌ client ──┐   ┌ server ──┐        ┌ remote ──┐
//	 │ egress ▲ │   │ ingress ▼│        │ ingress ▼│
//	 └──────────┘   └──────────┘        └──────────┘
//	   client → server        same node: client's egress + server's ingress
//	   client → remote        across the underlay
//	   ext1 → server          from outside the cluster

import (
	"net/netip"
	"slices"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
)

var attachModes = []struct {
	name string
	args []string
}{
	{"tcx", []string{"--attach-mode=tcx"}},
	{"legacy-tc", []string{"--attach-mode=tc"}},
}

func TestConnectivity(t *testing.T) {
	for _, mode := range []harness.Mode{harness.Routed, harness.Bridge} {
		for _, am := range attachModes {
			t.Run(mode.String()+"/"+am.name, func(t *testing.T) { testConnectivity(t, mode, am.args) })
		}
	}
}

func testConnectivity(t *testing.T, mode harness.Mode, agentArgs []string) {
	// The test reads the CT entries of its closed TCP connections after
	// its other probes: under TCG on 5.10 those took longer than the
	// default 10 s close timeout, and the GC had taken the entries.
	e := newEnv(t, append(slices.Clone(agentArgs), "--ct-timeout-close=2m")...)
	n1 := e.node("node1", mode)
	n2 := e.node("node2", harness.Routed)
	client := e.pod(n1, "default", "client", map[string]string{"app": "client"})
	server := e.pod(n1, "default", "server", map[string]string{"app": "server"})
	remote := e.pod(n2, "prod", "remote", map[string]string{"app": "remote"})
	ext, err := e.c.AddExternal(ctx(t), "ext1")
	require.NoError(t, err)
	require.NoError(t, e.c.SyncManifests())
	e.startAgent(n1)
	e.startAgent(n2)

	st := e.status(n1)
	wantMode := "tcx"
	if agentArgs[0] == "--attach-mode=tc" {
		wantMode = "tc"
	}
	require.Equal(t, wantMode, st.AttachMode)
	require.Equal(t, 2, st.Endpoints)
	require.Empty(t, st.Errors)

	for _, p := range []*harness.Pod{server, remote} {
		_, err := p.StartTCPEchoServer(8080)
		require.NoError(t, err)
		_, err = p.StartUDPEchoServer(5353)
		require.NoError(t, err)
	}

	echo(t, &client.Host, "TCP", server.IP, 8080)
	echo(t, &client.Host, "UDP", server.IP, 5353)
	echo(t, &client.Host, "TCP", remote.IP, 8080)
	echo(t, &client.Host, "UDP", remote.IP, 5353)
	require.NoError(t, client.Ping(ctx(t), remote.IP))
	echo(t, &ext.Host, "TCP", server.IP, 8080)

	eps1 := e.endpoints(n1)
	cID, sID := endpointID(t, eps1, client), endpointID(t, eps1, server)
	rID := endpointID(t, e.endpoints(n2), remote)
	srv := netip.AddrPortFrom(server.IP, 8080)

	// Same-node flow: one CT view per endpoint.
	ct1 := e.ct(n1)
	c, ok := findCT(ct1, cID, "TCP", client.IP, srv)
	require.True(t, ok, "client's egress entry missing: %+v", ct1)
	require.Equal(t, "egress", c.Origin)
	require.NotZero(t, c.PacketsReply, "replies are recognised")
	s, ok := findCT(ct1, sID, "TCP", client.IP, srv)
	require.True(t, ok, "server's ingress entry missing: %+v", ct1)
	require.Equal(t, "ingress", s.Origin)
	u, ok := findCT(ct1, sID, "UDP", client.IP, netip.AddrPortFrom(server.IP, 5353))
	require.True(t, ok)
	require.Equal(t, "established", u.State)
	_, ok = findCT(ct1, sID, "TCP", ext.IP, srv)
	require.True(t, ok, "external client's connection tracked at the server")

	// Cross-node flows are tracked on both ends.
	ct2 := e.ct(n2)
	_, ok = findCT(ct2, rID, "TCP", client.IP, netip.AddrPortFrom(remote.IP, 8080))
	require.True(t, ok, "remote's ingress entry missing: %+v", ct2)
	_, ok = findCT(ct1, cID, "ICMP", client.IP, netip.AddrPortFrom(remote.IP, 0))
	require.True(t, ok, "ping tracked: %+v", ct1)

	// New-connection flows name the pod on each side.
	e.waitFlow(n1, "client trace", func(f *flowpb.Flow) bool {
		_, dst := flowEnds(f)
		return isNewConnection(f) && f.GetSource().GetPodName() == "client" &&
			f.GetTrafficDirection() == flowpb.TrafficDirection_EGRESS && dst == srv
	})
	e.waitFlow(n1, "server trace", func(f *flowpb.Flow) bool {
		_, dst := flowEnds(f)
		return isNewConnection(f) && f.GetDestination().GetPodName() == "server" &&
			f.GetTrafficDirection() == flowpb.TrafficDirection_INGRESS && dst == srv
	})
	e.waitFlow(n2, "remote trace", func(f *flowpb.Flow) bool {
		return isNewConnection(f) && f.GetDestination().GetPodName() == "remote" && f.GetDestination().GetNamespace() == "prod" &&
			f.GetL4().GetUDP() != nil
	})

	// Counters saw traffic both ways.
	st = e.status(n1)
	dirs := map[string]bool{}
	for _, c := range st.Counters {
		if c.Verdict == "forwarded" && c.Packets > 0 {
			dirs[c.Direction] = true
		}
	}
	require.True(t, dirs["ingress"] && dirs["egress"], "forwarded counters: %+v", st.Counters)
	require.NotZero(t, st.CTEntries)
}

// A pod that sends from an address that is not its own is dropped, and the
// drop is visible: event with reason, counter, CLI.
func TestSpoofedSourceIsDroppedAndReported(t *testing.T) {
	e := newEnv(t)
	n1 := e.node("node1", harness.Routed)
	bad := e.pod(n1, "default", "bad", nil)
	target := e.pod(n1, "default", "target", nil)
	require.NoError(t, e.c.SyncManifests())
	e.startAgent(n1)

	require.NoError(t, bad.Ping(ctx(t), target.IP), "the pod's own address works")
	_, err := bad.Exec(ctx(t), "ip", "addr", "add", "10.99.0.1/32", "dev", "eth0")
	require.NoError(t, err)
	out, err := bad.Exec(ctx(t), "ping", "-c", "2", "-W", "1", "-I", "10.99.0.1", target.IP.String())
	require.Error(t, err, "spoofed ping must not be answered")
	require.Contains(t, out, "100% packet loss")

	f := e.waitFlow(n1, "spoof drop", func(f *flowpb.Flow) bool {
		return isDrop(f, "INVALID_SOURCE_IP") && f.GetSource().GetPodName() == "bad"
	})
	require.Equal(t, uint32(132), f.GetDropReason(), "Hubble's numbering for INVALID_SOURCE_IP")
	require.Equal(t, "10.99.0.1", f.GetIP().GetSource())

	st := e.status(n1)
	var drops uint64
	for _, c := range st.Counters {
		if c.Verdict == "dropped" && c.Reason == "INVALID_SOURCE_IP" && c.Direction == "egress" {
			drops += c.Packets
		}
	}
	require.GreaterOrEqual(t, drops, uint64(2))
	require.Contains(t, e.cli(n1, "status"), "INVALID_SOURCE_IP")
	require.Contains(t, e.cli(n1, "observe", "--verdict", "DROPPED"), "INVALID_SOURCE_IP")
	require.Contains(t, e.cli(n1, "events"), "INVALID_SOURCE_IP", "the old name of observe")
}
