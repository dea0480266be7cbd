package als

import (
	"net/netip"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/l7"
)

// What Envoy's details, flags and RBAC metadata say decides the verdict
// and the rule, in the order doc.go gives.
func TestDecide(t *testing.T) {
	rule := func(port, i int) *l7.RuleRef {
		return &l7.RuleRef{Namespace: "shop", Policy: "api", PortIndex: port, RuleIndex: i}
	}
	entry := func(code uint32, details string, flags *accesslogv3.ResponseFlags, rbac map[string]any) *accesslogv3.HTTPAccessLogEntry {
		e := &accesslogv3.HTTPAccessLogEntry{
			CommonProperties: &accesslogv3.AccessLogCommon{ResponseFlags: flags},
			Response:         &accesslogv3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(code), ResponseCodeDetails: details},
		}
		if rbac != nil {
			s, err := structpb.NewStruct(rbac)
			require.NoError(t, err)
			e.CommonProperties.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{rbacMetadata: s}}
		}
		return e
	}
	for _, tc := range []struct {
		name    string
		e       *accesslogv3.HTTPAccessLogEntry
		verdict flow.L7Verdict
		rule    *l7.RuleRef
	}{
		{"allowed by a rule", entry(200, "via_upstream", nil, map[string]any{"enforced_effective_policy_id": "shop/api/ports[0]/rules[2]"}),
			flow.L7Forwarded, rule(0, 2)},
		{"allowed, stat prefix on the keys", entry(200, "via_upstream", nil, map[string]any{"p.enforced_effective_policy_id": "shop/api/ports[1]/rules[0]"}),
			flow.L7Forwarded, rule(1, 0)},
		{"allowed without RBAC metadata", entry(200, "via_upstream", nil, nil), flow.L7Forwarded, nil},
		{"an upstream's error is still forwarded", entry(503, "upstream_reset_before_response_started{connection_failure}",
			&accesslogv3.ResponseFlags{UpstreamConnectionFailure: true}, nil), flow.L7Forwarded, nil},
		{"audit listener, allowed: the shadow rule", entry(200, "via_upstream", nil, map[string]any{
			"enforced_effective_policy_id": "sluice-audit-allow-all", "shadow_engine_result": "allowed",
			"shadow_effective_policy_id": "shop/api/ports[0]/rules[1]"}), flow.L7Forwarded, rule(0, 1)},
		{"audit listener, denied", entry(200, "via_upstream", nil, map[string]any{
			"enforced_effective_policy_id": "sluice-audit-allow-all", "shadow_engine_result": "denied"}), flow.L7Audited, nil},
		{"no rule allows it", entry(403, "rbac_access_denied_matched_policy[none]", nil, nil), flow.L7PolicyDenied, nil},
		{"denied by a named policy", entry(403, "rbac_access_denied_matched_policy[shop/api/ports[0]/rules[3]]", nil, nil),
			flow.L7PolicyDenied, rule(0, 3)},
		{"denied, an Envoy without the policy in the details", entry(403, "rbac_access_denied", nil, nil), flow.L7PolicyDenied, nil},
		{"rate limited: the rule RBAC allowed it by", entry(429, "local_rate_limited", &accesslogv3.ResponseFlags{RateLimited: true},
			map[string]any{"enforced_effective_policy_id": "shop/api/ports[0]/rules[1]"}), flow.L7RateLimited, rule(0, 1)},
		{"rate limited by the flag alone", entry(429, "", &accesslogv3.ResponseFlags{RateLimited: true}, nil), flow.L7RateLimited, nil},
		{"JWT missing", entry(401, "jwt_authn_access_denied{Jwt_is_missing}", nil, nil), flow.L7JWTDenied, nil},
		{"JWT audience", entry(403, "jwt_authn_access_denied{Audiences_in_Jwt_are_not_allowed}", nil, nil), flow.L7JWTDenied, nil},
		{"unauthorized flag", entry(403, "ext_authz_denied", &accesslogv3.ResponseFlags{
			UnauthorizedDetails: &accesslogv3.ResponseFlags_Unauthorized{Reason: accesslogv3.ResponseFlags_Unauthorized_EXTERNAL_SERVICE}}, nil),
			flow.L7JWTDenied, nil},
		{"a policy name that is no rule's", entry(200, "via_upstream", nil, map[string]any{"enforced_effective_policy_id": "allow-all"}),
			flow.L7Forwarded, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, r := decide(tc.e)
			require.Equal(t, tc.verdict, v, "verdict %s", v)
			require.Equal(t, tc.rule, r)
		})
	}
}

// What an entry's other fields become.
func TestHTTPLog(t *testing.T) {
	sock := func(addr string, port uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
	}
	e := &accesslogv3.HTTPAccessLogEntry{
		CommonProperties: &accesslogv3.AccessLogCommon{
			DownstreamRemoteAddress: sock("::ffff:10.244.1.5", 43512),
			DownstreamLocalAddress:  &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/x.sock"}}},
			CustomTags:              map[string]string{ListenerTag: "not-a-port"},
		},
		ProtocolVersion: accesslogv3.HTTPAccessLogEntry_HTTP3,
		Request: &accesslogv3.HTTPRequestProperties{
			RequestMethod: corev3.RequestMethod_PATCH, Scheme: "https", Path: "/rewritten", OriginalPath: "/v1/items",
			RequestHeaders: map[string]string{"Cookie": "c=1", "x-api-key": "k", "X-Tenant": "a", "x-request-id": "from-header"},
		},
	}
	log := httpLog(e)
	require.Equal(t, netip.MustParseAddrPort("10.244.1.5:43512"), log.Client)
	require.False(t, log.Server.IsValid(), "a pipe is no IP address")
	require.Equal(t, "not-a-port", log.Listener)
	require.Zero(t, log.ProxyPort)
	require.Equal(t, "PATCH", log.Method)
	require.Equal(t, "HTTP/3", log.Protocol)
	require.Equal(t, "https:///v1/items", log.URL, "the client's path, before the rewrite")
	require.Zero(t, log.Code)
	require.True(t, log.Time.IsZero())
	require.Equal(t, []*flowpb.HTTPHeader{{Key: "x-request-id", Value: "from-header"}, {Key: "x-tenant", Value: "a"}}, log.Headers,
		"secrets left out, keys lowercase, the logged request ID kept when Envoy's is empty")
}
