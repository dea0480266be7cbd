package e2e

// ICMP redirects on a bridge node: a pod's packet to a VIP that the
// per-packet path translates to a backend on the same bridge is forwarded
// by the node back out of the bridge it came from, so the node's kernel
// tells the pod (ICMP redirect) to send to that backend directly. The
// redirect names the translated destination; reverse-translated like an
// ICMP error, it tells the pod "the VIP is reached through that backend",
// and the pod (which accepts it: shared_media, and it knows the backend's
// address already) sends every later packet to the VIP to that backend's
// MAC address, whichever backend the LB chose, for the 300s a redirected
// route lives:
//
//	node2 (bridge, --socket-lb=off)            node1 (routed)
//	  client ──► VIP 10.96.0.10 ──► b2   (first: the only backend)
//	         ──► VIP 10.96.0.10 ───────────────► b1   (then: the only backend)

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
)

func TestServiceICMPRedirectIsNotAVIPRoute(t *testing.T) {
	e := newEnv(t, "--socket-lb=off")
	n1 := e.node("node1", harness.Routed)
	n2 := e.node("node2", harness.Bridge)
	client := e.pod(n2, "default", "client", nil)
	b1 := e.pod(n1, "default", "b1", map[string]string{"app": "web"})
	b2 := e.pod(n2, "default", "b2", map[string]string{"app": "web"})
	serveWeb(t, b1, b2)
	write := func(b *harness.Pod) {
		require.NoError(t, e.c.WriteManifest("svc-web.yaml", serviceYAML("default", "web", vip, webPorts, ready(b), "")))
	}
	write(b2)
	require.NoError(t, e.c.SyncManifests())
	e.startAgent(n1)
	e.startAgent(n2)
	e.waitServicesOn(n2, 2)

	// The client talks to b2 itself (a redirect to an address the client
	// has not resolved only starts resolving it), then to the VIP, served
	// by b2: the node redirects the client's datagrams to b2.
	who, err := client.UDPRequest(ctx(t), b2.IP, 5353, "whoami")
	require.NoError(t, err)
	require.Equal(t, "default/b2", who)
	for range 3 {
		who, err := client.UDPRequest(ctx(t), vip, 53, "whoami")
		require.NoError(t, err)
		require.Equal(t, "default/b2", who)
		time.Sleep(100 * time.Millisecond) // the node rate-limits its redirects
	}

	// Now b1 alone serves the VIP: the client's packets to it must reach
	// b1 through the node, not b2 through the bridge.
	write(b1)
	require.Eventually(t, func() bool {
		out := e.cli(n2, "bpf", "lb", "list")
		return strings.Contains(out, b1.IP.String()) && !strings.Contains(out, b2.IP.String())
	}, 10*time.Second, 50*time.Millisecond, "the service does not move to b1")
	routes, err := client.Exec(ctx(t), "ip", "route", "show", "cache")
	require.NoError(t, err)
	require.NotContains(t, routes, vip.String(), "the client has a route for the VIP")
	for _, proto := range []string{"TCP", "UDP"} {
		var who string
		if proto == "TCP" {
			who, err = client.TCPRequest(ctx(t), vip, 80, "whoami")
		} else {
			who, err = client.UDPRequest(ctx(t), vip, 53, "whoami")
		}
		require.NoError(t, err, "%s to the VIP, now served by b1 on the other node", proto)
		require.Equal(t, "default/b1", who)
	}
}
