package metrics

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// xdsMetrics count what the agent's xDS server sees as it happens: the
// snapshots it serves the node's Envoy, and Envoy's answers.
type xdsMetrics struct {
	pushes     prometheus.Counter
	nacks      *prometheus.CounterVec
	ackLatency *prometheus.HistogramVec
}

// ackBuckets span a local Envoy applying a small update (milliseconds) to
// one warming many listeners or waiting on a busy main thread (seconds).
var ackBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

func newXDSMetrics() *xdsMetrics {
	return &xdsMetrics{
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "xds_pushes_total",
			Help: "Snapshots of L7 configuration the xDS server served the node's Envoy (an unchanged configuration is not pushed).",
		}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "xds_nacks_total",
			Help: "xDS responses the node's Envoy rejected, by resource type (sluice proxy status shows the last one with Envoy's message).",
		}, []string{"type"}),
		ackLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "xds_ack_latency_seconds",
			Help:    "Time from sending an xDS response to the node's Envoy to its acknowledgement, by resource type.",
			Buckets: ackBuckets,
		}, []string{"type"}),
	}
}

// xdsType is a type URL's label: the resource's full proto name, e.g.
// envoy.config.listener.v3.Listener.
func xdsType(typeURL string) string {
	return strings.TrimPrefix(typeURL, "type.googleapis.com/")
}

func (m *xdsMetrics) describe(ch chan<- *prometheus.Desc) {
	m.pushes.Describe(ch)
	m.nacks.Describe(ch)
	m.ackLatency.Describe(ch)
}

func (m *xdsMetrics) collect(ch chan<- prometheus.Metric) {
	m.pushes.Collect(ch)
	m.nacks.Collect(ch)
	m.ackLatency.Collect(ch)
}

// ObserveXDSPush counts a snapshot the xDS server served (xds.Observer).
func (c *Collector) ObserveXDSPush() { c.xds.pushes.Inc() }

// ObserveXDSAck times a response Envoy acknowledged (xds.Observer).
func (c *Collector) ObserveXDSAck(typeURL string, latency time.Duration) {
	c.xds.ackLatency.WithLabelValues(xdsType(typeURL)).Observe(latency.Seconds())
}

// ObserveXDSNack counts a response Envoy rejected (xds.Observer).
func (c *Collector) ObserveXDSNack(typeURL string) {
	c.xds.nacks.WithLabelValues(xdsType(typeURL)).Inc()
}
