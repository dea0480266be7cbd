package l7proxy

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/sluice-net/sluice/pkg/l7"
)

// The stand-in decides requests as the RBAC permissions made of the rules
// do: whole-value expressions, path kinds, headers.
func TestMatches(t *testing.T) {
	req := func(method, target, host string, headers ...string) *http.Request {
		u, _ := url.Parse(target)
		r := &http.Request{Method: method, URL: u, Host: host, Header: http.Header{}}
		for i := 0; i+1 < len(headers); i += 2 {
			r.Header.Add(headers[i], headers[i+1])
		}
		return r
	}
	tests := []struct {
		name string
		rule l7.Rule
		req  *http.Request
		want bool
	}{
		{"empty rule: anything", l7.Rule{}, req("DELETE", "/x", "h"), true},
		{"method whole", l7.Rule{Method: "GET"}, req("GETX", "/", "h"), false},
		{"method alternatives", l7.Rule{Method: "GET|HEAD"}, req("HEAD", "/", "h"), true},
		{"prefix", l7.Rule{Path: l7.PathMatch{Kind: l7.PathPrefix, Value: "/api/"}}, req("GET", "/api/items?x=1", "h"), true},
		{"prefix: not the dir itself", l7.Rule{Path: l7.PathMatch{Kind: l7.PathPrefix, Value: "/api/"}}, req("GET", "/api", "h"), false},
		{"exact", l7.Rule{Path: l7.PathMatch{Kind: l7.PathExact, Value: "/a"}}, req("GET", "/a/b", "h"), false},
		{"regex whole path", l7.Rule{Path: l7.PathMatch{Kind: l7.PathRegex, Value: "/items/[0-9]+"}}, req("GET", "/items/12/x", "h"), false},
		{"regex", l7.Rule{Path: l7.PathMatch{Kind: l7.PathRegex, Value: "/items/[0-9]+"}}, req("GET", "/items/12", "h"), true},
		{"host", l7.Rule{Host: `shop\.example`}, req("GET", "/", "shop.example"), true},
		{"host whole", l7.Rule{Host: `shop\.example`}, req("GET", "/", "evil-shop.example"), false},
		{"header present", l7.Rule{Headers: []l7.HeaderMatch{{Name: "x-trace"}}}, req("GET", "/", "h", "X-Trace", "1"), true},
		{"header missing", l7.Rule{Headers: []l7.HeaderMatch{{Name: "x-trace"}}}, req("GET", "/", "h"), false},
		{"header value", l7.Rule{Headers: []l7.HeaderMatch{{Name: "X-Team", Value: "blue"}}}, req("GET", "/", "h", "X-Team", "red"), false},
		{"header regex", l7.Rule{Headers: []l7.HeaderMatch{{Name: "X-Version", Value: "v[12]", Regex: true}}}, req("GET", "/", "h", "X-Version", "v2"), true},
		{"every field", l7.Rule{Method: "GET", Path: l7.PathMatch{Kind: l7.PathPrefix, Value: "/api/"}}, req("POST", "/api/x", "h"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := matches(&tt.rule, tt.req)
			assert.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
	rule, ok := match([]l7.Rule{{Ref: l7.RuleRef{Namespace: "x", Policy: "api"}, Method: "POST"}, {Ref: l7.RuleRef{Namespace: "x", Policy: "api", RuleIndex: 1}, Method: "GET"}},
		req("GET", "/", "h"))
	assert.True(t, ok)
	assert.Equal(t, "x/api/ports[0]/rules[1]", rule)
}
