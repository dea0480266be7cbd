package datapath

// Handing connections to the node's L7 proxy, with real sockets: the
// programs on a veth, a transparent test proxy in the node's namespace,
// and the policy routing the agent installs.
//
//	 pod netns                     test netns ("node")
//	 p0 10.1.0.2 ====== veth ====== h0 10.1.0.1
//	                                 sl_from_ep: 10.2.0.5:80 is a pod of this node (endpoint 9)
//	                                   whose ingress policy redirects TCP 80 to proxy :15001
//	                                 → sk_assign → test proxy (IP_TRANSPARENT on 127.0.0.1:15001)
//	                                   sees the client 10.1.0.2 and the original destination

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
)

// transparentProxy is a test proxy: it answers each connection with the
// addresses it saw and closes it.
func transparentProxy(t *testing.T, addr string) net.Listener {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp4", addr)
	require.NoError(t, err)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "proxied client=%s original=%s\n", c.RemoteAddr(), c.LocalAddr())
			c.Close()
		}
	}()
	return ln
}

func TestProxyRedirect(t *testing.T) {
	root := testRoot(t)
	v := newVethPair(t)
	server := netip.MustParseAddr("10.2.0.5")
	inNetns(t, v.pod, func() {
		p0, err := netlink.LinkByName("p0")
		require.NoError(t, err)
		require.NoError(t, netlink.RouteAdd(&netlink.Route{LinkIndex: p0.Attrs().Index, Dst: mustNet("10.2.0.0/16"), Gw: net.IPv4(10, 1, 0, 1)}))
	})

	var dp *Datapath
	inNetns(t, v.host, func() {
		lo, err := netlink.LinkByName("lo")
		require.NoError(t, err)
		require.NoError(t, netlink.LinkSetUp(lo))
		require.NoError(t, EnsureProxyRouting())
		require.NoError(t, EnsureProxyRouting(), "idempotent")

		dp, err = Load(Config{BPFRoot: root}, nil)
		require.NoError(t, err)
		m := dp.Maps()
		require.NoError(t, m.PutEndpoint(EndpointEntry{IfIndex: uint32(v.ifindex), ID: 7, IPv4: netip.MustParseAddr("10.1.0.2"), Identity: 1000}))
		_, _, err = m.SyncIPCache(map[netip.Prefix]IPCacheEntry{
			netip.MustParsePrefix("10.1.0.2/32"): {Identity: 1000, EndpointID: 7},
			netip.PrefixFrom(server, 32):         {Identity: 2000, EndpointID: 9},
		})
		require.NoError(t, err)
		require.NoError(t, m.WriteEndpointPolicy(9, EndpointPolicy{Entries: []PolicyEntry{
			{Identity: 1000, Dir: dirIn, Proto: tcp, Port: 80, PortPrefixLen: 16, Verdict: VerdictRedirect, ProxyPort: 15001, Rule: 61},
		}}))
		require.NoError(t, m.SetProxyRedirects(1))
		mode := AttachTC
		if HaveTCX(dp) {
			mode = AttachTCX
		}
		a, err := NewAttacher(dp, mode, 0)
		require.NoError(t, err)
		require.NoError(t, a.Attach(v.ifindex))
	})
	t.Cleanup(func() { dp.Close() })

	dial := func() (string, error) {
		var conn net.Conn
		var err error
		inNetns(t, v.pod, func() {
			conn, err = net.DialTimeout("tcp4", netip.AddrPortFrom(server, 80).String(), 2*time.Second)
		})
		if err != nil {
			return "", err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		return bufio.NewReader(conn).ReadString('\n')
	}

	// No proxy listens yet: refused at once, never passed on.
	start := time.Now()
	_, err := dial()
	require.Error(t, err)
	require.Contains(t, err.Error(), "connection refused")
	require.Less(t, time.Since(start), time.Second, "refused, not timed out")

	var ln net.Listener
	inNetns(t, v.host, func() { ln = transparentProxy(t, "127.0.0.1:15001") })
	defer ln.Close()
	for i := range 3 {
		reply, err := dial()
		require.NoError(t, err, "connection %d through the proxy", i)
		require.True(t, strings.HasPrefix(reply, "proxied client=10.1.0.2:"), reply)
		require.Contains(t, reply, "original=10.2.0.5:80", "the proxy sees the original destination")
	}
	cs, err := dp.Maps().Counters()
	require.NoError(t, err)
	var redirected uint64
	for _, c := range cs {
		if c.Metric == "policy-redirect" {
			redirected += c.Packets
		}
	}
	require.Equal(t, uint64(3), redirected)

	// The proxy goes away (a restart): new connections fail closed.
	require.NoError(t, ln.Close())
	_, err = dial()
	require.Error(t, err)
	require.Contains(t, err.Error(), "connection refused")
}

// The proxy's own connection to a destination whose ingress policy
// redirects: admitted by its socket mark; the node's other connections to
// that port fail closed (they were not handed to the proxy).
//
//	node ──(SO_MARK FROM_PROXY)──► pod 10.1.0.2:80   admitted
//	node ──(no mark)──────────────► pod 10.1.0.2:80   PROXY_UNAVAILABLE
func TestProxyUpstreamIsAdmitted(t *testing.T) {
	root := testRoot(t)
	v := newVethPair(t)
	var dp *Datapath
	inNetns(t, v.host, func() {
		var err error
		dp, err = Load(Config{BPFRoot: root}, nil)
		require.NoError(t, err)
		m := dp.Maps()
		require.NoError(t, m.PutEndpoint(EndpointEntry{IfIndex: uint32(v.ifindex), ID: 7, IPv4: netip.MustParseAddr("10.1.0.2"),
			Identity: 1000, PolicyFlags: EPFlagPolicyIngress}))
		require.NoError(t, m.WriteEndpointPolicy(7, EndpointPolicy{Entries: []PolicyEntry{
			{Identity: 0, Dir: dirIn, Proto: tcp, Port: 80, PortPrefixLen: 16, Verdict: VerdictRedirect, ProxyPort: 15001, Rule: 62},
		}}))
		mode := AttachTC
		if HaveTCX(dp) {
			mode = AttachTCX
		}
		a, err := NewAttacher(dp, mode, 0)
		require.NoError(t, err)
		require.NoError(t, a.Attach(v.ifindex))
	})
	t.Cleanup(func() { dp.Close() })
	var srv net.Listener
	inNetns(t, v.pod, func() {
		var err error
		srv, err = net.Listen("tcp4", "10.1.0.2:80")
		require.NoError(t, err)
	})
	defer srv.Close()
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, "server")
			c.Close()
		}
	}()
	dial := func(mark int) error {
		d := net.Dialer{Timeout: time.Second, Control: func(network, address string, c syscall.RawConn) error {
			if mark == 0 {
				return nil
			}
			var serr error
			err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark) })
			if err != nil {
				return err
			}
			return serr
		}}
		var conn net.Conn
		var err error
		inNetns(t, v.host, func() { conn, err = d.Dial("tcp4", "10.1.0.2:80") })
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(time.Second))
		_, err = bufio.NewReader(conn).ReadString('\n')
		return err
	}
	require.NoError(t, dial(int(MarkFromProxy)), "the proxy's upstream connection is admitted")
	require.Error(t, dial(0), "a connection that was not handed to the proxy fails closed")
	cs, err := dp.Maps().Counters()
	require.NoError(t, err)
	var unavailable uint64
	for _, c := range cs {
		if c.Reason == "PROXY_UNAVAILABLE" {
			unavailable += c.Packets
		}
	}
	require.NotZero(t, unavailable)
}

// A client elsewhere: its connection is handed to the proxy at the uplink,
// where it enters the node; the proxy's replies keep it established.
//
//	ext 10.3.0.2 ── u0 ──► node (uplink programs on u0) ··· pod 10.1.0.2:80 (ingress: redirect to :15001)
//	                        sl_from_netdev → sk_assign → proxy (sees 10.3.0.2 → 10.1.0.2:80)
func TestProxyRedirectAtTheUplink(t *testing.T) {
	root := testRoot(t)
	v := newVethPair(t) // the pod behind h0 (not attached: the connection never reaches it)
	ext := newNetns(t)
	var uplink int
	inNetns(t, v.host, func() {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "u0"}, PeerName: "e0", PeerNamespace: netlink.NsFd(ext)}
		require.NoError(t, netlink.LinkAdd(veth))
		u0, err := netlink.LinkByName("u0")
		require.NoError(t, err)
		require.NoError(t, netlink.AddrAdd(u0, &netlink.Addr{IPNet: mustNet("10.3.0.1/24")}))
		require.NoError(t, netlink.LinkSetUp(u0))
		uplink = u0.Attrs().Index
		lo, err := netlink.LinkByName("lo")
		require.NoError(t, err)
		require.NoError(t, netlink.LinkSetUp(lo))
		require.NoError(t, os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644))
		require.NoError(t, EnsureProxyRouting())
	})
	inNetns(t, ext, func() {
		e0, err := netlink.LinkByName("e0")
		require.NoError(t, err)
		require.NoError(t, netlink.AddrAdd(e0, &netlink.Addr{IPNet: mustNet("10.3.0.2/24")}))
		require.NoError(t, netlink.LinkSetUp(e0))
		require.NoError(t, netlink.RouteAdd(&netlink.Route{LinkIndex: e0.Attrs().Index, Dst: mustNet("10.1.0.0/24"), Gw: net.IPv4(10, 3, 0, 1)}))
	})
	var dp *Datapath
	inNetns(t, v.host, func() {
		var err error
		dp, err = Load(Config{BPFRoot: root}, nil)
		require.NoError(t, err)
		m := dp.Maps()
		_, _, err = m.SyncIPCache(map[netip.Prefix]IPCacheEntry{netip.MustParsePrefix("10.1.0.2/32"): {Identity: 1000, EndpointID: 7}})
		require.NoError(t, err)
		require.NoError(t, m.WriteEndpointPolicy(7, EndpointPolicy{Entries: []PolicyEntry{
			{Identity: 0, Dir: dirIn, Proto: tcp, Port: 80, PortPrefixLen: 16, Verdict: VerdictRedirect, ProxyPort: 15001, Rule: 63},
		}}))
		require.NoError(t, m.SetProxyRedirects(1))
		mode := AttachTC
		if HaveTCX(dp) {
			mode = AttachTCX
		}
		a, err := NewAttacher(dp, mode, 0)
		require.NoError(t, err)
		require.NoError(t, a.AttachUplink(uplink))
	})
	t.Cleanup(func() { dp.Close() })
	var ln net.Listener
	inNetns(t, v.host, func() { ln = transparentProxy(t, "127.0.0.1:15001") })
	defer ln.Close()

	for i := range 3 {
		var conn net.Conn
		var err error
		inNetns(t, ext, func() { conn, err = net.DialTimeout("tcp4", "10.1.0.2:80", 2*time.Second) })
		require.NoError(t, err, "connection %d", i)
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		reply, err := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(reply, "proxied client=10.3.0.2:"), reply)
		require.Contains(t, reply, "original=10.1.0.2:80")
	}
	// Through a NodePort whose backend is that pod: translated first,
	// then handed over; the proxy's replies are translated back.
	putService(t, dp, 5, netip.MustParseAddrPort("10.3.0.1:30080"), tcp, LBFlagExternal, netip.MustParseAddrPort("10.1.0.2:80"))
	var be bpfobj.EndpointSlLbBackend
	require.NoError(t, dp.objs.SlLbBackends.Lookup(uint32(9), &be))
	be.Flags = uint8(bpfobj.EndpointSlLbBackendFlagSL_LB_BACKEND_F_LOCAL)
	require.NoError(t, dp.objs.SlLbBackends.Put(uint32(9), &be))
	for i := range 2 {
		var conn net.Conn
		var err error
		inNetns(t, ext, func() { conn, err = net.DialTimeout("tcp4", "10.3.0.1:30080", 2*time.Second) })
		require.NoError(t, err, "NodePort connection %d", i)
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		reply, err := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(reply, "proxied client=10.3.0.2:"), reply)
		require.Contains(t, reply, "original=10.1.0.2:80", "the proxy sees the backend")
	}

	ct, err := dp.Maps().ListCT()
	require.NoError(t, err)
	require.NotEmpty(t, ct, "the uplink tracks the connections it handed over")
	for _, e := range ct {
		require.NotEqual(t, "syn-sent", e.State, "the proxy's replies were tracked: %+v", e)
	}
}

// newNetns is a fresh network namespace, closed at the end of the test.
func newNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	require.NoError(t, err)
	defer func() { require.NoError(t, netns.Set(orig)); orig.Close() }()
	ns, err := netns.New()
	require.NoError(t, err)
	t.Cleanup(func() { ns.Close() })
	return ns
}
