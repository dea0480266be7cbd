package cluster

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/tests/cluster/workload/stream"
)

// TestDaemonSetOnOneNodeCluster installs the DaemonSet on a one-node
// cluster with kube-proxy, as a user would, and checks what a user checks
// next: the pod Ready through its own probes, `sluice status`, sluice-cni in
// the runtime's CNI configuration with new pods policed from their first
// packet, a Service reached through its ClusterIP (socket LB, then the
// per-packet path after a settings change), a NetworkPolicy applied with
// kubectl and its drops in `sluice observe`, and metrics scraped where the
// pod's annotations say.
func TestDaemonSetOnOneNodeCluster(t *testing.T) {
	c := startCluster(t, true)
	install(t, c, "")

	st := agentStatus(t, c)
	require.True(t, st.Ready, "sluice status: not ready")
	require.Empty(t, st.Errors, "sluice status errors")
	require.Equal(t, "kubernetes", st.Source)
	require.Equal(t, NodeName, st.NodeName)
	require.Equal(t, "all", st.SocketLB)
	t.Logf("sluice status: ready, attach mode %s, %d endpoints, %d services", st.AttachMode, st.Endpoints, st.Services.Frontends)

	// The chained plugin is in the configuration containerd uses.
	conf, err := os.ReadFile(filepath.Join(c.CNIConfDir, "10-pods.conflist"))
	require.NoError(t, err)
	require.Contains(t, string(conf), `"sluice-cni"`, "install-cni chained sluice-cni into the runtime's conflist")
	_, err = os.Stat(filepath.Join(c.CNIBinDir, "sluice-cni"))
	require.NoError(t, err, "install-cni copied the plugin into the CNI bin dir")

	vip := deployWeb(t, c)
	requireWebAnswers(t, c, vip+":80")
	webIP := strings.TrimSpace(kubectl(t, c, "get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].status.podIP}"))

	t.Run("new pods are policed from their first packet", func(t *testing.T) {
		// Egress of role=probe pods is denied; a probe pod's container
		// sends its request as the first thing it does. Had the pod's
		// interface carried traffic before the agent programmed it, the
		// request would get through.
		apply(t, c, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: probe-no-egress, namespace: default}
spec:
  podSelector: {matchLabels: {role: probe}}
  policyTypes: [Egress]
`)
		for _, p := range []struct{ name, role string }{{"probe-denied", "probe"}, {"probe-allowed", "control"}} {
			apply(t, c, `
apiVersion: v1
kind: Pod
metadata: {name: `+p.name+`, namespace: default, labels: {role: `+p.role+`}}
spec:
  restartPolicy: Never
  containers:
    - name: probe
      image: `+WorkloadImage+`
      imagePullPolicy: Never
      args: [request, "`+webIP+`:8080", first]
`)
		}
		phase, logs := podLogs(t, c, "probe-allowed")
		require.Equal(t, "Succeeded", phase, "the control pod's first request: %s", logs)
		require.Regexp(t, `^web-\S+ first$`, logs)
		phase, logs = podLogs(t, c, "probe-denied")
		require.Equal(t, "Failed", phase, "the denied pod's first request went through: %s", logs)
		flows := sluice(t, c, "observe", "--last", "200", "--from-pod", "default/probe-denied", "--verdict", "DROPPED")
		require.Contains(t, flows, "POLICY_DENIED", "sluice observe shows the probe's first packet dropped")
		t.Logf("first packet of a pod created under policy, dropped:\n%s", flows)
	})

	t.Run("NetworkPolicy isolates a pod", func(t *testing.T) {
		apply(t, c, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-allowed, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - from: [{podSelector: {matchLabels: {access: "true"}}}]
`)
		err := c.WaitFor(context.Background(), 30*time.Second, func() error {
			_, err := request(c, vip+":80", "isolated")
			if err == nil {
				return errNotYet
			}
			return nil
		})
		require.NoError(t, err, "the client without access=true still reaches web")
		flows := sluice(t, c, "observe", "--last", "200", "--from-pod", "default/client", "--verdict", "DROPPED")
		require.Contains(t, flows, "POLICY_DENIED")
		require.Contains(t, flows, "default/web-", "the drop names the web pod")
		kubectl(t, c, "label", "pod", "client", "access=true")
		err = c.WaitFor(context.Background(), 30*time.Second, func() error {
			_, err := request(c, vip+":80", "allowed")
			return err
		})
		require.NoError(t, err, "the client labelled access=true reaches web")
		kubectl(t, c, "delete", "networkpolicy", "web-from-allowed")
	})

	t.Run("metrics on the annotations' port", func(t *testing.T) {
		pod := strings.TrimSpace(kubectl(t, c, "-n", "sluice-system", "get", "pods", "-l", "app.kubernetes.io/name=sluice", "-o", "jsonpath={.items[0].metadata.name}"))
		ann := kubectl(t, c, "-n", "sluice-system", "get", "pod", pod, "-o", "jsonpath={.metadata.annotations}")
		var a map[string]string
		require.NoError(t, json.Unmarshal([]byte(ann), &a))
		require.Equal(t, "true", a["prometheus.io/scrape"])
		// As a scraper does: the pod's IP (the node's, hostNetwork), the
		// annotated port and path; through the API server's pod proxy,
		// which dials the pod's address.
		metrics := kubectl(t, c, "get", "--raw", "/api/v1/namespaces/sluice-system/pods/"+pod+":"+a["prometheus.io/port"]+"/proxy"+a["prometheus.io/path"])
		require.Contains(t, metrics, "sluice_build_info")
		require.Contains(t, metrics, "sluice_endpoints")
		require.Contains(t, metrics, `sluice_datapath_packets_total{direction=`)
	})

	t.Run("per-packet path after a settings change", func(t *testing.T) {
		// The README's way to change a setting: the ConfigMap, then a
		// rolling restart. hostns-only leaves pods to the per-packet path.
		cm := kubectl(t, c, "-n", "sluice-system", "get", "configmap", "sluice-config", "-o", "jsonpath={.data.config\\.yaml}")
		cm = strings.Replace(cm, "#socket-lb: all", "socket-lb: hostns-only", 1)
		patch, err := json.Marshal(map[string]any{"data": map[string]string{"config.yaml": cm}})
		require.NoError(t, err)
		kubectl(t, c, "-n", "sluice-system", "patch", "configmap", "sluice-config", "--type=merge", "-p", string(patch))
		kubectl(t, c, "-n", "sluice-system", "rollout", "restart", "ds/sluice")
		kubectl(t, c, "-n", "sluice-system", "rollout", "status", "ds/sluice", "--timeout=4m")
		require.Equal(t, "hostns-only", agentStatus(t, c).SocketLB)
		requireWebAnswers(t, c, vip+":80")
		// The per-packet path tracks the client's connection to the
		// ClusterIP at the client's endpoint; socket LB never lets a
		// packet carry it.
		// (--bpf-root: the overlay's, where the README's commands use
		// the default.)
		ct := sluice(t, c, "--bpf-root", c.Node.BPFRoot, "bpf", "ct", "list")
		require.Contains(t, ct, vip, "a connection tracked to the ClusterIP: the per-packet path translated it")
	})
}

// TestDaemonSetWithoutKubeProxy runs the cluster without kube-proxy, the
// agent given the API server's real address as the README says; in-cluster
// clients reach the API server through the "kubernetes" Service by Sluice
// alone. Then a rolling update under traffic, and the uninstall.
func TestDaemonSetWithoutKubeProxy(t *testing.T) {
	c := startCluster(t, false)
	overlay, _ := install(t, c, c.Node.IP.String()+":6443")
	st := agentStatus(t, c)
	require.True(t, st.Ready)
	require.Empty(t, st.Errors)

	t.Run("in-cluster client through the kubernetes Service", func(t *testing.T) {
		apply(t, c, `
apiVersion: v1
kind: Pod
metadata: {name: kubeapi, namespace: default}
spec:
  restartPolicy: Never
  containers:
    - name: kubeapi
      image: `+WorkloadImage+`
      imagePullPolicy: Never
      args: [kubeapi]
`)
		phase, logs := podLogs(t, c, "kubeapi")
		require.Equal(t, "Succeeded", phase, logs)
		require.Equal(t, "system:serviceaccount:default:default via 10.96.0.1:443", logs)
	})

	vip := deployWeb(t, c)
	requireWebAnswers(t, c, vip+":80")

	t.Run("rolling update keeps connections", func(t *testing.T) {
		var res stream.Result
		var streamErr error
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			out, err := c.Kubectl(ctx, "exec", "client", "--", "/workload", "stream", vip+":80", "45s")
			if err != nil {
				streamErr = err
				return
			}
			streamErr = json.Unmarshal([]byte(out), &res)
		}()
		time.Sleep(5 * time.Second)
		agentPod := func() string {
			return strings.TrimSpace(kubectl(t, c, "-n", "sluice-system", "get", "pods", "-l", "app.kubernetes.io/name=sluice", "-o", "jsonpath={.items[*].metadata.name}"))
		}
		before := agentPod()
		start := time.Now()
		kubectl(t, c, "-n", "sluice-system", "rollout", "restart", "ds/sluice")
		kubectl(t, c, "-n", "sluice-system", "rollout", "status", "ds/sluice", "--timeout=4m")
		t.Logf("rolling restart done in %s", time.Since(start).Round(time.Millisecond))
		require.NotEqual(t, before, agentPod(), "the agent's pod was replaced")
		require.True(t, agentStatus(t, c).Adopted, "the new agent adopted the pinned datapath")
		wg.Wait()
		require.NoError(t, streamErr)
		t.Logf("across the rolling update: held connection %d round trips (error %q), new connections %d ok / %d failed %v, backends %v",
			res.HeldRoundTrips, res.HeldError, res.NewOK, res.NewFailed, res.NewErrors, res.Backends)
		assert.Empty(t, res.HeldError, "the established connection broke")
		// A round trip every 100ms and a new connection every 50ms for
		// 45s: ~400 and ~700 on an idle machine; far fewer means the
		// client stalled.
		assert.Greater(t, res.HeldRoundTrips, 100, "the held connection stalled")
		assert.Zero(t, res.NewFailed, "new connections failed")
		assert.Greater(t, res.NewOK, 100, "new connections stalled")
	})

	t.Run("uninstall leaves the datapath, the cleanup removes it", func(t *testing.T) {
		kubectl(t, c, "delete", "-k", overlay, "--wait=true", "--timeout=3m")
		err := c.WaitFor(context.Background(), 2*time.Minute, func() error {
			out, err := c.Kubectl(context.Background(), "-n", "sluice-system", "get", "pods", "-o", "name")
			if err == nil && strings.TrimSpace(out) != "" {
				return errNotYet
			}
			return nil
		})
		require.NoError(t, err)
		// The agent took sluice-cni out of the node as the DaemonSet went.
		conf, err := os.ReadFile(filepath.Join(c.CNIConfDir, "10-pods.conflist"))
		require.NoError(t, err)
		require.NotContains(t, string(conf), "sluice-cni")
		// No agent, no kube-proxy: the ClusterIP is still translated by
		// the pinned datapath, as documented.
		require.FileExists(t, filepath.Join(c.Node.BPFRoot, "sl_lb_svc"), "the pins stay")
		requireWebAnswers(t, c, vip+":80")
		// New pods start (no sluice-cni waits for an agent).
		apply(t, c, `
apiVersion: v1
kind: Pod
metadata: {name: after-uninstall, namespace: default}
spec:
  restartPolicy: Never
  containers:
    - name: req
      image: `+WorkloadImage+`
      imagePullPolicy: Never
      args: [request, "`+vip+`:80", after]
`)
		phase, logs := podLogs(t, c, "after-uninstall")
		require.Equal(t, "Succeeded", phase, logs)

		// The README's cleanup, at this run's paths (the overlay's
		// /sys/fs/bpf/sluice and /var/run/sluice).
		require.NoError(t, os.RemoveAll(c.Node.BPFRoot))
		require.NoError(t, os.RemoveAll(c.Node.StateDir))
		err = c.WaitFor(context.Background(), 30*time.Second, func() error {
			if _, err := request(c, vip+":80", "gone"); err == nil {
				return errNotYet
			}
			return nil
		})
		require.NoError(t, err, "the ClusterIP is still translated after the cleanup")
		webIP := strings.TrimSpace(kubectl(t, c, "get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].status.podIP}"))
		requireWebAnswers(t, c, webIP+":8080")
	})
}
