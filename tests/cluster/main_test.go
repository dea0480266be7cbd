package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/api"
)

func TestMain(m *testing.M) {
	harness.RunWorkloadIfRequested()
	stopOnSignal()
	removeStaleImages()
	harness.MainThen(m, func() {
		if images.path != "" {
			os.RemoveAll(filepath.Dir(images.path))
		}
	})
}

// stopOnSignal removes this process's clusters when the tests are
// interrupted (Ctrl-C on make test-cluster, a CI timeout's SIGTERM), half
// started ones included, and exits, so an interrupted run leaves nothing
// behind; a SIGKILLed one is removed by the next run
// (harness.CleanupStale in TestMain).
func stopOnSignal() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "tests/cluster: %s: removing the clusters\n", s)
		if err := harness.CleanupOwnRuns(); err != nil {
			fmt.Fprintf(os.Stderr, "tests/cluster: %v\n", err)
		}
		if images.path != "" {
			os.RemoveAll(filepath.Dir(images.path))
		}
		os.Exit(2)
	}()
}

// errNotYet is what a WaitFor condition returns while the state it waits
// for has not come.
var errNotYet = errors.New("not yet")

// EnvRun makes the tests run (`make test-cluster` sets it). Without it they
// skip: a cluster takes minutes and `make test` would start it again after
// CI's own step; with it, what they need missing is a failure.
const EnvRun = "SLUICE_CLUSTER_TESTS"

// repoRoot is the checkout, relative to this package.
const repoRoot = "../.."

// requireCluster returns the binaries, or skips the test saying how to run
// it (fails when EnvRun is set and something is missing).
func requireCluster(t *testing.T) Binaries {
	t.Helper()
	if os.Getenv(EnvRun) == "" {
		t.Skipf("the one-node cluster tests run with `make test-cluster` (root; %s=1), which builds the Kubernetes binaries first", EnvRun)
	}
	harness.RequireRoot(t)
	harness.RequireCgroup2(t)
	harness.RequireBPFFS(t)
	harness.RequireTools(t)
	for _, tool := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("needs %s in PATH (apt-get install containerd runc containernetworking-plugins busybox-static iptables): %v", tool, err)
		}
	}
	if _, err := findCNIPlugin("bridge"); err != nil {
		t.Fatal(err)
	}
	b, err := LocateBinaries()
	require.NoError(t, err)
	return b
}

// imagesDirPrefix starts the temporary directories of the images, followed
// by the test process's pid.
const imagesDirPrefix = "sluice-cluster-images-"

// removeStaleImages removes image directories of test processes that are
// gone (killed before their TestMain could).
func removeStaleImages() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), imagesDirPrefix+"*"))
	for _, d := range dirs {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), imagesDirPrefix), "-")
		if _, err := os.Stat("/proc/" + pid); err != nil {
			os.RemoveAll(d)
		}
	}
}

var images struct {
	once sync.Once
	path string
	err  error
}

// buildImages builds the images once per test process, in a directory
// TestMain removes at its end.
func buildImages(t *testing.T) string {
	t.Helper()
	images.once.Do(func() {
		dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", imagesDirPrefix, os.Getpid()))
		if err != nil {
			images.err = err
			return
		}
		start := time.Now()
		images.path, images.err = BuildImages(context.Background(), repoRoot, dir)
		t.Logf("images built in %s", time.Since(start).Round(time.Millisecond))
	})
	require.NoError(t, images.err)
	return images.path
}

// startCluster starts a one-node cluster for the test and removes it when
// the test ends, with the logs' tails when it failed.
func startCluster(t *testing.T, kubeProxy bool) *Cluster {
	t.Helper()
	b := requireCluster(t)
	imgs := buildImages(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Binaries: b, KubeProxy: kubeProxy, Images: imgs, Logf: t.Logf})
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range []string{"kubelet", "containerd"} {
				t.Logf("%s log tail:\n%s", name, c.tail(name, 25))
			}
			out, _ := c.Kubectl(context.Background(), "get", "pods", "-A", "-o", "wide")
			t.Logf("pods:\n%s", out)
			out, _ = c.Kubectl(context.Background(), "-n", "sluice-system", "logs", "ds/sluice", "-c", "agent", "--tail=40")
			t.Logf("agent log tail:\n%s", out)
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stopping the cluster: %v", err)
		}
	})
	return c
}

// kubectl runs kubectl on the node and fails the test on error.
func kubectl(t *testing.T, c *Cluster, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := c.Kubectl(ctx, args...)
	require.NoError(t, err)
	return out
}

// apply pipes YAML into kubectl apply.
func apply(t *testing.T, c *Cluster, yaml string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := c.KubectlStdin(ctx, []byte(yaml), "apply", "-f", "-")
	require.NoError(t, err)
}

// install applies the DaemonSet through the run's overlay and waits for
// the rollout as a user does; it returns the overlay and the time to Ready.
func install(t *testing.T, c *Cluster, apiServer string) (string, time.Duration) {
	t.Helper()
	overlay, err := c.WriteOverlay(filepath.Join(c.Dir, "overlay"), repoRoot, apiServer)
	require.NoError(t, err)
	start := time.Now()
	kubectl(t, c, "apply", "-k", overlay)
	kubectl(t, c, "-n", "sluice-system", "rollout", "status", "ds/sluice", "--timeout=4m")
	took := time.Since(start)
	t.Logf("kubectl apply -k → DaemonSet rolled out, its pod Ready through its probes: %s", took.Round(time.Millisecond))
	return overlay, took
}

// agentStatus is `sluice status -o json` in the agent's container.
func agentStatus(t *testing.T, c *Cluster) api.Status {
	t.Helper()
	out := kubectl(t, c, "-n", "sluice-system", "exec", "ds/sluice", "-c", "agent", "--", "sluice", "status", "-o", "json")
	var st api.Status
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	return st
}

// sluice runs the sluice CLI in the agent's container.
func sluice(t *testing.T, c *Cluster, args ...string) string {
	t.Helper()
	return kubectl(t, c, append([]string{"-n", "sluice-system", "exec", "ds/sluice", "-c", "agent", "--", "sluice"}, args...)...)
}

// webYAML is a Deployment of two echo servers behind a ClusterIP Service
// (port 80 → 8080) and an idle client pod to exec requests from.
const webYAML = `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: web
          image: ` + WorkloadImage + `
          imagePullPolicy: Never
          args: [serve, "8080"]
          ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: default
  labels: {app: client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: client
      image: ` + WorkloadImage + `
      imagePullPolicy: Never
      args: [pause]
`

// deployWeb applies webYAML, waits for it and returns the Service's
// ClusterIP.
func deployWeb(t *testing.T, c *Cluster) string {
	t.Helper()
	apply(t, c, webYAML)
	kubectl(t, c, "rollout", "status", "deployment/web", "--timeout=3m")
	kubectl(t, c, "wait", "--for=condition=Ready", "pod/client", "--timeout=3m")
	vip := strings.TrimSpace(kubectl(t, c, "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"))
	// Ready pods reach the agent through the EndpointSlice controller a
	// moment later; until then the ClusterIP has no backend and refuses
	// connections, as kube-proxy's REJECT does. Wait for the agent.
	waitServiceBackends(t, c, "default", "web", vip, 2)
	return vip
}

// waitServiceBackends waits until the agent has programmed the Service's
// ClusterIP frontend with n active backends.
func waitServiceBackends(t *testing.T, c *Cluster, namespace, name, vip string, n int) {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	defer func() {
		t.Logf("%s/%s programmed with %d backends after %s", namespace, name, n, time.Since(start).Round(time.Millisecond))
	}()
	err := c.WaitFor(ctx, time.Minute, func() error {
		out, err := c.Kubectl(ctx, "-n", "sluice-system", "exec", "ds/sluice", "-c", "agent", "--",
			"sluice", "service", "list", "-o", "json")
		if err != nil {
			return err
		}
		var svcs api.Services
		if err := json.Unmarshal([]byte(out), &svcs); err != nil {
			return fmt.Errorf("sluice service list -o json: %w", err)
		}
		for _, f := range svcs.Frontends {
			if f.Service.Namespace != namespace || f.Service.Name != name || f.Address.String() != vip {
				continue
			}
			active := 0
			for _, b := range f.Backends {
				if b.State == api.BackendActive {
					active++
				}
			}
			if active >= n {
				return nil
			}
			return fmt.Errorf("%s/%s %s has %d active backends, want %d: %w", namespace, name, f.Key(), active, n, errNotYet)
		}
		return fmt.Errorf("%s/%s %s is not programmed: %w", namespace, name, vip, errNotYet)
	})
	require.NoError(t, err)
}

// request sends one line from the client pod to addr and returns the
// answer ("<server pod> <line>").
func request(c *Cluster, addr, line string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := c.Kubectl(ctx, "exec", "client", "--", "/workload", "request", addr, line)
	return strings.TrimSpace(out), err
}

// requireWebAnswers checks that addr answers from a web pod.
func requireWebAnswers(t *testing.T, c *Cluster, addr string) {
	t.Helper()
	ans, err := request(c, addr, "hello")
	require.NoError(t, err, "request to %s from the client pod", addr)
	require.Regexp(t, `^web-\S+ hello$`, ans)
}

// podLogs waits for a pod that runs to completion and returns its phase
// and logs.
func podLogs(t *testing.T, c *Cluster, name string) (string, string) {
	t.Helper()
	var phase string
	ctx := context.Background()
	err := c.WaitFor(ctx, 2*time.Minute, func() error {
		out, err := c.Kubectl(ctx, "get", "pod", name, "-o", "jsonpath={.status.phase}")
		phase = strings.TrimSpace(out)
		if err == nil && phase != "Succeeded" && phase != "Failed" {
			err = fmt.Errorf("pod %s is %q", name, phase)
		}
		return err
	})
	require.NoError(t, err)
	logs, _ := c.Kubectl(ctx, "logs", name)
	return phase, strings.TrimSpace(logs)
}
