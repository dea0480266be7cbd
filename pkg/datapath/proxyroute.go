package datapath

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
)

// Marks the datapath sets or trusts on packets of the node's L7 proxy
// (sl_mark in bpf/include/sluice/types.h).
const (
	// MarkToProxy is on packets handed to the proxy's socket.
	MarkToProxy = uint32(bpfobj.EndpointSlMarkSL_MARK_TO_PROXY)
	// MarkFromProxy is the socket mark the proxy's upstream connections
	// must carry (Envoy: the cluster's upstream_bind_config socket option
	// SO_MARK): the destination's endpoint admits them.
	MarkFromProxy = uint32(bpfobj.EndpointSlMarkSL_MARK_FROM_PROXY)
)

// ProxyRouteTable and ProxyRulePriority are the policy routing that
// delivers packets handed to the proxy to the local stack: bpf_sk_assign
// names the socket, but the packet's destination is a pod, so without a
// local route the stack would forward it (TPROXY needs the same). The rule
// sits before the main table's (32766).
const (
	ProxyRouteTable   = 0x51ce
	ProxyRulePriority = 9
)

// EnsureProxyRouting installs, in the calling thread's network namespace,
// the rule "fwmark MarkToProxy lookup ProxyRouteTable" and that table's
// route "local 0.0.0.0/0 dev lo". Idempotent; what a previous agent left
// is kept (the datapath keeps working across restarts).
func EnsureProxyRouting() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("proxy routing: find lo: %w", err)
	}
	_, all, _ := net.ParseCIDR("0.0.0.0/0")
	route := &netlink.Route{
		LinkIndex: lo.Attrs().Index, Dst: all, Table: ProxyRouteTable,
		Type: unix.RTN_LOCAL, Scope: netlink.SCOPE_HOST, Family: unix.AF_INET,
	}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("proxy routing: route local 0.0.0.0/0 dev lo table %d: %w", ProxyRouteTable, err)
	}
	rules, err := netlink.RuleList(unix.AF_INET)
	if err != nil {
		return fmt.Errorf("proxy routing: list rules: %w", err)
	}
	for _, r := range rules {
		if r.Table == ProxyRouteTable && r.Mark == MarkToProxy {
			return nil
		}
	}
	rule := netlink.NewRule()
	rule.Family = unix.AF_INET
	rule.Priority = ProxyRulePriority
	rule.Mark = MarkToProxy
	mask := ^uint32(0)
	rule.Mask = &mask
	rule.Table = ProxyRouteTable
	if err := netlink.RuleAdd(rule); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("proxy routing: rule fwmark %#x lookup %d: %w", MarkToProxy, ProxyRouteTable, err)
	}
	return nil
}

// RemoveProxyRouting removes what EnsureProxyRouting installed (uninstall).
func RemoveProxyRouting() error {
	var errs []error
	rules, err := netlink.RuleList(unix.AF_INET)
	if err != nil {
		return fmt.Errorf("proxy routing: list rules: %w", err)
	}
	for i := range rules {
		if rules[i].Table == ProxyRouteTable {
			errs = append(errs, netlink.RuleDel(&rules[i]))
		}
	}
	routes, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: ProxyRouteTable}, netlink.RT_FILTER_TABLE)
	errs = append(errs, err)
	for i := range routes {
		errs = append(errs, netlink.RouteDel(&routes[i]))
	}
	return errors.Join(errs...)
}

// SetProxyRedirects tells the datapath how many local endpoints have a
// policy that redirects to the node's proxy: while none has, the uplink
// programs do not look for connections to hand over.
func (m *Maps) SetProxyRedirects(n uint32) error {
	if m.Proxy == nil {
		return errors.New("sl_proxy is not open")
	}
	if err := m.Proxy.Put(uint32(0), &bpfobj.EndpointSlProxyState{RedirectingEndpoints: n}); err != nil {
		return fmt.Errorf("write sl_proxy: %w", err)
	}
	return nil
}
