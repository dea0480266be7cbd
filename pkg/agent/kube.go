//go:build !sluice_edge

package agent

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/sluice-net/sluice/pkg/source/k8s"
)

// The Kubernetes source and API client (left out of edge builds: edge.go).

const kubeBuiltIn = true

func newKubeSource(opts Options, log *slog.Logger) (modelSource, error) {
	client, err := k8s.NewClient(opts.Kubeconfig)
	if err != nil {
		if opts.Kubeconfig == "" {
			return nil, fmt.Errorf("%w (outside a pod, pass --kubeconfig)", err)
		}
		return nil, fmt.Errorf("--kubeconfig: %w", err)
	}
	return k8s.New(k8s.Options{Client: client, NodeName: opts.NodeName, SecretNamespace: opts.JWKSSecretNamespace,
		Logger: log.With("component", "kubernetes")})
}

func kubeInCluster() bool { return k8s.InCluster() }

// daemonSetRemoved asks the API server whether the DaemonSet ns/name is
// being removed (k8s.DaemonSetRemoved).
func daemonSetRemoved(ctx context.Context, kubeconfig, ns, name string) (bool, string, error) {
	client, err := k8s.NewClient(kubeconfig)
	if err != nil {
		return false, "", fmt.Errorf("no API client to ask: %w", err)
	}
	return k8s.DaemonSetRemoved(ctx, client, ns, name)
}
