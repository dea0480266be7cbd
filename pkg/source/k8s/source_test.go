package k8s

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/sluice-net/sluice/internal/testing/k8stest"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/service"
	"github.com/sluice-net/sluice/pkg/source/k8sconv"
)

// These tests run the real client-go informers against the fake clientset:
// objects go through list, watch, the transform and the informer caches
// exactly as with an API server.

const waitFor = 10 * time.Second

func nn(ns, name string) model.NamespacedName { return model.NamespacedName{Namespace: ns, Name: name} }

// startSource starts a source on client with fast syncs and stops it when
// the test ends.
func startSource(t *testing.T, client *fake.Clientset, opts Options) (*Source, *model.Store) {
	t.Helper()
	s := newSource(t, client, opts)
	store := model.NewStore()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); <-s.Done() })
	require.NoError(t, s.Start(ctx, store))
	return s, store
}

func newSource(t *testing.T, client *fake.Clientset, opts Options) *Source {
	t.Helper()
	if opts.Client == nil {
		// A cluster with Sluice's CRD installed, and no SluiceL7Policy.
		opts.Client = k8stest.Clientset(client).WithDynamic(k8stest.NewDynamic())
	}
	if opts.MinSyncInterval == 0 {
		opts.MinSyncInterval = 10 * time.Millisecond
	}
	if opts.Resync == 0 {
		opts.Resync = -1
	}
	s, err := New(opts)
	require.NoError(t, err)
	return s
}

func TestStartReturnsWithEveryKindInTheStore(t *testing.T) {
	client := fake.NewClientset(fatObjects()...)
	s, store := startSource(t, client, Options{NodeName: "node-1"})

	// No waiting: Start returned, so the whole initial state is there.
	assert.True(t, s.Synced())
	snap := store.Snapshot()
	for _, obj := range fatObjects() {
		want, err := k8sconv.Object(obj)
		require.NoError(t, err)
		got, ok := snap.Get(want.Key())
		require.True(t, ok, "%s", want.Key())
		assert.True(t, model.Equal(want, got), "%s", want.Key())
	}
	assert.Equal(t, len(fatObjects()), snap.Len())
	assert.Empty(t, s.Errors())
	assert.Equal(t, uint64(1), snap.Revision, "the initial state is one Apply")

	// The caches hold the model's own objects, not API objects.
	for _, ki := range s.kinds {
		for _, obj := range ki.informer.GetStore().List() {
			c, ok := obj.(*cached)
			require.True(t, ok, "%T in the %s cache", obj, ki.resource)
			got, _ := snap.Get(c.obj.Key())
			assert.Same(t, got, c.obj, "%s", c.obj.Key())
		}
	}
}

func TestStartBlocksUntilEveryInformerSynced(t *testing.T) {
	client := fake.NewClientset(k8stest.Pod("shop", "web-1", "n1", "10.244.1.5", nil))
	release := make(chan struct{})
	client.PrependReactor("list", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
		<-release // the services list hangs until released
		return false, nil, nil
	})
	s := newSource(t, client, Options{})
	store := model.NewStore()
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); <-s.Done() }()

	started := make(chan error, 1)
	go func() { started <- s.Start(ctx, store) }()
	select {
	case err := <-started:
		t.Fatalf("Start returned (%v) while the services informer had not synced", err)
	case <-time.After(300 * time.Millisecond):
	}
	assert.False(t, s.Synced())
	assert.Equal(t, 0, store.Snapshot().Len(), "nothing is applied before every informer synced")

	close(release)
	require.NoError(t, <-started)
	assert.True(t, s.Synced())
	assert.Contains(t, store.Snapshot().Pods, nn("shop", "web-1"))
}

func TestStartGivesUpWithCtxNamingWhatDidNotSync(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("list", "networkpolicies", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "networking.k8s.io", Resource: "networkpolicies"}, "",
			errors.New(`User "system:serviceaccount:kube-system:sluice" cannot list resource "networkpolicies"`))
	})
	s := newSource(t, client, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err := s.Start(ctx, model.NewStore())
	require.Error(t, err)
	assert.ErrorContains(t, err, "networkpolicies not synced with the API server")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorContains(t, err, "needs list and watch on networkpolicies")
	<-s.Done()
	assert.False(t, s.Synced())
}

func TestWatchErrorsAreReportedUntilRecovered(t *testing.T) {
	client := fake.NewClientset(k8stest.Pod("shop", "web-1", "n1", "10.244.1.5", nil))
	var fail atomic.Bool
	fail.Store(true)
	client.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		if fail.Load() {
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
	s := newSource(t, client, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); <-s.Done() }()
	started := make(chan error, 1)
	store := model.NewStore()
	go func() { started <- s.Start(ctx, store) }()

	require.Eventually(t, func() bool { return len(s.Errors()) > 0 }, waitFor, 10*time.Millisecond)
	var we *WatchError
	require.ErrorAs(t, s.Errors()[0], &we)
	assert.Equal(t, "pods", we.Resource)
	assert.ErrorContains(t, we, "listing/watching pods failed")
	assert.ErrorContains(t, we, "connection refused")
	assert.False(t, s.Synced())

	// The informer retries with backoff and recovers on its own.
	fail.Store(false)
	require.NoError(t, <-started)
	assert.True(t, s.Synced())
	assert.Empty(t, s.Errors(), "the failure is over once the list succeeded")
	assert.Contains(t, store.Snapshot().Pods, nn("shop", "web-1"))
}

// Once synced, an informer whose watch is closed and cannot be reopened
// because the API server refuses connections (it is down or restarting)
// retries with backoff without calling the watch error handler; the source
// must still report the outage, and clear it when a watch opens again.
func TestRefusedWatchIsReportedUntilRecovered(t *testing.T) {
	client := fake.NewClientset(k8stest.Pod("shop", "web-1", "n1", "10.244.1.5", nil))
	first := watch.NewFake()
	var refuse atomic.Bool
	var watches atomic.Int32
	client.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) {
		if watches.Add(1) == 1 {
			return true, first, nil
		}
		if refuse.Load() {
			return true, nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
		}
		return true, watch.NewFake(), nil
	})
	s, store := startSource(t, client, Options{})
	require.Empty(t, s.Errors())

	// The API server goes away: the open watch ends (after more than a
	// second, or the reflector calls it a broken watch and reports it
	// anyway), and reopening it is refused.
	refuse.Store(true)
	time.Sleep(1100 * time.Millisecond)
	first.Stop()
	require.Eventually(t, func() bool { return len(s.Errors()) > 0 }, waitFor, 10*time.Millisecond,
		"a refused watch must show in Errors")
	var we *WatchError
	require.ErrorAs(t, s.Errors()[0], &we)
	assert.Equal(t, "pods", we.Resource)
	assert.ErrorContains(t, we, "connection refused")
	assert.Contains(t, store.Snapshot().Pods, nn("shop", "web-1"), "the model keeps the last state seen")

	// It is back: the next watch opens and the error clears.
	refuse.Store(false)
	require.Eventually(t, func() bool { return len(s.Errors()) == 0 }, waitFor, 10*time.Millisecond)
	assert.GreaterOrEqual(t, watches.Load(), int32(3))
}

func TestChangesReachTheStore(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(k8stest.Node("n1", "10.244.1.0/24"))
	_, store := startSource(t, client, Options{})
	pods := client.CoreV1().Pods("shop")

	_, err := pods.Create(ctx, k8stest.Pod("shop", "web-1", "n1", "10.244.1.5", map[string]string{"app": "web"}), metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		p := store.Snapshot().Pods[nn("shop", "web-1")]
		return p != nil && p.NodeName == "n1" && p.Labels["app"] == "web"
	}, waitFor, 5*time.Millisecond)
	local := store.Snapshot().LocalPods("n1")
	require.Len(t, local, 1)
	assert.Equal(t, []netip.Addr{netip.MustParseAddr("10.244.1.5")}, local[0].IPs)
	assert.Equal(t, []model.ContainerPort{{Name: "http", Port: 8080, Protocol: model.ProtocolTCP}}, local[0].Ports)

	updated := k8stest.Pod("shop", "web-1", "n1", "10.244.1.5", map[string]string{"app": "web", "version": "v2"})
	_, err = pods.Update(ctx, updated, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		p := store.Snapshot().Pods[nn("shop", "web-1")]
		return p != nil && p.Labels["version"] == "v2"
	}, waitFor, 5*time.Millisecond)

	_, err = client.CoreV1().Services("shop").Create(ctx, k8stest.Service("shop", "web", "10.96.0.10"), metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, pods.Delete(ctx, "web-1", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		snap := store.Snapshot()
		_, hasPod := snap.Pods[nn("shop", "web-1")]
		_, hasSvc := snap.Services[nn("shop", "web")]
		return !hasPod && hasSvc
	}, waitFor, 5*time.Millisecond)

	require.NoError(t, client.CoreV1().Nodes().Delete(ctx, "n1", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { return len(store.Snapshot().Nodes) == 0 }, waitFor, 5*time.Millisecond)
}

// A burst of events becomes a few Applies, bounded by MinSyncInterval,
// rather than one model revision per event.
func TestBurstIsBatched(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	const minInterval = 200 * time.Millisecond
	_, store := startSource(t, client, Options{MinSyncInterval: minInterval})
	rev0 := store.Revision()

	const n = 60 // the fake watch buffers at most 100 events
	start := time.Now()
	for i := range n {
		p := k8stest.Pod("shop", fmt.Sprintf("web-%d", i), "n1", "10.244.1.5", nil)
		_, err := client.CoreV1().Pods("shop").Create(ctx, p, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	took := time.Since(start)
	require.Eventually(t, func() bool { return len(store.Snapshot().Pods) == n }, waitFor, 5*time.Millisecond)

	// One Apply per MinSyncInterval the burst lasted, plus the first one
	// and one for events still in flight at the end.
	limit := 2 + int(took/minInterval)
	t.Logf("%d pods k8stest.Created in %s: %d model revisions (limit %d)", n, took, store.Revision()-rev0, limit)
	assert.LessOrEqual(t, int(store.Revision()-rev0), limit, "%d events in %s", n, took)
}

func TestInvalidObjectsAreReportedAndSkipped(t *testing.T) {
	ctx := context.Background()
	badPolicy := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "bad-selector"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "app", Operator: "Matches", Values: []string{"web.*"}},
		}}},
	}
	goodPolicy := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "deny-all"},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{}},
	}
	client := fake.NewClientset(
		k8stest.Service("shop", "web", "10.96.0.10"),
		k8stest.Service("shop", "broken", "10.96.0.300"),
		badPolicy, goodPolicy,
	)
	// Full resyncs every few milliseconds: the last good version must
	// survive them as well as the incremental path.
	s, store := startSource(t, client, Options{Resync: 20 * time.Millisecond})

	snap := store.Snapshot()
	assert.Contains(t, snap.Services, nn("shop", "web"))
	assert.NotContains(t, snap.Services, nn("shop", "broken"))
	assert.Contains(t, snap.NetworkPolicies, nn("shop", "deny-all"))
	assert.NotContains(t, snap.NetworkPolicies, nn("shop", "bad-selector"))

	errs := s.Errors()
	require.Len(t, errs, 2)
	var oe *ObjectError
	require.ErrorAs(t, errs[0], &oe)
	assert.Equal(t, model.Key{Kind: model.KindService, Namespace: "shop", Name: "broken"}, oe.Object)
	assert.Equal(t, "spec.clusterIP", oe.Field)
	assert.False(t, oe.Kept)
	assert.EqualError(t, errs[0], `Service shop/broken: spec.clusterIP: invalid IP address "10.96.0.300"; ignored, not in the model`)
	require.ErrorAs(t, errs[1], &oe)
	assert.Equal(t, "spec.podSelector.matchExpressions[0].operator", oe.Field)
	assert.ErrorContains(t, errs[1], `NetworkPolicy shop/bad-selector: spec.podSelector.matchExpressions[0].operator: invalid operator "Matches"`)

	// A bad update of a good object keeps the good version in the model.
	bad := k8stest.Service("shop", "web", "10.96.0.11")
	bad.Spec.Ports[0].Protocol = "QUIC"
	_, err := client.CoreV1().Services("shop").Update(ctx, bad, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(s.Errors()) == 3 }, waitFor, 5*time.Millisecond)
	errs = s.Errors()
	require.ErrorAs(t, errs[1], &oe)
	assert.Equal(t, model.Key{Kind: model.KindService, Namespace: "shop", Name: "web"}, oe.Object)
	assert.Equal(t, "spec.ports[0].protocol", oe.Field)
	assert.True(t, oe.Kept)
	assert.ErrorContains(t, errs[1], "the model keeps its previous version")
	fulls := s.fullSyncs.Load()
	require.Eventually(t, func() bool { return s.fullSyncs.Load() >= fulls+2 }, waitFor, 5*time.Millisecond)
	web := store.Snapshot().Services[nn("shop", "web")]
	require.NotNil(t, web, "the previous version stays through full resyncs")
	assert.Equal(t, []netip.Addr{netip.MustParseAddr("10.96.0.10")}, web.ClusterIPs)

	// Fixing it applies the fix and clears the error; deleting a broken
	// object clears its error.
	_, err = client.CoreV1().Services("shop").Update(ctx, k8stest.Service("shop", "web", "10.96.0.11"), metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, client.NetworkingV1().NetworkPolicies("shop").Delete(ctx, "bad-selector", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		web := store.Snapshot().Services[nn("shop", "web")]
		return web != nil && web.ClusterIPs[0] == netip.MustParseAddr("10.96.0.11") && len(s.Errors()) == 1
	}, waitFor, 5*time.Millisecond)
	assert.ErrorContains(t, s.Errors()[0], "Service shop/broken")
}

func TestMissingNodeIsReported(t *testing.T) {
	client := fake.NewClientset(k8stest.Node("n1", "10.244.1.0/24"))
	s, _ := startSource(t, client, Options{NodeName: "n2"})
	require.Len(t, s.Errors(), 1)
	assert.ErrorContains(t, s.Errors()[0], `this node "n2" is not among the cluster's 1 nodes`)

	_, err := client.CoreV1().Nodes().Create(context.Background(), k8stest.Node("n2", "10.244.2.0/24"), metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(s.Errors()) == 0 }, waitFor, 5*time.Millisecond)
}

// From API objects to what the load balancer programs, through the real
// informers, the model and the service computation.
func TestServiceComputationFromTheAPI(t *testing.T) {
	ctx := context.Background()
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: "web-abcde", Labels: map[string]string{"kubernetes.io/service-name": "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: k8stest.Ptr("http"), Protocol: k8stest.Ptr(corev1.ProtocolTCP), Port: k8stest.Ptr(int32(8080))}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.244.1.5"}, NodeName: k8stest.Ptr("n1"), TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "web-1"}},
			{Addresses: []string{"10.244.2.5"}, NodeName: k8stest.Ptr("n2"), TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "web-2"}},
		},
	}
	client := fake.NewClientset(
		k8stest.Node("n1", "10.244.1.0/24"), k8stest.Node("n2", "10.244.2.0/24"),
		k8stest.Pod("shop", "web-1", "n1", "10.244.1.5", map[string]string{"app": "web"}),
		k8stest.Pod("shop", "web-2", "n2", "10.244.2.5", map[string]string{"app": "web"}),
		k8stest.Service("shop", "web", "10.96.0.10"), slice,
	)
	_, store := startSource(t, client, Options{NodeName: "n1"})

	local := store.Snapshot().LocalPods("n1")
	require.Len(t, local, 1)
	assert.Equal(t, "web-1", local[0].Name)

	backends := func() []string {
		opts := service.Options{NodeName: "n1"}
		opts.Defaults()
		d := service.Compute(store.Snapshot(), opts)
		var out []string
		for _, f := range d.Frontends {
			if f.Address != netip.MustParseAddr("10.96.0.10") || f.Port != 80 {
				continue
			}
			for _, b := range f.Backends {
				if b.State == service.BackendActive {
					out = append(out, netip.AddrPortFrom(b.Address, b.Port).String())
				}
			}
		}
		return out
	}
	assert.Equal(t, []string{"10.244.1.5:8080", "10.244.2.5:8080"}, backends())

	// web-2 goes away: the endpoint slice controller drops it.
	slice = slice.DeepCopy()
	slice.Endpoints = slice.Endpoints[:1]
	_, err := client.DiscoveryV1().EndpointSlices("shop").Update(ctx, slice, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(backends()) == 1 }, waitFor, 5*time.Millisecond)
	assert.Equal(t, []string{"10.244.1.5:8080"}, backends())
}
