package apiserver

// Measurements against the real API server (`make bench-apiserver` runs
// them at full size; `make test-apiserver` runs the latency one small).
// They log their figures; timing never decides whether they pass.

import (
	"bufio"
	"cmp"
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"

	"github.com/sluice-net/sluice/internal/testing/datapathtest"
	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/internal/testing/k8stest"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/source/k8s"
)

var (
	latencyChanges = flag.Int("apiserver.changes", 30, "EndpointSlice changes timed by TestSliceToMapLatency")
	rssPods        = flag.Int("apiserver.rss-pods", 200, "TestAgentRSS's pods (and half as many services, slices and policies): 200 checks a real agent against the real API server in every run; make bench-apiserver measures 10000")
	rssProfile     = flag.String("apiserver.profile", "", "directory where TestAgentRSS saves the agent's heap profile when ready and 10s later (for go tool pprof -sample_index=inuse_space); the forced GC of a profile changes the figures after it")
)

const agentPkg = "github.com/sluice-net/sluice/cmd/sluice-agent"

// quantile is the q-quantile of sorted durations (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// TestSliceToMapLatency times EndpointSlice changes from the API write
// returning to sl_lb_svc holding the new backend, with the agent's
// defaults: the source's batching (a change after a quiet period waits
// batchDelay, 20ms, for the rest of its burst) and the service
// reconciler's MinInterval (100ms). Changes are spaced by more than the
// source's MinSyncInterval, so each one is timed as a lone change, not
// as part of a burst.
func TestSliceToMapLatency(t *testing.T) {
	cp := startControlPlane(t)
	admin := adminClient(t, cp.APIServer.AdminKubeconfig)
	ctx := context.Background()
	createShop(t, admin)
	m := datapathtest.Load(t, datapath.Config{}).Maps()
	_, store := startSource(t, cp.APIServer.AdminKubeconfig, k8s.Options{
		NodeName: "node-1", MinSyncInterval: k8s.DefaultMinSyncInterval, Resync: k8s.DefaultResync,
	})
	k8stest.Reconcilers(t, m, store, "node-1", k8stest.ReconcilerOptions{})
	vip := netip.MustParseAddr("10.96.0.10")
	require.Eventually(t, func() bool { return len(k8stest.Backends(t, m, vip)) == 2 }, waitFor, 20*time.Millisecond)

	n := *latencyChanges
	toModel := make([]time.Duration, 0, n) // the watch and the source
	toMap := make([]time.Duration, 0, n)   // ... and the reconciler
	eps := admin.DiscoveryV1().EndpointSlices("shop")
	slice := model.NamespacedName{Namespace: "shop", Name: "web-x1"}
	for i := range n {
		time.Sleep(k8s.DefaultMinSyncInterval + 100*time.Millisecond)
		backend := netip.AddrFrom4([4]byte{10, 244, 3, byte(i%250 + 1)})
		want := netip.AddrPortFrom(backend, 8080)
		_, err := eps.Update(ctx, k8stest.Slice("shop", "web", "10.244.1.5", backend.String()), metav1.UpdateOptions{})
		require.NoError(t, err)
		written := time.Now()
		var inModel time.Duration
		for !slices.Contains(k8stest.Backends(t, m, vip), want) {
			if inModel == 0 && sliceHas(store, slice, backend) {
				inModel = time.Since(written)
			}
			if time.Since(written) > waitFor {
				t.Fatalf("change %d: %s not in sl_lb_svc after %s", i, want, waitFor)
			}
			time.Sleep(500 * time.Microsecond)
		}
		took := time.Since(written)
		toModel = append(toModel, cmp.Or(inModel, took))
		toMap = append(toMap, took)
	}
	t.Logf("EndpointSlice change via a real kube-apiserver %s, %d changes: API write returned → sl_lb_svc holds the backend: %s; → the model has it: %s",
		KubernetesVersion, n, summary(toMap), summary(toModel))
}

// sliceHas reports whether the store's endpoint slice holds addr.
func sliceHas(store *model.Store, slice model.NamespacedName, addr netip.Addr) bool {
	es := store.Snapshot().EndpointSlices[slice]
	if es == nil {
		return false
	}
	for _, e := range es.Endpoints {
		if slices.Contains(e.Addresses, addr) {
			return true
		}
	}
	return false
}

// summary is "median M, p90 P (min-max)" of durations.
func summary(d []time.Duration) string {
	s := slices.Clone(d)
	slices.Sort(s)
	r := func(d time.Duration) time.Duration { return d.Round(100 * time.Microsecond) }
	return fmt.Sprintf("median %s, p90 %s (min %s, max %s)", r(quantile(s, 0.5)), r(quantile(s, 0.9)), r(s[0]), r(s[len(s)-1]))
}

// TestAgentRSS measures a real sluice-agent (--source=kubernetes) on a
// simulated node, with a cluster of -apiserver.rss-pods pods (k8stest.Cluster:
// the Fat* objects BenchmarkInformerHeap measures with the fake clientset)
// created in the real API server before the agent starts, so that it lists
// them all at once, as after a restart. It reports VmRSS and VmHWM when the
// agent is ready with every service programmed, and again after settling.
//
//	go test ./tests/apiserver -run AgentRSS -v -args -apiserver.rss-pods=10000
//
// The agent runs in the node's network namespace, whose loopback cannot
// reach the API server's: the test listens on the node's loopback and
// forwards each connection to the API server (TLS passes through).
func TestAgentRSS(t *testing.T) {
	pods := max(*rssPods, 2)
	cp := startControlPlane(t)
	admin := adminClient(t, cp.APIServer.AdminKubeconfig)
	ctx := context.Background()
	bin := harness.BuildBinary(t, agentPkg)
	c := harness.NewTestCluster(t, harness.Options{Name: "apisrv"})
	node, err := c.AddNode(ctx, "node1", harness.Routed)
	require.NoError(t, err)

	objs := k8stest.Cluster(pods)
	objs = append(objs, k8stest.Node(node.Name, "10.244.10.0/24"))
	start := time.Now()
	writes, err := createAll(ctx, admin, objs)
	require.NoError(t, err)
	created := time.Since(start)
	t.Logf("created %d objects (%d writes) in %s: %.0f writes/s", len(objs), writes, created.Round(time.Millisecond), float64(writes)/created.Seconds())

	fwd := forwardFromNetns(t, node.NetnsPath, cp.APIServer.port)
	kubeconfig := filepath.Join(t.TempDir(), "agent.kubeconfig")
	require.NoError(t, cp.writeKubeconfig(kubeconfig, fmt.Sprintf("https://%s", fwd), AdminUser,
		fmt.Sprintf("client-certificate: %s\n    client-key: %s", cp.pki.AdminCert, cp.pki.AdminKey)))

	services := pods / 2
	wantFrontends := 2*services + 1 // two ports each, and the API server's own
	agentStart := time.Now()
	wrapper, err := harness.GCTraceWrapper(t.TempDir(), bin)
	require.NoError(t, err)
	args := []string{"--source=kubernetes", "--kubeconfig=" + kubeconfig, "--log-level=info"}
	if *rssProfile != "" {
		require.NoError(t, os.MkdirAll(*rssProfile, 0o755))
		args = append(args, "--pprof-address="+rssPprofAddress)
	}
	a, err := node.StartAgent(wrapper, args...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Stop() })
	require.NoError(t, a.WaitExec(10*time.Second))

	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	for {
		st, err := node.AgentStatus(wctx)
		if err == nil && st.Ready && st.Services.Frontends >= wantFrontends {
			t.Logf("agent ready %s after start: %d frontends, %d backends, %d errors", time.Since(agentStart).Round(time.Millisecond),
				st.Services.Frontends, st.Services.Backends, len(st.Errors))
			break
		}
		select {
		case <-a.Done():
			t.Fatalf("agent exited: %v\n%s", a.ExitErr(), a.Logs())
		case <-wctx.Done():
			t.Fatalf("agent not ready with %d frontends (last %+v, %v); log:\n%s", wantFrontends, st, err, a.Logs())
		case <-time.After(100 * time.Millisecond):
		}
	}
	ready, err := harness.ReadProcMem(a.Pid())
	require.NoError(t, err)
	bpf, err := harness.ReadBPFMem(a.Pid())
	require.NoError(t, err)
	saveHeapProfile(t, node.NetnsPath, "ready")
	time.Sleep(10 * time.Second)
	settled, err := harness.ReadProcMem(a.Pid())
	require.NoError(t, err)
	saveHeapProfile(t, node.NetnsPath, "settled")
	mib := func(kib int64) string { return fmt.Sprintf("%.0f MiB", float64(kib)/1024) }
	t.Logf("sluice-agent with %d pods, %d services, %d endpoint slices, %d policies, %d nodes from a real kube-apiserver: "+
		"ready: VmRSS %s (anon %s), VmHWM %s; after 10s: VmRSS %s (anon %s), VmHWM %s",
		pods, services, services, services, (pods+99)/100+1,
		mib(ready.VmRSS), mib(ready.RssAnon), mib(ready.VmHWM), mib(settled.VmRSS), mib(settled.RssAnon), mib(settled.VmHWM))
	t.Logf("kernel memory of the agent's BPF objects (memlock, not in its RSS): maps %.1f MiB (%d maps), programs %.1f MiB (%d programs)",
		float64(bpf.MapBytes)/(1<<20), len(bpf.Maps), float64(bpf.ProgBytes)/(1<<20), bpf.Progs)
	// What of it is the Go heap: live after the last GC, from the
	// runtime's trace, and the heap now, from the agent's own metrics.
	gc := harness.ParseGCTrace(a.Logs())
	t.Logf("agent Go heap (gctrace): %d GCs, live after the last %d MB, goal %d MB, largest heap a GC started at %d MB",
		gc.GCs, gc.LiveMB, gc.GoalMB, gc.PeakMB)
	if ms, err := goMemStats(node.NetnsPath, "127.0.0.1:9962"); err != nil {
		t.Logf("agent metrics: %v", err)
	} else {
		b := func(name string) string { return fmt.Sprintf("%.0f MiB", ms[name]/(1<<20)) }
		t.Logf("agent Go heap (metrics): alloc %s, in use %s, idle %s (released %s), next GC at %s; runtime sys %s",
			b("go_memstats_heap_alloc_bytes"), b("go_memstats_heap_inuse_bytes"), b("go_memstats_heap_idle_bytes"),
			b("go_memstats_heap_released_bytes"), b("go_memstats_next_gc_bytes"), b("go_memstats_sys_bytes"))
	}
	for name, pid := range map[string]int{"kube-apiserver": cp.APIServer.Pid(), "etcd": cp.etcd.Pid()} {
		if pm, err := harness.ReadProcMem(pid); err == nil {
			t.Logf("%s: VmRSS %s, VmHWM %s", name, mib(pm.VmRSS), mib(pm.VmHWM))
		}
	}
}

// rssPprofAddress is where TestAgentRSS's agent serves profiles with
// -apiserver.profile, in its node's network namespace.
const rssPprofAddress = "127.0.0.1:6061"

// saveHeapProfile saves the agent's heap profile as
// <-apiserver.profile>/heap-apiserver-<when>.pb.gz, if asked to.
func saveHeapProfile(t *testing.T, nsPath, when string) {
	if *rssProfile == "" {
		return
	}
	// gc=1: the in-use figures are of live objects, as after a GC.
	body, err := harness.NetnsGet(context.Background(), nsPath, "http://"+rssPprofAddress+"/debug/pprof/heap?gc=1")
	if err != nil {
		t.Logf("heap profile: %v", err)
		return
	}
	path := filepath.Join(*rssProfile, "heap-apiserver-"+when+".pb.gz")
	require.NoError(t, os.WriteFile(path, body, 0o644))
	t.Logf("heap profile saved: %s", path)
}

// createAll creates objs through the API with several concurrent writers:
// namespaces and nodes first, then the rest; pods and nodes get their
// status as the kubelet would set it. Services get ClusterIPs from the API
// server's allocator (the Fat* addresses would collide with its own
// 10.96.0.1) and the default load-balancing algorithm. It returns the
// number of writes.
func createAll(ctx context.Context, c kubernetes.Interface, objs []k8sruntime.Object) (int64, error) {
	var writes atomic.Int64
	create := func(obj k8sruntime.Object) error {
		switch o := obj.(type) {
		case *corev1.Namespace:
			o = o.DeepCopy()
			forCreate(o)
			writes.Add(1)
			_, err := c.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
			return err
		case *corev1.Node:
			writes.Add(2)
			return createNode(ctx, c, o)
		case *corev1.Pod:
			writes.Add(2)
			return createPod(ctx, c, o)
		case *corev1.Service:
			o = o.DeepCopy()
			forCreate(o)
			o.Spec.ClusterIP, o.Spec.ClusterIPs = "", nil
			delete(o.Annotations, "sluice.io/lb-algorithm")
			writes.Add(1)
			_, err := c.CoreV1().Services(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			return err
		case *discoveryv1.EndpointSlice:
			o = o.DeepCopy()
			forCreate(o)
			writes.Add(1)
			_, err := c.DiscoveryV1().EndpointSlices(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			return err
		case *networkingv1.NetworkPolicy:
			o = o.DeepCopy()
			forCreate(o)
			writes.Add(1)
			_, err := c.NetworkingV1().NetworkPolicies(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			return err
		}
		return fmt.Errorf("cannot create %T", obj)
	}
	var first, rest []k8sruntime.Object
	for _, o := range objs {
		switch o.(type) {
		case *corev1.Namespace, *corev1.Node:
			first = append(first, o)
		default:
			rest = append(rest, o)
		}
	}
	for _, batch := range [][]k8sruntime.Object{first, rest} {
		if err := parallel(ctx, 4*runtime.NumCPU(), batch, create); err != nil {
			return writes.Load(), err
		}
	}
	return writes.Load(), nil
}

// parallel runs f on every item with n workers and returns the first error.
func parallel[T any](ctx context.Context, n int, items []T, f func(T) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ch := make(chan T)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range ch {
				if err := f(it); err != nil {
					cancel(err)
				}
			}
		}()
	}
	for _, it := range items {
		select {
		case ch <- it:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(ch)
	wg.Wait()
	return context.Cause(ctx)
}

// forwardFromNetns listens on 127.0.0.1 inside the network namespace at
// nsPath and forwards every connection to 127.0.0.1:port of the test's own
// namespace, until the test ends. It returns the address listened on.
func forwardFromNetns(t *testing.T, nsPath string, port int) string {
	t.Helper()
	l, err := listenInNetns(nsPath)
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				in.Close()
				continue
			}
			wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer wg.Done()
				_, _ = dst.(*net.TCPConn).ReadFrom(src)
				_ = dst.(*net.TCPConn).CloseWrite()
			}
			go pipe(out, in)
			go func() { pipe(in, out); in.Close(); out.Close() }()
		}
	}()
	return l.Addr().String()
}

// listenInNetns opens a TCP listener on the loopback of the network
// namespace at nsPath.
func listenInNetns(nsPath string) (net.Listener, error) {
	return inNetns(nsPath, func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") })
}

// inNetns runs f, which creates a socket, in the network namespace at
// nsPath: a socket belongs to the namespace of the thread that created it,
// so f runs on a locked thread switched there and back.
func inNetns[T any](nsPath string, f func() (T, error)) (T, error) {
	var zero T
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return zero, err
	}
	defer orig.Close()
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		runtime.UnlockOSThread()
		return zero, err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return zero, err
	}
	v, ferr := f()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: it dies with this goroutine rather
		// than run other goroutines in the wrong namespace.
		return zero, fmt.Errorf("returning to the test's network namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return v, ferr
}

// goMemStats scrapes the go_memstats_* gauges of the agent's /metrics at
// addr inside the network namespace at nsPath.
func goMemStats(nsPath, addr string) (map[string]float64, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			return inNetns(nsPath, func() (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, network, address) })
		},
	}}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && strings.HasPrefix(f[0], "go_memstats_") {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				out[f[0]] = v
			}
		}
	}
	return out, sc.Err()
}
