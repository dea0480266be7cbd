package policy

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/model"
)

func TestExplain(t *testing.T) {
	s := netpolCluster()
	s.Upsert(netpol("x/web", sel("pod", "a")).
		ingress(rl(peers(bothPeer(sel("ns", "y"), sel("pod", "b"))), named(model.ProtocolTCP, "serve-80-tcp"), portRangeOf(model.ProtocolTCP, 8000, 8080))).
		egress(rl(peers(ipPeer("10.244.0.0/16", "10.244.3.0/24")), udp(53))).build())
	e := newEngine(t, s)

	x, err := e.Explain(nn("x/a"))
	require.NoError(t, err)
	yb := podID(t, e, "y/b")
	assert.Equal(t, "x/a", x.Pod)
	assert.Contains(t, x.Identity.Labels, "k8s:pod=a")
	assert.True(t, x.IngressEnforced)
	assert.True(t, x.EgressEnforced)
	assert.Equal(t, []string{"x/web"}, x.Policies)
	require.Len(t, x.Rules, 3)

	in := x.Rules[0]
	assert.Equal(t, "x/web ingress[0]", in.Rule)
	assert.Equal(t, []string{"TCP/serve-80-tcp (80)", "TCP/8000-8080"}, in.Ports)
	require.Len(t, in.Peers, 1)
	assert.Equal(t, "pods {pod=b} in namespaces {ns=y}", in.Peers[0].Selector)
	require.Len(t, in.Peers[0].Identities, 1)
	assert.Equal(t, yb, in.Peers[0].Identities[0].ID)
	assert.Contains(t, in.Peers[0].Identities[0].Labels, "k8s:io.kubernetes.pod.namespace=y")

	assert.Equal(t, "10.244.0.0/16 except 10.244.3.0/24", x.Rules[1].Peers[0].IPBlock)
	assert.Equal(t, "host-allow", x.Rules[2].Rule)

	var sawRange, sawClass bool
	for _, en := range x.Entries {
		if en.Ports == "TCP/8000-8063" {
			sawRange = true
			assert.Equal(t, "identity "+yb.String(), en.Peer)
			assert.Equal(t, "x/web ingress[0]", en.Rule)
		}
		if en.Peer == "cidr-class 16777216" {
			sawClass = true
			assert.Equal(t, []string{"10.244.0.0/16"}, en.CIDRs)
			assert.Equal(t, "UDP/53", en.Ports)
		}
	}
	assert.True(t, sawRange && sawClass, "entries: %+v", x.Entries)

	b, err := json.Marshal(x)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"direction":"ingress"`)
	assert.Contains(t, string(b), `"verdict":"allow"`)

	_, err = e.Explain(nn("x/nope"))
	assert.ErrorContains(t, err, "not an endpoint on node n1")
}

// `sluice policy get` of a pod with L7 rules: its listeners, the peers
// redirected to each, and their rules.
func TestExplainL7(t *testing.T) {
	s := netpolCluster()
	s.Upsert(&model.L7Policy{Namespace: "x", Name: "api", PodSelector: *sel("pod", "a"), Ports: []model.L7Port{
		{Port: model.PortNumber(80), Protocol: model.ProtocolTCP, From: []model.Peer{podPeer(sel("pod", "b"))},
			HTTP: []model.HTTPRule{{Method: "GET", Path: l7.PathMatch{Kind: l7.PathPrefix, Value: "/api/"},
				RateLimit: &l7.RateLimit{Requests: 10, Per: time.Second, Burst: 10}}}},
	}})
	e := newEngine(t, s)
	x, err := e.Explain(nn("x/a"))
	require.NoError(t, err)
	assert.Equal(t, []string{"x/api"}, x.L7Policies)
	assert.True(t, x.IngressEnforced)
	require.Len(t, x.Rules, 2)
	assert.Equal(t, "no-network-policy", x.Rules[1].Rule)
	xb := podID(t, e, "x/b")
	assert.Equal(t, []L7Explanation{
		{Port: "TCP/80", ProxyPort: 15000, Listener: "l7-15000", Peers: []string{"any"}, Sources: []string{"x/api"}},
		{Port: "TCP/80", ProxyPort: 15001, Listener: "l7-15001", Peers: []string{"identity " + xb.String()}, Sources: []string{"x/api"},
			Rules: []string{"x/api/ports[0]/rules[0]: GET path prefix /api/ rate 10/1s"}},
	}, x.L7)
	var redirects int
	for _, en := range x.Entries {
		if en.Verdict == Redirect {
			redirects++
			assert.NotZero(t, en.ProxyPort)
			assert.Equal(t, "x/api l7 ports[0]", en.Rule)
		}
	}
	assert.Equal(t, 2, redirects)
}
