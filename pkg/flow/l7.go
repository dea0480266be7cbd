package flow

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-net/sluice/pkg/l7"
)

// MessageTypeAccessLog is Cilium's monitor message type of L7 records
// (pkg/monitor/api.MessageTypeAccessLog): flow.event_type.type of every L7
// flow, which `hubble observe --type l7` selects.
const MessageTypeAccessLog = 129

// L7PolicyKind is flow.Policy.kind of the L7 rules that decide requests.
const L7PolicyKind = "SluiceL7Policy"

// L7Verdict is what the node's proxy did with one HTTP request.
type L7Verdict uint8

// L7 verdicts. Hubble has one verdict for every refusal (DROPPED); the
// flow tells them apart by drop_reason_desc and by the "l7" extension's
// verdict (L7Verdict.String).
const (
	// L7Forwarded: a rule allowed the request and the proxy forwarded it.
	L7Forwarded L7Verdict = iota
	// L7PolicyDenied: no rule of the listener allows it (403).
	// drop_reason_desc POLICY_DENIED.
	L7PolicyDenied
	// L7RateLimited: the rule that allows it has no token left (429).
	// drop_reason_desc DROP_RATE_LIMITED.
	L7RateLimited
	// L7JWTDenied: the request carries no valid JWT for the rule that
	// needs one (401, or 403 for a token the rule does not accept).
	// drop_reason_desc AUTH_REQUIRED.
	L7JWTDenied
	// L7Audited: no rule allows it, but the listener audits: the proxy
	// forwarded it (verdict AUDIT).
	L7Audited
)

var l7VerdictNames = [...]string{
	L7Forwarded: "forwarded", L7PolicyDenied: "policy-denied", L7RateLimited: "rate-limited",
	L7JWTDenied: "jwt-denied", L7Audited: "audit",
}

// String is the verdict's name in the flow's "l7" extension and in the
// summary: forwarded, policy-denied, rate-limited, jwt-denied, audit.
func (v L7Verdict) String() string {
	if int(v) < len(l7VerdictNames) {
		return l7VerdictNames[v]
	}
	return "l7-verdict-" + strconv.Itoa(int(v))
}

// Hubble reports an L7 verdict as a verdict and a drop reason.
func (v L7Verdict) hubble() (flowpb.Verdict, flowpb.DropReason) {
	switch v {
	case L7PolicyDenied:
		return flowpb.Verdict_DROPPED, flowpb.DropReason_POLICY_DENIED
	case L7RateLimited:
		return flowpb.Verdict_DROPPED, flowpb.DropReason_DROP_RATE_LIMITED
	case L7JWTDenied:
		return flowpb.Verdict_DROPPED, flowpb.DropReason_AUTH_REQUIRED
	case L7Audited:
		return flowpb.Verdict_AUDIT, flowpb.DropReason_DROP_REASON_UNKNOWN
	case L7Forwarded:
		return flowpb.Verdict_FORWARDED, flowpb.DropReason_DROP_REASON_UNKNOWN
	}
	return flowpb.Verdict_VERDICT_UNKNOWN, flowpb.DropReason_DROP_REASON_UNKNOWN
}

// HTTPLog is one HTTP request as the node's proxy logged it once it was
// done: what the converter makes an L7 flow of (Converter.HTTP).
type HTTPLog struct {
	// Time is when the proxy was done with the request (its response's
	// last byte sent); zero means now.
	Time time.Time
	// Client is the connection's client (address and port) and Server its
	// original destination: the kernel hands connections to the proxy
	// keeping both, so they are the 5-tuple of the connection's L4 flow.
	Client, Server netip.AddrPort
	// Listener is the proxy listener's name (l7.Listener.Name) and
	// ProxyPort its port; empty and 0 when the log does not say.
	Listener  string
	ProxyPort uint16
	Verdict   L7Verdict
	// Rule is the rule that decided: the one that allowed the request
	// (forwarded, or rate-limited by its limit), or the one that denied it
	// or would have (audit). Nil when no rule matched: a request that no
	// rule allows is denied by none.
	Rule *l7.RuleRef
	// Details is the proxy's own word on the response (Envoy's
	// response_code_details), e.g. "local_rate_limited".
	Details string
	// Method, URL (scheme://authority/path?query), Protocol ("HTTP/1.1")
	// and Code (0: no response was sent) are the request's and response's.
	Method, URL, Protocol string
	Code                  uint32
	// Latency is the time from the request's first byte to the response's
	// last.
	Latency time.Duration
	// Headers are the request headers the flow shows, sorted by key; the
	// converter shares the slice with the flow.
	Headers []*flowpb.HTTPHeader
}

// The "l7" extension of an L7 flow: what Hubble's flow has no field for.
//
//	{"l7": {"verdict": "rate-limited", "rule": "shop/api/ports[0]/rules[1]",
//	        "listener": "l7-15001", "details": "local_rate_limited"}}
//
// verdict tells the refusals apart (see L7Verdict), rule is the deciding
// rule's full name (flow.Policy names only its SluiceL7Policy), listener
// the proxy listener and details Envoy's response_code_details.
const extL7 = "l7"

// HTTP returns the L7 flow of one request, its ends resolved now by the
// Enricher, as an event's are: client and server by address, their pods,
// identities and labels. Every call makes a new flow; endpoints and
// policies are shared with other flows: never modify a flow.
//
// The flow is one record per request, from the client to the server
// (is_reply false, traffic direction INGRESS: the proxy enforces the
// server's ingress policy): L7 type RESPONSE with the status code and the
// latency when a response was sent, REQUEST when none was. Its IP and L4
// are the connection's, the same as its L4 flow's, which is how Hubble
// filters join the two (--ip, --port).
func (c *Converter) HTTP(log *HTTPLog) *flowpb.Flow {
	e := c.Enricher
	if e == nil {
		e = noEnricher{}
	}
	client, server := log.Client.Addr().Unmap(), log.Server.Addr().Unmap()
	verdict, reason := log.Verdict.hubble()
	t := log.Time
	if t.IsZero() {
		t = time.Now()
	}
	l7Type := flowpb.L7FlowType_REQUEST
	if log.Code != 0 {
		l7Type = flowpb.L7FlowType_RESPONSE
	}
	f := &flowpb.Flow{
		Time:             timestamppb.New(t),
		Emitter:          c.emitterOnce(),
		NodeName:         c.NodeName,
		Type:             flowpb.FlowType_L7,
		Verdict:          verdict,
		DropReasonDesc:   reason,
		DropReason:       uint32(reason),
		IP:               layer3(client, server),
		Source:           c.httpEnd(e, client),
		Destination:      c.httpEnd(e, server),
		EventType:        &flowpb.CiliumEventType{Type: MessageTypeAccessLog},
		TrafficDirection: flowpb.TrafficDirection_INGRESS,
		IsReply:          notReply,
		ProxyPort:        uint32(log.ProxyPort),
		L7: &flowpb.Layer7{
			Type:      l7Type,
			LatencyNs: uint64(max(log.Latency, 0)),
			Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
				Code: log.Code, Method: log.Method, Url: log.URL, Protocol: log.Protocol, Headers: log.Headers,
			}},
		},
		TraceContext: traceContext(log.Headers),
		Summary:      httpSummary(log),
		Extensions:   l7Extension(log),
	}
	if log.Client.IsValid() && log.Server.IsValid() {
		f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
			SourcePort: uint32(log.Client.Port()), DestinationPort: uint32(log.Server.Port()),
		}}}
	}
	if log.Rule != nil {
		p := c.rule(Rule{Namespace: log.Rule.Namespace, Name: log.Rule.Policy, Kind: L7PolicyKind,
			Direction: flowpb.TrafficDirection_INGRESS}).policy
		if verdict == flowpb.Verdict_FORWARDED {
			f.IngressAllowedBy = []*flowpb.Policy{p}
		} else {
			f.IngressDeniedBy = []*flowpb.Policy{p}
		}
	}
	return f
}

// httpEnd resolves one end of a request by its address; none without one.
func (c *Converter) httpEnd(e Enricher, addr netip.Addr) *flowpb.Endpoint {
	if !addr.IsValid() {
		return nil
	}
	return c.resolveEnd(e, side{addr: addr}).endpoint()
}

// httpSummary is Hubble's summary of an HTTP record ("HTTP/1.1 200 12ms
// (GET http://web/api)" for a response, "HTTP/1.1 GET http://web/api"
// for a request), then what the proxy decided when it did not just
// forward it.
func httpSummary(log *HTTPLog) string {
	var b strings.Builder
	request := log.Method + " " + log.URL
	if log.Code != 0 {
		b.WriteString(log.Protocol + " " + strconv.FormatUint(uint64(log.Code), 10) + " " +
			strconv.FormatInt(log.Latency.Milliseconds(), 10) + "ms (" + request + ")")
	} else {
		b.WriteString(log.Protocol + " " + request)
	}
	rule := ""
	if log.Rule != nil {
		rule = log.Rule.String()
	}
	switch log.Verdict {
	case L7PolicyDenied:
		if rule == "" {
			b.WriteString("; denied: no rule allows it")
		} else {
			b.WriteString("; denied by " + rule)
		}
	case L7RateLimited:
		b.WriteString("; rate limited")
		if rule != "" {
			b.WriteString(" by " + rule)
		}
	case L7JWTDenied:
		b.WriteString("; JWT denied")
		if why := jwtReason(log.Details); why != "" {
			b.WriteString(": " + why)
		}
	case L7Audited:
		b.WriteString("; audit: no rule allows it, forwarded")
	}
	return b.String()
}

// jwtReason reads Envoy's reason out of the JWT filter's details,
// "jwt_authn_access_denied{Jwt_is_missing}": "Jwt is missing".
func jwtReason(details string) string {
	_, rest, ok := strings.Cut(details, "{")
	if !ok {
		return ""
	}
	why, ok := strings.CutSuffix(rest, "}")
	if !ok {
		return ""
	}
	return strings.ReplaceAll(why, "_", " ")
}

// l7Extension is the flow's "l7" extension.
func l7Extension(log *HTTPLog) *anypb.Any {
	fields := map[string]any{"verdict": log.Verdict.String()}
	if log.Rule != nil {
		fields["rule"] = log.Rule.String()
	}
	if log.Listener != "" {
		fields["listener"] = log.Listener
	}
	if log.Details != "" {
		fields["details"] = log.Details
	}
	s, err := structpb.NewStruct(map[string]any{extL7: fields})
	if err != nil {
		return nil // strings only: fails on invalid UTF-8, which no decoded protobuf string holds
	}
	ext := &anypb.Any{}
	if err := anypb.MarshalFrom(ext, s, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil
	}
	return ext
}

// L7Extension returns the "l7" extension of an L7 flow: the proxy's
// verdict (L7Verdict.String), the deciding rule's name, the listener and
// Envoy's details; ok is false for flows without one.
func L7Extension(f *flowpb.Flow) (verdict, rule, listener, details string, ok bool) {
	ext := f.GetExtensions()
	if ext == nil {
		return "", "", "", "", false
	}
	var s structpb.Struct
	if err := ext.UnmarshalTo(&s); err != nil {
		return "", "", "", "", false
	}
	v, found := s.GetFields()[extL7]
	if !found {
		return "", "", "", "", false
	}
	m := v.GetStructValue().GetFields()
	return m["verdict"].GetStringValue(), m["rule"].GetStringValue(), m["listener"].GetStringValue(),
		m["details"].GetStringValue(), true
}

// traceparentHeader is the W3C Trace Context header; Hubble's L7 flows
// carry its trace ID in trace_context, as Cilium's do.
const traceparentHeader = "traceparent"

// traceContext reads the trace ID of a W3C traceparent header
// ("00-<32 hex trace ID>-<16 hex parent ID>-<2 hex flags>"), nil without
// a valid one.
func traceContext(headers []*flowpb.HTTPHeader) *flowpb.TraceContext {
	for _, h := range headers {
		if !strings.EqualFold(h.GetKey(), traceparentHeader) {
			continue
		}
		parts := strings.Split(strings.TrimSpace(h.GetValue()), "-")
		if len(parts) < 4 || !lowerHex(parts[0], 2) || parts[0] == "ff" || parts[0] == "00" && len(parts) != 4 ||
			!lowerHex(parts[1], 32) || !lowerHex(parts[2], 16) || !lowerHex(parts[3], 2) ||
			strings.Trim(parts[1], "0") == "" || strings.Trim(parts[2], "0") == "" {
			return nil
		}
		return &flowpb.TraceContext{Parent: &flowpb.TraceParent{TraceId: parts[1]}}
	}
	return nil
}

func lowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
