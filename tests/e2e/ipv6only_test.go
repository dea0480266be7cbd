package e2e

// IPv6-only pods are endpoints like any pod (attached, with their
// identity), and a policy that isolates them denies their IPv6, into the
// pod and out of it, with a reason and an IPv6 flow; audit mode forwards
// it and reports it as audit.
//
//	node (routed or bridge)
//	  a6 (app=a, fd00:10:244:N::2) ──TCP 8080──► b6 (app=b, fd00:10:244:N::3)

import (
	"net"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
)

const (
	isolateBIngress = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: isolate-b, namespace: v6}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Ingress]
`
	isolateAEgress = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: isolate-a, namespace: v6}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Egress]
`
)

func TestIPv6OnlyPodsUnderPolicy(t *testing.T) {
	for _, mode := range []harness.Mode{harness.Routed, harness.Bridge} {
		t.Run(mode.String(), func(t *testing.T) {
			for _, audit := range []bool{false, true} {
				name := "enforced"
				var args []string
				if audit {
					name, args = "audit", []string{"--policy-audit"}
				}
				t.Run(name, func(t *testing.T) { testIPv6Only(t, mode, audit, args...) })
			}
		})
	}
}

func testIPv6Only(t *testing.T, mode harness.Mode, audit bool, args ...string) {
	e := newEnv(t, args...)
	n := e.node("node1", mode)
	a, err := n.AddPodFamily(ctx(t), harness.IPv6Only, "v6", "a6", map[string]string{"app": "a"})
	require.NoError(t, err)
	b, err := n.AddPodFamily(ctx(t), harness.IPv6Only, "v6", "b6", map[string]string{"app": "b"})
	require.NoError(t, err)
	require.True(t, b.IP.Is6())
	_, err = b.StartTCPEchoServer(8080)
	require.NoError(t, err)
	require.NoError(t, e.c.SyncManifests())
	e.startAgent(n) // waits until both are ready endpoints
	for _, ep := range e.endpoints(n) {
		require.Equal(t, "ready", ep.State)
		require.Len(t, ep.IPs, 1)
		require.True(t, net.ParseIP(ep.IPs[0]).To4() == nil, "an IPv6-only endpoint: %v", ep.IPs)
	}

	reach := func() error {
		c, err := a.Dial("tcp", 0, b.IP, 8080, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = harness.RoundTrip(c, "whoami", time.Second)
		return err
	}
	require.NoError(t, reach(), "no policy: IPv6 passes")

	for _, pol := range []struct{ name, yaml, dir string }{
		{"b's ingress", isolateBIngress, "INGRESS"},
		{"a's egress", isolateAEgress, "EGRESS"},
	} {
		require.NoError(t, e.c.WriteManifest("netpol.yaml", pol.yaml))
		require.Eventually(t, func() bool { return e.status(n).Policy.EnforcedEndpoints == 1 }, 10*time.Second, 50*time.Millisecond)
		if !audit {
			require.Eventually(t, func() bool { return reach() != nil }, 10*time.Second, 50*time.Millisecond,
				"%s under policy: IPv6 is denied", pol.name)
			e.waitFlow(n, "IPv6 policy drop", func(f *flowpb.Flow) bool {
				return isDrop(f, "POLICY_DENIED") && f.GetTrafficDirection().String() == pol.dir &&
					f.GetIP().GetIpVersion() == flowpb.IPVersion_IPv6
			})
		} else {
			require.NoError(t, reach(), "%s in audit mode: IPv6 is forwarded", pol.name)
			e.waitFlow(n, "IPv6 audit verdict", func(f *flowpb.Flow) bool {
				return f.GetVerdict() == flowpb.Verdict_AUDIT && f.GetTrafficDirection().String() == pol.dir &&
					f.GetIP().GetIpVersion() == flowpb.IPVersion_IPv6
			})
		}
		require.NoError(t, e.c.RemoveManifest("netpol.yaml"))
		require.Eventually(t, func() bool { return e.status(n).Policy.EnforcedEndpoints == 0 }, 10*time.Second, 50*time.Millisecond)
	}
}
