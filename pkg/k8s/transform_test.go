package k8s

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/sluice-net/sluice/pkg/k8s/k8stest"
	"github.com/sluice-net/sluice/pkg/model"
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

// Converting a slimmed object must give exactly what converting the full
// object gives: the transform may drop only what k8sconv never reads.
func TestSlimKeepsWhatConversionReads(t *testing.T) {
	for _, obj := range fatObjects() {
		want, err := k8sconv.Object(obj)
		require.NoError(t, err)
		t.Run(want.Key().String(), func(t *testing.T) {
			slimmed, err := slim(obj.DeepCopyObject())
			require.NoError(t, err)
			got, err := k8sconv.Object(slimmed)
			require.NoError(t, err)
			assert.True(t, model.Equal(want, got), "converted full object:\n%+v\nconverted slimmed object:\n%+v", want, got)

			again, err := slim(slimmed)
			require.NoError(t, err)
			assert.Equal(t, slimmed, again, "slim must be idempotent")
		})
	}
}

func TestSlimStrips(t *testing.T) {
	for _, obj := range fatObjects() {
		out, err := slim(obj.DeepCopyObject())
		require.NoError(t, err)
		m := out.(metav1.Object)
		assert.Empty(t, m.GetManagedFields(), "%T managedFields", out)
		for k := range m.GetAnnotations() {
			assert.True(t, keptAnnotation(k), "%T kept annotation %s", out, k)
		}
		assert.Empty(t, m.GetGenerateName())
		ts := m.GetCreationTimestamp()
		assert.True(t, ts.IsZero())
		assert.NotEmpty(t, m.GetLabels(), "labels are kept")
	}

	pod, _ := slim(k8stest.FatPod(1))
	p := pod.(*corev1.Pod)
	assert.Equal(t, []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "app-0-7d4b9c6f8", Controller: k8stest.Ptr(true)}}, p.OwnerReferences)
	assert.Equal(t, []corev1.Container{
		{Name: "migrate"},
		{Name: "mesh-proxy", Ports: []corev1.ContainerPort{{Name: "proxy", ContainerPort: 15001, Protocol: corev1.ProtocolTCP}},
			RestartPolicy: k8stest.Ptr(corev1.ContainerRestartPolicyAlways)},
	}, p.Spec.InitContainers)
	assert.Equal(t, []corev1.Container{
		{Name: "web", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}},
		{Name: "metrics", Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9090, Protocol: corev1.ProtocolTCP}}},
	}, p.Spec.Containers)
	assert.Equal(t, corev1.PodSpec{NodeName: "node-0", InitContainers: p.Spec.InitContainers, Containers: p.Spec.Containers}, p.Spec,
		"volumes, tolerations, security context... are dropped")
	assert.Equal(t, corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.64.0.1", PodIPs: []corev1.PodIP{{IP: "10.64.0.1"}}}, p.Status)

	svc, _ := slim(k8stest.FatService(1))
	assert.Equal(t, map[string]string{"sluice.io/lb-algorithm": "maglev", "service.kubernetes.io/topology-mode": "Auto"},
		svc.(*corev1.Service).Annotations, "kubectl's last-applied-configuration is dropped")

	node, _ := slim(k8stest.FatNode(1))
	n := node.(*corev1.Node)
	assert.Equal(t, corev1.NodeStatus{Addresses: k8stest.FatNode(1).Status.Addresses}, n.Status, "images, conditions, capacity are dropped")
	assert.Equal(t, corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24"}}, n.Spec)

	eps, _ := slim(k8stest.FatSlice(1))
	e := eps.(*discoveryv1.EndpointSlice).Endpoints[0]
	assert.Nil(t, e.Hostname)
	assert.Nil(t, e.Hints)
	assert.Equal(t, &corev1.ObjectReference{Kind: "Pod", Namespace: "ns-2", Name: "app-1-7d4b9c6f8-00002"}, e.TargetRef)

	ns, _ := slim(k8stest.Namespace("shop"))
	assert.Equal(t, corev1.NamespaceSpec{}, ns.(*corev1.Namespace).Spec)
	assert.Equal(t, map[string]string{"sluice.io/policy-audit": "false"}, ns.(*corev1.Namespace).Annotations)

	np, _ := slim(k8stest.FatPolicy(1))
	assert.Equal(t, k8stest.FatPolicy(1).Spec, np.(*networkingv1.NetworkPolicy).Spec)

	other := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x", ManagedFields: k8stest.ManagedFields("m")}}
	out, err := slim(other)
	require.NoError(t, err)
	assert.Same(t, other, out, "unknown types pass through")
}
