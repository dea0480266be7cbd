package xds

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/sluice-net/sluice/pkg/l7"
)

type (
	ratelimitDescriptor = ratelimitv3.LocalRateLimitDescriptor
	ratelimitEntry      = ratelimitv3.RateLimitDescriptor_Entry
)

func emptyMessage() *emptypb.Empty { return &emptypb.Empty{} }

// compiledRule is one l7.Rule as Envoy matchers. The same matchers serve
// the rule's RBAC policy and its route, so that the rule RBAC allows a
// request by is the rule whose route (and rate limit) the request takes,
// up to order: routes are tried in rule order, RBAC allows when any
// rule matches.
type compiledRule struct {
	ref       l7.RuleRef
	headers   []*routev3.HeaderMatcher // :method, :authority and the rule's headers
	path      l7.PathMatch
	metadata  []*matcherv3.MetadataMatcher // the verified token and its claims
	jwt       *l7.JWTRequirement
	rateLimit *l7.RateLimit
}

// headerName is an HTTP field name (RFC 9110 token), as Envoy accepts it.
var headerName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// compileRules checks and compiles l's rules; the first rule Envoy could
// not express as given is a *RuleError naming it.
func compileRules(l l7.Listener) ([]compiledRule, error) {
	out := make([]compiledRule, 0, len(l.Rules))
	seen := map[l7.RuleRef]bool{}
	providers := map[string]*l7.JWTRequirement{}
	for _, r := range l.Rules {
		fail := func(field string, err error) error {
			return &RuleError{Listener: l.Name, Rule: r.Ref, Field: field, Err: err}
		}
		if seen[r.Ref] {
			return nil, fail("ref", errors.New("two rules of the listener share it (it names their RBAC policy)"))
		}
		seen[r.Ref] = true
		c := compiledRule{ref: r.Ref, path: r.Path, jwt: r.JWT, rateLimit: r.RateLimit}
		if r.Method != "" {
			m, err := regexHeader(":method", r.Method)
			if err != nil {
				return nil, fail("method", err)
			}
			c.headers = append(c.headers, m)
		}
		if err := checkPath(r.Path); err != nil {
			return nil, fail("path", err)
		}
		if r.Host != "" {
			h, err := regexHeader(":authority", r.Host)
			if err != nil {
				return nil, fail("host", err)
			}
			c.headers = append(c.headers, h)
		}
		for i, h := range r.Headers {
			m, err := header(h)
			if err != nil {
				return nil, fail(fmt.Sprintf("headers[%d]", i), err)
			}
			c.headers = append(c.headers, m)
		}
		if r.JWT != nil {
			if err := checkJWT(r.JWT, providers); err != nil {
				return nil, fail("jwt", err)
			}
			c.metadata = jwtMatchers(r.JWT)
		}
		if rl := r.RateLimit; rl != nil {
			if err := checkRateLimit(rl); err != nil {
				return nil, fail("rateLimit", err)
			}
		}
		// Whatever Envoy's own validation would refuse in this rule's
		// part of the resources is this rule's error, not the listener's.
		for _, m := range []proto.Message{c.policy(), c.route()} {
			if err := ValidateMessage(m); err != nil {
				return nil, fail("envoy", err)
			}
		}
		if rl := r.RateLimit; rl != nil {
			if err := ValidateMessage(rateLimit(rl)); err != nil {
				return nil, fail("rateLimit", err)
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// checkRegex accepts what RE2 accepts; Go's regexp is RE2's syntax.
func checkRegex(re string) error {
	if _, err := regexp.Compile(re); err != nil {
		return fmt.Errorf("%q is not a regular expression (RE2 syntax): %w", re, err)
	}
	return nil
}

func regexHeader(name, re string) (*routev3.HeaderMatcher, error) {
	if err := checkRegex(re); err != nil {
		return nil, err
	}
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}},
	}}, nil
}

func header(h l7.HeaderMatch) (*routev3.HeaderMatcher, error) {
	if !headerName.MatchString(h.Name) {
		return nil, fmt.Errorf("%q is not an HTTP header name", h.Name)
	}
	name := strings.ToLower(h.Name)
	switch {
	case h.Regex:
		return regexHeader(name, h.Value)
	case h.Value == "":
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, nil
	}
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: h.Value}},
	}}, nil
}

func checkPath(p l7.PathMatch) error {
	switch p.Kind {
	case l7.PathAny:
		if p.Value != "" {
			return fmt.Errorf("value %q without a kind (exact, prefix or regex)", p.Value)
		}
	case l7.PathExact, l7.PathPrefix:
		if !strings.HasPrefix(p.Value, "/") {
			return fmt.Errorf("%q does not start with /: no request path would match", p.Value)
		}
	case l7.PathRegex:
		return checkRegex(p.Value)
	default:
		return fmt.Errorf("unknown kind %d", p.Kind)
	}
	return nil
}

func checkRateLimit(rl *l7.RateLimit) error {
	switch {
	case rl.Requests == 0:
		return errors.New("requests must be at least 1")
	case rl.Per < minFillInterval:
		return fmt.Errorf("per %s is shorter than Envoy's shortest refill interval, %s", rl.Per, minFillInterval)
	case rl.Burst < rl.Requests:
		return fmt.Errorf("burst %d is smaller than requests %d", rl.Burst, rl.Requests)
	}
	return nil
}

// checkJWT checks one rule's token requirement; providers holds those
// already seen in the listener, since one provider name is one jwt_authn
// provider.
func checkJWT(j *l7.JWTRequirement, providers map[string]*l7.JWTRequirement) error {
	switch {
	case j.Provider == "":
		return errors.New("provider name is empty")
	case j.Issuer == "":
		return errors.New("issuer is empty")
	}
	var jwks struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal([]byte(j.JWKS), &jwks); err != nil {
		return fmt.Errorf("jwks is not a JSON Web Key Set: %w", err)
	}
	if len(jwks.Keys) == 0 {
		return errors.New("jwks has no keys: no token could be verified")
	}
	for i, c := range j.Claims {
		if c.Claim == "" || strings.Contains(c.Claim, "..") || strings.HasPrefix(c.Claim, ".") || strings.HasSuffix(c.Claim, ".") {
			return fmt.Errorf("claims[%d]: %q is not a claim path (names separated by dots)", i, c.Claim)
		}
		if len(c.Values) == 0 {
			return fmt.Errorf("claims[%d] (%s): no values: no token could match", i, c.Claim)
		}
	}
	if prev, ok := providers[j.Provider]; ok {
		if prev.Issuer != j.Issuer || prev.JWKS != j.JWKS || strings.Join(prev.Audiences, "\x00") != strings.Join(j.Audiences, "\x00") {
			return fmt.Errorf("provider %q is given two different issuers, key sets or audiences", j.Provider)
		}
	}
	providers[j.Provider] = j
	return nil
}

// jwtMatchers match a request whose token the provider verified (its
// payload is in the jwt_authn filter's metadata under the provider's
// name) and carries the claims: each claim equal to one of its values or,
// for a list claim, containing one.
func jwtMatchers(j *l7.JWTRequirement) []*matcherv3.MetadataMatcher {
	key := func(k string) *matcherv3.MetadataMatcher_PathSegment {
		return &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}}
	}
	out := []*matcherv3.MetadataMatcher{{
		Filter: FilterJWT,
		Path:   []*matcherv3.MetadataMatcher_PathSegment{key(j.Provider)},
		Value:  &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}},
	}}
	for _, c := range j.Claims {
		path := []*matcherv3.MetadataMatcher_PathSegment{key(j.Provider)}
		for _, seg := range strings.Split(c.Claim, ".") {
			path = append(path, key(seg))
		}
		var anyOf []*matcherv3.ValueMatcher
		for _, v := range c.Values {
			str := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{
				StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}}}
			anyOf = append(anyOf, str, &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{
				ListMatch: &matcherv3.ListMatcher{MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: proto.Clone(str).(*matcherv3.ValueMatcher)}}}})
		}
		out = append(out, &matcherv3.MetadataMatcher{
			Filter: FilterJWT,
			Path:   path,
			Value:  &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: anyOf}}},
		})
	}
	return out
}

// policy is the rule's RBAC policy: the request's method, path, host and
// headers (permissions), and the verified token (principals).
func (c compiledRule) policy() *rbacv3.Policy {
	var perms []*rbacv3.Permission
	for _, h := range c.headers {
		perms = append(perms, &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: proto.Clone(h).(*routev3.HeaderMatcher)}})
	}
	if sm := pathStringMatcher(c.path); sm != nil {
		perms = append(perms, &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
			Rule: &matcherv3.PathMatcher_Path{Path: sm}}}})
	}
	var ids []*rbacv3.Principal
	for _, m := range c.metadata {
		ids = append(ids, &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: proto.Clone(m).(*matcherv3.MetadataMatcher)}})
	}
	p := &rbacv3.Policy{
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
		Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}},
	}
	if len(perms) > 0 {
		p.Permissions = []*rbacv3.Permission{{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: perms}}}}
	}
	if len(ids) > 0 {
		p.Principals = []*rbacv3.Principal{{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ids}}}}
	}
	return p
}

// pathStringMatcher matches the path without its query string (RBAC's
// url_path), as the route's path matchers do; nil matches any path.
func pathStringMatcher(p l7.PathMatch) *matcherv3.StringMatcher {
	switch p.Kind {
	case l7.PathExact:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: p.Value}}
	case l7.PathPrefix:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: p.Value}}
	case l7.PathRegex:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: p.Value}}}
	}
	return nil
}

// route is the rule's route: the same request and token matchers as its
// policy, named by the rule (access logs carry it as route_name).
func (c compiledRule) route() *routev3.Route {
	m := &routev3.RouteMatch{}
	switch c.path.Kind {
	case l7.PathExact:
		m.PathSpecifier = &routev3.RouteMatch_Path{Path: c.path.Value}
	case l7.PathPrefix:
		m.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: c.path.Value}
	case l7.PathRegex:
		m.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: c.path.Value}}
	default:
		m.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
	}
	for _, h := range c.headers {
		m.Headers = append(m.Headers, proto.Clone(h).(*routev3.HeaderMatcher))
	}
	for _, md := range c.metadata {
		m.DynamicMetadata = append(m.DynamicMetadata, proto.Clone(md).(*matcherv3.MetadataMatcher))
	}
	return &routev3.Route{Name: c.ref.String(), Match: m, Action: forward()}
}
