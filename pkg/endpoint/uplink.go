package endpoint

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/model"
)

// uplink is an interface that connects the node to the outside.
type uplink struct {
	name string
	// snat and snat6 are the addresses external connections leaving
	// through it toward a remote backend are source-translated to, per
	// family: a node address it holds, else its first global address of
	// the family (invalid if it has none).
	snat, snat6 netip.Addr
}

// set records ip as the uplink's address of its family, unless it has one.
func (u *uplink) set(ip netip.Addr) {
	if ip.Is4() && !u.snat.IsValid() {
		u.snat = ip
	} else if ip.Is6() && !u.snat6.IsValid() {
		u.snat6 = ip
	}
}

// uplinks are the interfaces that connect the node to the outside: those
// holding one of the node's addresses (from its Node object), and those
// of the default routes of either family. Service frontends reached from
// outside the node (NodePort, externalIPs, LoadBalancer IPs) are
// translated there.
func uplinks(s *model.State, node string) (map[int]uplink, error) {
	out := map[int]uplink{}
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
	first := map[int]uplink{} // each link's first global address per family
	for _, l := range links {
		// A pod bridge may hold a node-side address (the pods' gateway):
		// it is not an uplink. (Veths can be: a node in a namespace, or a
		// VM's uplink, is a veth too; pod veths hold no node address.)
		if l.Type() == "bridge" {
			continue
		}
		addrs, err := netlink.AddrList(l, unix.AF_UNSPEC)
		if err != nil {
			continue
		}
		idx := l.Attrs().Index
		f := uplink{name: l.Attrs().Name}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if a.Scope == unix.RT_SCOPE_UNIVERSE {
				f.set(ip)
			}
			if want[ip] {
				u := out[idx]
				u.name = l.Attrs().Name
				u.set(ip)
				out[idx] = u
			}
		}
		first[idx] = f
	}
	// An uplink that holds a node address of one family translates the
	// other to its first global address of that family.
	for idx, u := range out {
		u.set(first[idx].snat)
		u.set(first[idx].snat6)
		out[idx] = u
	}
	routes, err := netlink.RouteListFiltered(unix.AF_UNSPEC, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.LinkIndex != 0 {
			if _, ok := out[r.LinkIndex]; ok {
				continue
			}
			if f, ok := first[r.LinkIndex]; ok {
				out[r.LinkIndex] = f
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
	for idx, u := range want {
		if have, ok := m.uplinks[idx]; ok && have == u {
			continue
		}
		// The address first, so the programs never see the uplink without it.
		if u.snat.IsValid() || u.snat6.IsValid() {
			if err := m.opts.Maps.PutUplink(uint32(idx), u.snat, u.snat6); err != nil {
				errs = append(errs, fmt.Errorf("uplink %s: %w", u.name, err))
				continue
			}
		} else if err := m.opts.Maps.DeleteUplink(uint32(idx)); err != nil {
			errs = append(errs, fmt.Errorf("uplink %s: %w", u.name, err))
		}
		if _, ok := m.uplinks[idx]; !ok {
			if err := m.opts.Attacher.AttachUplink(idx); err != nil {
				errs = append(errs, fmt.Errorf("uplink %s: %w", u.name, err))
				continue
			}
			m.log.Info("uplink attached", "interface", u.name, "ifindex", idx, "snatAddress", u.snat, "snatAddress6", u.snat6)
		}
		m.uplinks[idx] = u
	}
	for idx := range m.uplinks {
		if _, ok := want[idx]; !ok {
			_ = m.opts.Attacher.DetachUplink(idx)
			_ = m.opts.Maps.DeleteUplink(uint32(idx))
			delete(m.uplinks, idx)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%v", errs)
	}
	return nil
}
