package e2e

// The agent serves the node's Envoy over xDS: go-control-plane's ADS
// client, standing in for Envoy on the agent's real socket, gets the
// (for now empty) L7 configuration at once, its ACKs show in `sluice
// proxy status`, and after the agent restarts it reconnects to the same
// version.
//
//	node1: sluice-agent ── <state-dir>/xds.sock ── ADS client ("envoy")

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	sotw "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/internal/testing/xdstest"
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/xds"
)

func TestAgentServesXDS(t *testing.T) {
	e := newEnv(t)
	n1 := e.node("node1", harness.Routed)
	require.NoError(t, e.c.SyncManifests())
	a := e.startAgent(n1)

	sock := filepath.Join(n1.StateDir, xds.DefaultSocketName)
	fi, err := os.Lstat(sock)
	require.NoError(t, err)
	require.Equal(t, fs.ModeSocket|0o660, fi.Mode(), "like the API socket")

	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	node := &corev3.Node{Id: n1.Name, Cluster: "sluice-envoy"}
	lds := sotw.NewADSClient(ctx(t), node, resourcev3.ListenerType)
	cds := sotw.NewADSClient(ctx(t), node, resourcev3.ClusterType)
	for _, c := range []sotw.ADSClient{lds, cds} {
		require.NoError(t, c.InitConnect(conn))
	}
	require.Empty(t, xdstest.Fetch(t, lds), "no L7 policy, no listeners")
	require.Equal(t, []string{xds.ClusterOriginalDst}, xdstest.Fetch(t, cds))
	require.NoError(t, lds.Ack())
	require.NoError(t, cds.Ack())

	proxyStatus := func() api.ProxyStatus {
		var st api.ProxyStatus
		require.NoError(t, json.Unmarshal([]byte(e.cli(n1, "proxy", "status", "-o", "json")), &st))
		return st
	}
	require.Eventually(t, func() bool { st := proxyStatus(); return st.InSync() && len(st.Acks) == 2 }, 10*time.Second, 100*time.Millisecond,
		"sluice proxy status shows both ACKs of the served version")
	st := proxyStatus()
	version := st.Version
	require.Len(t, st.Streams, 2)
	require.Equal(t, n1.Name, st.Streams[0].Node)
	require.Contains(t, e.cli(n1, "proxy", "status"), "In sync:     yes (Envoy acknowledged version "+version+")")
	require.Contains(t, e.cli(n1, "status"), "Proxy (xDS):   version "+version+", 0 listeners, 2 Envoy streams")
	require.Empty(t, e.problems(n1))

	// The agent restarts: the stream breaks, the client reconnects to the
	// new agent, which serves the same version: the client says it runs
	// it, is sent nothing (nothing for Envoy to do), and is in sync.
	require.NoError(t, a.Stop())
	_, err = lds.Fetch()
	require.True(t, sotw.IsConnError(err), "the stream ends with the agent: %v", err)
	e.startAgent(n1)
	require.Eventually(t, func() bool { return lds.InitConnect(conn) == nil }, 10*time.Second, 100*time.Millisecond)
	require.Eventually(t, func() bool {
		st := proxyStatus()
		return st.Version == version && st.InSync() && len(st.Streams) == 1
	}, 10*time.Second, 100*time.Millisecond, "the restarted agent serves version %s and the reconnected client runs it", version)
}
