package e2e

// A client's UDP source port is reused, within the connection tracking's
// lifetime, for a request to a service's VIP and one straight to the
// backend the VIP was translated to: after translation both are the same
// tuple (client:port → backend:port). Each must get its reply from the
// address it sent to (the VIP, or the backend), whichever came first:
//
//	node1 (--socket-lb=off: the per-packet path)
//	  client:40053 ──► VIP 10.96.0.10:53 ──► b1:5353   (1)
//	  client:40053 ─────────────────────────► b1:5353   (2)  the tuple of (1), translated
//
// TestRestartUnderLoad's probers met this by chance (the kernel gives a
// new socket a closed one's ephemeral port) as a datagram straight to a
// backend whose reply came back from the VIP, which the connected socket
// dropped.

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
)

func TestServiceTupleReusedStraightToTheBackend(t *testing.T) {
	e := newEnv(t, "--socket-lb=off")
	n1 := e.node("node1", harness.Routed)
	client := e.pod(n1, "default", "client", nil)
	b1 := e.pod(n1, "default", "b1", map[string]string{"app": "web"})
	serveWeb(t, b1)
	require.NoError(t, e.c.WriteManifest("svc-web.yaml", serviceYAML("default", "web", vip, webPorts, ready(b1), "")))
	require.NoError(t, e.c.SyncManifests())
	e.startAgent(n1)
	e.waitServicesOn(n1, 2)

	// exchange sends "whoami" from the client's port to dst on an
	// unconnected socket, so that a reply from another address than dst
	// is seen, not dropped by the socket.
	exchange := func(port int, dst netip.AddrPort) (string, netip.AddrPort, error) {
		var conn *net.UDPConn
		if err := client.InNetns(func() error {
			var err error
			conn, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port})
			return err
		}); err != nil {
			return "", netip.AddrPort{}, err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.WriteToUDPAddrPort([]byte("whoami"), dst); err != nil {
			return "", netip.AddrPort{}, err
		}
		buf := make([]byte, 2048)
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		return string(buf[:n]), netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), err
	}
	toVIP, toBackend := netip.AddrPortFrom(vip, 53), netip.AddrPortFrom(b1.IP, 5353)
	for _, tc := range []struct {
		name        string
		port        int
		first, then netip.AddrPort
	}{
		{"UDP VIP then backend", 40053, toVIP, toBackend},
		{"UDP backend then VIP", 40054, toBackend, toVIP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, dst := range []netip.AddrPort{tc.first, tc.then} {
				reply, from, err := exchange(tc.port, dst)
				require.NoError(t, err, "exchange %d, from :%d to %s", i+1, tc.port, dst)
				require.Equal(t, "default/b1", reply)
				require.Equal(t, dst.String(), from.String(), "exchange %d, from :%d: the reply's source is not where the request went", i+1, tc.port)
			}
		})
	}
}
