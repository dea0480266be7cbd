package als

import (
	"net/netip"
	"slices"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"

	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/l7"
)

// LogName is the log_name of the access loggers of Sluice's listeners,
// in each stream's identifier.
const LogName = "sluice"

// ListenerTag is the custom tag (common_config.custom_tags, a literal)
// that names the listener (l7.ListenerName) in every entry: an entry
// names no listener otherwise, since its local address is the original
// destination.
const ListenerTag = "sluice.listener"

// What Envoy writes into response_code_details and the RBAC filter's
// dynamic metadata (source/extensions/filters/common/rbac, local_ratelimit
// and jwt_authn in Envoy's tree).
const (
	rbacDeniedDetails     = "rbac_access_denied"
	rbacMatchedPolicy     = "rbac_access_denied_matched_policy["
	rbacNoPolicy          = "none"
	localRateLimited      = "local_rate_limited"
	jwtDeniedDetails      = "jwt_authn_access_denied"
	rbacMetadata          = "envoy.filters.http.rbac"
	enforcedPolicyIDField = "enforced_effective_policy_id"
	shadowPolicyIDField   = "shadow_effective_policy_id"
	shadowResultField     = "shadow_engine_result"
	engineDenied          = "denied"
)

// finished reports whether an entry is the one Envoy writes when a
// request is done: the only kind that becomes a flow.
func finished(e *accesslogv3.HTTPAccessLogEntry) bool {
	c := e.GetCommonProperties()
	if c.GetIntermediateLogEntry() {
		return false
	}
	switch c.GetAccessLogType() {
	case accesslogv3.AccessLogType_NotSet, accesslogv3.AccessLogType_DownstreamEnd:
		return true
	}
	return false
}

// httpLog reads one entry of a finished request.
func httpLog(e *accesslogv3.HTTPAccessLogEntry) flow.HTTPLog {
	c, req, resp := e.GetCommonProperties(), e.GetRequest(), e.GetResponse()
	log := flow.HTTPLog{
		Client:   addrPort(c.GetDownstreamRemoteAddress()),
		Server:   addrPort(c.GetDownstreamLocalAddress()),
		Listener: c.GetCustomTags()[ListenerTag],
		Details:  resp.GetResponseCodeDetails(),
		Protocol: protocol(e.GetProtocolVersion()),
		Code:     resp.GetResponseCode().GetValue(),
		Headers:  headers(req),
	}
	log.ProxyPort, _ = l7.ListenerPort(log.Listener)
	if m := req.GetRequestMethod(); m != corev3.RequestMethod_METHOD_UNSPECIFIED {
		log.Method = m.String()
	}
	log.URL = requestURL(req, log.Server)
	log.Latency = c.GetTimeToLastDownstreamTxByte().AsDuration()
	if c.GetTimeToLastDownstreamTxByte() == nil {
		log.Latency = c.GetDuration().AsDuration()
	}
	if start := c.GetStartTime(); start != nil {
		log.Time = start.AsTime().Add(log.Latency)
	}
	log.Verdict, log.Rule = decide(e)
	return log
}

// decide reads the proxy's verdict and the deciding rule (see doc.go).
func decide(e *accesslogv3.HTTPAccessLogEntry) (flow.L7Verdict, *l7.RuleRef) {
	c := e.GetCommonProperties()
	details := e.GetResponse().GetResponseCodeDetails()
	rbac := c.GetMetadata().GetFilterMetadata()[rbacMetadata].GetFields()
	field := func(suffix string) string {
		for k, v := range rbac {
			if strings.HasSuffix(k, suffix) {
				return v.GetStringValue()
			}
		}
		return ""
	}
	switch {
	case strings.HasPrefix(details, rbacDeniedDetails):
		policy, _ := strings.CutPrefix(details, rbacMatchedPolicy)
		policy, _ = strings.CutSuffix(policy, "]")
		return flow.L7PolicyDenied, rule(policy)
	case c.GetResponseFlags().GetRateLimited() || details == localRateLimited:
		return flow.L7RateLimited, rule(field(enforcedPolicyIDField))
	case strings.HasPrefix(details, jwtDeniedDetails) || c.GetResponseFlags().GetUnauthorizedDetails() != nil:
		return flow.L7JWTDenied, nil
	case field(shadowResultField) == engineDenied:
		return flow.L7Audited, rule(field(shadowPolicyIDField))
	}
	// An audit listener enforces an allow-all policy, which is no rule:
	// the shadow engine names the rule that would allow the request.
	r := rule(field(enforcedPolicyIDField))
	if r == nil {
		r = rule(field(shadowPolicyIDField))
	}
	return flow.L7Forwarded, r
}

// rule reads an RBAC policy name as the rule it names; nil for none.
func rule(policy string) *l7.RuleRef {
	if policy == "" || policy == rbacNoPolicy {
		return nil
	}
	r, err := l7.ParseRuleRef(policy)
	if err != nil {
		return nil
	}
	return &r
}

// addrPort reads an IP socket address; invalid for other addresses (a
// pipe, an internal address).
func addrPort(a *corev3.Address) netip.AddrPort {
	sa := a.GetSocketAddress()
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil || sa.GetPortValue() > 65535 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(sa.GetPortValue()))
}

func protocol(v accesslogv3.HTTPAccessLogEntry_HTTPVersion) string {
	switch v {
	case accesslogv3.HTTPAccessLogEntry_HTTP10:
		return "HTTP/1.0"
	case accesslogv3.HTTPAccessLogEntry_HTTP11:
		return "HTTP/1.1"
	case accesslogv3.HTTPAccessLogEntry_HTTP2:
		return "HTTP/2"
	case accesslogv3.HTTPAccessLogEntry_HTTP3:
		return "HTTP/3"
	}
	return ""
}

// requestURL is the URL the client asked for, as Hubble shows it
// (scheme://authority/path?query): the path before any rewrite, the
// server's address when the request named no authority.
func requestURL(req *accesslogv3.HTTPRequestProperties, server netip.AddrPort) string {
	scheme := req.GetScheme()
	if scheme == "" {
		scheme = "http"
	}
	host := req.GetAuthority()
	if host == "" && server.IsValid() {
		host = server.String()
	}
	path := req.GetOriginalPath()
	if path == "" {
		path = req.GetPath()
	}
	return scheme + "://" + host + path
}

// secretHeaders are never shown in flows, whatever the logger logs:
// flows are read by everyone with access to the observer.
var secretHeaders = []string{"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}

// headers are the request headers a flow shows, sorted by key: those the
// access logger was told to log, but secrets, and X-Request-Id (Envoy's
// request ID), which Cilium's L7 flows carry too.
func headers(req *accesslogv3.HTTPRequestProperties) []*flowpb.HTTPHeader {
	var out []*flowpb.HTTPHeader
	id := req.GetRequestId()
	for k, v := range req.GetRequestHeaders() {
		k = strings.ToLower(k)
		if slices.Contains(secretHeaders, k) || k == "x-request-id" && id != "" {
			continue
		}
		out = append(out, &flowpb.HTTPHeader{Key: k, Value: v})
	}
	if id != "" {
		out = append(out, &flowpb.HTTPHeader{Key: "x-request-id", Value: id})
	}
	slices.SortFunc(out, func(a, b *flowpb.HTTPHeader) int { return strings.Compare(a.GetKey(), b.GetKey()) })
	return out
}
