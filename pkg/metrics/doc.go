// Package metrics exposes the agent to Prometheus.
//
// A Collector reads the datapath's BPF maps at scrape time, not on a timer:
// the per-CPU counters (sl_metrics) are summed over CPUs when Prometheus
// asks, so a scrape always sees the kernel's current totals and nothing is
// kept in between. The agent's own state (endpoints, services, policy) is
// read the same way through the small StateSource interface. What only the
// agent sees as it happens, flows, the proxy's requests and reconciler
// passes, is counted through hooks (ObserveFlow, ObserveL7Request,
// ReconcileObserver) that the agent calls.
//
// A map that cannot be read is left out of that scrape and counted in
// sluice_metrics_scrape_errors_total{source}: a failing scrape shows up as
// a rising counter instead of a silently missing series.
//
// Handler serves /metrics with /healthz and /readyz on the agent's
// --metrics-address; HealthHandler serves /healthz and /readyz alone on its
// loopback --health-address, for the kubelet's probes.
package metrics
