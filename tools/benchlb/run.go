package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

const (
	agentPkg    = "github.com/sluice-net/sluice/cmd/sluice-agent"
	backendPort = 8080
	svcPort     = 80
	// baseTable is the CNI-style egress masquerade every variant runs
	// with; its masquerade statement keeps conntrack active in the node's
	// netns whatever the variant (see usage).
	baseTable = "benchlb-cni"
	// loadTimeout bounds one rule load (Host.Exec's default is 30s, and
	// large nft loads take longer).
	loadTimeout = 10 * time.Minute
)

// bench is one run's simulated cluster and state.
type bench struct {
	o        options
	self     string
	agentBin string
	dir      string
	c        *harness.Cluster
	node     *harness.Node
	client   *harness.Pod
	backend  *harness.Pod
	agent    *harness.Agent
	rep      *report
	// fams are the families measured (o.families); families measures
	// each run in them.
	fams     []ipFamily
	families benchkit.FamilyRunner
}

func run(ctx context.Context, o options) (*report, error) {
	rep := &report{Header: benchkit.StartHeader(reportOptions(o))}
	defer rep.End()
	if o.GoBenchFlags.Run {
		// First, on a quiet machine: no cluster, agent or load running.
		if err := runGoBenches(ctx, o, rep); err != nil {
			return rep, err
		}
	}
	if o.skipRates && o.skipCold {
		return rep, nil
	}
	self, err := os.Executable()
	if err != nil {
		return rep, err
	}
	b := &bench{o: o, self: self, rep: rep}
	for _, f := range o.families {
		b.fams = append(b.fams, familyNamed(f))
		b.families.Families = append(b.families.Families, familyNamed(f).Family)
	}
	benchkit.RemoveStale()
	b.c, err = benchkit.NewCluster(ctx, "benchlb", o.Verbose)
	if err != nil {
		return rep, err
	}
	defer func() {
		if err := b.c.Cleanup(); err != nil {
			benchkit.Logf("cleanup: %v", err)
		}
	}()
	b.dir = b.c.TempDir
	if !o.skipRates {
		if err := b.setup(ctx); err != nil {
			return rep, fmt.Errorf("setup: %w", err)
		}
		for _, n := range o.scales {
			if err := b.rates(ctx, n); err != nil {
				return rep, err
			}
		}
	}
	if !o.skipCold {
		if err := b.cold(ctx); err != nil {
			return rep, fmt.Errorf("cold programming: %w", err)
		}
	}
	return rep, nil
}

// setup builds the node, the client and backend pods and the echo server.
func (b *bench) setup(ctx context.Context) error {
	var err error
	if slices.ContainsFunc(b.o.variants, func(v string) bool { return strings.HasPrefix(v, "sluice-") }) {
		if b.agentBin, err = harness.Build(ctx, agentPkg); err != nil {
			return err
		}
	}
	if b.node, err = b.c.AddNode(ctx, "node1", harness.Routed); err != nil {
		return err
	}
	// Dual-stack pods when IPv6 is measured: IPv4 stays the pods' first
	// address, as in a dual-stack cluster whose primary family is IPv4.
	podFamily := harness.IPv4
	if slices.Contains(b.o.families, "ipv6") {
		podFamily = harness.DualStack
	}
	if b.client, err = b.node.AddPodFamily(ctx, podFamily, "default", "client", map[string]string{"app": "client"}); err != nil {
		return err
	}
	if b.backend, err = b.node.AddPodFamily(ctx, podFamily, "default", "backend", map[string]string{"app": "backend"}, harness.Port{Name: "http", Port: backendPort}); err != nil {
		return err
	}
	if err := b.c.SyncManifests(); err != nil {
		return err
	}
	baseline := benchkit.Baseline{MasqueradeTable: baseTable, PodCIDR: familyIPv4.clusterCIDR}
	if podFamily == harness.DualStack {
		baseline.PodCIDR6 = familyIPv6.clusterCIDR
	}
	if slices.Contains(b.o.variants, "iptables-legacy") {
		baseline.LegacyTable = "nat"
		if podFamily == harness.DualStack {
			baseline.LegacyTable6 = "nat"
		}
	}
	if err := baseline.Apply(ctx, b.node, b.client, b.dir); err != nil {
		return err
	}
	var backends []netip.AddrPort
	for _, f := range b.fams {
		backends = append(backends, b.backendAddr(f))
	}
	if err := benchkit.StartEcho(ctx, b.backend, b.client, b.self, backends...); err != nil {
		return err
	}
	benchkit.Logf("node %s: client %s, backend %s (same node: the path crosses the node netns once)", b.node.Name, b.client.IPs, backends)
	return nil
}

// backendAddr is the backend pod's echo server at its address of family f.
func (b *bench) backendAddr(f ipFamily) netip.AddrPort {
	if f.Name == "ipv6" {
		return netip.AddrPortFrom(b.backend.IPv6(), backendPort)
	}
	return netip.AddrPortFrom(b.backend.IP, backendPort)
}

// probe waits up to timeout for an echo from addr.
func (b *bench) probe(ctx context.Context, addr netip.AddrPort, timeout time.Duration) error {
	_, err := b.client.Exec(ctx, b.self, "probe", "-addr", addr.String(), "-timeout", timeout.String())
	return err
}

func (b *bench) loadgen(ctx context.Context, addr netip.AddrPort, mode string) (benchkit.LoadResult, error) {
	load := benchkit.Load{Workers: b.o.Workers, Duration: b.o.Duration, Warmup: b.o.Warmup}
	r, err := load.Run(ctx, b.client, b.self, addr, mode)
	if err != nil {
		return r, err
	}
	if r.Ops == 0 {
		return r, fmt.Errorf("loadgen %s to %s: no successful operation (%d errors, first: %s)", mode, addr, r.Errors, r.FirstError)
	}
	return r, nil
}

// rates runs the interleaved rounds of every variant at n services (of
// every measured family: dual-stack services when there are two).
func (b *bench) rates(ctx context.Context, n int) error {
	files := map[string]string{"empty": filepath.Join(b.dir, "iptables-empty.rules")}
	contents := map[string]string{"empty": iptablesEmpty}
	sr := &scaleResult{Services: n, Targets: map[string]string{}}
	targets := map[string]netip.AddrPort{}
	var byFamily [][]svcSpec
	for _, f := range b.fams {
		svcs := genServices(f, n, b.o.fillerEndpoints, b.backendAddr(f), b.backend.Namespace, b.backend.Name, b.node.Name)
		byFamily = append(byFamily, svcs)
		targets[f.Name] = netip.AddrPortFrom(svcs[n-1].VIP, svcPort)
		sr.Targets[f.Name] = targets[f.Name].String()
		files["iptables-"+f.Name] = filepath.Join(b.dir, fmt.Sprintf("%s-%d.rules", f.Iptables, n))
		files["nft-"+f.Name] = filepath.Join(b.dir, fmt.Sprintf("nftables-%s-%d.nft", f.Nft, n))
		contents["iptables-"+f.Name], contents["nft-"+f.Name] = iptablesRules(f, svcs), nftRules(f, svcs)
	}
	for k, content := range contents {
		if err := os.WriteFile(files[k], []byte(content), 0o644); err != nil {
			return err
		}
	}
	if err := b.c.WriteManifest("services.yaml", sluiceManifest(b.fams, byFamily)); err != nil {
		return err
	}
	b.rep.Rates = append(b.rep.Rates, sr)
	benchkit.Logf("=== %d services (%s): targets %v (last in rule order), %d rounds of %s", n, strings.Join(b.o.families, ", "), sr.Targets, b.o.Rounds, strings.Join(b.o.variants, ", "))
	trial := benchkit.Trial[sample]{
		Label:  fmt.Sprintf("%d svc", n),
		Enable: func(ctx context.Context, v string) error { return b.enable(ctx, v, n, files) },
		Measure: func(ctx context.Context, v string) (sample, error) {
			var err error
			s := sample{}
			s.Families, err = b.families.Measure(ctx, v, func(ctx context.Context, f benchkit.Family, timeout time.Duration, fs *benchkit.FamilySample) error {
				addr := targets[f.Name]
				if v == "direct" {
					addr = b.backendAddr(familyNamed(f.Name))
				}
				return b.measureFamily(ctx, addr, timeout, fs)
			})
			return s, err
		},
		Disable:  b.disable,
		Describe: func(s sample) string { return s.Describe(b.o.families) },
	}
	err := benchkit.Interleave(ctx, b.o.Rounds, b.o.variants, trial, func(run benchkit.Run[sample]) {
		s := run.Result
		s.Sample = run.Sample()
		sr.Samples = append(sr.Samples, s)
	})
	if err != nil {
		return err
	}
	sr.summarize(b.o.variants, b.o.families)
	return nil
}

// measureFamily probes addr, then measures the connection and the
// request rate to it into fs. A Sluice variant that fails says which
// drops its datapath counted meanwhile (an IPv6 VIP on the per-packet
// path: SERVICE_NEEDS_SOCKET_LB).
func (b *bench) measureFamily(ctx context.Context, addr netip.AddrPort, timeout time.Duration, fs *benchkit.FamilySample) error {
	before := b.agentCounters(ctx)
	err := b.probe(ctx, addr, timeout)
	if err == nil {
		fs.Conn, err = b.loadgen(ctx, addr, "conn")
	}
	if err == nil {
		fs.RR, err = b.loadgen(ctx, addr, "rr")
	}
	if err != nil {
		if drops := dropDelta(before, b.agentCounters(ctx)); drops != "" {
			err = fmt.Errorf("%w; the datapath counted drops meanwhile: %s", err, drops)
		}
	}
	return err
}

// agentCounters are the running agent's datapath counters, nil when no
// agent runs (a kube-proxy variant or direct) or it does not answer.
func (b *bench) agentCounters(ctx context.Context) []api.Counter {
	if b.agent == nil {
		return nil
	}
	st, err := b.node.AgentStatus(ctx)
	if err != nil {
		return nil
	}
	return st.Counters
}

// dropDelta says which drops grew from before to after, by reason and
// direction, e.g. "SERVICE_NEEDS_SOCKET_LB (egress) ×34"; "" when none did
// or there is nothing to compare.
func dropDelta(before, after []api.Counter) string {
	if after == nil {
		return ""
	}
	key := func(c api.Counter) string { return c.Reason + " (" + c.Direction + ")" }
	was := map[string]uint64{}
	for _, c := range before {
		if c.Verdict == "dropped" {
			was[key(c)] += c.Packets
		}
	}
	grew := map[string]uint64{}
	for _, c := range after {
		if c.Verdict == "dropped" {
			grew[key(c)] += c.Packets
		}
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(grew)) {
		if grew[k] > was[k] {
			out = append(out, fmt.Sprintf("%s ×%d", k, grew[k]-was[k]))
		}
	}
	return strings.Join(out, ", ")
}

// slowOnce reports whether a cold load already measured took so long that
// repeating it would blow the run's time budget: one run then stands.
func slowOnce(seconds []float64) bool {
	return len(seconds) > 0 && seconds[0] > 60
}

// enable puts variant v in place for n services.
func (b *bench) enable(ctx context.Context, v string, n int, files map[string]string) error {
	switch v {
	case "sluice-packet", "sluice-socket", "sluice-packet-all-flows", "sluice-socket-all-flows":
		base, allFlows := strings.CutSuffix(v, "-all-flows")
		mode := map[string]string{"sluice-packet": "off", "sluice-socket": "all"}[base]
		flowEvents := "--flow-events=connections"
		if allFlows {
			flowEvents = "--flow-events=all"
		}
		// Room for n frontends and their slots, and a CT table that holds
		// every connection of a run: the maps start empty for every run
		// (the bpf root is removed in between), closed entries live
		// --ct-timeout-close (10s), and a run opens rate × (warm-up +
		// duration) connections with two CT entries each.
		// Each family has its own n frontends.
		fams := len(b.fams)
		lbMax := max(262144, 4*n*fams)
		a, err := b.node.StartAgent(b.agentBin, "--socket-lb="+mode, "--log-level=warn", flowEvents,
			fmt.Sprintf("--lb-max=%d", lbMax), fmt.Sprintf("--lb-backends-max=%d", max(65536, 2*n*fams+1024)),
			"--ct-max=524288", "--ct-gc-interval=2s")
		if err != nil {
			return err
		}
		b.agent = a
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if err := a.WaitReady(wctx); err != nil {
			return err
		}
		for {
			st, err := b.node.AgentStatus(wctx)
			if err == nil && st.Services.Frontends >= n*fams {
				return settle(wctx, a.Pid())
			}
			select {
			case <-wctx.Done():
				return fmt.Errorf("agent did not program %d frontends (%d services × %d families): last status %+v, %v; log:\n%s", n*fams, n, fams, st, err, a.Logs())
			case <-time.After(100 * time.Millisecond):
			}
		}
	case "iptables-legacy", "iptables-nft":
		if err := b.verifyDetached(ctx); err != nil {
			return err
		}
		lctx, cancel := context.WithTimeout(ctx, loadTimeout)
		defer cancel()
		// kube-proxy programs each family with its own command:
		// iptables-legacy-restore, ip6tables-legacy-restore, ...
		backend := strings.TrimPrefix(v, "iptables")
		for _, f := range b.fams {
			if _, err := b.node.Exec(lctx, f.Iptables+backend+"-restore", files["iptables-"+f.Name]); err != nil {
				return err
			}
		}
		return nil
	case "nftables":
		if err := b.verifyDetached(ctx); err != nil {
			return err
		}
		lctx, cancel := context.WithTimeout(ctx, loadTimeout)
		defer cancel()
		for _, f := range b.fams {
			if _, err := b.node.Exec(lctx, "nft", "-f", files["nft-"+f.Name]); err != nil {
				return err
			}
		}
		return nil
	case "direct":
		return b.verifyDetached(ctx)
	}
	return fmt.Errorf("unknown variant %q", v)
}

// disable removes variant v completely.
func (b *bench) disable(ctx context.Context, v string) error {
	switch v {
	case "sluice-packet", "sluice-socket", "sluice-packet-all-flows", "sluice-socket-all-flows":
		if b.agent != nil {
			if err := b.agent.Stop(); err != nil {
				benchkit.Logf("stop agent: %v", err)
			}
			b.agent = nil
		}
		// The agent leaves maps and links pinned by design (traffic
		// survives restarts); removing the pins releases the links, which
		// detaches the programs.
		if err := os.RemoveAll(b.node.BPFRoot); err != nil {
			return err
		}
		if err := os.Mkdir(b.node.BPFRoot, 0o700); err != nil {
			return err
		}
		// Removing a pin drops the link's last reference, but the link is
		// released (and the program detached) asynchronously: poll.
		if err := benchkit.Poll(10*time.Second, 100*time.Millisecond, func() error { return b.verifyDetached(ctx) }); err != nil {
			return err
		}
		b.reportBpftoolLinks(ctx)
		return nil
	case "iptables-legacy", "iptables-nft":
		backend := strings.TrimPrefix(v, "iptables")
		for _, f := range b.fams {
			if _, err := b.node.Exec(ctx, f.Iptables+backend+"-restore", filepath.Join(b.dir, "iptables-empty.rules")); err != nil {
				return err
			}
			if v == "iptables-nft" {
				// Drop the emptied table too: its base chains would
				// stay hooked.
				if err := benchkit.DeleteNftTableOf(ctx, b.node, f.Nft, "nat"); err != nil {
					return err
				}
			}
		}
		return nil
	case "nftables":
		for _, f := range b.fams {
			if err := benchkit.DeleteNftTableOf(ctx, b.node, f.Nft, nftTable); err != nil {
				return err
			}
		}
		return nil
	}
	return nil
}

// verifyDetached checks, from inside the node's netns, that no BPF program
// is attached to any of its interfaces nor runs for the pods' cgroups.
func (b *bench) verifyDetached(ctx context.Context) error {
	out, err := b.node.Exec(ctx, b.self, "verify-detached", b.node.CgroupRoot, b.client.CgroupPath, b.backend.CgroupPath)
	if err != nil {
		return fmt.Errorf("sluice is not fully detached: %s", strings.TrimSpace(out))
	}
	return nil
}

// reportBpftoolLinks records how many links of Sluice programs bpftool
// lists, from the root netns and from inside the node's.
func (b *bench) reportBpftoolLinks(ctx context.Context) {
	count := func(runIn func(args ...string) ([]byte, error)) string {
		links, err := runIn("-j", "link", "show")
		if err != nil {
			return "error: " + err.Error()
		}
		progs, err := runIn("-j", "prog", "show")
		if err != nil {
			return "error: " + err.Error()
		}
		n, err := bpftoolSluiceLinks(links, progs)
		if err != nil {
			return "error: " + err.Error()
		}
		return fmt.Sprint(n)
	}
	// Links are freed asynchronously once their last reference (the pin)
	// goes (RCU, then a workqueue), so give them a moment.
	var outside, inside string
	start := time.Now()
	for {
		outside = count(func(args ...string) ([]byte, error) { return exec.CommandContext(ctx, "bpftool", args...).Output() })
		inside = count(func(args ...string) ([]byte, error) {
			out, err := b.node.Exec(ctx, "bpftool", args...)
			return []byte(out), err
		})
		if outside == "0" && inside == "0" || time.Since(start) > 3*time.Second {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if b.o.Verbose {
		benchkit.Logf("bpftool link after detach: %s Sluice links (root netns), %s (node netns), after %s", outside, inside, time.Since(start).Round(time.Millisecond))
	}
	b.rep.BpftoolChecks++
	if outside != "0" || inside != "0" {
		b.rep.BpftoolNonZero = append(b.rep.BpftoolNonZero, fmt.Sprintf("after detach: bpftool link lists %s Sluice links from the root netns, %s from the node netns", outside, inside))
	}
}

// cold times loading kube-proxy's rules for coldServices × coldEndpoints
// into an empty netns, for each tool, in interleaved rounds.
func (b *bench) cold(ctx context.Context) error {
	node, err := b.c.AddNode(ctx, "cold", harness.Routed)
	if err != nil {
		return err
	}
	svcs := genServices(familyIPv4, b.o.coldServices, b.o.coldEndpoints, netip.AddrPort{}, "", "", "")
	ipt := filepath.Join(b.dir, "cold-iptables.rules")
	nft := filepath.Join(b.dir, "cold-nftables.nft")
	empty := filepath.Join(b.dir, "iptables-empty.rules")
	iptRules := iptablesRules(familyIPv4, svcs)
	for f, content := range map[string]string{ipt: iptRules, nft: nftRules(familyIPv4, svcs), empty: iptablesEmpty} {
		if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
			return err
		}
	}
	cr := &coldResult{Services: b.o.coldServices, Endpoints: b.o.coldEndpoints,
		IptablesChains: strings.Count(iptRules, "\n:"), IptablesRules: strings.Count(iptRules, "\n-A ")}
	b.rep.Cold = cr
	tools := []struct {
		name  string
		load  []string
		clear [][]string
	}{
		{"iptables-legacy-restore", []string{"iptables-legacy-restore", ipt}, [][]string{{"iptables-legacy-restore", empty}}},
		{"iptables-nft-restore", []string{"iptables-nft-restore", ipt}, [][]string{{"iptables-nft-restore", empty}, {"nft", "delete", "table", "ip", "nat"}}},
		{"nft -f", []string{"nft", "-f", nft}, [][]string{{"nft", "delete", "table", "ip", nftTable}}},
	}
	benchkit.Logf("=== cold programming: %d services × %d endpoints (%d iptables chains, %d rules), %d rounds", cr.Services, cr.Endpoints, cr.IptablesChains, cr.IptablesRules, b.o.coldRounds)
	times := map[string][]float64{}
	errs := map[string]string{}
	for r := range b.o.coldRounds {
		for i := range tools {
			t := tools[(i+r)%len(tools)]
			if errs[t.name] != "" || slowOnce(times[t.name]) {
				continue
			}
			lctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
			start := time.Now()
			_, err := node.Exec(lctx, t.load[0], t.load[1:]...)
			d := time.Since(start)
			cancel()
			if err != nil {
				errs[t.name] = fmt.Sprintf("%s: %v", strings.Join(t.load, " "), err)
				benchkit.Logf("cold %s FAILED: %v", t.name, err)
			} else {
				times[t.name] = append(times[t.name], d.Seconds())
				benchkit.Logf("cold %-24s round %d: %.3fs", t.name, r+1, d.Seconds())
			}
			for _, c := range t.clear {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
				_, cerr := node.Exec(cctx, c[0], c[1:]...)
				cancel()
				if cerr != nil && err == nil {
					return fmt.Errorf("clear after %s: %w", t.name, cerr)
				}
			}
		}
	}
	for _, t := range tools {
		ct := coldTool{Tool: t.name, Error: errs[t.name], Seconds: times[t.name]}
		if len(ct.Seconds) > 0 {
			ct.Median, ct.Q1, ct.Q3 = benchkit.Quartiles(ct.Seconds)
		}
		cr.Tools = append(cr.Tools, ct)
	}
	if len(errs) == len(tools) {
		return errors.New("every cold load failed")
	}
	return nil
}

// settle waits until the agent is idle after programming: its CPU time
// grows by at most 2 clock ticks (20 ms, 4% of a core) in each of two
// consecutive half seconds. Right after start an agent with 10k services
// still runs Go's GC and its first passes, which a 1 s round would
// measure instead of the steady state users run in (kube-proxy's variants
// have no daemon that could be busy). The time it took is logged.
func settle(ctx context.Context, pid int) error {
	start := time.Now()
	prev, err := cpuTicks(pid)
	if err != nil {
		return err
	}
	quiet := 0
	for quiet < 2 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent did not settle after %s: %w", time.Since(start).Round(time.Millisecond), ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
		cur, err := cpuTicks(pid)
		if err != nil {
			return err
		}
		if cur-prev <= 2 {
			quiet++
		} else {
			quiet = 0
		}
		prev = cur
	}
	benchkit.Logf("agent idle %s after programming", time.Since(start).Round(100*time.Millisecond))
	return nil
}

// cpuTicks is the user plus system CPU time of pid in clock ticks
// (/proc/<pid>/stat fields 14 and 15).
func cpuTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("agent cpu time: %w", err)
	}
	// The command name (field 2) may hold spaces: fields count from the
	// last ')'.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("agent cpu time: short /proc/%d/stat", pid)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("agent cpu time: %w", err)
	}
	return u + s, nil
}
