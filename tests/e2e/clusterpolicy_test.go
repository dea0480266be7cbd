package e2e

// ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) on simulated
// nodes, through the files source: the network-policy-api's documented
// semantics as table cases probed with real connections, each decision's
// flow naming the deciding object and rule.
//
//	node1 (routed)                         node2 (bridge)
//	  dev/client ───────────────────────►   prod/web :80 :8080   prod NetworkPolicy allows all
//	  monitoring/prom ──────────────────►                         Admin Deny from dev, Pass monitoring
//	  prod/client ──────────────────────►   dev/api :80           Baseline Deny from prod
//
// Admin rules are decided before NetworkPolicy (a Deny beats its allow, a
// Pass falls through to it), lower priorities first; Baseline only where
// no NetworkPolicy isolates the pod.

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/flow"
)

func cnp(name, tier string, priority int, subject, rules string) string {
	return "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata:\n  name: " + name +
		"\nspec:\n  tier: " + tier + "\n  priority: " + strconv.Itoa(priority) + "\n  subject:\n" + subject + rules
}

const (
	subjectProd = "    namespaces: {matchLabels: {env: prod}}\n"
	subjectDev  = "    namespaces: {matchLabels: {env: dev}}\n"
	fromDev     = "    from: [{namespaces: {matchLabels: {env: dev}}}]\n"
	fromMonitor = "    from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]\n"
	fromProd    = "    from: [{namespaces: {matchLabels: {env: prod}}}]\n"
	allowAllNP  = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-all, namespace: prod}\n" +
		"spec:\n  podSelector: {}\n  policyTypes: [Ingress]\n  ingress: [{}]\n"
)

// flowRule returns the rule a flow's policy names: its RuleLabel, else
// "namespace/name".
func flowRule(ps []*flowpb.Policy) string {
	for _, p := range ps {
		for _, l := range p.GetLabels() {
			if ref, ok := strings.CutPrefix(l, flow.RuleLabel+"="); ok {
				return ref
			}
		}
		if p.GetNamespace() == "" {
			return p.GetName()
		}
		return p.GetNamespace() + "/" + p.GetName()
	}
	return ""
}

func TestClusterNetworkPolicyTiers(t *testing.T) {
	e := newEnv(t)
	n1 := e.node("node1", harness.Routed)
	n2 := e.node("node2", harness.Bridge)
	devClient := e.pod(n1, "dev", "client", map[string]string{"app": "client"})
	prom := e.pod(n1, "monitoring", "prom", map[string]string{"app": "prom"})
	prodClient := e.pod(n1, "prod", "client", map[string]string{"app": "client"})
	web := e.pod(n2, "prod", "web", map[string]string{"app": "web"})
	api := e.pod(n2, "dev", "api", map[string]string{"app": "api"})
	for _, p := range []*harness.Pod{web, api} {
		for _, port := range []int{80, 8080} {
			_, err := p.StartTCPEchoServer(port)
			require.NoError(t, err)
		}
	}
	require.NoError(t, e.c.SetNamespaceLabels("prod", map[string]string{"env": "prod"}))
	require.NoError(t, e.c.SetNamespaceLabels("dev", map[string]string{"env": "dev"}))
	require.NoError(t, e.c.SyncManifests())
	e.startAgent(n1)
	e.startAgent(n2)

	hubs := map[*harness.Node]observerpb.ObserverClient{n1: hubbleClient(t, n1), n2: hubbleClient(t, n2)}
	// A probe's destination: a pod, or a node's address.
	type target struct {
		Name string
		IP   netip.Addr
	}
	pt := func(p *harness.Pod) target { return target{p.Name, p.IP} }
	node2 := target{"node2", n2.IP}
	_, err := n2.StartTCPEchoServer(8081)
	require.NoError(t, err)
	type probe struct {
		from    *harness.Pod
		to      target
		port    int
		egress  bool // decided at the client's egress, not the server's ingress
		allowed bool
		// rule is what the flow at the destination's node names: the
		// deciding rule (a drop's DeniedBy, an allow's AllowedBy); empty
		// for a default verdict without a rule.
		rule string
	}
	cases := []struct {
		name      string
		manifests map[string]string
		probes    []probe
	}{{
		name: "admin deny beats a NetworkPolicy allow",
		manifests: map[string]string{
			"np.yaml":  allowAllNP,
			"cnp.yaml": cnp("deny-dev", "Admin", 10, subjectProd, "  ingress:\n  - name: no-dev\n    action: Deny\n"+fromDev),
		},
		probes: []probe{
			{devClient, pt(web), 80, false, false, "cnp/deny-dev ingress[0]"},
			{prom, pt(web), 80, false, true, "prod/allow-all"},
		},
	}, {
		name: "admin pass falls through to NetworkPolicy; the lower priority number decides first",
		manifests: map[string]string{
			"np.yaml": allowAllNP,
			"cnp.yaml": cnp("deny-others", "Admin", 20, subjectProd,
				"  ingress:\n  - action: Deny\n    from: [{namespaces: {}}]\n    protocols: [{tcp: {destinationPort: {number: 80}}}]\n") +
				"---\n" + cnp("pass-monitoring", "Admin", 5, subjectProd, "  ingress:\n  - action: Pass\n"+fromMonitor),
		},
		probes: []probe{
			{prom, pt(web), 80, false, true, "prod/allow-all"},
			{devClient, pt(web), 80, false, false, "cnp/deny-others ingress[0]"},
			{devClient, pt(web), 8080, false, true, "prod/allow-all"},
		},
	}, {
		name: "admin accept at a higher priority beats a deny, by port range",
		manifests: map[string]string{
			"cnp.yaml": cnp("deny-all", "Admin", 50, subjectProd, "  ingress:\n  - action: Deny\n    from: [{namespaces: {}}]\n") +
				"---\n" + cnp("accept-dev-8000s", "Admin", 40, subjectProd, "  ingress:\n  - action: Accept\n"+fromDev+
				"    protocols: [{tcp: {destinationPort: {range: {start: 8000, end: 8099}}}}]\n"),
		},
		probes: []probe{
			{devClient, pt(web), 8080, false, true, "cnp/accept-dev-8000s ingress[0]"},
			{devClient, pt(web), 80, false, false, "cnp/deny-all ingress[0]"},
			{prom, pt(web), 8080, false, false, "cnp/deny-all ingress[0]"},
		},
	}, {
		name: "baseline decides where no NetworkPolicy isolates the pod",
		manifests: map[string]string{
			"cnp.yaml": cnp("baseline-dev", "Baseline", 10, subjectDev, "  ingress:\n  - action: Deny\n"+fromProd),
		},
		probes: []probe{
			{prodClient, pt(api), 80, false, false, "cnp/baseline-dev ingress[0]"},
			{prom, pt(api), 80, false, true, "default-allow"},
		},
	}, {
		name: "a NetworkPolicy overrides the baseline",
		manifests: map[string]string{
			"cnp.yaml": cnp("baseline-dev", "Baseline", 10, subjectDev, "  ingress:\n  - action: Deny\n"+fromProd),
			"np.yaml": "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-prod, namespace: dev}\n" +
				"spec:\n  podSelector: {}\n  policyTypes: [Ingress]\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {env: prod}}}]\n",
		},
		probes: []probe{
			{prodClient, pt(api), 80, false, true, "dev/from-prod"},
			{prom, pt(api), 80, false, false, ""}, // NetworkPolicy's default deny
		},
	}, {
		name: "egress to networks: an admin deny of a pod's address, a pass to NetworkPolicy for the rest",
		manifests: map[string]string{
			"cnp.yaml": cnp("egress-guard", "Admin", 10, "    pods: {namespaceSelector: {matchLabels: {env: dev}}, podSelector: {matchLabels: {app: client}}}\n",
				"  egress:\n  - action: Deny\n    to: [{networks: ["+web.IP.String()+"/32]}]\n    protocols: [{tcp: {destinationPort: {number: 8080}}}]\n"+
					"  - action: Pass\n    to: [{networks: [0.0.0.0/0]}]\n"),
		},
		probes: []probe{
			{devClient, pt(web), 8080, true, false, "cnp/egress-guard egress[0]"},
			{devClient, pt(web), 80, true, true, "default-allow"},
		},
	}, {
		name: "egress to nodes: an admin deny of a node's addresses by its labels, before NetworkPolicy",
		manifests: map[string]string{
			"np.yaml": "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: anywhere, namespace: dev}\n" +
				"spec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{}]\n",
			"cnp.yaml": cnp("no-nodes", "Admin", 10, subjectDev,
				"  egress:\n  - action: Deny\n    to: [{nodes: {matchLabels: {kubernetes.io/hostname: node2}}}]\n"),
		},
		probes: []probe{
			{devClient, node2, 8081, true, false, "cnp/no-nodes egress[0]"},
			{devClient, pt(web), 80, true, true, "dev/anywhere"},
		},
	}}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, f := range []string{"np.yaml", "cnp.yaml"} {
				if m, ok := tc.manifests[f]; ok {
					require.NoError(t, e.c.WriteManifest(f, m))
				} else {
					_ = e.c.RemoveManifest(f)
				}
			}
			for _, p := range tc.probes {
				at := n2
				if p.egress {
					at = n1
				}
				// The manifests reach both agents asynchronously: probe
				// until the connection's outcome and the flow of that very
				// attempt (no older one) show the decision.
				var err error
				var last []string
				require.Eventually(t, func() bool {
					start := time.Now().Add(-50 * time.Millisecond)
					c, cancel := context.WithTimeout(ctx(t), time.Second)
					defer cancel()
					_, err = p.from.TCPRequest(c, p.to.IP, p.port, "whoami")
					if (err == nil) != p.allowed {
						return false
					}
					flows, ferr := recentFlows(ctx(t), hubs[at])
					if ferr != nil {
						return false
					}
					last = last[:0]
					for _, f := range flows {
						src, dst := flowEnds(f)
						if f.GetTime().AsTime().Before(start) || src.Addr() != p.from.IP || dst.Addr() != p.to.IP || int(dst.Port()) != p.port {
							continue
						}
						// The decision's own direction: the client's egress or
						// the server's ingress.
						allowedBy, deniedBy := f.GetIngressAllowedBy(), f.GetIngressDeniedBy()
						if p.egress {
							allowedBy, deniedBy = f.GetEgressAllowedBy(), f.GetEgressDeniedBy()
						}
						last = append(last, fmt.Sprintf("%s %s allowed by %q denied by %q", f.GetSummary(), f.GetVerdict(), flowRule(allowedBy), flowRule(deniedBy)))
						var ok bool
						if p.allowed {
							ok = f.GetEventType().GetType() == flow.MessageTypePolicyVerdict && f.GetVerdict() == flowpb.Verdict_FORWARDED &&
								flowRule(allowedBy) == p.rule
						} else {
							ok = isDrop(f, "POLICY_DENIED") && flowRule(deniedBy) == p.rule
						}
						if ok && strings.HasPrefix(p.rule, "cnp/") {
							require.Equal(t, "ClusterNetworkPolicy", slices.Concat(allowedBy, deniedBy)[0].GetKind())
						}
						if ok {
							return true
						}
					}
					return false
				}, 20*time.Second, 200*time.Millisecond, "%s -> %s:%d: want allowed %v by %q", p.from.Name, p.to.Name, p.port, p.allowed, p.rule)
				if t.Failed() {
					t.Logf("last error %v, flows of the last attempt on %s: %v", err, at.Name, last)
				}
			}
		})
	}
}

// devAndProd is one node with dev/client and prod/web (serving TCP/80),
// their namespaces labelled env=dev and env=prod; the agent is not
// started.
func devAndProd(t *testing.T, agentArgs ...string) (*env, *harness.Node, *harness.Pod, *harness.Pod) {
	e := newEnv(t, agentArgs...)
	n1 := e.node("node1", harness.Routed)
	client := e.pod(n1, "dev", "client", map[string]string{"app": "client"})
	web := e.pod(n1, "prod", "web", map[string]string{"app": "web"})
	_, err := web.StartTCPEchoServer(80)
	require.NoError(t, err)
	require.NoError(t, e.c.SetNamespaceLabels("prod", map[string]string{"env": "prod"}))
	require.NoError(t, e.c.SetNamespaceLabels("dev", map[string]string{"env": "dev"}))
	require.NoError(t, e.c.SyncManifests())
	return e, n1, client, web
}

// Revocation and audit mode behave as for NetworkPolicy: an established
// connection an Admin Deny no longer allows is cut with an RST
// (POLICY_REVOKED), and in a namespace in audit mode the denial is
// forwarded and reported (AUDIT) naming the ClusterNetworkPolicy's rule;
// `sluice policy trace` names the tier, the object and the rule.
func TestClusterNetworkPolicyRevocationAuditAndTrace(t *testing.T) {
	e, n1, client, web := devAndProd(t)
	e.startAgent(n1)

	cl, err := client.StartTCPClient(web.IP, 80, 100*time.Millisecond)
	require.NoError(t, err)
	require.NoError(t, cl.WaitRoundTrips(ctx(t), 3))
	require.NoError(t, e.c.WriteManifest("cnp.yaml", cnp("deny-dev", "Admin", 10, subjectProd, "  ingress:\n  - action: Deny\n"+fromDev)))
	require.Eventually(t, func() bool { return cl.Closed() != nil }, 10*time.Second, 50*time.Millisecond,
		"the connection from dev survives an Admin Deny (%d round trips)", cl.RoundTrips())
	require.Contains(t, strings.ToLower(cl.Closed().Error()), "reset", "cut with an RST")
	e.waitFlow(n1, "revocation", func(f *flowpb.Flow) bool {
		return isDrop(f, "POLICY_REVOKED") && flowRule(f.GetIngressDeniedBy()) == "cnp/deny-dev ingress[0]"
	})

	out := e.cli(n1, "policy", "trace", "--from", "dev/client", "--to", "prod/web:80")
	t.Logf("sluice policy trace:\n%s", out)
	require.Contains(t, out, "Admin tier: cnp/deny-dev ingress[0]", out)
	require.NotContains(t, out, "ERROR", "the maps hold what the model decides")
	out = e.cli(n1, "policy", "get", "prod/web")
	require.Contains(t, out, "deny-dev (Admin, priority 10)", out)
	require.Contains(t, out, "Ingress:   enforced (ClusterNetworkPolicy tiers", out)
	require.Regexp(t, `identity \d+\s+k8s:app=client,\S*dev\S*\s.*\sdeny\s+cnp/deny-dev ingress\[0\]`, out, "the entry denying dev/client's identity names the rule")

	// Audit mode: the denial is forwarded and reported.
	require.NoError(t, e.c.SetNamespaceAnnotations("prod", map[string]string{"sluice.io/policy-audit": "true"}))
	require.NoError(t, e.c.SyncManifests())
	require.Eventually(t, func() bool {
		c, cancel := context.WithTimeout(ctx(t), time.Second)
		defer cancel()
		_, err := client.TCPRequest(c, web.IP, 80, "whoami")
		return err == nil
	}, 10*time.Second, 100*time.Millisecond, "audit mode forwards what the Admin tier denies")
	e.waitFlow(n1, "audit verdict", func(f *flowpb.Flow) bool {
		return f.GetVerdict() == flowpb.Verdict_AUDIT && flowRule(f.GetIngressDeniedBy()) == "cnp/deny-dev ingress[0]"
	})
	require.Contains(t, e.cli(n1, "observe", "--verdict", "AUDIT"), "AUDITED BY cnp/deny-dev ingress[0] (ClusterNetworkPolicy)")
}

// A policy that does not fit the endpoint's map fails closed, as for
// NetworkPolicy: the connection an Admin Accept allows is dropped
// (POLICY_OVERFLOW), and status says which endpoint.
func TestClusterNetworkPolicyOverflowFailsClosed(t *testing.T) {
	e, n1, client, web := devAndProd(t, "--policy-map-max=16")
	var protocols strings.Builder
	for p := 1000; p < 1020; p++ {
		protocols.WriteString("    - tcp: {destinationPort: {number: " + strconv.Itoa(p) + "}}\n")
	}
	protocols.WriteString("    - tcp: {destinationPort: {number: 80}}\n")
	require.NoError(t, e.c.WriteManifest("cnp.yaml", cnp("many-ports", "Admin", 10, subjectProd,
		"  ingress:\n  - action: Accept\n"+fromDev+"    protocols:\n"+protocols.String())))
	e.startAgent(n1)
	require.Eventually(t, func() bool { return len(e.status(n1).Policy.FailedClosed) == 1 }, 10*time.Second, 50*time.Millisecond)
	require.Equal(t, "prod/web", e.status(n1).Policy.FailedClosed[0].Pod)

	short, cancel := context.WithTimeout(ctx(t), 2*time.Second)
	defer cancel()
	_, err := client.TCPRequest(short, web.IP, 80, "whoami")
	require.Error(t, err, "an Admin Accept allows it, but the policy did not fit: fail closed")
	e.waitFlow(n1, "overflow drop", func(f *flowpb.Flow) bool { return isDrop(f, "POLICY_OVERFLOW") })
}

// A guardrail does not switch a pod's L7 rules off: web (namespace x)
// has its SluiceL7Policy (GET under /api/ on 8080) and an Admin
// ClusterNetworkPolicy denies namespace y. The tiers decide first: y's
// client is dropped in the kernel, naming the guardrail, and never
// reaches the proxy; x's clients, which the tiers allow, are handed to
// the proxy, whose rules still apply.
//
//	node1: y/client ──X (cnp/no-y ingress[0])
//	       x/a ──────► proxy (GET /api/ ok, DELETE 403) ──► x/web :8080
//	node2: x/b ──────► (uplink) ──┘
func TestClusterNetworkPolicyWithL7(t *testing.T) {
	var yc *harness.Pod
	// ("y" quoted: YAML 1.1 reads a bare y as true.)
	c := newL7ClusterWith(t, func(c *l7Cluster) {
		yc = c.pod(c.n1, "y", "client", map[string]string{"app": "frontend"})
		require.NoError(t, c.c.WriteManifest("cnp.yaml", cnp("no-y", "Admin", 10,
			"    namespaces: {matchLabels: {kubernetes.io/metadata.name: \"x\"}}\n",
			"  ingress:\n  - name: no-y\n    action: Deny\n    from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: \"y\"}}}]\n")))
	})
	require.Empty(t, c.status(c.n1).Errors, "the L7 policy and the guardrail apply together")
	p := c.startProxy(true, c.l7Config(c.n1, 1))
	require.Contains(t, c.cli(c.n1, "policy", "get", "x/web"), "L7:        x/api")

	// L4 first: the Admin Deny drops y's client on the L7 port.
	before := p.handled(t)
	_, err := p.request(short(t), yc, "GET", "/api/items")
	require.Error(t, err, "y is denied by the guardrail")
	f := c.waitFlow(c.n1, "guardrail drop", func(f *flowpb.Flow) bool {
		return isDrop(f, "POLICY_DENIED") && f.GetIP().GetSource() == yc.IP.String()
	})
	require.Equal(t, "cnp/no-y ingress[0]", flowRule(f.GetIngressDeniedBy()))
	require.Equal(t, "ClusterNetworkPolicy", f.GetIngressDeniedBy()[0].GetKind())
	require.Equal(t, before, p.handled(t), "the proxy never saw y")

	// What the tiers allow goes through the proxy and its rules.
	for _, client := range []*harness.Pod{c.a, c.b} {
		requireAPIRules(t, p, client)
	}
	f = c.waitFlow(c.n1, "redirected", func(f *flowpb.Flow) bool {
		return f.GetVerdict() == flowpb.Verdict_REDIRECTED && f.GetIP().GetSource() == c.a.IP.String()
	})
	require.Equal(t, "web", f.GetDestination().GetPodName())

	// policy trace decides the same from the model and from the maps (it
	// fails when they disagree): the redirect names the L7 rules, not a
	// tier.
	out := c.cli(c.n1, "policy", "trace", "--from", "y/client", "--to", "pod:x/web:8080")
	require.Contains(t, out, "denied by Admin tier: cnp/no-y ingress[0]")
	out = c.cli(c.n1, "policy", "trace", "--from", "x/a", "--to", "pod:x/web:8080")
	require.Contains(t, out, "redirected by x/api l7 ports[0]")
}
