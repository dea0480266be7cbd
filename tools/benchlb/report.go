package main

import (
	"fmt"
	"io"
	"maps"
	"strings"

	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

type report struct {
	benchkit.Header
	Rates []*scaleResult `json:"rates,omitempty"`
	// BPF is the BPF_PROG_TEST_RUN benchmark, Verifier its instruction
	// counts, LBCold the reconciler's cold programming benchmark.
	BPF      []benchkit.Bench `json:"bpf,omitempty"`
	Verifier []string         `json:"verifier,omitempty"`
	LBCold   []benchkit.Bench `json:"lbCold,omitempty"`
	Cold     *coldResult      `json:"cold,omitempty"`
	// LBReconcile is the reconciler pass benchmark (ns/op, allocs/op).
	LBReconcile []benchkit.Bench `json:"lbReconcile,omitempty"`
	// BpftoolChecks counts the bpftool link checks after Sluice was
	// detached; BpftoolNonZero lists those that found Sluice links.
	BpftoolChecks  int      `json:"bpftoolChecks"`
	BpftoolNonZero []string `json:"bpftoolNonZero,omitempty"`
}

func reportOptions(o options) map[string]string {
	m := o.RateFlags.Options()
	maps.Copy(m, map[string]string{
		"scales": fmt.Sprint(o.scales), "variants": strings.Join(o.variants, ","),
		"fillerEndpoints": fmt.Sprint(o.fillerEndpoints), "coldServices": fmt.Sprint(o.coldServices),
		"coldEndpoints": fmt.Sprint(o.coldEndpoints), "coldRounds": fmt.Sprint(o.coldRounds),
		"bpfBenchtime": o.BPFBenchtime, "lbBenchtime": o.lbBenchtime, "reconcileBenchtime": o.reconcileBenchtime,
	})
	return m
}

type sample struct {
	benchkit.Sample
	Conn benchkit.LoadResult `json:"conn"`
	RR   benchkit.LoadResult `json:"rr"`
}

type variantSummary struct {
	Variant string `json:"variant"`
	Rounds  int    `json:"rounds"`
	Failed  int    `json:"failedRounds"`
	// Errors are failed operations inside successful runs.
	Errors    uint64        `json:"errors"`
	Conn      benchkit.Stat `json:"connPerSec"`
	RR        benchkit.Stat `json:"reqPerSec"`
	ConnRatio benchkit.Stat `json:"connRatioToDirect"`
	RRRatio   benchkit.Stat `json:"reqRatioToDirect"`
}

type scaleResult struct {
	Services int              `json:"services"`
	Target   string           `json:"target"`
	Samples  []sample         `json:"samples"`
	Summary  []variantSummary `json:"summary"`
}

// summarize computes per-variant medians and, per round, the ratio to that
// round's direct run (see benchkit.PerRound).
func (sr *scaleResult) summarize(variants []string) {
	conn := func(s sample) float64 { return s.Conn.Rate }
	rr := func(s sample) float64 { return s.RR.Rate }
	directConn, directRR := sr.perRound("direct", conn), sr.perRound("direct", rr)
	for _, v := range variants {
		vs := variantSummary{Variant: v}
		for _, s := range sr.Samples {
			if s.Variant != v {
				continue
			}
			vs.Rounds++
			if s.Err != "" {
				vs.Failed++
				continue
			}
			vs.Errors += s.Conn.Errors + s.RR.Errors
		}
		c, r := sr.perRound(v, conn), sr.perRound(v, rr)
		vs.Conn, vs.RR = benchkit.StatOf(c.Values()), benchkit.StatOf(r.Values())
		vs.ConnRatio, vs.RRRatio = benchkit.StatOf(c.RatiosTo(directConn)), benchkit.StatOf(r.RatiosTo(directRR))
		sr.Summary = append(sr.Summary, vs)
	}
}

// perRound is figure(s) of each of variant v's successful runs, by round.
func (sr *scaleResult) perRound(v string, figure func(sample) float64) benchkit.PerRound {
	out := benchkit.PerRound{}
	for _, s := range sr.Samples {
		if s.Variant == v && s.Err == "" {
			out[s.Round] = figure(s)
		}
	}
	return out
}

type coldTool struct {
	Tool    string    `json:"tool"`
	Seconds []float64 `json:"seconds,omitempty"`
	Median  float64   `json:"median"`
	Q1      float64   `json:"q1"`
	Q3      float64   `json:"q3"`
	Error   string    `json:"error,omitempty"`
}

type coldResult struct {
	Services       int        `json:"services"`
	Endpoints      int        `json:"endpoints"`
	IptablesChains int        `json:"iptablesChains"`
	IptablesRules  int        `json:"iptablesRules"`
	Tools          []coldTool `json:"tools"`
}

func printReport(w io.Writer, o options, rep *report) {
	rep.Print(w, "benchlb")
	if len(rep.Rates) > 0 {
		fmt.Fprintf(w, "\n1. Client pod → service VIP (last of N services), %d interleaved rounds × %s (+%s warm-up), %d connections.\n",
			o.Rounds, o.Duration, o.Warmup, o.Workers)
		fmt.Fprintln(w, "   Medians over rounds; \"x direct\" is the median of per-round ratios to the direct-to-backend run, [Q1–Q3].")
		for _, sr := range rep.Rates {
			fmt.Fprintf(w, "\n   %d services (target %s)\n", sr.Services, sr.Target)
			tw := benchkit.NewTable(w)
			fmt.Fprintln(tw, "   variant\tconn/s\tx direct\t[IQR]\treq/s\tx direct\t[IQR]\tfailed rounds\terrors\t")
			for _, v := range sr.Summary {
				fmt.Fprintf(tw, "   %s\t%.0f\t%.2f\t[%.2f–%.2f]\t%.0f\t%.2f\t[%.2f–%.2f]\t%d/%d\t%d\t\n", v.Variant,
					v.Conn.Median, v.ConnRatio.Median, v.ConnRatio.Q1, v.ConnRatio.Q3,
					v.RR.Median, v.RRRatio.Median, v.RRRatio.Q1, v.RRRatio.Q3, v.Failed, v.Rounds, v.Errors)
			}
			tw.Flush()
			for _, s := range sr.Samples {
				if s.Err != "" {
					fmt.Fprintf(w, "   round %d %s failed: %s\n", s.Round, s.Variant, benchkit.FirstLine(s.Err))
				}
			}
		}
		fmt.Fprintf(w, "\n   Sluice detach checks: BPF_PROG_QUERY found nothing attached before every non-Sluice run; bpftool link after %d detaches: ", rep.BpftoolChecks)
		if len(rep.BpftoolNonZero) == 0 {
			fmt.Fprintln(w, "no Sluice links listed (root and node netns).")
		} else {
			fmt.Fprintf(w, "%d listed Sluice links (machine-wide, may be other agents on this machine): %s\n", len(rep.BpftoolNonZero), rep.BpftoolNonZero[0])
		}
	}
	if len(rep.BPF) > 0 {
		fmt.Fprintln(w, "\n2. BPF_PROG_TEST_RUN, sl_from_ep, median ns per packet (repeat=1 per sample), no-op program in the same loop.")
		fmt.Fprintln(w, "   syn: new connection (distinct tuple, CT emptied before tuples repeat); est: established ACK.")
		tw := benchkit.NewTable(w)
		fmt.Fprintln(tw, "   benchmark\tsyn ns\tsyn x noop\test ns\test x noop\tnoop ns\tsamples\t")
		for _, g := range rep.BPF {
			fmt.Fprintf(tw, "   %s\t%.0f\t%.1f\t%.0f\t%.1f\t%.0f\t%d\t\n", g.Name, g.Metrics["syn-ns/pkt"], g.Metrics["syn-x-noop"],
				g.Metrics["est-ns/pkt"], g.Metrics["est-x-noop"], g.Metrics["noop-ns/pkt"], g.N)
		}
		tw.Flush()
		fmt.Fprintln(w, "   events-unread: nobody reads the event ring buffer, so no reader wakeup per new connection.")
	}
	if len(rep.Verifier) > 0 {
		fmt.Fprintln(w, "\n   Verifier:")
		for _, l := range rep.Verifier {
			fmt.Fprintf(w, "   %s\n", strings.TrimPrefix(l, "verifier: "))
		}
	}
	if len(rep.LBCold) > 0 || rep.Cold != nil {
		fmt.Fprintln(w, "\n3. Cold programming")
		tw := benchkit.NewTable(w)
		fmt.Fprintln(tw, "   what\tmedian\t[IQR]\truns\t")
		var sluiceCold float64
		for _, g := range rep.LBCold {
			sluiceCold = g.Metrics["cold-ms"] / 1000
			fmt.Fprintf(tw, "   Sluice reconciler, first full pass (mean)\t%.3fs\t\t%d\t\n", sluiceCold, g.N)
			fmt.Fprintf(tw, "     of which the service computation (first Incremental.Update)\t%.3fs\t\t%d\t\n", g.Metrics["compute-ms"]/1000, g.N)
			fmt.Fprintf(tw, "   Sluice, one service changed afterwards (incremental, mean of 20)\t%.4fs\t\t%d\t\n", g.Metrics["incr-ms"]/1000, g.N)
		}
		if rep.Cold != nil {
			for _, t := range rep.Cold.Tools {
				if t.Error != "" {
					fmt.Fprintf(tw, "   %s\tFAILED\t\t\t\n", t.Tool)
					continue
				}
				fmt.Fprintf(tw, "   %s\t%.3fs\t[%.3f–%.3f]\t%d\t\n", t.Tool, t.Median, t.Q1, t.Q3, len(t.Seconds))
			}
		}
		tw.Flush()
		if rep.Cold != nil {
			fmt.Fprintf(w, "   kube-proxy rules: %d services × %d endpoints = %d iptables chains, %d rules.\n", rep.Cold.Services, rep.Cold.Endpoints, rep.Cold.IptablesChains, rep.Cold.IptablesRules)
			for _, t := range rep.Cold.Tools {
				if t.Error != "" {
					fmt.Fprintf(w, "   %s failed: %s\n", t.Tool, t.Error)
				} else if sluiceCold > 0 {
					fmt.Fprintf(w, "   %s / Sluice first pass: %.1fx\n", t.Tool, t.Median/sluiceCold)
				}
			}
		}
		for _, g := range rep.LBCold {
			fmt.Fprintf(w, "   Sluice memory after the cold pass (Go runtime, test process): HeapInuse %.0f MiB, Sys %.0f MiB\n", g.Metrics["heap-inuse-MB"], g.Metrics["sys-MB"])
		}
	}
	if len(rep.LBReconcile) > 0 {
		printReconcile(w, rep.LBReconcile)
	}
}

// printReconcile tabulates BenchmarkLBReconcile: per pass, the reconciler
// with and without map writes, and the full recompute of the previous
// design measured in the same run, as the baseline of the ratio.
func printReconcile(w io.Writer, res []benchkit.Bench) {
	byName := map[string]benchkit.Bench{}
	for _, g := range res {
		byName[strings.TrimPrefix(g.Name, "LBReconcile/")] = g
	}
	fmt.Fprintln(w, "\n   Reconciler passes, 10k services × 10 endpoints (go test -bench LBReconcile -benchmem ./pkg/servicesync/):")
	fmt.Fprintln(w, "   maps: writing the kernel's maps; no-maps: computation and planning alone;")
	fmt.Fprintln(w, "   full-compute: service.Compute + plan of everything, no writes: what every pass computed before it was")
	fmt.Fprintln(w, "   incremental, the baseline of \"x full-compute\" (compare no-maps with it; maps adds the writes).")
	tw := benchkit.NewTable(w)
	fmt.Fprintln(tw, "   pass	variant	ns/op	allocs/op	B/op	x full-compute	runs	")
	for _, pass := range []string{"cold", "one-service"} {
		base := byName[pass+"/full-compute"].Metrics["ns/op"]
		for _, v := range []string{"maps", "no-maps", "full-compute"} {
			g, ok := byName[pass+"/"+v]
			if !ok {
				continue
			}
			ratio := "-"
			if ns := g.Metrics["ns/op"]; base > 0 && ns > 0 {
				ratio = fmt.Sprintf("%.4f", ns/base)
			}
			fmt.Fprintf(tw, "   %s\t%s\t%.0f\t%.0f\t%.0f\t%s\t%d\t\n", pass, v, g.Metrics["ns/op"], g.Metrics["allocs/op"], g.Metrics["B/op"], ratio, g.N)
		}
	}
	tw.Flush()
}
