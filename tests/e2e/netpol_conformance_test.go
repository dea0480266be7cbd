package e2e

// Kubernetes NetworkPolicy conformance: the behaviours upstream's
// test/e2e/network/netpol suite checks, as table cases on one cluster of
// nine pods in three namespaces spread over a routed and a bridge node.
//
//	node1 (routed)                  node2 (bridge)
//	  x/a  x/c  y/b  z/a  z/c         x/b  y/a  y/c  z/b
//
//	namespaces x, y, z   labels ns=<name>, kubernetes.io/metadata.name=<name>
//	pods a, b, c         labels pod=<name>
//	every pod serves     TCP and UDP on 80 and 81, declared as container
//	                     ports serve-80-tcp, serve-81-tcp, serve-80-udp,
//	                     serve-81-udp (for named-port rules)
//
// The suite runs once per family: IPv4 pods probed at their IPv4
// addresses, and dual-stack pods probed at their IPv6 addresses with the
// same policies (ipBlock cases get the pods' IPv6 prefixes).
//
// Each step of a case writes the case's policies (and may relabel pods or
// namespaces), then probes every ordered pair of different pods on one port
// and protocol and compares what answered with the expected truth table,
// retrying until they match or settleTimeout passes (policy takes effect
// asynchronously, as upstream's suite also assumes). A mismatch prints the
// expected, observed and comparison tables like upstream's. Loopback (a pod
// to itself) is not probed: upstream ignores it because its semantics are
// not defined, and here it never reaches the pod's veth anyway.
//
// After each case its policies and label changes are undone and the
// matrices it probed must all be reachable again before the next case runs.

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/stretchr/testify/require"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	"github.com/sluice-net/sluice/internal/testing/harness"
)

const (
	netpolManifest = "netpol.yaml"
	// probeTimeout bounds one probe. A denied connection is dropped, so it
	// costs exactly this; an allowed one between these namespaces answers
	// in milliseconds, and a slow one only makes the matrix retry.
	probeTimeout = time.Second
	// settleTimeout is how long a check retries before reporting a
	// mismatch. Policy reaches the maps within a debounce (150ms) and a
	// computation; the margin is for a loaded 2-core CI machine.
	settleTimeout = 15 * time.Second
	// applyDelay is waited after writing manifests before the first probe
	// round: the agents re-read them after a 150ms debounce, so probing
	// sooner only sees the old state, and a round that sees it costs a
	// probeTimeout per blocked pair. It saves time only; correctness is
	// the retrying.
	applyDelay = 250 * time.Millisecond
)

var (
	netpolNamespaces = []string{"x", "y", "z"}
	netpolPodNames   = []string{"a", "b", "c"}
)

// nPods is the size of every truth table: x/a, x/b, x/c, y/a, ... z/c.
const nPods = 9

// netpolCluster is the shared cluster the cases run on.
type netpolCluster struct {
	e *env
	// v6: the pods are dual-stack and probed (and ipBlock'd) over IPv6.
	v6 bool
	// pods are in truth-table order: x/a, x/b, x/c, y/a, ... z/c.
	pods [nPods]*harness.Pod
	// relabelled is set when a step changed labels that the case's reset
	// must put back.
	relabelled bool
	// broken is set when a case could not restore full reachability, which
	// would make every later case meaningless.
	broken bool
}

func newNetpolCluster(t *testing.T, v6 bool) *netpolCluster {
	e := newEnv(t)
	nodes := []*harness.Node{e.node("node1", harness.Routed), e.node("node2", harness.Bridge)}
	nc := &netpolCluster{e: e, v6: v6}
	fam := harness.IPv4
	if v6 {
		fam = harness.DualStack
	}
	ports := []harness.Port{
		{Name: "serve-80-tcp", Port: 80, Protocol: "TCP"},
		{Name: "serve-81-tcp", Port: 81, Protocol: "TCP"},
		{Name: "serve-80-udp", Port: 80, Protocol: "UDP"},
		{Name: "serve-81-udp", Port: 81, Protocol: "UDP"},
	}
	var wg sync.WaitGroup
	errs := make(chan error, nPods*4)
	for i := range nPods {
		ns, name := netpolNamespaces[i/3], netpolPodNames[i%3]
		p, err := nodes[i%2].AddPodFamily(ctx(t), fam, ns, name, map[string]string{"pod": name}, ports...)
		require.NoError(t, err)
		nc.pods[i] = p
		wg.Go(func() {
			for _, port := range []int{80, 81} {
				_, err := p.StartTCPEchoServer(port)
				errs <- err
				_, err = p.StartUDPEchoServer(port)
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	nc.resetLabels(t)
	for _, n := range nodes {
		e.startAgent(n)
	}
	return nc
}

// resetLabels gives every namespace ns=<name> and every pod pod=<name>.
func (nc *netpolCluster) resetLabels(t *testing.T) {
	for _, ns := range netpolNamespaces {
		require.NoError(t, nc.e.c.SetNamespaceLabels(ns, map[string]string{"ns": ns}))
	}
	for _, p := range nc.pods {
		p.SetLabels(map[string]string{"pod": p.Name})
	}
	require.NoError(t, nc.e.c.SyncManifests())
	nc.relabelled = false
}

// addr is the address p is probed at: of the family under test.
func (nc *netpolCluster) addr(p *harness.Pod) netip.Addr {
	if nc.v6 {
		return p.IPv6()
	}
	return p.IP
}

// relabelPod replaces the labels of pod "ns/name" (pod=<name> is not kept).
func (nc *netpolCluster) relabelPod(pod string, labels map[string]string) {
	nc.pods[podIndex(pod)].SetLabels(labels)
	nc.relabelled = true
}

// relabelNamespace replaces the labels of ns (the name label stays).
func (nc *netpolCluster) relabelNamespace(t *testing.T, ns string, labels map[string]string) {
	require.NoError(t, nc.e.c.SetNamespaceLabels(ns, labels))
	nc.relabelled = true
}

// --- truth tables ---

// podString is the i-th pod of every truth table, "x/a" ... "z/c".
func podString(i int) string { return netpolNamespaces[i/3] + "/" + netpolPodNames[i%3] }

func podIndex(pod string) int {
	ns, name, ok := strings.Cut(pod, "/")
	i, j := slices.Index(netpolNamespaces, ns), slices.Index(netpolPodNames, name)
	if !ok || i < 0 || j < 0 {
		panic(fmt.Sprintf("no pod %q in the netpol cluster", pod))
	}
	return i*3 + j
}

// peer matches pods by namespace and name; empty matches any, as upstream's
// Peer.
type peer struct{ ns, pod string }

var anyPod = peer{}

func inNS(ns string) peer { return peer{ns: ns} }

func pod(s string) peer {
	ns, name, _ := strings.Cut(s, "/")
	return peer{ns: ns, pod: name}
}

func (p peer) matches(i int) bool {
	ns, name, _ := strings.Cut(podString(i), "/")
	return (p.ns == "" || p.ns == ns) && (p.pod == "" || p.pod == name)
}

// expectation changes the truth table for every pair matching from and to.
type expectation struct {
	from, to peer
	ok       bool
}

func deny(from, to peer) expectation  { return expectation{from, to, false} }
func allow(from, to peer) expectation { return expectation{from, to, true} }

// truth says, for each pair of pods (row: client, column: server), whether
// the client reaches the server. The diagonal (loopback) is never probed.
type truth [nPods][nPods]bool

// expectedTruth is all reachable, then each expectation applied in order.
func expectedTruth(exps []expectation) truth {
	var tt truth
	for i := range nPods {
		for j := range nPods {
			tt[i][j] = true
		}
	}
	for _, x := range exps {
		for i := range nPods {
			for j := range nPods {
				if x.from.matches(i) && x.to.matches(j) {
					tt[i][j] = x.ok
				}
			}
		}
	}
	return tt
}

func (tt *truth) equal(o *truth) bool {
	for i := range nPods {
		for j := range nPods {
			if i != j && tt[i][j] != o[i][j] {
				return false
			}
		}
	}
	return true
}

// table prints the truth table as upstream does: "." reachable, "X" not,
// "-" not probed (loopback). With other set, it prints the comparison
// instead: "." where both agree, "X" where they differ.
func (tt *truth) table(other *truth) string {
	var b strings.Builder
	b.WriteString("from\\to")
	for j := range nPods {
		fmt.Fprintf(&b, "  %s", podString(j))
	}
	b.WriteString("\n")
	for i := range nPods {
		fmt.Fprintf(&b, "%-7s", podString(i))
		for j := range nPods {
			c := "."
			switch {
			case i == j:
				c = "-"
			case other != nil && tt[i][j] != other[i][j]:
				c = "X"
			case other == nil && !tt[i][j]:
				c = "X"
			}
			fmt.Fprintf(&b, "  %3s", c)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// --- probing ---

// check is one matrix to verify: every pair on port/proto.
type check struct {
	proto string // "TCP" or "UDP"
	port  int
	want  []expectation
}

func tcp(port int, want ...expectation) check { return check{"TCP", port, want} }
func udp(port int, want ...expectation) check { return check{"UDP", port, want} }

func (c check) String() string { return fmt.Sprintf("%s %d", c.proto, c.port) }

// probeMatrix probes every ordered pair of different pods once, all sources
// at once (one probe workload per source pod), and returns what was
// reachable and, per pair, why not.
func (nc *netpolCluster) probeMatrix(proto string, port int) (truth, [nPods][nPods]string) {
	var (
		tt  truth
		why [nPods][nPods]string
		wg  sync.WaitGroup
	)
	rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, from := range nc.pods {
		wg.Go(func() {
			var targets []harness.Target
			for j, to := range nc.pods {
				if j != i {
					targets = append(targets, harness.Target{Protocol: proto, Addr: nc.addr(to), Port: port})
				}
			}
			res, err := from.Probe(rctx, probeTimeout, targets...)
			for j, to := range nc.pods {
				if j == i {
					continue
				}
				k := j
				if j > i {
					k--
				}
				switch {
				case err != nil:
					why[i][j] = err.Error()
				case res[k].Err != nil:
					why[i][j] = res[k].Err.Error()
				case res[k].Reply != to.String():
					why[i][j] = fmt.Sprintf("answered by %q", res[k].Reply)
				default:
					tt[i][j] = true
				}
			}
		})
	}
	wg.Wait()
	return tt, why
}

// expectMatrix probes until the matrix of c matches its truth table or
// settleTimeout passes, and then reports the difference. It returns whether
// it matched.
func (nc *netpolCluster) expectMatrix(t *testing.T, what string, c check) bool {
	t.Helper()
	want := expectedTruth(c.want)
	start := time.Now()
	for attempt := 1; ; attempt++ {
		got, why := nc.probeMatrix(c.proto, c.port)
		if got.equal(&want) {
			t.Logf("%s: %s matrix as expected after %d probe round(s), %s", what, c, attempt, time.Since(start).Round(time.Millisecond))
			return true
		}
		if time.Since(start) < settleTimeout {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%s: %s reachability differs after %d probe rounds over %s\n\nexpected:\n%s\nobserved:\n%s\ncomparison (X: differs):\n%s\n",
			what, c, attempt, time.Since(start).Round(time.Second), want.table(nil), got.table(nil), want.table(&got))
		involved := map[*harness.Pod]bool{}
		for i, from := range nc.pods {
			for j, to := range nc.pods {
				if i == j || got[i][j] == want[i][j] {
					continue
				}
				if want[i][j] {
					fmt.Fprintf(&b, "  %s -> %s: expected reachable, got: %s\n", from, to, why[i][j])
				} else {
					fmt.Fprintf(&b, "  %s -> %s: expected blocked, but it answered\n", from, to)
				}
				involved[from], involved[to] = true, true
			}
		}
		t.Error(b.String())
		nc.diagnose(t, involved)
		return false
	}
}

// diagnose logs what the agents computed for the pods of mismatched pairs
// and any errors they report (e.g. a manifest they rejected).
func (nc *netpolCluster) diagnose(t *testing.T, pods map[*harness.Pod]bool) {
	for _, n := range nc.e.c.Nodes() {
		if st := nc.e.status(n); len(st.Errors) > 0 {
			t.Logf("agent errors on %s: %+v", n.Name, st.Errors)
		}
	}
	logged := 0
	for _, p := range nc.pods {
		if !pods[p] || logged == 4 {
			continue
		}
		logged++
		t.Logf("sluice policy get %s (on %s):\n%s", p, p.Node.Name, nc.e.cli(p.Node, "policy", "get", p.String()))
	}
}

// --- policies ---

// np is a NetworkPolicy manifest with spec given as YAML (unindented).
// The spec may use {{host "x/b"}} for a pod's address as a /32 (IPv6: /128)
// and {{wide "x/b"}} for a wide block holding it (upstream's
// makeLargeCIDRForIP): the /4 of an IPv4 address, the /32 of an IPv6 one
// (fd00:10::/32: every node's pod range, not the underlay's). Namespace names are
// quoted: in YAML 1.1, which Kubernetes' decoders speak, a bare y is the
// boolean true.
func np(ns, name, spec string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n", name, ns)
	for _, l := range strings.Split(strings.Trim(spec, "\n"), "\n") {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}

// none as a step's policies removes them all; nil keeps the previous step's.
var none = []string{}

// render expands the pod address placeholders of the policies and checks
// them against the real NetworkPolicy type, so a typo fails here instead of
// being rejected by the agents (which then keep the previous policies).
func (nc *netpolCluster) render(t *testing.T, policies []string) string {
	funcs := template.FuncMap{
		"host": func(p string) netip.Prefix {
			a := nc.addr(nc.pods[podIndex(p)])
			return netip.PrefixFrom(a, a.BitLen())
		},
		"wide": func(p string) netip.Prefix {
			a := nc.addr(nc.pods[podIndex(p)])
			if a.Is6() {
				return netip.PrefixFrom(a, 32).Masked()
			}
			return netip.PrefixFrom(a, 4).Masked()
		},
	}
	docs := make([]string, 0, len(policies))
	for _, p := range policies {
		tpl, err := template.New("policy").Funcs(funcs).Parse(p)
		require.NoError(t, err)
		var b bytes.Buffer
		require.NoError(t, tpl.Execute(&b, nil))
		// Decoded as the files source does (YAML to JSON without
		// knowing the type, then strict JSON), so that a typo or a bare
		// y (which YAML reads as true) fails here, not in the agents.
		j, err := yaml.YAMLToJSONStrict(b.Bytes())
		require.NoError(t, err, "policy:\n%s", b.String())
		dec := json.NewDecoder(bytes.NewReader(j))
		dec.DisallowUnknownFields()
		var obj networkingv1.NetworkPolicy
		require.NoError(t, dec.Decode(&obj), "policy:\n%s", b.String())
		docs = append(docs, b.String())
	}
	return strings.Join(docs, "---\n")
}

// --- cases ---

// step is one state of a case and the matrices to check in it.
type step struct {
	what string
	// policies are all the case's policies from this step on; nil keeps
	// those of the previous step, none removes them.
	policies []string
	// relabel, when set, changes pod or namespace labels (relabelPod,
	// relabelNamespace) before the manifests are synced.
	relabel func(t *testing.T, nc *netpolCluster)
	checks  []check
}

type netpolCase struct {
	name  string
	steps []step
}

// only is a one-step case.
func only(policies []string, checks ...check) []step {
	return []step{{what: "policies applied", policies: policies, checks: checks}}
}

var (
	denyIngressX = np("x", "deny-ingress", `
podSelector: {}
policyTypes: [Ingress]
`)
	denyEgressX = np("x", "deny-egress", `
podSelector: {}
policyTypes: [Egress]
`)
	denyAllX = np("x", "deny-all", `
podSelector: {}
policyTypes: [Ingress, Egress]
`)
	allowEgressForXa = np("x", "allow-egress-for-a", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- {}
`)
	allowIngressForXa = np("x", "allow-ingress-for-a", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Ingress]
ingress:
- {}
`)
	xaFromXb = np("x", "x-a-allows-x-b", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - podSelector: {matchLabels: {pod: b}}
`)
)

var netpolCases = []netpolCase{
	{"default-deny-ingress", only([]string{denyIngressX},
		tcp(80, deny(anyPod, inNS("x"))))},
	{"default-deny-egress", only([]string{denyEgressX},
		tcp(80, deny(inNS("x"), anyPod)))},
	{"default-deny-all", only([]string{denyAllX},
		tcp(80, deny(anyPod, inNS("x")), deny(inNS("x"), anyPod)))},
	{"allow-all ingress takes precedence over a port-80-only policy", []step{
		{what: "ingress allowed on 80 only", policies: []string{np("x", "allow-ingress-port-80", `
podSelector: {}
ingress:
- ports: [{port: 80}]
`)}, checks: []check{tcp(81, deny(anyPod, inNS("x"))), tcp(80)}},
		{what: "allow-all ingress added", policies: []string{np("x", "allow-ingress-port-80", `
podSelector: {}
ingress:
- ports: [{port: 80}]
`), np("x", "allow-ingress", `
podSelector: {}
ingress:
- {}
`)}, checks: []check{tcp(81)}},
	}},
	{"allow-all egress takes precedence over a port-80-only policy", []step{
		{what: "egress allowed on 80 only", policies: []string{np("x", "allow-egress-port-80", `
podSelector: {}
policyTypes: [Egress]
egress:
- ports: [{port: 80}]
`)}, checks: []check{tcp(81, deny(inNS("x"), anyPod)), tcp(80)}},
		{what: "allow-all egress added", policies: []string{np("x", "allow-egress-port-80", `
podSelector: {}
policyTypes: [Egress]
egress:
- ports: [{port: 80}]
`), np("x", "allow-egress", `
podSelector: {}
policyTypes: [Egress]
egress:
- {}
`)}, checks: []check{tcp(81)}},
	}},
	{"allow-all ingress beside default-deny-ingress", only([]string{denyIngressX, np("x", "allow-all-to-a", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - podSelector: {}
    namespaceSelector: {}
`)},
		tcp(80, deny(anyPod, inNS("x")), allow(anyPod, pod("x/a"))))},
	{"podSelector", only([]string{xaFromXb},
		tcp(80, deny(anyPod, pod("x/a")), allow(pod("x/b"), pod("x/a"))))},
	{"namespaceSelector", only([]string{np("x", "allow-from-y", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "y"}}
`)},
		tcp(80, deny(inNS("x"), pod("x/a")), deny(inNS("z"), pod("x/a"))))},
	{"empty namespaceSelector selects every namespace", only([]string{denyIngressX, np("x", "allow-from-all-ns", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {}
`)},
		tcp(80, deny(anyPod, inNS("x")), allow(anyPod, pod("x/a"))))},
	{"podSelector and namespaceSelector in one peer (AND)", only([]string{np("x", "allow-b-outside-x", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector:
      matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: ["x"]}]
    podSelector: {matchLabels: {pod: b}}
`)},
		tcp(80, deny(anyPod, pod("x/a")), allow(pod("y/b"), pod("x/a")), allow(pod("z/b"), pod("x/a"))))},
	{"several peers (OR)", only([]string{np("x", "allow-outside-x-or-b", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector:
      matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: ["x"]}]
  - podSelector: {matchLabels: {pod: b}}
`)},
		tcp(80, deny(pod("x/c"), pod("x/a"))))},
	// Targets x/b, on the bridge node (most cases target x/a, on the routed one).
	{"egress podSelector and namespaceSelector in one peer", only([]string{np("x", "b-to-y-a", `
podSelector: {matchLabels: {pod: b}}
policyTypes: [Egress]
egress:
- to:
  - namespaceSelector: {matchLabels: {ns: "y"}}
    podSelector: {matchLabels: {pod: a}}
`)},
		tcp(80, deny(pod("x/b"), anyPod), allow(pod("x/b"), pod("y/a"))))},
	{"matchExpressions In", only([]string{np("x", "a-from-b-c", `
podSelector:
  matchExpressions: [{key: pod, operator: In, values: [a]}]
ingress:
- from:
  - podSelector:
      matchExpressions: [{key: pod, operator: In, values: [b, c]}]
`)},
		tcp(80, deny(anyPod, pod("x/a")), allow(pod("x/b"), pod("x/a")), allow(pod("x/c"), pod("x/a"))))},
	{"matchExpressions NotIn", only([]string{np("x", "c-from-z", `
podSelector:
  matchExpressions: [{key: pod, operator: NotIn, values: [a, b]}]
ingress:
- from:
  - namespaceSelector:
      matchExpressions: [{key: ns, operator: NotIn, values: ["x", "y"]}]
`)},
		tcp(80, deny(anyPod, pod("x/c")), allow(inNS("z"), pod("x/c"))))},
	{"matchExpressions Exists", only([]string{np("x", "all-from-every-a", `
podSelector:
  matchExpressions: [{key: pod, operator: Exists}]
ingress:
- from:
  - namespaceSelector:
      matchExpressions: [{key: ns, operator: Exists}]
    podSelector: {matchLabels: {pod: a}}
`)},
		tcp(80, deny(anyPod, inNS("x")), allow(peer{pod: "a"}, inNS("x"))))},
	{"matchExpressions DoesNotExist", only([]string{np("x", "isolate-nobody", `
podSelector:
  matchExpressions: [{key: pod, operator: DoesNotExist}]
policyTypes: [Ingress, Egress]
`), np("x", "a-from-unlabelled", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {}
    podSelector:
      matchExpressions: [{key: pod, operator: DoesNotExist}]
`)},
		tcp(80, deny(anyPod, pod("x/a"))))},
	{"named port ingress", only([]string{np("x", "allow-ingress-on-serve-81-tcp", `
podSelector: {}
ingress:
- ports: [{port: serve-81-tcp}]
`)},
		tcp(80, deny(anyPod, inNS("x"))), tcp(81), udp(81, deny(anyPod, inNS("x"))))},
	{"named port egress", only([]string{np("x", "allow-egress-on-serve-80-tcp", `
podSelector: {}
policyTypes: [Egress]
egress:
- ports: [{port: serve-80-tcp}]
`)},
		tcp(81, deny(inNS("x"), anyPod)), tcp(80), udp(80, deny(inNS("x"), anyPod)))},
	{"endPort range", []step{
		{what: "81-90 allowed", policies: []string{np("x", "allow-81-90", `
podSelector: {}
ingress:
- ports: [{protocol: TCP, port: 81, endPort: 90}]
`)}, checks: []check{tcp(80, deny(anyPod, inNS("x"))), tcp(81)}},
		{what: "70-80 allowed", policies: []string{np("x", "allow-81-90", `
podSelector: {}
ingress:
- ports: [{protocol: TCP, port: 70, endPort: 80}]
`)}, checks: []check{tcp(80), tcp(81, deny(anyPod, inNS("x")))}},
	}},
	// Upstream: "should enforce policy based on Ports".
	{"peers and ports in one rule (AND)", only([]string{np("x", "a-from-y-on-81", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "y"}}
  ports: [{port: 81}]
`)},
		tcp(80, deny(anyPod, pod("x/a"))), tcp(81, deny(anyPod, pod("x/a")), allow(inNS("y"), pod("x/a"))))},
	// Each rule's ports go with its own peers only, for selector and
	// ipBlock peers alike.
	{"several rules, each with its own ports", []step{
		{what: "ingress: y on 80, z on 81", policies: []string{np("x", "a-from-y-80-z-81", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "y"}}
  ports: [{port: 80}]
- from:
  - namespaceSelector: {matchLabels: {ns: "z"}}
  ports: [{port: 81}]
`)}, checks: []check{
			tcp(80, deny(anyPod, pod("x/a")), allow(inNS("y"), pod("x/a"))),
			tcp(81, deny(anyPod, pod("x/a")), allow(inNS("z"), pod("x/a"))),
		}},
		{what: "egress: y/c's /32 on 81, z on 80", policies: []string{np("x", "a-to-y-c-81-z-80", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- to:
  - ipBlock: {cidr: "{{host "y/c"}}"}
  ports: [{port: 81}]
- to:
  - namespaceSelector: {matchLabels: {ns: "z"}}
  ports: [{port: 80}]
`)}, checks: []check{
			tcp(80, deny(pod("x/a"), anyPod), allow(pod("x/a"), inNS("z"))),
			tcp(81, deny(pod("x/a"), anyPod), allow(pod("x/a"), pod("y/c"))),
		}},
	}},
	{"stacked policies are unioned", only([]string{np("x", "a-from-y", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "y"}}
`), np("x", "a-from-b", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - podSelector: {matchLabels: {pod: b}}
`)},
		tcp(80, deny(anyPod, pod("x/a")), allow(inNS("y"), pod("x/a")), allow(pod("x/b"), pod("x/a"))))},
	// Replies cross the other direction's policy: y's connections into
	// x/b are answered although x/b may only open connections to z.
	{"ingress and egress in one policy", only([]string{np("x", "b-from-y-to-z", `
podSelector: {matchLabels: {pod: b}}
policyTypes: [Ingress, Egress]
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "y"}}
egress:
- to:
  - namespaceSelector: {matchLabels: {ns: "z"}}
`)},
		tcp(80, deny(anyPod, pod("x/b")), allow(inNS("y"), pod("x/b")), deny(pod("x/b"), anyPod), allow(pod("x/b"), inNS("z"))),
		udp(80, deny(anyPod, pod("x/b")), allow(inNS("y"), pod("x/b")), deny(pod("x/b"), anyPod), allow(pod("x/b"), inNS("z"))))},
	// Egress rules of a policy whose policyTypes is only Ingress are
	// ignored: x/a's egress stays open.
	{"policyTypes Ingress ignores egress rules", only([]string{np("x", "a-ingress-only", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Ingress]
egress:
- to:
  - podSelector: {matchLabels: {pod: b}}
`)},
		tcp(80, deny(anyPod, pod("x/a"))))},
	// Without policyTypes, a policy with egress rules covers both
	// directions (the API server's defaulting).
	{"policyTypes defaulted from egress rules", only([]string{np("x", "a-egress-to-y", `
podSelector: {matchLabels: {pod: a}}
egress:
- to:
  - namespaceSelector: {matchLabels: {ns: "y"}}
`)},
		tcp(80, deny(anyPod, pod("x/a")), deny(pod("x/a"), anyPod), allow(pod("x/a"), inNS("y"))))},
	{"ipBlock egress to a pod's /32", only([]string{np("x", "a-to-y-c-cidr", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- to:
  - ipBlock: {cidr: "{{host "y/c"}}"}
`)},
		tcp(80, deny(pod("x/a"), anyPod), allow(pod("x/a"), pod("y/c"))))},
	{"ipBlock ingress from a pod's /32", only([]string{np("x", "a-from-y-b-cidr", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - ipBlock: {cidr: "{{host "y/b"}}"}
`)},
		tcp(80, deny(anyPod, pod("x/a")), allow(pod("y/b"), pod("x/a"))))},
	{"ipBlock ingress except", only([]string{np("x", "b-from-wide-except-z-a", `
podSelector: {matchLabels: {pod: b}}
ingress:
- from:
  - ipBlock: {cidr: "{{wide "z/a"}}", except: ["{{host "z/a"}}"]}
`)},
		tcp(80, deny(pod("z/a"), pod("x/b"))))},
	{"ipBlock except", []step{
		{what: "a wide block except x/b", policies: []string{np("x", "a-to-wide-except-b", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- to:
  - ipBlock: {cidr: "{{wide "x/b"}}", except: ["{{host "x/b"}}"]}
`)}, checks: []check{tcp(80, deny(pod("x/a"), pod("x/b")))}},
		{what: "x/b's /32 allowed by a second policy", policies: []string{np("x", "a-to-wide-except-b", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- to:
  - ipBlock: {cidr: "{{wide "x/b"}}", except: ["{{host "x/b"}}"]}
`), np("x", "a-to-b-cidr", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- to:
  - ipBlock: {cidr: "{{host "x/b"}}"}
`)}, checks: []check{tcp(80)}},
		{what: "only x/b's /32 left", policies: []string{np("x", "a-to-b-cidr", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- to:
  - ipBlock: {cidr: "{{host "x/b"}}"}
`)}, checks: []check{tcp(80, deny(pod("x/a"), anyPod), allow(pod("x/a"), pod("x/b")))}},
	}},
	// Upstream: "should enforce policies to check ingress and egress
	// policies can be controlled independently based on PodSelector".
	// Default-deny in the other direction makes the first step observable.
	{"ingress denied while egress stays allowed", []step{
		{what: "egress denied in x but allowed for x/a", policies: []string{denyEgressX, allowEgressForXa},
			checks: []check{tcp(80, deny(inNS("x"), anyPod), allow(pod("x/a"), anyPod))}},
		{what: "ingress into x/a denied", policies: []string{denyEgressX, allowEgressForXa, np("x", "deny-ingress-to-a", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Ingress]
`)}, checks: []check{tcp(80, deny(inNS("x"), anyPod), allow(pod("x/a"), anyPod), deny(anyPod, pod("x/a")))}},
	}},
	{"egress denied while ingress stays allowed", []step{
		{what: "ingress denied in x but allowed into x/a", policies: []string{denyIngressX, allowIngressForXa},
			checks: []check{tcp(80, deny(anyPod, inNS("x")), allow(anyPod, pod("x/a")))}},
		{what: "egress from x/a denied", policies: []string{denyIngressX, allowIngressForXa, np("x", "deny-egress-from-a", `
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
`)}, checks: []check{
			tcp(80, deny(anyPod, inNS("x")), allow(anyPod, pod("x/a")), deny(pod("x/a"), anyPod)),
			udp(80, deny(anyPod, inNS("x")), allow(anyPod, pod("x/a")), deny(pod("x/a"), anyPod)),
		}},
	}},
	{"UDP-only rule", only([]string{np("x", "a-udp-80", `
podSelector: {matchLabels: {pod: a}}
ingress:
- ports: [{protocol: UDP, port: 80}]
`)},
		tcp(80, deny(anyPod, pod("x/a"))), udp(80), udp(81, deny(anyPod, pod("x/a"))))},
	{"protocol without port", only([]string{np("x", "a-tcp-any-port", `
podSelector: {matchLabels: {pod: a}}
ingress:
- ports: [{protocol: TCP}]
`)},
		udp(80, deny(anyPod, pod("x/a"))), tcp(80), tcp(81))},
	// Upstream: "should not mistakenly treat 'protocol: SCTP' as 'protocol:
	// TCP', even if the plugin doesn't support SCTP" and "should properly
	// isolate pods that are selected by a policy allowing SCTP". A failure
	// here is a security hole, SCTP support or not.
	{"SCTP is not TCP", []step{
		{what: "default-deny-ingress and SCTP 81 allowed", policies: []string{denyIngressX, np("x", "allow-only-sctp-ingress-on-port-81", `
podSelector: {matchLabels: {pod: a}}
ingress:
- ports: [{protocol: SCTP, port: 81}]
`)}, checks: []check{tcp(81, deny(anyPod, inNS("x")))}},
		{what: "only an SCTP 80 rule isolates x/a", policies: []string{np("x", "allow-only-sctp-ingress-on-port-80", `
podSelector: {matchLabels: {pod: a}}
ingress:
- ports: [{protocol: SCTP, port: 80}]
`)}, checks: []check{tcp(80, deny(anyPod, pod("x/a"))), udp(80, deny(anyPod, pod("x/a")))}},
	}},
	{"updated policy", []step{
		{what: "x/a allows x/b", policies: []string{xaFromXb},
			checks: []check{tcp(80, deny(anyPod, pod("x/a")), allow(pod("x/b"), pod("x/a")))}},
		{what: "updated to allow x/c instead", policies: []string{np("x", "x-a-allows-x-b", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - podSelector: {matchLabels: {pod: c}}
`)}, checks: []check{tcp(80, deny(anyPod, pod("x/a")), allow(pod("x/c"), pod("x/a")))}},
	}},
	{"updated pod labels select a peer", []step{
		{what: "x/a allows role=client, which nobody has", policies: []string{np("x", "a-from-clients", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - podSelector: {matchLabels: {role: client}}
`)}, checks: []check{tcp(80, deny(anyPod, pod("x/a")))}},
		{what: "x/b (other node) labelled role=client", relabel: func(t *testing.T, nc *netpolCluster) {
			nc.relabelPod("x/b", map[string]string{"pod": "b", "role": "client"})
		}, checks: []check{tcp(80, deny(anyPod, pod("x/a")), allow(pod("x/b"), pod("x/a")))}},
		{what: "x/c (same node) labelled role=client, x/b no longer", relabel: func(t *testing.T, nc *netpolCluster) {
			nc.relabelPod("x/b", map[string]string{"pod": "b"})
			nc.relabelPod("x/c", map[string]string{"pod": "c", "role": "client"})
		}, checks: []check{tcp(80, deny(anyPod, pod("x/a")), allow(pod("x/c"), pod("x/a")))}},
		{what: "x/c loses role=client", relabel: func(t *testing.T, nc *netpolCluster) {
			nc.relabelPod("x/c", map[string]string{"pod": "c"})
		}, checks: []check{tcp(80, deny(anyPod, pod("x/a")))}},
	}},
	{"updated pod labels select a target", []step{
		{what: "x/c labelled isolated=true", policies: []string{np("x", "deny-isolated", `
podSelector: {matchLabels: {isolated: "true"}}
policyTypes: [Ingress, Egress]
`)}, relabel: func(t *testing.T, nc *netpolCluster) {
			nc.relabelPod("x/c", map[string]string{"pod": "c", "isolated": "true"})
		}, checks: []check{tcp(80, deny(anyPod, pod("x/c")), deny(pod("x/c"), anyPod))}},
		{what: "label moved from x/c to x/b", relabel: func(t *testing.T, nc *netpolCluster) {
			nc.relabelPod("x/c", map[string]string{"pod": "c"})
			nc.relabelPod("x/b", map[string]string{"pod": "b", "isolated": "true"})
		}, checks: []check{tcp(80, deny(anyPod, pod("x/b")), deny(pod("x/b"), anyPod))}},
	}},
	// Pods with equal labels in one namespace share an identity; pods
	// joining and leaving it must take and lose its policy.
	{"updated pod labels join and leave a shared identity", []step{
		{what: "x/a allows x/c", policies: []string{np("x", "a-from-c", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - podSelector: {matchLabels: {pod: c}}
`)}, checks: []check{tcp(80, deny(anyPod, pod("x/a")), allow(pod("x/c"), pod("x/a")))}},
		{what: "x/b relabelled pod=a", relabel: func(t *testing.T, nc *netpolCluster) {
			nc.relabelPod("x/b", map[string]string{"pod": "a"})
		}, checks: []check{tcp(80, deny(anyPod, pod("x/a")), allow(pod("x/c"), pod("x/a")),
			deny(anyPod, pod("x/b")), allow(pod("x/c"), pod("x/b")))}},
		{what: "x/c relabelled pod=a too", relabel: func(t *testing.T, nc *netpolCluster) {
			nc.relabelPod("x/c", map[string]string{"pod": "a"})
		}, checks: []check{tcp(80, deny(anyPod, inNS("x")))}},
		{what: "x/c back to pod=c", relabel: func(t *testing.T, nc *netpolCluster) {
			nc.relabelPod("x/c", map[string]string{"pod": "c"})
		}, checks: []check{tcp(80, deny(anyPod, pod("x/a")), allow(pod("x/c"), pod("x/a")),
			deny(anyPod, pod("x/b")), allow(pod("x/c"), pod("x/b")))}},
		{what: "x/b back to pod=b", relabel: func(t *testing.T, nc *netpolCluster) {
			nc.relabelPod("x/b", map[string]string{"pod": "b"})
		}, checks: []check{tcp(80, deny(anyPod, pod("x/a")), allow(pod("x/c"), pod("x/a")))}},
	}},
	{"updated namespace labels", []step{
		{what: "x/a allows namespaces with ns2=updated, which none has", policies: []string{np("x", "a-from-updated-ns", `
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns2: updated}}
`)}, checks: []check{tcp(80, deny(anyPod, pod("x/a")))}},
		{what: "namespace y labelled ns2=updated", relabel: func(t *testing.T, nc *netpolCluster) {
			nc.relabelNamespace(t, "y", map[string]string{"ns": "y", "ns2": "updated"})
		}, checks: []check{tcp(80, deny(anyPod, pod("x/a")), allow(inNS("y"), pod("x/a")))}},
		{what: "namespace z labelled too, y unlabelled", relabel: func(t *testing.T, nc *netpolCluster) {
			nc.relabelNamespace(t, "y", map[string]string{"ns": "y"})
			nc.relabelNamespace(t, "z", map[string]string{"ns": "z", "ns2": "updated"})
		}, checks: []check{tcp(80, deny(anyPod, pod("x/a")), allow(inNS("z"), pod("x/a")))}},
	}},
	{"deleted policy", []step{
		{what: "deny-all in x", policies: []string{denyAllX},
			checks: []check{tcp(80, deny(anyPod, inNS("x")), deny(inNS("x"), anyPod))}},
		{what: "policy deleted", policies: none, checks: []check{tcp(80)}},
	}},
}

// run applies the case's steps and checks each; a failed check does not
// stop the case (the next steps still tell something).
func (nc *netpolCluster) run(t *testing.T, tc netpolCase) {
	defer nc.reset(t, tc)
	for i, s := range tc.steps {
		what := fmt.Sprintf("step %d (%s)", i+1, s.what)
		if s.policies != nil {
			if len(s.policies) == 0 {
				require.NoError(t, nc.e.c.RemoveManifest(netpolManifest))
			} else {
				require.NoError(t, nc.e.c.WriteManifest(netpolManifest, nc.render(t, s.policies)))
			}
		}
		if s.relabel != nil {
			s.relabel(t, nc)
			require.NoError(t, nc.e.c.SyncManifests())
		}
		time.Sleep(applyDelay)
		for _, c := range s.checks {
			nc.expectMatrix(t, what, c)
		}
	}
}

// reset removes the case's policies and label changes and waits until every
// matrix the case checked is fully reachable again.
func (nc *netpolCluster) reset(t *testing.T, tc netpolCase) {
	nc.broken = true // until proven otherwise, also when a require below fails
	require.NoError(t, nc.e.c.RemoveManifest(netpolManifest))
	if nc.relabelled {
		nc.resetLabels(t)
	}
	// Without policy no endpoint is enforced: waiting for that first saves
	// probing (and timing out on) the old state.
	for _, n := range nc.e.c.Nodes() {
		require.Eventually(t, func() bool { return nc.e.status(n).Policy.EnforcedEndpoints == 0 },
			settleTimeout, 20*time.Millisecond, "endpoints on %s still enforced after the case's policies were removed", n.Name)
	}
	seen := map[string]bool{}
	ok := true
	for _, s := range tc.steps {
		for _, c := range s.checks {
			if seen[c.String()] {
				continue
			}
			seen[c.String()] = true
			ok = nc.expectMatrix(t, "after reset", check{proto: c.proto, port: c.port}) && ok
		}
	}
	nc.broken = !ok
}

// TestNetpolCasesAreObservable checks the case table itself (no root
// needed): the first check of every step must expect a different matrix
// than the one before the step, on its port and protocol. Otherwise it could
// pass on the old state before the agents applied the step, and so would
// every later check of the step, proving nothing; the steps are ordered so
// that an observable change comes first.
func TestNetpolCasesAreObservable(t *testing.T) {
	for _, tc := range netpolCases {
		before := map[string]truth{} // by check.String(); absent: all reachable
		for i, s := range tc.steps {
			require.NotEmpty(t, s.checks, "%s step %d has no checks", tc.name, i+1)
			first := s.checks[0]
			prev, ok := before[first.String()]
			if !ok {
				prev = expectedTruth(nil)
			}
			want := expectedTruth(first.want)
			if want.equal(&prev) {
				t.Errorf("case %q step %d (%s): its first check (%s) expects the matrix in force before the step", tc.name, i+1, s.what, first)
			}
			for _, c := range s.checks {
				before[c.String()] = expectedTruth(c.want)
			}
		}
	}
}

// netpolCasesFlag selects TestNetpolConformance's cases by name (an
// unanchored regular expression; all by default): the VM matrix's smoke
// suite runs one case of each policy category on kernels where the whole
// table takes too long under emulation.
var netpolCasesFlag = flag.String("e2e.netpol-cases", "", "run only TestNetpolConformance's cases whose names match this regular expression")

// netpolFamiliesFlag selects the address families TestNetpolConformance
// runs its cases in (the smoke suite: IPv4; its IPv6 coverage is
// TestDualStackPolicyRevocation's).
var netpolFamiliesFlag = flag.String("e2e.netpol-families", "IPv4,IPv6", "run TestNetpolConformance in these address families (IPv4, IPv6, comma-separated)")

// TestNetpolConformance runs the Kubernetes network policy behaviours of
// upstream's netpol e2e suite against Sluice agents on a routed and a bridge
// node, over IPv4 and over IPv6; see the top of this file.
func TestNetpolConformance(t *testing.T) {
	cases, err := selectNetpolCases(netpolCases, *netpolCasesFlag)
	require.NoError(t, err)
	families := strings.Split(*netpolFamiliesFlag, ",")
	for _, f := range families {
		require.Contains(t, []string{"IPv4", "IPv6"}, f, "-e2e.netpol-families")
	}
	for _, fam := range []struct {
		name string
		v6   bool
	}{{"IPv4", false}, {"IPv6", true}} {
		if !slices.Contains(families, fam.name) {
			continue
		}
		t.Run(fam.name, func(t *testing.T) { testNetpolConformance(t, cases, fam.v6) })
	}
}

func testNetpolConformance(t *testing.T, cases []netpolCase, v6 bool) {
	nc := newNetpolCluster(t, v6)
	// The cluster starts without policy: everything is reachable.
	for _, c := range []check{tcp(80), tcp(81), udp(80), udp(81)} {
		require.True(t, nc.expectMatrix(t, "no policy", c))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { nc.run(t, tc) })
		if nc.broken {
			t.Fatalf("reachability did not come back after case %q; the later cases would be meaningless", tc.name)
		}
	}
}

// selectNetpolCases are the cases whose names match pattern (all for "");
// a pattern that selects none is an error, so that a renamed case cannot
// drop out of a suite unnoticed.
func selectNetpolCases(cases []netpolCase, pattern string) ([]netpolCase, error) {
	if pattern == "" {
		return cases, nil
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("-e2e.netpol-cases: %w", err)
	}
	out := slices.DeleteFunc(slices.Clone(cases), func(c netpolCase) bool { return !re.MatchString(c.name) })
	if len(out) == 0 {
		return nil, fmt.Errorf("-e2e.netpol-cases %q selects no case", pattern)
	}
	return out, nil
}
