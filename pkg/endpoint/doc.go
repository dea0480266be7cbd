// Package endpoint turns the node's local pods into datapath endpoints.
//
// For every pod scheduled on this node (not hostNetwork, not finished, with
// an IP) it finds the pod's host-side interface from the pod IP, writes the
// endpoint into sl_endpoints and attaches the endpoint programs there:
//
//   - routed veth CNIs (Calico, kindnet/ptp): the /32 route to the pod IP
//     points at the veth;
//   - bridge CNIs (flannel's cni0): the route points at the bridge; the
//     pod's MAC comes from the bridge's neighbour entry for the pod IP
//     (resolution is triggered if there is none yet), and the bridge port
//     that has learned that MAC is the pod's interface.
//
// Netlink link, route and neighbour notifications and model changes only
// mark work; one loop reconciles desired endpoints with the kernel, in full,
// on every pass and on a periodic resync that also prunes what belongs to
// pods that are gone (entries, links, filters, CT entries).
package endpoint
