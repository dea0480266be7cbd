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

// resolver finds pods' interfaces for one reconcile pass. The bridge
// tables are read at most once per pass, not once per pod.
type resolver struct {
	fdb    []netlink.Neigh
	fdbErr error
	fdbOK  bool
	neighs map[neighKey][]netlink.Neigh
}

type neighKey struct {
	ifindex int
	family  int
}

func newResolver() *resolver { return &resolver{neighs: map[neighKey][]netlink.Neigh{}} }

func family(ip netip.Addr) int {
	if ip.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func (r *resolver) bridgeFDB() ([]netlink.Neigh, error) {
	if !r.fdbOK {
		r.fdb, r.fdbErr = netlink.NeighList(0, unix.AF_BRIDGE)
		r.fdbOK = true
	}
	return r.fdb, r.fdbErr
}

func (r *resolver) bridgeNeighs(br netlink.Link, fam int) ([]netlink.Neigh, error) {
	k := neighKey{br.Attrs().Index, fam}
	if n, ok := r.neighs[k]; ok {
		return n, nil
	}
	n, err := netlink.NeighList(k.ifindex, fam)
	if err == nil {
		r.neighs[k] = n
	}
	return n, err
}

// hostInterface finds the host-side interface of the pod with address ip.
func (r *resolver) hostInterface(ip netip.Addr) (netlink.Link, error) {
	routes, err := netlink.RouteGet(ip.AsSlice())
	if err != nil {
		return nil, fmt.Errorf("route lookup for %s: %w", ip, err)
	}
	if len(routes) == 0 || routes[0].LinkIndex == 0 {
		return nil, errNoInterface
	}
	route := routes[0]
	// A route via a gateway leads off the node: the pod is not here (yet).
	if route.Gw != nil {
		return nil, errNoInterface
	}
	l, err := netlink.LinkByIndex(route.LinkIndex)
	if err != nil {
		return nil, fmt.Errorf("link %d for %s: %w", route.LinkIndex, ip, err)
	}
	switch l.Type() {
	case "veth", "netkit":
		return l, nil
	case "bridge":
		return r.bridgePort(l, ip)
	default:
		return nil, errNoInterface
	}
}

// bridgePort finds the port of bridge br behind which the pod with ip sits.
func (r *resolver) bridgePort(br netlink.Link, ip netip.Addr) (netlink.Link, error) {
	mac, err := r.neighbourMAC(br, ip)
	if err != nil {
		return nil, err
	}
	fdb, err := r.bridgeFDB()
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
// the bridge, or a neighbour solicitation, like any first packet to the
// pod would cause) and reports
// errNoInterface; the neighbour notification that follows retriggers us.
func (r *resolver) neighbourMAC(br netlink.Link, ip netip.Addr) (net.HardwareAddr, error) {
	neighs, err := r.bridgeNeighs(br, family(ip))
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
		LinkIndex: br.Attrs().Index, Family: family(ip), IP: ip.AsSlice(),
		State: netlink.NUD_NONE, Flags: netlink.NTF_USE,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: resolving %s on %s: %v", errNoInterface, ip, br.Attrs().Name, err)
	}
	return nil, fmt.Errorf("%w: resolving %s on %s", errNoInterface, ip, br.Attrs().Name)
}
