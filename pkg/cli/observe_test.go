package cli_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluice-net/sluice/pkg/cli"
	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/observer"
)

// The handmade flows the observe and map tests read, in store order. Each
// flow's uuid is its name, so a test can tell which flows were printed.
//
//	web-db          default/web-0 -> shop/db-0:5432          TCP SYN   forwarded (trace from-endpoint)
//	web-orders      default/web-0 -> svc shop/orders:80 -> orders-7d:8080  allowed by shop/allow-web (policy verdict, ingress)
//	world-web       192.0.2.7 (world) -> default/web-0:80   dropped POLICY_DENIED (ingress)
//	web-dns         default/web-0 -> svc kube-system/kube-dns -> coredns:53 UDP forwarded
//	(3 events lost)
//	db-web-revoked  shop/db-0:5432 -> default/web-0:43512   dropped POLICY_REVOKED (Sluice's reason 1002), a reply of web-db
//	host-web        host 10.0.0.1 -> default/web-0:8080     forwarded (trace to-endpoint, on worker-2)
//	sock-orders     default/client-x -> svc shop/orders:80 -> orders-7d:8080 socket translation
//	client-orders   default/client-x -> orders-7d:8080      forwarded, no service on the packet
var (
	ft0 = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

	webPod    = ep("default", "web-0", "Deployment", "web", 300, "k8s:app=web")
	dbPod     = ep("shop", "db-0", "StatefulSet", "db", 310, "k8s:app=db")
	ordersPod = ep("shop", "orders-7d", "Deployment", "orders", 320, "k8s:app=orders")
	dnsPod    = ep("kube-system", "coredns-5d", "Deployment", "coredns", 330, "k8s:k8s-app=kube-dns")
	clientPod = ep("default", "client-x", "Deployment", "client", 340, "k8s:app=client")
	world     = &flowpb.Endpoint{Identity: 2, Labels: []string{"reserved:world"}}
	host      = &flowpb.Endpoint{Identity: 1, Labels: []string{"reserved:host"}}

	allFlows = []string{"web-db", "web-orders", "world-web", "web-dns", "db-web-revoked", "host-web", "sock-orders", "client-orders"}
)

func ep(ns, pod, kind, workload string, id uint32, labels ...string) *flowpb.Endpoint {
	return &flowpb.Endpoint{
		Namespace: ns, PodName: pod, Identity: id, Labels: labels,
		Workloads: []*flowpb.Workload{{Kind: kind, Name: workload}},
	}
}

func tcp(sport, dport uint32, flags *flowpb.TCPFlags) *flowpb.Layer4 {
	return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sport, DestinationPort: dport, Flags: flags}}}
}

func testFlows() []*flowpb.Flow {
	syn := &flowpb.TCPFlags{SYN: true}
	at := func(s int) *timestamppb.Timestamp { return timestamppb.New(ft0.Add(time.Duration(s) * time.Second)) }
	ip4 := func(src, dst string) *flowpb.IP {
		return &flowpb.IP{Source: src, Destination: dst, IpVersion: flowpb.IPVersion_IPv4}
	}
	notReply := wrapperspb.Bool(false)
	// Through a service: the frontend the client addressed.
	via := func(f *flowpb.Flow, frontend string) *flowpb.Flow {
		flow.SetOriginalDestination(f, netip.MustParseAddrPort(frontend))
		return f
	}
	return []*flowpb.Flow{
		{
			Uuid: "web-db", Time: at(1), NodeName: "worker-1", Verdict: flowpb.Verdict_FORWARDED,
			IP: ip4("10.244.1.5", "10.244.2.9"), L4: tcp(43512, 5432, syn), Source: webPod, Destination: dbPod,
			Type: flowpb.FlowType_L3_L4, EventType: &flowpb.CiliumEventType{Type: flow.MessageTypeTrace, SubType: 5},
			TraceObservationPoint: flowpb.TraceObservationPoint_FROM_ENDPOINT,
			TrafficDirection:      flowpb.TrafficDirection_EGRESS, IsReply: notReply, Summary: "TCP Flags: SYN",
		},
		via(&flowpb.Flow{
			Uuid: "web-orders", Time: at(2), NodeName: "worker-1", Verdict: flowpb.Verdict_FORWARDED,
			IP: ip4("10.244.1.5", "10.244.2.7"), L4: tcp(43514, 8080, syn), Source: webPod, Destination: ordersPod,
			DestinationService: &flowpb.Service{Namespace: "shop", Name: "orders"},
			Type:               flowpb.FlowType_L3_L4, EventType: &flowpb.CiliumEventType{Type: flow.MessageTypePolicyVerdict},
			PolicyMatchType: uint32(flow.MatchL3L4), TrafficDirection: flowpb.TrafficDirection_INGRESS, IsReply: notReply,
			IngressAllowedBy: []*flowpb.Policy{{Namespace: "shop", Name: "allow-web", Kind: "NetworkPolicy"}},
			Summary:          "TCP Flags: SYN",
		}, "10.96.0.20:80"),
		{
			Uuid: "world-web", Time: at(3), NodeName: "worker-1", Verdict: flowpb.Verdict_DROPPED,
			DropReason: 133, DropReasonDesc: flowpb.DropReason_POLICY_DENIED,
			IP: ip4("192.0.2.7", "10.244.1.5"), L4: tcp(5353, 80, syn), Source: world, Destination: webPod,
			Type: flowpb.FlowType_L3_L4, EventType: &flowpb.CiliumEventType{Type: flow.MessageTypeDrop, SubType: 133},
			TrafficDirection: flowpb.TrafficDirection_INGRESS, Summary: "TCP Flags: SYN",
		},
		via(&flowpb.Flow{
			Uuid: "web-dns", Time: at(4), NodeName: "worker-1", Verdict: flowpb.Verdict_FORWARDED,
			IP:     ip4("10.244.1.5", "10.244.1.6"),
			L4:     &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: 40001, DestinationPort: 53}}},
			Source: webPod, Destination: dnsPod, DestinationService: &flowpb.Service{Namespace: "kube-system", Name: "kube-dns"},
			Type: flowpb.FlowType_L3_L4, EventType: &flowpb.CiliumEventType{Type: flow.MessageTypeTrace, SubType: 5},
			TrafficDirection: flowpb.TrafficDirection_EGRESS, IsReply: notReply, Summary: "UDP",
		}, "10.96.0.10:53"),
		{
			Uuid: "db-web-revoked", Time: at(5), NodeName: "worker-1", Verdict: flowpb.Verdict_DROPPED,
			DropReason: 1002, IP: ip4("10.244.2.9", "10.244.1.5"), L4: tcp(5432, 43512, &flowpb.TCPFlags{RST: true, ACK: true}),
			Source: dbPod, Destination: webPod,
			Type: flowpb.FlowType_L3_L4, EventType: &flowpb.CiliumEventType{Type: flow.MessageTypeDrop, SubType: 1002},
			TrafficDirection: flowpb.TrafficDirection_EGRESS, IsReply: wrapperspb.Bool(true), Reply: true,
			Summary: "POLICY_REVOKED; TCP Flags: ACK, RST",
		},
		{
			Uuid: "host-web", Time: at(6), NodeName: "worker-2", Verdict: flowpb.Verdict_FORWARDED,
			IP: ip4("10.0.0.1", "10.244.1.5"), L4: tcp(51000, 8080, syn), Source: host, Destination: webPod,
			Type: flowpb.FlowType_L3_L4, EventType: &flowpb.CiliumEventType{Type: flow.MessageTypeTrace, SubType: 0},
			TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT,
			TrafficDirection:      flowpb.TrafficDirection_INGRESS, IsReply: notReply, Summary: "TCP Flags: SYN",
		},
		via(&flowpb.Flow{
			Uuid: "sock-orders", Time: at(7), NodeName: "worker-1", Verdict: flowpb.Verdict_TRANSLATED,
			IP: ip4("10.244.1.8", "10.244.2.7"), L4: tcp(0, 8080, nil), Source: clientPod, Destination: ordersPod,
			DestinationService: &flowpb.Service{Namespace: "shop", Name: "orders"},
			Type:               flowpb.FlowType_SOCK, SockXlatePoint: flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_POST_DIRECTION_FWD,
			EventType: &flowpb.CiliumEventType{Type: flow.MessageTypeTraceSock,
				SubType: int32(flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_POST_DIRECTION_FWD)},
			TrafficDirection: flowpb.TrafficDirection_EGRESS, Summary: "TCP to service 10.96.0.20:80",
		}, "10.96.0.20:80"),
		{
			Uuid: "client-orders", Time: at(8), NodeName: "worker-1", Verdict: flowpb.Verdict_FORWARDED,
			IP: ip4("10.244.1.8", "10.244.2.7"), L4: tcp(40000, 8080, syn), Source: clientPod, Destination: ordersPod,
			Type: flowpb.FlowType_L3_L4, EventType: &flowpb.CiliumEventType{Type: flow.MessageTypeTrace, SubType: 5},
			TrafficDirection: flowpb.TrafficDirection_EGRESS, IsReply: notReply, Summary: "TCP Flags: SYN",
		},
	}
}

// fakeObserver serves the test flows, with 3 events lost after the
// fourth, over the observer API on <dir>/hubble.sock, as the agent does in
// its --state-dir. It returns dir and the store, to add flows to.
func fakeObserver(t *testing.T) (string, *flow.Store) {
	t.Helper()
	return serveFlows(t, testFlows(), 3)
}

// serveFlows serves flows over the observer API in a new state
// directory, with 3 events lost after the flow at lostAfter (-1: none).
func serveFlows(t *testing.T, flows []*flowpb.Flow, lostAfter int) (string, *flow.Store) {
	t.Helper()
	store, err := flow.NewStore(100)
	require.NoError(t, err)
	for i, f := range flows {
		store.Add(f)
		if i == lostAfter {
			store.AddLost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 3)
		}
	}
	dir := t.TempDir()
	srv, err := observer.Start(observer.Config{SocketPath: filepath.Join(dir, observer.DefaultSocketName), NodeName: "worker-1"}, store, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, srv.Close()) })
	return dir, store
}

// printedFlows runs observe -o json and returns the uuids of the flows it
// printed, in order.
func printedFlows(t *testing.T, dir string, args ...string) []string {
	t.Helper()
	out, err := run(t, append([]string{"--state-dir", dir, "observe", "-o", "json"}, args...)...)
	require.NoError(t, err)
	var got []string
	for line := range strings.Lines(out) {
		if strings.HasPrefix(line, `{"lost_events"`) {
			continue
		}
		var f flowpb.Flow
		require.NoError(t, protojson.Unmarshal([]byte(line), &f), line)
		got = append(got, f.GetUuid())
	}
	return got
}

// Each filter flag selects exactly the flows `hubble observe` would with
// the same command line.
func TestObserveFilters(t *testing.T) {
	dir, _ := fakeObserver(t)
	except := func(names ...string) []string {
		return slices.DeleteFunc(slices.Clone(allFlows), func(n string) bool { return slices.Contains(names, n) })
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, allFlows},
		{[]string{"--pod", "web"}, except("sock-orders", "client-orders")},
		{[]string{"--pod", "default/web-0"}, except("sock-orders", "client-orders")},
		{[]string{"--from-pod", "web"}, []string{"web-db", "web-orders", "web-dns"}},
		{[]string{"--to-pod", "web"}, []string{"world-web", "db-web-revoked", "host-web"}},
		{[]string{"--pod", "shop/"}, []string{"web-db", "web-orders", "db-web-revoked", "sock-orders", "client-orders"}},
		{[]string{"--namespace", "shop"}, []string{"web-db", "web-orders", "db-web-revoked", "sock-orders", "client-orders"}},
		{[]string{"-n", "kube-system", "-n", "shop"}, []string{"web-db", "web-orders", "web-dns", "db-web-revoked", "sock-orders", "client-orders"}},
		{[]string{"--from-namespace", "shop"}, []string{"db-web-revoked"}},
		{[]string{"--to-namespace", "kube-system"}, []string{"web-dns"}},
		{[]string{"--pod", "client", "--namespace", "default"}, []string{"sock-orders", "client-orders"}},
		{[]string{"--from-pod", "web", "--to-namespace", "shop"}, []string{"web-db", "web-orders"}},
		{[]string{"--ip", "192.0.2.0/24"}, []string{"world-web"}},
		{[]string{"--from-ip", "10.0.0.1"}, []string{"host-web"}},
		{[]string{"--to-ip", "10.244.2.7"}, []string{"web-orders", "sock-orders", "client-orders"}},
		{[]string{"--port", "5432"}, []string{"web-db", "db-web-revoked"}},
		{[]string{"--from-port", "5432"}, []string{"db-web-revoked"}},
		{[]string{"--to-port", "5432", "--to-port", "53"}, []string{"web-db", "web-dns"}},
		{[]string{"--protocol", "UDP"}, []string{"web-dns"}},
		{[]string{"--verdict", "DROPPED"}, []string{"world-web", "db-web-revoked"}},
		{[]string{"--verdict", "translated"}, []string{"sock-orders"}},
		{[]string{"--drop-reason", "POLICY_DENIED"}, []string{"world-web"}},
		{[]string{"--drop-reason-desc", "policy_denied"}, []string{"world-web"}},
		{[]string{"--type", "drop"}, []string{"world-web", "db-web-revoked"}},
		{[]string{"--type", "drop:POLICY_REVOKED"}, []string{"db-web-revoked"}},
		{[]string{"-t", "trace:to-endpoint"}, []string{"host-web"}},
		{[]string{"--type", "policy-verdict", "--type", "sock"}, []string{"web-orders", "sock-orders"}},
		{[]string{"--label", "app=db"}, []string{"web-db", "db-web-revoked"}},
		{[]string{"--from-label", "k8s:app=web"}, []string{"web-db", "web-orders", "web-dns"}},
		{[]string{"-l", "reserved:world"}, []string{"world-web"}},
		{[]string{"--to-label", "app in (orders, db)"}, []string{"web-db", "web-orders", "sock-orders", "client-orders"}},
		{[]string{"--service", "shop/orders"}, []string{"web-orders", "sock-orders"}},
		{[]string{"--to-service", "kube-system/kube"}, []string{"web-dns"}},
		{[]string{"--node-name", "worker-2"}, []string{"host-web"}},
		{[]string{"--node-name", "worker-*"}, allFlows},
		{[]string{"--tcp-flags", "SYN"}, []string{"web-db", "web-orders", "world-web", "host-web", "client-orders"}},
		{[]string{"--tcp-flags", "rst,ack"}, []string{"db-web-revoked"}},
		{[]string{"--traffic-direction", "ingress"}, []string{"web-orders", "world-web", "host-web"}},

		// --not: the next flag's filters go to the blacklist.
		{[]string{"--not", "--verdict", "FORWARDED"}, []string{"world-web", "db-web-revoked", "sock-orders"}},
		{[]string{"--not", "--pod", "web"}, []string{"sock-orders", "client-orders"}},
		{[]string{"--pod", "web", "--not", "--to-port", "5432"}, except("web-db", "sock-orders", "client-orders")},
		{[]string{"--verdict", "DROPPED", "--not", "--namespace", "shop"}, []string{"world-web"}},
		// Blacklisted flags combine like whitelisted ones (AND): this leaves
		// out the flows from default to shop, not all flows of either.
		{[]string{"--not", "--to-namespace", "shop", "--not", "--from-namespace", "default"}, []string{"world-web", "web-dns", "db-web-revoked", "host-web"}},
		// No flow is both UDP and dropped: nothing is left out.
		{[]string{"--not", "--protocol", "udp", "--not", "--verdict", "DROPPED"}, allFlows},
		{[]string{"--not=false", "--protocol", "udp"}, []string{"web-dns"}},

		// Which stored flows.
		{[]string{"--last", "2"}, []string{"sock-orders", "client-orders"}},
		{[]string{"--first", "2"}, []string{"web-db", "web-orders"}},
		{[]string{"--first", "1", "--to-pod", "web"}, []string{"world-web"}},
		{[]string{"--since", "2025-03-14T09:26:55Z", "--until", "2025-03-14T09:26:57Z"}, []string{"web-orders", "world-web", "web-dns"}},
		{[]string{"--since", "1m"}, nil}, // the flows are from 2025
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			require.Equal(t, tc.want, printedFlows(t, dir, tc.args...))
		})
	}
}

// What the flags put in the GetFlows request, as --print-request shows it.
func TestObserveRequest(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // GetFlowsRequest, protojson
	}{
		{nil, `{"number": "20"}`},
		{[]string{"-f"}, `{"follow": true}`},
		{[]string{"-f", "--last", "5"}, `{"number": "5", "follow": true}`},
		{[]string{"--first", "3"}, `{"number": "3", "first": true}`},
		{[]string{"--since", "2025-03-14T09:26:53Z"}, `{"since": "2025-03-14T09:26:53Z"}`},
		{[]string{"--pod", "web"}, `{"number": "20", "whitelist": [{"source_pod": ["web"]}, {"destination_pod": ["web"]}]}`},
		{[]string{"--pod", "web", "--namespace", "shop"},
			`{"number": "20", "whitelist": [{"source_pod": ["shop/web"]}, {"destination_pod": ["shop/web"]}]}`},
		{[]string{"--namespace", "shop"},
			`{"number": "20", "whitelist": [{"source_pod": ["shop/"]}, {"destination_pod": ["shop/"]}]}`},
		{[]string{"--service", "orders", "-n", "shop", "-n", "x"},
			`{"number": "20", "whitelist": [{"source_service": ["shop/orders", "x/orders"]}, {"destination_service": ["shop/orders", "x/orders"]}]}`},
		{[]string{"--from-namespace", "a", "--to-namespace", "b"},
			`{"number": "20", "whitelist": [{"source_pod": ["a/"], "destination_pod": ["b/"]}]}`},
		{[]string{"--from-pod", "web", "--to-port", "80", "--not", "--verdict", "DROPPED", "--protocol", "tcp"},
			`{"number": "20", "whitelist": [{"source_pod": ["web"], "destination_port": ["80"], "protocol": ["tcp"]}],
			  "blacklist": [{"verdict": ["DROPPED"]}]}`},
		{[]string{"--ip", "10.0.0.1", "--verdict", "DROPPED"},
			`{"number": "20", "whitelist": [{"source_ip": ["10.0.0.1"], "verdict": ["DROPPED"]}, {"destination_ip": ["10.0.0.1"], "verdict": ["DROPPED"]}]}`},
		{[]string{"--not", "--label", "app=web"},
			`{"number": "20", "blacklist": [{"source_label": ["app=web"]}, {"destination_label": ["app=web"]}]}`},
		{[]string{"--type", "trace:to-endpoint", "--type", "drop", "--type", "drop:1002", "--type", "sock:post-xlate-fwd"},
			`{"number": "20", "whitelist": [{"event_type": [{"type": 4, "match_sub_type": true}, {"type": 1},
			  {"type": 1, "sub_type": 1002, "match_sub_type": true}, {"type": 7, "sub_type": 2, "match_sub_type": true}]}]}`},
		{[]string{"--tcp-flags", "syn,ack", "--traffic-direction", "Egress", "--node-name", "kind-*", "--drop-reason", "CT_MAP_INSERTION_FAILED"},
			`{"number": "20", "whitelist": [{"tcp_flags": [{"SYN": true, "ACK": true}], "traffic_direction": ["EGRESS"],
			  "node_name": ["kind-*"], "drop_reason_desc": ["CT_MAP_INSERTION_FAILED"]}]}`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, err := run(t, append([]string{"observe", "--print-request"}, tc.args...)...)
			require.NoError(t, err)
			var got, want observerpb.GetFlowsRequest
			require.NoError(t, protojson.Unmarshal([]byte(out), &got), out)
			require.NoError(t, protojson.Unmarshal([]byte(tc.want), &want))
			require.True(t, proto.Equal(&want, &got), "want %v\ngot  %v", &want, &got)
		})
	}
}

// Command lines that cannot mean what they say are refused before asking
// the agent, naming the flag to fix.
func TestObserveBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--port", "80", "--to-port", "443"}, "--port and --to-port cannot be combined"},
		{[]string{"--not", "--label", "a=b", "--not", "--from-label", "c=d"}, "--not --label and --not --from-label cannot be combined"},
		{[]string{"--from-pod", "web", "--namespace", "x"}, "--from-pod and --namespace cannot be combined"},
		{[]string{"--pod", "web", "--not"}, "--not comes last"},
		{[]string{"--not", "--not", "--pod", "x"}, "--not --not"},
		{[]string{"--namespace", "a", "--pod", "b/x"}, `"b/x" is outside --namespace a`},
		{[]string{"--from-pod", "a/x", "--from-service", "b/y"}, "different namespaces"},
		{[]string{"--verdict", "NOPE"}, `invalid argument "NOPE" for "--verdict" flag: unknown verdict`},
		{[]string{"--ip", "10.0.0.300"}, `"--ip" flag: not an address`},
		{[]string{"--to-port", "70000"}, `"--to-port" flag: not a port`},
		{[]string{"--protocol", "quic"}, "unknown protocol"},
		{[]string{"--drop-reason", "POLICY_REVOKED"}, "select it with --type drop:POLICY_REVOKED"},
		{[]string{"--type", "trace:sideways"}, "unknown trace observation point"},
		{[]string{"--tcp-flags", "SYN,BOGUS"}, `unknown TCP flag "BOGUS"`},
		{[]string{"--traffic-direction", "up"}, "want ingress or egress"},
		{[]string{"--since", "yesterday"}, `--since "yesterday": want a duration ago`},
		{[]string{"--since", "1m", "--until", "5m"}, "--until 5m is before --since 1m"},
		{[]string{"--first", "1", "--last", "1"}, "--first and --last cannot be combined"},
		{[]string{"--first", "1", "-f"}, "--first and --follow cannot be combined"},
		{[]string{"-o", "table", "-f"}, "-o table cannot be followed"},
		{[]string{"-o", "yaml"}, `-o "yaml" is not an output format of observe`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := run(t, append([]string{"observe", "--print-request"}, tc.args...)...)
			require.ErrorContains(t, err, tc.want)
		})
	}

	// The observer's own checks come back naming the socket.
	dir, _ := fakeObserver(t)
	_, err := run(t, "--state-dir", dir, "observe", "--node-name", "a/b/c")
	require.ErrorContains(t, err, "rejected the request")
	_, err = run(t, "--state-dir", t.TempDir(), "observe")
	require.ErrorContains(t, err, "cannot reach the agent's observer at unix://")
	require.ErrorContains(t, err, "set --state-dir or --server")
}

func TestObserveOutput(t *testing.T) {
	dir, _ := fakeObserver(t)

	t.Run("compact", func(t *testing.T) {
		out, err := run(t, "--state-dir", dir, "observe")
		require.NoError(t, err)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, len(allFlows)+1, out)
		require.Equal(t, "Mar 14 09:26:54.000: default/web-0:43512 (ID:300) -> shop/db-0:5432 (ID:310) from-endpoint FORWARDED (TCP Flags: SYN)", lines[0])
		require.Equal(t, "Mar 14 09:26:55.000: default/web-0:43514 (ID:300) -> shop/orders-7d:8080 (ID:320) "+
			"policy-verdict:L3-L4 INGRESS ALLOWED BY shop/allow-web (NetworkPolicy) (TCP Flags: SYN)", lines[1])
		require.Equal(t, "Mar 14 09:26:56.000: 192.0.2.7:5353 (world) -> default/web-0:80 (ID:300) POLICY_DENIED DROPPED (TCP Flags: SYN)", lines[2])
		require.Equal(t, "Mar 14 09:26:57.000: default/web-0:40001 (ID:300) -> kube-system/coredns-5d:53 (ID:330) from-endpoint FORWARDED (UDP)", lines[3])
		require.Regexp(t, `^\w{3} [ \d]\d \d\d:\d\d:\d\d\.\d{3}: EVENTS LOST: 3 \(PERF_EVENT_RING_BUFFER\)$`, lines[4])
		require.Equal(t, "Mar 14 09:26:58.000: default/web-0:43512 (ID:300) <- shop/db-0:5432 (ID:310) POLICY_REVOKED DROPPED (POLICY_REVOKED; TCP Flags: ACK, RST)", lines[5])
		require.Equal(t, "Mar 14 09:26:59.000: 10.0.0.1:51000 (host) -> default/web-0:8080 (ID:300) to-endpoint FORWARDED (TCP Flags: SYN)", lines[6])
		require.Equal(t, "Mar 14 09:27:00.000: default/client-x (ID:340) -> shop/orders-7d:8080 (ID:320) post-xlate-fwd TRANSLATED (TCP to service 10.96.0.20:80)", lines[7])
	})

	t.Run("table", func(t *testing.T) {
		out, err := run(t, "--state-dir", dir, "observe", "-o", "table", "--verdict", "DROPPED")
		require.NoError(t, err)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 4, out)
		requireLine(t, lines[0], "TIMESTAMP SOURCE DESTINATION TYPE VERDICT SUMMARY")
		requireLine(t, lines[1], "Mar 14 09:26:56.000 192.0.2.7:5353 default/web-0:80 POLICY_DENIED DROPPED TCP Flags: SYN")
		require.Regexp(t, `EVENTS LOST\s+-\s+3 events lost$`, lines[2])
		requireLine(t, lines[3], "Mar 14 09:26:58.000 shop/db-0:5432 default/web-0:43512 POLICY_REVOKED DROPPED POLICY_REVOKED; TCP Flags: ACK, RST")
	})

	t.Run("json", func(t *testing.T) {
		out, err := run(t, "--state-dir", dir, "observe", "-o", "json", "--pod", "shop/db")
		require.NoError(t, err)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 3, out)
		var f flowpb.Flow
		require.NoError(t, protojson.Unmarshal([]byte(lines[0]), &f))
		require.True(t, proto.Equal(testFlows()[0], &f), "the flow as stored: %v", &f)
		var lost struct {
			LostEvents struct {
				Source        string `json:"source"`
				NumEventsLost string `json:"num_events_lost"`
			} `json:"lost_events"`
		}
		require.NoError(t, json.Unmarshal([]byte(lines[1]), &lost), lines[1])
		require.Equal(t, "PERF_EVENT_RING_BUFFER", lost.LostEvents.Source)
		require.Equal(t, "3", lost.LostEvents.NumEventsLost)
		require.Contains(t, lines[2], `"uuid":`)
		require.Contains(t, lines[2], `"node_name"`, "proto field names, as Hubble writes them")
	})

	t.Run("jsonpb", func(t *testing.T) {
		out, err := run(t, "--state-dir", dir, "observe", "-o", "jsonpb", "--last", "4", "--to-pod", "web")
		require.NoError(t, err)
		var kinds []string
		for line := range strings.Lines(out) {
			var r observerpb.GetFlowsResponse
			require.NoError(t, protojson.Unmarshal([]byte(line), &r), line)
			if r.GetLostEvents() != nil {
				require.Equal(t, "worker-1", r.GetNodeName(), "the node that lost them")
				kinds = append(kinds, "lost")
				continue
			}
			require.Equal(t, r.GetFlow().GetNodeName(), r.GetNodeName())
			require.True(t, proto.Equal(r.GetTime(), r.GetFlow().GetTime()))
			kinds = append(kinds, r.GetFlow().GetUuid())
		}
		require.Equal(t, []string{"world-web", "lost", "db-web-revoked", "host-web"}, kinds)

		// -o before the command works too, as for every other command.
		out, err = run(t, "--state-dir", dir, "-o", "jsonpb", "observe", "--last", "1")
		require.NoError(t, err)
		var r observerpb.GetFlowsResponse
		require.NoError(t, protojson.Unmarshal([]byte(out), &r), out)
		require.Equal(t, "client-orders", r.GetFlow().GetUuid())
	})
}

// --follow prints the stored flows asked for, then new ones as the agent
// stores them, until interrupted.
func TestObserveFollow(t *testing.T) {
	dir, store := fakeObserver(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	root := cli.NewRootCommand()
	root.SetOut(pw)
	root.SetErr(io.Discard)
	// --server as a plain socket path.
	root.SetArgs([]string{"observe", "--server", filepath.Join(dir, observer.DefaultSocketName), "-f", "--last", "1"})
	done := make(chan error, 1)
	go func() {
		err := root.ExecuteContext(ctx)
		pw.Close()
		done <- err
	}()
	lines := bufio.NewScanner(pr)
	next := func() string {
		t.Helper()
		require.True(t, lines.Scan(), "observe stopped printing: %v", lines.Err())
		return lines.Text()
	}

	require.Contains(t, next(), "default/client-x:40000 (ID:340) -> shop/orders-7d:8080", "the newest stored flow first")
	late := testFlows()[0]
	late.Time = timestamppb.New(ft0.Add(time.Minute))
	store.Add(late)
	require.Equal(t, "Mar 14 09:27:53.000: default/web-0:43512 (ID:300) -> shop/db-0:5432 (ID:310) from-endpoint FORWARDED (TCP Flags: SYN)", next())
	store.AddLost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 7)
	require.Contains(t, next(), "EVENTS LOST: 7 (PERF_EVENT_RING_BUFFER)")

	cancel()
	go func() { _, _ = io.Copy(io.Discard, pr) }() // drain until the command ends
	require.NoError(t, <-done, "interrupting a follow is how it ends, not an error")
}

// The node proxy's requests beside one L4 flow of their connection:
//
//	l4-redirect  default/web-0:43600 -> shop/orders-7d:8080  REDIRECTED to proxy port 15001
//	get-items    GET /api/items?limit=5   200  FORWARDED, allowed by shop/api
//	delete-item  DELETE /api/items/7      403  DROPPED POLICY_DENIED
//	search       GET /api/search          429  DROPPED DROP_RATE_LIMITED, by shop/api
func l7TestFlows() []*flowpb.Flow {
	at := func(s int) *timestamppb.Timestamp { return timestamppb.New(ft0.Add(time.Duration(s) * time.Second)) }
	ip := &flowpb.IP{Source: "10.244.1.5", Destination: "10.244.2.7", IpVersion: flowpb.IPVersion_IPv4}
	api := []*flowpb.Policy{{Namespace: "shop", Name: "api", Kind: flow.L7PolicyKind}}
	req := func(name string, s int, method, url string, code uint32, v flowpb.Verdict, reason flowpb.DropReason, summary string) *flowpb.Flow {
		return &flowpb.Flow{
			Uuid: name, Time: at(s), NodeName: "worker-1", Verdict: v, DropReason: uint32(reason), DropReasonDesc: reason,
			IP: ip, L4: tcp(43600, 8080, nil), Source: webPod, Destination: ordersPod, Type: flowpb.FlowType_L7,
			EventType: &flowpb.CiliumEventType{Type: flow.MessageTypeAccessLog}, TrafficDirection: flowpb.TrafficDirection_INGRESS,
			IsReply: wrapperspb.Bool(false), ProxyPort: 15001,
			L7: &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE, LatencyNs: 3e6, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
				Code: code, Method: method, Url: url, Protocol: "HTTP/1.1",
				Headers: []*flowpb.HTTPHeader{{Key: "x-request-id", Value: name}},
			}}},
			Summary: summary,
		}
	}
	get := req("get-items", 2, "GET", "http://orders.shop:8080/api/items?limit=5", 200, flowpb.Verdict_FORWARDED, 0,
		"HTTP/1.1 200 3ms (GET http://orders.shop:8080/api/items?limit=5)")
	get.IngressAllowedBy = api
	search := req("search", 4, "GET", "http://orders.shop:8080/api/search", 429, flowpb.Verdict_DROPPED, flowpb.DropReason_DROP_RATE_LIMITED,
		"HTTP/1.1 429 3ms (GET http://orders.shop:8080/api/search); rate limited by shop/api/ports[0]/rules[1]")
	search.IngressDeniedBy = api
	return []*flowpb.Flow{
		{
			Uuid: "l4-redirect", Time: at(1), NodeName: "worker-1", Verdict: flowpb.Verdict_REDIRECTED,
			IP: ip, L4: tcp(43600, 8080, &flowpb.TCPFlags{SYN: true}), Source: webPod, Destination: ordersPod,
			Type: flowpb.FlowType_L3_L4, EventType: &flowpb.CiliumEventType{Type: flow.MessageTypePolicyVerdict},
			TrafficDirection: flowpb.TrafficDirection_INGRESS, IsReply: wrapperspb.Bool(false), ProxyPort: 15001,
			Summary: "TCP Flags: SYN",
		},
		get,
		req("delete-item", 3, "DELETE", "http://orders.shop:8080/api/items/7", 403, flowpb.Verdict_DROPPED, flowpb.DropReason_POLICY_DENIED,
			"HTTP/1.1 403 3ms (DELETE http://orders.shop:8080/api/items/7); denied: no rule allows it"),
		search,
	}
}

// --type l7 and the --http-* flags select the proxy's requests, on the
// server, as `hubble observe` does; the connection's address and port
// select them with its L4 flow.
func TestObserveL7(t *testing.T) {
	dir, _ := serveFlows(t, l7TestFlows(), -1)
	l7 := []string{"get-items", "delete-item", "search"}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--type", "l7"}, l7},
		{[]string{"--protocol", "http"}, l7},
		{[]string{"--http-method", "get"}, []string{"get-items", "search"}},
		{[]string{"--http-status", "4+"}, []string{"delete-item", "search"}},
		{[]string{"--http-status", "403", "--http-status", "200"}, []string{"get-items", "delete-item"}},
		{[]string{"--http-path", "^/api/items"}, []string{"get-items", "delete-item"}},
		{[]string{"--http-url", "limit=5"}, []string{"get-items"}},
		{[]string{"--http-header", "x-request-id:search"}, []string{"search"}},
		{[]string{"--type", "l7", "--verdict", "DROPPED"}, []string{"delete-item", "search"}},
		{[]string{"--drop-reason", "DROP_RATE_LIMITED"}, []string{"search"}},
		{[]string{"--type", "l7", "--not", "--http-method", "GET"}, []string{"delete-item"}},
		{[]string{"--from-pod", "default/web", "--http-method", "DELETE"}, []string{"delete-item"}},
		{[]string{"--ip", "10.244.1.5", "--port", "43600"}, []string{"l4-redirect", "get-items", "delete-item", "search"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			require.Equal(t, tc.want, printedFlows(t, dir, tc.args...))
		})
	}

	// What the flags send.
	out, err := run(t, "observe", "--print-request", "--type", "l7", "--http-method", "GET", "--http-status", "5+", "--http-path", "^/api/")
	require.NoError(t, err)
	var got, want observerpb.GetFlowsRequest
	require.NoError(t, protojson.Unmarshal([]byte(out), &got), out)
	require.NoError(t, protojson.Unmarshal([]byte(`{"number": "20", "whitelist": [{"event_type": [{"type": 129}],
		"http_method": ["GET"], "http_status_code": ["5+"], "http_path": ["^/api/"]}]}`), &want))
	require.True(t, proto.Equal(&want, &got), "request %s", out)

	// Bad values are refused before anything is sent, naming the flag.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--http-status", "600"}, `invalid argument "600" for "--http-status" flag: want a status code`},
		{[]string{"--http-status", "4xx"}, `for "--http-status" flag`},
		{[]string{"--http-path", "(api"}, `invalid argument "(api" for "--http-path" flag: not a regular expression`},
		{[]string{"--http-header", "x-request-id"}, `for "--http-header" flag: want KEY:VALUE`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := run(t, append([]string{"observe", "--print-request"}, tc.args...)...)
			require.ErrorContains(t, err, tc.want)
		})
	}
	// An HTTP filter with a non-L7 event type is the server's to refuse,
	// as Hubble's does.
	_, err = run(t, "--state-dir", dir, "observe", "--type", "trace", "--http-method", "GET")
	require.ErrorContains(t, err, "rejected the request")
	require.ErrorContains(t, err, "HTTP filters need the event type filter to match l7 events")

	// Printed as Hubble prints L7 flows: the record type, the verdict with
	// the rule's policy, the summary.
	out, err = run(t, "--state-dir", dir, "observe", "--type", "l7")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	require.Equal(t, "Mar 14 09:26:55.000: default/web-0:43600 (ID:300) -> shop/orders-7d:8080 (ID:320) http-response FORWARDED BY shop/api (SluiceL7Policy) "+
		"(HTTP/1.1 200 3ms (GET http://orders.shop:8080/api/items?limit=5))", lines[0])
	require.Equal(t, "Mar 14 09:26:56.000: default/web-0:43600 (ID:300) -> shop/orders-7d:8080 (ID:320) http-response DROPPED "+
		"(HTTP/1.1 403 3ms (DELETE http://orders.shop:8080/api/items/7); denied: no rule allows it)", lines[1])
	require.Equal(t, "Mar 14 09:26:57.000: default/web-0:43600 (ID:300) -> shop/orders-7d:8080 (ID:320) http-response DROPPED BY shop/api (SluiceL7Policy) "+
		"(HTTP/1.1 429 3ms (GET http://orders.shop:8080/api/search); rate limited by shop/api/ports[0]/rules[1])", lines[2])
}
