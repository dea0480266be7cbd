package k8s

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	npv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/sluice-net/sluice/internal/testing/k8stest"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/source/k8sconv"
)

func guardrail(action npv1alpha2.ClusterNetworkPolicyRuleAction, priority int32) *unstructured.Unstructured {
	p := &npv1alpha2.ClusterNetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "guardrail"},
		Spec: npv1alpha2.ClusterNetworkPolicySpec{
			Tier: npv1alpha2.AdminTier, Priority: priority,
			Subject: npv1alpha2.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{}},
			Ingress: []npv1alpha2.ClusterNetworkPolicyIngressRule{{
				Name: "no-dev", Action: action,
				From: []npv1alpha2.ClusterNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "dev"}}}},
			}},
		},
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
	if err != nil {
		panic(err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(k8sconv.ClusterNetworkPolicyKind)
	return u
}

// ClusterNetworkPolicies come from the dynamic client's list and watch
// into the model; one the conversion refuses keeps the last good version,
// and the error names the field.
func TestClusterNetworkPoliciesFromTheAPI(t *testing.T) {
	ctx := context.Background()
	dyn := k8stest.NewDynamic(guardrail(npv1alpha2.ClusterNetworkPolicyRuleActionDeny, 10))
	res := dyn.Resource(k8sconv.ClusterNetworkPolicies)
	client := fake.NewClientset()
	s, store := startSource(t, client, Options{Client: k8stest.Clientset(client).WithDynamic(dyn)})
	key := model.Key{Kind: model.KindClusterNetworkPolicy, Name: "guardrail"}

	got, ok := store.Snapshot().Get(key)
	require.True(t, ok, "listed at start")
	p := got.(*model.ClusterNetworkPolicy)
	assert.Equal(t, model.TierAdmin, p.Tier)
	assert.Equal(t, model.ActionDeny, p.Ingress[0].Action)
	assert.Equal(t, map[string]string{"env": "dev"}, p.Ingress[0].Peers[0].NamespaceSelector.MatchLabels)
	assert.Empty(t, s.Errors())

	_, err := res.Update(ctx, guardrail(npv1alpha2.ClusterNetworkPolicyRuleActionPass, 10), metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		o, _ := store.Snapshot().Get(key)
		return o.(*model.ClusterNetworkPolicy).Ingress[0].Action == model.ActionPass
	}, waitFor, 10*time.Millisecond)

	// An action this version does not know: the last good version stays.
	_, err = res.Update(ctx, guardrail("Allow", 10), metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return objectErrors(s)[key] != nil }, waitFor, 10*time.Millisecond)
	oe := objectErrors(s)[key]
	assert.Equal(t, "spec.ingress[0].action", oe.Field)
	assert.True(t, oe.Kept)
	o, _ := store.Snapshot().Get(key)
	assert.Equal(t, model.ActionPass, o.(*model.ClusterNetworkPolicy).Ingress[0].Action)

	require.NoError(t, res.Delete(ctx, "guardrail", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { _, ok := store.Snapshot().Get(key); return !ok }, waitFor, 10*time.Millisecond)
	assert.Empty(t, s.Errors())
}
