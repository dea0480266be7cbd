package metrics

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestXDSMetrics: pushes, NACKs by resource type and ACK latency by type,
// as the xDS server reports them, described as collected.
func TestXDSMetrics(t *testing.T) {
	c := NewCollector(Options{})
	const lds = "type.googleapis.com/envoy.config.listener.v3.Listener"
	c.ObserveXDSPush()
	c.ObserveXDSPush()
	c.ObserveXDSNack(lds)
	c.ObserveXDSAck(lds, 3*time.Millisecond)
	c.ObserveXDSAck(lds, 5*time.Millisecond)
	assert.EqualValues(t, 2, value(t, c, "sluice_xds_pushes_total", nil))
	assert.EqualValues(t, 1, value(t, c, "sluice_xds_nacks_total", map[string]string{"type": "envoy.config.listener.v3.Listener"}))
	h := histogram(t, c, "sluice_xds_ack_latency_seconds", map[string]string{"type": "envoy.config.listener.v3.Listener"})
	assert.EqualValues(t, 2, h.GetSampleCount())
	assert.InDelta(t, 0.008, h.GetSampleSum(), 1e-9)
}
