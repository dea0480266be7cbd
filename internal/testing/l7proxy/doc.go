// Package l7proxy is a small transparent proxy that stands in for the
// node's Envoy where no Envoy binary can run: the end-to-end tests and
// `make demo`. It is a test double, not a proxy to deploy.
//
// Like Envoy configured by the agent, it follows the node's compiled L7
// policy (l7.Config, polled from the agent's local API as Envoy follows
// xDS) and listens, IP_TRANSPARENT, on 127.0.0.1 at each listener's port,
// where the datapath hands redirected connections over with
// bpf_sk_assign. For each connection it reports the client's address and
// the original destination as its socket shows them, opens its own
// connection to that destination with the socket mark the datapath admits
// (datapath.MarkFromProxy), and relays the bytes both ways.
//
// With HTTP set it also stands in for Envoy's HTTP filters, for the first
// request of each connection only: the listener's rules decide it as the
// RBAC filter would (method and host as whole-value RE2 expressions, path
// exact, prefix or RE2, headers), a matching request is relayed, any other
// answered 403 ("RBAC: access denied"), or relayed and reported as denied
// in audit mode. JWT and rate limits are not enforced here: they are
// Envoy's alone. make test-envoy runs the L7 end-to-end tests with a real
// Envoy, but none of them exercises JWT or rate limits yet.
package l7proxy
