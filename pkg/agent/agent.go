package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/cgroups"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/datapath/events"
	"github.com/sluice-net/sluice/pkg/endpoint"
	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/metrics"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/observer"
	"github.com/sluice-net/sluice/pkg/policysync"
	"github.com/sluice-net/sluice/pkg/service"
	"github.com/sluice-net/sluice/pkg/servicesync"
	"github.com/sluice-net/sluice/pkg/source/files"
	"github.com/sluice-net/sluice/pkg/source/k8s"
	"github.com/sluice-net/sluice/pkg/statedir"
)

// Agent is a running node agent.
type Agent struct {
	opts     Options
	log      *slog.Logger
	started  time.Time
	dp       *datapath.Datapath
	maps     *datapath.Maps
	attacher *datapath.Attacher
	features datapath.Features
	store    *model.Store
	source   modelSource
	eps      *endpoint.Manager
	lb       *servicesync.Reconciler
	policy   *policysync.Reconciler
	stage    atomic.Pointer[string] // while starting; see setStage
	flows    *flowSink
	cgroups  *cgroupPods
	metrics  *metrics.Collector
	// sockDestroy is how sockets of removed backends are destroyed
	// (sockdestroy.Iterator or sockdestroy.SockDiag); empty if they cannot be.
	sockDestroy string

	// cniSaveMu orders writes of the CNI address file (cni.go).
	cniSaveMu sync.Mutex

	mu     sync.Mutex
	ct     datapath.CTStats
	errors []api.Error
}

// Run runs the agent until ctx is cancelled. On return the datapath stays
// pinned and attached: traffic keeps flowing for the next agent.
func Run(ctx context.Context, opts Options, log *slog.Logger) (err error) {
	if err := opts.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	if opts.CgroupRoot == "" {
		if opts.CgroupRoot, err = cgroups.FindV2Mount(); err != nil {
			return err
		}
	}
	opts.Datapath.BPFRoot = opts.BPFRoot
	a := &Agent{opts: opts, log: log, started: time.Now(), store: model.NewStore(),
		cgroups: newCgroupPods(opts.CgroupRoot)}
	a.logSettings()

	lock, err := datapath.LockRoot(opts.BPFRoot)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := os.MkdirAll(opts.StateDir, 0o755); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	a.setStage("probing the kernel")
	web, err := listenHTTP(opts.HealthAddress, opts.MetricsAddress, a.getStage, log.With("component", "http"))
	if err != nil {
		return err
	}
	defer web.stop()
	if opts.PprofAddress != "" {
		prof, err := servePprof(opts.PprofAddress, log.With("component", "pprof"))
		if err != nil {
			return err
		}
		defer func() { _ = prof.srv.Close(); _ = prof.ln.Close() }()
	}
	// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK (a few MiB by
	// default) rather than to the memory cgroup; lift it there. A no-op on
	// newer kernels.
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("lift RLIMIT_MEMLOCK for BPF maps (kernel before 5.11): %w", err)
	}
	// A kernel without ring buffers cannot load the programs; say so plainly.
	if _, err := datapath.ProbeFeatures(nil); err != nil {
		return err
	}

	// Socket LB's hostns-only mode tells the node's sockets by the cookie of
	// the namespace the agent runs in (the node's: hostNetwork).
	if opts.Datapath.HostNetnsCookie, err = datapath.NetnsCookie(); err != nil && opts.Datapath.SockLB == datapath.SockLBHostOnly {
		return fmt.Errorf("--socket-lb=hostns-only: %w", err)
	}

	// The source's initial load comes before anything is programmed, so an
	// agent restarting with a broken manifest directory keeps the last
	// good model (saved in the state dir) instead of flushing, and one
	// that cannot reach the API server leaves the previous agent's
	// datapath serving until it can: the kubernetes source's Start may
	// wait for as long as the API server is away, and only then is the
	// datapath loaded (pins adopted, programs verified). The files
	// source's Start returns in seconds whatever the manifests hold, so
	// the datapath loads meanwhile: decoding large manifests and the
	// verifier are the two long steps of a start, and neither needs the
	// other. Nothing is attached or programmed before both are done.
	a.setStage("the " + opts.Source + " source's initial sync")
	load := func() loaded {
		dp, err := datapath.Load(opts.Datapath, log.With("component", "datapath"))
		return loaded{dp, err}
	}
	var early chan loaded
	if opts.Source == "files" {
		early = make(chan loaded, 1)
		go func() { early <- load() }()
	}
	if a.source, err = newSource(opts, log); err == nil {
		err = a.source.Start(ctx, a.store)
	}
	if err != nil {
		if early != nil {
			if l := <-early; l.dp != nil {
				l.dp.Close()
			}
		}
		return fmt.Errorf("%s source: %w", opts.Source, err)
	}
	a.restoreCNIAddrs()

	a.setStage("loading the datapath")
	var l loaded
	if early != nil {
		l = <-early
	} else {
		l = load()
	}
	if a.dp, err = l.dp, l.err; err != nil {
		return err
	}
	defer a.dp.Close()
	for _, r := range a.dp.Replaced {
		a.report("datapath", r)
	}
	// Which way connected UDP sockets of removed backends are destroyed:
	// the BPF iterator (6.5+), else sock_diag netlink, else not at all.
	// Without socket LB no socket is connected to a backend behind the
	// service's back, so there is nothing to destroy.
	if opts.Datapath.SockLB != datapath.SockLBOff {
		if a.sockDestroy, err = a.dp.SocketDestroyer().Method(); err != nil {
			log.Warn("connected UDP sockets of removed backends will not be destroyed", "error", err)
			a.report("datapath", "connected UDP sockets of removed backends cannot be destroyed: "+err.Error())
		} else {
			log.Info("socket destruction", "method", a.sockDestroy)
		}
	}
	if a.features, err = datapath.ProbeFeatures(a.dp); err != nil {
		return err
	}
	mode, err := chooseAttachMode(opts.AttachMode, a.features)
	if err != nil {
		return err
	}
	a.maps = a.dp.Maps()
	if a.attacher, err = datapath.NewAttacher(a.dp, mode, opts.TCPriority); err != nil {
		return err
	}
	// Connections handed to the L7 proxy are routed to the node's own
	// stack; before any program that hands them over is attached.
	if err := datapath.EnsureProxyRouting(); err != nil {
		return err
	}
	log.Info("datapath loaded", "adopted", a.dp.Adopted, "attachMode", mode, "kernel", a.features.Release, "tcx", a.features.TCX)

	a.setStage("starting the endpoint, service and policy reconcilers")
	a.metrics = a.newMetrics()
	if err := a.newReconcilers(); err != nil {
		return err
	}

	// Services are programmed before any program of this agent replaces
	// the previous agent's on a hook (socket LB here, endpoints and uplinks
	// in the endpoint manager): a map that Load replaced (sl_lb_maglev
	// after a --maglev-table-size change) starts empty, and the old
	// programs keep their old tables until swapped, so swapping after this
	// pass means no new connection meets a Maglev service without its
	// table. Run's first pass then finds nothing left to write.
	a.setStage("programming services")
	a.lb.Reconcile(true)
	if err := a.lb.Status().LastErr; err != nil {
		log.Warn("first service pass", "error", err)
	}
	if opts.Datapath.SockLB == datapath.SockLBOff {
		err = a.dp.DetachSockLB()
	} else {
		err = a.dp.AttachSockLB(opts.CgroupRoot)
	}
	if err != nil {
		return fmt.Errorf("socket LB: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	wg.Add(1)
	go func() { defer wg.Done(); a.lb.Run(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); errc <- a.eps.Run(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); _ = a.policy.Run(ctx) }()

	// Flows: every event is resolved when it is read, with names as they
	// are now, stored compact and served over Hubble's observer API.
	fstore, err := flow.NewStore(opts.FlowBuffer)
	if err != nil {
		return fmt.Errorf("--flow-buffer: %w", err)
	}
	a.flows = &flowSink{store: fstore, conv: &flow.Converter{NodeName: opts.NodeName, Version: version, Enricher: newEnricher(a)},
		observe: a.metrics.ObserveFlow}
	hubble, err := observer.Start(observer.Config{
		SocketPath: opts.hubbleSocket(), SocketGroup: opts.SocketGroup, TCPAddress: opts.HubbleAddress,
		NodeName: opts.NodeName, Version: version,
	}, fstore, log.With("component", "observer"))
	if err != nil {
		return fmt.Errorf("hubble observer: %w", err)
	}
	defer hubble.Close()

	reader, err := events.NewReader(a.dp.EventRing())
	if err != nil {
		return err
	}
	wg.Add(2)
	go func() { defer wg.Done(); a.readEvents(reader) }()
	go func() { defer wg.Done(); a.gcLoop(ctx) }()

	srv, err := a.serveAPI()
	if err != nil {
		cancel()
		reader.Close()
		wg.Wait()
		return err
	}
	web.serve(a)
	log.Info("agent running", "node", opts.NodeName, "api", filepath.Join(opts.StateDir, api.SocketName))
	// The start's garbage (decoded manifests or the first lists, the
	// first computation of every service) is free now, but the Go runtime
	// hands free memory back to the system only gradually, and a large
	// start leaves its peak in the RSS for minutes; hand it back at once.
	// One collection, off the critical path.
	go debug.FreeOSMemory()

	select {
	case <-ctx.Done():
	case err = <-errc:
		if err != nil {
			log.Error("endpoint manager stopped", "error", err)
		}
	}
	log.Info("shutting down; the datapath stays pinned and attached")
	a.uninstallCNIIfRemoved()
	cancel()
	shutCtx, c2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer c2()
	_ = srv.Shutdown(shutCtx)
	web.stop()
	reader.Close()
	wg.Wait()
	return err
}

// loaded is the outcome of datapath.Load.
type loaded struct {
	dp  *datapath.Datapath
	err error
}

// modelSource fills the model store from the source of truth: the files
// source or the Kubernetes source, chosen by --source.
type modelSource interface {
	// Start returns once the initial state is in the store, then keeps it
	// up to date until ctx ends.
	Start(ctx context.Context, store *model.Store) error
	// Synced reports whether the initial state is in the store.
	Synced() bool
	// Errors are the source's current problems, for `sluice status`.
	Errors() []error
}

func newSource(opts Options, log *slog.Logger) (modelSource, error) {
	if opts.Source == "kubernetes" {
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
	return files.New(files.Options{
		Dir: opts.ManifestDir, StatePath: filepath.Join(opts.StateDir, "model.json"), MaxBytes: opts.ManifestMaxBytes,
		Logger: log.With("component", "files"),
	})
}

func chooseAttachMode(want string, f datapath.Features) (datapath.AttachMode, error) {
	switch want {
	case "tc":
		return datapath.AttachTC, nil
	case "tcx":
		if !f.TCX {
			return "", fmt.Errorf("--attach-mode=tcx needs tcx links (BPF_LINK_TYPE_TCX, Linux 6.6+), which kernel %s lacks: use --attach-mode=tc or auto", f.Release)
		}
		return datapath.AttachTCX, nil
	default:
		if f.TCX {
			return datapath.AttachTCX, nil
		}
		return datapath.AttachTC, nil
	}
}

func (a *Agent) logSettings() {
	o := a.opts
	a.log.Info("starting sluice-agent", "node", o.NodeName, "source", o.Source, "manifests", o.ManifestDir,
		"bpfRoot", o.BPFRoot, "cgroupRoot", o.CgroupRoot, "stateDir", o.StateDir, "attachMode", o.AttachMode,
		"tcPriority", o.TCPriority, "ctMax", o.Datapath.CTMax, "endpointsMax", o.Datapath.EndpointsMax,
		"eventsBuffer", o.Datapath.EventsBufBytes, "ctGCInterval", o.CTGCInterval,
		"ctTimeoutTCP", o.Datapath.CTTimeoutTCP, "ctTimeoutOther", o.Datapath.CTTimeoutOther,
		"ctTimeoutSYN", o.Datapath.CTTimeoutSYN, "ctTimeoutClose", o.Datapath.CTTimeoutClose,
		"antispoof", !o.Datapath.DisableAntispoof, "forceSockDiag", o.Datapath.ForceSockDiag)
}

// setStage and getStage name the step a starting agent is in, for /readyz
// before the agent's components exist.
func (a *Agent) setStage(s string) { a.stage.Store(&s) }

func (a *Agent) getStage() string { return *a.stage.Load() }

// report records a notable condition for `sluice status` (bounded).
func (a *Agent) report(component, msg string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.errors = append(a.errors, api.Error{Component: component, Message: msg, Time: time.Now()})
	if len(a.errors) > 50 {
		a.errors = a.errors[len(a.errors)-50:]
	}
}

// gcLoop removes expired CT entries. The interval trades table headroom
// for CPU: each pass walks the whole table from user space.
func (a *Agent) gcLoop(ctx context.Context) {
	t := time.NewTicker(a.opts.CTGCInterval)
	defer t.Stop()
	for {
		a.gcOnce()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Agent) gcOnce() {
	st, err := a.maps.GCCT(nil, a.recordEvent)
	if err != nil {
		a.log.Warn("conntrack gc", "error", err)
		return
	}
	if st.Deleted > 0 {
		a.log.Debug("conntrack gc", "deleted", st.Deleted, "live", st.Live)
	}
	a.mu.Lock()
	a.ct = st
	a.mu.Unlock()
	// After CT: a mapping whose connection just expired goes in the same pass.
	if ns, err := a.maps.GCNAT(); err != nil {
		a.log.Warn("snat gc", "error", err)
	} else if ns.Deleted > 0 {
		a.log.Debug("snat gc", "deleted", ns.Deleted, "live", ns.Live)
	}
	if a.flows != nil {
		if cs, err := a.maps.Counters(); err == nil {
			a.flows.lost(eventsLost(cs))
		}
	}
}

func (a *Agent) readEvents(r *events.Reader) {
	var rec events.Record // reused: reading an event allocates nothing
	for {
		err := r.ReadRecord(&rec)
		if errors.Is(err, events.ErrClosed) {
			return
		}
		if err != nil {
			a.log.Warn("read event", "error", err)
			continue
		}
		if a.flows != nil {
			a.flows.addRecord(&rec, r.Epoch())
		}
		if rec.Kind() == events.Drop && a.log.Enabled(context.Background(), slog.LevelDebug) {
			a.logDrop(rec.Event(r.Epoch()))
		}
	}
}

// eventsLost sums the datapath's count of events it could not emit (ring
// buffer full), over directions and reasons.
func eventsLost(cs []datapath.Counter) uint64 {
	var n uint64
	for _, c := range cs {
		if c.Metric == datapath.MetricEventsLost {
			n += c.Packets
		}
	}
	return n
}

// version is what the observer API reports; set at build time with
// -ldflags "-X github.com/sluice-net/sluice/pkg/agent.version=...".
var version = "dev"

// newReconcilers builds the service, policy and endpoint reconcilers over
// the loaded datapath's maps and the model; none runs yet. The policy
// reconciler is the endpoint manager's policy provider, and lists its
// endpoints in turn.
func (a *Agent) newReconcilers() (err error) {
	a.lb, err = servicesync.New(servicesync.Options{
		Maps: a.maps, Store: a.store, Service: a.opts.serviceOptions(), Logger: a.log.With("component", "lb"),
		BackendsRemoved: a.destroySockets, ObservePass: a.metrics.ReconcileObserver(metrics.ReconcilerServices),
	})
	if err != nil {
		return err
	}

	a.policy, err = policysync.New(policysync.Options{
		NodeName: a.opts.NodeName, Maps: a.maps, Store: a.store, Audit: a.opts.PolicyAudit,
		MaxEntries: int(a.opts.Datapath.PolicyMapMax), StateDir: a.opts.StateDir, Logger: a.log,
		ProxyPorts:  a.opts.ProxyPorts,
		ObservePass: a.metrics.ReconcileObserver(metrics.ReconcilerPolicy),
		// The endpoint manager, made next: it needs this reconciler as its
		// policy provider; neither runs before both are built.
		Endpoints: policysync.EndpointListerFunc(func() []api.Endpoint { return a.eps.List() }),
	})
	if err != nil {
		return err
	}
	a.eps = endpoint.New(endpoint.Options{
		NodeName: a.opts.NodeName, Maps: a.maps, Attacher: a.attacher, Store: a.store,
		Logger: a.log.With("component", "endpoint"), Policy: a.policy,
		ObservePass: a.metrics.ReconcileObserver(metrics.ReconcilerEndpoints),
	})
	return nil
}

// recordEvent turns a connection the CT GC found expired into a flow,
// enriched once, in the flow store: the one place `sluice observe`,
// `sluice map` and Hubble clients read events from (readEvents stores the
// datapath's).
func (a *Agent) recordEvent(ev events.Event) {
	if a.flows != nil {
		a.flows.addEvent(&ev)
	}
	if ev.Type == events.Drop {
		a.logDrop(ev)
	}
}

func (a *Agent) logDrop(ev events.Event) {
	a.log.Debug("drop", "reason", ev.Reason.String(), "endpoint", ev.EndpointID, "src", ev.Src, "dst", ev.Dst, "proto", model.ProtocolOf(ev.Proto))
}

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
	st.Maps = mp
	if nat, err := a.maps.NATUsage(); err != nil {
		st.Errors = append(st.Errors, api.Error{Component: "datapath", Message: err.Error()})
	} else {
		st.NAT = nat
	}
	for _, p := range mp {
		if p.Map == datapath.MapCT {
			st.CTEntries = p.Live
		}
	}
	return st
}

func (a *Agent) serveAPI() (*http.Server, error) {
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
	mux.HandleFunc("GET "+api.PathL7Config, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, a.policy.L7Config()) })
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
	a.registerCNI(mux)
	if a.opts.Pprof {
		// Root and the socket's group only, like the rest of the API.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("api server", "error", err)
		}
	}()
	return srv, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// services is the computed service table with its Maglev memory.
func (a *Agent) services() api.Services {
	out := api.Services{Frontends: []service.Frontend{}}
	if d := a.lb.Desired(); d != nil {
		out.Frontends = d.Frontends
		out.MaglevTableSize = d.MaglevTableSize
		out.Memory = d.MemoryPerService()
	}
	return out
}

// destroySockets destroys connected UDP sockets that socket LB pointed at
// removed backends, in every network namespace of the node's processes, so
// their owners reconnect instead of sending into a void. (TCP connections
// to a removed pod end on their own: the peer is gone.)
func (a *Agent) destroySockets(removed []datapath.LBBackend) {
	if a.opts.Datapath.SockLB == datapath.SockLBOff {
		return
	}
	var targets []netip.AddrPort
	for _, b := range removed {
		if b.Proto == unix.IPPROTO_UDP {
			targets = append(targets, netip.AddrPortFrom(b.Addr, b.Port))
		}
	}
	if len(targets) == 0 {
		return
	}
	go func() {
		netns := cgroups.Netns(a.opts.CgroupRoot)
		if err := a.dp.SocketDestroyer().DestroyUDP(targets, netns); err != nil {
			a.log.Warn("destroy sockets of removed backends", "error", err)
			return
		}
		a.log.Info("destroyed UDP sockets of removed backends", "backends", len(targets), "namespaces", len(netns), "method", a.sockDestroy)
	}()
}
