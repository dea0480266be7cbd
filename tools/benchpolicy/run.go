package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

const (
	serverPort = 8080
	// baseTable is the CNI-style egress masquerade every variant runs
	// with: its NAT hook keeps conntrack active in the node's netns
	// whatever the variant, as on a real node.
	baseTable = "benchpolicy-cni"
	// podCIDR is the cluster's pod range (the harness's 10.244.N.0/24s),
	// podCIDR6 its IPv6 range (fd00:10:244:N::/64s).
	podCIDR, podCIDR6 = "10.244.0.0/16", "fd00:10:244::/48"
	// loadTimeout bounds one rule load.
	loadTimeout = 5 * time.Minute
)

// Endpoint IDs of the pods.
const (
	clientEP   = 1
	serverEP   = 2
	intruderEP = 3
)

// bench is one run's simulated node and state.
type bench struct {
	o        options
	self     string
	dir      string
	c        *harness.Cluster
	node     *harness.Node
	client   *harness.Pod
	server   *harness.Pod
	intruder *harness.Pod
	rules    ruleSet
	files    map[string]string
	sluice   *sluiceRun
	rep      *report
	// fams are the families measured (o.families); each run is measured
	// in them.
	fams benchkit.FamilyRunner
}

func run(ctx context.Context, o options) (*report, error) {
	rep := &report{Header: benchkit.StartHeader(reportOptions(o))}
	defer rep.End()
	if o.GoBenchFlags.Run {
		// First, on a quiet machine: no namespaces or load running.
		if err := runGoBench(ctx, o, rep); err != nil {
			return rep, err
		}
	}
	if o.skipRates {
		return rep, nil
	}
	self, err := os.Executable()
	if err != nil {
		return rep, err
	}
	b := &bench{o: o, self: self, rep: rep}
	for _, f := range o.families {
		b.fams.Families = append(b.fams.Families, benchkit.FamilyNamed(f))
	}
	b.c, err = benchkit.NewCluster(ctx, "benchpolicy", o.Verbose)
	if err != nil {
		return rep, err
	}
	defer func() {
		// The datapath first (its links and pins), then the namespaces,
		// cgroups, bpffs directories and files of the run.
		if b.sluice != nil {
			if err := b.sluice.Close(); err != nil {
				benchkit.Logf("cleanup: sluice: %v", err)
			}
		}
		if err := b.c.Cleanup(); err != nil {
			benchkit.Logf("cleanup: %v", err)
		}
	}()
	b.dir = b.c.TempDir
	if err := b.setup(ctx); err != nil {
		return rep, fmt.Errorf("setup: %w", err)
	}
	return rep, b.rates(ctx)
}

// setup builds the node, the three pods, the echo server, the node's base
// table and the rule files.
func (b *bench) setup(ctx context.Context) error {
	var err error
	if b.node, err = b.c.AddNode(ctx, "node1", harness.Routed); err != nil {
		return err
	}
	// Dual-stack pods when IPv6 is measured, IPv4 their first address.
	ipv6 := slices.Contains(b.o.families, benchkit.IPv6.Name)
	podFamily := harness.IPv4
	if ipv6 {
		podFamily = harness.DualStack
	}
	if b.client, err = b.node.AddPodFamily(ctx, podFamily, "default", "client", map[string]string{"app": "client"}); err != nil {
		return err
	}
	if b.server, err = b.node.AddPodFamily(ctx, podFamily, "default", "server", map[string]string{"app": "server"}, harness.Port{Name: "http", Port: serverPort}); err != nil {
		return err
	}
	if b.intruder, err = b.node.AddPodFamily(ctx, podFamily, "default", "intruder", map[string]string{"app": "intruder"}); err != nil {
		return err
	}
	baseline := benchkit.Baseline{MasqueradeTable: baseTable, PodCIDR: podCIDR}
	if ipv6 {
		baseline.PodCIDR6 = podCIDR6
	}
	if slices.Contains(b.o.variants, "iptables-legacy") {
		baseline.LegacyTable = "filter"
		if ipv6 {
			baseline.LegacyTable6 = "filter"
		}
	}
	if err := baseline.Apply(ctx, b.node, b.client, b.dir); err != nil {
		return err
	}

	b.rules = genRules(b.o.rules, b.client.IP, b.client.IPv6(), serverPort, b.o.allowedRule)
	b.files = map[string]string{"iptables-empty": filepath.Join(b.dir, "iptables-empty.rules")}
	contents := map[string]string{"iptables-empty": iptablesEmpty}
	for _, f := range b.fams.Families {
		b.files["iptables-"+f.Name] = filepath.Join(b.dir, f.Iptables+".rules")
		b.files["nft-"+f.Name] = filepath.Join(b.dir, "policy-"+f.Nft+".nft")
		contents["iptables-"+f.Name] = iptablesRules(b.rules, b.server.HostIfName, f)
		contents["nft-"+f.Name] = nftRules(b.rules, b.server.HostIfName, f)
	}
	for k, content := range contents {
		if err := os.WriteFile(b.files[k], []byte(content), 0o644); err != nil {
			return err
		}
	}

	var servers []netip.AddrPort
	for _, f := range b.fams.Families {
		servers = append(servers, b.serverAddr(f))
	}
	if err := benchkit.StartEcho(ctx, b.server, b.client, b.self, servers...); err != nil {
		return err
	}
	benchkit.Logf("node %s: client %s, server %s (host veth %s), intruder %s; %d rules (%d ipBlock CIDRs, %d port ranges), the client's at position %d",
		b.node.Name, b.client.IPs, servers, b.server.HostIfName, b.intruder.IPs,
		len(b.rules.Rules), b.rules.CIDRClasses, b.rules.PortRanges, b.rules.Allowed+1)
	return nil
}

// addrOf is pod's address of family f.
func addrOf(pod *harness.Pod, f benchkit.Family) netip.Addr {
	if f == benchkit.IPv6 {
		return pod.IPv6()
	}
	return pod.IP
}

// serverAddr is the server's echo port at its address of family f.
func (b *bench) serverAddr(f benchkit.Family) netip.AddrPort {
	return netip.AddrPortFrom(addrOf(b.server, f), serverPort)
}

// probe checks that from gets an echo from the server at its address of
// family f (waiting for it up to timeout), or with deny that its one
// attempt does not get through.
func (b *bench) probe(ctx context.Context, from *harness.Pod, f benchkit.Family, deny bool, timeout time.Duration) error {
	args := []string{"probe", "-addr", b.serverAddr(f).String(), "-timeout", timeout.String()}
	if deny {
		args = append(args, "-expect-deny", "-timeout", "300ms")
	}
	_, err := from.Exec(ctx, b.self, args...)
	return err
}

func (b *bench) loadgen(ctx context.Context, f benchkit.Family) (benchkit.LoadResult, error) {
	load := benchkit.Load{Workers: b.o.Workers, Duration: b.o.Duration, Warmup: b.o.Warmup}
	r, err := load.Run(ctx, b.client, b.self, b.serverAddr(f), "conn")
	if err != nil {
		return r, err
	}
	if r.Ops == 0 {
		return r, fmt.Errorf("loadgen: no connection completed (%d errors, first: %s)", r.Errors, r.FirstError)
	}
	return r, nil
}

// enforces reports whether variant v applies the policy.
func enforces(v string) bool { return v != "none" && v != "sluice-nopolicy" }

// rates runs the interleaved rounds of every variant.
func (b *bench) rates(ctx context.Context) error {
	rr := &rateResult{Rules: len(b.rules.Rules), CIDRClasses: b.rules.CIDRClasses, PortRanges: b.rules.PortRanges,
		AllowedPosition: b.rules.Allowed + 1, AllowedAt: b.o.allowedRule}
	b.rep.Rates = rr
	benchkit.Logf("=== %d rules on the server's ingress, %d rounds of %s", len(b.rules.Rules), b.o.Rounds, strings.Join(b.o.variants, ", "))
	trial := benchkit.Trial[sample]{
		Enable:   b.enable,
		Measure:  b.measure,
		Disable:  b.disable,
		Describe: func(s sample) string { return s.Describe(b.o.families) },
	}
	err := benchkit.Interleave(ctx, b.o.Rounds, b.o.variants, trial, func(run benchkit.Run[sample]) {
		s := run.Result
		s.Sample = run.Sample()
		rr.Samples = append(rr.Samples, s)
	})
	if err != nil {
		return err
	}
	rr.summarize(b.o.variants, b.o.families)
	return nil
}

// measure measures variant v, in place, in every family: the client must
// get through, the intruder (no rule) must not under policy and must
// without (the check works), then the connection rate.
func (b *bench) measure(ctx context.Context, v string) (sample, error) {
	var (
		s   sample
		err error
	)
	s.Families, err = b.fams.Measure(ctx, v, func(ctx context.Context, f benchkit.Family, timeout time.Duration, fs *benchkit.FamilySample) error {
		if err := b.probe(ctx, b.client, f, false, timeout); err != nil {
			return err
		}
		if err := b.probe(ctx, b.intruder, f, enforces(v), timeout); err != nil {
			return fmt.Errorf("intruder check: %w", err)
		}
		var err error
		fs.Conn, err = b.loadgen(ctx, f)
		return err
	})
	return s, err
}

// enable puts variant v in place. Each starts from a node with no BPF
// program attached and no policy rule loaded.
func (b *bench) enable(ctx context.Context, v string) error {
	if err := verifyDetached(b.node.NetnsPath); err != nil {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()
	switch v {
	case "sluice-policy", "sluice-nopolicy":
		flags := uint32(0)
		if v == "sluice-policy" {
			flags = datapath.EPFlagPolicyIngress
		}
		p, ipc := b.rules.sluicePolicy()
		eps := []endpointSpec{
			{pod: b.client, id: clientEP, identity: clientIdentity},
			{pod: b.server, id: serverEP, identity: serverIdentity, flags: flags},
			{pod: b.intruder, id: intruderEP, identity: intruderIdentity},
		}
		s, err := startSluice(b.node, sluiceRoot(b.node), len(b.rules.Rules), eps, serverEP, p, ipc)
		if err != nil {
			return err
		}
		b.sluice = s
		return nil
	case "iptables-legacy", "iptables-nft":
		// Each family with its own command: iptables-legacy-restore,
		// ip6tables-legacy-restore, ...
		backend := strings.TrimPrefix(v, "iptables")
		for _, f := range b.fams.Families {
			if _, err := b.node.Exec(lctx, f.Iptables+backend+"-restore", b.files["iptables-"+f.Name]); err != nil {
				return err
			}
		}
		return nil
	case "nftables":
		for _, f := range b.fams.Families {
			if _, err := b.node.Exec(lctx, "nft", "-f", b.files["nft-"+f.Name]); err != nil {
				return err
			}
		}
		return nil
	case "none":
		return nil
	}
	return fmt.Errorf("unknown variant %q", v)
}

// disable removes variant v completely and checks that it is gone. It
// runs to the end after an interrupt too.
func (b *bench) disable(ctx context.Context, v string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
	defer cancel()
	switch v {
	case "sluice-policy", "sluice-nopolicy":
		if b.sluice != nil {
			err := b.sluice.Close()
			b.sluice = nil
			if err != nil {
				return err
			}
		}
		// Unpinning drops a link's last reference, but the program is
		// detached asynchronously: poll.
		return benchkit.Poll(10*time.Second, 50*time.Millisecond, func() error { return verifyDetached(b.node.NetnsPath) })
	case "iptables-legacy", "iptables-nft":
		backend := strings.TrimPrefix(v, "iptables")
		for _, f := range b.fams.Families {
			if _, err := b.node.Exec(ctx, f.Iptables+backend+"-restore", b.files["iptables-empty"]); err != nil {
				return err
			}
			if v == "iptables-nft" {
				// Drop the emptied table too: its base chains would
				// stay hooked.
				if err := benchkit.DeleteNftTableOf(ctx, b.node, f.Nft, "filter"); err != nil {
					return err
				}
			}
		}
		return nil
	case "nftables":
		for _, f := range b.fams.Families {
			if err := benchkit.DeleteNftTableOf(ctx, b.node, f.Nft, nftTable); err != nil {
				return err
			}
		}
		return nil
	}
	return nil
}
