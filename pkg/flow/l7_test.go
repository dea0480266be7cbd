package flow

import (
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluice-net/sluice/pkg/l7"
)

func l7Policy(name string) *flowpb.Policy {
	return &flowpb.Policy{Name: name, Namespace: "shop", Kind: L7PolicyKind, Labels: []string{
		"k8s:io.cilium.k8s.policy.derived-from=SluiceL7Policy",
		"k8s:io.cilium.k8s.policy.name=" + name,
		"k8s:io.cilium.k8s.policy.namespace=shop",
	}}
}

// Each request the proxy logged becomes one L7 flow from the client to
// the server, both ends resolved by the Enricher as an event's, with the
// connection's addresses and ports, the proxy's verdict in Hubble's terms
// and the deciding rule named as L4 flows name theirs.
func TestHTTPFlow(t *testing.T) {
	rule := &l7.RuleRef{Namespace: "shop", Policy: "api", PortIndex: 0, RuleIndex: 1}
	base := func(v L7Verdict, code uint32, r *l7.RuleRef, details string) *HTTPLog {
		return &HTTPLog{
			Time: t0, Client: ap("10.244.1.5:43512"), Server: ap("10.244.2.7:8080"),
			Listener: "l7-15001", ProxyPort: 15001, Verdict: v, Rule: r, Details: details,
			Method: "GET", URL: "http://db.shop:8080/api/items?limit=5", Protocol: "HTTP/1.1", Code: code,
			Latency: 12*time.Millisecond + 400*time.Microsecond,
			Headers: []*flowpb.HTTPHeader{{Key: "x-request-id", Value: "r-1"}},
		}
	}
	want := func(v flowpb.Verdict, reason flowpb.DropReason, l7Type flowpb.L7FlowType, code uint32, summary string) *flowpb.Flow {
		return &flowpb.Flow{
			Time: timestamppb.New(t0), Emitter: &flowpb.Emitter{Name: EmitterName, Version: "test"}, NodeName: "node-a",
			Type: flowpb.FlowType_L7, Verdict: v, DropReason: uint32(reason), DropReasonDesc: reason,
			IP: ipv4("10.244.1.5", "10.244.2.7"), L4: tcp(43512, 8080, nil),
			Source: webEP(), Destination: dbEP(),
			EventType:        &flowpb.CiliumEventType{Type: 129},
			TrafficDirection: flowpb.TrafficDirection_INGRESS, IsReply: wrapperspb.Bool(false), ProxyPort: 15001,
			L7: &flowpb.Layer7{Type: l7Type, LatencyNs: 12400000, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
				Code: code, Method: "GET", Url: "http://db.shop:8080/api/items?limit=5", Protocol: "HTTP/1.1",
				Headers: []*flowpb.HTTPHeader{{Key: "x-request-id", Value: "r-1"}},
			}}},
			Summary: summary,
		}
	}
	withPolicy := func(f *flowpb.Flow, allowed bool) *flowpb.Flow {
		if allowed {
			f.IngressAllowedBy = []*flowpb.Policy{l7Policy("api")}
		} else {
			f.IngressDeniedBy = []*flowpb.Policy{l7Policy("api")}
		}
		return f
	}
	tests := []struct {
		name string
		log  *HTTPLog
		want *flowpb.Flow
		ext  map[string]string
	}{{
		name: "allowed by a rule, answered",
		log:  base(L7Forwarded, 200, rule, "via_upstream"),
		want: withPolicy(want(flowpb.Verdict_FORWARDED, 0, flowpb.L7FlowType_RESPONSE, 200,
			"HTTP/1.1 200 12ms (GET http://db.shop:8080/api/items?limit=5)"), true),
		ext: map[string]string{"verdict": "forwarded", "rule": "shop/api/ports[0]/rules[1]", "listener": "l7-15001", "details": "via_upstream"},
	}, {
		name: "no rule allows it: 403",
		log:  base(L7PolicyDenied, 403, nil, "rbac_access_denied_matched_policy[none]"),
		want: want(flowpb.Verdict_DROPPED, flowpb.DropReason_POLICY_DENIED, flowpb.L7FlowType_RESPONSE, 403,
			"HTTP/1.1 403 12ms (GET http://db.shop:8080/api/items?limit=5); denied: no rule allows it"),
		ext: map[string]string{"verdict": "policy-denied", "listener": "l7-15001", "details": "rbac_access_denied_matched_policy[none]"},
	}, {
		name: "rate limited by the rule that allows it: 429",
		log:  base(L7RateLimited, 429, rule, "local_rate_limited"),
		want: withPolicy(want(flowpb.Verdict_DROPPED, flowpb.DropReason_DROP_RATE_LIMITED, flowpb.L7FlowType_RESPONSE, 429,
			"HTTP/1.1 429 12ms (GET http://db.shop:8080/api/items?limit=5); rate limited by shop/api/ports[0]/rules[1]"), false),
		ext: map[string]string{"verdict": "rate-limited", "rule": "shop/api/ports[0]/rules[1]", "listener": "l7-15001", "details": "local_rate_limited"},
	}, {
		name: "no JWT: 401",
		log:  base(L7JWTDenied, 401, nil, "jwt_authn_access_denied{Jwt_is_missing}"),
		want: want(flowpb.Verdict_DROPPED, flowpb.DropReason_AUTH_REQUIRED, flowpb.L7FlowType_RESPONSE, 401,
			"HTTP/1.1 401 12ms (GET http://db.shop:8080/api/items?limit=5); JWT denied: Jwt is missing"),
		ext: map[string]string{"verdict": "jwt-denied", "listener": "l7-15001", "details": "jwt_authn_access_denied{Jwt_is_missing}"},
	}, {
		name: "audit: would be denied, forwarded",
		log:  base(L7Audited, 200, nil, "via_upstream"),
		want: want(flowpb.Verdict_AUDIT, 0, flowpb.L7FlowType_RESPONSE, 200,
			"HTTP/1.1 200 12ms (GET http://db.shop:8080/api/items?limit=5); audit: no rule allows it, forwarded"),
		ext: map[string]string{"verdict": "audit", "listener": "l7-15001", "details": "via_upstream"},
	}, {
		name: "no response: a request record",
		log:  base(L7Forwarded, 0, rule, ""),
		want: withPolicy(want(flowpb.Verdict_FORWARDED, 0, flowpb.L7FlowType_REQUEST, 0,
			"HTTP/1.1 GET http://db.shop:8080/api/items?limit=5"), true),
		ext: map[string]string{"verdict": "forwarded", "rule": "shop/api/ports[0]/rules[1]", "listener": "l7-15001"},
	}}
	c := &Converter{NodeName: "node-a", Version: "test", Enricher: testEnricher()}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := c.HTTP(tc.log)
			verdict, rule, listener, details, ok := L7Extension(got)
			if !ok {
				t.Fatalf("flow has no l7 extension: %v", got.GetExtensions())
			}
			ext := map[string]string{"verdict": verdict, "rule": rule, "listener": listener, "details": details}
			for k, v := range ext {
				if v == "" {
					delete(ext, k)
				}
			}
			if len(ext) != len(tc.ext) {
				t.Errorf("l7 extension %v, want %v", ext, tc.ext)
			}
			for k, v := range tc.ext {
				if ext[k] != v {
					t.Errorf("l7 extension %v, want %v", ext, tc.ext)
				}
			}
			got.Extensions = nil
			if !proto.Equal(got, tc.want) {
				t.Errorf("flow differs\n got: %s\nwant: %s", protojson.Format(got), protojson.Format(tc.want))
			}
		})
	}
}

// Ends the agent does not know read as the world, as in L4 flows; a
// client without an address (a log without one) shows none.
func TestHTTPFlowUnknownEnds(t *testing.T) {
	c := &Converter{NodeName: "node-a", Enricher: testEnricher()}
	f := c.HTTP(&HTTPLog{Client: ap("203.0.113.9:51000"), Server: ap("10.244.1.5:80"), Method: "POST", Code: 201})
	if !proto.Equal(f.GetSource(), worldEP()) || !proto.Equal(f.GetDestination(), webEP()) {
		t.Errorf("ends %v -> %v, want world -> web", f.GetSource(), f.GetDestination())
	}
	f = c.HTTP(&HTTPLog{Method: "GET", Code: 200})
	if f.GetIP() != nil || f.GetL4() != nil || f.GetSource() != nil || f.GetDestination() != nil {
		t.Errorf("a log without addresses shows ends: %v", f)
	}
	if f.GetTime() == nil {
		t.Errorf("a log without a time has no flow time")
	}
}

// The trace ID of a W3C traceparent header goes into trace_context, as
// Cilium's L7 flows carry it; malformed ones are left out.
func TestHTTPFlowTraceContext(t *testing.T) {
	c := &Converter{}
	for _, tc := range []struct{ value, want string }{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", ""},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", ""},
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""},
		{"garbage", ""},
	} {
		f := c.HTTP(&HTTPLog{Headers: []*flowpb.HTTPHeader{{Key: "traceparent", Value: tc.value}}})
		if got := f.GetTraceContext().GetParent().GetTraceId(); got != tc.want {
			t.Errorf("traceparent %q: trace ID %q, want %q", tc.value, got, tc.want)
		}
	}
}
