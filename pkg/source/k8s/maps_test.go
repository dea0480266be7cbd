package k8s

// From the (fake) API server to the BPF maps: objects created, updated and
// deleted through client-go's fake clientset, watched by real informers,
// reach the model and, through the service and policy reconcilers, the
// maps of a loaded datapath. tests/apiserver does the same against a real
// kube-apiserver.
//
//	fake API ──informers──► Source ──► model.Store ──► servicesync.Reconciler ────► sl_lb_*
//	                                                └─► policysync ──────► sl_ipcache, sl_policy

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sluice-net/sluice/internal/testing/datapathtest"
	"github.com/sluice-net/sluice/internal/testing/k8stest"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
)

func TestFromTheAPIToTheMaps(t *testing.T) {
	m := datapathtest.Load(t, datapath.Config{}).Maps()
	client := fake.NewClientset(k8stest.Namespace("shop"), k8stest.Node("node-1", "10.244.1.0/24"),
		k8stest.Pod("shop", "web-1", "node-1", "10.244.1.5", map[string]string{"app": "web"}),
		k8stest.Service("shop", "web", "10.96.0.10"), k8stest.Slice("shop", "web", "10.244.1.5"))
	_, store := startSource(t, client, Options{NodeName: "node-1"})
	pol := k8stest.Reconcilers(t, m, store, "node-1", k8stest.ReconcilerOptions{LBMinInterval: 10 * time.Millisecond})

	vip := netip.MustParseAddr("10.96.0.10")
	require.Eventually(t, func() bool {
		b := k8stest.Backends(t, m, vip)
		return len(b) == 1 && b[0] == netip.MustParseAddrPort("10.244.1.5:8080")
	}, 5*time.Second, 20*time.Millisecond, "the service from the API is in sl_lb_svc")
	require.Eventually(t, func() bool {
		return k8stest.PodIdentity(t, m, netip.MustParseAddr("10.244.1.5")) >= 256
	}, 5*time.Second, 20*time.Millisecond, "the pod's identity is in the ipcache")

	// Update: a second backend.
	c := context.Background()
	_, err := client.CoreV1().Pods("shop").Create(c, k8stest.Pod("shop", "web-2", "node-1", "10.244.1.6", map[string]string{"app": "web"}), metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = client.DiscoveryV1().EndpointSlices("shop").Update(c, k8stest.Slice("shop", "web", "10.244.1.5", "10.244.1.6"), metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(k8stest.Backends(t, m, vip)) == 2 }, 5*time.Second, 20*time.Millisecond)

	// A policy from the API is compiled; the pod's endpoint gets its maps
	// once the endpoint manager places it (Prepare), as the agent does.
	_, err = client.NetworkingV1().NetworkPolicies("shop").Create(c, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "deny-all"},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, flags := pol.Prepare(model.NamespacedName{Namespace: "shop", Name: "web-1"}, 7)
		return flags&datapath.EPFlagPolicyIngress != 0
	}, 5*time.Second, 20*time.Millisecond)
	p, err := m.DumpEndpointPolicy(7)
	require.NoError(t, err)
	require.Len(t, p.Entries, 1, "deny all but the node's own probes")
	require.Equal(t, datapath.IdentityHost, p.Entries[0].Identity)

	// Delete: the service goes, and with it its frontends.
	require.NoError(t, client.CoreV1().Services("shop").Delete(c, "web", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { return len(k8stest.Backends(t, m, vip)) == 0 }, 5*time.Second, 20*time.Millisecond)
	st, err := m.LBDump()
	require.NoError(t, err)
	require.Empty(t, st.Frontends)
}
