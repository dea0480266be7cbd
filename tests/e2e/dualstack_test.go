package e2e

// Dual-stack pods under NetworkPolicy: the SAME policy isolates a pod in
// both families, across a routed and a bridge node, with the IPv6 drops,
// verdicts and revocations visible as IPv6 flows.
//
//	node1 (routed)                       node2 (bridge)
//	  ds/a (app=a)   ds/b (app=b) ◄─────── ds/c (app=c)
//	     └──────────► TCP 8080             other/d (app=a)
//	                                       ds/v6 (app=a, IPv6 only)
//
// Every client probes b at its address of each family it has: a, c and d
// are dual-stack, v6 has IPv6 only.

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
)

type dualStack struct {
	e       *env
	n1, n2  *harness.Node
	b       *harness.Pod
	clients []*harness.Pod // a, c, d, v6
}

func newDualStack(t *testing.T, args ...string) *dualStack {
	e := newEnv(t, args...)
	ds := &dualStack{e: e, n1: e.node("node1", harness.Routed), n2: e.node("node2", harness.Bridge)}
	add := func(n *harness.Node, fam harness.Family, ns, name, app string) *harness.Pod {
		p, err := n.AddPodFamily(ctx(t), fam, ns, name, map[string]string{"app": app})
		require.NoError(t, err)
		return p
	}
	ds.clients = append(ds.clients, add(ds.n1, harness.DualStack, "ds", "a", "a"))
	ds.b = add(ds.n1, harness.DualStack, "ds", "b", "b")
	ds.clients = append(ds.clients,
		add(ds.n2, harness.DualStack, "ds", "c", "c"),
		add(ds.n2, harness.DualStack, "other", "d", "a"),
		add(ds.n2, harness.IPv6Only, "ds", "v6", "a"))
	_, err := ds.b.StartTCPEchoServer(8080)
	require.NoError(t, err)
	require.NoError(t, e.c.SetNamespaceLabels("ds", map[string]string{"ns": "ds"}))
	require.NoError(t, e.c.SetNamespaceLabels("other", map[string]string{"ns": "other"}))
	require.NoError(t, e.c.SyncManifests())
	e.startAgent(ds.n1)
	e.startAgent(ds.n2)
	for _, ep := range e.endpoints(ds.n1) {
		if ep.Pod == "b" {
			require.Len(t, ep.IPs, 2, "a dual-stack endpoint carries both addresses: %+v", ep)
		}
	}
	return ds
}

// probe names one client's attempt in one family: "ds/a v6".
func probeName(p *harness.Pod, addr netip.Addr) string {
	if addr.Is4() {
		return p.String() + " v4"
	}
	return p.String() + " v6"
}

// reachable probes b from every client in each of its families, at once,
// and returns who got b's answer.
func (ds *dualStack) reachable() map[string]bool {
	var mu sync.Mutex
	var wg sync.WaitGroup
	got := map[string]bool{}
	for _, c := range ds.clients {
		for _, src := range c.IPs {
			dst := ds.b.IP
			if src.Is6() {
				dst = ds.b.IPv6()
			}
			wg.Go(func() {
				ok := false
				if conn, err := c.Dial("tcp", 0, dst, 8080, time.Second); err == nil {
					reply, err := harness.RoundTrip(conn, "whoami", time.Second)
					conn.Close()
					ok = err == nil && reply == ds.b.String()
				}
				mu.Lock()
				got[probeName(c, src)] = ok
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	return got
}

// expect waits until exactly the clients in allowed (by pod, both of its
// families) reach b.
func (ds *dualStack) expect(t *testing.T, what string, allowed ...string) {
	t.Helper()
	want := map[string]bool{}
	for _, c := range ds.clients {
		for _, src := range c.IPs {
			want[probeName(c, src)] = false
			for _, a := range allowed {
				if a == c.String() {
					want[probeName(c, src)] = true
				}
			}
		}
	}
	var got map[string]bool
	ok := assertEventually(func() bool {
		got = ds.reachable()
		return fmt.Sprint(got) == fmt.Sprint(want)
	}, 20*time.Second)
	require.True(t, ok, "%s: want %v, got %v", what, want, got)
}

// assertEventually polls cond until it holds or timeout passes.
func assertEventually(cond func() bool, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

func (ds *dualStack) apply(t *testing.T, yaml string) {
	t.Helper()
	if yaml == "" {
		require.NoError(t, ds.e.c.RemoveManifest("netpol.yaml"))
		return
	}
	require.NoError(t, ds.e.c.WriteManifest("netpol.yaml", yaml))
}

const dsPolicyHead = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: pol, namespace: ds}
spec:
`

func TestDualStackNetworkPolicy(t *testing.T) {
	ds := newDualStack(t)
	all := []string{"ds/a", "ds/c", "other/d", "ds/v6"}
	ds.expect(t, "no policy", all...)

	for _, step := range []struct {
		name    string
		policy  string
		allowed []string
	}{
		{"default deny ingress", `
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Ingress]`, nil},
		{"allow from a podSelector", `
  podSelector: {matchLabels: {app: b}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: a}}}]`, []string{"ds/a", "ds/v6"}},
		{"allow from a namespaceSelector", `
  podSelector: {matchLabels: {app: b}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: other}}}]`, []string{"other/d"}},
		// node2's pod ranges of both families, except c's addresses.
		{"ipBlock with except, both families", fmt.Sprintf(`
  podSelector: {matchLabels: {app: b}}
  ingress:
  - from:
    - ipBlock: {cidr: "%s", except: ["%s/32"]}
    - ipBlock: {cidr: "%s", except: ["%s/128"]}`, ds.n2.PodCIDR, ds.clients[1].IP, ds.n2.PodCIDR6, ds.clients[1].IPv6()),
			[]string{"other/d", "ds/v6"}},
		// Selects ds/a and ds/v6 (app=a in ds), not other/d.
		{"egress deny of app=a", `
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Egress]`, []string{"ds/c", "other/d"}},
	} {
		t.Run(step.name, func(t *testing.T) {
			ds.apply(t, dsPolicyHead+strings.TrimPrefix(step.policy, "\n")+"\n")
			ds.expect(t, step.name, step.allowed...)
		})
	}
	t.Run("denials are IPv6 flows", func(t *testing.T) {
		// The egress step's drops of a's IPv6 connections, at a's endpoint.
		f := ds.e.waitFlow(ds.n1, "an IPv6 egress policy drop", func(f *flowpb.Flow) bool {
			return isDrop(f, "POLICY_DENIED") && f.GetIP().GetIpVersion() == flowpb.IPVersion_IPv6 &&
				f.GetTrafficDirection().String() == "EGRESS" &&
				f.GetIP().GetSource() == ds.clients[0].IPv6().String() && f.GetIP().GetDestination() == ds.b.IPv6().String()
		})
		require.Equal(t, "ds/a", f.GetSource().GetNamespace()+"/"+f.GetSource().GetPodName(), "enriched: %v", f)
		// sluice observe --ip with an IPv6 address: b's IPv6 flows, not
		// its IPv4 ones.
		out := ds.e.cli(ds.n1, "observe", "--ip", ds.b.IPv6().String(), "--verdict", "DROPPED", "-o", "json")
		require.Contains(t, out, `"`+ds.b.IPv6().String()+`"`, "%s", out)
		require.NotContains(t, out, `"`+ds.b.IP.String()+`"`, "%s", out)
		require.Contains(t, out, "POLICY_DENIED")
		require.Contains(t, out, "IPv6")
	})
	ds.apply(t, "")
	ds.expect(t, "policy removed", all...)
}

// Established connections in both families that a new policy no longer
// allows are cut, with an RST to the client over IPv4 and over IPv6, and
// a POLICY_REVOKED flow.
func TestDualStackPolicyRevocation(t *testing.T) {
	ds := newDualStack(t)
	a := ds.clients[0]
	ds.apply(t, dsPolicyHead+`  podSelector: {matchLabels: {app: b}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: a}}}]
`)
	ds.expect(t, "a allowed", "ds/a", "ds/v6")
	rt := map[string]func() error{}
	for _, dst := range []netip.Addr{ds.b.IP, ds.b.IPv6()} {
		conn, err := a.Dial("tcp", 0, dst, 8080, time.Second)
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		rt[dst.String()] = func() error { _, err := harness.RoundTrip(conn, "whoami", time.Second); return err }
		require.NoError(t, rt[dst.String()](), "established over %s", dst)
	}
	// Readable in the CLI: the IPv6 connection in CT, b's IPv6 /128 in
	// the ipcache with the identity of its IPv4 /32.
	ct := ds.e.cli(ds.n1, "bpf", "ct", "list")
	require.Contains(t, ct, "["+a.IPv6().String()+"]:", "%s", ct)
	require.Contains(t, ct, "["+ds.b.IPv6().String()+"]:8080", "%s", ct)
	ipc := ds.e.cli(ds.n1, "bpf", "ipcache", "list")
	id4, id6 := "", ""
	for _, line := range strings.Split(ipc, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) < 2:
		case f[0] == ds.b.IP.String()+"/32":
			id4 = f[1]
		case f[0] == ds.b.IPv6().String()+"/128":
			id6 = f[1]
		}
	}
	require.NotEmpty(t, id6, "%s", ipc)
	require.Equal(t, id4, id6, "one identity for both of b's addresses:\n%s", ipc)
	ds.apply(t, dsPolicyHead+`  podSelector: {matchLabels: {app: b}}
  policyTypes: [Ingress]
`)
	ds.expect(t, "nobody allowed")
	for dst, f := range rt {
		require.ErrorIs(t, f(), syscall.ECONNRESET, "the connection to %s is reset", dst)
	}
	ds.e.waitFlow(ds.n1, "an IPv6 revocation", func(f *flowpb.Flow) bool {
		return isDrop(f, "POLICY_REVOKED") && f.GetIP().GetIpVersion() == flowpb.IPVersion_IPv6
	})
}
