// Package l7 is the compiled form of Sluice's L7 policy (SluiceL7Policy):
// the proxy listeners of a node and the HTTP rules each enforces.
//
// The kernel classifies and the node's shared Envoy enforces. A connection
// whose destination port carries L7 rules gets the redirect verdict, with a
// proxy port, in the destination endpoint's policy map; the datapath hands
// it to the listener on that port with bpf_sk_assign. Each distinct set of
// rules that applies to a set of peers gets its own port, so Envoy never
// learns pod identities and pod churn touches only BPF maps.
//
// The package is pure data and computation without I/O: the policy
// compiler produces a Config, the xDS generator (pkg/xds) turns it into
// Envoy resources, and flows and `sluice policy get` name rules by their
// RuleRef.
package l7
