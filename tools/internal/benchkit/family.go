package benchkit

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Family is an address family and the names the tools the drivers compare
// with use for it: kube-proxy, iptables and nftables program IPv4 and IPv6
// separately, each with its own command or table family.
type Family struct {
	// Name is ipv4 or ipv6, as -families names it.
	Name string
	// Iptables is the iptables command family: iptables, ip6tables
	// (iptables-legacy-restore, ip6tables-legacy-restore, ...).
	Iptables string
	// Nft is the nftables table family (ip, ip6), NftAddr its address
	// type (ipv4_addr, ipv6_addr).
	Nft, NftAddr string
	// HostBits is the prefix length of one address.
	HostBits int
}

// The families, in the order the reports list them.
var (
	IPv4     = Family{Name: "ipv4", Iptables: "iptables", Nft: "ip", NftAddr: "ipv4_addr", HostBits: 32}
	IPv6     = Family{Name: "ipv6", Iptables: "ip6tables", Nft: "ip6", NftAddr: "ipv6_addr", HostBits: 128}
	Families = []string{IPv4.Name, IPv6.Name}
)

// FamilyNamed is the family named name (ipv4, ipv6).
func FamilyNamed(name string) Family {
	if name == IPv6.Name {
		return IPv6
	}
	return IPv4
}

// ParseFamilies parses a comma-separated list of address families (ipv4,
// ipv6) and returns them in the order of Families, without repeats.
func ParseFamilies(list string) ([]string, error) {
	want := map[string]bool{}
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if !slices.Contains(Families, f) {
			return nil, fmt.Errorf("unknown address family %q (known: %s)", f, strings.Join(Families, ", "))
		}
		want[f] = true
	}
	var out []string
	for _, f := range Families {
		if want[f] {
			out = append(out, f)
		}
	}
	return out, nil
}

// NthAddr is base plus i (added to the last 32 bits of an IPv6 address):
// the drivers number their fillers' addresses from a base.
func NthAddr(base netip.Addr, i int) netip.Addr {
	if base.Is6() {
		a := base.As16()
		binary.BigEndian.PutUint32(a[12:], binary.BigEndian.Uint32(a[12:])+uint32(i))
		return netip.AddrFrom16(a)
	}
	a := base.As4()
	binary.BigEndian.PutUint32(a[:], binary.BigEndian.Uint32(a[:])+uint32(i))
	return netip.AddrFrom4(a)
}
