package files

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/model"
)

// l7Doc is a SluiceL7Policy using every field, in the YAML subset the
// fast decoder takes.
const l7Doc = `apiVersion: sluice.io/v1alpha1
kind: SluiceL7Policy
metadata:
  name: api
  namespace: shop
spec:
  podSelector:
    matchLabels: {app: web}
  audit: true
  ports:
  - port: 8080
    from:
    - podSelector:
        matchLabels: {app: frontend}
    rateLimit: {requests: 100, per: 1m, perClient: true}
    jwt:
      issuer: https://issuer.example
      audiences: [api]
      jwks: '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'
      claims:
      - {claim: scope, values: [read]}
    rules:
      http:
      - method: GET
        pathPrefix: /api/
      - method: DELETE|PUT
        path: /api/items/[0-9]+
        host: shop\.example
        headers: ["X-Team: blue", X-Trace]
        headerMatches:
        - {name: X-Version, value: "v[12]", regex: true}
        rateLimit: {requests: 5, per: 1s, burst: 10}
        jwtClaims:
        - {claim: groups, values: [admins, owners]}
  - port: http
    rules:
      http:
      - {}
`

func TestParseL7Policy(t *testing.T) {
	entries, err := parseFile("l7.yaml", []byte(l7Doc), false)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	got := entries[0].obj
	jwks := `{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}`
	want := &model.L7Policy{
		Namespace: "shop", Name: "api", Audit: true,
		PodSelector: model.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Ports: []model.L7Port{{
			Port: model.PortNumber(8080), Protocol: model.ProtocolTCP,
			From: []model.Peer{{PodSelector: &model.LabelSelector{MatchLabels: map[string]string{"app": "frontend"}}}},
			JWT: &model.JWTProvider{Issuer: "https://issuer.example", Audiences: []string{"api"}, JWKS: jwks,
				Claims: []l7.ClaimMatch{{Claim: "scope", Values: []string{"read"}}}},
			HTTP: []model.HTTPRule{
				{
					Method: "GET", Path: l7.PathMatch{Kind: l7.PathPrefix, Value: "/api/"},
					// The port's limit, for the rule without one; the burst defaults to requests.
					RateLimit: &l7.RateLimit{Requests: 100, Per: time.Minute, Burst: 100, PerClient: true},
				},
				{
					Method: "DELETE|PUT", Path: l7.PathMatch{Kind: l7.PathRegex, Value: "/api/items/[0-9]+"}, Host: `shop\.example`,
					Headers:   []l7.HeaderMatch{{Name: "X-Team", Value: "blue"}, {Name: "X-Trace"}, {Name: "X-Version", Value: "v[12]", Regex: true}},
					RateLimit: &l7.RateLimit{Requests: 5, Per: time.Second, Burst: 10},
					JWTClaims: []l7.ClaimMatch{{Claim: "groups", Values: []string{"admins", "owners"}}},
				},
			},
		}, {
			Port: model.PortName("http"), Protocol: model.ProtocolTCP,
			HTTP: []model.HTTPRule{{}},
		}},
	}
	assert.Equal(t, want, got)
	assert.True(t, model.Equal(want, got))

	took := compareDecoders(t, newFastDecoder(), l7Doc)
	assert.True(t, took, "the fast decoder takes SluiceL7Policy documents")
}

// An invalid SluiceL7Policy is refused with its file, document, object and
// field, whichever decoder looked at it first.
func TestParseL7PolicyErrors(t *testing.T) {
	head := "apiVersion: sluice.io/v1alpha1\nkind: SluiceL7Policy\nmetadata: {name: api, namespace: shop}\nspec:\n  podSelector: {}\n  ports:\n"
	tests := []struct {
		name, ports, field, want string
	}{
		{"bad method regex", "  - port: 80\n    rules: {http: [{method: 'GET|('}]}\n",
			"spec.ports[0].rules.http[0].method", `invalid regular expression "GET|(": missing closing )`},
		{"two paths", "  - port: 80\n    rules: {http: [{path: /a, pathPrefix: /b}]}\n",
			"spec.ports[0].rules.http[0].pathPrefix", "only one of path, pathExact and pathPrefix may be set (have path, pathPrefix)"},
		{"relative prefix", "  - port: 80\n    rules: {http: [{pathPrefix: api}]}\n",
			"spec.ports[0].rules.http[0].pathPrefix", `"api" must start with /`},
		{"udp", "  - port: 53\n    protocol: UDP\n    rules: {http: [{}]}\n",
			"spec.ports[0].protocol", `unsupported protocol "UDP": HTTP rules apply to TCP ports only`},
		{"no rules", "  - port: 80\n    rules: {http: []}\n",
			"spec.ports[0].rules.http", "required value: at least one rule (an empty rule {} allows every request)"},
		{"ipBlock peer", "  - port: 80\n    from: [{ipBlock: {cidr: 10.0.0.0/8}}]\n    rules: {http: [{}]}\n",
			"spec.ports[0].from[0].ipBlock", "not supported: L7 rules apply to peers by identity (podSelector, namespaceSelector); limit addresses with a NetworkPolicy, which decides first"},
		{"zero rate", "  - port: 80\n    rules: {http: [{rateLimit: {requests: 0}}]}\n",
			"spec.ports[0].rules.http[0].rateLimit.requests", "0 must be at least 1"},
		{"short period", "  - port: 80\n    rateLimit: {requests: 1, per: 10ms}\n    rules: {http: [{}]}\n",
			"spec.ports[0].rateLimit.per", "10ms is outside 50ms to 24h0m0s"},
		{"burst below rate", "  - port: 80\n    rules: {http: [{rateLimit: {requests: 10, burst: 5}}]}\n",
			"spec.ports[0].rules.http[0].rateLimit.burst", "5 is less than requests (10): a bucket must hold a period's requests"},
		{"claims without jwt", "  - port: 80\n    rules: {http: [{jwtClaims: [{claim: a, values: [b]}]}]}\n",
			"spec.ports[0].rules.http[0].jwtClaims", "claims need a JWT provider: set the port's jwt"},
		{"jwks not a key set", "  - port: 80\n    jwt: {issuer: i, jwks: '{\"keys\": []}'}\n    rules: {http: [{}]}\n",
			"spec.ports[0].jwt.jwks", `a JSON Web Key Set needs at least one key in "keys"`},
		{"jwks from a secret", "  - port: 80\n    jwt: {issuer: i, jwksSecretRef: {name: s, key: k}}\n    rules: {http: [{}]}\n",
			"spec.ports[0].jwt.jwksSecretRef", "the files source reads no Secrets: put the key set inline in jwks"},
		{"bad header", "  - port: 80\n    rules: {http: [{headers: ['X Bad: 1']}]}\n",
			"spec.ports[0].rules.http[0].headers[0]", `invalid header name "X Bad"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := head + tt.ports
			_, err := parseFile("l7.yaml", []byte(goodPod+"---\n"+doc), false)
			var me *ManifestError
			require.True(t, errors.As(err, &me), "%v", err)
			assert.Equal(t, 2, me.Doc)
			assert.Equal(t, "SluiceL7Policy shop/api", me.Object)
			assert.Equal(t, tt.field, me.Field)
			assert.Equal(t, "l7.yaml: document 2 (SluiceL7Policy shop/api): "+tt.field+": "+tt.want, err.Error())
			compareDecoders(t, newFastDecoder(), doc)
		})
	}

	// An unknown field is refused as in every other kind.
	_, err := parseFile("l7.yaml", []byte(head+"  - port: 80\n    rules: {http: [{methods: GET}]}\n"), false)
	assert.EqualError(t, err, `l7.yaml: document 1 (SluiceL7Policy shop/api): unknown field "spec.ports[0].rules.http[0].methods"`)
}

// A broken SluiceL7Policy leaves its last good version in force, and the
// other files' objects apply.
func TestSourceBadL7PolicyKeepsLastGood(t *testing.T) {
	tmp := t.TempDir()
	dir, statePath := filepath.Join(tmp, "manifests"), filepath.Join(tmp, "model.json")
	copyExample(t, dir)
	path := filepath.Join(dir, "l7.yaml")
	writeFile(t, path, l7Doc)
	s, store := startManual(t, Options{Dir: dir, StatePath: statePath})
	key := model.NamespacedName{Namespace: "shop", Name: "api"}
	require.Contains(t, store.Snapshot().L7Policies, key)
	assert.Empty(t, s.Errors())

	writeFile(t, path, strings.Replace(l7Doc, "method: GET", "method: 'GET|('", 1))
	writeFile(t, filepath.Join(dir, "extra.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: extra}\n")
	s.reload()
	snap := store.Snapshot()
	require.Contains(t, snap.L7Policies, key)
	assert.Equal(t, "GET", snap.L7Policies[key].Ports[0].HTTP[0].Method, "the last good version stays")
	assert.Contains(t, snap.Namespaces, "extra")
	errs := manifestErrors(t, s)
	require.Len(t, errs, 1)
	assert.Equal(t, "spec.ports[0].rules.http[0].method", errs[0].Field)

	// Saved like every kind: an agent restarting without the directory
	// comes back with the policy.
	require.Eventually(t, func() bool {
		data, err := os.ReadFile(statePath)
		return err == nil && strings.Contains(string(data), `"l7Policies"`)
	}, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, os.RemoveAll(dir))
	_, restored := start(t, Options{Dir: dir, StatePath: statePath})
	assert.Equal(t, store.Snapshot().L7Policies[key], restored.Snapshot().L7Policies[key])
}
