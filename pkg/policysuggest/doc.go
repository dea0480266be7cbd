// Package policysuggest writes least-privilege Kubernetes NetworkPolicies
// from observed flows (`sluice policy suggest`): what each workload was
// seen to accept and to open, and nothing else.
//
// Flows are read as connections (flow.ConnectionOf: forwarded, audited or
// redirected, client to server; the several flows of one connection
// count once). Each pod end is grouped into its workload: by the
// controller the flow names (Deployment, StatefulSet, ...), else by its
// labels; never by pod name. A workload is selected by the labels all its
// observed pods share, without those a controller sets per pod or per
// revision (pod-template-hash, controller-revision-hash,
// statefulset.kubernetes.io/pod-name, ...) and without the namespace
// labels Hubble adds. The same selector, with a namespaceSelector on
// kubernetes.io/metadata.name, names it as a peer.
//
// Every workload of the chosen namespaces that was seen at either end of
// a connection gets one policy covering Ingress and Egress: an ingress
// rule per client workload and an egress rule per server workload, with
// exactly the ports (number and protocol) seen, the server's own port for
// a connection through a service, as Kubernetes judges egress on the
// backend. A direction with nothing observed is left with no rules:
// denied. Peers that are not pods (world, other nodes, the node itself)
// become ipBlocks of their addresses, /32 (or /128) each; when one rule
// would list more than Options.MaxAddresses of them, they are aggregated
// into the fewest /24 (IPv6 /64) prefixes, widened to /16 and /8 (/48,
// /32) until they fit, and the rule's comment says so. The node's own
// connections into its pods (kubelet probes) are always allowed by
// Sluice and get no rule. DNS is kept: a rule that allows port 53 over
// UDP or TCP allows it over both, as resolvers retry truncated answers
// over TCP.
//
// Each rule carries a comment naming the connections that justify it:
// per port, how many, first and last seen, and an example. With Audit the
// output starts with each namespace annotated sluice.io/policy-audit, so
// that the policies report what they would deny (`sluice observe
// --verdict AUDIT`) before they are enforced.
package policysuggest
