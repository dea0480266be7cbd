//go:build sluice_edge

package agent

// The edge build (-tags sluice_edge, `make build-edge`): an agent for
// hosts without Kubernetes or Envoy. It leaves out the Kubernetes source
// with its API client, and the xDS server with the Envoy API types, about
// a quarter of the binary and of the agent's resident memory
// (`make bench-edge-rss`). Everything else is the same agent: the files
// source, the datapath, policy, services, flows, the CLI's API. --xds is
// off by default here, and an L7-policed port fails closed, as with
// --xds=false.

import (
	"context"
	"errors"
	"log/slog"

	"github.com/sluice-net/sluice/pkg/rungroup"
)

const xdsBuiltIn, kubeBuiltIn = false, false

func (a *Agent) startXDS(*rungroup.Group) error {
	if a.opts.XDS {
		return errors.Join(errors.New("--xds"), errEdgeBuild)
	}
	return nil
}

func newKubeSource(Options, *slog.Logger) (modelSource, error) {
	return nil, errors.Join(errors.New("--source=kubernetes"), errEdgeBuild)
}

func kubeInCluster() bool { return false }

func daemonSetRemoved(context.Context, string, string, string) (bool, string, error) {
	return false, "", errEdgeBuild
}
