package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

type report struct {
	benchkit.Header
	Agent agentInfo `json:"agent"`
	// IdleAgentCores is the agent's CPU with no events, in cores.
	IdleAgentCores float64         `json:"idleAgentCores"`
	Steps          []stepResult    `json:"steps"`
	Memory         []flowMemResult `json:"flowBufferMemory"`
	// The -baseline build's, when measured.
	BaseAgent          *agentInfo      `json:"baseAgent,omitempty"`
	BaseIdleAgentCores *float64        `json:"baseIdleAgentCores,omitempty"`
	BaseMemory         []flowMemResult `json:"baseFlowBufferMemory,omitempty"`
}

type agentInfo struct {
	Binary     string   `json:"binary,omitempty"`
	Pid        int      `json:"pid"`
	Flags      []string `json:"extraFlags,omitempty"`
	AttachMode string   `json:"attachMode"`
	Endpoints  int      `json:"endpoints"`
	// FlowBuffer is the flow store's capacity; EventsBuffer the ring's
	// size in bytes and EventBytes one event's share of it.
	FlowBuffer   int `json:"flowBuffer"`
	EventsBuffer int `json:"eventsBufferBytes"`
	EventBytes   int `json:"eventRecordBytes"`
}

func reportOptions(o options) map[string]string {
	ints := func(l []int) string {
		s := make([]string, len(l))
		for i, v := range l {
			s[i] = fmt.Sprint(v)
		}
		return strings.Join(s, ",")
	}
	return map[string]string{
		"rates": ints(o.rates), "connRates": ints(o.connRates), "variants": strings.Join(o.variants, ","),
		"duration": o.duration.String(), "idle": o.idle.String(), "refine": fmt.Sprint(o.refine),
		"pods": fmt.Sprint(o.pods), "workers": fmt.Sprint(o.workers), "agentFlags": strings.Join(o.agentFlags, " "),
		"memFlows": o.memFlows, "baseline": o.baseline,
	}
}

// eventRecordBytes is one event's share of the ring: the record and the
// ring buffer's 8-byte header, rounded up to 8 bytes.
func eventRecordBytes() int {
	n := binary.Size(bpfobj.EndpointSlEvent{}) + 8
	return (n + 7) &^ 7
}

// stepResult is one rate of one variant.
type stepResult struct {
	Source  string `json:"source"`
	Variant string `json:"variant"`
	// Build is "" for this tree's agent, "base" for -baseline's.
	Build string `json:"build,omitempty"`
	// Target is the generator's rate: events/s (test-run) or
	// connections/s.
	Target  float64 `json:"target"`
	Seconds float64 `json:"seconds"`
	// Offered is the events the datapath emitted: the generator's count
	// (test-run), or what the agent stored plus what the kernel lost
	// (connections).
	Offered     uint64  `json:"offered"`
	OfferedRate float64 `json:"offeredPerSec"`
	// Stored is the flows the agent's store received; KernelLost the
	// events the ring had no room for (events-lost counter).
	Stored     uint64  `json:"stored"`
	StoredRate float64 `json:"storedPerSec"`
	KernelLost uint64  `json:"kernelLost"`
	// Unaccounted is Offered less Stored and KernelLost (test-run): 0
	// unless events went missing unaccounted for.
	Unaccounted int64 `json:"unaccounted,omitempty"`
	// Followed is the flows the follower printed, FollowerMissed those
	// the observer said it skipped (follow variant).
	Followed       uint64  `json:"followed,omitempty"`
	FollowedRate   float64 `json:"followedPerSec,omitempty"`
	FollowerMissed uint64  `json:"followerMissed,omitempty"`
	// DrainSeconds is how long after the generator ended the agent had
	// read the last event (status polled every 20 ms).
	DrainSeconds float64 `json:"drainSeconds"`
	// CPU over the generator's window, in cores; AgentPer10k is the
	// agent's less its idle CPU, per 10k events/s stored.
	AgentCores     float64 `json:"agentCores"`
	AgentPer10k    float64 `json:"agentCoresPer10kEventsPerSec"`
	FollowerCores  float64 `json:"followerCores,omitempty"`
	GeneratorCores float64 `json:"generatorCores"`
	MachineBusy    float64 `json:"machineBusy"`
	// Connections (connections source).
	Conns         uint64  `json:"conns,omitempty"`
	ConnRate      float64 `json:"connPerSec,omitempty"`
	ConnErrors    uint64  `json:"connErrors,omitempty"`
	FirstError    string  `json:"firstConnError,omitempty"`
	Late          uint64  `json:"lateConns,omitempty"`
	EventsPerConn float64 `json:"eventsPerConn,omitempty"`
	BadVerdicts   uint64  `json:"badVerdicts,omitempty"`
	Err           string  `json:"error,omitempty"`
}

// label names the step's variant and build: "store", "base follow".
func (s *stepResult) label() string {
	if s.Build == "" {
		return s.Variant
	}
	return s.Build + " " + s.Variant
}

// delivered is what reached the end of the step's path: the store, or
// the follower's output.
func (s *stepResult) delivered() uint64 {
	if s.Variant == "follow" {
		return s.Followed
	}
	return s.Stored
}

// lossy reports whether any event offered did not reach the end of the
// path.
func (s *stepResult) lossy() bool {
	return s.Err == "" && (s.delivered() < s.Offered || s.KernelLost > 0 || s.FollowerMissed > 0)
}

// clean is a step without error or loss.
func (s *stepResult) clean() bool { return s.Err == "" && !s.lossy() && s.Offered > 0 }

// short reports whether the generator offered well below its target.
func (s *stepResult) short() bool {
	if s.Err != "" || s.Seconds == 0 {
		return false
	}
	reached := s.OfferedRate
	if s.Source == sourceConns {
		reached = s.ConnRate
	}
	return reached < shortOfTarget*s.Target
}

// lossShare is the share of offered events that did not reach the end of
// the path.
func (s *stepResult) lossShare() float64 {
	if s.Offered == 0 {
		return 0
	}
	return float64(s.Offered-min(s.delivered(), s.Offered)) / float64(s.Offered)
}

func (s *stepResult) followText() string {
	if s.Variant != "follow" {
		return "-"
	}
	return fmt.Sprintf("%.0f ev/s (%d missed)", s.FollowedRate, s.FollowerMissed)
}

// bounds returns the highest target without loss below the lowest target
// with loss, for a variant's bisection; 0 when either is missing.
func (r *report) bounds(source, label string) (lo, hi float64) {
	for _, s := range r.Steps {
		if s.Source == source && s.label() == label && s.lossy() && (hi == 0 || s.Target < hi) {
			hi = s.Target
		}
	}
	if hi == 0 {
		return 0, 0
	}
	for _, s := range r.Steps {
		if s.Source == source && s.label() == label && s.clean() && s.Target < hi && s.Target > lo {
			lo = s.Target
		}
	}
	return lo, hi
}

// stepsOf returns a source's steps of the given variant labels, by label
// (in that order), then target.
func (r *report) stepsOf(source string, labels []string) []stepResult {
	var out []stepResult
	for _, s := range r.Steps {
		if s.Source == source && slices.Contains(labels, s.label()) {
			out = append(out, s)
		}
	}
	slices.SortStableFunc(out, func(a, b stepResult) int {
		if a.label() != b.label() {
			return slices.Index(labels, a.label()) - slices.Index(labels, b.label())
		}
		switch {
		case a.Target < b.Target:
			return -1
		case a.Target > b.Target:
			return 1
		}
		return 0
	})
	return out
}

// variantsOf returns the report's variant labels: each variant, then
// each of the baseline's.
func variantsOf(rep *report) []string {
	modes := allVariants
	if v := rep.Options["variants"]; v != "" {
		modes = strings.Split(v, ",")
	}
	var out []string
	for _, m := range modes {
		out = append(out, m)
		if rep.Options["baseline"] != "" {
			out = append(out, baseName+" "+m)
		}
	}
	return out
}

// runReport prints a report saved with -json again.
func runReport(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: benchflows report FILE.json")
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", args[0], err)
	}
	printReport(os.Stdout, &rep)
	return nil
}

func printReport(w io.Writer, rep *report) {
	rep.Print(w, "benchflows")
	variants := variantsOf(rep)
	if a := rep.Agent; a.Pid != 0 {
		ringEvents := 0
		if a.EventBytes > 0 {
			ringEvents = a.EventsBuffer / a.EventBytes
		}
		fmt.Fprintf(w, "\nsluice-agent (%s) on one routed simulated node, %d endpoints (client, server, %s idle pods); flow buffer %d flows;\n",
			a.AttachMode, a.Endpoints, rep.Options["pods"], a.FlowBuffer)
		fmt.Fprintf(w, "events ring %d KiB = %d events of %d B: the datapath wakes the reader once it is a quarter full, else the\n",
			a.EventsBuffer/1024, ringEvents, a.EventBytes)
		fmt.Fprintf(w, "reader polls every 50 ms. Extra agent flags: %s. Idle agent: %.1f%% of a core.\n", dash(strings.Join(a.Flags, " ")), 100*rep.IdleAgentCores)
		if b := rep.BaseAgent; b != nil && rep.BaseIdleAgentCores != nil {
			fmt.Fprintf(w, "Baseline (variants \"%s ...\"): %s on a node of its own with the same pods (%d endpoints), flow buffer %d,\n",
				baseName, b.Binary, b.Endpoints, b.FlowBuffer)
			fmt.Fprintf(w, "events ring %d KiB, flags %s, idle %.1f%% of a core; measured step by step beside this tree's agent (%s).\n",
				b.EventsBuffer/1024, dash(strings.Join(b.Flags, " ")), 100**rep.BaseIdleAgentCores, a.Binary)
		}
		fmt.Fprintln(w, "Variants: store = no client (kernel → flow store); follow = one `sluice observe --follow -o json` reading the")
		fmt.Fprintln(w, "observer socket (kernel → store → CLI). Offered: events the datapath emitted in the window; stored: flows the")
		fmt.Fprintln(w, "store received (status API, seen); kernel lost: the events-lost counter; followed: flows the CLI printed;")
		fmt.Fprintln(w, "missed: flows the observer told it it skipped; loss: offered events not delivered (to the store, or to the CLI).")
		fmt.Fprintln(w, "drain: from the generator's end until the status API showed every event stored or lost (status calls included).")
		fmt.Fprintln(w, "CPU is % of one core over the window from /proc/<pid>/stat (10 ms ticks); net/10k: the agent's CPU less its idle")
		fmt.Fprintln(w, "CPU per 10k events/s stored; machine: all CPUs' busy share, other users' processes included (near 100: the")
		fmt.Fprintln(w, "agent, the CLI and the generator waited for CPU, and what was measured is this machine, not the agent alone).")
	}

	if steps := rep.stepsOf(sourceConns, variants); len(steps) > 0 {
		fmt.Fprintf(w, "\n1a. Real connections client pod → server pod (connect, 1-byte echo, close with RST) on a fixed schedule,\n")
		fmt.Fprintf(w, "    %s each; a connection is a trace and an end event on each pod's endpoint (events/conn: measured).\n", rep.Options["duration"])
		tw := benchkit.NewTable(w)
		fmt.Fprintln(tw, "   variant\ttarget conn/s\tconn/s\tev/conn\toffered ev/s\tstored ev/s\tkernel lost\tfollowed ev/s\tmissed\tloss\tdrain ms\tagent %\tnet/10k\tCLI %\tgen %\tmachine %\t")
		for _, s := range steps {
			if s.Err != "" {
				fmt.Fprintf(tw, "   %s\t%.0f\tfailed: %s\t\t\t\t\t\t\t\t\t\t\t\t\t\t\n", s.label(), s.Target, benchkit.FirstLine(s.Err))
				continue
			}
			fmt.Fprintf(tw, "   %s\t%.0f\t%.0f%s\t%.2f\t%.0f\t%.0f\t%d\t%s\t%s\t%s\t%.0f\t%.1f\t%s\t%s\t%.1f\t%.0f\t\n", s.label(), s.Target,
				s.ConnRate, shortMark(&s), s.EventsPerConn, s.OfferedRate, s.StoredRate, s.KernelLost,
				followedCol(&s), missedCol(&s), lossCol(&s), 1000*s.DrainSeconds, 100*s.AgentCores, per10kCol(&s), cliCol(&s), 100*s.GeneratorCores, 100*s.MachineBusy)
		}
		tw.Flush()
		for _, s := range steps {
			if s.ConnErrors > 0 {
				fmt.Fprintf(w, "   %s %.0f conn/s: %d connections failed (%s)\n", s.label(), s.Target, s.ConnErrors, s.FirstError)
			}
		}
	}
	if steps := rep.stepsOf(sourceTestRun, variants); len(steps) > 0 {
		fmt.Fprintln(w, "\n1b. Test-run generator: BPF_PROG_TEST_RUN of the sl_from_ep the agent attached to the client pod's veth, from a")
		fmt.Fprintln(w, "    process in the node's netns (skb->dev = that veth): SYN (trace event) then RST (end event) per source port,")
		fmt.Fprintf(w, "    16384 ports reused, on a fixed schedule, %s each. Its CPU (gen) is the kernel's work too: the program and\n", rep.Options["duration"])
		fmt.Fprintln(w, "    the ring writes run in the generator's syscalls, as they run in a sender's softirq on a real node.")
		tw := benchkit.NewTable(w)
		fmt.Fprintln(tw, "   variant\ttarget ev/s\toffered ev/s\tstored ev/s\tkernel lost\tfollowed ev/s\tmissed\tloss\tdrain ms\tagent %\tnet/10k\tCLI %\tgen %\tmachine %\t")
		for _, s := range steps {
			if s.Err != "" {
				fmt.Fprintf(tw, "   %s\t%.0f\tfailed: %s\t\t\t\t\t\t\t\t\t\t\t\t\n", s.label(), s.Target, benchkit.FirstLine(s.Err))
				continue
			}
			fmt.Fprintf(tw, "   %s\t%.0f\t%.0f%s\t%.0f\t%d\t%s\t%s\t%s\t%.0f\t%.1f\t%s\t%s\t%.1f\t%.0f\t\n", s.label(), s.Target,
				s.OfferedRate, shortMark(&s), s.StoredRate, s.KernelLost, followedCol(&s), missedCol(&s), lossCol(&s),
				1000*s.DrainSeconds, 100*s.AgentCores, per10kCol(&s), cliCol(&s), 100*s.GeneratorCores, 100*s.MachineBusy)
		}
		tw.Flush()
		for _, s := range steps {
			if s.Unaccounted != 0 {
				fmt.Fprintf(w, "   %s %.0f ev/s: %d events neither stored nor counted lost\n", s.label(), s.Target, s.Unaccounted)
			}
		}
	}
	if len(rep.Steps) > 0 {
		fmt.Fprintln(w, "   * the generator offered less than 97% of its target (the machine's CPUs were busy): the row counts at")
		fmt.Fprintln(w, "     the rate it reached.")
		printZeroLoss(w, rep, variants)
		printCPU(w, rep, variants)
	}
	printMemory(w, rep)
	printComparison(w, rep)
}

func printZeroLoss(w io.Writer, rep *report, variants []string) {
	fmt.Fprintln(w, "\n2. Highest offered rate with zero loss (nothing lost in the kernel; follow: the CLI printed every flow), and above it:")
	for _, src := range []string{sourceConns, sourceTestRun} {
		for _, v := range variants {
			steps := rep.stepsOf(src, []string{v})
			if len(steps) == 0 {
				continue
			}
			best := bestClean(steps)
			fmt.Fprintf(w, "   %-11s %-11s ", src, v)
			if best == nil {
				fmt.Fprintln(w, "none: every step lost events or failed")
			} else {
				fmt.Fprintf(w, "%.0f events/s without loss (target %.0f)", best.OfferedRate, best.Target)
				if best.Source == sourceConns {
					fmt.Fprintf(w, " = %.0f conn/s", best.ConnRate)
				}
				fmt.Fprintln(w)
			}
			var above []string
			for _, s := range steps {
				if s.lossy() && (best == nil || s.OfferedRate > best.OfferedRate) {
					txt := fmt.Sprintf("%.0f ev/s: %.1f%% lost (kernel %d", s.OfferedRate, 100*s.lossShare(), s.KernelLost)
					if s.Variant == "follow" {
						txt += fmt.Sprintf(", CLI missed %d, CLI printed %.0f ev/s at %.0f%% of a core", s.FollowerMissed, s.FollowedRate, 100*s.FollowerCores)
					}
					txt += fmt.Sprintf("; agent %.0f%% of a core, machine %.0f%% busy", 100*s.AgentCores, 100*s.MachineBusy)
					above = append(above, txt+")")
				}
			}
			switch {
			case len(above) > 0:
				for _, a := range above {
					fmt.Fprintf(w, "%30s at %s\n", "", a)
				}
			case best != nil:
				fmt.Fprintf(w, "%30s no step lost events: the highest rate tried was clean\n", "")
			}
			for _, s := range steps {
				if s.lossy() && best != nil && s.OfferedRate < best.OfferedRate {
					fmt.Fprintf(w, "%30s (but %.0f ev/s, below it, lost %.2f%%: noise from the machine's other load)\n", "", s.OfferedRate, 100*s.lossShare())
				}
			}
		}
	}
}

// bestClean is the step with the highest offered rate and no loss.
func bestClean(steps []stepResult) *stepResult {
	var best *stepResult
	for i := range steps {
		if s := &steps[i]; s.clean() && (best == nil || s.OfferedRate > best.OfferedRate) {
			best = s
		}
	}
	return best
}

// cpuPer10k are the agent's and the CLI's CPU per 10k events/s (% of a
// core) of a variant's zero-loss steps.
func cpuPer10k(rep *report, src, label string) (agent, cli []float64) {
	for _, s := range rep.stepsOf(src, []string{label}) {
		if !s.clean() || s.StoredRate < minPer10kRate {
			continue
		}
		agent = append(agent, 100*s.AgentPer10k)
		if s.Variant == "follow" && s.FollowedRate > 0 {
			cli = append(cli, 100*s.FollowerCores/(s.FollowedRate/10_000))
		}
	}
	return agent, cli
}

// minPer10kRate is the least stored rate whose CPU enters the per-10k
// figure: below it the agent's few ticks over the window are mostly
// noise.
const minPer10kRate = 1000

func printCPU(w io.Writer, rep *report, variants []string) {
	fmt.Fprintf(w, "\n3. Agent CPU per 10k events/s: its CPU over each window less its idle %.1f%%, per 10k events/s stored; median [IQR]\n", 100*rep.IdleAgentCores)
	fmt.Fprintf(w, "   over the zero-loss steps storing at least %d events/s (%% of one core). CLI: the follower's own CPU per 10k flows/s.\n", minPer10kRate)
	tw := benchkit.NewTable(w)
	fmt.Fprintln(tw, "   source\tvariant\tagent %/10k ev/s\t[IQR]\t= ev/s per core\tCLI %/10k flows/s\t[IQR]\tsteps\t")
	for _, src := range []string{sourceConns, sourceTestRun} {
		for _, v := range variants {
			agent, cli := cpuPer10k(rep, src, v)
			if len(agent) == 0 {
				continue
			}
			a := benchkit.StatOf(agent)
			c, cIQR := "-", ""
			if len(cli) > 0 {
				cs := benchkit.StatOf(cli)
				c, cIQR = fmt.Sprintf("%.1f", cs.Median), fmt.Sprintf("[%.1f–%.1f]", cs.Q1, cs.Q3)
			}
			perCore := "-"
			if a.Median > 0 {
				perCore = fmt.Sprintf("%.0f", 100*10_000/a.Median)
			}
			fmt.Fprintf(tw, "   %s\t%s\t%.1f\t[%.1f–%.1f]\t%s\t%s\t%s\t%d\t\n", src, v, a.Median, a.Q1, a.Q3, perCore, c, cIQR, len(agent))
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "   The store variant is the agent's cost of reading, converting and storing; follow adds serving one gRPC")
	fmt.Fprintln(w, "   follow stream. \"ev/s per core\" is 10k over the median, the rate one core carries at that cost: for store,")
	fmt.Fprintln(w, "   roughly the ceiling of the path (one goroutine reads, converts and stores) on a machine with a core to spare")
	fmt.Fprintln(w, "   for it. The datapath's own cost per event is in the senders' CPU (gen %), not the agent's.")
}

func printMemory(w io.Writer, rep *report) {
	if len(rep.Memory) == 0 {
		return
	}
	fmt.Fprintln(w, "\n4. Flow buffer memory: Go heap (HeapAlloc after GC) of a flow.Store of N entries filled with N datapath records")
	fmt.Fprintln(w, "   (trace/end events between pods of a synthetic cluster: 48 Deployments, 192 pods, 4 labels each plus namespace")
	fmt.Fprintln(w, "   labels), resolved as the agent resolves them: the ring, and the ends (names, labels, workloads) its records")
	fmt.Fprintln(w, "   share. Protobuf bytes: the flows built from them, as a client reads them. The baseline measures its own store.")
	tw := benchkit.NewTable(w)
	fmt.Fprintln(tw, "   build\tflows\theap MiB\tper 1,000 flows KiB\tbytes/flow\tof which ring slot\tprotobuf wire bytes/flow\tlabels/flow\t")
	for _, l := range []struct {
		name string
		mem  []flowMemResult
	}{{"this", rep.Memory}, {baseName, rep.BaseMemory}} {
		for _, m := range l.mem {
			per := float64(m.HeapBytes) / float64(m.Flows)
			fmt.Fprintf(tw, "   %s\t%d\t%.1f\t%.0f\t%.0f\t%d\t%.0f\t%.1f\t\n", l.name, m.Flows, float64(m.HeapBytes)/(1<<20), per*1000/1024, per,
				m.RingBytes/int64(m.Flows), float64(m.ProtoBytes)/float64(m.Flows), m.Labels)
		}
	}
	tw.Flush()
	if fb := rep.Agent.FlowBuffer; fb > 0 && len(rep.Memory) > 0 {
		m := rep.Memory[len(rep.Memory)-1]
		fmt.Fprintf(w, "   The agent's flow buffer of %d flows: about %.1f MiB of live heap.", fb, float64(fb)*float64(m.HeapBytes)/float64(m.Flows)/(1<<20))
	}
	fmt.Fprintln(w, " With GOGC=100 the Go heap grows to about twice")
	fmt.Fprintln(w, "   the live heap between collections, so RSS runs up to about twice these figures.")
}

// printComparison puts the baseline's figures beside this tree's, as
// ratios of figures measured in this one run.
func printComparison(w io.Writer, rep *report) {
	if rep.Options["baseline"] == "" {
		return
	}
	modes := allVariants
	if v := rep.Options["variants"]; v != "" {
		modes = strings.Split(v, ",")
	}
	fmt.Fprintf(w, "\n5. Before (%s: %s) and after (this tree), measured in this run:\n", baseName, rep.Options["baseline"])
	tw := benchkit.NewTable(w)
	fmt.Fprintln(tw, "   figure\tsource\tvariant\tbefore\tafter\tratio\t")
	for _, src := range []string{sourceConns, sourceTestRun} {
		for _, m := range modes {
			after, before := bestClean(rep.stepsOf(src, []string{m})), bestClean(rep.stepsOf(src, []string{baseName + " " + m}))
			if after != nil && before != nil {
				fmt.Fprintf(tw, "   zero-loss events/s\t%s\t%s\t%.0f\t%.0f\t×%.2f higher\t\n", src, m, before.OfferedRate, after.OfferedRate, after.OfferedRate/before.OfferedRate)
			}
			aa, ac := cpuPer10k(rep, src, m)
			ba, bc := cpuPer10k(rep, src, baseName+" "+m)
			if len(aa) > 0 && len(ba) > 0 {
				a, b := benchkit.StatOf(aa).Median, benchkit.StatOf(ba).Median
				fmt.Fprintf(tw, "   agent %% of a core per 10k ev/s\t%s\t%s\t%.1f\t%.1f\t×%.1f lower\t\n", src, m, b, a, b/a)
			}
			if len(ac) > 0 && len(bc) > 0 {
				a, b := benchkit.StatOf(ac).Median, benchkit.StatOf(bc).Median
				fmt.Fprintf(tw, "   CLI %% of a core per 10k flows/s\t%s\t%s\t%.1f\t%.1f\t×%.1f lower\t\n", src, m, b, a, b/a)
			}
		}
	}
	for i, m := range rep.Memory {
		if i < len(rep.BaseMemory) && rep.BaseMemory[i].Flows == m.Flows {
			a := float64(m.HeapBytes) / float64(m.Flows)
			b := float64(rep.BaseMemory[i].HeapBytes) / float64(m.Flows)
			fmt.Fprintf(tw, "   heap bytes per stored flow\t%d flows\t\t%.0f\t%.0f\t×%.1f lower\t\n", m.Flows, b, a, b/a)
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "   Zero-loss rates are the highest clean step of each sweep (the sweep's rates bound them); CPU figures are")
	fmt.Fprintln(w, "   medians over each variant's zero-loss steps, which run interleaved with the other build's at the same rates.")
}

func shortMark(s *stepResult) string {
	if s.short() {
		return "*"
	}
	return ""
}

func followedCol(s *stepResult) string {
	if s.Variant != "follow" {
		return "-"
	}
	return fmt.Sprintf("%.0f", s.FollowedRate)
}

func missedCol(s *stepResult) string {
	if s.Variant != "follow" {
		return "-"
	}
	return fmt.Sprint(s.FollowerMissed)
}

func lossCol(s *stepResult) string {
	if !s.lossy() {
		return "0"
	}
	return fmt.Sprintf("%.2f%%", 100*s.lossShare())
}

func per10kCol(s *stepResult) string {
	if s.StoredRate < minPer10kRate {
		return "-"
	}
	return fmt.Sprintf("%.1f", 100*s.AgentPer10k)
}

func cliCol(s *stepResult) string {
	if s.Variant != "follow" {
		return "-"
	}
	return fmt.Sprintf("%.1f", 100*s.FollowerCores)
}

func dash(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
