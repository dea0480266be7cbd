package k8sconv

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/model"
)

// MinRatePeriod is the shortest rateLimit.per: Envoy's token bucket
// refills at most every 50ms, and refuses a shorter fill interval.
const MinRatePeriod = 50 * time.Millisecond

// maxRatePeriod bounds rateLimit.per: a longer period is almost certainly
// a typo (1h where 1s was meant).
const maxRatePeriod = 24 * time.Hour

// L7Policy converts a SluiceL7Policy, validating what the CRD's schema
// cannot (regular expressions, durations, JWKS documents) as well as what
// it can, since the files source has no schema. A JWT key set given by
// jwksSecretRef is left for the source to read (ResolveL7Secrets).
func L7Policy(in *v1alpha1.SluiceL7Policy) (*model.L7Policy, error) {
	if err := checkMeta(&in.ObjectMeta, true); err != nil {
		return nil, err
	}
	sel, err := LabelSelector("spec.podSelector", &in.Spec.PodSelector)
	if err != nil {
		return nil, err
	}
	out := &model.L7Policy{Namespace: in.Namespace, Name: in.Name, PodSelector: *sel, Audit: in.Spec.Audit}
	if len(in.Spec.Ports) == 0 {
		return nil, fieldErrorf("spec.ports", "%w: at least one port with HTTP rules", ErrRequired)
	}
	for i := range in.Spec.Ports {
		p, err := l7Port(idx("spec.ports", i), &in.Spec.Ports[i])
		if err != nil {
			return nil, err
		}
		out.Ports = append(out.Ports, p)
	}
	return out, nil
}

func l7Port(f string, in *v1alpha1.PortRule) (model.L7Port, error) {
	var out model.L7Port
	var err error
	if out.Port, err = portRef(f+".port", in.Port); err != nil {
		return out, err
	}
	if out.Port.IsZero() {
		return out, required(f + ".port")
	}
	switch in.Protocol {
	case "", corev1.ProtocolTCP:
		out.Protocol = model.ProtocolTCP
	default:
		return out, fieldErrorf(f+".protocol", "unsupported protocol %q: HTTP rules apply to TCP ports only", in.Protocol)
	}
	for i, p := range in.From {
		pf := idx(f+".from", i)
		if p.IPBlock != nil {
			return out, fieldErrorf(pf+".ipBlock", "not supported: L7 rules apply to peers by identity (podSelector, namespaceSelector); limit addresses with a NetworkPolicy, which decides first")
		}
		var mp model.Peer
		if mp.PodSelector, err = LabelSelector(pf+".podSelector", p.PodSelector); err != nil {
			return out, err
		}
		if mp.NamespaceSelector, err = LabelSelector(pf+".namespaceSelector", p.NamespaceSelector); err != nil {
			return out, err
		}
		if mp.PodSelector == nil && mp.NamespaceSelector == nil {
			return out, fieldErrorf(pf, "must specify podSelector or namespaceSelector")
		}
		out.From = append(out.From, mp)
	}
	var portLimit *l7.RateLimit
	if in.RateLimit != nil {
		if portLimit, err = rateLimit(f+".rateLimit", in.RateLimit); err != nil {
			return out, err
		}
	}
	if in.JWT != nil {
		if out.JWT, err = jwtProvider(f+".jwt", in.JWT); err != nil {
			return out, err
		}
	}
	if len(in.Rules.HTTP) == 0 {
		return out, fieldErrorf(f+".rules.http", "%w: at least one rule (an empty rule {} allows every request)", ErrRequired)
	}
	for i := range in.Rules.HTTP {
		r, err := httpRule(idx(f+".rules.http", i), &in.Rules.HTTP[i], out.JWT != nil)
		if err != nil {
			return out, err
		}
		if r.RateLimit == nil {
			r.RateLimit = portLimit
		}
		out.HTTP = append(out.HTTP, r)
	}
	return out, nil
}

// regex checks a regular expression the proxy matches against a whole
// value (RE2 syntax, which Envoy's safe_regex uses too).
func regex(field, s string) error {
	_, err := regexp.Compile(s)
	if err == nil {
		return nil
	}
	var se *syntax.Error
	if errors.As(err, &se) {
		return fieldErrorf(field, "invalid regular expression %q: %s", s, se.Code)
	}
	return fieldErrorf(field, "invalid regular expression %q: %v", s, err)
}

// headerName checks an HTTP header name (RFC 9110 token).
func headerName(field, s string) error {
	if s == "" {
		return required(field)
	}
	for _, c := range s {
		if c > 0x7e || c <= ' ' || strings.ContainsRune("\"(),/:;<=>?@[\\]{}", c) {
			return fieldErrorf(field, "invalid header name %q", s)
		}
	}
	return nil
}

func httpRule(f string, in *v1alpha1.PortRuleHTTP, hasJWT bool) (model.HTTPRule, error) {
	out := model.HTTPRule{Method: in.Method, Host: in.Host}
	if in.Method != "" {
		if err := regex(f+".method", in.Method); err != nil {
			return out, err
		}
	}
	if in.Host != "" {
		if err := regex(f+".host", in.Host); err != nil {
			return out, err
		}
	}
	var set []string
	if in.Path != "" {
		if err := regex(f+".path", in.Path); err != nil {
			return out, err
		}
		out.Path = l7.PathMatch{Kind: l7.PathRegex, Value: in.Path}
		set = append(set, "path")
	}
	if in.PathExact != "" {
		out.Path = l7.PathMatch{Kind: l7.PathExact, Value: in.PathExact}
		set = append(set, "pathExact")
	}
	if in.PathPrefix != "" {
		out.Path = l7.PathMatch{Kind: l7.PathPrefix, Value: in.PathPrefix}
		set = append(set, "pathPrefix")
	}
	if len(set) > 1 {
		return out, fieldErrorf(f+"."+set[1], "only one of path, pathExact and pathPrefix may be set (have %s)", strings.Join(set, ", "))
	}
	for _, p := range []struct{ name, v string }{{"pathExact", in.PathExact}, {"pathPrefix", in.PathPrefix}} {
		if p.v != "" && !strings.HasPrefix(p.v, "/") {
			return out, fieldErrorf(f+"."+p.name, "%q must start with /", p.v)
		}
	}
	for i, h := range in.Headers {
		hf := idx(f+".headers", i)
		name, value, hasValue := strings.Cut(h, ":")
		name = strings.TrimSpace(name)
		if err := headerName(hf, name); err != nil {
			return out, err
		}
		hm := l7.HeaderMatch{Name: name}
		if hasValue {
			hm.Value = strings.TrimSpace(value)
		}
		out.Headers = append(out.Headers, hm)
	}
	for i, h := range in.HeaderMatches {
		hf := idx(f+".headerMatches", i)
		if err := headerName(hf+".name", h.Name); err != nil {
			return out, err
		}
		if h.Regex {
			if h.Value == "" {
				return out, fieldErrorf(hf+".value", "%w with regex: true", ErrRequired)
			}
			if err := regex(hf+".value", h.Value); err != nil {
				return out, err
			}
		}
		out.Headers = append(out.Headers, l7.HeaderMatch{Name: h.Name, Value: h.Value, Regex: h.Regex})
	}
	if in.RateLimit != nil {
		var err error
		if out.RateLimit, err = rateLimit(f+".rateLimit", in.RateLimit); err != nil {
			return out, err
		}
	}
	if len(in.JWTClaims) > 0 {
		if !hasJWT {
			return out, fieldErrorf(f+".jwtClaims", "claims need a JWT provider: set the port's jwt")
		}
		var err error
		if out.JWTClaims, err = claims(f+".jwtClaims", in.JWTClaims); err != nil {
			return out, err
		}
	}
	return out, nil
}

func rateLimit(f string, in *v1alpha1.RateLimit) (*l7.RateLimit, error) {
	if in.Requests < 1 {
		return nil, fieldErrorf(f+".requests", "%d must be at least 1", in.Requests)
	}
	per := time.Second
	if in.Per != "" {
		d, err := time.ParseDuration(in.Per)
		if err != nil {
			return nil, fieldErrorf(f+".per", "%q is not a duration such as 1s or 1m", in.Per)
		}
		if d < MinRatePeriod || d > maxRatePeriod {
			return nil, fieldErrorf(f+".per", "%s is outside %s to %s", d, MinRatePeriod, maxRatePeriod)
		}
		per = d
	}
	burst := in.Burst
	if burst == 0 {
		burst = in.Requests
	}
	if burst < in.Requests {
		return nil, fieldErrorf(f+".burst", "%d is less than requests (%d): a bucket must hold a period's requests", burst, in.Requests)
	}
	return &l7.RateLimit{Requests: uint32(in.Requests), Per: per, Burst: uint32(burst), PerClient: in.PerClient}, nil
}

func jwtProvider(f string, in *v1alpha1.JWT) (*model.JWTProvider, error) {
	if in.Issuer == "" {
		return nil, required(f + ".issuer")
	}
	out := &model.JWTProvider{Issuer: in.Issuer}
	for i, a := range in.Audiences {
		if a == "" {
			return nil, required(idx(f+".audiences", i))
		}
		out.Audiences = append(out.Audiences, a)
	}
	switch {
	case in.JWKS != "" && in.JWKSSecretRef != nil:
		return nil, fieldErrorf(f+".jwksSecretRef", "only one of jwks and jwksSecretRef may be set")
	case in.JWKS != "":
		if err := CheckJWKS(f+".jwks", in.JWKS); err != nil {
			return nil, err
		}
		out.JWKS = in.JWKS
	case in.JWKSSecretRef != nil:
		if in.JWKSSecretRef.Name == "" {
			return nil, required(f + ".jwksSecretRef.name")
		}
		if in.JWKSSecretRef.Key == "" {
			return nil, required(f + ".jwksSecretRef.key")
		}
		out.JWKSSecret = &model.SecretKeyRef{Name: in.JWKSSecretRef.Name, Key: in.JWKSSecretRef.Key}
	default:
		return nil, fieldErrorf(f+".jwks", "%w: the issuer's key set, inline (jwks) or from a Secret (jwksSecretRef)", ErrRequired)
	}
	var err error
	if out.Claims, err = claims(f+".claims", in.Claims); err != nil {
		return nil, err
	}
	return out, nil
}

func claims(f string, in []v1alpha1.ClaimMatch) ([]l7.ClaimMatch, error) {
	var out []l7.ClaimMatch
	for i, c := range in {
		cf := idx(f, i)
		if c.Claim == "" {
			return nil, required(cf + ".claim")
		}
		if len(c.Values) == 0 {
			return nil, fieldErrorf(cf+".values", "%w: at least one value", ErrRequired)
		}
		out = append(out, l7.ClaimMatch{Claim: c.Claim, Values: slices.Clone(c.Values)})
	}
	return out, nil
}

// CheckJWKS checks that s is a JSON Web Key Set with at least one key.
// The keys themselves are the proxy's to check.
func CheckJWKS(field, s string) error {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal([]byte(s), &set); err != nil {
		return fieldErrorf(field, "not a JSON Web Key Set: %v", err)
	}
	if len(set.Keys) == 0 {
		return fieldErrorf(field, "a JSON Web Key Set needs at least one key in \"keys\"")
	}
	return nil
}

// ResolveL7Secrets returns p with the JWT key sets that name a Secret read
// through get, from namespace ns (the agent's: see daemonset/README.md),
// or p itself when none does. A Secret or key that is missing, or that
// holds no key set, is an error naming the field.
func ResolveL7Secrets(p *model.L7Policy, ns string, get func(ref model.SecretKeyRef) ([]byte, error)) (*model.L7Policy, error) {
	var out *model.L7Policy
	for i := range p.Ports {
		j := p.Ports[i].JWT
		if j == nil || j.JWKSSecret == nil {
			continue
		}
		f := idx("spec.ports", i) + ".jwt.jwksSecretRef"
		ref := *j.JWKSSecret
		ref.Namespace = ns
		b, err := get(ref)
		if err != nil {
			return nil, &FieldError{Field: f, Err: err}
		}
		if err := CheckJWKS(f, string(b)); err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				err = fmt.Errorf("secret %s: %w", ref, fe.Err)
			}
			return nil, &FieldError{Field: f, Err: err}
		}
		if out == nil {
			cp := *p
			cp.Ports = slices.Clone(p.Ports)
			out = &cp
		}
		nj := *j
		nj.JWKS, nj.JWKSSecret = string(b), &ref
		out.Ports[i].JWT = &nj
	}
	if out == nil {
		return p, nil
	}
	return out, nil
}
