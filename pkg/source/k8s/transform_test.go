package k8s

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	"github.com/sluice-net/sluice/internal/testing/k8stest"
	"github.com/sluice-net/sluice/pkg/source/k8sconv"
)

func fatObjects() []runtime.Object {
	hostPod := k8stest.FatPod(7)
	hostPod.Spec.HostNetwork = true
	lb := k8stest.FatService(3)
	lb.Spec.Type = corev1.ServiceTypeLoadBalancer
	lb.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	lb.Spec.HealthCheckNodePort = 31000
	lb.Spec.LoadBalancerSourceRanges = []string{"203.0.113.0/24"}
	lb.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	lb.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: k8stest.Ptr(int32(600))}}
	lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.7", IPMode: k8stest.Ptr(corev1.LoadBalancerIPModeVIP)}}
	lb.Status.Conditions = []metav1.Condition{{Type: "LoadBalancerReady", Status: metav1.ConditionTrue, Reason: "Provisioned", LastTransitionTime: k8stest.Created}}
	return []runtime.Object{k8stest.Namespace("shop"), k8stest.FatNode(1), k8stest.FatPod(1), hostPod, k8stest.FatService(1), lb, k8stest.FatSlice(1), k8stest.FatPolicy(1)}
}

// The cache holds what converting the full object gives, and nothing of
// the API object but its name, namespace and resource version.
func TestTransformConvertsToTheModel(t *testing.T) {
	for _, obj := range fatObjects() {
		want, err := k8sconv.Object(obj)
		require.NoError(t, err)
		t.Run(want.Key().String(), func(t *testing.T) {
			m := obj.(metav1.Object)
			out, err := toModel(obj.DeepCopyObject())
			require.NoError(t, err)
			c, ok := out.(*cached)
			require.True(t, ok, "%T", out)
			assert.Equal(t, &cached{name: m.GetName(), namespace: m.GetNamespace(), resourceVersion: m.GetResourceVersion(), obj: want}, c)

			again, err := toModel(out)
			require.NoError(t, err)
			assert.Same(t, out, again, "the transform must be idempotent")

			// What the informers' key function reads.
			key, err := cache.MetaNamespaceKeyFunc(out)
			require.NoError(t, err)
			wantKey, err := cache.MetaNamespaceKeyFunc(obj)
			require.NoError(t, err)
			assert.Equal(t, wantKey, key)
		})
	}
}

// An object that does not convert is cached with its error, for the
// source to report, and its name for the cache key.
func TestTransformKeepsConversionErrors(t *testing.T) {
	svc := k8stest.FatService(1)
	svc.Spec.ClusterIP = "10.96.0.300"
	svc.Spec.ClusterIPs = []string{"10.96.0.300"}
	_, want := k8sconv.Object(svc)
	require.Error(t, want)
	out, err := toModel(svc)
	require.NoError(t, err, "a transform error would stop the informer")
	c := out.(*cached)
	assert.Nil(t, c.obj)
	assert.Equal(t, want, c.err)
	assert.Equal(t, svc.Name, c.name)
	assert.Equal(t, svc.Namespace, c.namespace)

	other := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x", ManagedFields: k8stest.ManagedFields("m")}}
	out, err = toModel(other)
	require.NoError(t, err)
	assert.Same(t, other, out, "unknown types pass through")
}
