package e2e

// BPF host routing: a packet between two pods of a node goes from the
// client's interface straight to the server's, past the node's routing,
// netfilter and conntrack, still judged at both endpoints; the TTL drops by
// one as forwarding would. --kernel-host-routing sends it through the
// node's stack as before.
//
//	node1 (routed): client ──TCP 8080 / ICMP──► server
//	node netns: nftables counter on the forward hook, client → server

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
)

func TestHostRouting(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		viaBPF bool
	}{
		{"bpf", nil, true},
		{"kernel", []string{"--kernel-host-routing"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.args...)
			n := e.node("node1", harness.Routed)
			client := e.pod(n, "default", "client", map[string]string{"app": "client"})
			server := e.pod(n, "default", "server", map[string]string{"app": "server"})
			// Policy at both ends: host routing must not skip either.
			require.NoError(t, e.c.WriteManifest("policy.yaml", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-client, namespace: default}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: 8080}]
`))
			require.NoError(t, e.c.SyncManifests())
			e.startAgent(n)
			e.waitEndpointsReady(n)
			_, err := server.StartTCPEchoServer(8080)
			require.NoError(t, err)
			_, err = server.StartTCPEchoServer(8081)
			require.NoError(t, err)

			// What the node's stack forwards from client to server.
			rules := "table inet sluicetest {\n chain count {\n  type filter hook forward priority 0; policy accept;\n  ip saddr " +
				client.IP.String() + " ip daddr " + server.IP.String() + " counter\n }\n}\n"
			rulesFile := filepath.Join(t.TempDir(), "count.nft")
			require.NoError(t, os.WriteFile(rulesFile, []byte(rules), 0o644))
			out, err := n.Exec(ctx(t), "nft", "-f", rulesFile)
			require.NoError(t, err, out)

			reply, err := client.TCPRequest(ctx(t), server.IP, 8080, "hello")
			require.NoError(t, err)
			require.Equal(t, "hello", reply)
			_, err = client.TCPRequest(ctx(t), server.IP, 8081, "denied")
			require.Error(t, err, "the server's ingress policy still applies")
			out, err = client.Exec(ctx(t), "ping", "-c", "1", "-W", "2", server.IP.String())
			require.Error(t, err, "ICMP is not allowed into the server: %s", out)

			// Without policy on the client's side, ICMP to the client
			// from the server is allowed: its TTL tells whether the
			// packet was forwarded (64 - 1).
			out, err = server.Exec(ctx(t), "ping", "-c", "1", "-W", "2", client.IP.String())
			require.NoError(t, err, out)
			m := regexp.MustCompile(`ttl=(\d+)`).FindStringSubmatch(out)
			require.NotNil(t, m, out)
			ttl, _ := strconv.Atoi(m[1])
			require.Equal(t, 63, ttl, "one hop: the TTL is decremented as forwarding does")

			out, err = n.Exec(ctx(t), "nft", "list", "table", "inet", "sluicetest")
			require.NoError(t, err)
			pkts := regexp.MustCompile(`counter packets (\d+)`).FindStringSubmatch(out)
			require.NotNil(t, pkts, out)
			seen, _ := strconv.Atoi(pkts[1])

			var routed uint64
			for _, c := range e.status(n).Counters {
				if c.Verdict == "host-routed" {
					routed += c.Packets
				}
			}
			if tc.viaBPF {
				require.Zero(t, seen, "the node's forward hook saw client → server packets:\n%s", out)
				require.NotZero(t, routed, "host-routed counter")
			} else {
				require.NotZero(t, seen, "with --kernel-host-routing the node's stack forwards:\n%s", strings.TrimSpace(out))
				require.Zero(t, routed, "host-routed counter")
			}
		})
	}
}
