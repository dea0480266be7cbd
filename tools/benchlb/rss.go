package main

// `benchlb rss`: a real sluice-agent's memory and programming time with
// many services from the files source (`make bench-lb-rss`).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

const rssUsage = `benchlb rss: memory and programming time of a real sluice-agent

Usage: benchlb rss [flags]      (root; ` + "`make bench-lb-rss`" + ` and ` + "`make bench-edge-rss`" + ` build the binaries and run it)

Starts sluice-agent (--source=files) on one simulated node (internal/testing/harness: a
network namespace, cgroup, bpffs directory and state directory of its own,
all removed afterwards, so nothing is attached to the host) whose manifest
directory is written before the agent starts. Two scenarios:

  default   --services ClusterIP Services of one port, each with one
            EndpointSlice of --endpoints ready endpoints (fake addresses,
            no pods): a large cluster's services on one node.
  --edge    an edge host: --pods real pods on the node (network namespaces
            and veths the agent attaches to; label app=app-0..9), --services
            Services (default 100) each selecting one app, their
            EndpointSlices (the app's pods) and four NetworkPolicies that
            select every pod; the agent runs with its default map sizes.

It polls the agent's status on its API socket until it reports every
frontend and backend programmed (and, with --edge, every pod an endpoint
under policy), and reports:

  - the time from start until the API answers, until the services are
    programmed, and until the agent is ready, and when the agent logged
    the end of each startup phase;
  - VmRSS and VmHWM (peak RSS) from /proc/<pid>/status when the services are
    programmed and again after --settle idle (RssAnon and RssFile split
    VmRSS into the process's own memory and mapped files);
  - the Go heap, from the runtime's GC trace (the agent runs with
    GODEBUG=gctrace=1): live heap after the last GC and the heap goal,
    and the largest heap any GC started at;
  - the kernel memory of the agent's BPF maps and programs (memlock in
    /proc/<pid>/fdinfo), which is not part of the RSS.

With several rounds the last column is the median. Each round starts from
nothing: empty bpffs directory (fresh maps) and no saved model. Timing on
shared machines is noisy (±20-30%); memory much less. --profile DIR also
saves the agent's heap profile (/debug/pprof/heap, in-use and allocated
space) when programmed and after the settle time, for
` + "`go tool pprof -top -sample_index=inuse_space`" + `; the forced GC of a
profile changes the figures after it, so compare figures of runs without.

Flags:
`

type rssOptions struct {
	benchkit.OutputFlags
	services, endpoints, rounds int
	// edge: the edge scenario with pods real pods (see rssUsage).
	edge                bool
	pods                int
	settle, timeout     time.Duration
	binDir              string
	profileDir, logsDir string
	// agentFlags are passed to the agent after the benchmark's own.
	agentFlags []string
}

// pprofAddress is where the agent serves profiles with --profile, in its
// node's network namespace.
const pprofAddress = "127.0.0.1:6061"

// rssRound is one agent start.
type rssRound struct {
	Round int `json:"round"`
	// Seconds from the agent's start until its API answered, until it
	// reported every service programmed, and until it reported ready.
	APISeconds        float64 `json:"apiSeconds"`
	ProgrammedSeconds float64 `json:"programmedSeconds"`
	ReadySeconds      float64 `json:"readySeconds"`
	// ColdPass is the reconciler's own duration of the pass that
	// programmed the services, from its log ("took").
	ColdPass string `json:"coldPass,omitempty"`
	// Phases are when the agent logged the end of each startup phase,
	// in seconds after it logged its start.
	Phases     logPhases       `json:"logPhases"`
	Programmed harness.ProcMem `json:"atProgrammed"`
	Settled    harness.ProcMem `json:"afterSettle"`
	Heap       harness.GCStats `json:"goHeap"`
	// BPF is the kernel memory of the agent's maps and programs when
	// programmed.
	BPF       harness.BPFMem `json:"bpf"`
	Frontends int            `json:"frontends"`
	Backends  int            `json:"backends"`
	Endpoints int            `json:"endpoints"`
}

type rssReport struct {
	benchkit.Header
	// Edge is the edge scenario, with Pods pods.
	Edge          bool       `json:"edge"`
	Pods          int        `json:"pods,omitempty"`
	Services      int        `json:"services"`
	Endpoints     int        `json:"endpoints"`
	ManifestBytes int64      `json:"manifestBytes"`
	Settle        string     `json:"settle"`
	Rounds        []rssRound `json:"rounds"`
}

func runRSS(args []string) error {
	fs := flag.NewFlagSet("rss", flag.ExitOnError)
	var o rssOptions
	fs.IntVar(&o.services, "services", 10000, "services (one TCP port each)")
	fs.IntVar(&o.endpoints, "endpoints", 10, "ready endpoints per service")
	fs.IntVar(&o.rounds, "rounds", 1, "agent starts, each from empty maps and no saved model")
	fs.DurationVar(&o.settle, "settle", 10*time.Second, "idle time after programming before memory is read again")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "longest wait for the agent to program the services")
	fs.StringVar(&o.binDir, "bin-dir", "", "directory holding a prebuilt sluice-agent (default: build it)")
	fs.BoolVar(&o.edge, "edge", false, "the edge scenario: real pods, services selecting them and network policies (see above)")
	fs.IntVar(&o.pods, "pods", 50, "pods of the edge scenario")
	fs.StringVar(&o.profileDir, "profile", "", "save the agent's heap profiles into this directory (see above)")
	fs.StringVar(&o.logsDir, "logs", "", "save each round's agent log into this directory")
	o.OutputFlags.Register(fs)
	fs.Func("agent-flag", "a flag for the agent, e.g. --agent-flag=--ct-max=32768 (repeatable): map sizes, GOGC-like settings", func(v string) error {
		o.agentFlags = append(o.agentFlags, v)
		return nil
	})
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), rssUsage)
		fs.PrintDefaults()
	}
	_ = fs.Parse(args)
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.edge && !set["services"] {
		o.services = 100
	}
	if o.services < 1 || o.endpoints < 1 || o.rounds < 1 || o.pods < 1 {
		return errors.New("-services, -endpoints, -pods and -rounds must be at least 1")
	}
	if set["endpoints"] && o.edge {
		return errors.New("-endpoints is for the default scenario: with -edge a service's endpoints are its app's pods (-pods / 10)")
	}
	if set["pods"] && !o.edge {
		return errors.New("-pods is for the edge scenario (-edge)")
	}
	if o.edge && o.pods < edgeApps {
		return fmt.Errorf("-pods must be at least %d with -edge (one per app)", edgeApps)
	}
	for _, d := range []string{o.profileDir, o.logsDir} {
		if d != "" {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
	}
	if err := benchkit.RequireRoot("bench-lb-rss"); err != nil {
		return err
	}
	if err := benchkit.RequireCommands([]string{"ip", "nsenter"}, "apt-get install -y iproute2 util-linux"); err != nil {
		return err
	}
	if o.binDir != "" {
		os.Setenv(harness.EnvBinDir, o.binDir)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	rep, err := rss(ctx, o)
	if rep != nil && len(rep.Rounds) > 0 {
		printRSS(os.Stdout, rep)
		if o.JSONPath != "" {
			if jerr := benchkit.WriteJSON(o.JSONPath, rep); jerr != nil {
				fmt.Fprintln(os.Stderr, "benchlb rss:", jerr)
			}
		}
	}
	return err
}

func rss(ctx context.Context, o rssOptions) (*rssReport, error) {
	rep := &rssReport{Header: benchkit.StartHeader(map[string]string{"rounds": fmt.Sprint(o.rounds), "agentFlags": strings.Join(o.agentFlags, " ")}), Edge: o.edge, Services: o.services, Endpoints: o.endpoints,
		Settle: o.settle.String()}
	defer rep.End()
	benchkit.RemoveStale()
	c, err := benchkit.NewCluster(ctx, "benchrss", o.Verbose)
	if err != nil {
		return rep, err
	}
	defer func() {
		if err := c.Cleanup(); err != nil {
			benchkit.Logf("cleanup: %v", err)
		}
	}()
	bin, err := harness.Build(ctx, agentPkg)
	if err != nil {
		return rep, err
	}
	wrapper, err := harness.GCTraceWrapper(c.TempDir, bin)
	if err != nil {
		return rep, err
	}
	node, err := c.AddNode(ctx, "node1", harness.Routed)
	if err != nil {
		return rep, err
	}
	var manifest, what string
	if o.edge {
		rep.Pods = o.pods
		benchkit.Logf("creating %d pods", o.pods)
		pods, err := addEdgePods(ctx, node, o.pods)
		if err != nil {
			return rep, err
		}
		if err := c.SetNamespaceLabels("monitoring", nil); err != nil {
			return rep, err
		}
		manifest = edgeManifest(pods, o.services)
		rep.Endpoints = 0 // a service's endpoints are its app's pods
		what = fmt.Sprintf("edge: %d pods, %d services, 4 policies", o.pods, o.services)
	} else {
		manifest = sluiceManifest([]ipFamily{familyIPv4}, [][]svcSpec{genServices(familyIPv4, o.services, o.endpoints, netip.AddrPort{}, "", "", "")})
		what = fmt.Sprintf("%d services × %d endpoints", o.services, o.endpoints)
	}
	if err := c.SyncManifests(); err != nil {
		return rep, err
	}
	rep.ManifestBytes = int64(len(manifest))
	if err := node.WriteManifest("services.yaml", manifest); err != nil {
		return rep, err
	}
	benchkit.Logf("=== sluice-agent RSS, %s (%.1f MiB of manifests), %d round(s); harness run %s (netns %s, bpffs %s, cgroup %s, dir %s)",
		what, float64(len(manifest))/(1<<20), o.rounds, c.ID, node.NetnsName, node.BPFRoot, node.CgroupRoot, c.TempDir)
	for r := range o.rounds {
		if r > 0 {
			// Start from nothing again: no pinned maps, no saved model.
			if err := os.RemoveAll(node.BPFRoot); err != nil {
				return rep, err
			}
			if err := os.Mkdir(node.BPFRoot, 0o700); err != nil {
				return rep, err
			}
			if err := os.Remove(filepath.Join(node.StateDir, "model.json")); err != nil && !errors.Is(err, os.ErrNotExist) {
				return rep, err
			}
		}
		round, err := rssOnce(ctx, o, node, wrapper, r+1)
		if err != nil {
			return rep, fmt.Errorf("round %d: %w", r+1, err)
		}
		round.Round = r + 1
		rep.Rounds = append(rep.Rounds, round)
		benchkit.Logf("round %d: programmed after %.2fs, VmRSS %.0f MiB, VmHWM %.0f MiB, Go heap live %d MB, BPF maps %.0f MiB",
			r+1, round.ProgrammedSeconds, kib(round.Programmed.VmRSS), kib(round.Programmed.VmHWM), round.Heap.LiveMB,
			float64(round.BPF.MapBytes)/(1<<20))
	}
	return rep, nil
}

func rssOnce(ctx context.Context, o rssOptions, node *harness.Node, bin string, n int) (rssRound, error) {
	var round rssRound
	wantBackends := o.services * o.endpoints
	args := []string{"--log-level=info", "--ct-gc-interval=10s"}
	if o.edge {
		wantBackends = edgeBackends(o.pods, o.services)
	} else {
		args = append(args,
			// sl_lb_backends and sl_lb_revnat hold every backend and frontend;
			// sl_lb_svc every frontend and slot.
			fmt.Sprintf("--lb-backends-max=%d", max(65536, 1<<bitsFor(wantBackends+o.services))),
			fmt.Sprintf("--lb-max=%d", max(262144, 1<<bitsFor(wantBackends+o.services))))
	}
	if o.profileDir != "" {
		args = append(args, "--pprof-address="+pprofAddress)
	}
	args = append(args, o.agentFlags...)
	start := time.Now()
	a, err := node.StartAgent(bin, args...)
	if err != nil {
		return round, err
	}
	defer func() {
		if o.logsDir != "" {
			if err := os.WriteFile(filepath.Join(o.logsDir, fmt.Sprintf("agent-round%d.log", n)), []byte(a.Logs()), 0o644); err != nil {
				benchkit.Logf("save agent log: %v", err)
			}
		}
		if err := a.Stop(); err != nil {
			benchkit.Logf("stop agent: %v", err)
		}
	}()
	// nsenter and the wrapper exec the agent in the same process.
	if err := a.WaitExec(10 * time.Second); err != nil {
		return round, fmt.Errorf("cannot read the agent's memory: %w", err)
	}
	programmed := func(st *api.Status) bool {
		if st.Services.Frontends < o.services || st.Services.Backends < wantBackends {
			return false
		}
		return !o.edge || st.Endpoints >= o.pods && st.Policy.EnforcedEndpoints >= o.pods
	}
	wctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	for round.ProgrammedSeconds == 0 || round.ReadySeconds == 0 {
		st, err := node.AgentStatus(wctx)
		if err == nil {
			if round.APISeconds == 0 {
				round.APISeconds = time.Since(start).Seconds()
			}
			if round.ProgrammedSeconds == 0 && programmed(st) {
				round.ProgrammedSeconds = time.Since(start).Seconds()
				round.Frontends, round.Backends, round.Endpoints = st.Services.Frontends, st.Services.Backends, st.Endpoints
				if round.Programmed, err = harness.ReadProcMem(a.Pid()); err != nil {
					return round, err
				}
				if round.BPF, err = harness.ReadBPFMem(a.Pid()); err != nil {
					return round, err
				}
				saveHeapProfile(ctx, o, node, n, "programmed")
			}
			if round.ReadySeconds == 0 && st.Ready {
				round.ReadySeconds = time.Since(start).Seconds()
			}
		}
		select {
		case <-a.Done():
			return round, fmt.Errorf("agent exited (%v); log tail:\n%s", a.ExitErr(), tailLines(a.Logs(), 30))
		case <-wctx.Done():
			return round, fmt.Errorf("agent did not program %d services with %d backends within %s (last error %v); log tail:\n%s",
				o.services, wantBackends, o.timeout, err, tailLines(a.Logs(), 30))
		case <-time.After(50 * time.Millisecond):
		}
	}
	select {
	case <-time.After(o.settle):
	case <-ctx.Done():
		return round, ctx.Err()
	}
	if round.Settled, err = harness.ReadProcMem(a.Pid()); err != nil {
		return round, err
	}
	saveHeapProfile(ctx, o, node, n, "settled")
	logs := a.Logs()
	round.Heap = harness.ParseGCTrace(logs)
	round.ColdPass = coldPassTook(logs)
	round.Phases = parsePhases(logs, start)
	return round, nil
}

// saveHeapProfile saves the agent's heap profile as
// <profileDir>/heap-<scenario>-round<n>-<when>.pb.gz, if asked to.
func saveHeapProfile(ctx context.Context, o rssOptions, node *harness.Node, n int, when string) {
	if o.profileDir == "" {
		return
	}
	scenario := "services"
	if o.edge {
		scenario = "edge"
	}
	// gc=1: the in-use figures are of live objects, as after a GC.
	body, err := harness.NetnsGet(ctx, node.NetnsPath, "http://"+pprofAddress+"/debug/pprof/heap?gc=1")
	if err != nil {
		benchkit.Logf("heap profile: %v", err)
		return
	}
	path := filepath.Join(o.profileDir, fmt.Sprintf("heap-%s-round%d-%s.pb.gz", scenario, n, when))
	if err := os.WriteFile(path, body, 0o644); err != nil {
		benchkit.Logf("heap profile: %v", err)
	}
}

// logPhases are the agent's startup phases as its log shows them: the
// manifests read and applied to the model, the datapath loaded, the
// services programmed. Seconds after "starting sluice-agent"; 0 if absent.
type logPhases struct {
	// Started is the seconds from launching the agent (nsenter, the
	// wrapper, exec, Go runtime and package initialisation) to its
	// "starting" line.
	Started    float64 `json:"started"`
	Manifests  float64 `json:"manifestsApplied"`
	Datapath   float64 `json:"datapathLoaded"`
	Programmed float64 `json:"servicesProgrammed"`
}

var logLine = regexp.MustCompile(`^time=(\S+) level=\S+ msg="([^"]+)"`)

func parsePhases(logs string, launched time.Time) logPhases {
	var ph logPhases
	var start time.Time
	for _, l := range strings.Split(logs, "\n") {
		m := logLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			continue
		}
		at := func(p *float64) {
			if *p == 0 && !start.IsZero() {
				*p = t.Sub(start).Seconds()
			}
		}
		switch m[2] {
		case "starting sluice-agent":
			start = t
			ph.Started = t.Sub(launched).Seconds()
		case "applied manifests":
			at(&ph.Manifests)
		case "datapath loaded":
			at(&ph.Datapath)
		case "services programmed":
			at(&ph.Programmed)
		}
	}
	return ph
}

// bitsFor is the number of bits of n, so 1<<bitsFor(n) > n.
func bitsFor(n int) int {
	b := 0
	for ; n > 0; n >>= 1 {
		b++
	}
	return b
}

// coldPassTook is the "took" of the reconciler's first "services
// programmed" log line.
var tookRe = regexp.MustCompile(`msg="services programmed".* took=(\S+)`)

func coldPassTook(logs string) string {
	if m := tookRe.FindStringSubmatch(logs); m != nil {
		return m[1]
	}
	return ""
}

func tailLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func kib(v int64) float64 { return float64(v) / 1024 }

func printRSS(w io.Writer, rep *rssReport) {
	rep.Print(w, "benchlb rss")
	if rep.Edge {
		fmt.Fprintf(w, "\nsluice-agent --source=files, edge host: %d pods on the node, %d ClusterIP services (their pods as endpoints),\n4 network policies selecting every pod, default map sizes, %.2f MiB of manifests,\n",
			rep.Pods, rep.Services, float64(rep.ManifestBytes)/(1<<20))
	} else {
		fmt.Fprintf(w, "\nsluice-agent --source=files, %d ClusterIP services × %d ready endpoints (%d backends), %.1f MiB of manifests,\n",
			rep.Services, rep.Endpoints, rep.Services*rep.Endpoints, float64(rep.ManifestBytes)/(1<<20))
	}
	fmt.Fprintln(w, "in a private network namespace, cgroup and bpffs directory, from empty maps and no saved model.")
	tw := benchkit.NewTable(w)
	median := len(rep.Rounds) >= 3
	fmt.Fprint(tw, "   \t")
	for _, r := range rep.Rounds {
		fmt.Fprintf(tw, "round %d\t", r.Round)
	}
	if median {
		fmt.Fprint(tw, "median\t")
	}
	fmt.Fprintln(tw)
	// row prints label, v of each round formatted by f, and the median.
	row := func(label string, v func(rssRound) float64, f func(float64) string) {
		fmt.Fprintf(tw, "   %s\t", label)
		var vs []float64
		for _, r := range rep.Rounds {
			vs = append(vs, v(r))
			fmt.Fprintf(tw, "%s\t", f(v(r)))
		}
		if median {
			m, _, _ := benchkit.Quartiles(vs)
			fmt.Fprintf(tw, "%s\t", f(m))
		}
		fmt.Fprintln(tw)
	}
	text := func(label string, f func(rssRound) string) {
		fmt.Fprintf(tw, "   %s\t", label)
		for _, r := range rep.Rounds {
			fmt.Fprintf(tw, "%s\t", f(r))
		}
		fmt.Fprintln(tw)
	}
	secs := func(v float64) string { return fmt.Sprintf("%.2fs", v) }
	after := func(v float64) string { return "+" + secs(v) }
	mib := func(v float64) string { return fmt.Sprintf("%.1f MiB", v/1024) }
	mb := func(v float64) string { return fmt.Sprintf("%.0f MB", v) }
	bytesMiB := func(v float64) string { return fmt.Sprintf("%.1f MiB", v/(1<<20)) }
	row("start → API answers", func(r rssRound) float64 { return r.APISeconds }, secs)
	row("start → services programmed", func(r rssRound) float64 { return r.ProgrammedSeconds }, secs)
	row("start → ready", func(r rssRound) float64 { return r.ReadySeconds }, secs)
	row("start → services in the maps (agent log)", func(r rssRound) float64 { return r.Phases.Started + r.Phases.Programmed }, secs)
	row("agent log: \"starting\" (exec, Go init)", func(r rssRound) float64 { return r.Phases.Started }, secs)
	row("agent log: manifests applied to the model", func(r rssRound) float64 { return r.Phases.Manifests }, after)
	row("agent log: datapath loaded", func(r rssRound) float64 { return r.Phases.Datapath }, after)
	row("agent log: services programmed", func(r rssRound) float64 { return r.Phases.Programmed }, after)
	row("  of which the reconciler's pass (took)", func(r rssRound) float64 {
		d, _ := time.ParseDuration(r.ColdPass)
		return d.Seconds()
	}, secs)
	text("frontends / backends", func(r rssRound) string { return fmt.Sprintf("%d / %d", r.Frontends, r.Backends) })
	if rep.Edge {
		text("endpoints (pods)", func(r rssRound) string { return fmt.Sprint(r.Endpoints) })
	}
	row("VmRSS when programmed", func(r rssRound) float64 { return float64(r.Programmed.VmRSS) }, mib)
	row("  RssAnon", func(r rssRound) float64 { return float64(r.Programmed.RssAnon) }, mib)
	row("  RssFile", func(r rssRound) float64 { return float64(r.Programmed.RssFile) }, mib)
	row("VmHWM (peak RSS) when programmed", func(r rssRound) float64 { return float64(r.Programmed.VmHWM) }, mib)
	row("VmRSS after "+rep.Settle+" idle", func(r rssRound) float64 { return float64(r.Settled.VmRSS) }, mib)
	row("  RssAnon", func(r rssRound) float64 { return float64(r.Settled.RssAnon) }, mib)
	row("VmHWM after "+rep.Settle+" idle", func(r rssRound) float64 { return float64(r.Settled.VmHWM) }, mib)
	row("Go heap live after last GC", func(r rssRound) float64 { return float64(r.Heap.LiveMB) }, mb)
	row("Go heap goal", func(r rssRound) float64 { return float64(r.Heap.GoalMB) }, mb)
	row("Go heap peak at a GC", func(r rssRound) float64 { return float64(r.Heap.PeakMB) }, mb)
	row("GCs", func(r rssRound) float64 { return float64(r.Heap.GCs) }, func(v float64) string { return fmt.Sprintf("%.0f", v) })
	row("kernel: BPF maps (memlock, not in RSS)", func(r rssRound) float64 { return float64(r.BPF.MapBytes) }, bytesMiB)
	row("kernel: BPF programs (memlock)", func(r rssRound) float64 { return float64(r.BPF.ProgBytes) }, bytesMiB)
	tw.Flush()
	if n := len(rep.Rounds); n > 0 {
		last := rep.Rounds[n-1].BPF
		fmt.Fprintf(w, "   Largest BPF maps (round %d; %d maps, %d programs):", n, len(last.Maps), last.Progs)
		for i, m := range last.Maps {
			if i == 8 {
				break
			}
			fmt.Fprintf(w, " %s %.1f MiB (%s, %d entries);", m.Name, float64(m.Memlock)/(1<<20), m.Type, m.MaxEntries)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "   The status handler waits for the reconciler's first pass: the API answers when the services are programmed;")
	fmt.Fprintln(w, "   a status also counts every entry of the LB maps (about 0.3 s at 100k backends), which the")
	fmt.Fprintln(w, "   time the services are in the maps, from the agent's log (clock of this machine), leaves out.")
	fmt.Fprintln(w, "   Agent log times are after its \"starting\" line (process start + Go runtime init).")
	fmt.Fprintln(w, "   Go heap figures are from GODEBUG=gctrace=1 (MB as the runtime prints them); RSS includes the")
	fmt.Fprintln(w, "   runtime's free but not yet returned pages and the mapped binary (RssFile).")
}
