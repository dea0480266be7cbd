package e2e

// L7 policy through the node's proxy, with the test proxy
// (internal/testing/l7proxy) standing in for Envoy: a SluiceL7Policy from
// the manifest directory makes the kernel hand web's port 8080 to the
// proxy on web's node, with the client's address and the original
// destination intact, from the same node, from another node and through a
// Service VIP; the proxy's own connection to web is not handed over again;
// without a proxy the port fails closed; NetworkPolicy still decides
// first; and a removed L7 policy or NetworkPolicy allow cuts what it no
// longer allows.
//
// With SLUICE_ENVOY naming an envoy binary (make test-envoy) the same
// tests run with a real Envoy on node1 instead, started as the DaemonSet
// starts it, and web serving HTTP (see l7proxies_test.go).
//
//	node1 (routed)                                      node2 (bridge)
//	  a (app=frontend) ──┐                                b (app=frontend)
//	  o (app=other) ─────┤                                  │ (underlay)
//	                     ▼                                  ▼
//	        sl_from_ep ──► proxy 127.0.0.1:1500x ◄── sl_from_netdev (eth0)
//	                          │ SO_MARK FROM_PROXY
//	                          ▼
//	                   web (app=web) :8080 (echo)      VIP 10.96.0.10:80 ──► web:8080

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/internal/testing/l7proxy"
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/policy"
)

// l7PolicyYAML allows GET under /api/ on web's port 8080, to every peer
// NetworkPolicy admits.
const l7PolicyYAML = `apiVersion: sluice.io/v1alpha1
kind: SluiceL7Policy
metadata: {name: api, namespace: x}
spec:
  podSelector:
    matchLabels: {app: web}
  ports:
  - port: 8080
    rules:
      http:
      - method: GET
        pathPrefix: /api/
`

// l7Cluster is web on node1 behind a service, clients a and o beside it
// and b on node2, every agent running and the L7 policy in force.
type l7Cluster struct {
	*env
	n1, n2  *harness.Node
	web     *harness.Pod
	a, o, b *harness.Pod
	// envoy is the envoy binary that stands for node1's proxy, "" for
	// the test proxy.
	envoy string
}

func newL7Cluster(t *testing.T) *l7Cluster { return newL7ClusterWith(t, nil) }

// newL7ClusterWith is newL7Cluster with more set up by more (pods,
// manifests) before the agents start.
func newL7ClusterWith(t *testing.T, more func(c *l7Cluster)) *l7Cluster {
	// A wrong SLUICE_ENVOY fails here, before anything else, rather than
	// testing the test proxy once more.
	envoy, err := harness.EnvoyBinary()
	require.NoError(t, err)
	e := newEnv(t)
	c := &l7Cluster{env: e, n1: e.node("node1", harness.Routed), n2: e.node("node2", harness.Bridge), envoy: envoy}
	c.web = e.pod(c.n1, "x", "web", map[string]string{"app": "web"})
	c.a = e.pod(c.n1, "x", "a", map[string]string{"app": "frontend"})
	c.o = e.pod(c.n1, "x", "o", map[string]string{"app": "other"})
	c.b = e.pod(c.n2, "x", "b", map[string]string{"app": "frontend"})
	if envoy != "" {
		// Envoy relays HTTP, not the echo's bare lines.
		_, err = c.web.StartHTTPServer(8080)
	} else {
		_, err = c.web.StartTCPEchoServer(8080)
	}
	require.NoError(t, err)
	if more != nil {
		more(c)
	}
	require.NoError(t, e.c.SyncManifests())
	require.NoError(t, e.c.WriteManifest("web-svc.yaml", serviceYAML("x", "web", vip, webPorts[:1], ready(c.web), "")))
	require.NoError(t, e.c.WriteManifest("l7.yaml", l7PolicyYAML))
	e.startAgent(c.n1)
	e.startAgent(c.n2)
	e.waitServices(1)
	return c
}

// l7Config is node's compiled L7 policy, once it has want listeners and
// the datapath hands connections over (the endpoints' maps written, the
// uplinks told).
func (c *l7Cluster) l7Config(n *harness.Node, want int) l7.Config {
	c.t.Helper()
	var cfg l7.Config
	require.Eventually(c.t, func() bool {
		cfg = l7.Config{}
		return n.AgentGet(ctx(c.t), api.PathL7Config, &cfg) == nil && len(cfg.Listeners) == want &&
			(want == 0 || c.status(n).Policy.L7Redirecting > 0)
	}, 10*time.Second, 50*time.Millisecond, "L7 config of %s: %+v", n.Name, cfg)
	return cfg
}

// startProxy starts node1's proxy, the stand-in for Envoy (with http,
// deciding requests by the rules) or the real Envoy, and waits until it
// listens on every listener of the agent's config.
func (c *l7Cluster) startProxy(http bool, cfg l7.Config) nodeProxy {
	c.t.Helper()
	var p nodeProxy
	if c.envoy != "" {
		e, err := c.n1.StartEnvoy(c.envoy)
		require.NoError(c.t, err)
		c.t.Cleanup(func() {
			_ = e.Stop()
			if c.t.Failed() {
				c.t.Logf("--- envoy log of node1:\n%s", e.Logs())
			}
		})
		p = &envoyProxy{c: c, e: e, hub: hubbleClient(c.t, c.n1), seen: map[netip.Addr]int{}}
	} else {
		tp, err := c.n1.StartL7Proxy(http)
		require.NoError(c.t, err)
		c.t.Cleanup(func() { _ = tp.Stop() })
		p = &testProxy{c: c, p: tp}
	}
	var want []uint16
	for _, l := range cfg.Listeners {
		want = append(want, l.Port)
	}
	slices.Sort(want)
	c.waitListening(p, want)
	return p
}

// waitListening waits until the proxy listens on ports.
func (c *l7Cluster) waitListening(p nodeProxy, ports []uint16) {
	c.t.Helper()
	require.Eventually(c.t, func() bool { return slices.Equal(p.listening(), ports) }, p.timeout(), 20*time.Millisecond,
		"the proxy listens on %v: %v", ports, p.listening())
}

// lastConn is the proxy's connection from client, waiting for it.
func lastConn(t *testing.T, p *harness.L7Proxy, client netip.Addr) l7proxy.Conn {
	t.Helper()
	var found l7proxy.Conn
	require.Eventually(t, func() bool {
		for _, cn := range slices.Backward(p.Conns()) {
			if cn.Client.Addr() == client {
				found = cn
				return true
			}
		}
		return false
	}, 5*time.Second, 20*time.Millisecond, "the proxy saw no connection from %s: %v", client, p.Conns())
	return found
}

// webAllowFrom is a NetworkPolicy that lets pods labelled app=from into
// web's port 8080.
func webAllowFrom(from string) string {
	return strings.Replace(allowFromPolicy("web-from-frontend", "web", from), "port: 80\n", "port: 8080\n", 1)
}

// waitPolicies waits until web's policy on node1 is the NetworkPolicies
// named.
func (c *l7Cluster) waitPolicies(names ...string) {
	c.t.Helper()
	var want []string
	for _, n := range names {
		want = append(want, "x/"+n)
	}
	require.Eventually(c.t, func() bool {
		var x policy.Explanation
		return c.n1.AgentGet(ctx(c.t), api.PathPolicy+"?pod=x/web", &x) == nil && slices.Equal(x.Policies, want)
	}, 10*time.Second, 50*time.Millisecond, "web's policies are not %v", want)
}

func short(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(ctx(t), 2*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestL7RedirectToTheProxy(t *testing.T) {
	c := newL7Cluster(t)
	cfg := c.l7Config(c.n1, 1)
	listener := cfg.Listeners[0].Port
	webAddr := netip.AddrPortFrom(c.web.IP, 8080)

	// No proxy listens: the connection fails closed, at once for a pod of
	// the node (an RST), never bypassing the proxy, and a flow says why.
	start := time.Now()
	_, err := c.a.TCPRequest(short(t), c.web.IP, 8080, "whoami")
	require.Error(t, err, "no proxy: closed")
	require.Contains(t, err.Error(), "connection refused")
	require.Less(t, time.Since(start), time.Second, "refused, not timed out")
	f := c.waitFlow(c.n1, "proxy unavailable", func(f *flowpb.Flow) bool {
		return isDrop(f, "PROXY_UNAVAILABLE") && f.GetIP().GetSource() == c.a.IP.String()
	})
	require.Equal(t, uint32(listener), f.GetProxyPort())
	_, err = c.b.TCPRequest(short(t), c.web.IP, 8080, "whoami")
	require.Error(t, err, "no proxy: closed for a client elsewhere too")
	c.waitFlow(c.n1, "proxy unavailable at the uplink", func(f *flowpb.Flow) bool {
		return isDrop(f, "PROXY_UNAVAILABLE") && f.GetIP().GetSource() == c.b.IP.String()
	})

	p := c.startProxy(false, cfg)
	for _, tc := range []struct {
		name   string
		client *harness.Pod
		dst    netip.Addr
		port   int
	}{
		{"a pod of the node", c.a, c.web.IP, 8080},
		{"a pod of another node", c.b, c.web.IP, 8080},
		{"through the Service VIP", c.a, vip, 80},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := p.handled(t)
			who, err := p.ask(ctx(t), tc.client, tc.dst, tc.port, "whoami")
			require.NoError(t, err)
			require.Equal(t, "x/web", who, "the reply comes back through the proxy")
			cn := p.last(t, tc.client.IP)
			require.Equal(t, listener, cn.Listener)
			require.Equal(t, webAddr, cn.Original, "the proxy sees the original destination (the backend, after translation)")
			require.NotZero(t, cn.Client.Port(), "and the client's own address and port")
			require.True(t, cn.Reached, "the proxy reached web: %s", cn.Why)

			// web sees the proxy's own connection, which was not handed
			// to the proxy again: one connection per request.
			caller, err := p.ask(ctx(t), tc.client, tc.dst, tc.port, "whoiscalling")
			require.NoError(t, err)
			cn = p.last(t, tc.client.IP)
			p.checkCaller(t, cn, caller)
			require.Equal(t, before+2, p.handled(t), "each request reached the proxy once")
		})
	}

	f = c.waitFlow(c.n1, "redirected", func(f *flowpb.Flow) bool {
		return f.GetVerdict() == flowpb.Verdict_REDIRECTED && f.GetIP().GetSource() == c.a.IP.String()
	})
	require.Equal(t, flowpb.TraceObservationPoint_TO_PROXY, f.GetTraceObservationPoint())
	require.Equal(t, uint32(listener), f.GetProxyPort())
	require.Equal(t, "web", f.GetDestination().GetPodName())

	// The CLI shows web's listener and rules.
	out := c.cli(c.n1, "policy", "get", "x/web")
	require.Contains(t, out, "L7:        x/api")
	require.Contains(t, out, "x/api/ports[0]/rules[0]: GET path prefix /api/")
	require.Contains(t, c.cli(c.n1, "status"), "1 endpoints redirect to 1 proxy listeners")
}

// The proxy enforces the listener's rules (the stand-in as Envoy's
// RBAC filter would, or Envoy's RBAC filter itself), and NetworkPolicy
// decides before any of it.
func TestL7RulesAfterNetworkPolicy(t *testing.T) {
	c := newL7Cluster(t)
	require.NoError(t, c.c.WriteManifest("netpol.yaml", webAllowFrom("frontend")))
	c.waitPolicies("web-from-frontend")
	p := c.startProxy(true, c.l7Config(c.n1, 1))

	for _, client := range []*harness.Pod{c.a, c.b} {
		requireAPIRules(t, p, client)
	}

	// L4 first: NetworkPolicy denies o, which never reaches the proxy.
	before := p.handled(t)
	_, err := p.request(short(t), c.o, "GET", "/api/items")
	require.Error(t, err, "o is not allowed into web")
	c.waitFlow(c.n1, "policy drop", func(f *flowpb.Flow) bool {
		return isDrop(f, "POLICY_DENIED") && f.GetIP().GetSource() == c.o.IP.String()
	})
	require.Equal(t, before, p.handled(t), "the proxy never saw o")
}

// requireAPIRules checks that the proxy enforces l7PolicyYAML's rules on
// client's requests to web: GET under /api/ answered by web, DELETE and
// other paths refused without reaching it.
func requireAPIRules(t *testing.T, p nodeProxy, client *harness.Pod) {
	t.Helper()
	reply, err := p.request(ctx(t), client, "GET", "/api/items")
	require.NoError(t, err)
	require.Equal(t, "GET /api/items HTTP/1.1", reply, "allowed: web answers (it echoes the request line)")
	cn := p.last(t, client.IP)
	require.True(t, cn.Allowed)
	require.Equal(t, "x/api/ports[0]/rules[0]", cn.Rule)

	for _, req := range [][2]string{{"DELETE", "/api/items"}, {"GET", "/admin"}} {
		reply, err = p.request(ctx(t), client, req[0], req[1])
		require.NoError(t, err)
		require.Equal(t, p.forbidden(), reply, "%s %s is denied by the proxy", req[0], req[1])
		cn = p.last(t, client.IP)
		require.False(t, cn.Allowed)
		require.False(t, cn.Reached, "a denied request never reaches web")
	}
}

// What no longer allows a proxied connection cuts it, as the datapath
// promises for connections handed over at the client's endpoint: the L7
// policy removed (the redirect goes: the next connection goes straight to
// web), or the NetworkPolicy allow removed.
func TestL7Revocation(t *testing.T) {
	c := newL7Cluster(t)
	p := c.startProxy(false, c.l7Config(c.n1, 1))
	proxied := func() *harness.TCPClient {
		t.Helper()
		cl, err := p.keep(c.a, 100*time.Millisecond)
		require.NoError(t, err)
		t.Cleanup(func() { _ = cl.Stop() })
		require.NoError(t, cl.WaitRoundTrips(ctx(t), 3))
		require.Equal(t, cl.LocalAddr, p.last(t, c.a.IP).Client, "the connection goes through the proxy")
		return cl
	}

	cl := proxied()
	require.NoError(t, c.c.RemoveManifest("l7.yaml"))
	require.Eventually(t, func() bool { return cl.Closed() != nil }, 10*time.Second, 50*time.Millisecond,
		"the proxied connection survives the removal of its L7 policy (%d round trips)", cl.RoundTrips())
	require.Contains(t, strings.ToLower(cl.Closed().Error()), "reset", "cut with an RST")
	// Whichever end's packet meets the revocation first (under TCG on
	// 5.10 it was web's reply): after it both ends get their RSTs, so
	// the other end may send nothing more to be dropped.
	c.waitFlow(c.n1, "revocation", func(f *flowpb.Flow) bool {
		src, dst := f.GetIP().GetSource(), f.GetIP().GetDestination()
		a, web := c.a.IP.String(), c.web.IP.String()
		return isDrop(f, "POLICY_REVOKED") && (src == a && dst == web || src == web && dst == a)
	})
	before := p.handled(t)
	caller, err := p.ask(ctx(t), c.a, c.web.IP, 8080, "whoiscalling")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(caller, c.a.IP.String()+":"), "without L7 policy web sees a itself: %s", caller)
	require.Equal(t, before, p.handled(t), "and the proxy nothing")

	// Back, under a NetworkPolicy that allows a; then the allow goes.
	require.NoError(t, c.c.WriteManifest("netpol.yaml", webAllowFrom("frontend")))
	require.NoError(t, c.c.WriteManifest("l7.yaml", l7PolicyYAML))
	c.waitPolicies("web-from-frontend")
	c.l7Config(c.n1, 1)
	c.waitListening(p, []uint16{c.l7Config(c.n1, 1).Listeners[0].Port})
	cl = proxied()
	require.NoError(t, c.c.WriteManifest("netpol.yaml", webAllowFrom("nobody")))
	require.Eventually(t, func() bool { return cl.Closed() != nil }, 10*time.Second, 50*time.Millisecond,
		"the proxied connection survives the removal of its NetworkPolicy allow (%d round trips)", cl.RoundTrips())
	require.Contains(t, strings.ToLower(cl.Closed().Error()), "reset", "cut with an RST")
	_, err = p.ask(short(t), c.a, c.web.IP, 8080, "whoami")
	require.Error(t, err, "a is denied now")
}
