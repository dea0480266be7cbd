package agent

import (
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/testutil"
)

func TestHTTPAddresses(t *testing.T) {
	o := Defaults()
	require.Equal(t, ":9962", o.MetricsAddress)
	require.Equal(t, "127.0.0.1:9879", o.HealthAddress, "the probes' port is on loopback only")
	for _, ok := range []string{"", ":9962", "127.0.0.1:9962", "[::1]:0"} {
		o.MetricsAddress = ok
		require.NoError(t, o.Validate(), ok)
	}
	o.MetricsAddress = "9962"
	require.ErrorContains(t, o.Validate(), `--metrics-address "9962" must be HOST:PORT or :PORT`)

	o = Defaults()
	o.HealthAddress = ""
	require.NoError(t, o.Validate(), "no health server")
	o.HealthAddress = "9879"
	require.ErrorContains(t, o.Validate(), `--health-address "9879" must be HOST:PORT, e.g. 127.0.0.1:9879`)
	o.HealthAddress, o.MetricsAddress = "127.0.0.1:9962", "127.0.0.1:9962"
	require.ErrorContains(t, o.Validate(), "--health-address and --metrics-address are both 127.0.0.1:9962")
}

// Empty addresses serve nothing; a taken port fails the agent's start with
// the flag's name, before the datapath is touched.
func TestListenHTTP(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	s, err := listenHTTP("", "", nil, log)
	require.NoError(t, err)
	require.Nil(t, s)
	s.stop() // nil-safe, as Run defers it

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	_, err = listenHTTP("", taken.Addr().String(), nil, log)
	require.ErrorContains(t, err, "--metrics-address "+taken.Addr().String())
	_, err = listenHTTP(taken.Addr().String(), "", nil, log)
	require.ErrorContains(t, err, "--health-address "+taken.Addr().String())
	// The health port was open when the metrics port failed: it is closed
	// again, so a retry can take it.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	healthAddr := free.Addr().String()
	free.Close()
	_, err = listenHTTP(healthAddr, taken.Addr().String(), nil, log)
	require.ErrorContains(t, err, "--metrics-address "+taken.Addr().String())
	again, err := net.Listen("tcp", healthAddr)
	require.NoError(t, err, "the health listener was closed")
	again.Close()

	s, err = listenHTTP("127.0.0.1:0", "127.0.0.1:0", func() string { return "x" }, log)
	require.NoError(t, err)
	s.stop()
	s.stop()
	for _, h := range []*httpServer{s.health, s.metrics} {
		_, err = net.Dial("tcp", h.ln.Addr().String())
		require.Error(t, err, "stop closes the listener")
	}
}

// A starting agent is live at once and says what it waits for, on the
// health address the kubelet probes and on the metrics address: the
// kubelet's liveness probe must not kill an agent whose first sync with a
// large cluster takes minutes, and readiness names the stage.
func TestHealthWhileStarting(t *testing.T) {
	stage := "the kubernetes source's initial sync"
	s, err := listenHTTP("127.0.0.1:0", "127.0.0.1:0", func() string { return stage }, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer s.stop()
	health, metrics := "http://"+s.health.ln.Addr().String(), "http://"+s.metrics.ln.Addr().String()
	for _, base := range []string{health, metrics} {
		code, body := testutil.HTTPGet(t, base+"/healthz")
		require.Equal(t, http.StatusOK, code, base)
		require.Equal(t, "ok\n", body)
		code, body = testutil.HTTPGet(t, base+"/readyz")
		require.Equal(t, http.StatusServiceUnavailable, code, base)
		require.Equal(t, "not ready: starting: the kubernetes source's initial sync\n", body)
	}
	stage = "loading the datapath"
	for _, base := range []string{health, metrics} {
		_, body := testutil.HTTPGet(t, base+"/readyz")
		require.Contains(t, body, "starting: loading the datapath", base)
	}
	code, body := testutil.HTTPGet(t, metrics+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "process_start_time_seconds", "the process's metrics are served while starting")
	require.False(t, strings.Contains(body, "sluice_"), "no datapath metrics before the datapath is loaded")
	code, _ = testutil.HTTPGet(t, health+"/metrics")
	require.Equal(t, http.StatusNotFound, code, "the health address serves the probes only")
}
