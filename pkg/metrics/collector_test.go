package metrics

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/l7"
)

// fakeDatapath serves fixed map contents, or errors, as the maps would.
type fakeDatapath struct {
	mu          sync.Mutex
	counters    []datapath.Counter
	pressure    []datapath.MapPressure // sl_ct's row carries the live connections
	countersErr error
	pressureErr error // a map other than sl_ct cannot be counted
	ctErr       error // sl_ct cannot be walked: its row is missing
	ctWalks     int
}

func (f *fakeDatapath) CountersByFamily() ([]datapath.Counter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.countersErr != nil {
		return nil, f.countersErr
	}
	return f.counters, nil
}

func (f *fakeDatapath) Pressure() ([]datapath.MapPressure, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ctWalks++
	if f.ctErr == nil {
		return f.pressure, f.pressureErr
	}
	var out []datapath.MapPressure
	for _, p := range f.pressure {
		if p.Map != datapath.MapCT {
			out = append(out, p)
		}
	}
	return out, errors.Join(f.ctErr, f.pressureErr)
}

type fakeState State

func (s fakeState) MetricsState() State { return State(s) }

func newFake() *fakeDatapath {
	return &fakeDatapath{
		counters: []datapath.Counter{
			{Metric: "forwarded", Dir: "egress", Family: "ipv4", Packets: 10, Bytes: 1000},
			{Metric: "forwarded", Dir: "egress", Family: "ipv6", Packets: 5, Bytes: 600},
			{Metric: "forwarded", Dir: "ingress", Family: "ipv4", Packets: 7, Bytes: 700},
			{Metric: "dropped", Dir: "ingress", Reason: "POLICY_DENIED", Family: "ipv6", Packets: 3, Bytes: 180},
			{Metric: "passed-non-ip", Dir: "ingress", Packets: 1, Bytes: 60},
			{Metric: "events-lost", Dir: "egress", Packets: 2},
			{Metric: "events-lost", Dir: "ingress", Reason: "POLICY_DENIED", Packets: 1},
			{Metric: "sockets-destroyed", Dir: "egress", Packets: 4},
		},
		pressure: []datapath.MapPressure{{Map: "sl_ct", Entries: 5, Max: 65536, Live: 4}, {Map: "sl_endpoints", Entries: 2, Max: 1024}},
	}
}

func TestCollectorReadsMapsAndState(t *testing.T) {
	c := NewCollector(Options{Datapath: newFake(), Version: "v1.2.3", State: fakeState{
		Endpoints: 2, ServiceFrontends: 3, ServiceBackends: 6, Identities: 9,
		PolicyEnforcedEndpoints: 1, PolicyFailedClosedEndpoints: 0, PolicyRevision: 17, FlowsLostByFollowers: 5,
	}})
	c.ObserveFlow("trace", "FORWARDED")
	c.ObserveFlow("trace", "FORWARDED")
	c.ObserveFlow("drop", "DROPPED")

	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(`
# HELP sluice_datapath_packets_total Packets the datapath counted, summed over CPUs: by what happened to them (metric: forwarded, dropped, passed-ipv6, passed-non-ip, related-icmp, no-endpoint, ...), direction relative to the pod (ingress: into it, egress: out of it), drop reason (Hubble's name; empty unless dropped) and address family (ipv4, ipv6; empty for non-IP packets).
# TYPE sluice_datapath_packets_total counter
sluice_datapath_packets_total{direction="egress",family="ipv4",metric="forwarded",reason=""} 10
sluice_datapath_packets_total{direction="egress",family="ipv6",metric="forwarded",reason=""} 5
sluice_datapath_packets_total{direction="ingress",family="ipv4",metric="forwarded",reason=""} 7
sluice_datapath_packets_total{direction="ingress",family="ipv6",metric="dropped",reason="POLICY_DENIED"} 3
sluice_datapath_packets_total{direction="ingress",family="",metric="passed-non-ip",reason=""} 1
# HELP sluice_datapath_bytes_total Bytes of the packets in sluice_datapath_packets_total, with the same labels.
# TYPE sluice_datapath_bytes_total counter
sluice_datapath_bytes_total{direction="egress",family="ipv4",metric="forwarded",reason=""} 1000
sluice_datapath_bytes_total{direction="egress",family="ipv6",metric="forwarded",reason=""} 600
sluice_datapath_bytes_total{direction="ingress",family="ipv4",metric="forwarded",reason=""} 700
sluice_datapath_bytes_total{direction="ingress",family="ipv6",metric="dropped",reason="POLICY_DENIED"} 180
sluice_datapath_bytes_total{direction="ingress",family="",metric="passed-non-ip",reason=""} 60
# HELP sluice_events_lost_total Datapath events (flows) not emitted because the ring buffer was full (--events-buffer).
# TYPE sluice_events_lost_total counter
sluice_events_lost_total 3
# HELP sluice_sockets_destroyed_total Connected sockets destroyed because the service backend they were connected to was removed.
# TYPE sluice_sockets_destroyed_total counter
sluice_sockets_destroyed_total 4
# HELP sluice_conntrack_entries Live (unexpired) connection-tracking entries; the table holds --ct-max.
# TYPE sluice_conntrack_entries gauge
sluice_conntrack_entries 4
# HELP sluice_map_entries Entries in a BPF map that can fill up (sl_ct counts expired entries until the CT GC removes them).
# TYPE sluice_map_entries gauge
sluice_map_entries{map="sl_ct"} 5
sluice_map_entries{map="sl_endpoints"} 2
# HELP sluice_map_capacity Maximum entries of a BPF map that can fill up; divide sluice_map_entries by it for the fill ratio.
# TYPE sluice_map_capacity gauge
sluice_map_capacity{map="sl_ct"} 65536
sluice_map_capacity{map="sl_endpoints"} 1024
# HELP sluice_flows_total Flows the agent read from the datapath, by event type (trace, drop, translate, end) and Hubble verdict (FORWARDED, DROPPED, TRANSLATED, AUDIT, REDIRECTED; VERDICT_UNKNOWN for connection ends).
# TYPE sluice_flows_total counter
sluice_flows_total{type="drop",verdict="DROPPED"} 1
sluice_flows_total{type="trace",verdict="FORWARDED"} 2
`), "sluice_datapath_packets_total", "sluice_datapath_bytes_total", "sluice_events_lost_total",
		"sluice_sockets_destroyed_total", "sluice_conntrack_entries", "sluice_map_entries", "sluice_map_capacity",
		"sluice_flows_total"))

	for name, want := range map[string]float64{
		"sluice_endpoints": 2, "sluice_service_frontends": 3, "sluice_service_backends": 6,
		"sluice_policy_identities": 9, "sluice_policy_enforced_endpoints": 1, "sluice_policy_failed_closed_endpoints": 0,
		"sluice_policy_revision": 17, "sluice_flows_lost_by_followers_total": 5,
	} {
		require.Equal(t, want, value(t, c, name, nil), name)
	}
	require.Equal(t, 1.0, value(t, c, "sluice_build_info", map[string]string{"version": "v1.2.3"}))
	require.Equal(t, 0.0, value(t, c, "sluice_metrics_scrape_errors_total", map[string]string{"source": "counters"}))
}

// Every family the collector can produce passes client_golang's lint
// (naming, units, _total on counters, help text).
func TestCollectorLint(t *testing.T) {
	c := NewCollector(Options{Datapath: newFake(), State: fakeState{}, Version: "dev"})
	c.ObserveFlow("trace", "FORWARDED")
	c.ReconcileObserver(ReconcilerServices)(true, 3*time.Millisecond, nil)
	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	require.Empty(t, problems)
	// The registry the agent serves, with the Go and process collectors.
	problems, err = testutil.GatherAndLint(NewRegistry(c))
	require.NoError(t, err)
	require.Empty(t, problems)
}

// A map that cannot be read is left out of the scrape and counted; the
// rest is still served, and a map that reads again comes back.
func TestCollectorCountsItsFailures(t *testing.T) {
	dp := newFake()
	dp.countersErr = errors.New("iterate metrics: bad fd")
	dp.ctErr = errors.New("iterate ct: bad fd")
	dp.pressureErr = errors.New("count sl_policy: bad fd")
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(Options{Datapath: dp}))

	_, err := reg.Gather()
	require.NoError(t, err)
	second := scrape(t, reg)
	for _, src := range []string{"counters", "conntrack", "maps"} {
		require.Equal(t, 2.0, gathered(t, second, "sluice_metrics_scrape_errors_total", map[string]string{"source": src}), src)
	}
	n, err := testutil.GatherAndCount(second, "sluice_datapath_packets_total", "sluice_events_lost_total", "sluice_conntrack_entries")
	require.NoError(t, err)
	require.Zero(t, n, "series of unreadable maps must be left out, not reported as 0")
	n, err = testutil.GatherAndCount(second, "sluice_map_entries")
	require.NoError(t, err)
	require.Equal(t, 1, n, "only sl_endpoints could be counted")
	// Pressure's partial answer is still served.
	require.Equal(t, 2.0, gathered(t, second, "sluice_map_entries", map[string]string{"map": "sl_endpoints"}))

	// Another map failing leaves conntrack readable: its row is there.
	dp.mu.Lock()
	dp.countersErr, dp.ctErr = nil, nil
	dp.mu.Unlock()
	third := scrape(t, reg)
	require.Equal(t, 10.0, gathered(t, third, "sluice_datapath_packets_total", map[string]string{"metric": "forwarded", "direction": "egress", "family": "ipv4"}))
	require.Equal(t, 4.0, gathered(t, third, "sluice_conntrack_entries", nil))
	require.Equal(t, 5.0, gathered(t, third, "sluice_map_entries", map[string]string{"map": "sl_ct"}))
	require.Equal(t, 2.0, gathered(t, third, "sluice_metrics_scrape_errors_total", map[string]string{"source": "counters"}))
	require.Equal(t, 2.0, gathered(t, third, "sluice_metrics_scrape_errors_total", map[string]string{"source": "conntrack"}))
	require.Equal(t, 3.0, gathered(t, third, "sluice_metrics_scrape_errors_total", map[string]string{"source": "maps"}))
}

// A scrape walks sl_ct once: the map-pressure walk also counts the live
// connections (it is the costliest part of a scrape at --ct-max entries).
func TestCollectorWalksConntrackOnce(t *testing.T) {
	dp := newFake()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(Options{Datapath: dp}))
	g := scrape(t, reg)
	require.Equal(t, 1, dp.ctWalks)
	require.Equal(t, 4.0, gathered(t, g, "sluice_conntrack_entries", nil), "live connections")
	require.Equal(t, 5.0, gathered(t, g, "sluice_map_entries", map[string]string{"map": "sl_ct"}), "entries, expired ones too")
}

func TestReconcileObserver(t *testing.T) {
	c := NewCollector(Options{})
	obs := c.ReconcileObserver(ReconcilerPolicy)
	require.Equal(t, 0.0, value(t, c, "sluice_reconcile_errors_total", map[string]string{"reconciler": "policy"}),
		"the error counter exists before the first error")
	obs(false, 2*time.Millisecond, nil)
	obs(false, 4*time.Millisecond, errors.New("endpoint x: map full"))
	obs(true, 700*time.Millisecond, nil)

	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(`
# HELP sluice_reconcile_errors_total Reconciler passes that ended with an error (sluice status shows it), by reconciler.
# TYPE sluice_reconcile_errors_total counter
sluice_reconcile_errors_total{reconciler="policy"} 1
`), "sluice_reconcile_errors_total"))
	h := histogram(t, c, "sluice_reconcile_duration_seconds", map[string]string{"reconciler": "policy", "pass": "incremental"})
	require.EqualValues(t, 2, h.GetSampleCount())
	require.InDelta(t, 0.006, h.GetSampleSum(), 1e-9)
	h = histogram(t, c, "sluice_reconcile_duration_seconds", map[string]string{"reconciler": "policy", "pass": "full"})
	require.EqualValues(t, 1, h.GetSampleCount())
}

// The proxy's requests are counted by listener, verdict and deciding
// rule; rate-limited ones by their verdict.
func TestObserveL7Request(t *testing.T) {
	c := NewCollector(Options{})
	rule := &l7.RuleRef{Namespace: "shop", Policy: "api", PortIndex: 0, RuleIndex: 1}
	for _, l := range []flow.HTTPLog{
		{Listener: "l7-15001", Verdict: flow.L7Forwarded, Rule: rule},
		{Listener: "l7-15001", Verdict: flow.L7Forwarded, Rule: rule},
		{Listener: "l7-15001", Verdict: flow.L7RateLimited, Rule: rule},
		{Listener: "l7-15001", Verdict: flow.L7PolicyDenied},
		{Listener: "l7-15002", Verdict: flow.L7JWTDenied},
	} {
		c.ObserveL7Request(&l)
	}
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(`
# HELP sluice_l7_requests_total HTTP requests the node's proxy handled, from its access logs: by listener (l7-<proxy port>), verdict (forwarded, policy-denied, rate-limited, jwt-denied, audit) and deciding rule (namespace/policy/ports[i]/rules[j]; empty when no rule matched). Rate-limited requests are verdict="rate-limited".
# TYPE sluice_l7_requests_total counter
sluice_l7_requests_total{listener="l7-15001",rule="shop/api/ports[0]/rules[1]",verdict="forwarded"} 2
sluice_l7_requests_total{listener="l7-15001",rule="shop/api/ports[0]/rules[1]",verdict="rate-limited"} 1
sluice_l7_requests_total{listener="l7-15001",rule="",verdict="policy-denied"} 1
sluice_l7_requests_total{listener="l7-15002",rule="",verdict="jwt-denied"} 1
`), "sluice_l7_requests_total"))
	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	require.Empty(t, problems)
}
