package xds

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	grpcxds "google.golang.org/grpc/xds"

	"github.com/sluice-net/sluice/pkg/l7"
)

// grpcListener wraps what Generate made for cfg's first listener in a
// listener gRPC's xDS server accepts on addr: the generated HTTP
// connection manager with only its RBAC filter and the router (gRPC has
// no jwt_authn nor local_ratelimit), and the generated route
// configuration's virtual host, with the per-virtual-host RBAC rules
// under test, routing every RPC to the server itself (a gRPC server
// serves only non-forwarding routes).
func grpcListener(t *testing.T, cfg l7.Config, addr string) (*listenerv3.Listener, *routev3.RouteConfiguration, string) {
	t.Helper()
	res, err := Generate(cfg, ResourceOptions{})
	require.NoError(t, err)
	require.NoError(t, res.Validate())
	hcm := &hcmv3.HttpConnectionManager{}
	require.NoError(t, res.Listeners[0].FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(hcm))
	var filters []*hcmv3.HttpFilter
	for _, f := range hcm.HttpFilters {
		if f.Name == FilterRBAC || f.Name == wellknown.Router {
			filters = append(filters, f)
		}
	}
	require.Len(t, filters, 2)
	hcm.HttpFilters, hcm.AccessLog = filters, nil
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	var portNum uint32
	_, err = fmt.Sscan(port, &portNum)
	require.NoError(t, err)
	l := &listenerv3.Listener{
		Name: "grpc/server?xds.resource.listening_address=" + addr,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: portNum}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: wellknown.HTTPConnectionManager, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
		}}}},
	}
	rc := res.Routes[0]
	rc.VirtualHosts[0].Routes = []*routev3.Route{{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}},
	}}
	return l, rc, res.Version
}

// TestRBACInterpretedByGRPC: gRPC-Go's xDS server, an RBAC engine written
// apart from Envoy's, is configured by our xDS server with the RBAC we
// generate and enforces it on real RPCs: a rule's path, method and header
// allow what they name and nothing else; an audit listener denies nothing
// (it enforces `rules` and ignores `shadow_rules`, so this also checks
// that audit mode still emits `rules`).
func TestRBACInterpretedByGRPC(t *testing.T) {
	ref := func(i int) l7.RuleRef { return l7.RuleRef{Namespace: "ops", Policy: "health", RuleIndex: i} }
	cfg := l7.Config{Listeners: []l7.Listener{{Port: 15100, Name: "l7-15100", Rules: []l7.Rule{
		{Ref: ref(0), Method: "POST", Path: l7.PathMatch{Kind: l7.PathExact, Value: "/grpc.health.v1.Health/Check"},
			Headers: []l7.HeaderMatch{{Name: "x-team", Value: "blue"}}},
		{Ref: ref(1), Method: "GET|POST", Path: l7.PathMatch{Kind: l7.PathRegex, Value: `/grpc\.health\.v1\.Health/W.*`},
			Headers: []l7.HeaderMatch{{Name: "X-Debug"}}},
	}}}}

	srv, err := NewServer(ServerOptions{SocketPath: filepath.Join(t.TempDir(), DefaultSocketName), SocketGroup: -1})
	require.NoError(t, err)
	require.NoError(t, srv.Start())
	t.Cleanup(srv.Close)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	serve := func(cfg l7.Config) {
		t.Helper()
		l, rc, version := grpcListener(t, cfg, lis.Addr().String())
		snap, err := cachev3.NewSnapshot(version, map[resourcev3.Type][]types.Resource{
			resourcev3.ListenerType: {l}, resourcev3.RouteType: {rc},
		})
		require.NoError(t, err)
		require.NoError(t, srv.cache.SetSnapshot(context.Background(), snapshotKey, snap))
	}
	serve(cfg)

	bootstrap := fmt.Sprintf(`{
		"xds_servers": [{"server_uri": "unix://%s", "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": "grpc-rbac-test"},
		"server_listener_resource_name_template": "grpc/server?xds.resource.listening_address=%%s"
	}`, srv.opts.SocketPath)
	serving := make(chan error, 8)
	gs, err := grpcxds.NewGRPCServer(grpc.Creds(insecure.NewCredentials()),
		grpcxds.BootstrapContentsForTesting([]byte(bootstrap)),
		grpcxds.ServingModeCallback(func(_ net.Addr, a grpcxds.ServingModeChangeArgs) {
			if a.Mode == connectivity.ServingModeServing {
				serving <- nil
			} else if a.Err != nil {
				serving <- a.Err
			}
		}))
	require.NoError(t, err)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	select {
	case err := <-serving:
		require.NoError(t, err, "gRPC refused the listener")
	case <-time.After(20 * time.Second):
		t.Fatal("gRPC's xDS server did not start serving within 20s")
	}

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	client := healthpb.NewHealthClient(conn)
	check := func(md ...string) codes.Code {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), md...), 5*time.Second)
		defer cancel()
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		return status.Code(err)
	}
	watch := func(md ...string) codes.Code {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), md...), 5*time.Second)
		defer cancel()
		w, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = w.Recv()
		}
		return status.Code(err)
	}

	for _, tc := range []struct {
		name string
		call func(...string) codes.Code
		md   []string
		want codes.Code
	}{
		{"rule 0: Check with x-team: blue", check, []string{"x-team", "blue"}, codes.OK},
		{"Check without x-team", check, nil, codes.PermissionDenied},
		{"Check with x-team: red", check, []string{"x-team", "red"}, codes.PermissionDenied},
		{"rule 1: Watch with x-debug", watch, []string{"x-debug", "1"}, codes.OK},
		{"Watch without x-debug", watch, nil, codes.PermissionDenied},
		{"Watch with only rule 0's header", watch, []string{"x-team", "blue"}, codes.PermissionDenied},
		{"rule 1's header, rule 0's path", check, []string{"x-debug", "1"}, codes.PermissionDenied},
	} {
		require.Equal(t, tc.want, tc.call(tc.md...), tc.name)
	}

	// Audit mode: the same rules in shadow, nothing denied.
	cfg.Listeners[0].Audit = true
	serve(cfg)
	require.Eventually(t, func() bool { return check() == codes.OK }, 10*time.Second, 50*time.Millisecond,
		"an audit listener denies nothing")
	require.Equal(t, codes.OK, watch(), "an audit listener denies nothing")
}
