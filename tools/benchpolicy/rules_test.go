package main

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

var (
	client4 = netip.MustParseAddr("10.244.10.2")
	client6 = netip.MustParseAddr("fd00:10:244:a::2")
)

// With IPv6, every rule has an IPv6 peer beside its IPv4 one; Sluice's
// maps hold one policy entry per rule (entries name identities) and an
// ipcache entry or ipBlock CIDR per family.
func TestRulesDualStack(t *testing.T) {
	rs := genRules(100, client4, client6, serverPort, "last")
	require.Len(t, rs.Rules, 100)
	for _, r := range rs.Rules {
		require.True(t, r.Peer.Addr().Is4() && r.Peer6.Addr().Is6(), "%+v", r)
		if r.Identity >= cidrClassBase {
			assert.Equal(t, 64, r.Peer6.Bits(), "an IPv6 ipBlock: %+v", r)
		} else {
			assert.Equal(t, 128, r.Peer6.Bits(), "a pod's IPv6 address: %+v", r)
		}
	}
	allowed := rs.Rules[rs.Allowed]
	assert.Equal(t, netip.PrefixFrom(client6, 128), allowed.Peer6)

	p, ipc := rs.sluicePolicy()
	assert.Len(t, p.Entries, 100, "one entry per rule whatever the families")
	assert.Len(t, p.CIDRs, 2*rs.CIDRClasses, "an IPv4 and an IPv6 CIDR per ipBlock class")
	assert.Equal(t, datapath.IPCacheEntry{Identity: clientIdentity}, ipc[netip.PrefixFrom(client6, 128)])
	assert.Equal(t, datapath.IPCacheEntry{Identity: fillerIdentity}, ipc[netip.MustParsePrefix("fd00:200::1/128")])
	assert.Equal(t, datapath.IPCacheEntry{Identity: fillerIdentity}, ipc[netip.MustParsePrefix("10.200.0.1/32")])

	// IPv4 alone: no IPv6 peer, nothing IPv6 in the maps.
	rs4 := genRules(100, client4, netip.Addr{}, serverPort, "last")
	p4, ipc4 := rs4.sluicePolicy()
	assert.Len(t, p4.CIDRs, rs4.CIDRClasses)
	for k := range ipc4 {
		assert.True(t, k.Addr().Is4(), "%s", k)
	}
}

// ip6tables and table ip6 enforce the same rules with the IPv6 peers.
func TestRulesIPv6Tables(t *testing.T) {
	rs := genRules(12, client4, client6, serverPort, "first")
	ipt := iptablesRules(rs, "lxc1", benchkit.IPv6)
	assert.Contains(t, ipt, "-A BENCH-TW-lxc1 -s fd00:10:244:a::2/128 -p tcp -m tcp --dport 8080 -j ACCEPT")
	assert.Contains(t, ipt, "-s fd00:172:16::/64 -p tcp -m tcp --dport 443 -j ACCEPT")
	assert.NotContains(t, ipt, "10.")
	assert.Equal(t, strings.Count(iptablesRules(rs, "lxc1", benchkit.IPv4), "\n"), strings.Count(ipt, "\n"))

	nft := nftRules(rs, "lxc1", benchkit.IPv6)
	assert.Contains(t, nft, "table ip6 benchpolicy {")
	assert.Contains(t, nft, "type ipv6_addr . inet_proto . inet_service")
	assert.Contains(t, nft, `oifname "lxc1" jump ingress-server`)
	assert.Contains(t, nft, "ip6 saddr . meta l4proto . th dport @allowed accept")
	assert.Contains(t, nft, "add element ip6 benchpolicy allowed {\n\tfd00:10:244:a::2/128 . tcp . 8080,")
	assert.Contains(t, nft, "fd00:200::1/128 . tcp . 8192-8447")
	assert.NotContains(t, nft, "10.")
}
