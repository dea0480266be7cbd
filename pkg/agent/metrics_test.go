package agent

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMetricsAddress(t *testing.T) {
	o := Defaults()
	require.Equal(t, ":9962", o.MetricsAddress)
	for _, ok := range []string{"", ":9962", "127.0.0.1:9962", "[::1]:0"} {
		o.MetricsAddress = ok
		require.NoError(t, o.Validate(), ok)
	}
	o.MetricsAddress = "9962"
	require.ErrorContains(t, o.Validate(), `--metrics-address "9962" must be HOST:PORT or :PORT`)
}

// An empty address serves nothing; a taken port fails the agent's start
// with the flag's name, before the datapath is touched.
func TestListenMetrics(t *testing.T) {
	s, err := listenMetrics("", nil, slog.Default())
	require.NoError(t, err)
	require.Nil(t, s)
	s.stop() // nil-safe, as Run defers it

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	_, err = listenMetrics(taken.Addr().String(), nil, slog.Default())
	require.ErrorContains(t, err, "--metrics-address "+taken.Addr().String())

	s, err = listenMetrics("127.0.0.1:0", func() string { return "x" }, slog.Default())
	require.NoError(t, err)
	s.stop()
	s.stop()
	_, err = net.Dial("tcp", s.ln.Addr().String())
	require.Error(t, err, "stop closes the listener")
}

// A starting agent is live at once and says what it waits for: the
// kubelet's liveness probe must not kill an agent whose first sync with a
// large cluster takes minutes, and readiness names the stage.
func TestHealthWhileStarting(t *testing.T) {
	stage := "the kubernetes source's initial sync"
	s, err := listenMetrics("127.0.0.1:0", func() string { return stage }, slog.Default())
	require.NoError(t, err)
	defer s.stop()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + s.ln.Addr().String() + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, body := get("/healthz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)
	code, body = get("/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "not ready: starting: the kubernetes source's initial sync\n", body)
	stage = "loading the datapath"
	_, body = get("/readyz")
	require.Contains(t, body, "starting: loading the datapath")
	code, body = get("/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "process_start_time_seconds", "the process's metrics are served while starting")
	require.False(t, strings.Contains(body, "sluice_"), "no datapath metrics before the datapath is loaded")
}
