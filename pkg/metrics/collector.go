package metrics

import (
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/flow"
)

const namespace = "sluice"

// Datapath is what the collector reads from the BPF maps at every scrape.
// *datapath.Maps implements it.
type Datapath interface {
	// CountersByFamily sums the per-CPU counters of sl_metrics over
	// CPUs, one per address family.
	CountersByFamily() ([]datapath.Counter, error)
	// Pressure counts the entries of the maps that can fill up; with an
	// error it may still return the maps it could count. Its sl_ct row
	// also counts the live (unexpired) connections, in the same walk.
	Pressure() ([]datapath.MapPressure, error)
}

// State is the agent's own state at one scrape.
type State struct {
	// Endpoints are the local pods the endpoint manager knows.
	Endpoints int
	// ServiceFrontends and ServiceBackends are what the service
	// reconciler programmed into the LB maps.
	ServiceFrontends int
	ServiceBackends  int
	// Identities are the security identities allocated for policy.
	Identities int
	// PolicyEnforcedEndpoints have policy enforced in at least one
	// direction; PolicyFailedClosedEndpoints are those whose policy did not
	// fit their map, so they drop everything in enforced directions.
	PolicyEnforcedEndpoints     int
	PolicyFailedClosedEndpoints int
	// PolicyRevision is the datapath's policy revision.
	PolicyRevision uint32
	// FlowsLostByFollowers counts flows that observer followers (`sluice
	// observe --follow`, Hubble clients) missed by reading too slowly.
	FlowsLostByFollowers uint64
}

// StateSource gives the agent's state at scrape time. It is called once per
// scrape, possibly from several scrapes at once.
type StateSource interface {
	MetricsState() State
}

// Options configure a Collector.
type Options struct {
	// Datapath is read at every scrape; nil leaves the datapath's
	// metrics out.
	Datapath Datapath
	// State is read at every scrape; nil leaves the agent's gauges out.
	State StateSource
	// Version is the agent's version, reported by sluice_build_info.
	Version string
}

// Names of the reconcilers whose passes are timed (label reconciler).
const (
	ReconcilerServices = "services"
	ReconcilerPolicy   = "policy"
	// ReconcilerEndpoints is the endpoint manager (pods' interfaces,
	// endpoint entries, attachments).
	ReconcilerEndpoints = "endpoints"
)

// Scrape error sources (label source of sluice_metrics_scrape_errors_total).
const (
	sourceCounters  = "counters"
	sourceMaps      = "maps"
	sourceConntrack = "conntrack"
)

// Datapath counter kinds that are not packets: they get families of their own.
var (
	metricEventsLost       = datapath.MetricEventsLost
	metricSocketsDestroyed = datapath.MetricSocketsDestroyed
)

// reconcileBuckets span an incremental service or policy pass (about a
// millisecond) to a full pass over tens of thousands of services (seconds).
var reconcileBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// Collector is a prometheus.Collector for one agent. Its hooks
// (ObserveFlow, ObserveReconcile) may be called concurrently with scrapes
// and with each other.
type Collector struct {
	dp        Datapath
	state     StateSource
	buildInfo prometheus.Metric

	packets, bytes, eventsLost, socketsDestroyed *prometheus.Desc
	conntrack, mapEntries, mapCapacity           *prometheus.Desc

	endpoints, frontends, backends, identities *prometheus.Desc
	enforced, failedClosed, revision           *prometheus.Desc
	followersLost                              *prometheus.Desc

	flows           *prometheus.CounterVec
	l7Requests      *prometheus.CounterVec
	reconcile       *prometheus.HistogramVec
	reconcileErrors *prometheus.CounterVec
	scrapeErrors    *prometheus.CounterVec
	xds             *xdsMetrics
}

// NewCollector returns a collector reading o.Datapath and o.State at scrape
// time. Register it on a registry (NewRegistry) to serve it.
func NewCollector(o Options) *Collector {
	name := func(n string) string { return prometheus.BuildFQName(namespace, "", n) }
	counterLabels := []string{"metric", "direction", "reason", "family"}
	c := &Collector{
		dp: o.Datapath, state: o.State,
		packets: prometheus.NewDesc(name("datapath_packets_total"),
			"Packets the datapath counted, summed over CPUs: by what happened to them (metric: forwarded, dropped, passed-ipv6, passed-non-ip, related-icmp, no-endpoint, ...), direction relative to the pod (ingress: into it, egress: out of it), drop reason (Hubble's name; empty unless dropped) and address family (ipv4, ipv6; empty for non-IP packets).",
			counterLabels, nil),
		bytes: prometheus.NewDesc(name("datapath_bytes_total"),
			"Bytes of the packets in sluice_datapath_packets_total, with the same labels.",
			counterLabels, nil),
		eventsLost: prometheus.NewDesc(name("events_lost_total"),
			"Datapath events (flows) not emitted because the ring buffer was full (--events-buffer).", nil, nil),
		socketsDestroyed: prometheus.NewDesc(name("sockets_destroyed_total"),
			"Connected sockets destroyed because the service backend they were connected to was removed.", nil, nil),
		conntrack: prometheus.NewDesc(name("conntrack_entries"),
			"Live (unexpired) connection-tracking entries; the table holds --ct-max.", nil, nil),
		mapEntries: prometheus.NewDesc(name("map_entries"),
			"Entries in a BPF map that can fill up (sl_ct counts expired entries until the CT GC removes them).",
			[]string{"map"}, nil),
		mapCapacity: prometheus.NewDesc(name("map_capacity"),
			"Maximum entries of a BPF map that can fill up; divide sluice_map_entries by it for the fill ratio.",
			[]string{"map"}, nil),
		endpoints: prometheus.NewDesc(name("endpoints"), "Local pods managed as endpoints.", nil, nil),
		frontends: prometheus.NewDesc(name("service_frontends"),
			"Service frontends (address, port, protocol) programmed into the LB maps.", nil, nil),
		backends: prometheus.NewDesc(name("service_backends"),
			"Service backends programmed into the LB maps.", nil, nil),
		identities: prometheus.NewDesc(name("policy_identities"),
			"Security identities allocated for network policy.", nil, nil),
		enforced: prometheus.NewDesc(name("policy_enforced_endpoints"),
			"Local endpoints with network policy enforced in at least one direction.", nil, nil),
		failedClosed: prometheus.NewDesc(name("policy_failed_closed_endpoints"),
			"Local endpoints whose policy does not fit --policy-map-max: their traffic in enforced directions is dropped.", nil, nil),
		revision: prometheus.NewDesc(name("policy_revision"),
			"The datapath's policy revision; it changes with every change of policy or identities.", nil, nil),
		followersLost: prometheus.NewDesc(name("flows_lost_by_followers_total"),
			"Flows that observer followers (sluice observe --follow, Hubble clients) missed because they read too slowly, summed over followers.", nil, nil),
		flows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "flows_total",
			Help: "Flows the agent read from the datapath, by event type (trace, drop, translate, end) and Hubble verdict (FORWARDED, DROPPED, TRANSLATED, AUDIT, REDIRECTED; VERDICT_UNKNOWN for connection ends).",
		}, []string{"type", "verdict"}),
		l7Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "l7_requests_total",
			Help: "HTTP requests the node's proxy handled, from its access logs: by listener (l7-<proxy port>), verdict (forwarded, policy-denied, rate-limited, jwt-denied, audit) and deciding rule (namespace/policy/ports[i]/rules[j]; empty when no rule matched). Rate-limited requests are verdict=\"rate-limited\".",
		}, []string{"listener", "verdict", "rule"}),
		reconcile: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "reconcile_duration_seconds",
			Help:    "Duration of reconciler passes that compute desired state and write it into the maps, by reconciler (services, policy) and pass (full: periodic resync, incremental: what the model changed).",
			Buckets: reconcileBuckets,
		}, []string{"reconciler", "pass"}),
		reconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "reconcile_errors_total",
			Help: "Reconciler passes that ended with an error (sluice status shows it), by reconciler.",
		}, []string{"reconciler"}),
		scrapeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "metrics_scrape_errors_total",
			Help: "Scrapes in which a source could not be read (counters: sl_metrics, maps: map entry counts, conntrack: sl_ct); its metrics were left out of that scrape.",
		}, []string{"source"}),
		xds: newXDSMetrics(),
	}
	c.buildInfo = prometheus.MustNewConstMetric(
		prometheus.NewDesc(name("build_info"), "The agent's version and the Go version it was built with; always 1.",
			[]string{"version", "goversion"}, nil),
		prometheus.GaugeValue, 1, o.Version, runtime.Version())
	// Zero series exist before the first failure, so rate() and alerts
	// work from the first scrape.
	for _, s := range []string{sourceCounters, sourceMaps, sourceConntrack} {
		c.scrapeErrors.WithLabelValues(s)
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.packets, c.bytes, c.eventsLost, c.socketsDestroyed, c.conntrack, c.mapEntries, c.mapCapacity,
		c.endpoints, c.frontends, c.backends, c.identities, c.enforced, c.failedClosed, c.revision,
		c.followersLost, c.buildInfo.Desc(),
	} {
		ch <- d
	}
	c.flows.Describe(ch)
	c.l7Requests.Describe(ch)
	c.reconcile.Describe(ch)
	c.reconcileErrors.Describe(ch)
	c.scrapeErrors.Describe(ch)
	c.xds.describe(ch)
}

// Collect implements prometheus.Collector: it reads the maps and the
// agent's state now.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if c.dp != nil {
		c.collectCounters(ch)
		c.collectMaps(ch)
	}
	if c.state != nil {
		c.collectState(ch)
	}
	ch <- c.buildInfo
	c.flows.Collect(ch)
	c.l7Requests.Collect(ch)
	c.reconcile.Collect(ch)
	c.reconcileErrors.Collect(ch)
	c.xds.collect(ch)
	// Last, so that this scrape's own failures are in it.
	c.scrapeErrors.Collect(ch)
}

func (c *Collector) collectCounters(ch chan<- prometheus.Metric) {
	cs, err := c.dp.CountersByFamily()
	if err != nil {
		c.scrapeErrors.WithLabelValues(sourceCounters).Inc()
		return
	}
	// Every key of sl_metrics is its own (metric, direction, reason), so
	// the packet series are distinct; the two non-packet kinds are summed
	// over their directions and reasons.
	var lost, destroyed uint64
	for _, x := range cs {
		switch x.Metric {
		case metricEventsLost:
			lost += x.Packets
		case metricSocketsDestroyed:
			destroyed += x.Packets
		default:
			ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(x.Packets), x.Metric, x.Dir, x.Reason, x.Family)
			ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(x.Bytes), x.Metric, x.Dir, x.Reason, x.Family)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.eventsLost, prometheus.CounterValue, float64(lost))
	ch <- prometheus.MustNewConstMetric(c.socketsDestroyed, prometheus.CounterValue, float64(destroyed))
}

// collectMaps reports every map's entries and capacity, and from sl_ct's
// row the live connections: one walk of sl_ct per scrape, as `sluice
// status` does. A map that could not be counted is missing from the
// answer: sl_ct's absence is also a conntrack failure.
func (c *Collector) collectMaps(ch chan<- prometheus.Metric) {
	ps, err := c.dp.Pressure()
	if err != nil {
		// The maps that could be counted are still reported.
		c.scrapeErrors.WithLabelValues(sourceMaps).Inc()
	}
	ct := false
	for _, p := range ps {
		ch <- prometheus.MustNewConstMetric(c.mapEntries, prometheus.GaugeValue, float64(p.Entries), p.Map)
		ch <- prometheus.MustNewConstMetric(c.mapCapacity, prometheus.GaugeValue, float64(p.Max), p.Map)
		if p.Map == datapath.MapCT {
			ct = true
			ch <- prometheus.MustNewConstMetric(c.conntrack, prometheus.GaugeValue, float64(p.Live))
		}
	}
	if !ct {
		c.scrapeErrors.WithLabelValues(sourceConntrack).Inc()
	}
}

func (c *Collector) collectState(ch chan<- prometheus.Metric) {
	s := c.state.MetricsState()
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	gauge(c.endpoints, float64(s.Endpoints))
	gauge(c.frontends, float64(s.ServiceFrontends))
	gauge(c.backends, float64(s.ServiceBackends))
	gauge(c.identities, float64(s.Identities))
	gauge(c.enforced, float64(s.PolicyEnforcedEndpoints))
	gauge(c.failedClosed, float64(s.PolicyFailedClosedEndpoints))
	gauge(c.revision, float64(s.PolicyRevision))
	ch <- prometheus.MustNewConstMetric(c.followersLost, prometheus.CounterValue, float64(s.FlowsLostByFollowers))
}

// ObserveFlow counts one flow read from the datapath: eventType is the
// datapath event's type (trace, drop, translate, end), verdict its Hubble
// verdict as Hubble names it (FORWARDED, DROPPED, ...), like the drop
// reasons of the datapath counters.
func (c *Collector) ObserveFlow(eventType, verdict string) {
	c.flows.WithLabelValues(eventType, verdict).Inc()
}

// ObserveL7Request counts one request of the node's proxy (the access log
// service's Observe hook). Labels stay bounded: listeners and rules are
// as many as the policy makes, verdicts five; URLs, methods and clients
// are the flows' business, never labels.
func (c *Collector) ObserveL7Request(l *flow.HTTPLog) {
	rule := ""
	if l.Rule != nil {
		rule = l.Rule.String()
	}
	c.l7Requests.WithLabelValues(l.Listener, l.Verdict.String(), rule).Inc()
}

// ObserveReconcile records one pass of a reconciler (ReconcilerServices,
// ReconcilerPolicy): whether it was a full resync, how long it took and
// how it ended.
func (c *Collector) ObserveReconcile(reconciler string, full bool, took time.Duration, err error) {
	pass := "incremental"
	if full {
		pass = "full"
	}
	c.reconcile.WithLabelValues(reconciler, pass).Observe(took.Seconds())
	if err != nil {
		c.reconcileErrors.WithLabelValues(reconciler).Inc()
	}
}

// ReconcileObserver returns ObserveReconcile bound to one reconciler, the
// shape of the reconcilers' ObservePass option. Its error counter exists
// (at zero) from now on.
func (c *Collector) ReconcileObserver(reconciler string) func(full bool, took time.Duration, err error) {
	c.reconcileErrors.WithLabelValues(reconciler)
	return func(full bool, took time.Duration, err error) { c.ObserveReconcile(reconciler, full, took, err) }
}
