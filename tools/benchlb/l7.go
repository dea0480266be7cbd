package main

// `benchlb l7`: what the node's L7 proxy adds to each HTTP request
// (`make bench-l7`), with the test proxy standing in for Envoy.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

const l7Usage = `benchlb l7: the L7 proxy's cost per HTTP request, as a ratio to direct

Usage: benchlb l7 [flags]       (root; ` + "`make bench-l7`" + ` builds the binaries and runs it)

On one routed simulated node (internal/testing/harness: network namespaces,
a cgroup and a bpffs directory, all removed afterwards; no traffic leaves
them) with a client pod and a server pod (a net/http server on :8080) and
sluice-agent running with a NetworkPolicy that admits the client to the
server's port 8080, measures in interleaved rounds (each round runs every
variant once, in an order rotated per round):

  direct     no L7 policy: the client's connections go straight to the
             server (through Sluice's datapath and the NetworkPolicy
             lookup): the baseline
  l7-proxy   a SluiceL7Policy allowing GET /api/* on the server's port:
             the kernel hands every connection to the node's proxy
             (bpf_sk_assign), which decides the request by the rule and
             relays it to the server

and for each, with HTTP/1.1 GET /api/items from a Go client in the client
pod:

  req    --workers persistent connections, requests back to back:
         requests/s and per-request latency (p50, p99)
  conn   a new connection per request (connect, one GET, response, close
         with RST): connections/s and latency

Before each l7-proxy run it checks that the rule is enforced (GET /admin
answered 403 by the proxy); after each run, that the proxy handled the
run's connections (l7-proxy) or none (direct). The report gives medians
over rounds and, per round, the ratio to that round's direct run (median
and interquartile range of those ratios). Nothing passes or fails on time.

No Envoy runs here: the proxy is the test proxy (internal/testing/l7proxy)
that the end-to-end tests and make demo use. It parses each connection's
FIRST request only and then relays bytes, so on persistent connections its
per-request cost is a relay's (two extra socket hops in the node), not
Envoy's HTTP codec, router and RBAC filter run on every request; it does
no rate limiting and no JWT (a run with a rate limit that never triggers
is therefore not measured). It reports each connection to the harness as
a JSON line, as Envoy's access log would.

The node's netns runs with ip_local_port_range 1024-65535 and tcp_tw_reuse
1: the proxy's upstream connections end in TIME_WAIT on the node's side,
and the conn runs open tens of thousands of them to one destination.

Flags:
`

// l7Variants are the variants of benchlb l7, the baseline last.
var l7Variants = []string{"l7-proxy", "direct"}

const (
	l7ServerPort = 8080
	l7Path       = "/api/items"
	// l7Manifest holds the SluiceL7Policy while the l7-proxy variant runs.
	l7Manifest = "l7.yaml"
)

const l7NetworkPolicy = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-client, namespace: default}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: client}}
    ports:
    - {protocol: TCP, port: 8080}
`

const l7Policy = `apiVersion: sluice.io/v1alpha1
kind: SluiceL7Policy
metadata: {name: server-api, namespace: default}
spec:
  podSelector: {matchLabels: {app: server}}
  ports:
  - port: 8080
    rules:
      http:
      - method: GET
        pathPrefix: /api/
`

type l7Options struct {
	benchkit.OutputFlags
	benchkit.RateFlags
	binDir string
}

type l7Sample struct {
	benchkit.Sample
	Req  benchkit.HTTPLoadResult `json:"req"`
	Conn benchkit.HTTPLoadResult `json:"conn"`
	// Proxied is how many connections the proxy handled during the run.
	Proxied int `json:"proxied"`
}

// l7Summary is one variant over the rounds: medians of its figures and of
// their per-round ratios to direct.
type l7Summary struct {
	Variant string `json:"variant"`
	Rounds  int    `json:"rounds"`
	Failed  int    `json:"failedRounds"`
	Errors  uint64 `json:"errors"`
	// Figures and Ratios are keyed by l7Figures' names.
	Figures map[string]benchkit.Stat `json:"figures"`
	Ratios  map[string]benchkit.Stat `json:"ratiosToDirect"`
	// AddedP50 is the median over rounds of the request p50 minus that
	// round's direct p50, in microseconds.
	AddedP50 benchkit.Stat `json:"addedReqP50us"`
}

type l7Report struct {
	benchkit.Header
	Samples []l7Sample  `json:"samples"`
	Summary []l7Summary `json:"summary"`
	// ProxyPort is the proxy listener the SluiceL7Policy compiled to.
	ProxyPort uint16 `json:"proxyPort,omitempty"`
}

// l7Figures are the report's columns, in order.
var l7Figures = []struct {
	name string
	get  func(l7Sample) float64
}{
	{"req/s", func(s l7Sample) float64 { return s.Req.Rate }},
	{"req p50 µs", func(s l7Sample) float64 { return s.Req.P50 }},
	{"req p99 µs", func(s l7Sample) float64 { return s.Req.P99 }},
	{"conn/s", func(s l7Sample) float64 { return s.Conn.Rate }},
	{"conn p50 µs", func(s l7Sample) float64 { return s.Conn.P50 }},
}

func runL7(args []string) error {
	fs := flag.NewFlagSet("l7", flag.ExitOnError)
	var o l7Options
	o.OutputFlags.Register(fs)
	o.RateFlags.Register(fs, "load run (req and conn each)")
	fs.StringVar(&o.binDir, "bin-dir", "", "directory holding a prebuilt sluice-agent (default: build it)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), l7Usage)
		fs.PrintDefaults()
	}
	_ = fs.Parse(args)
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := o.RateFlags.Validate(); err != nil {
		return err
	}
	if err := benchkit.RequireRoot("bench-l7"); err != nil {
		return err
	}
	if err := benchkit.RequireCommands([]string{"ip", "nsenter"}, "apt-get install -y iproute2 util-linux"); err != nil {
		return err
	}
	if o.binDir != "" {
		os.Setenv(harness.EnvBinDir, o.binDir)
	}
	benchkit.Measure(benchkit.Driver{Name: "benchlb l7"}, o.JSONPath,
		func(ctx context.Context) (*l7Report, error) { return runL7Bench(ctx, o) },
		func(w io.Writer, rep *l7Report) { printL7Report(w, o, rep) })
	return nil
}

// l7Bench is one run's node, pods, agent and proxy.
type l7Bench struct {
	o      l7Options
	self   string
	c      *harness.Cluster
	node   *harness.Node
	client *harness.Pod
	server *harness.Pod
	proxy  *harness.L7Proxy
	// port is the proxy listener of the last l7-proxy run.
	port uint16
}

func runL7Bench(ctx context.Context, o l7Options) (*l7Report, error) {
	rep := &l7Report{Header: benchkit.StartHeader(o.RateFlags.Options())}
	defer rep.End()
	b := &l7Bench{o: o}
	var err error
	if b.self, err = os.Executable(); err != nil {
		return rep, err
	}
	benchkit.RemoveStale()
	if b.c, err = benchkit.NewCluster(ctx, "benchl7", o.Verbose); err != nil {
		return rep, err
	}
	defer func() {
		if err := b.c.Cleanup(); err != nil {
			benchkit.Logf("cleanup: %v", err)
		}
	}()
	if err := b.setup(ctx); err != nil {
		return rep, fmt.Errorf("setup: %w", err)
	}
	trial := benchkit.Trial[l7Sample]{
		Enable:  b.enable,
		Measure: b.measure,
		Disable: b.disable,
		Describe: func(s l7Sample) string {
			return fmt.Sprintf("%7.0f req/s p50 %5.0fµs p99 %6.0fµs  %6.0f conn/s  (%d via proxy)",
				s.Req.Rate, s.Req.P50, s.Req.P99, s.Conn.Rate, s.Proxied)
		},
	}
	benchkit.Logf("=== %d rounds of %v: client %s → server %s:%d", o.Rounds, l7Variants, b.client.IP, b.server.IP, l7ServerPort)
	err = benchkit.Interleave(ctx, o.Rounds, l7Variants, trial, func(run benchkit.Run[l7Sample]) {
		s := run.Result
		s.Sample = run.Sample()
		rep.Samples = append(rep.Samples, s)
		if run.Variant == "l7-proxy" && run.Err == nil {
			rep.ProxyPort = b.port
		}
	})
	rep.summarize()
	return rep, err
}

// setup builds the node and pods, starts the server, the agent (with the
// NetworkPolicy in force) and the proxy, which listens on nothing until
// the l7-proxy variant's policy gives it a listener.
func (b *l7Bench) setup(ctx context.Context) error {
	agentBin, err := harness.Build(ctx, agentPkg)
	if err != nil {
		return err
	}
	if b.node, err = b.c.AddNode(ctx, "node1", harness.Routed); err != nil {
		return err
	}
	if b.client, err = b.node.AddPod(ctx, "default", "client", map[string]string{"app": "client"}); err != nil {
		return err
	}
	if b.server, err = b.node.AddPod(ctx, "default", "server", map[string]string{"app": "server"}, harness.Port{Name: "http", Port: l7ServerPort}); err != nil {
		return err
	}
	// See l7Usage: room for the conn runs' connections at both ends of
	// the proxy.
	for _, sysctl := range []string{"echo 1024 65535 > /proc/sys/net/ipv4/ip_local_port_range", "echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse"} {
		if _, err := b.node.Exec(ctx, "sh", "-c", sysctl); err != nil {
			return err
		}
	}
	if _, err := b.client.Exec(ctx, "sh", "-c", "echo 1024 65535 > /proc/sys/net/ipv4/ip_local_port_range"); err != nil {
		return err
	}
	if err := b.c.SyncManifests(); err != nil {
		return err
	}
	if err := b.c.WriteManifest("netpol.yaml", l7NetworkPolicy); err != nil {
		return err
	}
	if err := benchkit.StartHTTP(ctx, b.server, b.client, b.self, b.serverAddr(), l7Path); err != nil {
		return fmt.Errorf("http server: %w", err)
	}
	// A CT table that holds every connection of a run (closed entries
	// live --ct-timeout-close), as benchlb's rates do.
	a, err := b.node.StartAgent(agentBin, "--log-level=warn", "--ct-max=524288", "--ct-gc-interval=2s")
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := a.WaitReady(wctx); err != nil {
		return err
	}
	if err := benchkit.Poll(30*time.Second, 100*time.Millisecond, b.policyInForce); err != nil {
		return fmt.Errorf("%w; agent log:\n%s", err, a.Logs())
	}
	if b.proxy, err = b.node.StartL7Proxy(true); err != nil {
		return err
	}
	benchkit.Logf("node %s: agent and test proxy running, client %s, server %s:%d", b.node.Name, b.client.IP, b.server.IP, l7ServerPort)
	return nil
}

// policyInForce succeeds once the server is an endpoint under the
// NetworkPolicy and the client still gets its 200.
func (b *l7Bench) policyInForce() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var eps []api.Endpoint
	if err := b.node.AgentGet(ctx, api.PathEndpoints, &eps); err != nil {
		return err
	}
	ready := 0
	for _, ep := range eps {
		if ep.State == "ready" {
			ready++
		}
	}
	if ready < 2 {
		return fmt.Errorf("%d of 2 endpoints ready: %+v", ready, eps)
	}
	return b.get(ctx, l7Path, 200)
}

func (b *l7Bench) serverAddr() netip.AddrPort { return netip.AddrPortFrom(b.server.IP, l7ServerPort) }

// get GETs path on the server from the client until the status is want.
func (b *l7Bench) get(ctx context.Context, path string, want int) error {
	_, err := b.client.Exec(ctx, b.self, "http-get", "-url", "http://"+b.serverAddr().String()+path, "-want", fmt.Sprint(want), "-timeout", "10s")
	return err
}

// l7Config is the agent's compiled L7 policy and whether an endpoint's
// policy redirects to it.
func (b *l7Bench) l7Config(ctx context.Context) (l7.Config, bool, error) {
	var cfg l7.Config
	if err := b.node.AgentGet(ctx, api.PathL7Config, &cfg); err != nil {
		return cfg, false, err
	}
	st, err := b.node.AgentStatus(ctx)
	if err != nil {
		return cfg, false, err
	}
	return cfg, st.Policy.L7Redirecting > 0, nil
}

// enable puts the SluiceL7Policy in place for l7-proxy and waits until the
// kernel redirects, the proxy listens and the rule is enforced; direct
// needs nothing (disable left no L7 policy).
func (b *l7Bench) enable(ctx context.Context, v string) error {
	if v == "direct" {
		return nil
	}
	if err := b.c.WriteManifest(l7Manifest, l7Policy); err != nil {
		return err
	}
	err := benchkit.Poll(20*time.Second, 50*time.Millisecond, func() error {
		cfg, redirecting, err := b.l7Config(ctx)
		if err != nil {
			return err
		}
		if len(cfg.Listeners) != 1 || !redirecting {
			return fmt.Errorf("agent's L7 config has %d listeners (want 1), redirecting %v", len(cfg.Listeners), redirecting)
		}
		b.port = cfg.Listeners[0].Port
		if l := b.proxy.Listening(); !slices.Equal(l, []uint16{b.port}) {
			return fmt.Errorf("the proxy listens on %v, not on %d", l, b.port)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The rule is evaluated: a path it does not allow is refused.
	if err := b.get(ctx, "/admin", 403); err != nil {
		return fmt.Errorf("the proxy does not enforce the rule: %w", err)
	}
	return b.get(ctx, l7Path, 200)
}

// disable removes the SluiceL7Policy and waits until nothing is
// redirected any more and the direct path answers.
func (b *l7Bench) disable(ctx context.Context, v string) error {
	if v == "direct" {
		return nil
	}
	if err := b.c.RemoveManifest(l7Manifest); err != nil {
		return err
	}
	err := benchkit.Poll(20*time.Second, 50*time.Millisecond, func() error {
		cfg, redirecting, err := b.l7Config(ctx)
		if err != nil {
			return err
		}
		if len(cfg.Listeners) != 0 || redirecting {
			return fmt.Errorf("after removing the L7 policy: %d listeners, redirecting %v", len(cfg.Listeners), redirecting)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return b.get(ctx, "/admin", 200)
}

// measure runs the req and conn loads and checks that the proxy handled
// the variant's connections: all of them for l7-proxy, none for direct.
func (b *l7Bench) measure(ctx context.Context, v string) (l7Sample, error) {
	var s l7Sample
	load := benchkit.Load{Workers: b.o.Workers, Duration: b.o.Duration, Warmup: b.o.Warmup}
	url := "http://" + b.serverAddr().String() + l7Path
	before := len(b.proxy.Conns())
	var err error
	for _, m := range []struct {
		mode string
		out  *benchkit.HTTPLoadResult
	}{{"req", &s.Req}, {"conn", &s.Conn}} {
		if *m.out, err = load.RunHTTP(ctx, b.client, b.self, url, m.mode); err != nil {
			return s, err
		}
		if m.out.Ops == 0 {
			return s, fmt.Errorf("%s run: no successful request (%d errors, first: %s)", m.mode, m.out.Errors, m.out.FirstError)
		}
	}
	// The proxy reports a connection once it is relayed, so the last
	// ones may still be on their way: wait a moment for them.
	want := int(s.Conn.Ops) + b.o.Workers
	_ = benchkit.Poll(2*time.Second, 50*time.Millisecond, func() error {
		if s.Proxied = len(b.proxy.Conns()) - before; v == "l7-proxy" && s.Proxied < want {
			return errors.New("not yet")
		}
		return nil
	})
	switch {
	case v == "direct" && s.Proxied != 0:
		return s, fmt.Errorf("direct run: the proxy handled %d connections", s.Proxied)
	case v == "l7-proxy" && s.Proxied < want:
		return s, fmt.Errorf("l7-proxy run: the proxy handled %d connections, fewer than the %d measured", s.Proxied, want)
	}
	return s, nil
}

// summarize computes per-variant medians and per-round ratios to direct.
func (rep *l7Report) summarize() {
	perRound := func(v string, get func(l7Sample) float64) benchkit.PerRound {
		out := benchkit.PerRound{}
		for _, s := range rep.Samples {
			if s.Variant == v && s.Err == "" {
				out[s.Round] = get(s)
			}
		}
		return out
	}
	rep.Summary = nil
	for _, v := range l7Variants {
		vs := l7Summary{Variant: v, Figures: map[string]benchkit.Stat{}, Ratios: map[string]benchkit.Stat{}}
		for _, s := range rep.Samples {
			if s.Variant != v {
				continue
			}
			vs.Rounds++
			if s.Err != "" {
				vs.Failed++
			}
			vs.Errors += s.Req.Errors + s.Conn.Errors
		}
		for _, f := range l7Figures {
			mine, direct := perRound(v, f.get), perRound("direct", f.get)
			vs.Figures[f.name] = benchkit.StatOf(mine.Values())
			vs.Ratios[f.name] = benchkit.StatOf(mine.RatiosTo(direct))
		}
		p50 := func(s l7Sample) float64 { return s.Req.P50 }
		mine, direct := perRound(v, p50), perRound("direct", p50)
		var added []float64
		for _, r := range slices.Sorted(maps.Keys(mine)) {
			if d, ok := direct[r]; ok {
				added = append(added, mine[r]-d)
			}
		}
		vs.AddedP50 = benchkit.StatOf(added)
		rep.Summary = append(rep.Summary, vs)
	}
}

func printL7Report(w io.Writer, o l7Options, rep *l7Report) {
	rep.Print(w, "benchlb l7")
	fmt.Fprintf(w, "\nClient pod → server pod, HTTP/1.1 GET %s, %d interleaved rounds × %s (+%s warm-up) per load, %d workers.\n",
		l7Path, o.Rounds, o.Duration, o.Warmup, o.Workers)
	fmt.Fprintf(w, "l7-proxy: SluiceL7Policy GET /api/* → test proxy (internal/testing/l7proxy) on port %d; direct: no L7 policy.\n", rep.ProxyPort)
	fmt.Fprintln(w, "Medians over rounds; \"x direct\" is the median of per-round ratios to that round's direct run, [Q1–Q3].")
	tw := benchkit.NewTable(w)
	fmt.Fprint(tw, "variant\t")
	for _, f := range l7Figures {
		fmt.Fprintf(tw, "%s\tx direct\t[IQR]\t", f.name)
	}
	fmt.Fprintln(tw, "failed rounds\terrors\t")
	for _, v := range rep.Summary {
		fmt.Fprintf(tw, "%s\t", v.Variant)
		for _, f := range l7Figures {
			st, r := v.Figures[f.name], v.Ratios[f.name]
			fmt.Fprintf(tw, "%.0f\t%.2f\t[%.2f–%.2f]\t", st.Median, r.Median, r.Q1, r.Q3)
		}
		fmt.Fprintf(tw, "%d/%d\t%d\t\n", v.Failed, v.Rounds, v.Errors)
	}
	tw.Flush()
	for _, v := range rep.Summary {
		if v.Variant != "direct" {
			fmt.Fprintf(w, "%s adds %.0f µs to a request's p50 on a persistent connection (median over rounds of the difference to direct, [%.0f–%.0f]).\n",
				v.Variant, v.AddedP50.Median, v.AddedP50.Q1, v.AddedP50.Q3)
		}
	}
	for _, s := range rep.Samples {
		if s.Err != "" {
			fmt.Fprintf(w, "round %d %s failed: %s\n", s.Round, s.Variant, benchkit.FirstLine(s.Err))
		}
	}
	fmt.Fprintln(w, "The test proxy parses only each connection's first request, then relays bytes: on persistent connections")
	fmt.Fprintln(w, "this is a relay's cost, not Envoy's (HTTP codec, router and RBAC on every request); it has no rate limits.")
}
