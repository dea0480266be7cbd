// Command benchlb compares Sluice's service load balancing with kube-proxy's
// iptables (legacy and nft backends) and nftables modes on one machine
// (`make bench-lb`, as root). See usage for what it measures and needs.
package main

import (
	"context"
	"flag"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

const usage = `benchlb: Sluice service load balancing vs kube-proxy (iptables, nftables)

Usage: benchlb [flags]          (root; ` + "`make bench-lb`" + ` builds the binaries and runs it)
       benchlb rss [flags]      a real agent's RSS with many services (` + "`make bench-lb-rss`" + `; benchlb rss -h)
       benchlb l7 [flags]       the L7 proxy's cost per HTTP request vs direct (` + "`make bench-l7`" + `; benchlb l7 -h)

Measures, in one run, with every figure also given as a ratio to a baseline
measured in the same run (timing on shared machines is noisy, ±20-30%: read
the ratios; nothing here passes or fails on time):

 1. Connection rate (connect, 1-byte echo, close with RST) and request rate
    (1-byte ping-pong on persistent connections) from a client pod to a
    service VIP with --scales services programmed, for the variants
      sluice-packet    sluice-agent --socket-lb=off (DNAT per packet at the pod's veth)
      sluice-*-all-flows  the same with --flow-events=all (every event, as before the default became connections)
      sluice-socket    sluice-agent --socket-lb=all (connect() goes to the backend)
      iptables-legacy  kube-proxy iptables-mode nat rules, iptables-legacy-restore
                       (and ip6tables-legacy-restore for IPv6)
      iptables-nft     the same rules through iptables-nft-restore (nf_tables backend)
      nftables         kube-proxy nftables-mode table, nft -f (table ip, and ip6 for IPv6)
      direct           the client connects to the backend pod IP: the baseline
    in each address family of --families (default ipv4,ipv6). With IPv6
    the pods are dual-stack and every service is a dual-stack Service
    (RequireDualStack: an IPv4 and an IPv6 cluster IP, an EndpointSlice
    per family), so N services are N frontends in each family, 2N in
    Sluice's maps, and kube-proxy's variants load their rules for each
    family (iptables and ip6tables, table ip and ip6), as kube-proxy does
    on a dual-stack node; direct's IPv6 baseline connects to the backend
    pod's IPv6 address. Each run of a variant measures every family
    against the same agent or rules, the order of the families
    alternating from one run to the next. A family that fails in a run is
    reported with why (for Sluice, with the drops its datapath counted
    meanwhile, e.g. an IPv6 VIP on the per-packet path while that path
    translates IPv4 only: SERVICE_NEEDS_SOCKET_LB) and the run goes on.
    Only the target service (the last in rule order, iptables' worst case)
    has the real backend; the others are fillers with fake endpoints that
    make the tables large. Rounds are interleaved (each round runs every
    variant once, in an order rotated per round); the report gives, per
    family, medians over rounds and, per round, the ratio to that round's
    direct run of the same family (median and interquartile range of
    those ratios), and with both families each variant's IPv6 rate over
    its IPv4 rate of the same run (direct's is the kernel's own IPv6
    difference, the one to compare with).
    Topology: one routed simulated node (internal/testing/harness: network namespaces,
    no traffic leaves them) with the client and backend pods on it, so the
    client→backend path crosses the node's netns once (veth → routing →
    veth), where kube-proxy's rules and Sluice's programs act.
    Conntrack is active in the node netns for every variant and family (a
    CNI-style egress masquerade table, ip and ip6, is loaded at setup, and
    the legacy nat tables, which cannot be unregistered once used, are
    instantiated up front), as on a real node. Sluice's variants run with its defaults, so their
    packets between the two pods skip the node's stack (BPF host routing)
    where kube-proxy's cannot; the agent is measured once it is idle after
    programming (its CPU time still for a second).
    Between variants Sluice is fully detached (agent stopped, its bpffs
    root removed so pinned tcx and cgroup links are released), checked with
    BPF_PROG_QUERY on every interface of the node and the pods' cgroups, and
    bpftool link is reported.
 2. BPF_PROG_TEST_RUN ns/packet of sl_from_ep for a SYN to a VIP and an
    established packet at 10/10k/100k services, with a no-op program as the
    baseline, for each family of --families (IPv6: fd00:96:: frontends,
    timed in the same loop as IPv4, with N frontends of each family in
    the maps). Each row says what the program did with the family's
    packets, checked on every sample: translated to the backend, or
    dropped and why (a drop is timed as a drop, never passed off as a
    translation). Then every program's verifier figures: its length, the
    instructions the verifier walked to accept it and their share of the
    kernel's 1,000,000 limit (sl_from_ep, sl_to_ep, sl_from_netdev,
    sl_to_netdev and the socket programs, connect4/6, sendmsg4/6,
    recvmsg4/6, getpeername4/6):
      SLUICE_BENCH_LB_FAMILIES=ipv4,ipv6 go test -run '^$' -bench LB ./pkg/datapath/
 3. Cold programming of 10k services × 10 endpoints: Sluice's reconciler
    first pass into empty maps (go test -bench LBColdProgramming ./pkg/servicesync/),
    vs iptables-legacy-restore, iptables-nft-restore and nft -f of the
    equivalent kube-proxy rules into an empty netns (IPv4 services); and ns/op and
    allocs/op of the reconciler's passes, cold and after one service
    changed, with and without the kernel map writes, next to a full
    recompute as the previous design did it (go test -bench LBReconcile
    -benchmem ./pkg/servicesync/).
 A real agent's RSS with 10k services is a separate run: benchlb rss.

Requires: root (namespaces, cgroups, bpffs, eBPF), Linux with tcx (6.6+),
cgroup v2, bpffs, and the Debian packages
  iptables   (iptables-legacy-restore, iptables-nft-restore, iptables-legacy,
              and their ip6tables counterparts for IPv6)
  nftables   (nft)
  bpftool    (bpftool link/prog show)
  iproute2, util-linux (ip, nsenter: the harness)
  the Go toolchain (go), for part 2 and 3 (go test) unless -go-bench=false
e.g.  apt-get install -y iptables nftables bpftool iproute2
Nothing is installed by this tool; a missing command is named with its package.

Flags:
`

type options struct {
	benchkit.OutputFlags
	benchkit.RateFlags
	benchkit.GoBenchFlags
	scales          []int
	variants        []string
	families        []string
	fillerEndpoints int
	coldServices    int
	coldEndpoints   int
	coldRounds      int
	lbBenchtime     string
	// reconcileBenchtime is the -benchtime of BenchmarkLBReconcile.
	reconcileBenchtime string
	binDir             string
	skipRates          bool
	skipCold           bool
}

var allVariants = []string{"sluice-packet", "sluice-socket", "sluice-packet-all-flows", "sluice-socket-all-flows", "iptables-legacy", "iptables-nft", "nftables", "direct"}

func main() {
	// The harness re-executes this binary for its own workloads, and the
	// benchmark re-executes it for its own in the pods and the node.
	harness.RunWorkloadIfRequested()
	benchkit.RunSubcommand("benchlb", map[string]func([]string) error{
		"serve":           benchkit.Serve,
		"loadgen":         benchkit.Loadgen,
		"probe":           benchkit.Probe,
		"verify-detached": runVerifyDetached,
		"rss":             runRSS,
		"l7":              runL7,
		"http-serve":      benchkit.HTTPServe,
		"http-load":       benchkit.HTTPLoad,
		"http-get":        benchkit.HTTPGet,
	})

	var o options
	scales := flag.String("scales", "10,1000,10000", "comma-separated service counts for the rate measurements")
	variants := flag.String("variants", strings.Join(allVariants, ","), "variants to measure (direct is always added: it is the baseline)")
	families := flag.String("families", strings.Join(benchkit.Families, ","), "address families to measure, ipv4 and/or ipv6 (dual-stack pods and services when both)")
	o.OutputFlags.Register(flag.CommandLine)
	o.RateFlags.Register(flag.CommandLine, "rate measurement (conn/s and req/s each)")
	o.GoBenchFlags.Register(flag.CommandLine, "run the go test benchmarks (parts 2 and 3) and include them in the report")
	flag.IntVar(&o.fillerEndpoints, "filler-endpoints", 1, "fake endpoints per filler service in the rate measurements")
	flag.IntVar(&o.coldServices, "cold-services", 10000, "services in the cold programming comparison")
	flag.IntVar(&o.coldEndpoints, "cold-endpoints", 10, "endpoints per service in the cold programming comparison")
	flag.IntVar(&o.coldRounds, "cold-rounds", 2, "interleaved rounds of the cold iptables/nft loads (a load that took over 60s is not repeated)")
	flag.StringVar(&o.lbBenchtime, "lb-benchtime", "2x", "-benchtime of the reconciler cold programming benchmarks")
	flag.StringVar(&o.reconcileBenchtime, "reconcile-benchtime", "1s", "-benchtime of the reconciler pass benchmark after one service changed (cold passes use -lb-benchtime)")
	flag.StringVar(&o.binDir, "bin-dir", "", "directory holding a prebuilt sluice-agent (default: build it)")
	flag.BoolVar(&o.skipRates, "skip-rates", false, "skip part 1 (connection and request rates)")
	flag.BoolVar(&o.skipCold, "skip-cold", false, "skip the iptables/nft cold programming loads")
	driver.ParseFlags("rss", "l7")
	var err error
	if o.scales, err = benchkit.ParseInts(*scales, 1); err != nil {
		driver.Fatalf("-scales: %v", err)
	}
	if o.variants, err = benchkit.ParseVariants(*variants, allVariants, "direct"); err != nil {
		driver.Fatalf("-variants: %v", err)
	}
	if o.families, err = benchkit.ParseFamilies(*families); err != nil {
		driver.Fatalf("-families: %v", err)
	}
	if err := o.RateFlags.Validate(); err != nil {
		driver.Fatalf("%v", err)
	}
	if o.coldRounds < 1 {
		driver.Fatalf("-cold-rounds must be at least 1")
	}

	if err := benchkit.RequireRoot("bench-lb"); err != nil {
		driver.Fatalf("%v", err)
	}
	if err := checkTools(o); err != nil {
		driver.Fatalf("%v", err)
	}
	if o.binDir != "" {
		os.Setenv(harness.EnvBinDir, o.binDir)
	}
	benchkit.Measure(driver, o.JSONPath, func(ctx context.Context) (*report, error) { return run(ctx, o) },
		func(w io.Writer, rep *report) { printReport(w, o, rep) })
}

var driver = benchkit.Driver{Name: "benchlb", Usage: usage}

// checkTools fails, naming the package, when a command needed by the
// selected parts is missing: the tool installs nothing itself.
func checkTools(o options) error {
	need := []string{"ip", "nsenter", "nft", "bpftool"} // nft: the base table of the node
	if slices.Contains(o.variants, "iptables-legacy") || !o.skipCold {
		need = append(need, "iptables-legacy-restore", "iptables-legacy")
	}
	if slices.Contains(o.variants, "iptables-nft") || !o.skipCold {
		need = append(need, "iptables-nft-restore")
	}
	if slices.Contains(o.families, "ipv6") && !o.skipRates {
		if slices.Contains(o.variants, "iptables-legacy") {
			need = append(need, "ip6tables-legacy-restore", "ip6tables-legacy")
		}
		if slices.Contains(o.variants, "iptables-nft") {
			need = append(need, "ip6tables-nft-restore")
		}
	}
	if o.GoBenchFlags.Run {
		need = append(need, "go")
	}
	return benchkit.RequireCommands(need, "apt-get install -y iptables nftables bpftool")
}
