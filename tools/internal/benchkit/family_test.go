package benchkit

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseFamilies(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "ipv4,ipv6", want: []string{"ipv4", "ipv6"}},
		{in: "ipv6, ipv4", want: []string{"ipv4", "ipv6"}}, // the reports' order: IPv4 first
		{in: "ipv6,ipv6", want: []string{"ipv6"}},
		{in: "ipv4", want: []string{"ipv4"}},
		{in: "IPv6", wantErr: `unknown address family "IPv6" (known: ipv4, ipv6)`},
		{in: "", wantErr: `unknown address family "" (known: ipv4, ipv6)`},
	} {
		got, err := ParseFamilies(tc.in)
		if tc.wantErr != "" {
			assert.EqualError(t, err, tc.wantErr, "%q", tc.in)
			continue
		}
		require.NoError(t, err, "%q", tc.in)
		assert.Equal(t, tc.want, got, "%q", tc.in)
	}
}

func TestNthAddr(t *testing.T) {
	assert.Equal(t, netip.MustParseAddr("10.96.1.4"), NthAddr(netip.MustParseAddr("10.96.0.0"), 260))
	assert.Equal(t, netip.MustParseAddr("10.1.0.0"), NthAddr(netip.MustParseAddr("10.0.255.255"), 1), "carries into the upper bytes")
	assert.Equal(t, netip.MustParseAddr("fd00:96::1:4"), NthAddr(netip.MustParseAddr("fd00:96::"), 65540))
	assert.Equal(t, netip.MustParseAddr("fd00:172:16:5::1"), NthAddr(netip.MustParseAddr("fd00:172:16:5::"), 1), "the upper 96 bits stay")
}
