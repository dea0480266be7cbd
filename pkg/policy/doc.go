// Package policy compiles Kubernetes NetworkPolicy (networking.k8s.io/v1),
// ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) and
// SluiceL7Policy into the policy map contents of each endpoint (pod) on
// this node.
//
// It exists so that policy semantics live in pure Go, testable with struct
// literals, while the datapath only does lookups: an Engine takes model
// changes and returns, per local endpoint, sorted and deduplicated Entries
// (identity × direction × protocol × port prefix → verdict and deciding
// rule) and CIDR LPM entries, plus the ipcache (address → identity) deltas.
// The lookup the datapath does with them is described on Entry.
//
// # Semantics
//
//   - An endpoint is enforced in a direction when some policy in its
//     namespace selects it (podSelector) and covers the direction
//     (policyTypes, which the model has already defaulted). Rules of all such
//     policies are unioned; a covering policy without rules denies.
//   - Empty from/to is any peer (identity 0, which matches the world too);
//     empty ports is any protocol and port.
//   - Selector peers (podSelector in the policy's namespace, namespaceSelector,
//     both ANDed; matchLabels and matchExpressions; empty selects all) become
//     entries per selected identity, through the identity.SelectorCache.
//   - ipBlock peers are matched on addresses, not identities, as Kubernetes
//     requires (they apply to pod and node addresses too): every cidr and
//     except of an endpoint's rules becomes a prefix of its CIDR LPM, mapped
//     to a CIDR class whose entries carry the ports of the rules matching
//     that prefix (see builder.compileCIDRs).
//   - Ports: TCP, UDP and SCTP by number, a protocol alone (all its ports),
//     endPort ranges as the fewest port prefixes, and named ports. An ingress
//     name resolves against the endpoint's own container ports. An egress
//     name resolves against each destination pod: pods sharing an identity
//     can give one name different numbers, so those become /32 (or /128)
//     CIDR entries per destination address, in classes that also carry any
//     ipBlock rules covering the address. A name that resolves nowhere, an
//     unknown protocol or an inverted range matches nothing.
//   - When ingress is enforced, traffic from this node (identity Host) is
//     always allowed, as Kubernetes requires for kubelet probes; the entry
//     carries RuleHostAllow.
//   - Audit mode comes from Options.Audit or the namespace annotation AuditAnnotation
//     (the model keeps no namespace annotations).
//   - An endpoint needing more than Options.MaxEntriesPerEndpoint entries
//     gets EndpointPolicy.Overflow, and the datapath denies it.
//
// # ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2, cluster.go)
//
// A direction of an endpoint that some ClusterNetworkPolicy rule applies
// to is compiled with tiers: Admin rules by priority, then NetworkPolicy,
// then Baseline, decided here for every peer bucket (identity, CIDR class,
// any peer) and port interval, and written as final Allow or Deny entries
// naming the deciding rule, so the datapath keeps its one lookup per new
// connection. See cluster.go for why the buckets' entries are complete and
// equally long, and how Pass falls through. On a pod with both
// SluiceL7Policy ports and tiered ingress, what the tiers allow on an L7
// port becomes a Redirect to the peer's listener in every bucket; the
// entries of a tiered direction are written with SL_POLICY_F_TIERED, so
// the datapath ranks them by peer alone and an any-peer Redirect cannot
// outrank an identity's Deny of the same length.
//
// # L7 policy (SluiceL7Policy, l7.go)
//
// NetworkPolicy decides first; L7 rules never admit a peer it denies. On
// an endpoint port with L7 port entries, every peer NetworkPolicy admits
// there gets a Redirect entry (an exact port, so it decides the port)
// with the proxy port of a listener: the union of the entries whose from
// selects the peer's identity (an entry without from applies to every
// peer), or, when none does, a listener that denies every request. Peers
// admitted as any peer get identity 0's entry (the entries without from)
// plus one per identity whose entries differ; peers admitted through an
// ipBlock (CIDR classes) are matched as the world is. Each distinct rule
// set (endpoint port, entries, audit) is one listener, with a proxy port
// from Options.ProxyPorts that stays its own while in use (and across
// restarts, saved by the caller); L7Config is the listeners with their
// rules, the xDS generator's input. A pod no NetworkPolicy covers is
// enforced all the same, with an allow-all entry (RuleL7Open), so that its
// L7 ports fail closed when reached around the proxy. This node's own
// connections are not handed over: they keep the host-allow entry, except
// on a port NetworkPolicy opens to any peer, where the any-peer redirect
// is longer and they fail closed.
//
// # Incremental recomputation
//
// Apply first updates its copy of the model, then:
//
//   - Pods (and every pod of a namespace whose labels changed) get their
//     identity: a pod whose label set already has an identity just joins
//     it, and only the ipcache changes. A label set seen for the first time
//     is a new identity, evaluated once against the selectors that can
//     select it; the last pod leaving an identity removes it from the
//     selectors holding it. Selectors whose selection changed mark the
//     endpoints of the policies using them.
//   - A changed pod that is a local endpoint (before or after) is marked.
//     A pod whose identity, addresses or ports changed marks the endpoints
//     of policies whose named-port egress rules select it (before or after).
//   - A changed policy marks the endpoints it applied to and those it
//     applies to now; its selectors are acquired in the cache (shared with
//     other policies with equal selectors) and rule IDs kept per rule.
//   - Nodes change only the ipcache.
//
// Only marked endpoints are recomputed, each from the cached selections, and
// reported when the result differs. Any sequence of Apply calls leaves the
// engine as a single Apply of the final state would, up to the numbering of
// identities and rule IDs, which depends on history (see the tests).
package policy
