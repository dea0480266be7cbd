package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// find gathers g and returns the one series of family name whose labels
// include labels.
func find(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	var found []*dto.Metric
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			found = append(found, m)
		}
	}
	require.Len(t, found, 1, "series of %s with %v", name, labels)
	return found[0]
}

// scrape gathers g once; the result answers every later Gather, so that
// several series can be checked in the same scrape.
func scrape(t *testing.T, g prometheus.Gatherer) prometheus.Gatherer {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return mfs, nil })
}

// gathered is the value of a counter or gauge series.
func gathered(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	m := find(t, g, name, labels)
	if m.Counter != nil {
		return m.GetCounter().GetValue()
	}
	require.NotNil(t, m.Gauge, "%s is neither counter nor gauge", name)
	return m.GetGauge().GetValue()
}

// value is gathered for one collector, through a pedantic registry that
// also checks what it collects against what it describes.
func value(t *testing.T, c prometheus.Collector, name string, labels map[string]string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	return gathered(t, reg, name, labels)
}

func histogram(t *testing.T, c prometheus.Collector, name string, labels map[string]string) *dto.Histogram {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	m := find(t, reg, name, labels)
	require.NotNil(t, m.Histogram, "%s is not a histogram", name)
	return m.GetHistogram()
}
