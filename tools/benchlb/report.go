package main

import (
	"fmt"
	"io"
	"maps"
	"strings"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

type report struct {
	benchkit.Header
	Rates []*scaleResult `json:"rates,omitempty"`
	// BPF is the BPF_PROG_TEST_RUN benchmark, Verifier its instruction
	// counts, LBCold the reconciler's cold programming benchmark.
	BPF      []benchkit.Bench         `json:"bpf,omitempty"`
	Verifier []benchkit.VerifierCount `json:"verifier,omitempty"`
	LBCold   []benchkit.Bench         `json:"lbCold,omitempty"`
	Cold     *coldResult              `json:"cold,omitempty"`
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
		"scales": fmt.Sprint(o.scales), "variants": strings.Join(o.variants, ","), "families": strings.Join(o.families, ","),
		"fillerEndpoints": fmt.Sprint(o.fillerEndpoints), "coldServices": fmt.Sprint(o.coldServices),
		"coldEndpoints": fmt.Sprint(o.coldEndpoints), "coldRounds": fmt.Sprint(o.coldRounds),
		"bpfBenchtime": o.BPFBenchtime, "lbBenchtime": o.lbBenchtime, "reconcileBenchtime": o.reconcileBenchtime,
	})
	return m
}

// sample is one variant's run in one round: its measurements of each
// family (conn/s and req/s).
type sample = benchkit.FamiliesSample

type variantSummary struct {
	Variant string `json:"variant"`
	Family  string `json:"family"`
	Rounds  int    `json:"rounds"`
	Failed  int    `json:"failedRounds"`
	// Errors are failed operations inside successful runs.
	Errors    uint64        `json:"errors"`
	Conn      benchkit.Stat `json:"connPerSec"`
	RR        benchkit.Stat `json:"reqPerSec"`
	ConnRatio benchkit.Stat `json:"connRatioToDirect"`
	RRRatio   benchkit.Stat `json:"reqRatioToDirect"`
}

// familyRatio is one variant's IPv6 figures over its IPv4 ones, per
// round: both were measured in the same run (same agent, same rules).
type familyRatio struct {
	Variant string `json:"variant"`
	// Rounds counts the rounds in which both families succeeded.
	Rounds int           `json:"rounds"`
	Conn   benchkit.Stat `json:"connIPv6OverIPv4"`
	RR     benchkit.Stat `json:"reqIPv6OverIPv4"`
}

type scaleResult struct {
	Services int `json:"services"`
	// Targets are the target service's VIP:port by family.
	Targets map[string]string `json:"targets"`
	Samples []sample          `json:"samples"`
	Summary []variantSummary  `json:"summary"`
	// IPv6OverIPv4 compares the families, variant by variant, when both
	// were measured.
	IPv6OverIPv4 []familyRatio `json:"ipv6OverIPv4,omitempty"`
}

// summarize computes per-family, per-variant medians and, per round, the
// ratio to that round's direct run of the same family (see
// benchkit.PerRound), and with both families each variant's IPv6 figures
// over its IPv4 ones, round by round.
func (sr *scaleResult) summarize(variants, fams []string) {
	conn := func(fs *benchkit.FamilySample) float64 { return fs.Conn.Rate }
	rr := func(fs *benchkit.FamilySample) float64 { return fs.RR.Rate }
	perRound := func(v, fam string, figure func(*benchkit.FamilySample) float64) benchkit.PerRound {
		return benchkit.FamilyPerRound(sr.Samples, v, fam, figure)
	}
	for _, fam := range fams {
		directConn, directRR := perRound("direct", fam, conn), perRound("direct", fam, rr)
		for _, v := range variants {
			runs := benchkit.CountRuns(sr.Samples, v, fam)
			vs := variantSummary{Variant: v, Family: fam, Rounds: runs.Rounds, Failed: runs.Failed, Errors: runs.Errors}
			c, r := perRound(v, fam, conn), perRound(v, fam, rr)
			vs.Conn, vs.RR = benchkit.StatOf(c.Values()), benchkit.StatOf(r.Values())
			vs.ConnRatio, vs.RRRatio = benchkit.StatOf(c.RatiosTo(directConn)), benchkit.StatOf(r.RatiosTo(directRR))
			sr.Summary = append(sr.Summary, vs)
		}
	}
	if len(fams) < 2 {
		return
	}
	for _, v := range variants {
		c6, c4 := perRound(v, "ipv6", conn), perRound(v, "ipv4", conn)
		r6, r4 := perRound(v, "ipv6", rr), perRound(v, "ipv4", rr)
		ratios := c6.RatiosTo(c4)
		sr.IPv6OverIPv4 = append(sr.IPv6OverIPv4, familyRatio{Variant: v, Rounds: len(ratios),
			Conn: benchkit.StatOf(ratios), RR: benchkit.StatOf(r6.RatiosTo(r4))})
	}
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
		fmt.Fprintln(w, "   Medians over rounds; \"x direct\" is the median of per-round ratios to the same family's direct-to-backend")
		fmt.Fprintln(w, "   run, [Q1–Q3]. With both families, N services are N dual-stack Services: N frontends in each family;")
		fmt.Fprintln(w, "   every run measures both families against the same agent or rules (order alternating between runs).")
		for _, sr := range rep.Rates {
			var targets []string
			for _, f := range o.families {
				targets = append(targets, sr.Targets[f])
			}
			fmt.Fprintf(w, "\n   %d services (target %s)\n", sr.Services, strings.Join(targets, ", "))
			tw := benchkit.NewTable(w)
			fmt.Fprintln(tw, "   family\tvariant\tconn/s\tx direct\t[IQR]\treq/s\tx direct\t[IQR]\tfailed rounds\terrors\t")
			for _, v := range sr.Summary {
				if v.Failed == v.Rounds {
					fmt.Fprintf(tw, "   %s\t%s\tFAILED\t-\t\t-\t-\t\t%d/%d\t\t\n", v.Family, v.Variant, v.Failed, v.Rounds)
					continue
				}
				fmt.Fprintf(tw, "   %s\t%s\t%.0f\t%.2f\t[%.2f–%.2f]\t%.0f\t%.2f\t[%.2f–%.2f]\t%d/%d\t%d\t\n", v.Family, v.Variant,
					v.Conn.Median, v.ConnRatio.Median, v.ConnRatio.Q1, v.ConnRatio.Q3,
					v.RR.Median, v.RRRatio.Median, v.RRRatio.Q1, v.RRRatio.Q3, v.Failed, v.Rounds, v.Errors)
			}
			tw.Flush()
			if len(sr.IPv6OverIPv4) > 0 {
				fmt.Fprintln(w, "   IPv6 / IPv4: per round, the variant's IPv6 rate over its IPv4 rate in the same run, median [IQR]")
				fmt.Fprintln(w, "   (direct's is the kernel's own IPv6 cost: compare a variant's with it).")
				tw := benchkit.NewTable(w)
				fmt.Fprintln(tw, "   variant\tconn/s v6/v4\t[IQR]\treq/s v6/v4\t[IQR]\trounds\t")
				for _, r := range sr.IPv6OverIPv4 {
					if r.Rounds == 0 {
						fmt.Fprintf(tw, "   %s\t-\t\t-\t\t0\t\n", r.Variant)
						continue
					}
					fmt.Fprintf(tw, "   %s\t%.2f\t[%.2f–%.2f]\t%.2f\t[%.2f–%.2f]\t%d\t\n", r.Variant,
						r.Conn.Median, r.Conn.Q1, r.Conn.Q3, r.RR.Median, r.RR.Q1, r.RR.Q3, r.Rounds)
				}
				tw.Flush()
			}
			benchkit.PrintFamilyFailures(w, sr.Samples, o.families)
		}
		fmt.Fprintf(w, "\n   Sluice detach checks: BPF_PROG_QUERY found nothing attached before every non-Sluice run; bpftool link after %d detaches: ", rep.BpftoolChecks)
		if len(rep.BpftoolNonZero) == 0 {
			fmt.Fprintln(w, "no Sluice links listed (root and node netns).")
		} else {
			fmt.Fprintf(w, "%d listed Sluice links (machine-wide, may be other agents on this machine): %s\n", len(rep.BpftoolNonZero), rep.BpftoolNonZero[0])
		}
	}
	if len(rep.BPF) > 0 {
		printBPF(w, rep.BPF)
	}
	if len(rep.Verifier) > 0 {
		fmt.Fprintln(w)
		benchkit.PrintVerifier(w, "   ", rep.Verifier)
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

// bpfRow is one family's figures of a BenchmarkLB result.
type bpfRow struct {
	Family string
	// Syn and Est are the medians in ns, SynX and EstX over the no-op's.
	Syn, SynX, Est, EstX float64
	// SynDid and EstDid say what the program did with the packets.
	SynDid, EstDid string
	// SynV4 and EstV4 are the IPv6 medians over the IPv4 ones (IPv6 rows).
	SynV4, EstV4 float64
}

// bpfRows reads a BenchmarkLB result's rows: IPv4's metrics are syn-…
// and est-…, IPv6's syn6-… and est6-…; a family without metrics was not
// measured.
func bpfRows(g benchkit.Bench) []bpfRow {
	var out []bpfRow
	for _, f := range []struct{ name, suffix string }{{"ipv4", ""}, {"ipv6", "6"}} {
		m := func(kind, metric string) float64 { return g.Metrics[kind+f.suffix+"-"+metric] }
		if _, ok := g.Metrics["syn"+f.suffix+"-ns/pkt"]; !ok {
			continue
		}
		out = append(out, bpfRow{Family: f.name,
			Syn: m("syn", "ns/pkt"), SynX: m("syn", "x-noop"), SynDid: didWith(g, "syn"+f.suffix),
			Est: m("est", "ns/pkt"), EstX: m("est", "x-noop"), EstDid: didWith(g, "est"+f.suffix),
			SynV4: m("syn", "x-ipv4"), EstV4: m("est", "x-ipv4")})
	}
	return out
}

// didWith says what sl_from_ep did with the packets of kind ("syn6"):
// translated to the target's backend, dropped (and why), or neither.
// The benchmark checks every sample's verdict against it.
func didWith(g benchkit.Bench, kind string) string {
	toBackend, ok := g.Metrics[kind+"-to-backend"]
	if !ok {
		return "-"
	}
	if reason := g.Metrics[kind+"-drop-reason"]; reason != 0 {
		return "DROPPED: " + bpfobj.EndpointSlDropReason(uint32(reason)).String()
	}
	if toBackend == 1 {
		return "to backend"
	}
	return "NOT TRANSLATED"
}

// printBPF tabulates BenchmarkLB: one row per scale and family.
func printBPF(w io.Writer, res []benchkit.Bench) {
	fmt.Fprintln(w, "\n2. BPF_PROG_TEST_RUN, sl_from_ep, median ns per packet (repeat=1 per sample), no-op program in the same loop.")
	fmt.Fprintln(w, "   syn: new connection to the VIP (distinct tuple, CT emptied before tuples repeat); est: established ACK to it.")
	fmt.Fprintln(w, "   N services are N frontends in each family measured, both families' packets timed in the same loop;")
	fmt.Fprintln(w, "   x ipv4: the IPv6 median over the IPv4 one. \"did\": what the program did with the family's packets")
	fmt.Fprintln(w, "   (checked on every sample): \"to backend\" is a translation; a DROPPED row times the drop, not a translation.")
	tw := benchkit.NewTable(w)
	fmt.Fprintln(tw, "   benchmark\tfamily\tsyn ns\tsyn x noop\tsyn did\test ns\test x noop\test did\tx ipv4 syn/est\tnoop ns\tsamples\t")
	for _, g := range res {
		for _, r := range bpfRows(g) {
			x := "-"
			if r.SynV4 > 0 || r.EstV4 > 0 {
				x = fmt.Sprintf("%.2f/%.2f", r.SynV4, r.EstV4)
			}
			fmt.Fprintf(tw, "   %s\t%s\t%.0f\t%.1f\t%s\t%.0f\t%.1f\t%s\t%s\t%.0f\t%d\t\n", g.Name, r.Family, r.Syn, r.SynX, r.SynDid,
				r.Est, r.EstX, r.EstDid, x, g.Metrics["noop-ns/pkt"], g.N)
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "   events-unread: nobody reads the event ring buffer, so no reader wakeup per new connection.")
}
