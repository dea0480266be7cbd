package apiserver

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/sluice-net/sluice/internal/testing/datapathtest"
	"github.com/sluice-net/sluice/internal/testing/k8stest"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/source/k8s"
)

// Field selectors are evaluated by the API server; the fake clientset
// ignores them and returns everything. The agent itself selects nothing:
// its pod informer watches every pod of the cluster, because the ipcache
// maps every pod IP to an identity, and it tells its local pods by
// spec.nodeName itself. The README has operators find a node's agent with
// `--field-selector spec.nodeName=NODE`, and a node-local pod watch is
// what a future per-node informer would use: both are checked here.
func TestFieldSelectors(t *testing.T) {
	cp := startControlPlane(t)
	admin := adminClient(t, cp.APIServer.AdminKubeconfig)
	ctx := context.Background()
	createShop(t, admin)
	pods := admin.CoreV1().Pods("shop")

	// The agent's view: every pod, the local ones told apart by the model.
	_, store := startSource(t, cp.APIServer.AdminKubeconfig, k8s.Options{NodeName: "node-1"})
	snap := store.Snapshot()
	for _, name := range []string{"web-1", "web-2", "client-1"} {
		assert.Contains(t, snap.Pods, model.NamespacedName{Namespace: "shop", Name: name})
	}
	local := snap.LocalPods("node-1")
	require.Len(t, local, 1)
	assert.Equal(t, "web-1", local[0].Name)

	names := func(l *corev1.PodList) []string {
		var out []string
		for _, p := range l.Items {
			out = append(out, p.Name)
		}
		return out
	}
	l, err := pods.List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=node-1"})
	require.NoError(t, err)
	assert.Equal(t, []string{"web-1"}, names(l))
	l2, err := pods.List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=node-2,status.podIP=10.244.2.6"})
	require.NoError(t, err)
	assert.Equal(t, []string{"client-1"}, names(l2))
	l3, err := pods.List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName!=node-1"})
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"web-2", "client-1"}, names(l3))

	// A node-local watch from the list's resource version sees this
	// node's pods only, and sees a pod enter the selection when its
	// status changes (status.phase=Running: ADDED on the transition).
	w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=node-1", ResourceVersion: l.ResourceVersion})
	require.NoError(t, err)
	defer w.Stop()
	running, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: "status.phase=Running", ResourceVersion: l.ResourceVersion})
	require.NoError(t, err)
	defer running.Stop()
	require.NoError(t, createPod(ctx, admin, k8stest.Pod("shop", "web-3", "node-2", "10.244.2.7", map[string]string{"app": "web"})))
	require.NoError(t, createPod(ctx, admin, k8stest.Pod("shop", "web-4", "node-1", "10.244.1.8", map[string]string{"app": "web"})))
	require.NoError(t, pods.Delete(ctx, "web-4", metav1.DeleteOptions{GracePeriodSeconds: k8stest.Ptr(int64(0))}))

	// What a watch event says about a pod: deleting is a set
	// deletionTimestamp.
	type seen struct {
		typ      watch.EventType
		name, ip string
		deleting bool
	}
	next := func(w watch.Interface) seen {
		t.Helper()
		for {
			select {
			case ev, ok := <-w.ResultChan():
				require.True(t, ok, "watch closed")
				if ev.Type == watch.Bookmark {
					continue
				}
				p, ok := ev.Object.(*corev1.Pod)
				require.True(t, ok, "event %s of %T", ev.Type, ev.Object)
				return seen{ev.Type, p.Name, p.Status.PodIP, p.DeletionTimestamp != nil}
			case <-time.After(waitFor):
				t.Fatal("no watch event")
			}
		}
	}
	// web-4: created (no status yet), status set, deleted: with a grace
	// period of 0 the API server first marks it (MODIFIED with a
	// deletionTimestamp), then removes it. web-3 is on node-2 and never
	// shows up.
	assert.Equal(t, seen{watch.Added, "web-4", "", false}, next(w))
	assert.Equal(t, seen{watch.Modified, "web-4", "10.244.1.8", false}, next(w))
	assert.Equal(t, seen{watch.Modified, "web-4", "10.244.1.8", true}, next(w))
	assert.Equal(t, seen{watch.Deleted, "web-4", "10.244.1.8", true}, next(w))
	// Created Pending, they enter status.phase=Running with their status.
	assert.Equal(t, seen{watch.Added, "web-3", "10.244.2.7", false}, next(running))
	assert.Equal(t, seen{watch.Added, "web-4", "10.244.1.8", false}, next(running))
	assert.Equal(t, seen{watch.Modified, "web-4", "10.244.1.8", true}, next(running))
	assert.Equal(t, seen{watch.Deleted, "web-4", "10.244.1.8", true}, next(running))

	// A field the API server does not index for pods is refused, naming
	// it, rather than silently ignored as by the fake.
	_, err = pods.List(ctx, metav1.ListOptions{FieldSelector: "spec.containers.image=nginx"})
	require.Error(t, err)
	assert.True(t, apierrors.IsBadRequest(err), "want 400, got %v", err)
	assert.ErrorContains(t, err, `field label not supported: spec.containers.image`)
}

// The source's watches survive their API server going away: while it is
// down, changes are written through a second API server on the same etcd
// (as behind a cluster's load balancer during a rolling upgrade of the
// control plane); when it is back on the same address, the informers
// resume (a watch from their last resource version, or a relist if the
// new server's watch cache no longer reaches that far back) and the maps
// converge to what etcd holds, with nothing lost meanwhile.
func TestWatchResumesAcrossAPIServerRestart(t *testing.T) {
	cp := startControlPlane(t)
	admin := adminClient(t, cp.APIServer.AdminKubeconfig)
	ctx := context.Background()
	createShop(t, admin)

	m := datapathtest.Load(t, datapath.Config{}).Maps()
	src, store := startSource(t, cp.APIServer.AdminKubeconfig, k8s.Options{NodeName: "node-1"})
	k8stest.Reconcilers(t, m, store, "node-1", k8stest.ReconcilerOptions{LBMinInterval: 10 * time.Millisecond})
	web := netip.MustParseAddr("10.96.0.10")
	require.Eventually(t, func() bool { return len(k8stest.Backends(t, m, web)) == 2 }, waitFor, 20*time.Millisecond)

	second, err := cp.AddAPIServer(ctx)
	require.NoError(t, err)
	admin2 := adminClient(t, second.AdminKubeconfig)
	require.NoError(t, cp.APIServer.Stop())
	down := time.Now()

	// While the source's API server is down: a new pod replaces web-2 in
	// the slice, client-1 goes, a new service appears.
	require.NoError(t, createPod(ctx, admin2, k8stest.Pod("shop", "web-3", "node-2", "10.244.2.7", map[string]string{"app": "web"})))
	_, err = admin2.DiscoveryV1().EndpointSlices("shop").Update(ctx, k8stest.Slice("shop", "web", "10.244.1.5", "10.244.2.7"), metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, admin2.CoreV1().Pods("shop").Delete(ctx, "client-1", metav1.DeleteOptions{GracePeriodSeconds: k8stest.Ptr(int64(0))}))
	_, err = admin2.CoreV1().Services("shop").Create(ctx, k8stest.Service("shop", "api", "10.96.0.20"), metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = admin2.DiscoveryV1().EndpointSlices("shop").Create(ctx, k8stest.Slice("shop", "api", "10.244.2.7"), metav1.CreateOptions{})
	require.NoError(t, err)

	// The source notices the outage (its relists are refused) and keeps
	// serving the last state.
	require.Eventually(t, func() bool {
		for _, e := range src.Errors() {
			var we *k8s.WatchError
			if errors.As(e, &we) {
				return true
			}
		}
		return false
	}, waitFor, 50*time.Millisecond, "a list/watch failure is reported while the API server is down")
	assert.Len(t, k8stest.Backends(t, m, web), 2, "the maps keep the last state seen")
	t.Logf("while down: %s", sourceErrors(src))
	time.Sleep(2 * time.Second) // let the reflectors back off a little, as in a real outage

	require.NoError(t, cp.APIServer.Start(ctx))
	restarted := time.Now()
	t.Logf("API server down for %s", restarted.Sub(down).Round(time.Millisecond))
	require.Eventually(t, func() bool {
		b := k8stest.Backends(t, m, web)
		slices.SortFunc(b, netip.AddrPort.Compare)
		return assert.ObjectsAreEqual([]netip.AddrPort{netip.MustParseAddrPort("10.244.1.5:8080"), netip.MustParseAddrPort("10.244.2.7:8080")}, b) &&
			len(k8stest.Backends(t, m, netip.MustParseAddr("10.96.0.20"))) == 1 &&
			k8stest.PodIdentity(t, m, netip.MustParseAddr("10.244.2.7")) >= 256 &&
			k8stest.PodIdentity(t, m, netip.MustParseAddr("10.244.2.6")) == 0
	}, time.Minute, 20*time.Millisecond, "every change made while the API server was down reaches the maps")
	t.Logf("maps converged %s after the API server was back", time.Since(restarted).Round(time.Millisecond))
	require.Eventually(t, func() bool { return len(src.Errors()) == 0 }, waitFor, 50*time.Millisecond,
		"the watch errors clear once the informers have resumed: %s", sourceErrors(src))
	_, ok := store.Snapshot().Pods[model.NamespacedName{Namespace: "shop", Name: "client-1"}]
	assert.False(t, ok)
}
