package agent

import (
	"net"
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
	s, err := listenMetrics("")
	require.NoError(t, err)
	require.Nil(t, s)
	s.stop() // nil-safe, as Run defers it

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	_, err = listenMetrics(taken.Addr().String())
	require.ErrorContains(t, err, "--metrics-address "+taken.Addr().String())

	s, err = listenMetrics("127.0.0.1:0")
	require.NoError(t, err)
	s.stop()
	s.stop()
	_, err = net.Dial("tcp", s.ln.Addr().String())
	require.Error(t, err, "stop closes the listener")
}
