package e2e

// ICMP errors under network policy, with crafted packets in real
// namespaces: an error that belongs to no connection is new traffic and
// policy judges it, both ways; an error about an allowed connection (path
// MTU discovery) still passes.
//
//	node1 (routed)                        node2 (bridge)
//	  a (app=a, isolated both ways) ──UDP 5353 (allowed)──► b (MTU 1200)
//	  c ──forged "unreachable"──✗──► a       node2 ──frag needed──► a  related: passes
//	  a ──error smuggling bytes──✗──► c

import (
	"net/netip"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
)

const isolateA = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: isolate-a
  namespace: x
spec:
  podSelector:
    matchLabels:
      app: a
  policyTypes: [Ingress, Egress]
  egress:
  - to:
    - podSelector:
        matchLabels:
          app: b
    ports:
    - protocol: UDP
      port: 5353
`

func TestICMPErrorsUnderPolicy(t *testing.T) {
	e := newEnv(t)
	n1 := e.node("node1", harness.Routed)
	n2 := e.node("node2", harness.Bridge)
	a := e.pod(n1, "x", "a", map[string]string{"app": "a"})
	c := e.pod(n1, "x", "c", map[string]string{"app": "c"})
	b := e.pod(n2, "x", "b", map[string]string{"app": "b"})
	_, err := b.StartUDPEchoServer(5353)
	require.NoError(t, err)
	require.NoError(t, e.c.SyncManifests())
	e.startAgent(n1)
	e.startAgent(n2)

	inA, err := a.ListenICMP()
	require.NoError(t, err)
	t.Cleanup(func() { inA.Close() })
	inC, err := c.ListenICMP()
	require.NoError(t, err)
	t.Cleanup(func() { inC.Close() })
	// An error about a flow that never existed, with bytes after the quote.
	bogus := append(harness.InnerPacket(17, netip.AddrPortFrom(a.IP, 4444), netip.MustParseAddrPort("198.51.100.7:53")),
		[]byte("smuggled payload")...)
	bogusFromA := append(harness.InnerPacket(17, netip.AddrPortFrom(c.IP, 4444), netip.MustParseAddrPort("198.51.100.7:53")),
		[]byte("smuggled payload")...)
	forged := func() (into, outOf bool) {
		require.NoError(t, c.SendICMPError(a.IP, harness.ICMPDestUnreachable, harness.ICMPCodePortUnreach, bogus))
		_, into = inA.Next(harness.ICMPDestUnreachable, time.Second)
		require.NoError(t, a.SendICMPError(c.IP, harness.ICMPDestUnreachable, harness.ICMPCodePortUnreach, bogusFromA))
		_, outOf = inC.Next(harness.ICMPDestUnreachable, time.Second)
		return into, outOf
	}

	// Without policy the crafted errors arrive: the probe itself works.
	into, outOf := forged()
	require.True(t, into, "no policy: c's crafted error reaches a")
	require.True(t, outOf, "no policy: a's crafted error reaches c")

	require.NoError(t, e.c.WriteManifest("netpol.yaml", isolateA))
	require.Eventually(t, func() bool { return e.status(n1).Policy.EnforcedEndpoints == 1 }, 10*time.Second, 50*time.Millisecond)
	into, outOf = forged()
	require.False(t, into, "an error about no connection of a's is new traffic: a's ingress denies it")
	require.False(t, outOf, "an error about no connection of a's is new traffic: a's egress denies it")
	for _, from := range []netip.Addr{c.IP, a.IP} {
		e.waitFlow(n1, "ICMP error policy drop", func(f *flowpb.Flow) bool {
			return isDrop(f, "POLICY_DENIED") && f.GetIP().GetSource() == from.String() && f.GetL4().GetICMPv4() != nil
		})
	}

	// Path MTU discovery under the same policy: a's datagrams to b are too
	// big for b's link, node2 says so, and a learns the smaller MTU.
	require.NoError(t, b.SetMTU(1200))
	mtu, err := a.PathMTU(b.IP, 5353, 1400, 900*time.Millisecond)
	require.NoError(t, err)
	require.Equal(t, 1200, mtu, "fragmentation needed about a's allowed flow reaches a")
	reply, err := a.UDPRequest(ctx(t), b.IP, 5353, "whoami")
	require.NoError(t, err, "a's allowed flow works")
	require.Equal(t, "x/b", reply)
}
