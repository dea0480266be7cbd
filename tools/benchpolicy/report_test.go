package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

// TestSummarizeFamilies checks the rate report's rows: each family's
// ratios to the same family's none and sluice-nopolicy runs, a family
// that failed counted against that family alone, and each variant's IPv6
// conn/s over its IPv4 conn/s of the same run.
func TestSummarizeFamilies(t *testing.T) {
	run := func(round int, v string, conn4, conn6 float64, err6 string) sample {
		s := sample{Sample: benchkit.Sample{Round: round, Variant: v, SetupSeconds: 1}, Families: map[string]*benchkit.FamilySample{}}
		s.Families["ipv4"] = &benchkit.FamilySample{Conn: benchkit.LoadResult{Rate: conn4, Errors: 2}}
		s.Families["ipv6"] = &benchkit.FamilySample{Conn: benchkit.LoadResult{Rate: conn6}, Err: err6}
		return s
	}
	rr := &rateResult{Samples: []sample{
		run(1, "none", 1000, 500, ""), run(1, "sluice-nopolicy", 900, 400, ""), run(1, "sluice-policy", 800, 300, ""),
		run(2, "sluice-policy", 800, 0, "intruder check: connection got through"), run(2, "none", 1000, 1000, ""), run(2, "sluice-nopolicy", 1000, 800, ""),
	}}
	rr.summarize([]string{"sluice-policy", "sluice-nopolicy", "none"}, []string{"ipv4", "ipv6"})
	by := map[string]variantSummary{}
	for _, v := range rr.Summary {
		by[v.Family+"/"+v.Variant] = v
	}
	require.Len(t, by, 6)
	near := func(want float64, got stat, n int, msg string) {
		t.Helper()
		assert.InDelta(t, want, got.Median, 1e-9, msg)
		assert.Equal(t, n, got.N, msg)
	}
	p4, p6 := by["ipv4/sluice-policy"], by["ipv6/sluice-policy"]
	near(0.8, p4.RatioNone, 2, "IPv4: 800/1000 twice")
	near(0.84444444444, p4.RatioNopolicy, 2, "IPv4: 800/900 and 800/1000")
	assert.EqualValues(t, 4, p4.Errors)
	near(0.6, p6.RatioNone, 1, "IPv6: 300/500 of IPv6 none; round 2 failed")
	near(0.75, p6.RatioNopolicy, 1, "IPv6: 300/400")
	assert.Equal(t, 1, p6.Failed)
	assert.Equal(t, 2, p6.Rounds)
	assert.Zero(t, by["ipv6/sluice-nopolicy"].Failed)

	ratios := map[string]familyRatio{}
	for _, r := range rr.IPv6OverIPv4 {
		ratios[r.Variant] = r
	}
	near(0.375, ratios["sluice-policy"].Ratio, 1, "300/800; round 2's IPv6 failed")
	near(0.75, ratios["none"].Ratio, 2, "0.5 and 1.0")
}

// The part-1 table has a row per family and packet kind, from the
// benchmark's <kind>-… (IPv4) and <kind>6-… (IPv6) metrics.
func TestPrintBPFFamilies(t *testing.T) {
	m := map[string]float64{"noop-ns/pkt": 200}
	for _, k := range []string{"syn", "udp", "deny", "est", "syn6", "udp6", "deny6", "est6"} {
		for _, v := range []string{"pol", "nopol"} {
			m[k+"-"+v+"-ns/pkt"] = 1000
		}
	}
	m["syn6-pol-x-ipv4"] = 1.25
	m["syn6-pol-ns/pkt"] = 1234
	var b strings.Builder
	printReport(&b, options{}, &report{BPF: []benchkit.Bench{{Name: "Policy/entries=10", N: 100, Metrics: m}}})
	var rows []string
	for _, l := range strings.Split(b.String(), "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0] == "10" {
			rows = append(rows, f[1]+" "+strings.Join(f[2:4], " "))
		}
	}
	assert.Equal(t, []string{"ipv4 SYN, new", "ipv4 UDP, first", "ipv4 SYN, denied", "ipv4 ACK, established",
		"ipv6 SYN, new", "ipv6 UDP, first", "ipv6 SYN, denied", "ipv6 ACK, established"}, rows)
	assert.Contains(t, b.String(), "1234")
	assert.Contains(t, b.String(), "1.25")
}

func TestWithFamily(t *testing.T) {
	assert.Equal(t, "syn-pol", withFamily("syn-pol", ""))
	assert.Equal(t, "deny6-pol", withFamily("deny-pol", "6"))
	assert.Equal(t, "est6-nopol", withFamily("est-nopol", "6"))
}
