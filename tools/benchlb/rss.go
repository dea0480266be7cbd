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
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-net/sluice/tests/harness"
	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

const rssUsage = `benchlb rss: memory and programming time of a real sluice-agent

Usage: benchlb rss [flags]      (root; ` + "`make bench-lb-rss`" + ` builds the binaries and runs it)

Starts sluice-agent (--source=files) on one simulated node (tests/harness: a
network namespace, cgroup, bpffs directory and state directory of its own,
all removed afterwards, so nothing is attached to the host) whose manifest
directory holds --services ClusterIP Services of one port, each with one
EndpointSlice of --endpoints ready endpoints, written before the agent
starts. It polls the agent's status on its API socket until it reports
every frontend and backend programmed, and reports:

  - the time from start until the API answers, until the services are
    programmed, and until the agent is ready;
  - VmRSS and VmHWM (peak RSS) from /proc/<pid>/status when the services are
    programmed and again after --settle idle (RssAnon and RssFile split
    VmRSS into the process's own memory and mapped files);
  - the Go heap, from the runtime's GC trace (the agent runs with
    GODEBUG=gctrace=1): live heap after the last GC and the heap goal,
    and the largest heap any GC started at.

Each round starts from nothing: empty bpffs directory (fresh maps) and no
saved model. Timing on shared machines is noisy (±20-30%); memory much less.

Flags:
`

type rssOptions struct {
	services, endpoints, rounds int
	settle, timeout             time.Duration
	binDir, jsonPath            string
	verbose                     bool
}

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
	Frontends  int             `json:"frontends"`
	Backends   int             `json:"backends"`
}

type rssReport struct {
	Started       time.Time  `json:"started"`
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
	fs.StringVar(&o.jsonPath, "json", "", "also write the results as JSON to this file")
	fs.BoolVar(&o.verbose, "verbose", false, "log the harness's steps")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), rssUsage)
		fs.PrintDefaults()
	}
	_ = fs.Parse(args)
	if o.services < 1 || o.endpoints < 1 || o.rounds < 1 {
		return errors.New("-services, -endpoints and -rounds must be at least 1")
	}
	if os.Geteuid() != 0 {
		return errors.New("must run as root: it creates a network namespace, a cgroup and bpffs pins and loads eBPF programs; try: sudo make bench-lb-rss")
	}
	for _, t := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("missing command %s (package %s)", t, benchkit.PackageOf(t))
		}
	}
	if o.binDir != "" {
		os.Setenv(harness.EnvBinDir, o.binDir)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	rep, err := rss(ctx, o)
	if rep != nil && len(rep.Rounds) > 0 {
		printRSS(os.Stdout, rep)
		if o.jsonPath != "" {
			if jerr := benchkit.WriteJSON(o.jsonPath, rep); jerr != nil {
				fmt.Fprintln(os.Stderr, "benchlb rss:", jerr)
			}
		}
	}
	return err
}

func rss(ctx context.Context, o rssOptions) (*rssReport, error) {
	rep := &rssReport{Started: time.Now(), Services: o.services, Endpoints: o.endpoints, Settle: o.settle.String()}
	benchkit.RemoveStale()
	c, err := benchkit.NewCluster(ctx, "benchrss", o.verbose)
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
	if err := c.SyncManifests(); err != nil {
		return rep, err
	}
	manifest := sluiceManifest(genServices(o.services, o.endpoints, netip.AddrPort{}, "", "", ""))
	rep.ManifestBytes = int64(len(manifest))
	if err := node.WriteManifest("services.yaml", manifest); err != nil {
		return rep, err
	}
	benchkit.Logf("=== sluice-agent RSS: %d services × %d endpoints (%.1f MiB of manifests), %d round(s); harness run %s (netns %s, bpffs %s, cgroup %s, dir %s)",
		o.services, o.endpoints, float64(len(manifest))/(1<<20), o.rounds, c.ID, node.NetnsName, node.BPFRoot, node.CgroupRoot, c.TempDir)
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
		round, err := rssOnce(ctx, o, node, wrapper)
		if err != nil {
			return rep, fmt.Errorf("round %d: %w", r+1, err)
		}
		round.Round = r + 1
		rep.Rounds = append(rep.Rounds, round)
		benchkit.Logf("round %d: programmed after %.2fs, VmRSS %.0f MiB, VmHWM %.0f MiB, Go heap live %d MB",
			r+1, round.ProgrammedSeconds, kib(round.Programmed.VmRSS), kib(round.Programmed.VmHWM), round.Heap.LiveMB)
	}
	return rep, nil
}

func rssOnce(ctx context.Context, o rssOptions, node *harness.Node, bin string) (rssRound, error) {
	var round rssRound
	wantBackends := o.services * o.endpoints
	start := time.Now()
	a, err := node.StartAgent(bin, "--log-level=info", "--ct-gc-interval=10s",
		// sl_lb_backends and sl_lb_revnat hold every backend and frontend;
		// sl_lb_svc every frontend and slot.
		fmt.Sprintf("--lb-backends-max=%d", max(65536, 1<<bitsFor(wantBackends+o.services))),
		fmt.Sprintf("--lb-max=%d", max(262144, 1<<bitsFor(wantBackends+o.services))))
	if err != nil {
		return round, err
	}
	defer func() {
		if err := a.Stop(); err != nil {
			benchkit.Logf("stop agent: %v", err)
		}
	}()
	// nsenter and the wrapper exec the agent in the same process.
	if err := a.WaitExec(10 * time.Second); err != nil {
		return round, fmt.Errorf("cannot read the agent's memory: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	for round.ProgrammedSeconds == 0 || round.ReadySeconds == 0 {
		st, err := node.AgentStatus(wctx)
		if err == nil {
			if round.APISeconds == 0 {
				round.APISeconds = time.Since(start).Seconds()
			}
			if round.ProgrammedSeconds == 0 && st.Services.Frontends >= o.services && st.Services.Backends >= wantBackends {
				round.ProgrammedSeconds = time.Since(start).Seconds()
				round.Frontends, round.Backends = st.Services.Frontends, st.Services.Backends
				if round.Programmed, err = harness.ReadProcMem(a.Pid()); err != nil {
					return round, err
				}
			}
			if round.ReadySeconds == 0 && st.Ready {
				round.ReadySeconds = time.Since(start).Seconds()
			}
		}
		select {
		case <-a.Done():
			return round, fmt.Errorf("agent exited (%v); log tail:\n%s", a.ExitErr(), tailLines(a.Logs(), 30))
		case <-wctx.Done():
			return round, fmt.Errorf("agent did not program %d services × %d endpoints within %s (last error %v); log tail:\n%s",
				o.services, o.endpoints, o.timeout, err, tailLines(a.Logs(), 30))
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
	logs := a.Logs()
	round.Heap = harness.ParseGCTrace(logs)
	round.ColdPass = coldPassTook(logs)
	round.Phases = parsePhases(logs)
	return round, nil
}

// logPhases are the agent's startup phases as its log shows them: the
// manifests read and applied to the model, the datapath loaded, the
// services programmed. Seconds after "starting sluice-agent"; 0 if absent.
type logPhases struct {
	Manifests  float64 `json:"manifestsApplied"`
	Datapath   float64 `json:"datapathLoaded"`
	Programmed float64 `json:"servicesProgrammed"`
}

var logLine = regexp.MustCompile(`^time=(\S+) level=\S+ msg="([^"]+)"`)

func parsePhases(logs string) logPhases {
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
	fmt.Fprintf(w, "\n==== benchlb rss report (%s) ====\n", rep.Started.Format(time.RFC3339))
	fmt.Fprintf(w, "\nsluice-agent --source=files, %d ClusterIP services × %d ready endpoints (%d backends), %.1f MiB of manifests,\n",
		rep.Services, rep.Endpoints, rep.Services*rep.Endpoints, float64(rep.ManifestBytes)/(1<<20))
	fmt.Fprintln(w, "in a private network namespace, cgroup and bpffs directory, from empty maps and no saved model.")
	tw := benchkit.NewTable(w)
	fmt.Fprint(tw, "   \t")
	for _, r := range rep.Rounds {
		fmt.Fprintf(tw, "round %d\t", r.Round)
	}
	fmt.Fprintln(tw)
	row := func(label string, f func(rssRound) string) {
		fmt.Fprintf(tw, "   %s\t", label)
		for _, r := range rep.Rounds {
			fmt.Fprintf(tw, "%s\t", f(r))
		}
		fmt.Fprintln(tw)
	}
	secs := func(v float64) string { return fmt.Sprintf("%.2fs", v) }
	mib := func(v int64) string { return fmt.Sprintf("%.0f MiB", kib(v)) }
	row("start → API answers", func(r rssRound) string { return secs(r.APISeconds) })
	row("start → services programmed", func(r rssRound) string { return secs(r.ProgrammedSeconds) })
	row("start → ready", func(r rssRound) string { return secs(r.ReadySeconds) })
	row("agent log: manifests applied to the model", func(r rssRound) string { return "+" + secs(r.Phases.Manifests) })
	row("agent log: datapath loaded", func(r rssRound) string { return "+" + secs(r.Phases.Datapath) })
	row("agent log: services programmed", func(r rssRound) string { return "+" + secs(r.Phases.Programmed) })
	row("  of which the reconciler's pass (took)", func(r rssRound) string { return r.ColdPass })
	row("frontends / backends", func(r rssRound) string { return fmt.Sprintf("%d / %d", r.Frontends, r.Backends) })
	row("VmRSS when programmed", func(r rssRound) string { return mib(r.Programmed.VmRSS) })
	row("  RssAnon / RssFile", func(r rssRound) string {
		return fmt.Sprintf("%.0f / %.0f MiB", kib(r.Programmed.RssAnon), kib(r.Programmed.RssFile))
	})
	row("VmHWM (peak RSS) when programmed", func(r rssRound) string { return mib(r.Programmed.VmHWM) })
	row("VmRSS after "+rep.Settle+" idle", func(r rssRound) string { return mib(r.Settled.VmRSS) })
	row("VmHWM after "+rep.Settle+" idle", func(r rssRound) string { return mib(r.Settled.VmHWM) })
	row("Go heap live after last GC / goal", func(r rssRound) string {
		return fmt.Sprintf("%d / %d MB", r.Heap.LiveMB, r.Heap.GoalMB)
	})
	row("Go heap peak at a GC / GCs", func(r rssRound) string { return fmt.Sprintf("%d MB / %d", r.Heap.PeakMB, r.Heap.GCs) })
	tw.Flush()
	fmt.Fprintln(w, "   The agent reads the manifests before it loads the datapath and serves its API, and the status")
	fmt.Fprintln(w, "   handler waits for the reconciler's first pass: the API answers when the services are programmed.")
	fmt.Fprintln(w, "   Agent log times are after its \"starting\" line (process start + Go runtime init).")
	fmt.Fprintln(w, "   Go heap figures are from GODEBUG=gctrace=1 (MB as the runtime prints them); RSS includes the")
	fmt.Fprintln(w, "   runtime's free but not yet returned pages and the mapped binary (RssFile).")
}
