package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

const (
	agentPkg = "github.com/sluice-net/sluice/cmd/sluice-agent"
	cliPkg   = "github.com/sluice-net/sluice/cmd/sluice"
	// serverPort is the echo server's port and every event's destination.
	serverPort = 8080
	// markerEvents are emitted before a follow step's window, to know
	// the follower is reading (it prints nothing before a flow comes).
	markerEvents = 64
	// drainStable is how long the store's count must stay still for a
	// step's events to be taken as all read when their number is not
	// known in advance (connections). The agent polls its ring every
	// 50 ms.
	drainStable = time.Second
	// followStable is the same for the follower's output.
	followStable = 2 * time.Second
	// shortOfTarget: a generator below this share of its target rate
	// could not offer it (machine too busy); the step counts at the rate
	// it reached.
	shortOfTarget = 0.97
)

// Event sources.
const (
	sourceTestRun = "test-run"
	sourceConns   = "connections"
)

// bench is one run's simulated nodes and state.
type bench struct {
	o      options
	self   string
	c      *harness.Cluster
	builds []*build // this tree's, then -baseline's
	rep    *report
}

// build is one version of sluice-agent and sluice under test, on a
// simulated node of its own: this tree's and, with -baseline, another
// one's, measured step by step in the same run so that both see the same
// machine.
type build struct {
	name             string // "" for this tree, baseName for -baseline
	agentBin, cliBin string
	node             *harness.Node
	client, server   *harness.Pod
	agent            *harness.Agent
	agentPid         int
	clientIfindex    int
	info             *agentInfo // in the report
	idle             *float64   // the idle agent's CPU, in the report
}

// baseName names the -baseline build in the report.
const baseName = "base"

// label is a variant of a build as the report names it: "store", "base
// follow".
func (bd *build) label(variant string) string {
	if bd.name == "" {
		return variant
	}
	return bd.name + " " + variant
}

func run(ctx context.Context, o options) (*report, error) {
	rep := &report{Header: benchkit.StartHeader(reportOptions(o))}
	defer rep.End()
	self, err := os.Executable()
	if err != nil {
		return rep, err
	}
	// Memory first, in a process of its own, before anything else runs.
	benchkit.Logf("=== flow buffer memory: stores of %s flows", o.memFlows)
	if rep.Memory, err = flowMemChild(ctx, self, o.memFlows); err != nil {
		return rep, fmt.Errorf("flow buffer memory: %w", err)
	}
	if o.baseline != "" {
		// The baseline's own code measures its own store.
		if rep.BaseMemory, err = flowMemChild(ctx, filepath.Join(o.baseline, "benchflows"), o.memFlows); err != nil {
			return rep, fmt.Errorf("baseline flow buffer memory (-baseline %s holds benchflows?): %w", o.baseline, err)
		}
	}
	if o.skipTest && o.skipConns {
		return rep, nil
	}

	b := &bench{o: o, self: self, rep: rep}
	this := &build{info: &rep.Agent, idle: &rep.IdleAgentCores}
	if this.agentBin, err = harness.Build(ctx, agentPkg); err != nil {
		return rep, err
	}
	if this.cliBin, err = harness.Build(ctx, cliPkg); err != nil {
		return rep, err
	}
	b.builds = append(b.builds, this)
	if o.baseline != "" {
		rep.BaseAgent = &agentInfo{}
		rep.BaseIdleAgentCores = new(float64)
		b.builds = append(b.builds, &build{name: baseName, info: rep.BaseAgent, idle: rep.BaseIdleAgentCores,
			agentBin: filepath.Join(o.baseline, "sluice-agent"), cliBin: filepath.Join(o.baseline, "sluice")})
	}
	benchkit.RemoveStale()
	if b.c, err = benchkit.NewCluster(ctx, "benchflows", o.Verbose); err != nil {
		return rep, err
	}
	defer func() {
		for _, bd := range b.builds {
			if bd.agent != nil {
				if err := bd.agent.Stop(); err != nil {
					benchkit.Logf("stop agent: %v", err)
				}
			}
		}
		if err := b.c.Cleanup(); err != nil {
			benchkit.Logf("cleanup: %v", err)
		}
	}()
	if err := b.setup(ctx); err != nil {
		return rep, fmt.Errorf("setup: %w", err)
	}
	for _, bd := range b.builds {
		if err := b.measureIdle(ctx, bd); err != nil {
			return rep, err
		}
	}
	if !o.skipConns {
		benchkit.Logf("=== real connections client → server: %v conn/s × %s, variants %v", o.connRates, o.duration, b.labels())
		if err := b.sweep(ctx, sourceConns, o.connRates); err != nil {
			return rep, err
		}
	}
	if !o.skipTest {
		benchkit.Logf("=== test-run generator: %v events/s × %s, variants %v", o.rates, o.duration, b.labels())
		if err := b.sweep(ctx, sourceTestRun, o.rates); err != nil {
			return rep, err
		}
	}
	if o.profileDir != "" {
		file := filepath.Join(o.profileDir, "agent-heap.pprof")
		if err := fetchAgentProfile(ctx, this.node.StateDir, "/debug/pprof/heap?gc=1", file); err != nil {
			return rep, err
		}
		benchkit.Logf("profiles in %s", o.profileDir)
	}
	return rep, nil
}

// flowMemChild runs the flowmem subcommand of a benchflows binary and
// returns its results.
func flowMemChild(ctx context.Context, bin, sizes string) ([]flowMemResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "flowmem", "-flows", sizes).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
		}
		return nil, err
	}
	var res []flowMemResult
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("flowmem output %q: %w", out, err)
	}
	return res, nil
}

// podLabels are what a Deployment's pod carries.
func podLabels(app string) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name": app, "app.kubernetes.io/instance": app + "-prod",
		"app.kubernetes.io/component": "backend", "pod-template-hash": "5d8c7f9b6",
	}
}

// setup builds each build's node and pods, starts their agents, waits
// until every pod is an attached endpoint, and starts the echo servers.
func (b *bench) setup(ctx context.Context) error {
	for _, bd := range b.builds {
		if err := b.addNode(ctx, bd); err != nil {
			return err
		}
	}
	if err := b.c.SyncManifests(); err != nil {
		return err
	}
	for _, bd := range b.builds {
		if err := b.startAgent(ctx, bd); err != nil {
			return fmt.Errorf("%s: %w", buildName(bd.name), err)
		}
	}
	return nil
}

// addNode adds a build's node: a client, a server and -pods idle pods.
// Pod names are the cluster's, so the baseline's are prefixed.
func (b *bench) addNode(ctx context.Context, bd *build) error {
	prefix, node := "", "node1"
	if bd.name != "" {
		prefix, node = bd.name+"-", bd.name+"1"
	}
	var err error
	if bd.node, err = b.c.AddNode(ctx, node, harness.Routed); err != nil {
		return err
	}
	if bd.client, err = bd.node.AddPod(ctx, "shop", prefix+"client", podLabels("client")); err != nil {
		return err
	}
	if bd.server, err = bd.node.AddPod(ctx, "shop", prefix+"server", podLabels("server"), harness.Port{Name: "http", Port: serverPort}); err != nil {
		return err
	}
	for i := range b.o.pods {
		if _, err := bd.node.AddPod(ctx, "shop", fmt.Sprintf("%sidle-%d", prefix, i), podLabels(fmt.Sprintf("idle-%d", i%5))); err != nil {
			return err
		}
	}
	return nil
}

// startAgent starts a build's agent and its node's echo server.
func (b *bench) startAgent(ctx context.Context, bd *build) error {
	benchkit.Logf("harness run %s: node %s (netns %s, bpffs %s, state %s), %d pods, agent %s", b.c.ID, bd.node.Name,
		bd.node.NetnsName, bd.node.BPFRoot, bd.node.StateDir, len(bd.node.Pods()), bd.agentBin)
	flags := b.o.agentFlags
	if bd.name == "" && b.o.profileDir != "" {
		flags = append(slices.Clone(flags), "--pprof")
	}
	var err error
	if bd.agent, err = bd.node.StartAgent(bd.agentBin, flags...); err != nil {
		return err
	}
	if bd.agentPid, err = agentProcess(bd.agent); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := bd.agent.WaitReady(rctx); err != nil {
		return err
	}
	if err := waitEndpoints(rctx, bd); err != nil {
		return err
	}
	st, err := bd.node.AgentStatus(ctx)
	if err != nil {
		return err
	}
	*bd.info = agentInfo{
		Pid: bd.agentPid, Flags: flags, Endpoints: st.Endpoints, AttachMode: st.AttachMode, Binary: bd.agentBin,
		FlowBuffer: st.Flows.Capacity, EventsBuffer: eventsBufferOf(bd.agent.Logs()), EventBytes: eventRecordBytes(),
	}
	if st.AttachMode != "tcx" {
		return fmt.Errorf("the agent attached with %q: the test-run generator finds sl_from_ep through tcx", st.AttachMode)
	}
	addr := netip.AddrPortFrom(bd.server.IP, serverPort)
	if err := benchkit.StartEcho(ctx, bd.server, bd.client, b.self, addr); err != nil {
		return fmt.Errorf("echo server on %s: %w", addr, err)
	}
	benchkit.Logf("agent pid %d ready: %d endpoints, flow buffer %d, events ring %d bytes; client veth ifindex %d",
		bd.agentPid, st.Endpoints, st.Flows.Capacity, bd.info.EventsBuffer, bd.clientIfindex)
	return nil
}

// agentProcess returns the agent's pid once nsenter has exec'd it (the
// same process: nsenter execs without forking for --net).
func agentProcess(a *harness.Agent) (int, error) {
	for deadline := time.Now().Add(10 * time.Second); ; {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", a.Pid()))
		if err == nil && strings.TrimSpace(string(comm)) == "sluice-agent" {
			return a.Pid(), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("pid %d is %q, not the agent, after 10s: cannot read its CPU time", a.Pid(), strings.TrimSpace(string(comm)))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitEndpoints waits until every pod of a build's node is a ready
// endpoint and notes the client's host-side interface.
func waitEndpoints(ctx context.Context, bd *build) error {
	for {
		var eps []api.Endpoint
		err := bd.node.AgentGet(ctx, api.PathEndpoints, &eps)
		if err == nil {
			ready := 0
			for _, ep := range eps {
				if ep.State != "ready" {
					continue
				}
				ready++
				if ep.Namespace == bd.client.Namespace && ep.Pod == bd.client.Name {
					bd.clientIfindex = ep.IfIndex
				}
			}
			if ready == len(bd.node.Pods()) && bd.clientIfindex > 0 {
				return nil
			}
			err = fmt.Errorf("%d of %d endpoints ready", ready, len(bd.node.Pods()))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("endpoints not ready: %v: %w", err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

var eventsBufferRe = regexp.MustCompile(`eventsBuffer=(\d+)`)

// eventsBufferOf is the ring size the agent logged at start.
func eventsBufferOf(logs string) int {
	if m := eventsBufferRe.FindStringSubmatch(logs); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

// measureIdle measures a build's agent's CPU with nothing happening: the
// cost the steps' CPU is net of.
func (b *bench) measureIdle(ctx context.Context, bd *build) error {
	select {
	case <-time.After(time.Second): // let start-up work finish
	case <-ctx.Done():
		return ctx.Err()
	}
	c0, err := procCPU(bd.agentPid)
	if err != nil {
		return err
	}
	t0 := time.Now()
	select {
	case <-time.After(b.o.idle):
	case <-ctx.Done():
		return ctx.Err()
	}
	c1, err := procCPU(bd.agentPid)
	if err != nil {
		return err
	}
	*bd.idle = (c1 - c0) / time.Since(t0).Seconds()
	benchkit.Logf("idle agent (%s): %.1f%% of a core", buildName(bd.name), 100**bd.idle)
	return nil
}

// variant is one variant of one build: what a step measures.
type variant struct {
	bd   *build
	mode string // store or follow
}

func (v variant) label() string { return v.bd.label(v.mode) }

// variants are the steps of each rate: every -variants mode of every
// build.
func (b *bench) variants() []variant {
	var out []variant
	for _, m := range b.o.variants {
		for _, bd := range b.builds {
			out = append(out, variant{bd, m})
		}
	}
	return out
}

func (b *bench) labels() []string {
	var out []string
	for _, v := range b.variants() {
		out = append(out, v.label())
	}
	return out
}

// sweep measures every variant at each rate, ascending, in an order
// alternating per rate. A variant stops climbing after two steps in a row
// that lost events or whose generator fell short. For the test-run
// generator, -refine more steps then bisect between the last clean and
// the first lossy rate.
func (b *bench) sweep(ctx context.Context, source string, targets []int) error {
	stopped := map[string]bool{}
	bad := map[string]int{}
	for i, t := range targets {
		for _, v := range alternate(b.variants(), i) {
			l := v.label()
			if stopped[l] {
				continue
			}
			s, err := b.step(ctx, source, v, float64(t))
			if err != nil {
				return err
			}
			if s.lossy() || s.short() || s.Err != "" {
				bad[l]++
			} else {
				bad[l] = 0
			}
			if bad[l] >= 2 {
				stopped[l] = true
				benchkit.Logf("%s %s: two steps in a row lost events or could not be offered: not going higher", source, l)
			}
		}
	}
	if source != sourceTestRun {
		return nil
	}
	for _, v := range b.variants() {
		for range b.o.refine {
			lo, hi := b.rep.bounds(source, v.label())
			if lo == 0 || hi == 0 || hi/lo < 1.1 {
				break
			}
			mid := math.Round(math.Sqrt(lo*hi)/100) * 100
			if _, err := b.step(ctx, source, v, mid); err != nil {
				return err
			}
		}
	}
	return nil
}

// alternate returns l in order for even i, reversed for odd i, so that no
// variant always runs first.
func alternate[T any](l []T, i int) []T {
	out := append([]T(nil), l...)
	if i%2 == 1 {
		for a, z := 0, len(out)-1; a < z; a, z = a+1, z-1 {
			out[a], out[z] = out[z], out[a]
		}
	}
	return out
}

// step measures one rate of one variant and adds it to the report. Its
// error ends the run (ctx cancelled, the agent gone); a failed
// measurement is recorded in the step instead.
func (b *bench) step(ctx context.Context, source string, v variant, target float64) (*stepResult, error) {
	s := &stepResult{Source: source, Variant: v.mode, Build: v.bd.name, Target: target}
	if err := b.measure(ctx, v.bd, s); err != nil {
		s.Err = err.Error()
	}
	b.rep.Steps = append(b.rep.Steps, *s)
	switch {
	case ctx.Err() != nil:
		return s, ctx.Err()
	case v.bd.agent.ExitErr() != nil:
		return s, fmt.Errorf("the agent exited: %v; log tail:\n%s", v.bd.agent.ExitErr(), tailLines(v.bd.agent.Logs(), 30))
	case s.Err != "":
		benchkit.Logf("%s %s %.0f: failed: %s", source, v.label(), target, benchkit.FirstLine(s.Err))
	default:
		benchkit.Logf("%s %-11s target %7.0f: offered %7.0f ev/s, stored %7.0f ev/s, lost %d in the kernel, follower %s, agent %.0f%% of a core, drain %.0f ms",
			source, v.label(), target, s.OfferedRate, s.StoredRate, s.KernelLost, s.followText(), 100*s.AgentCores, 1000*s.DrainSeconds)
	}
	return s, nil
}

// measure runs one step: the follower (follow variant), the generator's
// window with CPU samples around it, then the wait until the agent and
// the follower have everything there is to get.
func (b *bench) measure(ctx context.Context, bd *build, s *stepResult) error {
	// Profiles are of this tree's build (the baseline's may lack the hooks).
	profiling := b.o.profileDir != "" && bd.name == ""
	var f *follower
	if s.Variant == "follow" {
		var err error
		var profile string
		if profiling {
			profile = profileName(b.o.profileDir, "cli", s)
		}
		if f, err = startFollower(bd.cliBin, bd.node.StateDir, profile); err != nil {
			return err
		}
		defer f.stop()
		// The follower prints nothing until a flow comes: a few events
		// tell when it reads. It follows from the newest flow when its
		// request arrives, which may be after the first markers: emit
		// them again until it prints.
		if err := b.awaitFollower(ctx, bd, f); err != nil {
			return err
		}
	}
	st0, err := bd.node.AgentStatus(ctx)
	if err != nil {
		return err
	}
	var fc0 followCounts
	if f != nil {
		fc0 = f.counts()
	}
	gen, err := b.startGenerator(ctx, bd, s)
	if err != nil {
		return err
	}
	defer gen.kill()

	before, err := sample(bd, f)
	if err != nil {
		return err
	}
	var profiled func() error
	if profiling {
		profiled = profileAgent(ctx, bd.node.StateDir, profileName(b.o.profileDir, "agent", s), b.o.duration)
	}
	if err := gen.start(); err != nil {
		return err
	}
	out, err := gen.wait()
	if err != nil {
		return err
	}
	if profiled != nil {
		if err := profiled(); err != nil {
			return err
		}
	}
	after, err := sample(bd, f)
	if err != nil {
		return err
	}
	wall := after.at.Sub(before.at).Seconds()
	s.AgentCores = (after.agent - before.agent) / wall
	s.FollowerCores = (after.follower - before.follower) / wall
	if dt := after.machine.total - before.machine.total; dt > 0 {
		s.MachineBusy = (after.machine.busy - before.machine.busy) / dt
	}

	var expected uint64 // events the agent must account for; 0: unknown
	switch s.Source {
	case sourceTestRun:
		var r emitResult
		if err := json.Unmarshal(out, &r); err != nil {
			return fmt.Errorf("emit output %q: %w", out, err)
		}
		s.Seconds, s.Offered, s.GeneratorCores = r.Seconds, r.Events, r.CPUSeconds/r.Seconds
		s.BadVerdicts = r.BadVerdicts
		if r.BadVerdicts > 0 {
			return fmt.Errorf("%d test runs were not let through (%s): their events are not a trace and an end", r.BadVerdicts, r.FirstVerdict)
		}
		expected = r.Events
	case sourceConns:
		var r connectResult
		if err := json.Unmarshal(out, &r); err != nil {
			return fmt.Errorf("connect output %q: %w", out, err)
		}
		s.Seconds, s.Conns, s.ConnErrors, s.Late, s.GeneratorCores = r.Seconds, r.Conns, r.Errors, r.Late, r.CPUSeconds/r.Seconds
		s.ConnRate = r.Rate
		if r.Errors > 0 {
			s.FirstError = r.FirstError
		}
	}

	st1, drain, err := drain(ctx, bd, st0, expected)
	s.DrainSeconds = drain.Seconds()
	if err != nil {
		return err
	}
	s.Stored = st1.Flows.Seen - st0.Flows.Seen
	s.KernelLost = st1.EventsLost - st0.EventsLost
	if s.Source == sourceConns {
		s.Offered = s.Stored + s.KernelLost
		if s.Conns > 0 {
			s.EventsPerConn = float64(s.Offered) / float64(s.Conns)
		}
	} else if got := s.Stored + s.KernelLost; got != s.Offered {
		s.Unaccounted = int64(s.Offered) - int64(got)
	}
	s.OfferedRate = float64(s.Offered) / s.Seconds
	s.StoredRate = float64(s.Stored) / s.Seconds
	if s.AgentCores > 0 && s.StoredRate > 0 {
		s.AgentPer10k = (s.AgentCores - *bd.idle) / (s.StoredRate / 10_000)
	}

	if f != nil {
		fc := waitFollower(ctx, f, fc0, s.Stored)
		s.Followed = fc.flows - fc0.flows
		s.FollowerMissed = fc.missed - fc0.missed
		s.FollowedRate = float64(s.Followed) / s.Seconds
		if err := f.exited(); err != nil {
			return err
		}
	}
	return nil
}

// followerReady is how long the follower has to print the markers
// before they are emitted again, and how many times they are.
const (
	followerReady  = 2 * time.Second
	markerAttempts = 8
)

// awaitFollower emits markers until the follower has printed them.
func (b *bench) awaitFollower(ctx context.Context, bd *build, f *follower) error {
	var err error
	for range markerAttempts {
		if err = b.emitCount(ctx, bd, markerEvents); err != nil {
			return fmt.Errorf("marker events: %w", err)
		}
		if err = f.waitFor(ctx, markerEvents, followerReady); err == nil || f.exited() != nil || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// cpuSample is the CPU times of the processes of a step at one moment.
type cpuSample struct {
	at              time.Time
	agent, follower float64
	machine         machineCPU
}

func sample(bd *build, f *follower) (cpuSample, error) {
	var s cpuSample
	var err error
	if s.machine, err = readMachineCPU(); err != nil {
		return s, err
	}
	if s.agent, err = procCPU(bd.agentPid); err != nil {
		return s, err
	}
	if f != nil {
		if s.follower, err = procCPU(f.pid()); err != nil {
			return s, err
		}
	}
	s.at = time.Now()
	return s, nil
}

// drain polls the agent's status until the store and the kernel's lost
// counter account for expected events, or, when expected is 0, until they
// stop changing; it returns the last status and how long that took after
// the generator ended. Status reads are outside the CPU window.
func drain(ctx context.Context, bd *build, st0 *api.Status, expected uint64) (*api.Status, time.Duration, error) {
	start := time.Now()
	var last uint64
	lastChange := start
	for {
		st, err := bd.node.AgentStatus(ctx)
		if err != nil {
			return nil, time.Since(start), err
		}
		got := (st.Flows.Seen - st0.Flows.Seen) + (st.EventsLost - st0.EventsLost)
		switch {
		case expected > 0 && got >= expected:
			return st, time.Since(start), nil
		case got != last:
			last, lastChange = got, time.Now()
		case time.Since(lastChange) > drainStable:
			// Nothing more came: done (connections), or events went
			// missing (test-run: reported as unaccounted).
			return st, lastChange.Sub(start), nil
		}
		select {
		case <-ctx.Done():
			return nil, time.Since(start), ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitFollower waits until the follower has printed, or been told it
// missed, want flows since fc0, or its output stops changing.
func waitFollower(ctx context.Context, f *follower, fc0 followCounts, want uint64) followCounts {
	var last uint64
	lastChange := time.Now()
	for {
		fc := f.counts()
		got := (fc.flows - fc0.flows) + (fc.missed - fc0.missed)
		switch {
		case got >= want:
			return fc
		case got != last:
			last, lastChange = got, time.Now()
		case time.Since(lastChange) > followStable || f.exited() != nil:
			return fc
		}
		select {
		case <-ctx.Done():
			return fc
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startGenerator starts the step's generator, set up and waiting for go.
func (b *bench) startGenerator(ctx context.Context, bd *build, s *stepResult) (*child, error) {
	d := b.o.duration.String()
	switch s.Source {
	case sourceTestRun:
		return startChild(ctx, &bd.node.Host, b.self, emitArgs(bd, "-rate", fmt.Sprint(s.Target), "-duration", d)...)
	default:
		return startChild(ctx, &bd.client.Host, b.self, "connect", "-addr", netip.AddrPortFrom(bd.server.IP, serverPort).String(),
			"-rate", fmt.Sprint(s.Target), "-duration", d, "-workers", fmt.Sprint(b.o.workers))
	}
}

func emitArgs(bd *build, extra ...string) []string {
	return append([]string{"emit", "-ifindex", fmt.Sprint(bd.clientIfindex), "-src", bd.client.IP.String(),
		"-dst", bd.server.IP.String(), "-dport", fmt.Sprint(serverPort)}, extra...)
}

// emitCount emits n events as fast as it can and waits for the emitter.
func (b *bench) emitCount(ctx context.Context, bd *build, n int) error {
	g, err := startChild(ctx, &bd.node.Host, b.self, emitArgs(bd, "-count", fmt.Sprint(n))...)
	if err != nil {
		return err
	}
	defer g.kill()
	if err := g.start(); err != nil {
		return err
	}
	_, err = g.wait()
	return err
}

// child is a generator process of this binary in a simulated host: it
// sets up, says "ready", waits for a line on stdin, runs, and prints its
// result as its last line.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Reader
	stderr bytes.Buffer
	name   string // the subcommand, for errors
	done   bool
}

// childReadyTimeout bounds a generator's set-up.
const childReadyTimeout = 30 * time.Second

// startChild runs self with args in h's netns (and cgroup, for a pod)
// and waits until it is ready.
func startChild(ctx context.Context, h *harness.Host, self string, args ...string) (*child, error) {
	argv := append([]string{"--net=" + h.NetnsPath, "--", self}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second
	c := &child{cmd: cmd, name: args[0]}
	cmd.Stderr = &c.stderr
	var err error
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	c.out = bufio.NewReader(stdout)
	if h.CgroupPath != "" {
		// Straight into the pod's cgroup, as the harness starts a pod's
		// processes: the node's socket programs see them as the pod's.
		f, err := os.Open(h.CgroupPath)
		if err != nil {
			return nil, fmt.Errorf("open cgroup %s: %w", h.CgroupPath, err)
		}
		defer f.Close()
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(f.Fd())
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s %s: %w", self, args[0], err)
	}
	ready := make(chan error, 1)
	go func() {
		line, err := c.out.ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("said %q, not ready", strings.TrimSpace(line))
		}
		ready <- err
	}()
	select {
	case err = <-ready:
	case <-time.After(childReadyTimeout):
		err = fmt.Errorf("not ready within %s", childReadyTimeout)
	}
	if err != nil {
		c.kill()
		return nil, fmt.Errorf("%s %s: %w: %s", self, args[0], err, strings.TrimSpace(c.stderr.String()))
	}
	return c, nil
}

// start tells the child to go.
func (c *child) start() error {
	_, err := io.WriteString(c.stdin, "go\n")
	return err
}

// wait waits for the child to finish and returns its last output line.
func (c *child) wait() ([]byte, error) {
	rest, _ := io.ReadAll(c.out)
	err := c.cmd.Wait()
	c.done = true
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %s", c.name, err, strings.TrimSpace(c.stderr.String()))
	}
	lines := strings.Split(strings.TrimSpace(string(rest)), "\n")
	return []byte(lines[len(lines)-1]), nil
}

// kill ends the child if wait has not seen it end.
func (c *child) kill() {
	if c.done {
		return
	}
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
	c.done = true
}

func tailLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// buildName names a build in logs: "this" tree's, or the baseline's.
func buildName(name string) string {
	if name == "" {
		return "this"
	}
	return name
}
