package endpoint

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/model"
)

// uplinks are the interfaces that connect the node to the outside: those
// holding one of the node's addresses (from its Node object), and those
// of the default routes. Service frontends reached from outside the node
// (NodePort, externalIPs, LoadBalancer IPs) are translated there.
func uplinks(s *model.State, node string) (map[int]string, error) {
	out := map[int]string{}
	want := map[netip.Addr]bool{}
	if n, ok := s.Nodes[node]; ok {
		for _, a := range n.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				want[ip] = true
			}
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		// A pod bridge may hold a node-side address (the pods' gateway):
		// it is not an uplink. (Veths can be: a node in a namespace, or a
		// VM's uplink, is a veth too; pod veths hold no node address.)
		if l.Type() == "bridge" {
			continue
		}
		addrs, err := netlink.AddrList(l, unix.AF_INET)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && want[ip] {
				out[l.Attrs().Index] = l.Attrs().Name
			}
		}
	}
	routes, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.LinkIndex != 0 {
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil && l.Type() != "bridge" {
				out[r.LinkIndex] = l.Attrs().Name
			}
		}
	}
	return out, nil
}

// reconcileUplinks attaches the uplink programs where they belong and
// removes them where an interface stopped being an uplink.
func (m *Manager) reconcileUplinks(s *model.State) error {
	want, err := uplinks(s, m.opts.NodeName)
	if err != nil {
		return err
	}
	var errs []error
	for idx, name := range want {
		if m.uplinks[idx] {
			continue
		}
		if err := m.opts.Attacher.AttachUplink(idx); err != nil {
			errs = append(errs, fmt.Errorf("uplink %s: %w", name, err))
			continue
		}
		m.uplinks[idx] = true
		m.log.Info("uplink attached", "interface", name, "ifindex", idx)
	}
	for idx := range m.uplinks {
		if _, ok := want[idx]; !ok {
			_ = m.opts.Attacher.DetachUplink(idx)
			delete(m.uplinks, idx)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%v", errs)
	}
	return nil
}
