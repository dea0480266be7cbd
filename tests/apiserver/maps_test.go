package apiserver

// From a real kube-apiserver to the BPF maps: objects written through the
// API (and stored in etcd) are watched by the agent's Kubernetes source and
// reach a loaded datapath's maps through the service and policy
// reconcilers, as in pkg/source/k8s's TestFromTheAPIToTheMaps with the fake
// clientset. What the fake cannot show is checked too: the API server's
// validation refuses a bad NetworkPolicy before any agent sees it.
//
//	admin client ──► kube-apiserver ──► etcd
//	                      │ watch (protobuf, the agent's client)
//	                      ▼
//	              k8s.Source ──► model.Store ──► servicesync.Reconciler ──► sl_lb_*
//	                                         └─► policysync ────► sl_ipcache, sl_policy

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/sluice-net/sluice/internal/testing/datapathtest"
	"github.com/sluice-net/sluice/internal/testing/k8stest"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/source/k8s"
)

// webEpID is the endpoint ID the test places web-1 at, as the endpoint
// manager would when it finds the pod's interface.
const webEpID = 7

// shop is the test's little cluster: two nodes, web-1 and web-2 behind
// service web, and a client pod.
func createShop(t *testing.T, c kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, createNamespace(ctx, c, "shop", map[string]string{"team": "shop"}))
	for i, name := range []string{"node-1", "node-2"} {
		n := k8stest.Node(name, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i + 1), 0}), 24).String())
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: netip.AddrFrom4([4]byte{172, 31, 0, byte(10 + i)}).String()}}
		require.NoError(t, createNode(ctx, c, n))
	}
	for _, p := range []*corev1.Pod{
		k8stest.Pod("shop", "web-1", "node-1", "10.244.1.5", map[string]string{"app": "web"}),
		k8stest.Pod("shop", "web-2", "node-2", "10.244.2.5", map[string]string{"app": "web"}),
		k8stest.Pod("shop", "client-1", "node-2", "10.244.2.6", map[string]string{"app": "client"}),
	} {
		require.NoError(t, createPod(ctx, c, p))
	}
	_, err := c.CoreV1().Services("shop").Create(ctx, k8stest.Service("shop", "web", "10.96.0.10"), metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = c.DiscoveryV1().EndpointSlices("shop").Create(ctx, k8stest.Slice("shop", "web", "10.244.1.5", "10.244.2.5"), metav1.CreateOptions{})
	require.NoError(t, err)
}

// allowFrom lets pods labelled app=from reach the web pods on port.
func allowFrom(from string, port intstr.IntOrString) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-from-" + from},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": from}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: k8stest.Ptr(corev1.ProtocolTCP), Port: &port}},
			}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
}

// allowedPorts is what web-1's policy map lets identity in on (TCP).
func allowedPorts(t *testing.T, m *datapath.Maps, identity uint32) []uint16 {
	t.Helper()
	p, err := m.DumpEndpointPolicy(webEpID)
	require.NoError(t, err)
	var out []uint16
	for _, e := range p.Entries {
		if e.Identity == identity && e.Dir == 1 && e.Verdict == datapath.VerdictAllow {
			out = append(out, e.Port)
		}
	}
	return out
}

func TestFromTheAPIServerToTheMaps(t *testing.T) {
	cp := startControlPlane(t)
	admin := adminClient(t, cp.APIServer.AdminKubeconfig)
	ctx := context.Background()
	createShop(t, admin)

	m := datapathtest.Load(t, datapath.Config{}).Maps()
	src, store := startSource(t, cp.APIServer.AdminKubeconfig, k8s.Options{NodeName: "node-1"})
	pol := k8stest.Reconcilers(t, m, store, "node-1", k8stest.ReconcilerOptions{LBMinInterval: 10 * time.Millisecond})
	assert.Empty(t, src.Errors())

	// Services: the API server's own "kubernetes" service is there too.
	vip := netip.MustParseAddr("10.96.0.10")
	require.Eventually(t, func() bool { return len(k8stest.Backends(t, m, vip)) == 2 }, waitFor, 20*time.Millisecond,
		"the service and its slice from the API are in sl_lb_svc")
	assert.ElementsMatch(t, []netip.AddrPort{netip.MustParseAddrPort("10.244.1.5:8080"), netip.MustParseAddrPort("10.244.2.5:8080")},
		k8stest.Backends(t, m, vip))
	assert.Contains(t, store.Snapshot().Services, model.NamespacedName{Namespace: "default", Name: "kubernetes"})

	// The ipcache: every pod of the cluster, by the status.podIP the
	// "kubelet" wrote after the create.
	var web1, web2, client uint32
	require.Eventually(t, func() bool {
		web1 = k8stest.PodIdentity(t, m, netip.MustParseAddr("10.244.1.5"))
		web2 = k8stest.PodIdentity(t, m, netip.MustParseAddr("10.244.2.5"))
		client = k8stest.PodIdentity(t, m, netip.MustParseAddr("10.244.2.6"))
		return web1 >= 256 && web2 >= 256 && client >= 256
	}, waitFor, 20*time.Millisecond, "the pods' identities are in sl_ipcache")
	assert.Equal(t, web1, web2, "same labels, same identity")
	assert.NotEqual(t, web1, client)

	// A policy: web-1's endpoint lets the client in on 8080 only.
	np, err := admin.NetworkingV1().NetworkPolicies("shop").Create(ctx, allowFrom("client", intstr.FromInt32(8080)), metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, flags := pol.Prepare(model.NamespacedName{Namespace: "shop", Name: "web-1"}, webEpID)
		return flags&datapath.EPFlagPolicyIngress != 0
	}, waitFor, 20*time.Millisecond)
	require.Eventually(t, func() bool { return assert.ObjectsAreEqual([]uint16{8080}, allowedPorts(t, m, client)) },
		waitFor, 20*time.Millisecond)
	good, err := m.DumpEndpointPolicy(webEpID)
	require.NoError(t, err)
	policies := store.Snapshot().NetworkPolicies

	// API validation: an update to an out-of-range port and a new policy
	// with a malformed CIDR are refused with 422 Unprocessable Entity
	// naming the field. The fake clientset would have taken both.
	bad := np.DeepCopy()
	bad.Spec.Ingress[0].Ports[0].Port = k8stest.Ptr(intstr.FromInt32(70000))
	_, err = admin.NetworkingV1().NetworkPolicies("shop").Update(ctx, bad, metav1.UpdateOptions{})
	requireInvalid(t, err, "spec.ingress[0].ports[0].port")
	cidr := allowFrom("world", intstr.FromInt32(8080))
	cidr.Spec.Ingress[0].From = []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/33"}}}
	_, err = admin.NetworkingV1().NetworkPolicies("shop").Create(ctx, cidr, metav1.CreateOptions{})
	requireInvalid(t, err, "spec.ingress[0].from[0].ipBlock.cidr")

	// Nothing reached the agent: the maps keep the last good state. A
	// valid change made afterwards shows the pipeline was live all along.
	time.Sleep(500 * time.Millisecond)
	assert.Equal(t, policies, store.Snapshot().NetworkPolicies, "the model's policies are unchanged")
	now, err := m.DumpEndpointPolicy(webEpID)
	require.NoError(t, err)
	assert.Equal(t, good, now, "web-1's policy map is unchanged")
	assert.Empty(t, src.Errors(), "nothing invalid reached the source")
	np.Spec.Ingress[0].Ports[0].Port = k8stest.Ptr(intstr.FromInt32(9090))
	_, err = admin.NetworkingV1().NetworkPolicies("shop").Update(ctx, np, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return assert.ObjectsAreEqual([]uint16{9090}, allowedPorts(t, m, client)) },
		waitFor, 20*time.Millisecond, "the valid update reaches web-1's policy map")

	// Updates and deletes: web-2 leaves the slice, the client pod goes
	// (and its address with it), then the service.
	_, err = admin.DiscoveryV1().EndpointSlices("shop").Update(ctx, k8stest.Slice("shop", "web", "10.244.1.5"), metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		b := k8stest.Backends(t, m, vip)
		return len(b) == 1 && b[0] == netip.MustParseAddrPort("10.244.1.5:8080")
	}, waitFor, 20*time.Millisecond)
	require.NoError(t, admin.CoreV1().Pods("shop").Delete(ctx, "client-1", metav1.DeleteOptions{GracePeriodSeconds: k8stest.Ptr(int64(0))}))
	require.Eventually(t, func() bool { return k8stest.PodIdentity(t, m, netip.MustParseAddr("10.244.2.6")) == 0 },
		waitFor, 20*time.Millisecond, "the deleted pod's address leaves sl_ipcache")
	require.NoError(t, admin.CoreV1().Services("shop").Delete(ctx, "web", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { return len(k8stest.Backends(t, m, vip)) == 0 }, waitFor, 20*time.Millisecond)
	assert.Empty(t, src.Errors())
}

// requireInvalid asserts err is the API server's 422 for field.
func requireInvalid(t *testing.T, err error, field string) {
	t.Helper()
	require.Error(t, err, "the API server must refuse the object")
	require.True(t, apierrors.IsInvalid(err), "want 422 Invalid, got %v", err)
	var se apierrors.APIStatus
	require.ErrorAs(t, err, &se)
	assert.EqualValues(t, 422, se.Status().Code)
	assert.ErrorContains(t, err, field)
	var fields []string
	if d := se.Status().Details; d != nil {
		for _, c := range d.Causes {
			fields = append(fields, c.Field)
		}
	}
	assert.Contains(t, fields, field, "the status names the field: %v", err)
}
