package xds_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-net/sluice/pkg/xds"
)

// staticBootstrap is r as one static Envoy bootstrap, for reading and
// for `envoy --mode validate -c FILE` (which cannot follow ADS): each
// listener's RDS replaced by its route configuration inline, the served
// clusters, and the bootstrap's static ALS cluster on socketPath.
// Nothing else differs from what the server serves.
func staticBootstrap(r *xds.Resources, socketPath string) (*bootstrapv3.Bootstrap, error) {
	routes := map[string]*routev3.RouteConfiguration{}
	for _, rc := range r.Routes {
		routes[rc.Name] = rc
	}
	static := &bootstrapv3.Bootstrap_StaticResources{}
	for _, l := range r.Listeners {
		l = proto.Clone(l).(*listenerv3.Listener)
		for _, fc := range l.FilterChains {
			for _, f := range fc.Filters {
				hcm := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().MessageIs(hcm) {
					if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
						return nil, fmt.Errorf("listener %s: %w", l.Name, err)
					}
					name := hcm.GetRds().GetRouteConfigName()
					rc, ok := routes[name]
					if !ok {
						return nil, fmt.Errorf("listener %s: route configuration %q is not served", l.Name, name)
					}
					hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
					a, err := anypb.New(hcm)
					if err != nil {
						return nil, err
					}
					f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
				}
			}
		}
		static.Listeners = append(static.Listeners, l)
	}
	static.Clusters = append(static.Clusters, r.Clusters...)
	als, err := pipeCluster(xds.ClusterALS, socketPath)
	if err != nil {
		return nil, err
	}
	static.Clusters = append(static.Clusters, als)
	return &bootstrapv3.Bootstrap{
		Node:            &corev3.Node{Id: "sluice-validate", Cluster: "sluice-envoy"},
		StaticResources: static,
	}, nil
}

// pipeCluster is a gRPC (HTTP/2) cluster of one unix socket.
func pipeCluster(name, path string) (*clusterv3.Cluster, error) {
	h2, err := anypb.New(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})
	if err != nil {
		return nil, err
	}
	return &clusterv3.Cluster{
		Name:                          name,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:                durationpb.New(time.Second),
		TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: path}}},
				}},
			}}}},
		},
	}, nil
}

// marshalJSON is m as stable, indented JSON: protojson's output with its
// deliberately unstable whitespace normalised, so files of it can be
// compared and reviewed.
func marshalJSON(m proto.Message) ([]byte, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		return nil, err
	}
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}
