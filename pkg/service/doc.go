// Package service computes the service load-balancing state one node should
// program, from the model: which (address, port, protocol) frontends exist,
// which backends each balances to, which of those take new connections, and
// Maglev lookup tables.
//
// It exists so that Kubernetes service semantics live in one pure function,
// Compute, testable with struct literals and no kernel, while the datapath
// reconciler only translates its output into BPF map entries: every list is
// sorted and every frontend and backend carries a stable ID (Allocator) that
// survives recomputation and agent restarts, so consecutive results diff
// cleanly.
//
// Compute recomputes every service. Incremental gives the identical result
// but keeps each service's part between calls and recomputes only the
// services whose Service or EndpointSlices changed (all services with node
// ports when the node's addresses change), and reports which frontends and
// backends changed, so that a reconciler can plan and write only those: at
// 10,000 services one changed EndpointSlice costs well under a millisecond
// instead of a Compute's few hundred. Compute stays the reference it is
// tested against.
//
// # kube-proxy parity
//
// Compute follows kube-proxy (pkg/proxy: ServiceChangeTracker,
// EndpointSliceCache, CategorizeEndpoints, and the iptables proxier's
// REJECT/DROP choices):
//
//   - ExternalName and headless services, and services without a cluster IP
//     of the family, get no frontends at all, not even external ones.
//   - Frontends: each cluster IP × service port; for NodePort and
//     LoadBalancer services each node address × node port, plus one wildcard
//     frontend (unspecified address) that a datapath may match against any
//     local address instead; spec.externalIPs × ports; load-balancer ingress
//     IPs × ports. TCP and UDP on one port number are separate frontends.
//   - Backends come from the EndpointSlices labelled with the service's name
//     in its namespace, of the frontend's address family, whether the service
//     has a selector or its slices are managed by hand. The backend port is
//     that of the slice port with the service port's name and protocol; only
//     an endpoint's first address is used; an address in several slices
//     counts once, preferring ready over serving-terminating over the rest.
//   - New connections go to ready endpoints; when there are none, to serving
//     and terminating ones (KEP-1669); when there are none of those either,
//     the frontend has NoEndpoints and the datapath refuses the connection.
//     Endpoints not selected but terminating or not ready stay listed, so
//     established connections finish, as they do with kube-proxy's
//     conntrack entries.
//   - internalTrafficPolicy Local restricts ClusterIP frontends, and
//     externalTrafficPolicy Local the other kinds, to this node's endpoints,
//     with the same ready → serving-terminating fallback among them. With no
//     local endpoint but remote ones, NoLocalEndpoints tells the datapath to
//     drop rather than reject (kube-proxy does the same), and
//     ClusterFrontendID lets it send traffic from this node's own pods and
//     host through the cluster path instead, as kube-proxy does.
//   - sessionAffinity ClientIP with its timeout is passed on per frontend.
//   - LoadBalancer services with externalTrafficPolicy Local get a
//     HealthCheck whose count is this node's ready endpoint addresses.
//   - Two frontends claiming one address, port and protocol (e.g. an external
//     IP equal to another service's cluster IP) are resolved in the order
//     ClusterIP, NodePort, LoadBalancer, ExternalIP, then by service name;
//     the loser is dropped with a warning, where kube-proxy would install
//     both rules and let rule order decide.
//
// IPv4 and IPv6 are computed alike, one family at a time as kube-proxy's
// two proxiers do: a dual-stack Service (clusterIPs of both families, an
// EndpointSlice of each addressType) is a frontend set per family, each
// balancing to the endpoints of its own family.
//
// Not (yet) implemented: topology-aware routing (zone hints,
// trafficDistribution). loadBalancerSourceRanges are passed on with the
// LoadBalancer frontends (Frontend.SourceRanges); the datapath enforces
// them. Some service fields are not in the model yet and are
// supplied through Options.Extras (see ServiceExtras).
//
// The algorithm is per service: the annotation sluice.io/lb-algorithm
// ("random" or "maglev"), else Options.DefaultAlgorithm.
package service
