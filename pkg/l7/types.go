package l7

import (
	"fmt"
	"time"
)

// Config is the compiled L7 policy of a node: every proxy listener the
// kernel redirects connections to, with the HTTP rules Envoy enforces on
// it. It is pure data, computed from the model without I/O, and the only
// input of the xDS generator. Two equal Configs produce the same xDS
// resources (the snapshot version is derived from them).
type Config struct {
	// Listeners are sorted by Port.
	Listeners []Listener `json:"listeners"`
}

// A Listener is one proxy port: one distinct set of HTTP rules for the
// connections the kernel classified as belonging together (same
// destination endpoint port, same set of applicable rules). Envoy never
// learns pod identities: the datapath's policy entries decide which
// connections reach which listener.
type Listener struct {
	// Port is the proxy port the policy entries carry (policy.Entry.ProxyPort),
	// allocated from the agent's proxy port range and stable across restarts.
	Port uint16 `json:"port"`
	// Name is stable and unique, e.g. "l7-15001"; it names the listener,
	// its route configuration and its metrics.
	Name string `json:"name"`
	// Rules: a request is allowed when it matches any rule; a request
	// matching none is denied with 403 (or only logged, in audit mode).
	Rules []Rule `json:"rules"`
	// Audit makes denials shadow rules: logged and reported as flows with
	// verdict AUDIT, never enforced.
	Audit bool `json:"audit,omitempty"`
	// Sources are the policy ports this listener serves, for `sluice
	// policy get`, flows and metrics.
	Sources []PortRef `json:"sources"`
}

// PortRef names one port entry of one SluiceL7Policy.
type PortRef struct {
	Namespace string `json:"namespace"`
	Policy    string `json:"policy"`
	// Port is the destination (endpoint) port the rules apply to, and
	// Protocol its protocol name ("TCP").
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
}

// RuleRef names one HTTP rule: the policy, the port entry's index in its
// spec and the rule's index in that port's rules.
type RuleRef struct {
	Namespace string `json:"namespace"`
	Policy    string `json:"policy"`
	PortIndex int    `json:"portIndex"`
	RuleIndex int    `json:"ruleIndex"`
}

// String is the rule's name in flows, metrics, RBAC policy names and
// response_code_details: "ns/policy/ports[0]/rules[2]".
func (r RuleRef) String() string {
	return fmt.Sprintf("%s/%s/ports[%d]/rules[%d]", r.Namespace, r.Policy, r.PortIndex, r.RuleIndex)
}

// A Rule matches requests; every field set must match (AND), an empty
// field matches anything. Field semantics follow Cilium's PortRuleHTTP so
// that its users translate mechanically: Method and Host are regular
// expressions (RE2, full match).
type Rule struct {
	Ref     RuleRef       `json:"ref"`
	Method  string        `json:"method,omitempty"`
	Path    PathMatch     `json:"path,omitempty"`
	Host    string        `json:"host,omitempty"`
	Headers []HeaderMatch `json:"headers,omitempty"`
	// JWT, when set, requires a valid token from the provider; the
	// request is denied (401) without one, and Claims must hold too.
	JWT *JWTRequirement `json:"jwt,omitempty"`
	// RateLimit, when set, limits the requests this rule allows; excess
	// requests get 429.
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
}

// PathKind says how PathMatch.Value matches the request path.
type PathKind uint8

const (
	PathAny PathKind = iota
	PathExact
	PathPrefix
	// PathRegex is a RE2 regular expression matching the whole path
	// (Cilium's PortRuleHTTP.Path).
	PathRegex
)

// PathMatch matches the request's path (without the query string).
type PathMatch struct {
	Kind  PathKind `json:"kind"`
	Value string   `json:"value,omitempty"`
}

// HeaderMatch requires a request header: present (Value empty, Regex
// false) or with a value, exact or by regular expression.
type HeaderMatch struct {
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
	Regex bool   `json:"regex,omitempty"`
}

// JWTRequirement is one JWT provider and the claims a token must carry.
type JWTRequirement struct {
	// Provider is a stable name for the provider (issuer and JWKS), unique
	// in the Config: equal providers share one name.
	Provider  string   `json:"provider"`
	Issuer    string   `json:"issuer"`
	Audiences []string `json:"audiences,omitempty"`
	// JWKS is the JSON Web Key Set, inline (a Secret's key already
	// resolved by the source).
	JWKS   string       `json:"jwks"`
	Claims []ClaimMatch `json:"claims,omitempty"`
}

// ClaimMatch requires a claim (a dotted path into the token's payload,
// e.g. "groups" or "realm_access.roles") to equal one of Values (or, for a
// list claim, to contain one of them).
type ClaimMatch struct {
	Claim  string   `json:"claim"`
	Values []string `json:"values"`
}

// RateLimit is a token bucket: Requests tokens per Per, at most Burst
// (>= Requests) at once. PerClient gives every client address its own
// bucket; otherwise the rule's clients share one.
type RateLimit struct {
	Requests  uint32        `json:"requests"`
	Per       time.Duration `json:"per"`
	Burst     uint32        `json:"burst"`
	PerClient bool          `json:"perClient,omitempty"`
}

// Source produces the node's compiled L7 policy (the policy
// compiler implements it).
type Source interface {
	// L7Config is the current Config.
	L7Config() Config
	// Changed receives when L7Config may have changed (asked again after
	// each receive); nil never does, and a closed channel ends the updates.
	Changed() <-chan struct{}
}
