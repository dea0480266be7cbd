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
	// podCIDR is the cluster's pod range (the harness's 10.244.N.0/24s).
	podCIDR = "10.244.0.0/16"
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
	if b.client, err = b.node.AddPod(ctx, "default", "client", map[string]string{"app": "client"}); err != nil {
		return err
	}
	if b.server, err = b.node.AddPod(ctx, "default", "server", map[string]string{"app": "server"}, harness.Port{Name: "http", Port: serverPort}); err != nil {
		return err
	}
	if b.intruder, err = b.node.AddPod(ctx, "default", "intruder", map[string]string{"app": "intruder"}); err != nil {
		return err
	}
	baseline := benchkit.Baseline{MasqueradeTable: baseTable, PodCIDR: podCIDR}
	if slices.Contains(b.o.variants, "iptables-legacy") {
		baseline.LegacyTable = "filter"
	}
	if err := baseline.Apply(ctx, b.node, b.client, b.dir); err != nil {
		return err
	}

	b.rules = genRules(b.o.rules, b.client.IP, serverPort, b.o.allowedRule)
	b.files = map[string]string{
		"iptables":       filepath.Join(b.dir, "iptables.rules"),
		"iptables-empty": filepath.Join(b.dir, "iptables-empty.rules"),
		"nft":            filepath.Join(b.dir, "policy.nft"),
	}
	for k, content := range map[string]string{
		"iptables":       iptablesRules(b.rules, b.server.HostIfName),
		"iptables-empty": iptablesEmpty,
		"nft":            nftRules(b.rules, b.server.HostIfName),
	} {
		if err := os.WriteFile(b.files[k], []byte(content), 0o644); err != nil {
			return err
		}
	}

	if err := benchkit.StartEcho(ctx, b.server, b.client, b.self, b.serverAddr()); err != nil {
		return err
	}
	benchkit.Logf("node %s: client %s, server %s:%d (host veth %s), intruder %s; %d rules (%d ipBlock CIDRs, %d port ranges), the client's at position %d",
		b.node.Name, b.client.IP, b.server.IP, serverPort, b.server.HostIfName, b.intruder.IP,
		len(b.rules.Rules), b.rules.CIDRClasses, b.rules.PortRanges, b.rules.Allowed+1)
	return nil
}

func (b *bench) serverAddr() netip.AddrPort { return netip.AddrPortFrom(b.server.IP, serverPort) }

// probe checks that from gets an echo from the server (waiting for it up
// to 15s), or with deny that its one attempt does not get through.
func (b *bench) probe(ctx context.Context, from *harness.Pod, deny bool) error {
	args := []string{"probe", "-addr", b.serverAddr().String()}
	if deny {
		args = append(args, "-expect-deny", "-timeout", "300ms")
	}
	_, err := from.Exec(ctx, b.self, args...)
	return err
}

func (b *bench) loadgen(ctx context.Context) (benchkit.LoadResult, error) {
	load := benchkit.Load{Workers: b.o.Workers, Duration: b.o.Duration, Warmup: b.o.Warmup}
	r, err := load.Run(ctx, b.client, b.self, b.serverAddr(), "conn")
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
		Enable: b.enable,
		Measure: func(ctx context.Context, v string) (sample, error) {
			var s sample
			if err := b.probe(ctx, b.client, false); err != nil {
				return s, err
			}
			// The intruder has no rule: under policy it must not get
			// through, without policy it must (the check works).
			if err := b.probe(ctx, b.intruder, enforces(v)); err != nil {
				return s, fmt.Errorf("intruder check: %w", err)
			}
			var err error
			s.Conn, err = b.loadgen(ctx)
			return s, err
		},
		Disable:  b.disable,
		Describe: func(s sample) string { return fmt.Sprintf("%9.0f conn/s, %d errors", s.Conn.Rate, s.Conn.Errors) },
	}
	err := benchkit.Interleave(ctx, b.o.Rounds, b.o.variants, trial, func(run benchkit.Run[sample]) {
		s := run.Result
		s.Sample = run.Sample()
		rr.Samples = append(rr.Samples, s)
	})
	if err != nil {
		return err
	}
	rr.summarize(b.o.variants)
	return nil
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
		_, err := b.node.Exec(lctx, v+"-restore", b.files["iptables"])
		return err
	case "nftables":
		_, err := b.node.Exec(lctx, "nft", "-f", b.files["nft"])
		return err
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
	case "iptables-legacy":
		_, err := b.node.Exec(ctx, "iptables-legacy-restore", b.files["iptables-empty"])
		return err
	case "iptables-nft":
		if _, err := b.node.Exec(ctx, "iptables-nft-restore", b.files["iptables-empty"]); err != nil {
			return err
		}
		// Drop the emptied table too: its base chains would stay hooked.
		return benchkit.DeleteNftTable(ctx, b.node, "filter")
	case "nftables":
		return benchkit.DeleteNftTable(ctx, b.node, nftTable)
	}
	return nil
}
