// Command benchflows measures Sluice's flow telemetry: how many datapath
// events per second a real sluice-agent carries from the kernel into its
// flow store and out to a `sluice observe --follow` client, where it starts
// losing them, what it costs in CPU, and what the flow buffer costs in
// memory (`make bench-flows`, as root). See usage for what it measures and
// needs.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

const usage = `benchflows: Sluice flow telemetry, kernel → flow store → following client

Usage: benchflows [flags]      (root; ` + "`make bench-flows`" + ` builds the binaries and runs it)
       benchflows report FILE  print a report saved with -json again
       benchflows cleanup      remove what killed runs left (namespaces, cgroups, pins)

One routed simulated node (internal/testing/harness: network namespaces, a cgroup and
a bpffs directory of its own, no traffic leaves them) runs a real
sluice-agent (tcx attach, default flags unless -agent-flags) with a client
pod, a server pod running a TCP echo server and -pods idle pods (a node's
endpoints: the agent's enrichment looks local pods up per flow). Datapath
events go from the ring buffer sl_events through the agent's reader,
converter (enrichment with pod, identity, workload) and flow store to its
Hubble observer on <state-dir>/hubble.sock. Measured, in one run:

 1. Events/s delivered at increasing offered rates, by two generators:
      test-run     BPF_PROG_TEST_RUN of the sl_from_ep the agent attached to
                   the client pod's veth (found with BPF_PROG_QUERY, so its
                   events go into the agent's own ring), run from a process
                   in the node's netns with the veth as skb->dev: a SYN
                   (new connection: a trace event) then an RST (closed: a
                   connection-end event) per source port, ports reused, on a
                   fixed schedule (-rates, events/s). It reaches rates real
                   connections cannot on a small machine.
      connections  real TCP connections from the client pod to the server
                   pod (connect, 1-byte echo, close with RST) on a fixed
                   schedule (-conn-rates, connections/s); every connection
                   is a trace and an end event on each pod's endpoint.
    for two variants, interleaved rate by rate:
      store        no client: kernel → flow store only
      follow       one ` + "`sluice observe --follow -o json`" + ` (the CLI, as a user runs
                   it) reading the observer; its output lines are counted
    Per step: events offered (the generator's count, or what the agent
    stored plus what the kernel lost), stored (the store's seen counter over
    the agent's status API), lost in the kernel (the events-lost counter,
    read from the maps), printed by the follower and skipped for it (the
    observer's HUBBLE_RING_BUFFER notices: it read too slowly), and CPU from
    /proc/<pid>/stat of the agent, the follower, the generator and the whole
    machine over the generator's window (set-up and status reads outside).
 2. The highest offered rate with zero loss (nothing lost in the kernel, the
    follower printed every stored flow), refined by -refine bisection steps
    between the last clean rate and the first lossy one, and the loss above.
 3. Agent CPU per 10k events/s (its CPU over the window less its idle CPU,
    measured before the steps, per 10k events/s stored), and the Go heap of
    the flow buffer per 1,000 flows: a flow.Store filled with the records the
    flow.Converter resolved from trace/end events of a synthetic cluster (48
    Deployments, 192 pods, 4 labels each, namespace labels, ReplicaSet
    owners), HeapAlloc after GC before and after, in a process of its own.

With -baseline DIR (another tree's sluice-agent, sluice and benchflows,
e.g. main's), a second node runs that build's agent with the same pods,
every step runs for both builds in turn at the same rate, the baseline's
own flowmem measures its store, and section 5 gives before/after ratios
of figures measured in this one run:

  git archive main | tar -x -C /tmp/base && (cd /tmp/base && make build &&
      go build -o bin/benchflows ./tools/benchflows)
  make bench-flows BENCHFLOWS_FLAGS="-baseline /tmp/base/bin"

Timing on shared machines is noisy (±20-30%, and every process here shares
the machine's CPUs with the others: the machine column shows how busy it
was); nothing passes or fails on time.

Requires: root (namespaces, cgroups, bpffs, eBPF), Linux with tcx (6.6+),
cgroup v2, bpffs, iproute2 and util-linux (ip, nsenter: the harness).
Nothing is installed by this tool.

Flags:
`

type options struct {
	rates      []int
	connRates  []int
	variants   []string
	duration   time.Duration
	idle       time.Duration
	refine     int
	pods       int
	workers    int
	agentFlags []string
	memFlows   string
	skipTest   bool
	skipConns  bool
	binDir     string
	profileDir string
	baseline   string
	benchkit.OutputFlags
}

var allVariants = []string{"store", "follow"}

func main() {
	// The harness re-executes this binary for its own workloads, and the
	// benchmark re-executes it for its generators and echo server.
	harness.RunWorkloadIfRequested()
	benchkit.RunSubcommand("benchflows", map[string]func([]string) error{
		"serve":   benchkit.Serve,
		"probe":   benchkit.Probe,
		"emit":    runEmit,
		"connect": runConnect,
		"flowmem": runFlowMem,
		"report":  runReport,
		"cleanup": benchkit.Cleanup,
	})

	var o options
	rates := flag.String("rates", "1000,2000,5000,10000,20000,30000,50000,100000", "offered events/s of the test-run generator, ascending")
	connRates := flag.String("conn-rates", "250,500,1000,2000,4000", "offered connections/s of the connection generator, ascending")
	variants := flag.String("variants", strings.Join(allVariants, ","), "store (no follower) and/or follow (one sluice observe --follow)")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "measured duration of each step")
	flag.DurationVar(&o.idle, "idle", 3*time.Second, "how long the idle agent's CPU is measured")
	flag.IntVar(&o.refine, "refine", 3, "bisection steps between the last rate without loss and the first with loss (test-run)")
	flag.IntVar(&o.pods, "pods", 30, "idle pods on the node besides the client and the server")
	flag.IntVar(&o.workers, "workers", 16, "connections in flight at most (connection generator)")
	agentFlags := flag.String("agent-flags", "", "extra sluice-agent flags, space-separated, e.g. \"--flow-buffer=16384 --events-buffer=4194304\"")
	flag.StringVar(&o.memFlows, "mem-flows", "4096,16384,65536", "flow store sizes of the memory measurement")
	flag.BoolVar(&o.skipTest, "skip-test-run", false, "skip the test-run generator")
	flag.BoolVar(&o.skipConns, "skip-conns", false, "skip the connection generator")
	flag.StringVar(&o.binDir, "bin-dir", "", "directory holding prebuilt sluice-agent and sluice (default: build them)")
	flag.StringVar(&o.profileDir, "profile", "", "write Go CPU profiles of the agent and the follower for every step, and the agent's heap at the end, into this directory (the agent runs with --pprof; take figures from a run without it)")
	flag.StringVar(&o.baseline, "baseline", "", "directory of another build's sluice-agent, sluice and benchflows (e.g. of the main branch) to measure beside this tree's, step by step on a node of its own, with before/after ratios")
	o.OutputFlags.Register(flag.CommandLine)
	driver.ParseFlags("report", "cleanup")
	var err error
	if o.rates, err = benchkit.ParseInts(*rates, 2); err != nil {
		fatalf("-rates: %v", err)
	}
	if o.connRates, err = benchkit.ParseInts(*connRates, 1); err != nil {
		fatalf("-conn-rates: %v", err)
	}
	if o.variants, err = parseVariants(*variants); err != nil {
		fatalf("-variants: %v", err)
	}
	if o.duration < time.Second || o.idle < time.Second {
		fatalf("-duration and -idle must be at least 1s: the agent reads its ring every 50 ms, and CPU times tick every 10 ms")
	}
	if o.refine < 0 || o.pods < 0 || o.workers < 1 {
		fatalf("-refine and -pods must not be negative, -workers at least 1")
	}
	o.agentFlags = strings.Fields(*agentFlags)
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			fatalf("-profile: %v", err)
		}
	}
	if o.baseline != "" {
		for _, bin := range []string{"sluice-agent", "sluice", "benchflows"} {
			if _, err := os.Stat(filepath.Join(o.baseline, bin)); err != nil {
				fatalf("-baseline: %v (build the other tree's binaries there: make build, go build -o bin/ ./tools/benchflows)", err)
			}
		}
	}

	if err := benchkit.RequireRoot("bench-flows"); err != nil {
		fatalf("%v", err)
	}
	if err := benchkit.RequireCommands([]string{"ip", "nsenter"}, "apt-get install -y iproute2 util-linux"); err != nil {
		fatalf("%v", err)
	}
	if o.binDir != "" {
		os.Setenv(harness.EnvBinDir, o.binDir)
	}

	benchkit.Measure(driver, o.JSONPath, func(ctx context.Context) (*report, error) {
		rep, err := run(ctx, o)
		if cerr := harness.CleanupBuilds(); cerr != nil {
			benchkit.Logf("cleanup: %v", cerr)
		}
		return rep, err
	}, printReport)
}

// parseVariants parses a comma-separated subset of allVariants, in their
// order.
func parseVariants(list string) ([]string, error) {
	want := map[string]bool{}
	for _, v := range splitList(list) {
		if !slices.Contains(allVariants, v) {
			return nil, fmt.Errorf("unknown variant %q (known: %s)", v, strings.Join(allVariants, ", "))
		}
		want[v] = true
	}
	var out []string
	for _, k := range allVariants {
		if want[k] {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no variant in %q", list)
	}
	return out, nil
}

// splitList splits a comma-separated list, trimming spaces and dropping
// empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

var driver = benchkit.Driver{Name: "benchflows", Usage: usage}

func fatalf(format string, args ...any) { driver.Fatalf(format, args...) }
