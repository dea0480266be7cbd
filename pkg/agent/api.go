package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/statedir"
)

// The local API on <state-dir>/sluice.sock: what `sluice status`,
// `sluice endpoint`, `sluice service`, `sluice policy` and the sluice-cni
// plugin ask.

// status is `sluice status`: the agent's configuration, its parts' state
// and current problems, and the maps' counters and pressure.
func (a *Agent) status() api.Status {
	st := api.Status{
		NodeName: a.opts.NodeName, StartedAt: a.started, Source: a.opts.Source,
		BPFRoot: a.opts.BPFRoot, StateDir: a.opts.StateDir, CgroupRoot: a.opts.CgroupRoot,
		AttachMode: string(a.attacher.Mode()), Adopted: a.dp.Adopted,
		Kernel: api.KernelFeatures{Release: a.features.Release, TCX: a.features.TCX, RingBuf: a.features.RingBuf,
			SockDestroy: a.sockDestroy, SetRetval: a.features.SetRetval && !a.opts.Datapath.NoSetRetval},
		CTMax: int(a.dp.Config().CTMax),
	}
	st.Ready = a.ready() == nil
	st.SocketLB = string(a.opts.Datapath.SockLB)
	ls := a.lb.Status()
	st.Services = api.ServicesStatus{Frontends: ls.Frontends, Backends: ls.Backends, Applied: ls.Applied, ConnectionsCleaned: ls.CTCleanedUp}
	if ls.LastErr != nil {
		st.Errors = append(st.Errors, api.Error{Component: "services", Message: ls.LastErr.Error()})
	}
	for _, w := range ls.Warnings {
		st.Errors = append(st.Errors, api.Error{Component: "services", Message: w})
	}
	st.Policy = a.policy.Status()
	if a.flows != nil {
		fs := a.flows.store.Stats()
		st.Flows = api.FlowsStatus{Stored: fs.Flows, Capacity: fs.Capacity, Seen: fs.Seen, PerSec: fs.FlowsPerSecond,
			Lost: fs.LostEvents, FollowersLost: fs.FollowersLost}
	}
	for _, f := range st.Policy.FailedClosed {
		st.Errors = append(st.Errors, api.Error{Component: "policy", Message: f.Error})
	}
	if st.Policy.LastError != "" {
		st.Errors = append(st.Errors, api.Error{Component: "policy", Message: st.Policy.LastError})
	}
	eps := a.eps.List()
	st.Endpoints = len(eps)
	sourceComponent := "manifests"
	if a.opts.Source == "kubernetes" {
		sourceComponent = "kubernetes"
	}
	for _, e := range a.source.Errors() {
		st.Errors = append(st.Errors, api.Error{Component: sourceComponent, Message: e.Error()})
	}
	if err := a.eps.Err(); err != nil {
		st.Errors = append(st.Errors, api.Error{Component: "endpoints", Message: err.Error()})
	}
	a.mu.Lock()
	st.Errors = append(st.Errors, a.errors...)
	a.mu.Unlock()
	if cs, err := a.maps.Counters(); err == nil {
		for _, c := range cs {
			st.Counters = append(st.Counters, api.Counter{Verdict: c.Metric, Reason: c.Reason, Direction: c.Dir, Packets: c.Packets, Bytes: c.Bytes})
		}
		st.EventsLost = eventsLost(cs)
	}
	// One walk of each map: sl_ct's row also gives the live connections.
	mp, err := a.maps.Pressure()
	if err != nil {
		st.Errors = append(st.Errors, api.Error{Component: "datapath", Message: err.Error()})
	}
	st.Maps = apiMapPressure(mp)
	st.Proxy = a.proxyStatus()
	st.Errors = append(st.Errors, proxyErrors(st.Proxy)...)
	if nat, err := a.maps.NATUsage(); err != nil {
		st.Errors = append(st.Errors, api.Error{Component: "datapath", Message: err.Error()})
	} else {
		st.NAT = apiNATUsage(nat)
	}
	for _, p := range mp {
		if p.Map == datapath.MapCT {
			st.CTEntries = p.Live
		}
	}
	return st
}

// listenAPI opens the local API's socket (root and --socket-group only)
// and builds its handler; the API part serves it.
func (a *Agent) listenAPI() (*apiServer, error) {
	gid, err := statedir.LookupGroup(a.opts.SocketGroup)
	if err != nil {
		return nil, fmt.Errorf("--socket-group: %w", err)
	}
	ln, err := statedir.ListenUnix(filepath.Join(a.opts.StateDir, api.SocketName), gid)
	if err != nil {
		return nil, fmt.Errorf("local API: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathStatus, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, a.status()) })
	mux.HandleFunc("GET "+api.PathEndpoints, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, a.eps.List()) })
	mux.HandleFunc("GET "+api.PathServices, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, a.services()) })
	mux.HandleFunc("GET "+api.PathIdentities, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, a.policy.Identities()) })
	mux.HandleFunc("GET "+api.PathPolicy, func(w http.ResponseWriter, r *http.Request) {
		ns, name, ok := strings.Cut(r.URL.Query().Get("pod"), "/")
		if !ok || ns == "" || name == "" {
			http.Error(w, "pod must be NAMESPACE/NAME", http.StatusBadRequest)
			return
		}
		x, err := a.policy.Explain(model.NamespacedName{Namespace: ns, Name: name})
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		writeJSON(w, x)
	})
	mux.HandleFunc("GET "+api.PathL7Config, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, a.policy.L7Config()) })
	mux.HandleFunc("GET "+api.PathProxy, a.serveProxyStatus)
	mux.HandleFunc("GET "+api.PathPolicyTrace, a.handleTrace)
	mux.HandleFunc("POST "+api.PathPolicyTrace, a.handleTrace)
	a.registerCNI(mux)
	if a.opts.Pprof {
		// Root and the socket's group only, like the rest of the API.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	}
	return &apiServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln}, nil
}

// apiServer is the local API: its socket and what serves it.
type apiServer struct {
	srv *http.Server
	ln  net.Listener
}

func (s *apiServer) serve(context.Context) error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// shutdown lets requests in flight finish, for up to two seconds.
func (s *apiServer) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	// Shutdown closes only a listener Serve has begun with.
	_ = s.ln.Close()
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// services is the computed service table with its Maglev memory.
func (a *Agent) services() api.Services { return apiServices(a.lb.Desired()) }
