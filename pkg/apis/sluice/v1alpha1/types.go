package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// GroupVersion is the API group and version of Sluice's kinds.
var GroupVersion = schema.GroupVersion{Group: "sluice.io", Version: "v1alpha1"}

// SluiceL7Policies is the resource the API server serves SluiceL7Policy
// objects as.
var SluiceL7Policies = GroupVersion.WithResource("sluicel7policies")

// KindSluiceL7Policy is the kind's name.
const KindSluiceL7Policy = "SluiceL7Policy"

// SluiceL7Policy gives ports of the pods it selects HTTP rules (which
// requests are allowed, rate limits, JWT authentication), enforced by the
// node's shared L7 proxy. NetworkPolicy decides first: a peer it denies
// never reaches the proxy.
type SluiceL7Policy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              SluiceL7PolicySpec `json:"spec"`
}

// SluiceL7PolicySpec is what a SluiceL7Policy asks for.
type SluiceL7PolicySpec struct {
	// PodSelector selects the pods of the policy's namespace whose ports
	// the rules apply to, as NetworkPolicy's does; empty selects all.
	PodSelector metav1.LabelSelector `json:"podSelector"`
	// Audit reports the requests the rules would deny, without denying
	// them (as the namespace annotation sluice.io/policy-audit=true does
	// for NetworkPolicy and SluiceL7Policy alike).
	Audit bool `json:"audit,omitempty"`
	// Ports are the ports with HTTP rules.
	Ports []PortRule `json:"ports"`
}

// PortRule is the HTTP rules of one port, for some peers.
type PortRule struct {
	// Port is a port number or the name of a container port of the
	// selected pods.
	Port intstr.IntOrString `json:"port"`
	// Protocol is TCP (the default), the only one HTTP runs over here.
	Protocol corev1.Protocol `json:"protocol,omitempty"`
	// From are the peers the rules apply to (pod and namespace selectors,
	// as in NetworkPolicy); empty is every peer NetworkPolicy admits.
	// A peer that no port rule of the port names gets no request through.
	From []networkingv1.NetworkPolicyPeer `json:"from,omitempty"`
	// Rules are the requests allowed.
	Rules Rules `json:"rules"`
	// RateLimit applies to every HTTP rule of the port without its own.
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
	// JWT requires every request to the port to carry a valid token.
	JWT *JWT `json:"jwt,omitempty"`
}

// Rules are the L7 rules of a port, by protocol.
type Rules struct {
	// HTTP: a request is allowed when one rule matches it.
	HTTP []PortRuleHTTP `json:"http"`
}

// PortRuleHTTP matches HTTP requests; every field set must match, an
// empty rule matches every request. The fields of Cilium's PortRuleHTTP
// have its names and meaning.
type PortRuleHTTP struct {
	// Method is a regular expression (RE2) the whole method must match,
	// e.g. GET or GET|HEAD.
	Method string `json:"method,omitempty"`
	// Path is a regular expression (RE2) the whole path must match.
	// At most one of path, pathExact and pathPrefix.
	Path string `json:"path,omitempty"`
	// PathExact is the path, exactly.
	PathExact string `json:"pathExact,omitempty"`
	// PathPrefix is a prefix of the path, e.g. /api/.
	PathPrefix string `json:"pathPrefix,omitempty"`
	// Host is a regular expression (RE2) the whole host must match.
	Host string `json:"host,omitempty"`
	// Headers are "Name" (present) or "Name: value" (exactly).
	Headers []string `json:"headers,omitempty"`
	// HeaderMatches require a header's value.
	HeaderMatches []HeaderMatch `json:"headerMatches,omitempty"`
	// RateLimit limits the requests this rule allows.
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
	// JWTClaims are claims the port's JWT must carry for this rule.
	JWTClaims []ClaimMatch `json:"jwtClaims,omitempty"`
}

// HeaderMatch requires a header with a value: exactly, or matching a
// regular expression (RE2, the whole value) when Regex is set.
type HeaderMatch struct {
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
	Regex bool   `json:"regex,omitempty"`
}

// RateLimit is a token bucket on the node's proxy: Requests per Per, up
// to Burst at once.
type RateLimit struct {
	// Requests allowed per Per; at least 1.
	Requests int32 `json:"requests"`
	// Per is a duration such as 1s or 1m; at least 50ms. Default 1s.
	Per string `json:"per,omitempty"`
	// Burst is how many requests may come at once; at least Requests,
	// which is its default.
	Burst int32 `json:"burst,omitempty"`
	// PerClient gives each client address its own bucket; otherwise the
	// rule's clients share one (on each node).
	PerClient bool `json:"perClient,omitempty"`
}

// JWT is a token issuer: requests must carry a token it signed (in the
// Authorization: Bearer header), for one of Audiences when set, with
// Claims.
type JWT struct {
	Issuer    string   `json:"issuer"`
	Audiences []string `json:"audiences,omitempty"`
	// JWKS is the issuer's JSON Web Key Set; or JWKSSecretRef names a key
	// of a Secret holding it. Exactly one of the two.
	JWKS          string             `json:"jwks,omitempty"`
	JWKSSecretRef *SecretKeySelector `json:"jwksSecretRef,omitempty"`
	// Claims every request's token must carry.
	Claims []ClaimMatch `json:"claims,omitempty"`
}

// SecretKeySelector is a key of a Secret in the agent's namespace (see
// daemonset/README.md for why it is not the policy's).
type SecretKeySelector struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// ClaimMatch requires a claim (a dotted path into the token, such as
// groups or realm_access.roles) to be one of Values, or, for a list, to
// hold one of them.
type ClaimMatch struct {
	Claim  string   `json:"claim"`
	Values []string `json:"values"`
}
