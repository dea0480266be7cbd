package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/tests/harness"
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
	rep := &report{Started: time.Now(), Options: reportOptions(o), Kernel: kernelRelease(), CPUs: runtime.NumCPU()}
	start := time.Now()
	defer func() { rep.Elapsed = time.Since(start).Round(time.Second).String() }()
	if o.goBench {
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
	hopts := harness.Options{Name: "benchpolicy"}
	if o.verbose {
		hopts.Logf = logf
	}
	b.c, err = harness.NewCluster(ctx, hopts)
	if err != nil {
		return rep, err
	}
	defer func() {
		// The datapath first (its links and pins), then the namespaces,
		// cgroups, bpffs directories and files of the run.
		if b.sluice != nil {
			if err := b.sluice.Close(); err != nil {
				logf("cleanup: sluice: %v", err)
			}
		}
		if err := b.c.Cleanup(); err != nil {
			logf("cleanup: %v", err)
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
	// All ephemeral ports: connections end with RST, so no TIME_WAIT, but
	// a wide range keeps tuples from coming back while conntrack (the
	// kernel's or Sluice's) still holds the previous connection's entry.
	if _, err := b.client.Exec(ctx, "sh", "-c", "echo 1024 65535 > /proc/sys/net/ipv4/ip_local_port_range"); err != nil {
		return err
	}
	base := filepath.Join(b.dir, "base.nft")
	if err := os.WriteFile(base, []byte(fmt.Sprintf("table ip %s {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\toifname \"eth0\" ip saddr %s ip daddr != %s masquerade\n\t}\n}\n", baseTable, podCIDR, podCIDR)), 0o644); err != nil {
		return err
	}
	if _, err := b.node.Exec(ctx, "nft", "-f", base); err != nil {
		return err
	}
	if contains(b.o.variants, "iptables-legacy") {
		// Instantiate the legacy filter table now: once used in a netns
		// it stays (with its hooks) until the netns goes, so without this
		// every variant after the first iptables-legacy run would run
		// with it and those before without.
		if _, err := b.node.Exec(ctx, "iptables-legacy", "-t", "filter", "-S"); err != nil {
			return err
		}
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

	// The echo server runs until the cluster is cleaned up (which kills
	// every process in the run's namespaces and cgroups).
	srvErr := make(chan error, 1)
	go func() {
		srvCtx, cancel := context.WithTimeout(context.Background(), 24*time.Hour)
		defer cancel()
		_, err := b.server.Exec(srvCtx, b.self, "serve", "-port", fmt.Sprint(serverPort))
		srvErr <- err
	}()
	if err := b.probe(ctx, b.client, false); err != nil {
		select {
		case e := <-srvErr:
			err = fmt.Errorf("%w (server: %v)", err, e)
		default:
		}
		return err
	}
	logf("node %s: client %s, server %s:%d (host veth %s), intruder %s; %d rules (%d ipBlock CIDRs, %d port ranges), the client's at position %d",
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

func (b *bench) loadgen(ctx context.Context) (loadResult, error) {
	ctx, cancel := context.WithTimeout(ctx, b.o.duration+b.o.warmup+30*time.Second)
	defer cancel()
	out, err := b.client.Exec(ctx, b.self, "loadgen", "-addr", b.serverAddr().String(),
		"-workers", fmt.Sprint(b.o.workers), "-duration", b.o.duration.String(), "-warmup", b.o.warmup.String())
	if err != nil {
		return loadResult{}, err
	}
	var r loadResult
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		return r, fmt.Errorf("loadgen output %q: %w", out, err)
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
	logf("=== %d rules on the server's ingress, %d rounds of %s", len(b.rules.Rules), b.o.rounds, strings.Join(b.o.variants, ", "))
	for r := range b.o.rounds {
		for _, v := range rotate(b.o.variants, r) {
			if err := ctx.Err(); err != nil {
				return err
			}
			s := sample{Round: r + 1, Variant: v}
			t := time.Now()
			err := b.enable(ctx, v)
			s.SetupSeconds = time.Since(t).Seconds()
			if err == nil {
				err = b.probe(ctx, b.client, false)
			}
			if err == nil {
				// The intruder has no rule: under policy it must not get
				// through, without policy it must (the check works).
				if err = b.probe(ctx, b.intruder, enforces(v)); err != nil {
					err = fmt.Errorf("intruder check: %w", err)
				}
			}
			if err == nil {
				s.Conn, err = b.loadgen(ctx)
			}
			if derr := b.disable(ctx, v); derr != nil {
				// A variant that cannot be removed would taint every
				// later measurement: stop.
				return fmt.Errorf("remove %s: %w", v, derr)
			}
			if err != nil {
				s.Err = err.Error()
				logf("[round %d/%d] %-16s FAILED: %v", r+1, b.o.rounds, v, err)
			} else {
				logf("[round %d/%d] %-16s %9.0f conn/s  (setup %.2fs, %d errors)", r+1, b.o.rounds, v, s.Conn.Rate, s.SetupSeconds, s.Conn.Errors)
			}
			rr.Samples = append(rr.Samples, s)
		}
	}
	rr.summarize(b.o.variants)
	return nil
}

func rotate(l []string, r int) []string {
	out := make([]string, len(l))
	for i := range l {
		out[i] = l[(i+r)%len(l)]
	}
	return out
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
		// detached asynchronously (after an RCU grace period): poll.
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := verifyDetached(b.node.NetnsPath)
			if err == nil {
				return nil
			}
			if time.Now().After(deadline) {
				return err
			}
			time.Sleep(50 * time.Millisecond)
		}
	case "iptables-legacy":
		_, err := b.node.Exec(ctx, "iptables-legacy-restore", b.files["iptables-empty"])
		return err
	case "iptables-nft":
		if _, err := b.node.Exec(ctx, "iptables-nft-restore", b.files["iptables-empty"]); err != nil {
			return err
		}
		// Drop the emptied table too: its base chains would stay hooked.
		return b.deleteNftTable(ctx, "filter")
	case "nftables":
		return b.deleteNftTable(ctx, nftTable)
	}
	return nil
}

// deleteNftTable deletes table ip name in the node's netns if it exists (a
// load that failed leaves none).
func (b *bench) deleteNftTable(ctx context.Context, name string) error {
	if _, err := b.node.Exec(ctx, "nft", "list", "table", "ip", name); err != nil {
		return nil
	}
	_, err := b.node.Exec(ctx, "nft", "delete", "table", "ip", name)
	return err
}
