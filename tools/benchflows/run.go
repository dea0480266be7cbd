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
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/tests/harness"
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

// bench is one run's simulated node and state.
type bench struct {
	o              options
	self, cliBin   string
	c              *harness.Cluster
	node           *harness.Node
	client, server *harness.Pod
	agent          *harness.Agent
	agentPid       int
	clientIfindex  int
	rep            *report
}

func run(ctx context.Context, o options) (*report, error) {
	rep := &report{Started: time.Now(), Options: reportOptions(o), Kernel: kernelRelease(), CPUs: runtime.NumCPU(), LoadAvg: loadAverage()}
	start := time.Now()
	defer func() {
		rep.Elapsed = time.Since(start).Round(time.Second).String()
		rep.LoadAvgEnd = loadAverage()
	}()
	self, err := os.Executable()
	if err != nil {
		return rep, err
	}
	// Memory first, in a process of its own, before anything else runs.
	benchkit.Logf("=== flow buffer memory: stores of %s flows", o.memFlows)
	if rep.Memory, err = flowMemChild(ctx, self, o.memFlows); err != nil {
		return rep, fmt.Errorf("flow buffer memory: %w", err)
	}
	if o.skipTest && o.skipConns {
		return rep, nil
	}

	b := &bench{o: o, self: self, rep: rep}
	agentBin, err := harness.Build(ctx, agentPkg)
	if err != nil {
		return rep, err
	}
	if b.cliBin, err = harness.Build(ctx, cliPkg); err != nil {
		return rep, err
	}
	benchkit.RemoveStale()
	if b.c, err = benchkit.NewCluster(ctx, "benchflows", o.verbose); err != nil {
		return rep, err
	}
	defer func() {
		if b.agent != nil {
			if err := b.agent.Stop(); err != nil {
				benchkit.Logf("stop agent: %v", err)
			}
		}
		if err := b.c.Cleanup(); err != nil {
			benchkit.Logf("cleanup: %v", err)
		}
	}()
	if err := b.setup(ctx, agentBin); err != nil {
		return rep, fmt.Errorf("setup: %w", err)
	}
	if err := b.measureIdle(ctx); err != nil {
		return rep, err
	}
	if !o.skipConns {
		benchkit.Logf("=== real connections client → server: %v conn/s × %s, variants %v", o.connRates, o.duration, o.variants)
		if err := b.sweep(ctx, sourceConns, o.connRates); err != nil {
			return rep, err
		}
	}
	if !o.skipTest {
		benchkit.Logf("=== test-run generator: %v events/s × %s, variants %v", o.rates, o.duration, o.variants)
		if err := b.sweep(ctx, sourceTestRun, o.rates); err != nil {
			return rep, err
		}
	}
	if o.profileDir != "" {
		file := filepath.Join(o.profileDir, "agent-heap.pprof")
		if err := fetchAgentProfile(ctx, b.node.StateDir, "/debug/pprof/heap?gc=1", file); err != nil {
			return rep, err
		}
		benchkit.Logf("profiles in %s", o.profileDir)
	}
	return rep, nil
}

// flowMemChild runs the flowmem subcommand and returns its results.
func flowMemChild(ctx context.Context, self, sizes string) ([]flowMemResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, self, "flowmem", "-flows", sizes).Output()
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

// setup builds the node and its pods, starts the agent and waits until
// every pod is an attached endpoint, and starts the echo server.
func (b *bench) setup(ctx context.Context, agentBin string) error {
	var err error
	if b.node, err = b.c.AddNode(ctx, "node1", harness.Routed); err != nil {
		return err
	}
	if b.client, err = b.node.AddPod(ctx, "shop", "client", podLabels("client")); err != nil {
		return err
	}
	if b.server, err = b.node.AddPod(ctx, "shop", "server", podLabels("server"), harness.Port{Name: "http", Port: serverPort}); err != nil {
		return err
	}
	for i := range b.o.pods {
		if _, err := b.node.AddPod(ctx, "shop", fmt.Sprintf("idle-%d", i), podLabels(fmt.Sprintf("idle-%d", i%5))); err != nil {
			return err
		}
	}
	if err := b.c.SyncManifests(); err != nil {
		return err
	}
	benchkit.Logf("harness run %s: node %s (netns %s, bpffs %s, state %s), %d pods", b.c.ID, b.node.Name, b.node.NetnsName, b.node.BPFRoot, b.node.StateDir, len(b.node.Pods()))
	if b.agent, err = b.node.StartAgent(agentBin, b.o.agentFlags...); err != nil {
		return err
	}
	if b.agentPid, err = agentProcess(b.agent); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := b.agent.WaitReady(rctx); err != nil {
		return err
	}
	if err := b.waitEndpoints(rctx); err != nil {
		return err
	}
	st, err := b.node.AgentStatus(ctx)
	if err != nil {
		return err
	}
	b.rep.Agent = agentInfo{
		Pid: b.agentPid, Flags: b.o.agentFlags, Endpoints: st.Endpoints, AttachMode: st.AttachMode,
		FlowBuffer: st.Flows.Capacity, EventsBuffer: eventsBufferOf(b.agent.Logs()), EventBytes: eventRecordBytes(),
	}
	if st.AttachMode != "tcx" {
		return fmt.Errorf("the agent attached with %q: the test-run generator finds sl_from_ep through tcx", st.AttachMode)
	}
	addr := netip.AddrPortFrom(b.server.IP, serverPort)
	if err := benchkit.StartEcho(ctx, b.server, b.client, b.self, addr); err != nil {
		return fmt.Errorf("echo server on %s: %w", addr, err)
	}
	benchkit.Logf("agent pid %d ready: %d endpoints, flow buffer %d, events ring %d bytes; client veth ifindex %d",
		b.agentPid, st.Endpoints, st.Flows.Capacity, b.rep.Agent.EventsBuffer, b.clientIfindex)
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

// waitEndpoints waits until every pod is a ready endpoint and notes the
// client's host-side interface.
func (b *bench) waitEndpoints(ctx context.Context) error {
	for {
		var eps []api.Endpoint
		err := b.node.AgentGet(ctx, api.PathEndpoints, &eps)
		if err == nil {
			ready := 0
			for _, ep := range eps {
				if ep.State != "ready" {
					continue
				}
				ready++
				if ep.Namespace == b.client.Namespace && ep.Pod == b.client.Name {
					b.clientIfindex = ep.IfIndex
				}
			}
			if ready == len(b.node.Pods()) && b.clientIfindex > 0 {
				return nil
			}
			err = fmt.Errorf("%d of %d endpoints ready", ready, len(b.node.Pods()))
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

// measureIdle measures the agent's CPU with nothing happening: the cost
// the steps' CPU is net of.
func (b *bench) measureIdle(ctx context.Context) error {
	select {
	case <-time.After(time.Second): // let start-up work finish
	case <-ctx.Done():
		return ctx.Err()
	}
	c0, err := procCPU(b.agentPid)
	if err != nil {
		return err
	}
	t0 := time.Now()
	select {
	case <-time.After(b.o.idle):
	case <-ctx.Done():
		return ctx.Err()
	}
	c1, err := procCPU(b.agentPid)
	if err != nil {
		return err
	}
	b.rep.IdleAgentCores = (c1 - c0) / time.Since(t0).Seconds()
	benchkit.Logf("idle agent: %.1f%% of a core", 100*b.rep.IdleAgentCores)
	return nil
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
		for _, v := range alternate(b.o.variants, i) {
			if stopped[v] {
				continue
			}
			s, err := b.step(ctx, source, v, float64(t))
			if err != nil {
				return err
			}
			if s.lossy() || s.short() || s.Err != "" {
				bad[v]++
			} else {
				bad[v] = 0
			}
			if bad[v] >= 2 {
				stopped[v] = true
				benchkit.Logf("%s %s: two steps in a row lost events or could not be offered: not going higher", source, v)
			}
		}
	}
	if source != sourceTestRun {
		return nil
	}
	for _, v := range b.o.variants {
		for range b.o.refine {
			lo, hi := b.rep.bounds(source, v)
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
func alternate(l []string, i int) []string {
	out := append([]string(nil), l...)
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
func (b *bench) step(ctx context.Context, source, variant string, target float64) (*stepResult, error) {
	s := &stepResult{Source: source, Variant: variant, Target: target}
	if err := b.measure(ctx, s); err != nil {
		s.Err = err.Error()
	}
	b.rep.Steps = append(b.rep.Steps, *s)
	switch {
	case ctx.Err() != nil:
		return s, ctx.Err()
	case b.agent.ExitErr() != nil:
		return s, fmt.Errorf("the agent exited: %v; log tail:\n%s", b.agent.ExitErr(), tailLines(b.agent.Logs(), 30))
	case s.Err != "":
		benchkit.Logf("%s %s %.0f: failed: %s", source, variant, target, benchkit.FirstLine(s.Err))
	default:
		benchkit.Logf("%s %-6s target %7.0f: offered %7.0f ev/s, stored %7.0f ev/s, lost %d in the kernel, follower %s, agent %.0f%% of a core, drain %.0f ms",
			source, variant, target, s.OfferedRate, s.StoredRate, s.KernelLost, s.followText(), 100*s.AgentCores, 1000*s.DrainSeconds)
	}
	return s, nil
}

// measure runs one step: the follower (follow variant), the generator's
// window with CPU samples around it, then the wait until the agent and
// the follower have everything there is to get.
func (b *bench) measure(ctx context.Context, s *stepResult) error {
	var f *follower
	if s.Variant == "follow" {
		var err error
		var profile string
		if b.o.profileDir != "" {
			profile = profileName(b.o.profileDir, "cli", s)
		}
		if f, err = startFollower(b.cliBin, b.node.StateDir, profile); err != nil {
			return err
		}
		defer f.stop()
		// The follower prints nothing until a flow comes: a few events
		// tell when it reads.
		if err := b.emitCount(ctx, markerEvents); err != nil {
			return fmt.Errorf("marker events: %w", err)
		}
		if err := f.waitFor(ctx, markerEvents, 15*time.Second); err != nil {
			return err
		}
	}
	st0, err := b.node.AgentStatus(ctx)
	if err != nil {
		return err
	}
	var fc0 followCounts
	if f != nil {
		fc0 = f.counts()
	}
	gen, err := b.startGenerator(ctx, s)
	if err != nil {
		return err
	}
	defer gen.kill()

	before, err := b.sample(f)
	if err != nil {
		return err
	}
	var profiled func() error
	if b.o.profileDir != "" {
		profiled = profileAgent(ctx, b.node.StateDir, profileName(b.o.profileDir, "agent", s), b.o.duration)
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
	after, err := b.sample(f)
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

	st1, drain, err := b.drain(ctx, st0, expected)
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
		s.AgentPer10k = (s.AgentCores - b.rep.IdleAgentCores) / (s.StoredRate / 10_000)
	}

	if f != nil {
		fc := b.waitFollower(ctx, f, fc0, s.Stored)
		s.Followed = fc.flows - fc0.flows
		s.FollowerMissed = fc.missed - fc0.missed
		s.FollowedRate = float64(s.Followed) / s.Seconds
		if err := f.exited(); err != nil {
			return err
		}
	}
	return nil
}

// cpuSample is the CPU times of the processes of a step at one moment.
type cpuSample struct {
	at              time.Time
	agent, follower float64
	machine         machineCPU
}

func (b *bench) sample(f *follower) (cpuSample, error) {
	var s cpuSample
	var err error
	if s.machine, err = readMachineCPU(); err != nil {
		return s, err
	}
	if s.agent, err = procCPU(b.agentPid); err != nil {
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
func (b *bench) drain(ctx context.Context, st0 *api.Status, expected uint64) (*api.Status, time.Duration, error) {
	start := time.Now()
	var last uint64
	lastChange := start
	for {
		st, err := b.node.AgentStatus(ctx)
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
func (b *bench) waitFollower(ctx context.Context, f *follower, fc0 followCounts, want uint64) followCounts {
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
func (b *bench) startGenerator(ctx context.Context, s *stepResult) (*child, error) {
	d := b.o.duration.String()
	switch s.Source {
	case sourceTestRun:
		return startChild(ctx, &b.node.Host, b.self, b.emitArgs("-rate", fmt.Sprint(s.Target), "-duration", d)...)
	default:
		return startChild(ctx, &b.client.Host, b.self, "connect", "-addr", netip.AddrPortFrom(b.server.IP, serverPort).String(),
			"-rate", fmt.Sprint(s.Target), "-duration", d, "-workers", fmt.Sprint(b.o.workers))
	}
}

func (b *bench) emitArgs(extra ...string) []string {
	return append([]string{"emit", "-ifindex", fmt.Sprint(b.clientIfindex), "-src", b.client.IP.String(),
		"-dst", b.server.IP.String(), "-dport", fmt.Sprint(serverPort)}, extra...)
}

// emitCount emits n events as fast as it can and waits for the emitter.
func (b *bench) emitCount(ctx context.Context, n int) error {
	g, err := startChild(ctx, &b.node.Host, b.self, b.emitArgs("-count", fmt.Sprint(n))...)
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
