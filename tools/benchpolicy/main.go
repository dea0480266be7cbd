// Command benchpolicy measures what Sluice's network policy costs, per
// packet and in connections per second, next to iptables (legacy and nft
// backends) and an nftables set enforcing the same rules (`make
// bench-policy`, as root). See usage for what it measures and needs.
package main

import (
	"context"
	"flag"
	"io"
	"slices"
	"strings"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

const usage = `benchpolicy: the cost of Sluice network policy, vs iptables and nftables

Usage: benchpolicy [flags]      (root; ` + "`make bench-policy`" + ` builds it and runs it)
       benchpolicy cleanup      remove what killed runs left (namespaces, cgroups, pins)

Measures, in one run, every figure next to a baseline measured in the same
run (timing on shared machines is noisy, ±20-30%: read the ratios; nothing
here passes or fails on time):

 1. BPF_PROG_TEST_RUN ns/packet of sl_to_ep (the pod's ingress policy) with
    10 / 1,000 / 10,000 policy entries on the endpoint (-bpf-scales), for a
    new TCP connection (SYN), a first UDP datagram, a SYN no rule allows,
    and an ACK of an admitted connection; against the same program with no
    policy on the endpoint (flags 0) and a no-op program, all in one loop.
    Every SYN/UDP sample is a new connection: the source port walks a range
    and CT is emptied (untimed) before it wraps. With IPv6 in --families,
    the same four packet kinds are timed for IPv6 in the same loop,
    against the same entries (they name identities) with every identity's
    IPv6 address in the ipcache and every ipBlock class an IPv6 CIDR too
    (N counts policy entries, the same for both families), and their
    IPv6 median over the IPv4 one. Plus every program's verifier figures:
    the instructions walked to accept it and their share of the kernel's
    1,000,000 limit.
      SLUICE_BENCH_POLICY_FAMILIES=ipv4,ipv6 go test -run '^$' -bench Policy -benchtime 20000x ./pkg/datapath/
 2. Connections per second (connect, 1-byte echo, close with SO_LINGER 0:
    an RST, no TIME_WAIT) from a client pod to a server pod on one routed
    simulated node (internal/testing/harness: network namespaces, veths, no traffic
    leaves them), for the variants
      sluice-policy    Sluice's endpoint programs on both pods' host-side
                       veths (pkg/datapath Attacher, tcx), -rules entries of
                       ingress policy on the server, the client's among them
      sluice-nopolicy  the same programs, no policy on the server (flags 0)
      iptables-legacy  the same rules as iptables filter rules, loaded with
                       iptables-legacy-restore: FORWARD accepts established
                       connections first, then jumps to the server's chain
                       (-o <server veth>) of one ACCEPT per rule and a DROP
      iptables-nft     the same rules through iptables-nft-restore
      nftables         one set of (address . protocol . port) intervals and
                       one rule that looks the packet up in it, nft -f
      none             nothing but routing: the baseline
    in each address family of --families (default ipv4,ipv6). With IPv6
    the pods are dual-stack, every rule has its peer's IPv6 address or an
    IPv6 ipBlock CIDR too, Sluice's ipcache holds both families, and the
    iptables and nftables variants load the same rules for IPv6 with
    ip6tables-*-restore and a table ip6; each run of a variant measures
    every family, the order alternating from one run to the next, and a
    family that fails is reported with why while the run goes on.
    Rounds are interleaved: each runs every variant once, in an order
    rotated per round. Reported, per family: medians over rounds with
    their IQR, and the median (IQR) of per-round ratios to that round's
    none run of the same family, and for sluice-policy also to that
    round's sluice-nopolicy run; with both families each variant's IPv6
    conn/s over its IPv4 conn/s of the same run (none's is the kernel's
    own difference, the one to compare with).
    The allowed client's rule is the last of the iptables chain by default
    (-allowed-rule: first, middle, last): only a connection's first packet
    walks the chain, and iptables walks it rule by rule; Sluice and
    nftables look the peer up in a trie or set, where position is moot.
    Every run checks that the client gets through and, under policy, that
    a third pod without a rule does not.
    Conntrack is active in the node's netns for every variant and family
    (a CNI-style masquerade table, ip and ip6, is loaded at setup; the
    legacy filter tables, which cannot be unregistered once used, are
    instantiated up front), as on a real node: what differs between
    variants is the policy alone.
    Between variants everything is removed, and before each run no BPF
    program may be attached to any of the node's interfaces (BPF_PROG_QUERY).

Requires: root (namespaces, cgroups, bpffs, eBPF), Linux with tcx (6.6+),
cgroup v2, bpffs, and the Debian packages
  iptables   (iptables-legacy-restore, iptables-nft-restore, iptables-legacy,
              and their ip6tables counterparts for IPv6)
  nftables   (nft)
  iproute2, util-linux (ip, nsenter: the harness)
  the Go toolchain (go), for part 1 unless -go-bench=false
e.g.  apt-get install -y iptables nftables iproute2
Nothing is installed by this tool; a missing command is named with its package.

Flags:
`

type options struct {
	benchkit.OutputFlags
	benchkit.RateFlags
	benchkit.GoBenchFlags
	rules       int
	variants    []string
	families    []string
	allowedRule string
	bpfScales   string
	skipRates   bool
}

var allVariants = []string{"sluice-policy", "sluice-nopolicy", "iptables-legacy", "iptables-nft", "nftables", "none"}

func main() {
	// The harness re-executes this binary for its own workloads, and the
	// benchmark re-executes it for its own in the pods.
	harness.RunWorkloadIfRequested()
	benchkit.RunSubcommand("benchpolicy", map[string]func([]string) error{
		"serve":   benchkit.Serve,
		"loadgen": benchkit.Loadgen,
		"probe":   benchkit.Probe,
		"cleanup": benchkit.Cleanup,
	})

	var o options
	variants := flag.String("variants", strings.Join(allVariants, ","), "variants to measure (none is always added: it is the baseline)")
	families := flag.String("families", strings.Join(benchkit.Families, ","), "address families to measure, ipv4 and/or ipv6 (dual-stack pods when both)")
	o.OutputFlags.Register(flag.CommandLine)
	o.RateFlags.Register(flag.CommandLine, "connection-rate run")
	o.GoBenchFlags.Register(flag.CommandLine, "run the BPF_PROG_TEST_RUN benchmark (part 1) and include it in the report")
	flag.IntVar(&o.rules, "rules", 10000, "policy rules on the server pod, the allowed client's included")
	flag.StringVar(&o.allowedRule, "allowed-rule", "last", "where the allowed client's rule is in the iptables chain: first, middle or last")
	flag.StringVar(&o.bpfScales, "bpf-scales", "10,1000,10000", "policy entry counts of the BPF_PROG_TEST_RUN benchmark")
	flag.BoolVar(&o.skipRates, "skip-rates", false, "skip part 2 (connection rates)")
	driver.ParseFlags("cleanup")
	var err error
	if o.variants, err = benchkit.ParseVariants(*variants, allVariants, "none"); err != nil {
		driver.Fatalf("-variants: %v", err)
	}
	if o.families, err = benchkit.ParseFamilies(*families); err != nil {
		driver.Fatalf("-families: %v", err)
	}
	if err := o.RateFlags.Validate(); err != nil {
		driver.Fatalf("%v", err)
	}
	if o.rules < 1 {
		driver.Fatalf("-rules must be at least 1 (the allowed client's rule)")
	}
	if !slices.Contains([]string{"first", "middle", "last"}, o.allowedRule) {
		driver.Fatalf("-allowed-rule %q: use first, middle or last", o.allowedRule)
	}
	if _, err := benchkit.ParseInts(o.bpfScales, 2); err != nil {
		driver.Fatalf("-bpf-scales: %v", err)
	}

	if err := benchkit.RequireRoot("bench-policy"); err != nil {
		driver.Fatalf("%v", err)
	}
	if err := checkTools(o); err != nil {
		driver.Fatalf("%v", err)
	}
	benchkit.Measure(driver, o.JSONPath, func(ctx context.Context) (*report, error) { return run(ctx, o) },
		func(w io.Writer, rep *report) { printReport(w, o, rep) })
}

var driver = benchkit.Driver{Name: "benchpolicy", Usage: usage}

// checkTools fails, naming the package, when a command needed by the
// selected parts is missing: the tool installs nothing itself.
func checkTools(o options) error {
	var need []string
	if !o.skipRates {
		need = append(need, "ip", "nsenter", "nft") // nft: the node's base table
		for _, f := range o.families {
			ipt := benchkit.FamilyNamed(f).Iptables
			if slices.Contains(o.variants, "iptables-legacy") {
				need = append(need, ipt+"-legacy-restore", ipt+"-legacy")
			}
			if slices.Contains(o.variants, "iptables-nft") {
				need = append(need, ipt+"-nft-restore")
			}
		}
	}
	if o.GoBenchFlags.Run {
		need = append(need, "go")
	}
	return benchkit.RequireCommands(need, "apt-get install -y iptables nftables")
}
