package model

import "github.com/sluice-net/sluice/pkg/l7"

// L7Policy is a sluice.io/v1alpha1 SluiceL7Policy: HTTP rules for ports of
// the pods it selects, which the node's shared L7 proxy enforces on the
// connections the kernel hands it (see pkg/l7). NetworkPolicy decides
// first: an L7 rule never admits a peer that NetworkPolicy denies.
//
// Conversion has validated it (regular expressions compile, selectors,
// ports, rate limits, JWT providers) and defaulted it (protocol TCP, a
// port's rate limit copied to its rules without one, a rate limit's burst),
// so consumers need not check again.
type L7Policy struct {
	Namespace   string        `json:"namespace"`
	Name        string        `json:"name"`
	PodSelector LabelSelector `json:"podSelector"`
	// Audit (spec.audit) reports the requests the rules deny instead of
	// denying them. The namespace annotation sluice.io/policy-audit and
	// the agent's --policy-audit do the same for every policy they cover.
	Audit bool     `json:"audit,omitempty"`
	Ports []L7Port `json:"ports"`
}

// Key implements Object.
func (p *L7Policy) Key() Key { return Key{Kind: KindL7Policy, Namespace: p.Namespace, Name: p.Name} }
func (*L7Policy) isObject()  {}

// L7Port is one entry of spec.ports: the HTTP rules for one port of the
// selected pods, for the peers in From.
type L7Port struct {
	// Port is the selected pods' port, by number or container port name
	// (resolved against each pod, as NetworkPolicy ingress ports are).
	Port PortRef `json:"port"`
	// Protocol is always TCP: HTTP is what the proxy enforces.
	Protocol Protocol `json:"protocol"`
	// From are the peers the rules apply to, NetworkPolicy peers with pod
	// and namespace selectors (no ipBlock); empty is every peer.
	From []Peer `json:"from,omitempty"`
	// HTTP are the rules (spec.ports[i].rules.http); a request is allowed
	// when one of them matches. Never empty.
	HTTP []HTTPRule `json:"http"`
	// JWT, when set, requires a valid token from this provider on every
	// request to the port (from these peers).
	JWT *JWTProvider `json:"jwt,omitempty"`
}

// HTTPRule is one HTTP rule, with the field semantics of Cilium's
// PortRuleHTTP: Method and Host are RE2 regular expressions matching the
// whole value; every field set must match, an empty rule matches every
// request.
type HTTPRule struct {
	Method string `json:"method,omitempty"`
	// Path is spec's path (a regular expression), pathExact or
	// pathPrefix, whichever is set.
	Path l7.PathMatch `json:"path,omitzero"`
	Host string       `json:"host,omitempty"`
	// Headers are spec's headers ("Name" or "Name: value") and
	// headerMatches, in that order.
	Headers []l7.HeaderMatch `json:"headers,omitempty"`
	// RateLimit is the rule's own, or its port's.
	RateLimit *l7.RateLimit `json:"rateLimit,omitempty"`
	// JWTClaims are claims the port's JWT must carry for this rule, on
	// top of those every request needs.
	JWTClaims []l7.ClaimMatch `json:"jwtClaims,omitempty"`
}

// JWTProvider is a JWT issuer and the key set its tokens are checked with.
type JWTProvider struct {
	Issuer    string   `json:"issuer"`
	Audiences []string `json:"audiences,omitempty"`
	// JWKS is the JSON Web Key Set: inline in the spec, or read by the
	// source from JWKSSecret.
	JWKS string `json:"jwks"`
	// JWKSSecret names the Secret JWKS was read from, when it was.
	JWKSSecret *SecretKeyRef `json:"jwksSecret,omitempty"`
	// Claims must hold on every request.
	Claims []l7.ClaimMatch `json:"claims,omitempty"`
}

// SecretKeyRef is one key of a Secret.
type SecretKeyRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Key       string `json:"key"`
}

// String is "namespace/name[key]".
func (r SecretKeyRef) String() string { return r.Namespace + "/" + r.Name + "[" + r.Key + "]" }
