package main

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/source/files"
)

// The agent reads the benchmark's services the way it reads any manifest
// (the files source's decoder): with both families, service i is one
// dual-stack Service with a cluster IP of each family, IPv4 first, and an
// EndpointSlice per family, the target's pointing at the backend pod.
func TestSluiceManifestDualStack(t *testing.T) {
	fams := []ipFamily{familyIPv4, familyIPv6}
	backend4 := netip.MustParseAddrPort("10.244.10.3:8080")
	backend6 := netip.MustParseAddrPort("[fd00:10:244:a::3]:8080")
	byFamily := [][]svcSpec{
		genServices(familyIPv4, 3, 2, backend4, "default", "backend", "node1"),
		genServices(familyIPv6, 3, 2, backend6, "default", "backend", "node1"),
	}
	objs, err := files.Decode("services.yaml", []byte(sluiceManifest(fams, byFamily)))
	require.NoError(t, err)
	svcs := map[string]*model.Service{}
	slices := map[string]*model.EndpointSlice{}
	for _, o := range objs {
		switch o := o.(type) {
		case *model.Service:
			svcs[o.Name] = o
		case *model.EndpointSlice:
			slices[o.Name] = o
		}
	}
	require.Len(t, svcs, 3)
	require.Len(t, slices, 6)
	assert.Equal(t, []netip.Addr{netip.MustParseAddr("10.96.0.1"), netip.MustParseAddr("fd00:96::1")}, svcs["svc-00000"].ClusterIPs)
	assert.Equal(t, []netip.Addr{netip.MustParseAddr("10.96.0.3"), netip.MustParseAddr("fd00:96::3")}, svcs["svc-00002"].ClusterIPs)

	filler6 := slices["svc-00000-ipv6"]
	assert.Equal(t, model.AddressTypeIPv6, filler6.AddressType)
	assert.Equal(t, "svc-00000", filler6.ServiceName)
	require.Len(t, filler6.Endpoints, 2)
	assert.Equal(t, []netip.Addr{netip.MustParseAddr("fd00:128::1")}, filler6.Endpoints[0].Addresses)
	assert.Nil(t, filler6.Endpoints[0].TargetRef, "fillers' endpoints are no pods")

	target6 := slices["svc-00002-ipv6"]
	require.Len(t, target6.Endpoints, 1)
	assert.Equal(t, []netip.Addr{backend6.Addr()}, target6.Endpoints[0].Addresses)
	require.NotNil(t, target6.Endpoints[0].TargetRef)
	assert.Equal(t, "backend", target6.Endpoints[0].TargetRef.Name)
	assert.Equal(t, []netip.Addr{backend4.Addr()}, slices["svc-00002-ipv4"].Endpoints[0].Addresses)
	assert.Equal(t, model.AddressTypeIPv4, slices["svc-00002-ipv4"].AddressType)
}

// One family alone is a single-stack Service of that family.
func TestSluiceManifestIPv6Only(t *testing.T) {
	svcs := genServices(familyIPv6, 2, 1, netip.MustParseAddrPort("[fd00:10:244:a::3]:8080"), "default", "backend", "node1")
	objs, err := files.Decode("services.yaml", []byte(sluiceManifest([]ipFamily{familyIPv6}, [][]svcSpec{svcs})))
	require.NoError(t, err)
	require.Len(t, objs, 4)
	assert.Equal(t, []netip.Addr{netip.MustParseAddr("fd00:96::1")}, objs[0].(*model.Service).ClusterIPs)
}

// kube-proxy's IPv6 rules are its IPv4 rules with IPv6 addresses, host
// prefixes and cluster CIDR, in ip6tables' and table ip6's terms.
func TestKubeProxyRulesIPv6(t *testing.T) {
	svcs := genServices(familyIPv6, 2, 1, netip.MustParseAddrPort("[fd00:10:244:a::3]:8080"), "default", "backend", "node1")
	ipt := iptablesRules(familyIPv6, svcs)
	assert.Contains(t, ipt, "-d fd00:96::2/128 --dport 80 -j KUBE-SVC-")
	assert.Contains(t, ipt, "! -s fd00:10:244::/48 -j KUBE-MARK-MASQ")
	assert.Contains(t, ipt, "-s fd00:10:244:a::3/128 -j KUBE-MARK-MASQ")
	assert.Contains(t, ipt, "-j DNAT --to-destination [fd00:10:244:a::3]:8080")
	assert.NotContains(t, ipt, "/32")
	assert.Equal(t, strings.Count(iptablesRules(familyIPv4, genServices(familyIPv4, 2, 1, netip.MustParseAddrPort("10.244.10.3:8080"), "default", "backend", "node1")), "\n"),
		strings.Count(ipt, "\n"), "the same rules as for IPv4")

	nft := nftRules(familyIPv6, svcs)
	assert.Contains(t, nft, "table ip6 kube-proxy {")
	assert.Contains(t, nft, "type ipv6_addr . inet_proto . inet_service : verdict")
	assert.Contains(t, nft, "ip6 daddr . meta l4proto . th dport vmap @service-ips")
	assert.Contains(t, nft, "ip6 daddr != ::1 meta l4proto")
	assert.Contains(t, nft, "ip6 saddr != fd00:10:244::/48 jump mark-for-masquerade")
	assert.Contains(t, nft, "dnat to [fd00:10:244:a::3]:8080")
	assert.Contains(t, nft, "add element ip6 kube-proxy service-ips {")
	assert.NotContains(t, nft, " ip daddr")
	for _, l := range strings.Split(nft, "\n") {
		if name, ok := strings.CutPrefix(strings.TrimSpace(l), "chain endpoint-"); ok {
			assert.NotContains(t, name, ":", "nft chain names cannot hold colons: %s", l)
		}
	}
}
