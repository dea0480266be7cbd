package apiserver

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/internal/testing/testutil"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/source/k8s"
)

func TestMain(m *testing.M) { harness.Main(m) }

// EnvRequired, when set, makes missing binaries a failure instead of a
// skip (`make test-apiserver` sets it); so does CI when runInCI is true.
const EnvRequired = "SLUICE_APISERVER_REQUIRED"

// runInCI says that CI (.ci/run) builds the binaries (make apiserver-bins)
// and runs these tests, so a CI run without them fails rather than skips.
const runInCI = true

// waitFor bounds how long a change may take to reach the store or the maps.
// A watch event arrives in milliseconds; the bound is for a loaded machine.
const waitFor = 20 * time.Second

// requireBinaries returns kube-apiserver and etcd, or skips the test naming
// how to get them (fails where they are required).
func requireBinaries(t *testing.T) Binaries {
	t.Helper()
	b, err := LocateBinaries()
	if err == nil {
		return b
	}
	if os.Getenv(EnvRequired) != "" || (runInCI && testutil.InCI()) {
		t.Fatalf("%v", err)
	}
	t.Skipf("%v", err)
	return b
}

// startControlPlane starts etcd and a kube-apiserver for the test, with
// Sluice's CRD installed as on a cluster the DaemonSet was applied to, and
// stops them when it ends.
func startControlPlane(t *testing.T, args ...string) *ControlPlane {
	t.Helper()
	cp := startBareControlPlane(t, args...)
	installCRD(t, dynamicClient(t, cp.APIServer.AdminKubeconfig))
	return cp
}

// startBareControlPlane is startControlPlane without Sluice's CRD.
func startBareControlPlane(t *testing.T, args ...string) *ControlPlane {
	t.Helper()
	b := requireBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, err := Start(ctx, Options{Binaries: b, Dir: t.TempDir(), Logf: t.Logf, APIServerArgs: args})
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kube-apiserver log tail:\n%s", cp.APIServer.LogTail(40))
		}
		if err := cp.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	return cp
}

// adminClient is a client of the API server as the admin, for the test's
// writes: protobuf and no client-side rate limit, like a busy controller.
func adminClient(t *testing.T, kubeconfig string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	require.NoError(t, err)
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.QPS, cfg.Burst = -1, 0
	c, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	return c
}

// startSource runs the agent's Kubernetes source against the API server of
// kubeconfig, with the agent's own client (k8s.NewClient), until the test
// ends. Zero MinSyncInterval and Resync in opts are shortened for tests of
// behaviour; measurements set them.
func startSource(t *testing.T, kubeconfig string, opts k8s.Options) (*k8s.Source, *model.Store) {
	t.Helper()
	client, err := k8s.NewClient(kubeconfig)
	require.NoError(t, err)
	opts.Client = client
	if opts.MinSyncInterval == 0 {
		opts.MinSyncInterval = 10 * time.Millisecond
	}
	if opts.Resync == 0 {
		opts.Resync = -1
	}
	s, err := k8s.New(opts)
	require.NoError(t, err)
	store := model.NewStore()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); <-s.Done() })
	// Start's ctx is also the source's lifetime: bound the wait apart.
	started := make(chan error, 1)
	go func() { started <- s.Start(ctx, store) }()
	select {
	case err := <-started:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatalf("the source did not sync within a minute: %s", sourceErrors(s))
	}
	return s, store
}

// forCreate clears what the API server sets itself and refuses in a
// create (resourceVersion) or would ignore (UID, creation time, managed
// fields), so that the k8stest builders' objects can be created.
func forCreate(m metav1.Object) {
	m.SetUID("")
	m.SetResourceVersion("")
	m.SetCreationTimestamp(metav1.Time{})
	m.SetManagedFields(nil)
}

// createPod creates p and then sets its status as the kubelet would (the
// API server ignores status in a create): phase, pod IPs, host IP.
func createPod(ctx context.Context, c kubernetes.Interface, p *corev1.Pod) error {
	p = p.DeepCopy()
	status := p.Status
	if status.PodIP != "" && len(status.PodIPs) == 0 {
		status.PodIPs = []corev1.PodIP{{IP: status.PodIP}}
	}
	forCreate(p)
	got, err := c.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	got.Status = status
	if _, err := c.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting the status of pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// createNode creates n and then its status (addresses), as the kubelet does.
func createNode(ctx context.Context, c kubernetes.Interface, n *corev1.Node) error {
	n = n.DeepCopy()
	status := n.Status
	forCreate(n)
	got, err := c.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating node %s: %w", n.Name, err)
	}
	if len(status.Addresses) == 0 {
		return nil
	}
	got.Status = status
	if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting the status of node %s: %w", n.Name, err)
	}
	return nil
}

func createNamespace(ctx context.Context, c kubernetes.Interface, name string, labels map[string]string) error {
	_, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

// sourceErrors is the source's Errors as one string, for messages.
func sourceErrors(s *k8s.Source) string {
	var out []string
	for _, e := range s.Errors() {
		out = append(out, e.Error())
	}
	return strings.Join(out, "\n")
}
