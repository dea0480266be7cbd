package xds

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	grpcalv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/l7"
)

// Names shared with Envoy's bootstrap (daemonset/envoy-configmap.yaml)
// and with the access log service.
const (
	// ClusterOriginalDst is the one upstream cluster of every listener:
	// the connection's original destination, dialled with SO_MARK
	// datapath.MarkFromProxy.
	ClusterOriginalDst = "sluice-original-dst"
	// ClusterALS is the static cluster of Envoy's bootstrap that reaches
	// the agent's access log service (the same socket as xDS).
	ClusterALS = "sluice-als"
	// ClusterXDS is the static cluster of Envoy's bootstrap that reaches
	// this server.
	ClusterXDS = "sluice-xds"
	// ALSLogName is the log_name of every access log Envoy streams.
	ALSLogName = "sluice"
	// TagListener and TagAudit are the custom tags of every access log
	// entry: the l7.Listener's name, and "true" on audit listeners.
	TagListener = "sluice.listener"
	TagAudit    = "sluice.audit"
	// UnmatchedRoute ends the route name of a request no rule matched
	// ("<listener>/unmatched"): RBAC denies it (or, in audit mode, logs
	// it as a shadow denial).
	UnmatchedRoute = "unmatched"
	// FilterJWT, FilterRBAC and FilterRateLimit are the HTTP filters'
	// names, which are also their dynamic metadata namespaces and the
	// keys of their per-route configurations.
	FilterJWT       = "envoy.filters.http.jwt_authn"
	FilterRBAC      = wellknown.HTTPRoleBasedAccessControl
	FilterRateLimit = "envoy.filters.http.local_ratelimit"
	// JWTFailedSuffix ends the metadata key under which jwt_authn records
	// why a provider rejected a token ("<provider>.failed"); the verified
	// payload is under the provider's name.
	JWTFailedSuffix = ".failed"
	// RateLimitStatPrefix prefixes the local rate limit's statistics.
	RateLimitStatPrefix = "sluice_rate_limit"
	// AuditPolicy is the allow-all RBAC policy of an audit listener's
	// enforced rules.
	AuditPolicy = "sluice/audit-allow-all"
)

// maxClientBuckets bounds the per-client token buckets a per-client rate
// limit keeps (Envoy's LRU of dynamic descriptors): a client evicted from
// it starts again with a full bucket. 10,000 clients of one rule on one
// node is far beyond an east-west service's callers.
const maxClientBuckets = 10000

// minFillInterval is Envoy's lower bound on a token bucket's fill interval.
const minFillInterval = 50 * time.Millisecond

// ResourceOptions shape the generated resources beyond the Config.
type ResourceOptions struct {
	// ReusePort sets enable_reuse_port on the listeners. Off by default:
	// the datapath hands connections to a listening socket it looks up
	// with bpf_sk_assign, and only kernels with reuseport selection for
	// assigned sockets spread them over a reuseport group (see the
	// package doc); one listening socket shared by Envoy's workers is
	// correct on every kernel.
	ReusePort bool
	// UpstreamMark is the SO_MARK of Envoy's upstream connections
	// (default datapath.MarkFromProxy): the datapath never redirects a
	// marked connection again, and the destination admits it.
	UpstreamMark uint32
}

func (o ResourceOptions) mark() uint32 {
	if o.UpstreamMark == 0 {
		return datapath.MarkFromProxy
	}
	return o.UpstreamMark
}

// Resources are the xDS resources of one Config, sorted by name.
type Resources struct {
	// Version is derived from the Config and the Options: equal inputs,
	// equal version, and an unchanged Config is not pushed again.
	Version   string
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
}

// RuleError is a rule that Envoy's stock extensions cannot express as
// given; it names the rule so that the policy's status can show it.
type RuleError struct {
	Listener string
	Rule     l7.RuleRef // zero when the error is the listener's own
	Field    string
	Err      error
}

func (e *RuleError) Error() string {
	if e.Rule == (l7.RuleRef{}) {
		return fmt.Sprintf("listener %s: %s: %v", e.Listener, e.Field, e.Err)
	}
	return fmt.Sprintf("rule %s (listener %s): %s: %v", e.Rule, e.Listener, e.Field, e.Err)
}

func (e *RuleError) Unwrap() error { return e.Err }

// Generate turns cfg into Envoy resources: per listener an LDS listener
// on 127.0.0.1:Port and an RDS route configuration of the same name, and
// the shared original-destination cluster. It is pure. A rule it cannot
// express is a *RuleError; nothing is ever left out.
func Generate(cfg l7.Config, opts ResourceOptions) (*Resources, error) {
	version, err := Version(cfg, opts)
	if err != nil {
		return nil, err
	}
	res := &Resources{Version: version, Clusters: []*clusterv3.Cluster{originalDstCluster(opts.mark())}}
	names := map[string]bool{}
	ports := map[uint16]string{}
	for _, l := range cfg.Listeners {
		if l.Name == "" {
			return nil, &RuleError{Listener: fmt.Sprintf("port %d", l.Port), Field: "name", Err: fmt.Errorf("empty")}
		}
		if names[l.Name] {
			return nil, &RuleError{Listener: l.Name, Field: "name", Err: fmt.Errorf("two listeners share it")}
		}
		if l.Port == 0 {
			return nil, &RuleError{Listener: l.Name, Field: "port", Err: fmt.Errorf("0 is not a proxy port")}
		}
		if other, ok := ports[l.Port]; ok {
			return nil, &RuleError{Listener: l.Name, Field: "port", Err: fmt.Errorf("%d is listener %s's too", l.Port, other)}
		}
		names[l.Name], ports[l.Port] = true, l.Name
		rules, err := compileRules(l)
		if err != nil {
			return nil, err
		}
		lis, err := listener(l, rules, opts)
		if err != nil {
			return nil, err
		}
		rc, err := routeConfig(l, rules)
		if err != nil {
			return nil, err
		}
		res.Listeners = append(res.Listeners, lis)
		res.Routes = append(res.Routes, rc)
	}
	slices.SortFunc(res.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(res.Routes, func(a, b *routev3.RouteConfiguration) int { return cmp.Compare(a.Name, b.Name) })
	return res, nil
}

// Version is the snapshot version of cfg: a hash of its canonical JSON
// form (the types' fields in declaration order, listeners as given) and
// of the options.
func Version(cfg l7.Config, opts ResourceOptions) (string, error) {
	b, err := json.Marshal(struct {
		Config    l7.Config
		ReusePort bool
		Mark      uint32
	}{cfg, opts.ReusePort, opts.mark()})
	if err != nil {
		return "", fmt.Errorf("hash the L7 config: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}

// mustAny packs m; it cannot fail for a generated message.
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("pack %T: %v", m, err))
	}
	return a
}

// listener is the LDS resource of l: transparent, on loopback, HTTP with
// its routes (and so its rules) over RDS, so that a rule change updates
// the route configuration and never drains the listener.
func listener(l l7.Listener, rules []compiledRule, opts ResourceOptions) (*listenerv3.Listener, error) {
	var filters []*hcmv3.HttpFilter
	if jwt := jwtFilter(l, rules); jwt != nil {
		filters = append(filters, &hcmv3.HttpFilter{Name: FilterJWT, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(jwt)}})
	}
	filters = append(filters,
		// Deny all until the route configuration's per-virtual-host
		// rules apply: a listener never serves without its rules.
		&hcmv3.HttpFilter{Name: FilterRBAC, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(
			&rbacfilterv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}})}},
		// Pass-through here; each rate-limited rule's route carries its
		// bucket. Always present, so adding a rate limit to a rule is a
		// route change, not a listener change.
		&hcmv3.HttpFilter{Name: FilterRateLimit, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(
			&lrlv3.LocalRateLimit{StatPrefix: RateLimitStatPrefix, FilterEnabled: hundredPercent("enabled"), FilterEnforced: hundredPercent("enforced")})}},
		&hcmv3.HttpFilter{Name: wellknown.Router, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}},
	)
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: l.Name,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: l.Name,
			ConfigSource: &corev3.ConfigSource{
				ResourceApiVersion:    corev3.ApiVersion_V3,
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			},
		}},
		HttpFilters: filters,
		AccessLog:   []*accesslogv3.AccessLog{accessLog(l)},
		// The client is the connection's peer (the transparent listener
		// keeps its address), never what X-Forwarded-For claims: a client
		// must not choose its own rate limit bucket. The request goes on
		// unchanged (no X-Forwarded-For appended).
		UseRemoteAddress: wrapperspb.Bool(true),
		SkipXffAppend:    true,
		// Rules match the normalized path, and the normalized path is what
		// the upstream gets: "/api/../admin" cannot pass as "/api/". An
		// escaped slash (%2F) is redirected to its unescaped form so that
		// it is matched as the upstream will read it.
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT,
		// WebSockets keep working through the proxy (Envoy refuses an
		// upgrade it is not configured for); the upgrade request is
		// judged by the rules like any other.
		UpgradeConfigs: []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
		// No idle limit on a stream (Envoy's default cuts one idle for 5
		// minutes): a quiet gRPC stream or long poll lives as long as it
		// would without the proxy. Idle connections still close after
		// Envoy's one hour.
		StreamIdleTimeout: durationpb.New(0),
	}
	return &listenerv3.Listener{
		Name: l.Name,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Protocol: corev3.SocketAddress_TCP, Address: "127.0.0.1",
			PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(l.Port)},
		}}},
		// IP_TRANSPARENT: the datapath hands it connections to other
		// addresses (the original destination) with bpf_sk_assign.
		Transparent:      wrapperspb.Bool(true),
		EnableReusePort:  wrapperspb.Bool(opts.ReusePort),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		ListenerFilters: []*listenerv3.ListenerFilter{{
			Name:       wellknown.OriginalDestination,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&origdstv3.OriginalDst{})},
		}},
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       wellknown.HTTPConnectionManager,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
			}},
		}},
	}, nil
}

// hundredPercent is a runtime fraction whose default is 100%: the local
// rate limit filter is enabled and enforced for every request unless a
// runtime override says otherwise (the proto's default is 0%: a filter
// that limits nothing).
func hundredPercent(what string) *corev3.RuntimeFractionalPercent {
	return &corev3.RuntimeFractionalPercent{
		RuntimeKey:   "sluice.local_rate_limit." + what,
		DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED},
	}
}

// accessLog streams every request of l to the agent's access log service.
func accessLog(l l7.Listener) *accesslogv3.AccessLog {
	audit := "false"
	if l.Audit {
		audit = "true"
	}
	cfg := &grpcalv3.HttpGrpcAccessLogConfig{
		CommonConfig: &grpcalv3.CommonGrpcAccessLogConfig{
			LogName:             ALSLogName,
			TransportApiVersion: corev3.ApiVersion_V3,
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ClusterALS},
			}},
			CustomTags: []*tracingv3.CustomTag{
				{Tag: TagListener, Type: &tracingv3.CustomTag_Literal_{Literal: &tracingv3.CustomTag_Literal{Value: l.Name}}},
				{Tag: TagAudit, Type: &tracingv3.CustomTag_Literal_{Literal: &tracingv3.CustomTag_Literal{Value: audit}}},
			},
		},
	}
	return &accesslogv3.AccessLog{
		Name:       wellknown.HTTPGRPCAccessLog,
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(cfg)},
	}
}

// routeConfig is l's RDS resource: one virtual host carrying the RBAC
// rules, one route per rule in order (named by the rule, carrying its
// rate limit) and a last route for requests no rule matches.
func routeConfig(l l7.Listener, rules []compiledRule) (*routev3.RouteConfiguration, error) {
	rbac := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{}}
	for _, r := range rules {
		rbac.Policies[r.ref.String()] = r.policy()
	}
	perRoute := &rbacfilterv3.RBAC{Rules: rbac}
	if l.Audit {
		// Envoy and gRPC enforce `rules` and only log `shadow_rules`; an
		// RBAC without `rules` is no RBAC at all to gRPC. An audit
		// listener enforces an allow-all policy and shadows the real one.
		perRoute = &rbacfilterv3.RBAC{
			Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{AuditPolicy: {
				Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
				Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}},
			}}},
			ShadowRules: rbac,
		}
	}
	vh := &routev3.VirtualHost{
		Name:    l.Name,
		Domains: []string{"*"},
		TypedPerFilterConfig: map[string]*anypb.Any{
			FilterRBAC: mustAny(&rbacfilterv3.RBACPerRoute{Rbac: perRoute}),
		},
	}
	for _, r := range rules {
		rt := r.route()
		if r.rateLimit != nil {
			rt.TypedPerFilterConfig = map[string]*anypb.Any{FilterRateLimit: mustAny(rateLimit(r.rateLimit))}
		}
		vh.Routes = append(vh.Routes, rt)
	}
	vh.Routes = append(vh.Routes, &routev3.Route{
		Name:   l.Name + "/" + UnmatchedRoute,
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: forward(),
	})
	return &routev3.RouteConfiguration{Name: l.Name, VirtualHosts: []*routev3.VirtualHost{vh}}, nil
}

// forward sends a request on to its original destination. No route
// timeout: the proxy is transparent, and a long poll or a stream must
// last as long as it would without it.
func forward() *routev3.Route_Route {
	return &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: ClusterOriginalDst},
		Timeout:          durationpb.New(0),
	}}
}

// rateLimit is a rule's token bucket, for its route. A per-client limit
// keys a bucket per downstream address (Envoy's wildcard descriptor:
// remote_address without a value); the default bucket is then never
// consumed.
func rateLimit(rl *l7.RateLimit) *lrlv3.LocalRateLimit {
	bucket := &typev3.TokenBucket{
		MaxTokens:     rl.Burst,
		TokensPerFill: wrapperspb.UInt32(rl.Requests),
		FillInterval:  durationpb.New(rl.Per),
	}
	out := &lrlv3.LocalRateLimit{
		StatPrefix:     RateLimitStatPrefix,
		TokenBucket:    bucket,
		FilterEnabled:  hundredPercent("enabled"),
		FilterEnforced: hundredPercent("enforced"),
	}
	if rl.PerClient {
		out.RateLimits = []*routev3.RateLimit{{Actions: []*routev3.RateLimit_Action{{
			ActionSpecifier: &routev3.RateLimit_Action_RemoteAddress_{RemoteAddress: &routev3.RateLimit_Action_RemoteAddress{}},
		}}}}
		out.Descriptors = []*ratelimitDescriptor{{
			Entries:     []*ratelimitEntry{{Key: "remote_address"}},
			TokenBucket: proto.Clone(bucket).(*typev3.TokenBucket),
		}}
		out.AlwaysConsumeDefaultTokenBucket = wrapperspb.Bool(false)
		out.MaxDynamicDescriptors = wrapperspb.UInt32(maxClientBuckets)
	}
	return out
}

// originalDstCluster is the upstream of every listener: the connection's
// original destination (the transparent listener's local address), from
// the node's own address, marked so the datapath neither redirects it
// again nor refuses it at the destination. Upstream protocol follows the
// downstream one, so gRPC (HTTP/2) stays HTTP/2.
func originalDstCluster(mark uint32) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 ClusterOriginalDst,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(5 * time.Second),
		UpstreamBindConfig: &corev3.BindConfig{SocketOptions: []*corev3.SocketOption{{
			Description: fmt.Sprintf("SO_MARK %#x: the proxy's upstream (datapath.MarkFromProxy)", mark),
			Level:       unix.SOL_SOCKET,
			Name:        unix.SO_MARK,
			Value:       &corev3.SocketOption_IntValue{IntValue: int64(mark)},
			State:       corev3.SocketOption_STATE_PREBIND,
		}}},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(&httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
					UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
						HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
						Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
					},
				},
			}),
		},
	}
}

// jwtFilter verifies tokens for every provider l's rules name, without
// deciding anything: a request passes it with or without a valid token,
// and RBAC decides from the verified payload (principals on the
// provider's metadata), so that a request a JWT rule does not cover is
// judged by the other rules. Nil when no rule of l needs a token.
func jwtFilter(l l7.Listener, rules []compiledRule) *jwtv3.JwtAuthentication {
	providers := map[string]*jwtv3.JwtProvider{}
	var names []string
	for _, r := range rules {
		j := r.jwt
		if j == nil || providers[j.Provider] != nil {
			continue
		}
		providers[j.Provider] = &jwtv3.JwtProvider{
			Issuer:    j.Issuer,
			Audiences: j.Audiences,
			JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: j.JWKS},
			}},
			// The upstream gets the request as the client sent it.
			Forward:                true,
			PayloadInMetadata:      j.Provider,
			FailedStatusInMetadata: j.Provider + JWTFailedSuffix,
			// Routes match on the payload (rules with claims): route
			// again once it is known.
			ClearRouteCache: true,
		}
		names = append(names, j.Provider)
	}
	if len(names) == 0 {
		return nil
	}
	slices.Sort(names)
	anyOf := &jwtv3.JwtRequirementOrList{}
	for _, n := range names {
		anyOf.Requirements = append(anyOf.Requirements, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: n}})
	}
	anyOf.Requirements = append(anyOf.Requirements, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissingOrFailed{AllowMissingOrFailed: emptyMessage()}})
	return &jwtv3.JwtAuthentication{
		Providers: providers,
		Rules: []*jwtv3.RequirementRule{{
			Match:           &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: anyOf}}},
		}},
	}
}
