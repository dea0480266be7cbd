package cli_test

import (
	"net/http"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/cli"
	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/policy"
)

// `sluice policy get` of a pod with L7 rules shows its L7 policies, the
// redirect entries with their proxy ports, and each listener's peers and
// allowed requests.
func TestPolicyGetShowsL7(t *testing.T) {
	x := policy.Explanation{
		Pod: "shop/web-1", Identity: policy.IdentityRef{ID: 300, Labels: []string{"k8s:app=web"}}, IngressEnforced: true,
		L7Policies: []string{"shop/api"},
		Entries: []policy.EntryExplanation{
			{Direction: policy.Ingress, Peer: "identity 301", Ports: "TCP/8080", Verdict: policy.Redirect, ProxyPort: 15001, Rule: "shop/api l7 ports[0]"},
		},
		L7: []policy.L7Explanation{
			{Port: "TCP/8080", ProxyPort: 15001, Listener: "l7-15001", Peers: []string{"identity 301"}, Sources: []string{"shop/api"},
				Rules: []string{"shop/api/ports[0]/rules[0]: GET path prefix /api/", "shop/api/ports[0]/rules[1]: HEAD"}},
			{Port: "TCP/8080", ProxyPort: 15000, Listener: "l7-15000", Audit: true, Peers: []string{"any"}, Sources: []string{"shop/api"}},
		},
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+api.PathPolicy, serveJSON(x))
	dir := fakeAgent(t, mux)
	out, err := run(t, "--state-dir", dir, "policy", "get", "shop/web-1")
	require.NoError(t, err)
	requireLine(t, out, "L7: shop/api")
	requireLine(t, out, "ingress identity 301 - TCP/8080 redirect:15001 shop/api l7 ports[0]")
	requireLine(t, out, "PORT PROXY PORT PEERS FROM ALLOWED REQUESTS")
	requireLine(t, out, "TCP/8080 15001 identity 301 shop/api shop/api/ports[0]/rules[0]: GET path prefix /api/")
	requireLine(t, out, "shop/api/ports[0]/rules[1]: HEAD")
	requireLine(t, out, "TCP/8080 15000 (audit) any shop/api none: every request denied (no rule applies to these peers)")
}

// A connection handed to the L7 proxy reads as such in `sluice observe`,
// not as a plain ALLOWED: the verdict, its proxy port and the policy.
func TestObserveShowsRedirects(t *testing.T) {
	f := &flowpb.Flow{
		Verdict: flowpb.Verdict_REDIRECTED, ProxyPort: 15001,
		EventType:        &flowpb.CiliumEventType{Type: flow.MessageTypePolicyVerdict},
		IngressAllowedBy: []*flowpb.Policy{{Namespace: "shop", Name: "api", Kind: "SluiceL7Policy"}},
	}
	require.Equal(t, "REDIRECTED TO PROXY :15001 BY shop/api (SluiceL7Policy)", cli.FlowVerdictText(f))
}
