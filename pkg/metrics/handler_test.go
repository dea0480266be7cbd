package metrics

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/testutil"
)

// What a Prometheus server and the kubelet's probes see.
func TestHandler(t *testing.T) {
	var ready atomic.Bool
	c := NewCollector(Options{Datapath: newFake(), State: fakeState{Endpoints: 2}, Version: "v0.1.0"})
	srv := httptest.NewServer(Handler(NewRegistry(c), func() error {
		if !ready.Load() {
			return errors.New("waiting for the initial sync of services")
		}
		return nil
	}, nil))
	t.Cleanup(srv.Close)

	code, body := testutil.HTTPGet(t, srv.URL+PathMetrics)
	require.Equal(t, http.StatusOK, code)
	for _, want := range []string{
		`sluice_datapath_packets_total{direction="egress",family="ipv4",metric="forwarded",reason=""} 10`,
		`sluice_datapath_packets_total{direction="ingress",family="ipv6",metric="dropped",reason="POLICY_DENIED"} 3`,
		"sluice_conntrack_entries 4",
		"sluice_endpoints 2",
		`sluice_build_info{goversion="go`,
		`sluice_metrics_scrape_errors_total{source="counters"} 0`,
		"go_goroutines ", "process_resident_memory_bytes ",
	} {
		require.Contains(t, body, want)
	}

	code, body = testutil.HTTPGet(t, srv.URL+PathHealthz)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)

	code, body = testutil.HTTPGet(t, srv.URL+PathReadyz)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "not ready: waiting for the initial sync of services", strings.TrimSpace(body))
	ready.Store(true)
	code, body = testutil.HTTPGet(t, srv.URL+PathReadyz)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)

	resp, err := http.Post(srv.URL+PathMetrics, "text/plain", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

// The health address serves the probes and nothing else: no metrics on a
// port that exists only for the kubelet.
func TestHealthHandler(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(HealthHandler(func() error {
		if !ready.Load() {
			return errors.New("starting: loading the datapath")
		}
		return nil
	}))
	t.Cleanup(srv.Close)
	code, body := testutil.HTTPGet(t, srv.URL+PathHealthz)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)
	code, body = testutil.HTTPGet(t, srv.URL+PathReadyz)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "not ready: starting: loading the datapath\n", body)
	ready.Store(true)
	code, _ = testutil.HTTPGet(t, srv.URL+PathReadyz)
	require.Equal(t, http.StatusOK, code)
	code, _ = testutil.HTTPGet(t, srv.URL+PathMetrics)
	require.Equal(t, http.StatusNotFound, code)
}
