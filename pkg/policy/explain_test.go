package policy

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
