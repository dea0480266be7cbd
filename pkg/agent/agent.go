package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/agent/reconcilers"
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/cgroups"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/endpoint"
	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/metrics"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/policysync"
	"github.com/sluice-net/sluice/pkg/rungroup"
	"github.com/sluice-net/sluice/pkg/servicesync"
	"github.com/sluice-net/sluice/pkg/source/files"
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
	web      *httpServers
	cgroups  *cgroups.Pods
	metrics  *metrics.Collector
	// xds serves the node's Envoy (nil with --xds=false, and in builds
	// without it: xds_server.go); l7 is its config's source.
	xds proxyServer
	l7  l7.Source
	// sockDestroy is how sockets of removed backends are destroyed
	// (sockdestroy.Iterator or sockdestroy.SockDiag); empty if they cannot be.
	sockDestroy string

	// cniSaveMu orders writes of the CNI address file (cni.go).
	cniSaveMu sync.Mutex

	mu     sync.Mutex
	ct     datapath.CTStats
	errors []api.Error
}

// Run runs the agent until ctx is cancelled or one of its parts fails. On
// return the datapath stays pinned and attached: traffic keeps flowing for
// the next agent.
func Run(ctx context.Context, opts Options, log *slog.Logger) error {
	a, err := newAgent(opts, log)
	if err != nil {
		return err
	}
	// One list of parts, in the order the start needs them; the shutdown
	// goes through it backwards.
	g := &rungroup.Group{Stopping: a.stopping}
	if err := a.assemble(ctx, g); err != nil {
		g.Close()
		return err
	}
	a.web.serve(a)
	log.Info("agent running", "node", opts.NodeName, "api", filepath.Join(opts.StateDir, api.SocketName))
	// The start's garbage (decoded manifests or the first lists, the
	// first computation of every service) is free now, but the Go runtime
	// hands free memory back to the system only gradually, and a large
	// start leaves its peak in the RSS for minutes; hand it back at once.
	// One collection, off the critical path.
	go debug.FreeOSMemory()
	return g.Run(ctx)
}

func newAgent(opts Options, log *slog.Logger) (*Agent, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	if opts.CgroupRoot == "" {
		var err error
		if opts.CgroupRoot, err = cgroups.FindV2Mount(); err != nil {
			return nil, err
		}
	}
	opts.Datapath.BPFRoot = opts.BPFRoot
	a := &Agent{opts: opts, log: log, started: time.Now(), store: model.NewStore(),
		cgroups: cgroups.NewPods(opts.CgroupRoot), l7: noL7{}}
	a.logSettings()
	return a, nil
}

// assemble builds the agent's parts in the order a start needs them and
// adds each to g: the bpf root's lock, the health and metrics servers,
// the source, the datapath, the reconcilers, the CT GC, the flow
// pipeline and the local API. Nothing runs on its own goroutines yet but
// the servers and the source.
func (a *Agent) assemble(ctx context.Context, g *rungroup.Group) error {
	if err := a.prepare(g); err != nil {
		return err
	}
	if err := a.syncAndLoad(ctx, g); err != nil {
		return err
	}
	if err := a.program(g); err != nil {
		return err
	}
	g.Add("conntrack gc", func(ctx context.Context) error { a.gcLoop(ctx); return nil }, nil)
	if err := a.startFlows(g); err != nil {
		return err
	}
	if err := a.startXDS(g); err != nil {
		return err
	}
	srv, err := a.listenAPI()
	if err != nil {
		return err
	}
	g.Add("local API", srv.serve, srv.shutdown)
	return nil
}

// prepare takes the bpf root, opens the health and metrics listeners (so
// the kubelet sees a live process during a long first sync) and checks
// what the kernel must have before anything is loaded.
func (a *Agent) prepare(g *rungroup.Group) (err error) {
	opts := a.opts
	lock, err := datapath.LockRoot(opts.BPFRoot)
	if err != nil {
		return err
	}
	g.AddStarted("bpf root lock", func() { _ = lock.Close() })
	if err := os.MkdirAll(opts.StateDir, 0o755); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	a.setStage("probing the kernel")
	if a.web, err = listenHTTP(opts.HealthAddress, opts.MetricsAddress, a.getStage, a.log.With("component", "http")); err != nil {
		return err
	}
	g.AddStarted("health and metrics servers", a.web.stop)
	if opts.PprofAddress != "" {
		prof, err := servePprof(opts.PprofAddress, a.log.With("component", "pprof"))
		if err != nil {
			return err
		}
		g.AddStarted("pprof server", prof.close)
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
	if a.opts.Datapath.HostNetnsCookie, err = datapath.NetnsCookie(); err != nil && opts.Datapath.SockLB == datapath.SockLBHostOnly {
		return fmt.Errorf("--socket-lb=hostns-only: %w", err)
	}
	return nil
}

// syncAndLoad runs the source's initial load and loads the datapath.
//
// The source's initial load comes before anything is programmed, so an
// agent restarting with a broken manifest directory keeps the last good
// model (saved in the state dir) instead of flushing, and one that cannot
// reach the API server leaves the previous agent's datapath serving until
// it can: the kubernetes source's Start may wait for as long as the API
// server is away, and only then is the datapath loaded (pins adopted,
// programs verified). The files source's Start returns in seconds
// whatever the manifests hold, so the datapath loads meanwhile: decoding
// large manifests and the verifier are the two long steps of a start, and
// neither needs the other. Nothing is attached or programmed before both
// are done.
func (a *Agent) syncAndLoad(ctx context.Context, g *rungroup.Group) (err error) {
	opts := a.opts
	a.setStage("the " + opts.Source + " source's initial sync")
	load := func() loaded {
		dp, err := datapath.Load(opts.Datapath, a.log.With("component", "datapath"))
		return loaded{dp, err}
	}
	var early chan loaded
	if opts.Source == "files" {
		early = make(chan loaded, 1)
		go func() { early <- load() }()
	}
	srcCtx, stopSource := context.WithCancel(ctx)
	g.AddStarted("the "+opts.Source+" source", stopSource)
	if a.source, err = newSource(opts, a.log); err == nil {
		err = a.source.Start(srcCtx, a.store)
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
	if l.err != nil {
		return l.err
	}
	a.dp = l.dp
	g.AddStarted("datapath (stays pinned and attached)", func() { _ = a.dp.Close() })
	for _, r := range a.dp.Replaced {
		a.report("datapath", r)
	}
	return nil
}

// program attaches to the loaded datapath, builds the reconcilers and
// programs the services before this agent's programs take over the hooks.
func (a *Agent) program(g *rungroup.Group) (err error) {
	opts := a.opts
	a.chooseSocketDestroyer()
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
	a.log.Info("datapath loaded", "adopted", a.dp.Adopted, "attachMode", mode, "kernel", a.features.Release, "tcx", a.features.TCX)

	a.setStage("starting the endpoint, service and policy reconcilers")
	a.metrics = a.newMetrics()
	set, err := reconcilers.New(reconcilers.Config{
		NodeName: opts.NodeName, Maps: a.maps, Store: a.store, StateDir: opts.StateDir,
		Service: opts.serviceOptions(), PolicyAudit: opts.PolicyAudit, PolicyMapMax: int(opts.Datapath.PolicyMapMax),
		Attacher: a.attacher, BackendsRemoved: a.destroySockets, Metrics: a.metrics, Logger: a.log,
		ProxyPorts: opts.ProxyPorts,
	})
	if err != nil {
		return err
	}
	a.lb, a.policy, a.eps = set.Services, set.Policy, set.Endpoints
	// The node's proxy is configured from the compiled L7 policy.
	a.l7 = a.policy

	// Services are programmed before any program of this agent replaces
	// the previous agent's on a hook (socket LB here, endpoints and uplinks
	// in the endpoint manager): a map that Load replaced (sl_lb_maglev
	// after a --maglev-table-size change) starts empty, and the old
	// programs keep their old tables until swapped, so swapping after this
	// pass means no new connection meets a Maglev service without its
	// table. The reconciler's first run then finds nothing left to write.
	a.setStage("programming services")
	a.lb.Reconcile(true)
	if err := a.lb.Status().LastErr; err != nil {
		a.log.Warn("first service pass", "error", err)
	}
	if opts.Datapath.SockLB == datapath.SockLBOff {
		err = a.dp.DetachSockLB()
	} else {
		err = a.dp.AttachSockLB(opts.CgroupRoot)
	}
	if err != nil {
		return fmt.Errorf("socket LB: %w", err)
	}
	set.AddTo(g)
	return nil
}

// chooseSocketDestroyer picks how connected UDP sockets of removed
// backends are destroyed: the BPF iterator (6.5+), else sock_diag
// netlink, else not at all. Without socket LB no socket is connected to a
// backend behind the service's back, so there is nothing to destroy.
func (a *Agent) chooseSocketDestroyer() {
	if a.opts.Datapath.SockLB == datapath.SockLBOff {
		return
	}
	var err error
	if a.sockDestroy, err = a.dp.SocketDestroyer().Method(); err != nil {
		a.log.Warn("connected UDP sockets of removed backends will not be destroyed", "error", err)
		a.report("datapath", "connected UDP sockets of removed backends cannot be destroyed: "+err.Error())
	} else {
		a.log.Info("socket destruction", "method", a.sockDestroy)
	}
}

// stopping begins the shutdown, before any part stops.
func (a *Agent) stopping(cause error) {
	if cause != nil {
		a.log.Error("stopping", "error", cause)
	}
	a.log.Info("shutting down; the datapath stays pinned and attached")
	a.uninstallCNIIfRemoved()
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
		return newKubeSource(opts, log)
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

// version is what the observer API reports; set at build time with
// -ldflags "-X github.com/sluice-net/sluice/pkg/agent.version=...".
var version = "dev"

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
