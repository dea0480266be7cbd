package xds_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	sotw "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluice-net/sluice/internal/testing/xdstest"
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/metrics"
	"github.com/sluice-net/sluice/pkg/statedir"
	"github.com/sluice-net/sluice/pkg/xds"
)

// startServer serves xDS on a socket in dir, with obs counting; closed
// when the test ends.
func startServer(t *testing.T, sock string, obs xds.Observer) *xds.Server {
	t.Helper()
	srv, err := xds.NewServer(xds.ServerOptions{SocketPath: sock, SocketGroup: -1, Observer: obs})
	require.NoError(t, err)
	require.NoError(t, srv.Start())
	t.Cleanup(srv.Close)
	return srv
}

// dial connects a gRPC client to the unix socket at sock.
func dial(t *testing.T, sock string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

func ackOf(st api.ProxyStatus, typeURL string) (api.ProxyAck, bool) {
	for _, a := range st.Acks {
		if a.TypeURL == typeURL {
			return a, true
		}
	}
	return api.ProxyAck{}, false
}

func counterValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) (float64, uint64) {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue series
				}
			}
			if h := m.GetHistogram(); h != nil {
				return h.GetSampleSum(), h.GetSampleCount()
			}
			return m.GetCounter().GetValue(), 0
		}
	}
	return 0, 0
}

// TestADS: go-control-plane's ADS client, over the real socket, gets the
// listeners, routes and clusters of the served Config; its ACK shows in
// the status with the version and latency; a changed Config is a new
// version, an unchanged one no push, a bad one an error that leaves the
// last good one serving; a NACK shows with Envoy's message and the
// resources rejected, and is counted in the metrics.
func TestADS(t *testing.T) {
	sock := filepath.Join(t.TempDir(), xds.DefaultSocketName)
	col := metrics.NewCollector(metrics.Options{})
	reg := metrics.NewRegistry(col)
	srv := startServer(t, sock, col)

	fi, err := os.Stat(sock)
	require.NoError(t, err)
	assert.Equal(t, statedir.SocketMode, fi.Mode().Perm(), "the socket's mode")

	require.NoError(t, srv.Update(getAPI()))
	v1 := srv.Status().Version
	require.NotEmpty(t, v1)

	conn := dial(t, sock)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	node := &corev3.Node{Id: "node-a", Cluster: "sluice-envoy"}
	lds := sotw.NewADSClient(ctx, node, resourcev3.ListenerType)
	require.NoError(t, lds.InitConnect(conn))
	assert.Equal(t, []string{"l7-15001"}, xdstest.Fetch(t, lds))
	require.NoError(t, lds.Ack())

	rds := sotw.NewADSClient(ctx, node, resourcev3.RouteType)
	require.NoError(t, rds.InitConnect(conn))
	assert.Equal(t, []string{"l7-15001"}, xdstest.Fetch(t, rds))
	require.NoError(t, rds.Ack())
	cds := sotw.NewADSClient(ctx, node, resourcev3.ClusterType)
	require.NoError(t, cds.InitConnect(conn))
	assert.Equal(t, []string{xds.ClusterOriginalDst}, xdstest.Fetch(t, cds))
	require.NoError(t, cds.Ack())

	require.Eventually(t, func() bool {
		st := srv.Status()
		for _, typ := range []string{resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType} {
			if a, ok := ackOf(st, typ); !ok || a.Version != v1 {
				return false
			}
		}
		return st.InSync()
	}, 5*time.Second, 10*time.Millisecond, "every type acknowledged at %s", v1)
	st := srv.Status()
	a, _ := ackOf(st, resourcev3.ListenerType)
	assert.Equal(t, "node-a", a.Node)
	assert.Positive(t, a.Latency)
	require.Len(t, st.Streams, 3)
	assert.Equal(t, "node-a", st.Streams[0].Node)
	assert.Equal(t, []api.ProxyListener{{Name: "l7-15001", Port: 15001, Rules: 1}}, st.Listeners)
	_, acks := counterValue(t, reg, "sluice_xds_ack_latency_seconds", map[string]string{"type": "envoy.config.listener.v3.Listener"})
	assert.EqualValues(t, 1, acks, "one LDS ACK timed")
	pushes, _ := counterValue(t, reg, "sluice_xds_pushes_total", nil)
	assert.EqualValues(t, 1, pushes)

	// The same Config again: no push.
	require.NoError(t, srv.Update(getAPI()))
	assert.EqualValues(t, 1, srv.Status().Pushes)

	// A Config that cannot be expressed: an error naming the rule, the
	// last good snapshot keeps serving.
	bad := getAPI()
	bad.Listeners[0].Rules[0].Method = "GET("
	err = srv.Update(bad)
	require.ErrorContains(t, err, "rule shop/api/ports[0]/rules[0]")
	st = srv.Status()
	assert.Equal(t, v1, st.Version)
	assert.Contains(t, st.LastError, "rule shop/api/ports[0]/rules[0] (listener l7-15001): method")

	// A second listener: a new version on every stream.
	two := getAPI()
	two.Listeners = append(two.Listeners, l7.Listener{Port: 15002, Name: "l7-15002",
		Rules: []l7.Rule{{Ref: l7.RuleRef{Namespace: "shop", Policy: "web"}, Path: l7.PathMatch{Kind: l7.PathPrefix, Value: "/"}}}})
	require.NoError(t, srv.Update(two))
	st = srv.Status()
	v2 := st.Version
	assert.NotEqual(t, v1, v2)
	assert.Empty(t, st.LastError, "a served Config clears the error")
	assert.False(t, st.InSync(), "not acknowledged yet")
	assert.Equal(t, []string{"l7-15001", "l7-15002"}, xdstest.Fetch(t, lds))

	// Envoy rejects it.
	const msg = "Error adding/updating listener(s) l7-15002: cannot bind '127.0.0.1:15002': Address already in use"
	require.NoError(t, lds.Nack(msg))
	require.Eventually(t, func() bool { return srv.Status().NACKs == 1 }, 5*time.Second, 10*time.Millisecond)
	st = srv.Status()
	require.NotNil(t, st.LastNACK)
	assert.Equal(t, resourcev3.ListenerType, st.LastNACK.TypeURL)
	assert.Equal(t, v2, st.LastNACK.Version)
	assert.Equal(t, []string{"l7-15001", "l7-15002"}, st.LastNACK.Resources)
	assert.Equal(t, msg, st.LastNACK.Message)
	assert.Equal(t, "node-a", st.LastNACK.Node)
	a, _ = ackOf(st, resourcev3.ListenerType)
	assert.Equal(t, v1, a.Version, "the last version Envoy accepted")
	nacks, _ := counterValue(t, reg, "sluice_xds_nacks_total", map[string]string{"type": "envoy.config.listener.v3.Listener"})
	assert.EqualValues(t, 1, nacks)

	// Routes of the new version, acknowledged.
	assert.Equal(t, []string{"l7-15001", "l7-15002"}, xdstest.Fetch(t, rds))
	require.NoError(t, rds.Ack())
	require.Eventually(t, func() bool {
		a, ok := ackOf(srv.Status(), resourcev3.RouteType)
		return ok && a.Version == v2
	}, 5*time.Second, 10*time.Millisecond)
}

// TestADSReconnect: after the agent's restart (a new server on the same
// socket), a client that reconnects is served the same Config at the same
// version, so Envoy has nothing to change.
func TestADSReconnect(t *testing.T) {
	sock := filepath.Join(t.TempDir(), xds.DefaultSocketName)
	srv := startServer(t, sock, nil)
	require.NoError(t, srv.Update(getAPI()))
	v := srv.Status().Version

	conn := dial(t, sock)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	node := &corev3.Node{Id: "node-a"}
	lds := sotw.NewADSClient(ctx, node, resourcev3.ListenerType)
	require.NoError(t, lds.InitConnect(conn))
	assert.Equal(t, []string{"l7-15001"}, xdstest.Fetch(t, lds))
	require.NoError(t, lds.Ack())

	srv.Close()
	_, err := os.Stat(sock)
	require.ErrorIs(t, err, os.ErrNotExist, "the socket is removed")
	_, err = lds.Fetch()
	require.Error(t, err)
	assert.True(t, sotw.IsConnError(err), "a connection error: %v", err)

	srv2 := startServer(t, sock, nil)
	require.NoError(t, srv2.Update(getAPI()))
	assert.Equal(t, v, srv2.Status().Version, "the same Config is the same version after a restart")
	// gRPC's client connection reconnects by itself; the stream is new.
	require.Eventually(t, func() bool { return lds.InitConnect(conn) == nil }, 10*time.Second, 50*time.Millisecond)
	// Its first request says the version it runs: in sync at once.
	require.Eventually(t, func() bool {
		a, ok := ackOf(srv2.Status(), resourcev3.ListenerType)
		return ok && a.Version == v && a.Latency == 0
	}, 5*time.Second, 10*time.Millisecond, "the version Envoy kept, said on reconnecting")
	assert.Equal(t, []string{"l7-15001"}, xdstest.Fetch(t, lds))
	require.NoError(t, lds.Ack())
	require.Eventually(t, func() bool {
		a, ok := ackOf(srv2.Status(), resourcev3.ListenerType)
		return ok && a.Version == v
	}, 5*time.Second, 10*time.Millisecond)
}

// TestADSEmptyConfig: with no L7 policy, Envoy is answered at once with
// no listeners and no routes (the original destination cluster only),
// not left waiting for a first response that never comes.
func TestADSEmptyConfig(t *testing.T) {
	sock := filepath.Join(t.TempDir(), xds.DefaultSocketName)
	srv := startServer(t, sock, nil)
	require.NoError(t, srv.Update(l7.Config{}))
	conn := dial(t, sock)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for typ, want := range map[string][]string{
		resourcev3.ListenerType: nil,
		resourcev3.RouteType:    nil,
		resourcev3.ClusterType:  {xds.ClusterOriginalDst},
	} {
		c := sotw.NewADSClient(ctx, &corev3.Node{Id: "node-a"}, typ)
		require.NoError(t, c.InitConnect(conn))
		assert.Equal(t, want, xdstest.Fetch(t, c), typ)
	}
}

// configs is a ConfigSource whose Config the test sets.
type configs struct {
	mu      sync.Mutex
	cfg     l7.Config
	reads   int
	changed chan struct{}
}

func (c *configs) L7Config() l7.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	return c.cfg
}

func (c *configs) readCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads
}

func (c *configs) Changed() <-chan struct{} { return c.changed }

func (c *configs) set(cfg l7.Config) {
	c.mu.Lock()
	c.cfg = cfg
	c.mu.Unlock()
	c.changed <- struct{}{}
}

// TestRun: Run serves the source's Config and each change; a change that
// cannot be served is reported, and the last good one keeps serving.
func TestRun(t *testing.T) {
	srv := startServer(t, filepath.Join(t.TempDir(), xds.DefaultSocketName), nil)
	src := &configs{changed: make(chan struct{})}
	reported := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	report := func(err error) {
		select {
		case reported <- err:
		default:
		}
	}
	go func() { defer close(done); srv.Run(ctx, src, report) }()
	t.Cleanup(func() { cancel(); <-done })

	require.Eventually(t, func() bool { return srv.Status().Version != "" }, 5*time.Second, 10*time.Millisecond)
	assert.Empty(t, srv.Status().Listeners)
	src.set(getAPI())
	require.Eventually(t, func() bool { return len(srv.Status().Listeners) == 1 }, 5*time.Second, 10*time.Millisecond)
	good := srv.Status().Version

	bad := getAPI()
	bad.Listeners[0].Rules[0].Path = l7.PathMatch{Kind: l7.PathExact, Value: "api"}
	src.set(bad)
	select {
	case err := <-reported:
		require.ErrorContains(t, err, "rule shop/api/ports[0]/rules[0] (listener l7-15001): path")
	case <-time.After(5 * time.Second):
		t.Fatal("the bad config was not reported")
	}
	assert.Equal(t, good, srv.Status().Version, "the last good config keeps serving")

	// A closed channel ends the updates (Run does not spin on it), not
	// the server.
	before := src.readCount()
	close(src.changed)
	time.Sleep(100 * time.Millisecond)
	assert.LessOrEqual(t, src.readCount(), before+1, "the config is not read again and again")
	assert.Equal(t, good, srv.Status().Version)
}
