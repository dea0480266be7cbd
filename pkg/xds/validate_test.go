package xds_test

import (
	"errors"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/xds"
)

// TestValidateMessageDescendsIntoAny: a listener whose HTTP connection
// manager (a typed config, an Any) misses its required stat_prefix passes
// the listener's own ValidateAll, and not ValidateMessage.
func TestValidateMessageDescendsIntoAny(t *testing.T) {
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "r"}},
	})
	require.NoError(t, err)
	l := &listenerv3.Listener{Name: "l", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
		Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
	}}}}}
	require.NoError(t, l.ValidateAll(), "ValidateAll does not look inside the Any")
	err = xds.ValidateMessage(l)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "filter_chains[0].filters[0].typed_config<HttpConnectionManager>")
	assert.Contains(t, err.Error(), "StatPrefix")

	// An Any of a type nobody registered is refused too.
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/no.such.Type"}}
	err = xds.ValidateMessage(l)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no.such.Type")
}

func getAPI() l7.Config {
	return l7.Config{Listeners: []l7.Listener{{
		Port: 15001, Name: "l7-15001",
		Rules: []l7.Rule{{
			Ref:       l7.RuleRef{Namespace: "shop", Policy: "api", PortIndex: 0, RuleIndex: 0},
			Method:    "GET",
			Path:      l7.PathMatch{Kind: l7.PathPrefix, Value: "/api/"},
			RateLimit: &l7.RateLimit{Requests: 10, Per: time.Second, Burst: 20},
		}},
	}}}
}

// editHCM unpacks the first listener's HTTP connection manager, lets edit
// change it and packs it back.
func editHCM(t *testing.T, res *xds.Resources, edit func(*hcmv3.HttpConnectionManager)) {
	t.Helper()
	f := res.Listeners[0].FilterChains[0].Filters[0]
	hcm := &hcmv3.HttpConnectionManager{}
	require.NoError(t, f.GetTypedConfig().UnmarshalTo(hcm))
	edit(hcm)
	a, err := anypb.New(hcm)
	require.NoError(t, err)
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
}

// TestValidateLints: each trap Envoy's own validation lets through is
// refused, with the resource and the place named.
func TestValidateLints(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(t *testing.T, res *xds.Resources)
		want string
	}{
		{"router not last", func(t *testing.T, res *xds.Resources) {
			editHCM(t, res, func(h *hcmv3.HttpConnectionManager) {
				fs := h.HttpFilters
				fs[len(fs)-1], fs[len(fs)-2] = fs[len(fs)-2], fs[len(fs)-1]
			})
		}, "the router is not the last HTTP filter"},
		{"rate limit not enforced", func(t *testing.T, res *xds.Resources) {
			rt := res.Routes[0].VirtualHosts[0].Routes[0]
			lrl := &lrlv3.LocalRateLimit{}
			require.NoError(t, rt.TypedPerFilterConfig[xds.FilterRateLimit].UnmarshalTo(lrl))
			lrl.FilterEnforced = nil
			a, err := anypb.New(lrl)
			require.NoError(t, err)
			rt.TypedPerFilterConfig[xds.FilterRateLimit] = a
		}, "filter_enforced is not 100% by default"},
		{"RBAC without rules", func(t *testing.T, res *xds.Resources) {
			vh := res.Routes[0].VirtualHosts[0]
			per := &rbacfilterv3.RBACPerRoute{}
			require.NoError(t, vh.TypedPerFilterConfig[xds.FilterRBAC].UnmarshalTo(per))
			per.Rbac.ShadowRules, per.Rbac.Rules = per.Rbac.Rules, nil
			a, err := anypb.New(per)
			require.NoError(t, err)
			vh.TypedPerFilterConfig[xds.FilterRBAC] = a
		}, "RBAC without rules enforces nothing"},
		{"per-route RBAC disabling the filter", func(t *testing.T, res *xds.Resources) {
			a, err := anypb.New(&rbacfilterv3.RBACPerRoute{})
			require.NoError(t, err)
			res.Routes[0].VirtualHosts[0].TypedPerFilterConfig[xds.FilterRBAC] = a
		}, "disables the filter"},
		{"route configuration not served", func(t *testing.T, res *xds.Resources) {
			editHCM(t, res, func(h *hcmv3.HttpConnectionManager) { h.GetRds().RouteConfigName = "elsewhere" })
		}, `route configuration "elsewhere" is not served`},
		{"unknown cluster", func(t *testing.T, res *xds.Resources) {
			res.Routes[0].VirtualHosts[0].Routes[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "nowhere"}
		}, `cluster "nowhere" is neither served nor in Envoy's bootstrap`},
		{"the original destination cluster not served", func(t *testing.T, res *xds.Resources) {
			res.Clusters = nil
		}, `cluster "sluice-original-dst" is neither served`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := xds.Generate(getAPI(), xds.ResourceOptions{})
			require.NoError(t, err)
			require.NoError(t, res.Validate())
			tc.edit(t, res)
			err = res.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestRuleErrorsNameTheRule: what Envoy could not express is an error
// naming the rule and its field, never a rule left out.
func TestRuleErrorsNameTheRule(t *testing.T) {
	ref := l7.RuleRef{Namespace: "shop", Policy: "api", PortIndex: 0, RuleIndex: 0}
	for _, tc := range []struct {
		name  string
		edit  func(l *l7.Listener)
		field string
		want  string
	}{
		{"method regex", func(l *l7.Listener) { l.Rules[0].Method = "GET(" }, "method", "not a regular expression"},
		{"host regex", func(l *l7.Listener) { l.Rules[0].Host = "*.example.com" }, "host", "not a regular expression"},
		{"path regex", func(l *l7.Listener) { l.Rules[0].Path = l7.PathMatch{Kind: l7.PathRegex, Value: "/a["} }, "path", "not a regular expression"},
		{"relative path", func(l *l7.Listener) { l.Rules[0].Path = l7.PathMatch{Kind: l7.PathExact, Value: "api"} }, "path", "does not start with /"},
		{"header name", func(l *l7.Listener) { l.Rules[0].Headers = []l7.HeaderMatch{{Name: "x team"}} }, "headers[0]", "not an HTTP header name"},
		{"refill too fast", func(l *l7.Listener) { l.Rules[0].RateLimit.Per = 10 * time.Millisecond }, "rateLimit", "shorter than Envoy's shortest refill interval"},
		{"burst below rate", func(l *l7.Listener) { l.Rules[0].RateLimit.Burst = 1 }, "rateLimit", "burst 1 is smaller than requests 10"},
		{"jwks", func(l *l7.Listener) {
			l.Rules[0].JWT = &l7.JWTRequirement{Provider: "idp", Issuer: "https://idp", JWKS: "{not json"}
		}, "jwt", "not a JSON Web Key Set"},
		{"claim without values", func(l *l7.Listener) {
			l.Rules[0].JWT = &l7.JWTRequirement{Provider: "idp", Issuer: "https://idp", JWKS: `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`,
				Claims: []l7.ClaimMatch{{Claim: "groups"}}}
		}, "jwt", "no values"},
		{"duplicate rule", func(l *l7.Listener) { l.Rules = append(l.Rules, l.Rules[0]) }, "ref", "two rules of the listener share it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := getAPI()
			tc.edit(&cfg.Listeners[0])
			_, err := xds.Generate(cfg, xds.ResourceOptions{})
			var re *xds.RuleError
			require.True(t, errors.As(err, &re), "a *RuleError, got %v", err)
			assert.Equal(t, ref, re.Rule)
			assert.Equal(t, tc.field, re.Field)
			assert.Contains(t, err.Error(), "rule shop/api/ports[0]/rules[0] (listener l7-15001): "+tc.field)
			assert.Contains(t, err.Error(), tc.want)
		})
	}

	// Listener-level conflicts name the listener.
	cfg := getAPI()
	cfg.Listeners = append(cfg.Listeners, cfg.Listeners[0])
	cfg.Listeners[1].Name = "l7-other"
	_, err := xds.Generate(cfg, xds.ResourceOptions{})
	require.ErrorContains(t, err, "listener l7-other: port: 15001 is listener l7-15001's too")
}

// TestVersion: the version follows the Config, so an unchanged Config is
// not pushed again and any change is.
func TestVersion(t *testing.T) {
	v1, err := xds.Version(getAPI(), xds.ResourceOptions{})
	require.NoError(t, err)
	v2, err := xds.Version(getAPI(), xds.ResourceOptions{})
	require.NoError(t, err)
	assert.Equal(t, v1, v2)
	changed := getAPI()
	changed.Listeners[0].Rules[0].RateLimit.Burst = 21
	v3, err := xds.Version(changed, xds.ResourceOptions{})
	require.NoError(t, err)
	assert.NotEqual(t, v1, v3)
	v4, err := xds.Version(getAPI(), xds.ResourceOptions{ReusePort: true})
	require.NoError(t, err)
	assert.NotEqual(t, v1, v4)
}
