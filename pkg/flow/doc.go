// Package flow turns datapath events into Hubble flows
// (github.com/cilium/cilium/api/v1/flow) and keeps the most recent ones in a
// bounded in-memory store that the observer API (pkg/observer) serves.
//
// A Converter enriches each event at the moment the agent reads it, through
// an Enricher (endpoint by ID, by IP and by cgroup, identity labels,
// service by frontend ID, policy rule by rule ID; pkg/flow/enrich builds
// the agent's from narrow lookups into its parts). What
// it finds is kept by reference: each distinct end (a pod with the labels
// and identity it showed), service and rule becomes one immutable value,
// made once and shared by every record that has it, so the store keeps
// the datapath's fixed-size record plus a few pointers (a Record, about
// 240 bytes, however many labels the pods carry) and reading and storing
// an event allocates nothing. A pod deleted a second later keeps its
// name, labels and workload in the records it already has. The Hubble
// flow is built from the record when a client reads it (Record.Build),
// and filters read records without building them (View).
//
// Field choices follow Hubble's own parser (cilium pkg/hubble/parser) so
// that `hubble observe` prints Sluice flows as it prints Cilium's:
//
//	datapath event             event_type      Type    verdict
//	trace, no policy applied   4 (trace)       L3_L4   FORWARDED
//	trace, policy applied      5 (policy-vd.)  L3_L4   FORWARDED / REDIRECTED / AUDIT
//	drop                       1 (drop)        L3_L4   DROPPED
//	translate (socket LB)      7 (trace-sock)  SOCK    TRANSLATED
//
// The monitor message type numbers are Cilium's (pkg/monitor/api:
// MessageTypeDrop 1, MessageTypeTrace 4, MessageTypePolicyVerdict 5,
// MessageTypeTraceSock 7), which Hubble's printers and its --type filter
// use. The datapath emits one event per new connection, so a connection
// that policy decided is reported once, as a policy verdict, rather than
// as Cilium's pair of policy-verdict and trace events.
//
// is_reply is false on new connections and their ends; on a drop it says
// whether conntrack had placed the packet in the reply direction of its
// connection (unset when the drop came before the lookup). A reply keeps
// the packet's own source and destination, and traffic_direction is the
// connection's, as in Hubble: a dropped reply into a client pod is EGRESS.
//
// What Hubble's flow has no field for goes into flow.extensions (a
// google.protobuf.Struct): the frontend a translated connection's client
// addressed, "original_destination" (see OriginalDestination), so that
// `sluice map` shows the service port beside the backend's.
//
// The node's proxy reports each HTTP request it handled in its access log
// (pkg/xds/als reads Envoy's over the gRPC access log service);
// Converter.HTTP makes it an L7 flow as Cilium's Hubble shows one
// (event type 129, L7 type RESPONSE with code and latency), both ends
// resolved by the same Enricher as the datapath's events, with the
// connection's addresses and ports so that Hubble's --ip and --port
// filters show it beside the connection's L4 flow. Refusals are DROPPED
// with a drop reason apiece (POLICY_DENIED, DROP_RATE_LIMITED,
// AUTH_REQUIRED for JWT) and the "l7" extension names the proxy's verdict,
// the deciding rule and the listener (see L7Verdict). L7 flows are few
// beside the datapath's and are stored prebuilt (Store.Add).
//
// The Store is a ring of Entries (records, prebuilt flows and lost-event
// notices), allocated when the store is made, that never blocks its
// writer: followers read by sequence number and learn how many entries
// were overwritten before they read them.
package flow
