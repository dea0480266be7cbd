package files

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/model"
)

// cnpDoc is a ClusterNetworkPolicy in the shape of the network-policy-api
// documentation's examples: an Admin guardrail with every kind of peer and
// port.
const cnpDoc = `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: guardrail
spec:
  tier: Admin
  priority: 10
  subject:
    namespaces:
      matchLabels: {env: prod}
  ingress:
  - name: allow-monitoring
    action: Accept
    from:
    - namespaces:
        matchLabels: {kubernetes.io/metadata.name: monitoring}
    protocols:
    - tcp: {destinationPort: {number: 9090}}
  - name: pass-same-team
    action: Pass
    from:
    - pods:
        namespaceSelector: {matchLabels: {team: a}}
        podSelector: {matchLabels: {app: web}}
  egress:
  - name: deny-metadata
    action: Deny
    to:
    - networks: [169.254.169.254/32, "fd00::/8"]
  - action: Accept
    to:
    - nodes: {matchExpressions: [{key: node-role.kubernetes.io/control-plane, operator: Exists}]}
    protocols:
    - tcp: {destinationPort: {range: {start: 6443, end: 6444}}}
    - udp: {destinationPort: {number: 53}}
  - action: Deny
    to:
    - pods:
        namespaceSelector: {}
        podSelector: {matchLabels: {app: db}}
    protocols:
    - destinationNamedPort: postgres
`

func TestParseClusterNetworkPolicy(t *testing.T) {
	objs, err := Decode("cnp.yaml", []byte(cnpDoc))
	require.NoError(t, err)
	require.Len(t, objs, 1)
	p, ok := objs[0].(*model.ClusterNetworkPolicy)
	require.True(t, ok, "%T", objs[0])
	require.Equal(t, model.Key{Kind: model.KindClusterNetworkPolicy, Name: "guardrail"}, p.Key())
	require.Equal(t, model.TierAdmin, p.Tier)
	require.EqualValues(t, 10, p.Priority)
	require.Equal(t, map[string]string{"env": "prod"}, p.Subject.NamespaceSelector.MatchLabels)
	require.Nil(t, p.Subject.PodSelector)
	require.Len(t, p.Ingress, 2)
	require.Equal(t, model.ClusterRule{Name: "allow-monitoring", Action: model.ActionAccept,
		Peers: []model.ClusterPeer{{NamespaceSelector: &model.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}}},
		Ports: []model.ClusterPort{{Protocol: model.ProtocolTCP, Port: 9090}}}, p.Ingress[0])
	require.Equal(t, model.ActionPass, p.Ingress[1].Action)
	require.Equal(t, map[string]string{"app": "web"}, p.Ingress[1].Peers[0].PodSelector.MatchLabels)
	require.Len(t, p.Egress, 3)
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32"), netip.MustParsePrefix("fd00::/8")}, p.Egress[0].Peers[0].Networks)
	require.NotNil(t, p.Egress[1].Peers[0].Nodes)
	require.Equal(t, []model.ClusterPort{{Protocol: model.ProtocolTCP, Port: 6443, EndPort: 6444}, {Protocol: model.ProtocolUDP, Port: 53}}, p.Egress[1].Ports)
	require.Equal(t, []model.ClusterPort{{Name: "postgres"}}, p.Egress[2].Ports)
}

// TestClusterNetworkPolicyErrors: a spec the CRD would refuse is refused
// with the file, the document, the object and the field.
func TestClusterNetworkPolicyErrors(t *testing.T) {
	head := "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: bad}\nspec:\n"
	subject := "  subject: {namespaces: {}}\n"
	for _, tc := range []struct{ name, spec, want string }{
		{"no tier", "  priority: 1\n" + subject, "cnp.yaml: document 1 (ClusterNetworkPolicy bad): spec.tier: required value"},
		{"bad tier", "  tier: Developer\n  priority: 1\n" + subject, `spec.tier: unsupported tier "Developer" (want Admin or Baseline)`},
		{"priority", "  tier: Admin\n  priority: 1001\n" + subject, "spec.priority: 1001 is out of range 0-1000"},
		{"two subjects", "  tier: Admin\n  priority: 1\n  subject: {namespaces: {}, pods: {namespaceSelector: {}, podSelector: {}}}\n",
			"spec.subject: sets 2 of namespaces, pods, nodes and networks; exactly one is allowed"},
		{"no subject", "  tier: Admin\n  priority: 1\n  subject: {}\n", "spec.subject: must set exactly one of namespaces, pods, nodes or networks"},
		{"action", "  tier: Admin\n  priority: 1\n" + subject + "  ingress:\n  - action: Allow\n    from: [{namespaces: {}}]\n",
			`spec.ingress[0].action: unsupported action "Allow" (want Accept, Deny or Pass)`},
		{"no peers", "  tier: Admin\n  priority: 1\n" + subject + "  egress:\n  - action: Deny\n    to: []\n", "spec.egress[0].to: required value"},
		{"cidr", "  tier: Admin\n  priority: 1\n" + subject + "  egress:\n  - action: Deny\n    to: [{networks: [10.0.0.1/8]}]\n",
			"spec.egress[0].to[0].networks[0]: 10.0.0.1/8 has host bits set (want 10.0.0.0/8)"},
		{"domains", "  tier: Admin\n  priority: 1\n" + subject + "  egress:\n  - action: Accept\n    to: [{domainNames: [example.com]}]\n",
			"spec.egress[0].to[0].domainNames: domain name peers are not supported by Sluice: use networks"},
		{"range", "  tier: Baseline\n  priority: 1\n" + subject + "  egress:\n  - action: Deny\n    to: [{networks: [10.0.0.0/8]}]\n    protocols: [{tcp: {destinationPort: {range: {start: 90, end: 80}}}}]\n",
			"spec.egress[0].protocols[0].tcp.destinationPort.range: start 90 must be less than end 80"},
		{"named to networks", "  tier: Admin\n  priority: 1\n" + subject + "  egress:\n  - action: Deny\n    to: [{networks: [10.0.0.0/8]}]\n    protocols: [{destinationNamedPort: http}]\n",
			"spec.egress[0].to[0]: destinationNamedPort in protocols selects pods' ports: it cannot be used with nodes or networks peers"},
		{"unknown field", "  tier: Admin\n  priority: 1\n" + subject + "  ingress:\n  - action: Deny\n    form: [{namespaces: {}}]\n",
			`unknown field "spec.ingress[0].form"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode("cnp.yaml", []byte(head+tc.spec))
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}
