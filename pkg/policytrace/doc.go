// Package policytrace answers `sluice policy trace`: what happens to one
// new connection, from the agent's live state.
//
// A Tracer resolves the two ends (pods, addresses, a service by name or
// address), translates a service as the datapath would (the frontend and
// the backends taking new connections, from the service model and from
// the LB maps, which must agree), and decides each path to a backend as
// the datapath does: the client endpoint's egress policy, then the
// server endpoint's ingress policy, each with the peer's identity as that
// endpoint's node sees it. Each decision names the deciding object, rule
// and entry, or default-deny.
//
// The model's decisions come from pkg/policy (the same Engine the policy
// reconciler writes the maps from; pods of other nodes are computed from
// it as their own agent computes them). For this node's endpoints the
// trace then asks the datapath's own maps, through pkg/datapath's typed
// lookups: the endpoint's flags, the peer's ipcache entry and the policy
// trie's longest match. Every difference between the two is a Problem:
// the maps are what packets meet, so a trace never papers over them.
//
// WhatIf evaluates a manifest of NetworkPolicies that is not applied:
// an engine built from the model with the manifest's policies added (or
// replacing those of the same name) judges the connections of the flow
// store, and the ones it would deny are reported in groups, with the
// trace's answer under the manifest beside the live one.
package policytrace
