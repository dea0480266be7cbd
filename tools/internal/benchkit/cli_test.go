package benchkit

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseInts(t *testing.T) {
	for _, tc := range []struct {
		in      string
		least   int
		want    []int
		wantErr string
	}{
		{in: "10,1000,10000", least: 1, want: []int{10, 1000, 10000}},
		{in: " 10 , 20", least: 1, want: []int{10, 20}},
		{in: "1", least: 1, want: []int{1}},
		{in: "0", least: 1, wantErr: `"0" is not a positive number`},
		{in: "10,,20", least: 1, wantErr: `"" is not a positive number`},
		{in: "ten", least: 1, wantErr: `"ten" is not a positive number`},
		{in: "2,10", least: 2, want: []int{2, 10}},
		{in: "1,10", least: 2, wantErr: `"1" is not a number of at least 2`},
		{in: "", least: 1, wantErr: `"" is not a positive number`},
	} {
		got, err := ParseInts(tc.in, tc.least)
		if tc.wantErr != "" {
			assert.EqualError(t, err, tc.wantErr, "%q", tc.in)
			continue
		}
		require.NoError(t, err, "%q", tc.in)
		assert.Equal(t, tc.want, got, "%q", tc.in)
	}
}

func TestParseVariants(t *testing.T) {
	known := []string{"sluice", "iptables", "nftables", "none"}
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "sluice,iptables,nftables,none", want: []string{"sluice", "iptables", "nftables", "none"}},
		{in: "iptables", want: []string{"iptables", "none"}},
		{in: "none,sluice", want: []string{"sluice", "none"}},
		{in: " sluice , sluice", want: []string{"sluice", "none"}},
		{in: "none", want: []string{"none"}},
		{in: "sluice,ipvs", wantErr: `unknown variant "ipvs" (known: sluice, iptables, nftables, none)`},
	} {
		got, err := ParseVariants(tc.in, known, "none")
		if tc.wantErr != "" {
			assert.EqualError(t, err, tc.wantErr, "%q", tc.in)
			continue
		}
		require.NoError(t, err, "%q", tc.in)
		assert.Equal(t, tc.want, got, "%q: the baseline last, once", tc.in)
	}
}

func TestFirstLine(t *testing.T) {
	assert.Equal(t, "one line", FirstLine("one line"))
	assert.Equal(t, "agent did not start …", FirstLine("agent did not start\nlog:\n..."))
}
