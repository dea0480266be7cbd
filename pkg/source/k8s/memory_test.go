package k8s

import (
	"context"
	"encoding/json"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/sluice-net/sluice/internal/testing/k8stest"
	"github.com/sluice-net/sluice/pkg/model"
)

// newDecodingClientset is a fake clientset whose lists are decoded from
// JSON, as a real client's are from the wire. Without that, the informers'
// copies would share every string with the fake's own objects and the full
// objects would look almost free.
func newDecodingClientset(objs []k8sruntime.Object) *fake.Clientset {
	client := fake.NewSimpleClientset(objs...)
	react := k8stesting.ObjectReaction(client.Tracker())
	client.PrependReactor("list", "*", func(action k8stesting.Action) (bool, k8sruntime.Object, error) {
		handled, obj, err := react(action)
		if err != nil || !handled {
			return handled, obj, err
		}
		data, err := json.Marshal(obj)
		if err != nil {
			return true, nil, err
		}
		fresh := reflect.New(reflect.TypeOf(obj).Elem()).Interface().(k8sruntime.Object)
		return true, fresh, json.Unmarshal(data, fresh)
	})
	return client
}

// liveHeap is the heap in use by live objects: HeapAlloc right after a
// collection. (HeapInuse would count whole spans, and after the first
// measurement frees its caches the partly used spans blur the next one.)
func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

type heapFigures struct {
	caches, model uint64 // bytes
	start         time.Duration
}

// measureHeap starts a source on a fresh fake cluster, and returns the heap
// its informer caches and the model take once synced. The caches are what
// is freed when the source stops; the model is what stays with the store.
func measureHeap(tb testing.TB, objs []k8sruntime.Object, transform bool) heapFigures {
	client := newDecodingClientset(objs)
	store := model.NewStore()
	base := liveHeap()

	s, err := New(Options{Client: k8stest.Clientset(client), Resync: -1})
	require.NoError(tb, err)
	if !transform {
		s.transform = nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	t0 := time.Now()
	require.NoError(tb, s.Start(ctx, store))
	took := time.Since(t0)
	require.Equal(tb, len(objs), store.Snapshot().Len())
	synced := liveHeap()

	cancel()
	<-s.Done()
	s = nil // drop the caches before measuring
	after := liveHeap()
	runtime.KeepAlive(store)
	runtime.KeepAlive(client)
	runtime.KeepAlive(objs) // the caller may not use them after this call
	return heapFigures{caches: synced - min(synced, after), model: after - min(after, base), start: took}
}

// BenchmarkInformerHeap reports the heap the informer caches take at
// 10,000 pods, 5,000 services, 5,000 endpoint slices, 5,000 network
// policies, 100 nodes and 100 namespaces, with the full objects and with
// the transform (which caches the model's objects, so what the caches
// add is a few words per object), and the heap of the model built from
// them:
//
//	go test -run '^$' -bench InformerHeap -benchtime 1x ./pkg/source/k8s/
func BenchmarkInformerHeap(b *testing.B) {
	objs := k8stest.Cluster(10_000)
	var full, converted heapFigures
	for b.Loop() {
		full = measureHeap(b, objs, false)
		converted = measureHeap(b, objs, true)
	}
	const mib = 1 << 20
	b.ReportMetric(float64(full.caches)/mib, "MiB-caches-full")
	b.ReportMetric(float64(converted.caches)/mib, "MiB-caches-converted")
	b.ReportMetric(float64(converted.caches)/float64(full.caches), "converted/full")
	b.ReportMetric(float64(converted.model)/mib, "MiB-model")
	b.ReportMetric(converted.start.Seconds(), "s-start-converted")
	b.ReportMetric(full.start.Seconds(), "s-start-full")
}

// The transform must keep paying for itself: a regression that caches API
// objects again shows here at a small scale.
func TestTransformSavesMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a cluster of 2,000 pods twice")
	}
	objs := k8stest.Cluster(2_000)
	full := measureHeap(t, objs, false)
	converted := measureHeap(t, objs, true)
	t.Logf("informer caches at 2,000 pods: full objects %.1f MiB, converted %.1f MiB; model %.1f MiB",
		float64(full.caches)/(1<<20), float64(converted.caches)/(1<<20), float64(converted.model)/(1<<20))
	require.Less(t, converted.caches, full.caches/10, "caching the model's objects should take less than a tenth of the heap of the full objects")
}
