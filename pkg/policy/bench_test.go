package policy

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/model"
)

// benchCluster is a cluster of 50 nodes and 50 namespaces (labelled team
// t0..t4 and env prod/dev), each namespace running apps app-0..app-9 with
// 10 replicas (5,000 pods), spread round-robin over the nodes, so that this
// node (node-00) runs app-0 and app-5 replica 0 of every namespace (100
// endpoints). Apps 0, 3, 6 and 9 are tier frontend. Each namespace has 10
// policies (500): a default deny, and for app-1..app-9 one policy that
//
//   - admits the previous app on the named port http,
//   - admits frontends from the namespaces of its team on 8080 and 9000-9100,
//   - lets it reach the next app on 8080 and its "metrics" named port
//     (resolved per destination pod), DNS (app-0 in ns-00, UDP and TCP 53),
//     and anything outside 10/8 and 192.168/16 on 443.
func benchCluster() *model.State {
	s := &model.State{}
	const nodes, namespaces, apps, replicas = 50, 50, 10, 10
	for i := range nodes {
		s.Upsert(&model.Node{Name: fmt.Sprintf("node-%02d", i), Addresses: []model.NodeAddress{
			{Type: model.NodeInternalIP, Address: fmt.Sprintf("192.168.0.%d", i+1)},
		}})
	}
	tiers := []string{"frontend", "backend", "db"}
	n := 0
	for ns := range namespaces {
		name := fmt.Sprintf("ns-%02d", ns)
		env := "dev"
		if ns%2 == 0 {
			env = "prod"
		}
		s.Upsert(namespace(name, "team", fmt.Sprintf("t%d", ns%5), "env", env))
		for app := range apps {
			for r := range replicas {
				s.Upsert(&model.Pod{
					Namespace: name, Name: fmt.Sprintf("app-%d-%d", app, r),
					NodeName: fmt.Sprintf("node-%02d", n%nodes), Phase: model.PodRunning,
					Labels: map[string]string{"app": fmt.Sprintf("app-%d", app), "tier": tiers[app%3]},
					IPs:    []netip.Addr{netip.AddrFrom4([4]byte{10, byte(ns), byte(app), byte(r + 1)})},
					Ports: []model.ContainerPort{
						{Name: "http", Port: 8080, Protocol: model.ProtocolTCP},
						{Name: "metrics", Port: 9090 + uint16(r%2), Protocol: model.ProtocolTCP},
					},
				})
				n++
			}
		}
		s.Upsert(netpol(name+"/default-deny", sel()).build())
		for app := 1; app < apps; app++ {
			s.Upsert(benchPolicy(name, ns, app, 8080))
		}
	}
	return s
}

func benchPolicy(ns string, nsIndex, app int, port uint16) *model.NetworkPolicy {
	appSel := func(i int) *model.LabelSelector { return sel("app", fmt.Sprintf("app-%d", i%10)) }
	return netpol(fmt.Sprintf("%s/app-%d", ns, app), appSel(app)).
		ingress(
			rl(peers(podPeer(appSel(app-1))), named(model.ProtocolTCP, "http")),
			rl(peers(bothPeer(sel("team", fmt.Sprintf("t%d", nsIndex%5)), sel("tier", "frontend"))),
				tcp(port), portRangeOf(model.ProtocolTCP, 9000, 9100)),
		).
		egress(
			rl(peers(podPeer(appSel(app+1))), tcp(8080), named(model.ProtocolTCP, "metrics")),
			rl(peers(bothPeer(sel("kubernetes.io/metadata.name", "ns-00"), appSel(0))), udp(53), tcp(53)),
			rl(peers(ipPeer("0.0.0.0/0", "10.0.0.0/8", "192.168.0.0/16")), tcp(443)),
		).build()
}

func benchOptions(o *Options) { o.NodeName = "node-00" }

func reportEntries(b *testing.B, e *Engine) {
	sum, peak := 0, 0
	eps := e.Endpoints()
	for _, p := range eps {
		n := len(p.Entries) + len(p.CIDRs)
		sum += n
		peak = max(peak, n)
	}
	b.ReportMetric(float64(sum)/float64(len(eps)), "entries/endpoint")
	b.ReportMetric(float64(peak), "max-entries/endpoint")
}

// fullComputeNs measures the full computation once, as the baseline the
// incremental benchmarks report their speedup against.
func fullComputeNs(b *testing.B, s *model.State) float64 {
	best := time.Duration(1<<63 - 1)
	for range 3 {
		start := time.Now()
		newEngine(b, s, benchOptions)
		best = min(best, time.Since(start))
	}
	return float64(best.Nanoseconds())
}

func BenchmarkFullCompute(b *testing.B) {
	s := benchCluster()
	var e *Engine
	b.ReportAllocs()
	for b.Loop() {
		e = newEngine(b, s, benchOptions)
	}
	require.Len(b, e.Endpoints(), 100)
	reportEntries(b, e)
	b.ReportMetric(float64(e.alloc.Len()), "identities")
}

// BenchmarkIncrementalPodLabel flips the app label of one remote frontend
// pod: a new identity appears (or goes), which the team selectors of ten
// namespaces select, so their app-5 endpoints are recomputed.
func BenchmarkIncrementalPodLabel(b *testing.B) {
	s := benchCluster()
	e := newEngine(b, s, benchOptions)
	base := s.Pods[nn("ns-03/app-3-3")]
	canary := *base
	canary.Labels = map[string]string{"app": "app-3-canary", "tier": "frontend"}
	pods := [2]*model.Pod{&canary, base}
	full := fullComputeNs(b, s)
	changed := 0
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		res := e.Apply([]model.Change{{Op: model.OpUpsert, Object: pods[i%2]}})
		changed += len(res.Endpoints)
		i++
	}
	b.ReportMetric(float64(changed)/float64(b.N), "endpoints-changed/op")
	b.ReportMetric(full/(float64(b.Elapsed().Nanoseconds())/float64(b.N)), "x-faster-than-full")
	reportEntries(b, e)
}

// BenchmarkIncrementalPolicy flips the port of one policy, which selects one
// local endpoint.
func BenchmarkIncrementalPolicy(b *testing.B) {
	s := benchCluster()
	e := newEngine(b, s, benchOptions)
	policies := [2]*model.NetworkPolicy{benchPolicy("ns-07", 7, 5, 8081), benchPolicy("ns-07", 7, 5, 8080)}
	full := fullComputeNs(b, s)
	changed := 0
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		res := e.Apply([]model.Change{{Op: model.OpUpsert, Object: policies[i%2]}})
		changed += len(res.Endpoints)
		i++
	}
	b.ReportMetric(float64(changed)/float64(b.N), "endpoints-changed/op")
	b.ReportMetric(full/(float64(b.Elapsed().Nanoseconds())/float64(b.N)), "x-faster-than-full")
	reportEntries(b, e)
}
