package agent

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/rungroup"
	"github.com/sluice-net/sluice/pkg/statedir"
	"github.com/sluice-net/sluice/pkg/xds"
	"github.com/sluice-net/sluice/pkg/xds/als"
)

// noL7 stands in for the policy compiler's L7 config until it exists: an
// empty Config that never changes, so the node's Envoy is configured with
// no listeners (and the xDS server, its status and Envoy's ACKs work from
// the start).
type noL7 struct{}

func (noL7) L7Config() l7.Config      { return l7.Config{} }
func (noL7) Changed() <-chan struct{} { return nil }

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

// proxyStatus is the xDS server's status, nil when it is off.
func (a *Agent) proxyStatus() *api.ProxyStatus {
	if a.xds == nil {
		return nil
	}
	st := a.xds.Status()
	return &st
}

// proxyErrors are the proxy's current problems for `sluice status`: an L7
// config that could not be served, and Envoy's rejection of the version
// being served.
func proxyErrors(st *api.ProxyStatus) []api.Error {
	if st == nil {
		return nil
	}
	var errs []api.Error
	if st.LastError != "" {
		errs = append(errs, api.Error{Component: "proxy", Message: "L7 config not served (the previous one still is): " + st.LastError, Time: st.LastErrorAt})
	}
	if n := st.LastNACK; n != nil && n.Version == st.Version {
		errs = append(errs, api.Error{Component: "proxy", Time: n.At,
			Message: fmt.Sprintf("Envoy (node %s) rejected version %s of %s %v: %s", n.Node, n.Version, n.TypeURL, n.Resources, n.Message)})
	}
	return errs
}

func (a *Agent) serveProxyStatus(w http.ResponseWriter, _ *http.Request) {
	st := a.proxyStatus()
	if st == nil {
		http.Error(w, "the xDS server is off (--xds=false): this node serves no L7 policy", http.StatusNotFound)
		return
	}
	writeJSON(w, st)
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
