package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// A connected UDP socket whose peer is a removed backend is destroyed in
// its own namespace; a socket connected elsewhere is left alone.
func TestDestroyUDPSockets(t *testing.T) {
	dp := loadTest(t, Config{})
	require.NoError(t, dp.CanDestroySockets(), "this kernel (6.18) has bpf_sock_destroy")
	v := newVethPair(t)
	var gone, kept *net.UDPConn
	var err error
	inNetns(t, v.pod, func() {
		gone, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(10, 1, 0, 9), Port: 5353})
		require.NoError(t, err)
		kept, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(10, 1, 0, 8), Port: 5353})
		require.NoError(t, err)
	})
	defer gone.Close()
	defer kept.Close()

	podNetns := fmt.Sprintf("/proc/self/fd/%d", int(v.pod))
	require.NoError(t, dp.DestroyUDPSockets([]netip.AddrPort{netip.MustParseAddrPort("10.1.0.9:5353")}, []string{podNetns}))

	// Destroyed: the socket is aborted and disconnected, so its owner's
	// next call fails (ECONNABORTED, or EDESTADDRREQ once disconnected)
	// and it reconnects, through socket LB, to a live backend.
	_, err = gone.Write([]byte("x"))
	require.True(t, errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EDESTADDRREQ), "destroyed socket: %v", err)
	_, err = kept.Write([]byte("x"))
	require.NoError(t, err, "a socket to another peer is untouched")

	cs, err := dp.Maps().Counters()
	require.NoError(t, err)
	var n uint64
	for _, c := range cs {
		if c.Metric == "sockets-destroyed" {
			n += c.Packets
		}
	}
	require.EqualValues(t, 1, n)
}
