//go:build !sluice_edge

package agent

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/sluice-net/sluice/pkg/rungroup"
	"github.com/sluice-net/sluice/pkg/statedir"
	"github.com/sluice-net/sluice/pkg/xds"
	"github.com/sluice-net/sluice/pkg/xds/als"
)

// xdsBuiltIn: this build has the xDS server (see edge.go).
const xdsBuiltIn = true

// newXDS builds the xDS server for the node's Envoy on
// <state-dir>/xds.sock; nil with --xds=false. Services that share the
// socket (the access log service) register on its GRPC() before
// startXDS.
func (a *Agent) newXDS() (*xds.Server, error) {
	if !a.opts.XDS {
		return nil, nil
	}
	gid, err := statedir.LookupGroup(a.opts.SocketGroup)
	if err != nil {
		return nil, fmt.Errorf("--socket-group: %w", err)
	}
	o := xds.ServerOptions{
		SocketPath: filepath.Join(a.opts.StateDir, xds.DefaultSocketName), SocketGroup: gid,
		Logger: a.log.With("component", "xds"),
	}
	if a.metrics != nil { // a nil *Collector is not a nil Observer
		o.Observer = a.metrics
	}
	return xds.NewServer(o)
}

// startXDS starts the node's xDS server (unless --xds=false): the
// Envoy's config over ADS on the state dir's socket, before the local
// API so that `sluice status` shows it.
func (a *Agent) startXDS(g *rungroup.Group) error {
	srv, err := a.newXDS()
	if err != nil {
		return fmt.Errorf("xds: %w", err)
	}
	if srv == nil {
		return nil
	}
	// Envoy's access logs, on the same socket: each request an L7 flow.
	if _, err := als.Register(srv.GRPC(), als.Options{Converter: a.flows.conv, Store: a.flows.store,
		Observe: a.metrics.ObserveL7Request, Log: a.log.With("component", "als")}); err != nil {
		srv.Close()
		return fmt.Errorf("access log service: %w", err)
	}
	if err := srv.Start(); err != nil {
		return err
	}
	a.xds = srv
	g.Add("xds", func(ctx context.Context) error { srv.Run(ctx, a.l7, nil); return nil }, srv.Close)
	return nil
}
