package e2e

// A real agent's Prometheus endpoint, scraped from inside its node the way
// a node-local Prometheus (or the kubelet's probes) reach it.
//
//	 node1 (routed), agent --metrics-address :9962, --health-address
//	 127.0.0.1:9879 (the defaults)
//	 ┌ client ──┐ TCP 8080 ┌ server ──┐
//	 │ egress ▲ │ ───────▶ │ ingress ▼│     GET 127.0.0.1:9962/metrics
//	 └──────────┘          └──────────┘     in node1's netns: forwarded
//	                                        packets counted both ways;
//	                                        GET 127.0.0.1:9879/healthz, /readyz
//	                                        as the kubelet probes it

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
)

// The agent's default ports: --metrics-address, --health-address.
const (
	metricsPort = 9962
	healthPort  = 9879
)

// agentGet fetches path from the agent's HTTP server on port of n's
// loopback, inside n's netns, with bash's /dev/tcp (the nodes have no
// curl), and returns the status line and the body.
func agentGet(t *testing.T, n *harness.Node, port int, path string) (status, body string, err error) {
	script := fmt.Sprintf(`exec 3<>/dev/tcp/127.0.0.1/%d && printf 'GET %s HTTP/1.0\r\n\r\n' >&3 && cat <&3`, port, path)
	out, err := n.Exec(ctx(t), "bash", "-c", script)
	if err != nil {
		return "", "", err
	}
	head, body, ok := strings.Cut(out, "\r\n\r\n")
	if !ok {
		return "", "", fmt.Errorf("GET %s on %s: no HTTP response: %q", path, n.Name, out)
	}
	status, _, _ = strings.Cut(head, "\r\n")
	return status, body, nil
}

func mustAgentGet(t *testing.T, n *harness.Node, port int, path string) (status, body string) {
	t.Helper()
	status, body, err := agentGet(t, n, port, path)
	require.NoError(t, err)
	return status, body
}

// sample is the value of series (name{labels} as the text format writes
// it, labels sorted by name) in a scrape.
func sample(body, series string) (float64, bool) {
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

func TestAgentMetrics(t *testing.T) {
	e := newEnv(t)
	n1 := e.node("node1", harness.Routed)
	client := e.pod(n1, "default", "client", map[string]string{"app": "client"})
	server := e.pod(n1, "default", "server", map[string]string{"app": "server"})
	require.NoError(t, e.c.SyncManifests())
	e.startAgent(n1)
	_, err := server.StartTCPEchoServer(8080)
	require.NoError(t, err)

	// The probes on the health address, and on the metrics address too.
	for _, port := range []int{healthPort, metricsPort} {
		status, body := mustAgentGet(t, n1, port, "/healthz")
		require.Contains(t, status, " 200 ", "port %d", port)
		require.Equal(t, "ok\n", body)
		status, _ = mustAgentGet(t, n1, port, "/readyz")
		require.Contains(t, status, " 200 ", "port %d: the agent is ready (startAgent waited for it)", port)
	}
	status, _ := mustAgentGet(t, n1, healthPort, "/metrics")
	require.Contains(t, status, " 404 ", "the health address serves the probes only")

	_, body := mustAgentGet(t, n1, metricsPort, "/metrics")
	before, _ := sample(body, `sluice_datapath_packets_total{direction="egress",family="ipv4",metric="forwarded",reason=""}`)
	for range 3 {
		echo(t, &client.Host, "TCP", server.IP, 8080)
	}

	// Counters are read from the maps at scrape time; flows arrive through
	// the ring buffer, which the agent polls.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		_, body, err := agentGet(t, n1, metricsPort, "/metrics")
		if !assert.NoError(c, err) {
			return
		}
		for _, dir := range []string{"egress", "ingress"} {
			v, ok := sample(body, `sluice_datapath_packets_total{direction="`+dir+`",family="ipv4",metric="forwarded",reason=""}`)
			assert.True(c, ok, "no forwarded %s packets in\n%s", dir, body)
			if dir == "egress" {
				// Each echo is a handshake, a request and a close: several
				// packets out of the client alone.
				assert.GreaterOrEqual(c, v-before, 9.0, "forwarded egress packets")
			}
		}
		v, _ := sample(body, `sluice_flows_total{type="trace",verdict="FORWARDED"}`)
		assert.GreaterOrEqual(c, v, 3.0, "new connections seen as flows")
		v, _ = sample(body, "sluice_endpoints")
		assert.Equal(c, 2.0, v)
		_, ok := sample(body, "sluice_conntrack_entries")
		assert.True(c, ok, "conntrack is counted")
		v, _ = sample(body, `sluice_metrics_scrape_errors_total{source="counters"}`)
		assert.Zero(c, v)
	}, 10*time.Second, 200*time.Millisecond)
}
