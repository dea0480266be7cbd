package e2e

// Dual-stack Services: one Service with a cluster IP of each family and an
// EndpointSlice of each addressType serves both families from the same
// pods, across a routed and a bridge node.
//
//	node1 (routed)                  node2 (bridge)
//	  default/client ──► VIP4/VIP6 ──► default/b2
//	  default/b1 ◄──────┘
//
// Both modes serve both families: socket LB translates IPv6 frontends at
// connect() (and IPv4 ones that a dual-stack IPv6 socket reaches at their
// v4-mapped address), the per-packet path translates IPv6 packets at the
// pod's interface as it does IPv4 ones.

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/flow"
)

var vip6 = netip.MustParseAddr("fd00:96::a")

// dualServiceYAML is a dual-stack Service (RequireDualStack, IPv4 first)
// and its two EndpointSlices, one per family, as the API server and the
// EndpointSlice controller hold them.
func dualServiceYAML(ns, name string, vip4, vip6 netip.Addr, ports []svcPort, pods ...*harness.Pod) string {
	return dualServiceSpecYAML(ns, name, vip4, vip6, ports, "", pods...)
}

// dualServiceSpecYAML is dualServiceYAML with more lines of spec (a type,
// externalTrafficPolicy, ...); a port's nodePort is its port + 30000.
func dualServiceSpecYAML(ns, name string, vip4, vip6 netip.Addr, ports []svcPort, spec string, pods ...*harness.Pod) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  clusterIP: %s\n  clusterIPs: [%s, %s]\n  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: RequireDualStack\n  ports:\n",
		name, ns, vip4, vip4, vip6)
	for _, p := range ports {
		fmt.Fprintf(&b, "  - name: %s\n    port: %d\n    targetPort: %d\n    protocol: %s\n", p.name, p.port, p.backend, p.proto)
		if spec != "" {
			fmt.Fprintf(&b, "    nodePort: %d\n", 30000+p.port)
		}
	}
	b.WriteString(spec)
	for _, fam := range []string{"IPv4", "IPv6"} {
		writeSlice(&b, ns, name, name+"-"+strings.ToLower(fam), fam, ports, ready(pods...))
	}
	return b.String()
}

func TestServiceDualStack(t *testing.T) {
	for _, m := range socketLBModes {
		t.Run(m.name, func(t *testing.T) {
			e := newEnv(t, m.args...)
			n1 := e.node("node1", harness.Routed)
			n2 := e.node("node2", harness.Bridge)
			client := e.dualPod(n1, "default", "client", nil)
			b1 := e.dualPod(n1, "default", "b1", map[string]string{"app": "web"})
			b2 := e.dualPod(n2, "default", "b2", map[string]string{"app": "web"})
			serveWeb(t, b1, b2)
			require.NoError(t, e.c.WriteManifest("svc-web.yaml", dualServiceYAML("default", "web", vip, vip6, webPorts, b1, b2)))
			// A dual-stack service without endpoints.
			empty4, empty6 := netip.MustParseAddr("10.96.0.20"), netip.MustParseAddr("fd00:96::14")
			require.NoError(t, e.c.WriteManifest("svc-empty.yaml", dualServiceYAML("default", "empty", empty4, empty6, webPorts[:1])))
			// Each backend's own service, for hairpin (routed and bridge).
			self6 := func(i int) netip.Addr { return netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x96, 15: byte(0x30 + i)}) }
			for i, b := range []*harness.Pod{b1, b2} {
				require.NoError(t, e.c.WriteManifest(fmt.Sprintf("svc-self-%d.yaml", i),
					dualServiceYAML("default", "self-"+b.Name, netip.AddrFrom4([4]byte{10, 96, 1, byte(10 + i)}), self6(i), webPorts[:1], b)))
			}
			require.NoError(t, e.c.SyncManifests())
			e.startAgent(n1)
			e.startAgent(n2)
			// web: two ports in two families; empty and self-*: one port in two.
			e.waitServices(10)

			// IPv4 is served in either mode, also to an IPv6 socket at
			// the VIP's v4-mapped address (the kernel sends IPv4).
			reply, peer, err := client.PeerRequestMapped(ctx(t), "tcp", vip, 80, "whoami")
			require.NoError(t, err, "TCP to ::ffff:%s from a dual-stack IPv6 socket", vip)
			require.Contains(t, []string{b1.String(), b2.String()}, reply)
			require.Equal(t, netip.AddrPortFrom(netip.AddrFrom16(vip.As16()), 80), peer, "getpeername shows the v4-mapped VIP")
			reply, from, err := client.PeerRequestMapped(ctx(t), "udp", vip, 53, "whoami")
			require.NoError(t, err, "UDP to ::ffff:%s from a dual-stack IPv6 socket", vip)
			require.Contains(t, []string{b1.String(), b2.String()}, reply)
			require.Equal(t, netip.AddrPortFrom(netip.AddrFrom16(vip.As16()), 53), from, "recvfrom shows the v4-mapped VIP")

			// Both backends serve IPv6 connections and datagrams.
			seen := map[string]int{}
			for range 30 {
				who, err := client.TCPRequest(ctx(t), vip6, 80, "whoami")
				require.NoError(t, err, "TCP to [%s]:80", vip6)
				seen[who]++
			}
			require.Len(t, seen, 2, "IPv6 connections spread over both backends: %v", seen)
			udpSeen := map[string]bool{}
			for range 20 {
				who, err := client.UDPRequest(ctx(t), vip6, 53, "whoami")
				require.NoError(t, err, "UDP to [%s]:53", vip6)
				udpSeen[who] = true
			}
			require.Len(t, udpSeen, 2)

			// The application only ever sees the IPv6 VIP.
			_, peer, err = client.PeerRequest(ctx(t), "tcp", vip6, 80, "whoami")
			require.NoError(t, err)
			require.Equal(t, netip.AddrPortFrom(vip6, 80), peer, "getpeername")
			_, from, err = client.PeerRequest(ctx(t), "udp", vip6, 53, "whoami")
			require.NoError(t, err)
			require.Equal(t, netip.AddrPortFrom(vip6, 53), from, "recvfrom source")

			// No endpoints: refused at once, as for IPv4: an ICMPv6 port
			// unreachable on the per-packet path, the connect() error
			// in socket LB (EPERM on kernels without bpf_set_retval,
			// before 5.18).
			refused := "connection refused"
			if m.name == "socket-lb" && !e.status(n1).Kernel.SetRetval {
				refused = "operation not permitted"
			}
			_, err = client.TCPRequest(ctx(t), empty6, 80, "whoami")
			require.ErrorContains(t, err, refused, "an IPv6 service without endpoints")
			_, _, err = client.PeerRequestMapped(ctx(t), "tcp", empty4, 80, "whoami")
			require.ErrorContains(t, err, refused, "a v4-mapped service without endpoints")

			// Hairpin over IPv6: each backend lands on itself through
			// its own service (from the IPv6 service loopback on the
			// per-packet path).
			for i, b := range []*harness.Pod{b1, b2} {
				who, err := b.TCPRequest(ctx(t), self6(i), 80, "whoami")
				require.NoError(t, err, "%s (%s node) to its own IPv6 service", b, b.Node.Mode)
				require.Equal(t, b.String(), who)
			}

			// The translation flow is IPv6: the frontend addressed, the
			// IPv6 backend chosen, the service and the client pod.
			f := e.waitFlow(n1, "IPv6 translation", func(f *flowpb.Flow) bool {
				od, ok := flow.OriginalDestination(f)
				return ok && od == netip.AddrPortFrom(vip6, 80)
			})
			_, dst := flowEnds(f)
			require.Contains(t, []string{b1.IPv6().String(), b2.IPv6().String()}, dst.Addr().String())
			require.Equal(t, uint16(8080), dst.Port())
			require.Equal(t, "web", f.GetDestinationService().GetName(), "the flow names the service")
			require.Equal(t, "client", f.GetSource().GetPodName(), "and the client pod")
			require.Equal(t, flowpb.IPVersion_IPv6, f.GetIP().GetIpVersion())
		})
	}
}

// Service frontends reached from outside the node over either family:
// the uplink programs translate IPv6 NodePorts and LoadBalancer IPs as
// IPv4 ones, with the same test.
//
//	ext1 ──► node1 [NodePort 30080, Cluster] ──► b1 (local) / b2 via SNAT to node1
//	ext1 ──► node2 [NodePort 30081, Local]   ──► b2, which sees ext1's address
//	ext1 ──► LB IP via node2 (a route on ext1) ──► b2
func TestServiceFromOutsideBothFamilies(t *testing.T) {
	e := newEnv(t)
	n1 := e.node("node1", harness.Routed)
	n2 := e.node("node2", harness.Bridge)
	web := map[string]string{"app": "web"}
	b1, b2 := e.dualPod(n1, "default", "b1", web), e.dualPod(n2, "default", "b2", web)
	serveWeb(t, b1, b2)
	ext, err := e.c.AddExternal(ctx(t), "ext1")
	require.NoError(t, err)
	lb4, lb6 := netip.MustParseAddr("10.96.200.50"), netip.MustParseAddr("fd00:96:200::50")
	port80 := webPorts[:1]
	require.NoError(t, e.c.WriteManifest("svc-cluster.yaml", dualServiceSpecYAML("default", "np-cluster", vip, vip6, port80,
		"  type: NodePort\n  externalTrafficPolicy: Cluster\n", b1, b2)))
	local := port80[0]
	local.port = 81
	require.NoError(t, e.c.WriteManifest("svc-local.yaml", dualServiceSpecYAML("default", "np-local",
		netip.MustParseAddr("10.96.0.11"), netip.MustParseAddr("fd00:96::b"), []svcPort{local},
		fmt.Sprintf("  type: LoadBalancer\n  externalTrafficPolicy: Local\nstatus:\n  loadBalancer:\n    ingress:\n    - ip: %s\n    - ip: %s\n", lb4, lb6), b1, b2)))
	empty := port80[0]
	empty.port = 82
	require.NoError(t, e.c.WriteManifest("svc-empty.yaml", dualServiceSpecYAML("default", "np-empty",
		netip.MustParseAddr("10.96.0.12"), netip.MustParseAddr("fd00:96::c"), []svcPort{empty}, "  type: NodePort\n")))
	require.NoError(t, e.c.SyncManifests())
	e.startAgent(n1)
	e.startAgent(n2)
	// Per service and family: the cluster IP, the NodePort on both nodes'
	// addresses of the family (and the LB IP for np-local).
	e.waitServices(20)

	for _, fam := range []struct {
		name             string
		node1, node2, lb netip.Addr
		client           netip.Addr
	}{
		{"IPv4", n1.IP, n2.IP, lb4, ext.IP},
		{"IPv6", n1.IP6, n2.IP6, lb6, ext.IP6},
	} {
		t.Run(fam.name, func(t *testing.T) {
			// Cluster: both backends serve through node1, b2 via SNAT
			// to node1's address of the family.
			seen := map[string]bool{}
			for range 30 {
				who, err := ext.TCPRequest(ctx(t), fam.node1, 30080, "whoami")
				require.NoError(t, err, "external client to %s", netip.AddrPortFrom(fam.node1, 30080))
				seen[who] = true
			}
			require.Len(t, seen, 2, "local and remote backends both reached: %v", seen)
			for range 5 {
				peer, err := ext.TCPRequest(ctx(t), fam.node1, 30080, "whoiscalling")
				require.NoError(t, err)
				require.Contains(t, []netip.Addr{fam.node1, fam.client}, whoIsCalling(t, peer),
					"b1 sees the client, b2 (remote, SNAT) sees node1")
			}

			// Local, at node2's NodePort and at the LoadBalancer IP routed
			// to node2: only b2, which sees the client's own address.
			_, err := ext.Exec(ctx(t), "ip", "route", "replace", netip.PrefixFrom(fam.lb, fam.lb.BitLen()).String(), "via", fam.node2.String())
			require.NoError(t, err)
			for _, dst := range []netip.AddrPort{netip.AddrPortFrom(fam.node2, 30081), netip.AddrPortFrom(fam.lb, 81)} {
				peer, err := ext.TCPRequest(ctx(t), dst.Addr(), int(dst.Port()), "whoiscalling")
				require.NoError(t, err, "to %s", dst)
				require.Equal(t, fam.client, whoIsCalling(t, peer), "externalTrafficPolicy Local keeps the client address (%s)", dst)
				who, err := ext.TCPRequest(ctx(t), dst.Addr(), int(dst.Port()), "whoami")
				require.NoError(t, err)
				require.Equal(t, "default/b2", who)
			}

			// No endpoints: refused at once (ICMP / ICMPv6 port unreachable).
			_, err = ext.TCPRequest(ctx(t), fam.node1, 30082, "whoami")
			require.ErrorContains(t, err, "connection refused")
		})
	}
}
