package apiserver

// ClusterNetworkPolicy on a real API server: the CRD of daemonset/ is
// accepted and its objects reach the agent's Kubernetes source (the
// network-policy-api's Go types); the schema refuses what it can express
// (422, naming the field), and the agent refuses what Sluice does not
// enforce (domainNames) with the field, keeping the last good version.

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	npv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/source/k8s"
	"github.com/sluice-net/sluice/pkg/source/k8sconv"
)

// guardrailPolicy is an Admin ClusterNetworkPolicy denying egress to the
// cloud metadata address from every namespace, as the network-policy-api
// documents guardrails.
func guardrailPolicy() *npv1alpha2.ClusterNetworkPolicy {
	return &npv1alpha2.ClusterNetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "guardrail"},
		Spec: npv1alpha2.ClusterNetworkPolicySpec{
			Tier: npv1alpha2.AdminTier, Priority: 10,
			Subject: npv1alpha2.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{}},
			Egress: []npv1alpha2.ClusterNetworkPolicyEgressRule{{
				Name: "no-metadata", Action: npv1alpha2.ClusterNetworkPolicyRuleActionDeny,
				To: []npv1alpha2.ClusterNetworkPolicyEgressPeer{{Networks: []npv1alpha2.CIDR{"169.254.169.254/32"}}},
			}},
			Ingress: []npv1alpha2.ClusterNetworkPolicyIngressRule{{
				Action: npv1alpha2.ClusterNetworkPolicyRuleActionAccept,
				From:   []npv1alpha2.ClusterNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}}},
				Protocols: []npv1alpha2.ClusterNetworkPolicyProtocol{{TCP: &npv1alpha2.ClusterNetworkPolicyProtocolTCP{
					DestinationPort: &npv1alpha2.Port{Range: &npv1alpha2.PortRange{Start: 9000, End: 9100}}}}},
			}},
		},
	}
}

func cnpUnstructured(t *testing.T, p *npv1alpha2.ClusterNetworkPolicy) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
	require.NoError(t, err)
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(k8sconv.ClusterNetworkPolicyKind)
	return u
}

func TestClusterNetworkPolicyCRDOnARealAPIServer(t *testing.T) {
	cp := startControlPlane(t)
	d := dynamicClient(t, cp.APIServer.AdminKubeconfig)
	ctx := context.Background()
	res := d.Resource(k8sconv.ClusterNetworkPolicies)
	_, err := res.Create(ctx, cnpUnstructured(t, guardrailPolicy()), metav1.CreateOptions{FieldValidation: "Strict"})
	require.NoError(t, err, "the API server accepts the documented shape")

	src, store := startSource(t, cp.APIServer.AdminKubeconfig, k8s.Options{})
	key := model.Key{Kind: model.KindClusterNetworkPolicy, Name: "guardrail"}
	require.Eventually(t, func() bool { _, ok := store.Snapshot().Get(key); return ok }, waitFor, 20*time.Millisecond, "%s", sourceErrors(src))
	o, _ := store.Snapshot().Get(key)
	p := o.(*model.ClusterNetworkPolicy)
	assert.Equal(t, model.TierAdmin, p.Tier)
	assert.Equal(t, model.ActionDeny, p.Egress[0].Action)
	assert.Equal(t, "169.254.169.254/32", p.Egress[0].Peers[0].Networks[0].String())
	assert.Equal(t, []model.ClusterPort{{Protocol: model.ProtocolTCP, Port: 9000, EndPort: 9100}}, p.Ingress[0].Ports)
	assert.Empty(t, src.Errors())

	// What the schema expresses, the API server refuses (422, naming the
	// field), and the agent never sees.
	for name, mutate := range map[string]func(*npv1alpha2.ClusterNetworkPolicy){
		"tier":         func(p *npv1alpha2.ClusterNetworkPolicy) { p.Spec.Tier = "Developer" },
		"priority":     func(p *npv1alpha2.ClusterNetworkPolicy) { p.Spec.Priority = 1001 },
		"action":       func(p *npv1alpha2.ClusterNetworkPolicy) { p.Spec.Egress[0].Action = "Allow" },
		"two subjects": func(p *npv1alpha2.ClusterNetworkPolicy) { p.Spec.Subject.Pods = &npv1alpha2.NamespacedPod{} },
		"host bits": func(p *npv1alpha2.ClusterNetworkPolicy) {
			p.Spec.Egress[0].To[0].Networks = []npv1alpha2.CIDR{"10.0.0.1/8"}
		},
		"range": func(p *npv1alpha2.ClusterNetworkPolicy) {
			p.Spec.Ingress[0].Protocols[0].TCP.DestinationPort.Range = &npv1alpha2.PortRange{Start: 90, End: 80}
		},
		"no peer": func(p *npv1alpha2.ClusterNetworkPolicy) { p.Spec.Egress[0].To = nil },
	} {
		bad := guardrailPolicy()
		bad.Name = "bad"
		mutate(bad)
		_, err := res.Create(ctx, cnpUnstructured(t, bad), metav1.CreateOptions{FieldValidation: "Strict"})
		require.Error(t, err, name)
		assert.True(t, apierrors.IsInvalid(err), "%s: %v", name, err)
		assert.Contains(t, err.Error(), "spec.", name)
		t.Logf("%s: %v", name, err)
	}

	// What Sluice does not enforce (domain names), the agent refuses with
	// the field, keeping the last good version.
	upd := guardrailPolicy()
	upd.Spec.Egress[0].To = []npv1alpha2.ClusterNetworkPolicyEgressPeer{{DomainNames: []npv1alpha2.DomainName{"example.com"}}}
	upd.Spec.Egress[0].Action = npv1alpha2.ClusterNetworkPolicyRuleActionAccept
	cur, err := res.Get(ctx, "guardrail", metav1.GetOptions{})
	require.NoError(t, err)
	u := cnpUnstructured(t, upd)
	u.SetResourceVersion(cur.GetResourceVersion())
	_, err = res.Update(ctx, u, metav1.UpdateOptions{FieldValidation: "Strict"})
	require.NoError(t, err, "the schema allows domain names")
	require.Eventually(t, func() bool { return len(src.Errors()) == 1 }, waitFor, 20*time.Millisecond)
	var oe *k8s.ObjectError
	require.ErrorAs(t, src.Errors()[0], &oe)
	assert.Equal(t, key, oe.Object)
	assert.Equal(t, "spec.egress[0].to[0].domainNames", oe.Field)
	assert.True(t, oe.Kept)
	o, _ = store.Snapshot().Get(key)
	assert.Equal(t, model.ActionDeny, o.(*model.ClusterNetworkPolicy).Egress[0].Action)

	require.NoError(t, res.Delete(ctx, "guardrail", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { _, ok := store.Snapshot().Get(key); return !ok }, waitFor, 20*time.Millisecond)
}
