// Package observer serves a node's flows over Hubble's Observer gRPC API
// (github.com/cilium/cilium/api/v1/observer), so `hubble observe`,
// `hubble status` and `hubble list nodes` work against a Sluice agent:
//
//	hubble observe --server unix:///var/run/sluice/hubble.sock --follow --pod shop/web
//
// The server reads a pkg/flow Store, whose datapath records it filters as
// records (flow.View) and sends without building flows: each response is
// written from its record in the flow's wire encoding, the endpoints,
// services and policies records share encoded once (a codec of the
// server's sends those bytes as they are); a request with a field mask
// gets built flows, masked. GetFlows implements Hubble's request
// semantics (number, first, follow, since/until, whitelist/blacklist flow
// filters, field masks); the filter compiler accepts the FlowFilter fields
// Sluice flows can answer, the HTTP fields and trace IDs of the node
// proxy's L7 flows included, and rejects the others (DNS, FQDN, CEL)
// with InvalidArgument rather than silently returning nothing.
// ServerStatus and GetNodes report the single node. The standard gRPC
// health service runs on the same server. Listening is plaintext on a
// unix socket (mode 0660, group Config.SocketGroup) and, optionally, a TCP address.
package observer
