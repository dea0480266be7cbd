package e2e

// The policy tools on simulated nodes: `sluice policy suggest` turns the
// recorded flows of a multi-tier app into policies that, applied through
// the files source, allow every observed connection and deny the others
// (and, in audit mode, report them instead); `sluice policy trace`
// answers as real connections turn out, and reports maps that disagree
// with the model.
//
//	node1 (routed)                          node2 (bridge)
//	  frontend-7d9f-a :8080  ◄── ext1 172.31.0.200 (world)
//	  frontend ──► svc shop/api 10.96.0.20:80 ──► api-5c4b-a :8080 (node1), api-5c4b-b :8080 (node2)
//	  api-5c4b-a ───────────────────────────────► db-0 :5432 (StatefulSet, also listens on 9999)
//	  frontend, api ──► svc kube-system/kube-dns 10.96.0.10:53/UDP ──► coredns-1-a :53

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
)

var (
	apiVIP = netip.MustParseAddr("10.96.0.20")
	dnsVIP = netip.MustParseAddr("10.96.0.10")
)

// tierApp is the app of this file's picture, its agents running.
type tierApp struct {
	e                          *env
	n1, n2                     *harness.Node
	frontend, apiA, apiB, db   *harness.Pod
	dns                        *harness.Pod
	ext                        *harness.External
	frontendIP, apiAIP, dbAddr netip.Addr
}

func newTierApp(t *testing.T) *tierApp {
	e := newEnv(t)
	a := &tierApp{e: e, n1: e.node("node1", harness.Routed), n2: e.node("node2", harness.Bridge)}
	var err error
	a.ext, err = e.c.AddExternal(ctx(t), "ext1")
	require.NoError(t, err)
	pod := func(n *harness.Node, ns, name, kind, owner string, labels map[string]string, tcp, udp []int) *harness.Pod {
		p := e.pod(n, ns, name, labels)
		p.SetController(kind, owner)
		for _, port := range tcp {
			_, err := p.StartTCPEchoServer(port)
			require.NoError(t, err)
		}
		for _, port := range udp {
			_, err := p.StartUDPEchoServer(port)
			require.NoError(t, err)
		}
		return p
	}
	a.frontend = pod(a.n1, "shop", "frontend-7d9f-a", "ReplicaSet", "frontend-7d9f",
		map[string]string{"app": "frontend", "pod-template-hash": "7d9f"}, []int{8080}, nil)
	a.apiA = pod(a.n1, "shop", "api-5c4b-a", "ReplicaSet", "api-5c4b",
		map[string]string{"app": "api", "pod-template-hash": "5c4b"}, []int{8080}, nil)
	a.apiB = pod(a.n2, "shop", "api-5c4b-b", "ReplicaSet", "api-5c4b",
		map[string]string{"app": "api", "pod-template-hash": "5c4b"}, []int{8080}, nil)
	a.db = pod(a.n2, "shop", "db-0", "StatefulSet", "db",
		map[string]string{"app": "db", "statefulset.kubernetes.io/pod-name": "db-0", "controller-revision-hash": "db-6b8"}, []int{5432, 9999}, nil)
	a.dns = pod(a.n2, "kube-system", "coredns-1-a", "ReplicaSet", "coredns-1",
		map[string]string{"k8s-app": "kube-dns", "pod-template-hash": "1"}, nil, []int{53})
	a.frontendIP, a.apiAIP, a.dbAddr = a.frontend.IP, a.apiA.IP, a.db.IP
	require.NoError(t, e.c.SyncManifests())
	dnsPorts := []svcPort{{"dns", 53, "53", 53, "UDP"}}
	apiPorts := []svcPort{{"http", 80, "8080", 8080, "TCP"}}
	require.NoError(t, e.c.WriteManifest("svc.yaml", serviceYAML("shop", "api", apiVIP, apiPorts, ready(a.apiA, a.apiB), "")+
		"---\n"+serviceYAML("kube-system", "kube-dns", dnsVIP, dnsPorts, ready(a.dns), "")))
	e.startAgent(a.n1)
	e.startAgent(a.n2)
	e.waitServices(2)
	return a
}

// probe is one connection of the app and whether it is to get through.
type probe struct {
	from     *harness.Host
	fromAddr netip.Addr
	name     string // "frontend -> db:5432", for messages
	proto    string
	to       netip.Addr
	port     int
	want     string // the server's whoami answer
}

func (a *tierApp) host(p *harness.Pod) *harness.Host { return &p.Host }

// check runs probes from each host at once and requires that those in
// allow got their answer and the others none.
func (a *tierApp) check(t *testing.T, what string, allow, deny []probe) {
	t.Helper()
	bySource := map[*harness.Host][]probe{}
	for _, p := range append(append([]probe{}, allow...), deny...) {
		bySource[p.from] = append(bySource[p.from], p)
	}
	allowed := map[string]bool{}
	for _, p := range allow {
		allowed[p.name] = true
	}
	for from, ps := range bySource {
		var targets []harness.Target
		for _, p := range ps {
			targets = append(targets, harness.Target{Protocol: p.proto, Addr: p.to, Port: p.port})
		}
		res, err := from.Probe(ctx(t), 2*time.Second, targets...)
		require.NoError(t, err)
		for i, p := range ps {
			if allowed[p.name] {
				require.NoError(t, res[i].Err, "%s: %s is allowed", what, p.name)
				require.Equal(t, p.want, res[i].Reply, "%s: %s", what, p.name)
			} else {
				require.Error(t, res[i].Err, "%s: %s is denied, yet %s answered", what, p.name, res[i].Reply)
			}
		}
	}
}

// observed are the connections the app makes while it is recorded.
func (a *tierApp) observed() []probe {
	fe, apiA := a.host(a.frontend), a.host(a.apiA)
	return []probe{
		{&a.ext.Host, a.ext.IP, "world -> frontend:8080", "TCP", a.frontendIP, 8080, "shop/frontend-7d9f-a"},
		{fe, a.frontendIP, "frontend -> api-a:8080", "TCP", a.apiAIP, 8080, "shop/api-5c4b-a"},
		{fe, a.frontendIP, "frontend -> api-b:8080", "TCP", a.apiB.IP, 8080, "shop/api-5c4b-b"},
		{apiA, a.apiAIP, "api-a -> db:5432", "TCP", a.dbAddr, 5432, "shop/db-0"},
		{a.host(a.apiB), a.apiB.IP, "api-b -> db:5432", "TCP", a.dbAddr, 5432, "shop/db-0"},
		{fe, a.frontendIP, "frontend -> kube-dns:53", "UDP", dnsVIP, 53, "kube-system/coredns-1-a"},
		{apiA, a.apiAIP, "api-a -> kube-dns:53", "UDP", dnsVIP, 53, "kube-system/coredns-1-a"},
	}
}

// unobserved are connections the app never made while recorded.
func (a *tierApp) unobserved() []probe {
	fe, apiA := a.host(a.frontend), a.host(a.apiA)
	return []probe{
		{fe, a.frontendIP, "frontend -> db:5432 (skips a tier)", "TCP", a.dbAddr, 5432, "shop/db-0"},
		{&a.ext.Host, a.ext.IP, "world -> api-a:8080", "TCP", a.apiAIP, 8080, "shop/api-5c4b-a"},
		{&a.ext.Host, a.ext.IP, "world -> db:5432", "TCP", a.dbAddr, 5432, "shop/db-0"},
		{apiA, a.apiAIP, "api-a -> frontend:8080 (backwards)", "TCP", a.frontendIP, 8080, "shop/frontend-7d9f-a"},
		{apiA, a.apiAIP, "api-a -> db:9999 (another port)", "TCP", a.dbAddr, 9999, "shop/db-0"},
		{a.host(a.db), a.dbAddr, "db -> kube-dns:53 (never resolved)", "UDP", dnsVIP, 53, "kube-system/coredns-1-a"},
	}
}

// cliOut runs the sluice CLI against n's agent and returns its stdout and
// its error (with stderr), for commands whose failure is under test.
func (e *env) cliOut(n *harness.Node, args ...string) (string, error) {
	full := append([]string{"--state-dir", n.StateDir, "--bpf-root", n.BPFRoot}, args...)
	cmd := exec.CommandContext(ctx(e.t), e.cliBin, full...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		err = fmt.Errorf("%w: %s", err, stderr.String())
	}
	return string(out), err
}

func TestPolicySuggestFromRecordedFlows(t *testing.T) {
	a := newTierApp(t)
	e := a.e

	// Record: the app's traffic, with no policy; then every node's flows,
	// as `sluice observe -o jsonpb` writes them, in one file.
	a.check(t, "recording", a.observed(), nil)
	// The service path too: the frontend reaches the api through its VIP.
	for range 4 {
		who, err := a.frontend.TCPRequest(ctx(t), apiVIP, 80, "whoami")
		require.NoError(t, err)
		require.Contains(t, who, "shop/api-5c4b-")
	}
	// Until every connection is in some node's flow store (the agents
	// read their events asynchronously).
	var recorded strings.Builder
	require.Eventually(t, func() bool {
		recorded.Reset()
		for _, n := range []*harness.Node{a.n1, a.n2} {
			out, err := e.cliOut(n, "observe", "--since", "1h", "-o", "jsonpb")
			require.NoError(t, err)
			recorded.WriteString(out)
		}
		for _, p := range a.observed() {
			to := p.to
			if to == dnsVIP {
				to = a.dns.IP // the flow shows the backend
			}
			from := `"source":"` + p.fromAddr.String() + `"`
			if !strings.Contains(recorded.String(), from+`,"destination":"`+to.String()+`"`) {
				return false
			}
		}
		return true
	}, 10*time.Second, 200*time.Millisecond, "every recorded connection in the flow stores")
	flowsFile := filepath.Join(t.TempDir(), "flows.jsonpb")
	require.NoError(t, os.WriteFile(flowsFile, []byte(recorded.String()), 0o600))

	suggested, err := e.cliOut(a.n1, "policy", "suggest", "--from-file", flowsFile)
	require.NoError(t, err)
	t.Logf("suggested:\n%s", suggested)
	for _, want := range []string{"name: frontend-suggested", "name: api-suggested", "name: db-suggested", "name: coredns-suggested",
		"cidr: " + a.ext.IP.String() + "/32", "kubernetes.io/metadata.name: kube-system"} {
		require.Contains(t, suggested, want)
	}
	for _, volatile := range []string{"pod-template-hash:", "statefulset.kubernetes.io/pod-name:", "controller-revision-hash:", "api-5c4b-a\n"} {
		require.NotContains(t, suggested, volatile, "workloads are selected by their stable labels, never by pod")
	}

	// Before the policies: the connections never recorded get through.
	a.check(t, "before the policies", a.unobserved(), nil)

	require.NoError(t, e.c.WriteManifest("suggested.yaml", suggested))
	require.Eventually(t, func() bool {
		return e.status(a.n1).Policy.EnforcedEndpoints == 2 && e.status(a.n2).Policy.EnforcedEndpoints == 3
	}, 10*time.Second, 50*time.Millisecond, "policies enforced: %v %v", e.problems(a.n1), e.problems(a.n2))

	// Enforced: every observed connection, and no other, gets through.
	// api-b never resolved while recorded: its workload did.
	allow := append(a.observed(), probe{a.host(a.apiB), a.apiB.IP, "api-b -> kube-dns:53", "UDP", dnsVIP, 53, "kube-system/coredns-1-a"})
	a.check(t, "enforced", allow, a.unobserved())
	who, err := a.frontend.TCPRequest(ctx(t), apiVIP, 80, "whoami")
	require.NoError(t, err, "through the service VIP")
	require.Contains(t, who, "shop/api-5c4b-")

	// Audit mode: the same policies, each namespace annotated as the
	// --audit output says: nothing unobserved is dropped, and
	// `sluice observe --verdict AUDIT` shows what would have been.
	audited, err := e.cliOut(a.n1, "policy", "suggest", "--from-file", flowsFile, "--audit")
	require.NoError(t, err)
	var policies []string
	for _, doc := range strings.Split(audited, "\n---\n") {
		var ns struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name        string            `json:"name"`
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		require.NoError(t, yaml.Unmarshal([]byte(doc), &ns))
		if ns.Kind != "Namespace" {
			policies = append(policies, doc)
			continue
		}
		require.Equal(t, map[string]string{"sluice.io/policy-audit": "true"}, ns.Metadata.Annotations)
		// The files source defines each namespace once: the annotation
		// goes onto the cluster's own Namespace object.
		require.NoError(t, e.c.SetNamespaceAnnotations(ns.Metadata.Name, ns.Metadata.Annotations))
	}
	require.Len(t, policies, 4)
	require.NoError(t, e.c.WriteManifest("suggested.yaml", strings.Join(policies, "\n---\n")))
	require.NoError(t, e.c.SyncManifests())
	require.Eventually(t, func() bool {
		for _, n := range []*harness.Node{a.n1, a.n2} {
			var eps []datapath.EndpointEntry
			if err := json.Unmarshal([]byte(e.cli(n, "bpf", "endpoint", "list", "-o", "json")), &eps); err != nil {
				return false
			}
			for _, ep := range eps {
				if ep.PolicyFlags&datapath.EPFlagPolicyAudit == 0 {
					return false
				}
			}
		}
		return true
	}, 10*time.Second, 100*time.Millisecond, "every endpoint in audit mode")
	a.check(t, "audit mode", append(allow, a.unobserved()...), nil)
	// What the policies would have denied, as `sluice observe --verdict
	// AUDIT` shows it: at the db (node2) and at the api (node1).
	for _, w := range []struct {
		n        *harness.Node
		src, dst netip.Addr
		port     string
	}{
		{a.n2, a.ext.IP, a.dbAddr, "5432"},
		{a.n2, a.frontendIP, a.dbAddr, "5432"},
		{a.n2, a.apiAIP, a.dbAddr, "9999"},
		{a.n1, a.ext.IP, a.apiAIP, "8080"},
		{a.n1, a.apiAIP, a.frontendIP, "8080"},
	} {
		var out string
		require.Eventually(t, func() bool {
			out, err = e.cliOut(w.n, "observe", "--verdict", "AUDIT", "--from-ip", w.src.String(), "--to-ip", w.dst.String(),
				"--to-port", w.port, "--since", "5m")
			return err == nil && strings.Contains(out, "AUDITED")
		}, 10*time.Second, 200*time.Millisecond, "%s -> %s:%s audited on %s: %s %v", w.src, w.dst, w.port, w.n.Name, out, err)
	}
}

// The policies the trace test runs under: the app's, by hand.
func tracePolicies(ext netip.Addr) string {
	np := func(name, app, body string) string {
		return "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: " + name + ", namespace: shop}\n" +
			"spec:\n  podSelector: {matchLabels: {app: " + app + "}}\n" + body
	}
	return strings.Join([]string{
		np("frontend", "frontend", "  policyTypes: [Ingress, Egress]\n"+
			"  ingress:\n  - from: [{ipBlock: {cidr: "+ext.String()+"/32}}]\n    ports: [{protocol: TCP, port: 8080}]\n"+
			"  egress:\n  - to: [{podSelector: {matchLabels: {app: api}}}]\n    ports: [{protocol: TCP, port: 8080}]\n"+
			"  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}}]\n    ports: [{protocol: UDP, port: 53}]\n"),
		np("api", "api", "  policyTypes: [Ingress]\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: frontend}}}]\n    ports: [{protocol: TCP, port: 8080}]\n"),
		np("db", "db", "  policyTypes: [Ingress]\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: api}}}]\n    ports: [{protocol: TCP, port: 5432}]\n"),
	}, "---\n")
}

func (e *env) trace(n *harness.Node, args ...string) (*api.PolicyTraceAnswer, error) {
	out, err := e.cliOut(n, append([]string{"policy", "trace", "-o", "json"}, args...)...)
	var ans api.PolicyTraceAnswer
	require.NoError(e.t, json.Unmarshal([]byte(out), &ans), "sluice policy trace %s: %s (%v)", strings.Join(args, " "), out, err)
	return &ans, err
}

func TestPolicyTraceAgainstConnections(t *testing.T) {
	a := newTierApp(t)
	e := a.e
	require.NoError(t, e.c.WriteManifest("policies.yaml", tracePolicies(a.ext.IP)))
	require.Eventually(t, func() bool {
		return e.status(a.n1).Policy.EnforcedEndpoints == 2 && e.status(a.n2).Policy.EnforcedEndpoints == 2
	}, 10*time.Second, 50*time.Millisecond)
	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx(t), 2*time.Second)
		t.Cleanup(cancel)
		return c
	}

	// Allowed through the service VIP: the translation from the model and
	// from the LB maps, both backends, each path allowed by its rules, the
	// local endpoints' maps agreeing.
	ans, err := e.trace(a.n1, "--from", a.frontend.String(), "--to", "shop/api", "--port", "80")
	require.NoError(t, err)
	tr := ans.Trace
	require.Equal(t, "allowed", tr.Verdict)
	require.Empty(t, tr.Problems)
	require.NotNil(t, tr.Service)
	require.Equal(t, "10.96.0.20:80/TCP", tr.Service.Frontend)
	require.True(t, tr.Service.MapsRead)
	require.ElementsMatch(t, []string{a.apiAIP.String() + ":8080", a.apiB.IP.String() + ":8080"}, tr.Service.MapBackends)
	require.Len(t, tr.Paths, 2)
	for _, p := range tr.Paths {
		require.Equal(t, "allowed", p.Verdict)
		require.Equal(t, "shop/frontend egress[0]", p.Egress.Rule)
		require.True(t, p.Egress.Maps.Agrees)
		require.Equal(t, "shop/api ingress[0]", p.Ingress.Rule)
		if p.To.Name == a.apiA.String() {
			require.True(t, p.Ingress.Local)
			require.True(t, p.Ingress.Maps.Agrees)
		} else {
			require.False(t, p.Ingress.Local, "api-b is node2's: decided from the model")
			require.Nil(t, p.Ingress.Maps)
		}
	}
	for range 4 {
		who, err := a.frontend.TCPRequest(ctx(t), apiVIP, 80, "whoami")
		require.NoError(t, err, "the trace said allowed")
		require.Contains(t, who, "shop/api-5c4b-")
	}
	// The same by the VIP's address, in the human form.
	out := e.cli(a.n1, "policy", "trace", "--from", a.frontend.String(), "--to", "10.96.0.20:80")
	t.Logf("trace:\n%s", out)
	require.Contains(t, out, "Service:  shop/api, frontend 10.96.0.20:80/TCP (ClusterIP)")
	require.Contains(t, out, "Verdict:  ALLOWED")

	// Denied by default-deny at both ends.
	ans, err = e.trace(a.n1, "--from", a.frontend.String(), "--to", a.db.String()+":5432")
	require.NoError(t, err)
	require.Equal(t, "denied", ans.Trace.Verdict)
	require.Empty(t, ans.Trace.Problems)
	p := ans.Trace.Paths[0]
	require.Equal(t, "default-deny", p.Egress.Rule)
	require.Equal(t, "default-deny", p.Egress.Maps.Rule)
	require.Equal(t, "default-deny", p.Ingress.Rule)
	_, err = a.frontend.TCPRequest(short(), a.dbAddr, 5432, "whoami")
	require.Error(t, err, "the trace said denied")

	// Allowed pod to pod, read at the server's node; from the world by
	// ipBlock.
	ans, err = e.trace(a.n2, "--from", a.apiA.String(), "--to", a.db.String(), "--port", "5432")
	require.NoError(t, err)
	require.Equal(t, "allowed", ans.Trace.Verdict)
	require.Nil(t, ans.Trace.Paths[0].Egress.Maps, "api-a's egress is node1's")
	require.Equal(t, "not-enforced", ans.Trace.Paths[0].Egress.Verdict)
	require.Equal(t, "shop/db ingress[0]", ans.Trace.Paths[0].Ingress.Maps.Rule)
	who, err := a.apiA.TCPRequest(ctx(t), a.dbAddr, 5432, "whoami")
	require.NoError(t, err)
	require.Equal(t, "shop/db-0", who)
	ans, err = e.trace(a.n1, "--from", a.ext.IP.String(), "--to", a.frontend.String()+":8080")
	require.NoError(t, err)
	require.Equal(t, "allowed", ans.Trace.Verdict)
	require.Contains(t, ans.Trace.Paths[0].Ingress.Maps.Entry, "cidr-class")

	// What if db admitted nobody: the api's connections to it (in node2's
	// flow store) are listed, and the trace turns to denied; nothing
	// applied changes.
	e.waitFlow(a.n2, "api-a's connection to the db", func(f *flowpb.Flow) bool {
		return f.GetIP().GetSource() == a.apiAIP.String() && f.GetIP().GetDestination() == a.dbAddr.String() &&
			f.GetVerdict() == flowpb.Verdict_FORWARDED
	})
	lockdown := filepath.Join(t.TempDir(), "lockdown.yaml")
	require.NoError(t, os.WriteFile(lockdown, []byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"+
		"metadata: {name: db, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Ingress]\n"), 0o600))
	ans, err = e.trace(a.n2, "--from", a.apiA.String(), "--to", a.db.String()+":5432", "--what-if", lockdown)
	require.NoError(t, err)
	require.Equal(t, "allowed", ans.Trace.Verdict, "live")
	require.Equal(t, []string{"shop/db"}, ans.WhatIf.Replaced)
	require.Equal(t, "denied", ans.WhatIf.Trace.Verdict)
	var found bool
	for _, d := range ans.WhatIf.Denied {
		if d.From == "shop/api (Deployment)" && d.To == "shop/db (StatefulSet)" && d.Port == 5432 {
			found = true
			require.Equal(t, "ingress (default-deny)", d.At)
			require.Equal(t, "allowed by shop/db ingress[0]", d.Now)
		}
	}
	require.True(t, found, "the api's connections to the db would be denied: %+v", ans.WhatIf.Denied)

	// A wrong entry written into db-0's policy map: the maps now allow
	// any peer on TCP 9999, which no policy says. The trace reads the
	// maps, reports the disagreement and fails; the world gets through,
	// as the maps (not the model) decide.
	ans, err = e.trace(a.n2, "--from", a.ext.IP.String(), "--to", a.db.String()+":9999")
	require.NoError(t, err, "model and maps agree before")
	require.Equal(t, "denied", ans.Trace.Verdict)
	_, err = a.ext.TCPRequest(short(), a.dbAddr, 9999, "whoami")
	require.Error(t, err)

	sl, err := ebpf.LoadPinnedMap(filepath.Join(a.n2.BPFRoot, bpfobj.EndpointMapSlPolicy), nil)
	require.NoError(t, err)
	defer sl.Close()
	var inner *ebpf.Map
	require.NoError(t, sl.Lookup(endpointID(t, e.endpoints(a.n2), a.db), &inner))
	defer inner.Close()
	key := bpfobj.EndpointSlPolicyKey{Prefixlen: 64, Identity: datapath.IdentityAny, Dir: 1, Proto: 6, Dport: 9999<<8&0xff00 | 9999>>8}
	val := bpfobj.EndpointSlPolicyEntry{Rule: 4242, Verdict: datapath.VerdictAllow, Prefixlen: 64}
	require.NoError(t, inner.Put(&key, &val))

	ans, err = e.trace(a.n2, "--from", a.ext.IP.String(), "--to", a.db.String()+":9999")
	require.Error(t, err, "a disagreement fails the command")
	require.Contains(t, err.Error(), "the datapath's maps disagree with the agent's model (1 problem)")
	require.Len(t, ans.Trace.Problems, 1)
	require.Contains(t, ans.Trace.Problems[0], "ingress at shop/db-0: the datapath's maps decide allowed (a rule no policy has, rule ID 4242, entry any peer TCP/9999), the model denied (default-deny)")
	require.False(t, ans.Trace.Paths[0].Ingress.Maps.Agrees)
	who, err = a.ext.TCPRequest(ctx(t), a.dbAddr, 9999, "whoami")
	require.NoError(t, err, "the maps let it in")
	require.Equal(t, "shop/db-0", who)
	out, err = e.cliOut(a.n2, "policy", "trace", "--from", a.ext.IP.String(), "--to", a.db.String()+":9999")
	require.Error(t, err)
	require.Contains(t, out, "ERROR: ingress at shop/db-0: the datapath's maps decide allowed")
}
