package endpoint

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// errNoInterface means the pod's interface is not (yet) on this node.
var errNoInterface = errors.New("no interface for the pod IP on this node yet")

// hostInterface finds the host-side interface of the pod with address ip.
func hostInterface(ip netip.Addr) (netlink.Link, error) {
	routes, err := netlink.RouteGet(ip.AsSlice())
	if err != nil {
		return nil, fmt.Errorf("route lookup for %s: %w", ip, err)
	}
	if len(routes) == 0 || routes[0].LinkIndex == 0 {
		return nil, errNoInterface
	}
	r := routes[0]
	// A route via a gateway leads off the node: the pod is not here (yet).
	if r.Gw != nil {
		return nil, errNoInterface
	}
	l, err := netlink.LinkByIndex(r.LinkIndex)
	if err != nil {
		return nil, fmt.Errorf("link %d for %s: %w", r.LinkIndex, ip, err)
	}
	switch l.Type() {
	case "veth", "netkit":
		return l, nil
	case "bridge":
		return bridgePort(l, ip)
	default:
		return nil, errNoInterface
	}
}

// bridgePort finds the port of bridge br behind which the pod with ip sits.
func bridgePort(br netlink.Link, ip netip.Addr) (netlink.Link, error) {
	mac, err := neighbourMAC(br, ip)
	if err != nil {
		return nil, err
	}
	fdb, err := netlink.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		return nil, fmt.Errorf("list bridge fdb: %w", err)
	}
	for _, n := range fdb {
		if n.MasterIndex != br.Attrs().Index || n.LinkIndex == br.Attrs().Index {
			continue
		}
		if n.Flags&netlink.NTF_SELF != 0 || n.State&netlink.NUD_PERMANENT != 0 {
			// The port's own address, not one learned from the pod side.
			continue
		}
		if n.HardwareAddr.String() == mac.String() {
			return netlink.LinkByIndex(n.LinkIndex)
		}
	}
	return nil, fmt.Errorf("%w: bridge %s has not learned %s (pod %s) on any port", errNoInterface, br.Attrs().Name, mac, ip)
}

// neighbourMAC returns the pod's MAC from the bridge's neighbour table. If
// the kernel has no usable entry it asks for resolution (an ARP request on
// the bridge, like any first packet to the pod would cause) and reports
// errNoInterface; the neighbour notification that follows retriggers us.
func neighbourMAC(br netlink.Link, ip netip.Addr) (net.HardwareAddr, error) {
	neighs, err := netlink.NeighList(br.Attrs().Index, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list neighbours on %s: %w", br.Attrs().Name, err)
	}
	for _, n := range neighs {
		if !n.IP.Equal(ip.AsSlice()) || len(n.HardwareAddr) == 0 {
			continue
		}
		if n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) != 0 {
			continue
		}
		return n.HardwareAddr, nil
	}
	// NTF_USE makes the kernel treat the entry as used and resolve it.
	err = netlink.NeighSet(&netlink.Neigh{
		LinkIndex: br.Attrs().Index, Family: unix.AF_INET, IP: ip.AsSlice(),
		State: netlink.NUD_NONE, Flags: netlink.NTF_USE,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: resolving %s on %s: %v", errNoInterface, ip, br.Attrs().Name, err)
	}
	return nil, fmt.Errorf("%w: resolving %s on %s", errNoInterface, ip, br.Attrs().Name)
}
