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
	BPF      []benchkit.Bench         `json:"bpfTestRun,omitempty"`
	Verifier []benchkit.VerifierCount `json:"verifier,omitempty"`
	Rates    *rateResult              `json:"rates,omitempty"`
}

func reportOptions(o options) map[string]string {
	m := o.RateFlags.Options()
	maps.Copy(m, map[string]string{
		"rules": fmt.Sprint(o.rules), "allowedRule": o.allowedRule,
		"variants": strings.Join(o.variants, ","), "families": strings.Join(o.families, ","),
		"bpfBenchtime": o.BPFBenchtime, "bpfScales": o.bpfScales,
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

// sample is one variant's run in one round: its measurement of each
// family (conn/s).
type sample = benchkit.FamiliesSample

type variantSummary struct {
	Variant string `json:"variant"`
	Family  string `json:"family"`
	Rounds  int    `json:"rounds"`
	Failed  int    `json:"failedRounds"`
	// Errors are failed connections inside successful runs.
	Errors uint64 `json:"errors"`
	Conn   stat   `json:"connPerSec"`
	// RatioNone is per-round conn/s over that round's none run of the
	// same family; RatioNopolicy over its sluice-nopolicy run.
	RatioNone     stat `json:"ratioToNone"`
	RatioNopolicy stat `json:"ratioToSluiceNopolicy"`
	Setup         stat `json:"setupSeconds"`
}

// familyRatio is one variant's IPv6 conn/s over its IPv4 conn/s, per
// round: both measured in the same run, against the same rules.
type familyRatio struct {
	Variant string `json:"variant"`
	Ratio   stat   `json:"connIPv6OverIPv4"`
}

type rateResult struct {
	Rules           int              `json:"rules"`
	CIDRClasses     int              `json:"cidrClasses"`
	PortRanges      int              `json:"portRanges"`
	AllowedPosition int              `json:"allowedPosition"`
	AllowedAt       string           `json:"allowedAt"`
	Samples         []sample         `json:"samples"`
	Summary         []variantSummary `json:"summary"`
	// IPv6OverIPv4 compares the families, variant by variant, when both
	// were measured.
	IPv6OverIPv4 []familyRatio `json:"ipv6OverIPv4,omitempty"`
}

// summarize computes per-family, per-variant medians and, per round, the
// ratio to that round's baseline runs of the same family (see
// benchkit.PerRound), and with both families each variant's IPv6 rate
// over its IPv4 rate, round by round.
func (rr *rateResult) summarize(variants, fams []string) {
	for _, fam := range fams {
		none, nopol := rr.perRound("none", fam), rr.perRound("sluice-nopolicy", fam)
		for _, v := range variants {
			runs := benchkit.CountRuns(rr.Samples, v, fam)
			vs := variantSummary{Variant: v, Family: fam, Rounds: runs.Rounds, Failed: runs.Failed, Errors: runs.Errors}
			conn := rr.perRound(v, fam)
			vs.Conn, vs.RatioNone, vs.Setup = statOf(conn.Values()), statOf(conn.RatiosTo(none)), statOf(runs.Setup.Values())
			if strings.HasPrefix(v, "sluice-") {
				vs.RatioNopolicy = statOf(conn.RatiosTo(nopol))
			}
			rr.Summary = append(rr.Summary, vs)
		}
	}
	if len(fams) < 2 {
		return
	}
	for _, v := range variants {
		rr.IPv6OverIPv4 = append(rr.IPv6OverIPv4, familyRatio{Variant: v,
			Ratio: statOf(rr.perRound(v, benchkit.IPv6.Name).RatiosTo(rr.perRound(v, benchkit.IPv4.Name)))})
	}
}

// perRound is variant v's conn/s in family fam by round, of its
// successful measurements.
func (rr *rateResult) perRound(v, fam string) benchkit.PerRound {
	return benchkit.FamilyPerRound(rr.Samples, v, fam, func(fs *benchkit.FamilySample) float64 { return fs.Conn.Rate })
}

// bpfRows are the packet kinds of BenchmarkPolicy, by metric prefix: the
// policy run, the no-policy run it is compared with.
var bpfRows = []struct{ label, pol, nopol string }{
	{"SYN, new connection", "syn-pol", "syn-nopol"},
	{"UDP, first datagram", "udp-pol", "udp-nopol"},
	{"SYN, denied (vs admitted, no policy)", "deny-pol", "syn-nopol"},
	{"ACK, established", "est-pol", "est-nopol"},
}

// bpfFamilies are BenchmarkPolicy's families by metric suffix: a packet
// kind's metrics are <kind>-… for IPv4 and <kind>6-… for IPv6 ("syn6-pol").
var bpfFamilies = []struct{ name, suffix string }{{"ipv4", ""}, {"ipv6", "6"}}

// withFamily is metric prefix (syn-pol) in the family of suffix (syn6-pol).
func withFamily(prefix, suffix string) string {
	kind, variant, _ := strings.Cut(prefix, "-")
	return kind + suffix + "-" + variant
}

func printReport(w io.Writer, o options, rep *report) {
	rep.Print(w, "benchpolicy")
	if len(rep.BPF) > 0 {
		fmt.Fprintln(w, "\n1. BPF_PROG_TEST_RUN of sl_to_ep (the pod's ingress), median ns per packet [IQR], one run per sample (repeat=1).")
		fmt.Fprintln(w, "   policy: N entries on the endpoint, ingress enforced; no-policy: the same program, endpoint flags 0;")
		fmt.Fprintln(w, "   noop: a program that only returns, measured in the same loop. New connections use a fresh source port")
		fmt.Fprintln(w, "   per sample (CT emptied, untimed, before the ports wrap); a denied SYN leaves no CT entry.")
		fmt.Fprintln(w, "   IPv6: the same entries (they name identities) with every identity's IPv6 address in the ipcache and each")
		fmt.Fprintln(w, "   ipBlock class's IPv6 CIDR, IPv6 packets timed in the same loop; x ipv4: the IPv6 median over IPv4's.")
		tw := benchkit.NewTable(w)
		fmt.Fprintln(tw, "   entries\tfamily\tpacket\tpolicy ns\t[IQR]\tno-policy ns\t[IQR]\tx no-policy\tpolicy x noop\tx ipv4\tnoop ns\tsamples\t")
		for _, g := range rep.BPF {
			entries := strings.TrimPrefix(g.Name, "Policy/entries=")
			m := g.Metrics
			for _, f := range bpfFamilies {
				if _, ok := m[withFamily("syn-pol", f.suffix)+"-ns/pkt"]; !ok {
					continue
				}
				for _, r := range bpfRows {
					pol, nopol := withFamily(r.pol, f.suffix), withFamily(r.nopol, f.suffix)
					x, x4 := "-", "-"
					if v, ok := m[pol+"-x-nopol"]; ok {
						x = fmt.Sprintf("%.2f", v)
					}
					if v, ok := m[pol+"-x-ipv4"]; ok {
						x4 = fmt.Sprintf("%.2f", v)
					}
					fmt.Fprintf(tw, "   %s\t%s\t%s\t%.0f\t[%.0f–%.0f]\t%.0f\t[%.0f–%.0f]\t%s\t%.1f\t%s\t%.0f\t%d\t\n", entries, f.name, r.label,
						m[pol+"-ns/pkt"], m[pol+"-q1-ns"], m[pol+"-q3-ns"],
						m[nopol+"-ns/pkt"], m[nopol+"-q1-ns"], m[nopol+"-q3-ns"],
						x, m[pol+"-x-noop"], x4, m["noop-ns/pkt"], g.N)
				}
			}
		}
		tw.Flush()
		fmt.Fprintln(w, "   The kernel's per-run clock reads are in every sample, the no-op's too: compare the ratios.")
	}
	if len(rep.Verifier) > 0 {
		fmt.Fprintln(w)
		benchkit.PrintVerifier(w, "   ", rep.Verifier)
	}
	if rr := rep.Rates; rr != nil {
		fmt.Fprintf(w, "\n2. Connections/s, client pod → server pod through one routed node (connect, 1-byte echo, close with RST),\n")
		fmt.Fprintf(w, "   %d interleaved rounds × %s (+%s warm-up), %d connections in parallel.\n", o.Rounds, o.Duration, o.Warmup, o.Workers)
		fmt.Fprintf(w, "   Policy: %d rules on the server's ingress (%d ipBlock CIDRs, %d port ranges); in the iptables chain\n", rr.Rules, rr.CIDRClasses, rr.PortRanges)
		fmt.Fprintf(w, "   the client's rule is number %d (%s). Medians over rounds [IQR]; \"x none\" is the median [IQR] of\n", rr.AllowedPosition, rr.AllowedAt)
		fmt.Fprintln(w, "   per-round ratios to that round's run with nothing installed, \"x no-policy\" to that round's")
		fmt.Fprintln(w, "   sluice-nopolicy run, each of the same family. Every counted run got the client through and, under")
		fmt.Fprintln(w, "   policy, kept a pod without a rule out. setup: loading and programming the variant (Sluice: programs")
		fmt.Fprintln(w, "   and maps). IPv6: dual-stack pods, the same rules with the peers' IPv6 addresses and CIDRs (ip6tables,")
		fmt.Fprintln(w, "   table ip6), measured in the same run as IPv4 (order alternating between runs).")
		tw := benchkit.NewTable(w)
		fmt.Fprintln(tw, "   family\tvariant\tconn/s\t[IQR]\tx none\t[IQR]\tx no-policy\t[IQR]\tsetup s\tfailed rounds\terrors\t")
		for _, v := range rr.Summary {
			if v.Failed == v.Rounds {
				fmt.Fprintf(tw, "   %s\t%s\tFAILED\t\t-\t\t\t\t\t%d/%d\t\t\n", v.Family, v.Variant, v.Failed, v.Rounds)
				continue
			}
			xp, xpIQR := "", ""
			if v.RatioNopolicy.N > 0 && v.Variant != "sluice-nopolicy" {
				xp, xpIQR = fmt.Sprintf("%.3f", v.RatioNopolicy.Median), fmt.Sprintf("[%.3f–%.3f]", v.RatioNopolicy.Q1, v.RatioNopolicy.Q3)
			}
			xn, xnIQR := "-", ""
			if v.RatioNone.N > 0 {
				xn, xnIQR = fmt.Sprintf("%.3f", v.RatioNone.Median), fmt.Sprintf("[%.3f–%.3f]", v.RatioNone.Q1, v.RatioNone.Q3)
			}
			fmt.Fprintf(tw, "   %s\t%s\t%.0f\t[%.0f–%.0f]\t%s\t%s\t%s\t%s\t%.2f\t%d/%d\t%d\t\n", v.Family, v.Variant,
				v.Conn.Median, v.Conn.Q1, v.Conn.Q3, xn, xnIQR, xp, xpIQR, v.Setup.Median, v.Failed, v.Rounds, v.Errors)
		}
		tw.Flush()
		if len(rr.IPv6OverIPv4) > 0 {
			fmt.Fprintln(w, "   IPv6 / IPv4: per round, the variant's IPv6 conn/s over its IPv4 conn/s in the same run, median [IQR]")
			fmt.Fprintln(w, "   (none's is the kernel's own IPv6 difference: compare a variant's with it).")
			tw := benchkit.NewTable(w)
			fmt.Fprintln(tw, "   variant\tconn/s v6/v4\t[IQR]\trounds\t")
			for _, r := range rr.IPv6OverIPv4 {
				if r.Ratio.N == 0 {
					fmt.Fprintf(tw, "   %s\t-\t\t0\t\n", r.Variant)
					continue
				}
				fmt.Fprintf(tw, "   %s\t%.3f\t[%.3f–%.3f]\t%d\t\n", r.Variant, r.Ratio.Median, r.Ratio.Q1, r.Ratio.Q3, r.Ratio.N)
			}
			tw.Flush()
		}
		benchkit.PrintFamilyFailures(w, rr.Samples, o.families)
	}
}
