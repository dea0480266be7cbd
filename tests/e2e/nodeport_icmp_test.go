package e2e

// What NodePort must carry besides the connection's own packets, from an
// external client: ICMP errors about it (port unreachable from a backend,
// "fragmentation needed" from a link too small on the way) come back
// translated so the client's socket recognises them, and a datagram too
// big for one frame arrives whole, fragments and all. For a backend on
// the same node (DNAT) and on another (DNAT + SNAT). Over IPv4 and IPv6.
//
//	ext ──► node1:30061 ──► b1 (node1)            UDP 5353, MTU 1300 later
//	    ──► node1:30062 ──SNAT──► b2 (node2)      UDP 5353, MTU 1300 later
//	    ──► node1:30063 ──► b1:5454, node1:30064 ──SNAT──► b2:5454   nothing listens

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
)

// udpNodePort is a dual-stack NodePort service for one UDP port of one
// backend.
func udpNodePort(name string, ip, ip6 netip.Addr, nodePort, targetPort int, backend *harness.Pod) string {
	y := dualServiceYAML("default", name, ip, ip6, []svcPort{{"dns", 53, fmt.Sprint(targetPort), targetPort, "UDP"}}, backend)
	y = strings.Replace(y, "  ipFamilyPolicy: RequireDualStack\n", "  ipFamilyPolicy: RequireDualStack\n  type: NodePort\n", 1)
	return strings.Replace(y, "    protocol: UDP\n", fmt.Sprintf("    protocol: UDP\n    nodePort: %d\n", nodePort), 1)
}

// Both families, the same cases: ICMPv6's port unreachable and "packet
// too big" (which routers send instead of fragmenting) as ICMP's.
func TestNodePortICMPErrorsAndFragments(t *testing.T) {
	e := newEnv(t)
	n1 := e.node("node1", harness.Routed)
	n2 := e.node("node2", harness.Bridge)
	b1 := e.dualPod(n1, "default", "b1", map[string]string{"app": "b1"})
	b2 := e.dualPod(n2, "default", "b2", map[string]string{"app": "b2"})
	for _, b := range []*harness.Pod{b1, b2} {
		_, err := b.StartUDPEchoServer(5353)
		require.NoError(t, err)
	}
	v6 := func(s string) netip.Addr { return netip.MustParseAddr("fd00:96::" + s) }
	require.NoError(t, e.c.WriteManifest("np.yaml", strings.Join([]string{
		udpNodePort("local", netip.MustParseAddr("10.96.0.61"), v6("61"), 30061, 5353, b1),
		udpNodePort("remote", netip.MustParseAddr("10.96.0.62"), v6("62"), 30062, 5353, b2),
		udpNodePort("closed-local", netip.MustParseAddr("10.96.0.63"), v6("63"), 30063, 5454, b1),
		udpNodePort("closed-remote", netip.MustParseAddr("10.96.0.64"), v6("64"), 30064, 5454, b2),
	}, "---\n")))
	require.NoError(t, e.c.SyncManifests())
	e.startAgent(n1)
	e.startAgent(n2)
	require.Eventually(t, func() bool { return e.status(n1).Services.Frontends >= 16 }, 10*time.Second, 50*time.Millisecond)
	ext, err := e.c.AddExternal(ctx(t), "ext1")
	require.NoError(t, err)

	cases := []struct {
		name              string
		open, closed      int
		backend           *harness.Pod
		translatedThrough string
	}{
		{"local backend", 30061, 30063, b1, "DNAT"},
		{"remote backend", 30062, 30064, b2, "DNAT+SNAT"},
	}
	families := []struct {
		name string
		node netip.Addr
	}{{"IPv4", n1.IP}, {"IPv6", n1.IP6}}
	for _, fam := range families {
		for _, tc := range cases {
			t.Run(fam.name+"/"+tc.name, func(t *testing.T) {
				// A datagram of 3000 bytes: three fragments each way.
				c, err := ext.Dial("udp", 0, fam.node, tc.open, 3*time.Second)
				require.NoError(t, err)
				defer c.Close()
				big := bytes.Repeat([]byte("fragmented-"), 300)[:3000]
				_ = c.SetDeadline(time.Now().Add(3 * time.Second))
				_, err = c.Write(big)
				require.NoError(t, err)
				buf := make([]byte, 4096)
				n, err := c.Read(buf)
				require.NoError(t, err, "a fragmented datagram through %s (%s) and its fragmented echo",
					netip.AddrPortFrom(fam.node, uint16(tc.open)), tc.translatedThrough)
				require.Equal(t, big, buf[:n])

				// Nothing listens on the backend's port: its port unreachable
				// reaches the client's socket as ECONNREFUSED, at once.
				u, err := ext.Dial("udp", 0, fam.node, tc.closed, 3*time.Second)
				require.NoError(t, err)
				defer u.Close()
				_ = u.SetDeadline(time.Now().Add(3 * time.Second))
				_, err = u.Write([]byte("anyone?"))
				require.NoError(t, err)
				_, err = u.Read(buf)
				require.Error(t, err)
				require.Contains(t, err.Error(), "connection refused", "port unreachable from %s, translated back", tc.backend)
			})
		}
	}

	// A link too small on the way: the backends' veths shrink to 1300
	// (IPv6 needs 1280 at least), so node1 (local) or node2 (remote) says
	// "fragmentation needed" / "packet too big" about a 1400-byte datagram
	// that may not be fragmented.
	require.NoError(t, b1.SetMTU(1300))
	require.NoError(t, b2.SetMTU(1300))
	for _, fam := range families {
		for _, tc := range cases {
			mtu, err := ext.PathMTU(fam.node, tc.open, 1400, 900*time.Millisecond)
			require.NoError(t, err)
			require.Equal(t, 1300, mtu, "%s %s: the client learns the path MTU through %s", fam.name, tc.name,
				netip.AddrPortFrom(fam.node, uint16(tc.open)))
		}
	}
}
