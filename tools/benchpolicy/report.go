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
	// BPF is BenchmarkPolicy's results, Verifier its instruction counts.
	BPF      []benchkit.Bench `json:"bpfTestRun,omitempty"`
	Verifier []string         `json:"verifier,omitempty"`
	Rates    *rateResult      `json:"rates,omitempty"`
}

func reportOptions(o options) map[string]string {
	m := o.RateFlags.Options()
	maps.Copy(m, map[string]string{
		"rules": fmt.Sprint(o.rules), "allowedRule": o.allowedRule,
		"variants": strings.Join(o.variants, ","), "bpfBenchtime": o.BPFBenchtime, "bpfScales": o.bpfScales,
	})
	return m
}

// stat is a median with its interquartile range and the number of
// values it is of.
type stat struct {
	benchkit.Stat
	N int `json:"n"`
}

func statOf(x []float64) stat { return stat{Stat: benchkit.StatOf(x), N: len(x)} }

type sample struct {
	benchkit.Sample
	Conn benchkit.LoadResult `json:"conn"`
}

type variantSummary struct {
	Variant string `json:"variant"`
	Rounds  int    `json:"rounds"`
	Failed  int    `json:"failedRounds"`
	// Errors are failed connections inside successful runs.
	Errors uint64 `json:"errors"`
	Conn   stat   `json:"connPerSec"`
	// RatioNone is per-round conn/s over that round's none run;
	// RatioNopolicy over that round's sluice-nopolicy run.
	RatioNone     stat `json:"ratioToNone"`
	RatioNopolicy stat `json:"ratioToSluiceNopolicy"`
	Setup         stat `json:"setupSeconds"`
}

type rateResult struct {
	Rules           int              `json:"rules"`
	CIDRClasses     int              `json:"cidrClasses"`
	PortRanges      int              `json:"portRanges"`
	AllowedPosition int              `json:"allowedPosition"`
	AllowedAt       string           `json:"allowedAt"`
	Samples         []sample         `json:"samples"`
	Summary         []variantSummary `json:"summary"`
}

// summarize computes per-variant medians and, per round, the ratio to
// that round's baseline runs (see benchkit.PerRound).
func (rr *rateResult) summarize(variants []string) {
	none, nopol := rr.perRound("none"), rr.perRound("sluice-nopolicy")
	for _, v := range variants {
		vs := variantSummary{Variant: v}
		setup := benchkit.PerRound{}
		for _, s := range rr.Samples {
			if s.Variant != v {
				continue
			}
			vs.Rounds++
			if s.Err != "" {
				vs.Failed++
				continue
			}
			vs.Errors += s.Conn.Errors
			setup[s.Round] = s.SetupSeconds
		}
		conn := rr.perRound(v)
		vs.Conn, vs.RatioNone, vs.Setup = statOf(conn.Values()), statOf(conn.RatiosTo(none)), statOf(setup.Values())
		if strings.HasPrefix(v, "sluice-") {
			vs.RatioNopolicy = statOf(conn.RatiosTo(nopol))
		}
		rr.Summary = append(rr.Summary, vs)
	}
}

// perRound is variant v's conn/s by round, of its successful runs.
func (rr *rateResult) perRound(v string) benchkit.PerRound {
	out := benchkit.PerRound{}
	for _, s := range rr.Samples {
		if s.Variant == v && s.Err == "" {
			out[s.Round] = s.Conn.Rate
		}
	}
	return out
}

// bpfRows are the packet kinds of BenchmarkPolicy, by metric prefix: the
// policy run, the no-policy run it is compared with.
var bpfRows = []struct{ label, pol, nopol string }{
	{"SYN, new connection", "syn-pol", "syn-nopol"},
	{"UDP, first datagram", "udp-pol", "udp-nopol"},
	{"SYN, denied (vs admitted, no policy)", "deny-pol", "syn-nopol"},
	{"ACK, established", "est-pol", "est-nopol"},
}

func printReport(w io.Writer, o options, rep *report) {
	rep.Print(w, "benchpolicy")
	if len(rep.BPF) > 0 {
		fmt.Fprintln(w, "\n1. BPF_PROG_TEST_RUN of sl_to_ep (the pod's ingress), median ns per packet [IQR], one run per sample (repeat=1).")
		fmt.Fprintln(w, "   policy: N entries on the endpoint, ingress enforced; no-policy: the same program, endpoint flags 0;")
		fmt.Fprintln(w, "   noop: a program that only returns, measured in the same loop. New connections use a fresh source port")
		fmt.Fprintln(w, "   per sample (CT emptied, untimed, before the ports wrap); a denied SYN leaves no CT entry.")
		tw := benchkit.NewTable(w)
		fmt.Fprintln(tw, "   entries\tpacket\tpolicy ns\t[IQR]\tno-policy ns\t[IQR]\tx no-policy\tpolicy x noop\tnoop ns\tsamples\t")
		for _, g := range rep.BPF {
			entries := strings.TrimPrefix(g.Name, "Policy/entries=")
			m := g.Metrics
			for _, r := range bpfRows {
				x := "-"
				if v, ok := m[r.pol+"-x-nopol"]; ok {
					x = fmt.Sprintf("%.2f", v)
				}
				fmt.Fprintf(tw, "   %s\t%s\t%.0f\t[%.0f–%.0f]\t%.0f\t[%.0f–%.0f]\t%s\t%.1f\t%.0f\t%d\t\n", entries, r.label,
					m[r.pol+"-ns/pkt"], m[r.pol+"-q1-ns"], m[r.pol+"-q3-ns"],
					m[r.nopol+"-ns/pkt"], m[r.nopol+"-q1-ns"], m[r.nopol+"-q3-ns"],
					x, m[r.pol+"-x-noop"], m["noop-ns/pkt"], g.N)
			}
		}
		tw.Flush()
		fmt.Fprintln(w, "   The kernel's per-run clock reads are in every sample, the no-op's too: compare the ratios.")
	}
	if len(rep.Verifier) > 0 {
		fmt.Fprintln(w, "\n   Verifier (the same whatever the map contents):")
		for _, l := range rep.Verifier {
			fmt.Fprintf(w, "   %s\n", l)
		}
	}
	if rr := rep.Rates; rr != nil {
		fmt.Fprintf(w, "\n2. Connections/s, client pod → server pod through one routed node (connect, 1-byte echo, close with RST),\n")
		fmt.Fprintf(w, "   %d interleaved rounds × %s (+%s warm-up), %d connections in parallel.\n", o.Rounds, o.Duration, o.Warmup, o.Workers)
		fmt.Fprintf(w, "   Policy: %d rules on the server's ingress (%d ipBlock CIDRs, %d port ranges); in the iptables chain\n", rr.Rules, rr.CIDRClasses, rr.PortRanges)
		fmt.Fprintf(w, "   the client's rule is number %d (%s). Medians over rounds [IQR]; \"x none\" is the median [IQR] of\n", rr.AllowedPosition, rr.AllowedAt)
		fmt.Fprintln(w, "   per-round ratios to that round's run with nothing installed, \"x no-policy\" to that round's")
		fmt.Fprintln(w, "   sluice-nopolicy run. Every counted run got the client through and, under policy, kept a pod")
		fmt.Fprintln(w, "   without a rule out. setup: loading and programming the variant (Sluice: programs and maps).")
		tw := benchkit.NewTable(w)
		fmt.Fprintln(tw, "   variant\tconn/s\t[IQR]\tx none\t[IQR]\tx no-policy\t[IQR]\tsetup s\tfailed rounds\terrors\t")
		for _, v := range rr.Summary {
			xp, xpIQR := "", ""
			if v.RatioNopolicy.N > 0 && v.Variant != "sluice-nopolicy" {
				xp, xpIQR = fmt.Sprintf("%.3f", v.RatioNopolicy.Median), fmt.Sprintf("[%.3f–%.3f]", v.RatioNopolicy.Q1, v.RatioNopolicy.Q3)
			}
			xn, xnIQR := "-", ""
			if v.RatioNone.N > 0 {
				xn, xnIQR = fmt.Sprintf("%.3f", v.RatioNone.Median), fmt.Sprintf("[%.3f–%.3f]", v.RatioNone.Q1, v.RatioNone.Q3)
			}
			fmt.Fprintf(tw, "   %s\t%.0f\t[%.0f–%.0f]\t%s\t%s\t%s\t%s\t%.2f\t%d/%d\t%d\t\n", v.Variant,
				v.Conn.Median, v.Conn.Q1, v.Conn.Q3, xn, xnIQR, xp, xpIQR, v.Setup.Median, v.Failed, v.Rounds, v.Errors)
		}
		tw.Flush()
		for _, s := range rr.Samples {
			if s.Err != "" {
				fmt.Fprintf(w, "   round %d %s failed: %s\n", s.Round, s.Variant, benchkit.FirstLine(s.Err))
			}
		}
	}
}
