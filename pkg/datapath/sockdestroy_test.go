package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"

	"github.com/sluice-net/sluice/pkg/datapath/sockdestroy"
)

// A connected UDP socket whose peer is a removed backend is destroyed in
// its own namespace; a socket connected elsewhere is left alone. Both
// methods behave the same; sock_diag, the fallback of kernels before 6.5,
// is forced on this one. Each method skips, naming
// its kernel feature, on a kernel that lacks it.
//
//	pod netns (p0 10.1.0.2, lo)
//	  gone ──connect──▶ 10.1.0.9:5353  removed backend: destroyed
//	  kept ──connect──▶ 10.1.0.8:5353  live backend: untouched
//	  (sock-diag also: [::1]:5353 destroyed, [::1]:5354 untouched)
func TestDestroyUDPSockets(t *testing.T) {
	for _, tc := range []struct {
		method string
		cfg    Config
		// ipv6: sock_diag also destroys AF_INET6 sockets (the iterator
		// reads IPv4 sockets only).
		ipv6 bool
	}{
		{method: sockdestroy.Iterator, cfg: Config{}},
		{method: sockdestroy.SockDiag, cfg: Config{ForceSockDiag: true}, ipv6: true},
	} {
		t.Run(tc.method, func(t *testing.T) {
			dp := loadTest(t, tc.cfg)
			if tc.method == sockdestroy.Iterator {
				requireFeature(t, FeatureBPFSockDestroy, dp.CanDestroySockets() == nil)
			} else {
				requireFeature(t, FeatureSockDiagDestroy, sockdestroy.ProbeSockDiag() == nil)
			}
			method, err := dp.SocketDestroyer().Method()
			require.NoError(t, err)
			require.Equal(t, tc.method, method)

			v := newVethPair(t)
			type conn struct {
				c    *net.UDPConn
				gone bool
			}
			var conns []conn
			dial := func(to string, gone bool) {
				c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(to)))
				require.NoError(t, err)
				t.Cleanup(func() { c.Close() })
				conns = append(conns, conn{c, gone})
			}
			removed := []netip.AddrPort{netip.MustParseAddrPort("10.1.0.9:5353")}
			inNetns(t, v.pod, func() {
				dial("10.1.0.9:5353", true)
				dial("10.1.0.8:5353", false)
				if tc.ipv6 {
					lo, err := netlink.LinkByName("lo")
					require.NoError(t, err)
					require.NoError(t, netlink.LinkSetUp(lo))
					dial("[::1]:5353", true)
					dial("[::1]:5354", false)
					removed = append(removed, netip.MustParseAddrPort("[::1]:5353"))
				}
			})

			podNetns := fmt.Sprintf("/proc/self/fd/%d", int(v.pod))
			require.NoError(t, dp.SocketDestroyer().DestroyUDP(removed, []string{goneNetns(t), podNetns}),
				"a namespace that vanished since it was listed is skipped")

			// Destroyed: the socket is aborted and disconnected, so its owner's
			// next call fails (ECONNABORTED, or EDESTADDRREQ once disconnected)
			// and it reconnects, through socket LB, to a live backend.
			var want uint64
			for _, c := range conns {
				_, err := c.c.Write([]byte("x"))
				if c.gone {
					want++
					require.True(t, errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EDESTADDRREQ),
						"destroyed socket to %s: %v", c.c.RemoteAddr(), err)
				} else {
					require.NoError(t, err, "a socket to another peer (%s) is untouched", c.c.RemoteAddr())
				}
			}

			cs, err := dp.Maps().Counters()
			require.NoError(t, err)
			var n uint64
			for _, c := range cs {
				if c.Metric == "sockets-destroyed" {
					n += c.Packets
				}
			}
			require.Equal(t, want, n, "sockets-destroyed counts each destroyed socket")
		})
	}
}

// goneNetns is the namespace path of a process that has exited: what
// DestroyUDP sees when a pod goes away while it runs.
func goneNetns(t *testing.T) string {
	cmd := exec.Command("true")
	require.NoError(t, cmd.Run())
	return fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
}
