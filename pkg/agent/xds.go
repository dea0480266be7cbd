package agent

import (
	"fmt"
	"net/http"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/l7"
)

// proxyServer is what the agent asks of the xDS server beyond running it.
type proxyServer interface {
	Status() api.ProxyStatus
}

// noL7 stands in for the policy compiler's L7 config until it exists: an
// empty Config that never changes, so the node's Envoy is configured with
// no listeners (and the xDS server, its status and Envoy's ACKs work from
// the start).
type noL7 struct{}

func (noL7) L7Config() l7.Config      { return l7.Config{} }
func (noL7) Changed() <-chan struct{} { return nil }

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
