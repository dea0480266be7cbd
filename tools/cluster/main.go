// Command cluster starts the one-node Kubernetes cluster of tests/cluster
// for a person to try the DaemonSet on (`make cluster-up`): containerd,
// the kubelet, the control plane and kube-proxy in a network namespace of
// their own, images built from this checkout imported, and the DaemonSet's
// test overlay written. It prints how to reach the cluster and keeps it
// until interrupted (Ctrl-C, SIGTERM), then removes everything; a run that
// was killed is removed by the next one.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/tests/cluster"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

func run() error {
	noProxy := flag.Bool("no-kube-proxy", false, "start the cluster without kube-proxy; the overlay gives the agent the API server's address")
	repo := flag.String("repo", ".", "the checkout whose agent is built into the image")
	flag.Parse()
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root: it creates a network namespace, cgroups and runs containerd and the kubelet")
	}
	harness.RunWorkloadIfRequested()
	if removed, err := harness.CleanupStale(); err != nil {
		fmt.Fprintf(os.Stderr, "cluster: cleaning up stale runs: %v\n", err)
	} else if len(removed) > 0 {
		fmt.Fprintf(os.Stderr, "cluster: removed leftovers of killed runs: %s\n", strings.Join(removed, ", "))
	}
	bins, err := cluster.LocateBinaries()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	work, err := os.MkdirTemp("", "sluice-cluster-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "cluster: "+format+"\n", args...) }
	logf("building the images from %s", *repo)
	images, err := cluster.BuildImages(ctx, *repo, work)
	if err != nil {
		return err
	}
	startCtx, cancel := context.WithTimeout(ctx, 6*time.Minute)
	defer cancel()
	c, err := cluster.Start(startCtx, cluster.Options{Binaries: bins, KubeProxy: !*noProxy, Images: images, Logf: logf})
	if err != nil {
		return err
	}
	defer func() {
		logf("removing the cluster")
		if err := c.Stop(); err != nil {
			logf("%v", err)
		}
	}()
	apiServer := ""
	if *noProxy {
		apiServer = c.Node.IP.String() + ":6443"
	}
	overlay, err := c.WriteOverlay(filepath.Join(c.Dir, "overlay"), *repo, apiServer)
	if err != nil {
		return err
	}
	kubectl := filepath.Join(c.Dir, "kubectl")
	script := fmt.Sprintf("#!/bin/sh\n# kubectl on the node %s of the sluice test cluster (its network namespace)\nexec nsenter --net=%s -- %s --kubeconfig=%s \"$@\"\n",
		cluster.NodeName, c.Node.NetnsPath, bins.Kubectl, c.Kubeconfig)
	if err := os.WriteFile(kubectl, []byte(script), 0o755); err != nil {
		return err
	}
	fmt.Printf(`The cluster is up. In another shell (as root):

  alias kubectl=%s
  kubectl apply -k %s
  kubectl -n sluice-system rollout status ds/sluice
  kubectl -n sluice-system exec ds/sluice -c agent -- sluice status

Images: %s (the agent, from this checkout), %s (echo server: args [serve, "8080"]).
The node's shell: nsenter --net=%s bash
Ctrl-C here removes the cluster.
`, kubectl, overlay, cluster.AgentImage, cluster.WorkloadImage, c.Node.NetnsPath)
	<-ctx.Done()
	return nil
}
