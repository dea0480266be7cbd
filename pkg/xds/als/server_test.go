package als

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-net/sluice/pkg/datapath/events"
	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/metrics"
	"github.com/sluice-net/sluice/pkg/observer"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/golden/*.flow.json from the flows the service makes now")

// The golden entries, in the order they are sent: testdata/golden/<name>.entry.json
// is the HTTPAccessLogEntry Envoy sends (protojson), <name>.flow.json the
// flow a Hubble client reads for it.
//
//	allowed       shop/web → shop/db:8080  GET /api/items?limit=5   200  allowed by shop/api/ports[0]/rules[0]
//	rbac-denied   shop/web → shop/db:8080  DELETE /api/items/7      403  no rule allows it
//	rate-limited  shop/frontend (node-b) → shop/db  GET /api/search  429  rule shop/api/ports[0]/rules[1]'s limit
//	jwt-denied    203.0.113.9 (world) → shop/db     POST /api/orders 401  no JWT
//	audit         shop/frontend → shop/web:80       PUT /admin/settings 204  no rule allows it, audited
var goldenNames = []string{"allowed", "rbac-denied", "rate-limited", "jwt-denied", "audit"}

func readEntry(t *testing.T, name string) *accesslogdatav3.HTTPAccessLogEntry {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "golden", name+".entry.json"))
	require.NoError(t, err)
	e := &accesslogdatav3.HTTPAccessLogEntry{}
	require.NoError(t, protojson.Unmarshal(raw, e), "testdata/golden/%s.entry.json", name)
	return e
}

// testNode is the agent's flow path on one node: the access log service
// on its own unix socket (the xDS socket, in the agent), the flow store,
// and the Hubble observer on another socket.
type testNode struct {
	als, hubble string // socket paths
	store       *flow.Store
	conv        *flow.Converter
	metrics     *metrics.Collector
}

func startNode(t *testing.T) *testNode {
	t.Helper()
	dir := t.TempDir()
	store, err := flow.NewStore(64)
	require.NoError(t, err)
	n := &testNode{
		als: filepath.Join(dir, "xds.sock"), hubble: filepath.Join(dir, observer.DefaultSocketName), store: store,
		conv: &flow.Converter{NodeName: "node-a", Version: "golden",
			Enricher: newModelEnricher(t, testState(), "node-a", map[string]uint32{"web-7d9f8c6b5d-x2x4q": 12, "db-0": 14})},
		metrics: metrics.NewCollector(metrics.Options{}),
	}
	l, err := net.Listen("unix", n.als)
	require.NoError(t, err)
	srv := grpc.NewServer()
	_, err = Register(srv, Options{Converter: n.conv, Store: store, Observe: n.metrics.ObserveL7Request})
	require.NoError(t, err)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)

	obs, err := observer.Start(observer.Config{SocketPath: n.hubble, NodeName: "node-a", Version: "golden"}, store, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, obs.Close()) })
	return n
}

func dial(t *testing.T, socket string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// envoyNode is the identifier Envoy sends first on every stream.
var envoyNode = &accesslogv3.StreamAccessLogsMessage_Identifier{
	Node:    &corev3.Node{Id: "sluice-envoy~node-a", Cluster: "sluice"},
	LogName: LogName,
}

// sendLogs streams batches of entries as Envoy does (the identifier on
// the first message only) over the generated AccessLogService client, and
// waits for the server's answer: by then every entry is stored.
func sendLogs(t *testing.T, socket string, id *accesslogv3.StreamAccessLogsMessage_Identifier, batches ...[]*accesslogdatav3.HTTPAccessLogEntry) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := accesslogv3.NewAccessLogServiceClient(dial(t, socket)).StreamAccessLogs(ctx)
	require.NoError(t, err)
	for i, b := range batches {
		msg := &accesslogv3.StreamAccessLogsMessage{LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{
			HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: b},
		}}
		if i == 0 {
			msg.Identifier = id
		}
		if err := stream.Send(msg); err != nil {
			break // the server ended the stream: CloseAndRecv says why
		}
	}
	_, err = stream.CloseAndRecv()
	return err
}

// getFlows reads every stored flow that passes the filter, through the
// observer API as a Hubble client does.
func getFlows(t *testing.T, socket string, whitelist ...*flowpb.FlowFilter) []*flowpb.Flow {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := observerpb.NewObserverClient(dial(t, socket)).GetFlows(ctx, &observerpb.GetFlowsRequest{Whitelist: whitelist})
	require.NoError(t, err)
	var out []*flowpb.Flow
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err, "GetFlows")
		if f := r.GetFlow(); f != nil {
			out = append(out, f)
		}
	}
}

func goldenEntries(t *testing.T) []*accesslogdatav3.HTTPAccessLogEntry {
	var out []*accesslogdatav3.HTTPAccessLogEntry
	for _, name := range goldenNames {
		out = append(out, readEntry(t, name))
	}
	return out
}

// Envoy's entries, streamed by a real access log client over a unix
// socket, come out of the observer API as the golden flows: both ends
// enriched from the node's state, the proxy's verdict and rule.
func TestGoldenFlows(t *testing.T) {
	n := startNode(t)
	entries := goldenEntries(t)
	require.NoError(t, sendLogs(t, n.als, envoyNode, entries[:2], entries[2:]))
	flows := getFlows(t, n.hubble)
	require.Len(t, flows, len(goldenNames))
	for i, name := range goldenNames {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join("testdata", "golden", name+".flow.json")
			if *updateGolden {
				// protojson varies its spacing from build to build: indent
				// its output with encoding/json for stable files.
				js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(flows[i])
				require.NoError(t, err)
				var out bytes.Buffer
				require.NoError(t, json.Indent(&out, js, "", "  "))
				require.NoError(t, os.WriteFile(file, append(out.Bytes(), '\n'), 0o644))
			}
			raw, err := os.ReadFile(file)
			require.NoError(t, err, "run go test -run TestGoldenFlows -update-golden on a service known to be right")
			want := &flowpb.Flow{}
			require.NoError(t, protojson.Unmarshal(raw, want), file)
			if !proto.Equal(flows[i], want) {
				t.Errorf("flow of %s differs from %s\n got: %s\nwant: %s", name, file, protojson.Format(flows[i]), protojson.Format(want))
			}
		})
	}
	// And the metrics count them, rate-limited ones by their verdict.
	require.NoError(t, testutil.CollectAndCompare(n.metrics, strings.NewReader(`
# HELP sluice_l7_requests_total HTTP requests the node's proxy handled, from its access logs: by listener (l7-<proxy port>), verdict (forwarded, policy-denied, rate-limited, jwt-denied, audit) and deciding rule (namespace/policy/ports[i]/rules[j]; empty when no rule matched). Rate-limited requests are verdict="rate-limited".
# TYPE sluice_l7_requests_total counter
sluice_l7_requests_total{listener="l7-15001",rule="",verdict="jwt-denied"} 1
sluice_l7_requests_total{listener="l7-15001",rule="",verdict="policy-denied"} 1
sluice_l7_requests_total{listener="l7-15001",rule="shop/api/ports[0]/rules[0]",verdict="forwarded"} 1
sluice_l7_requests_total{listener="l7-15001",rule="shop/api/ports[0]/rules[1]",verdict="rate-limited"} 1
sluice_l7_requests_total{listener="l7-15002",rule="",verdict="audit"} 1
`), "sluice_l7_requests_total"))
}

// flowName names a test flow by its request ID ("l4" for the datapath's).
func flowName(f *flowpb.Flow) string {
	if f.GetL7() == nil {
		return "l4"
	}
	for _, h := range f.GetL7().GetHttp().GetHeaders() {
		if h.GetKey() == "x-request-id" {
			for _, name := range goldenNames {
				if strings.HasPrefix(h.GetValue(), requestIDs[name]) {
					return name
				}
			}
		}
	}
	return "?"
}

var requestIDs = map[string]string{
	"allowed": "6a1b2f0e", "rbac-denied": "0d9e8f7a", "rate-limited": "11112222", "jwt-denied": "99990000", "audit": "abcdef01",
}

// The observer's filters select L7 flows as Hubble's do, with the fields
// `hubble observe --http-method/--http-status/--http-path/--type l7` set;
// the connection's address and port select its L4 flow and its requests.
func TestObserverFilters(t *testing.T) {
	n := startNode(t)
	// The datapath's flow of the connection the first two requests came
	// on: handed to the proxy at web's endpoint.
	n.store.Add(n.conv.Convert(&events.Event{
		Type: events.ConnNew, Time: time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC), Dir: events.DirEgress, EndpointID: 12,
		Proto: unix.IPPROTO_TCP, TCPFlags: events.TCPSYN, Src: ap("10.244.1.5:43512"), Dst: ap("10.244.1.7:8080"),
		Verdict: events.VerdictRedirect, ProxyPort: 15001,
	}))
	require.NoError(t, sendLogs(t, n.als, envoyNode, goldenEntries(t)))
	l7 := []*flowpb.EventTypeFilter{{Type: flow.MessageTypeAccessLog}}
	for _, tc := range []struct {
		name   string
		filter *flowpb.FlowFilter
		want   []string
	}{
		{"type l7", &flowpb.FlowFilter{EventType: l7}, goldenNames},
		{"http method", &flowpb.FlowFilter{HttpMethod: []string{"get"}}, []string{"allowed", "rate-limited"}},
		{"http status prefix", &flowpb.FlowFilter{HttpStatusCode: []string{"4+"}, EventType: l7}, []string{"rbac-denied", "rate-limited", "jwt-denied"}},
		{"http status", &flowpb.FlowFilter{HttpStatusCode: []string{"204"}}, []string{"audit"}},
		{"http path", &flowpb.FlowFilter{HttpPath: []string{"^/api/items"}}, []string{"allowed", "rbac-denied"}},
		{"dropped requests", &flowpb.FlowFilter{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}, EventType: l7}, []string{"rbac-denied", "rate-limited", "jwt-denied"}},
		{"rate limited", &flowpb.FlowFilter{DropReasonDesc: []flowpb.DropReason{flowpb.DropReason_DROP_RATE_LIMITED}}, []string{"rate-limited"}},
		{"JWT denied", &flowpb.FlowFilter{DropReasonDesc: []flowpb.DropReason{flowpb.DropReason_AUTH_REQUIRED}}, []string{"jwt-denied"}},
		{"audited", &flowpb.FlowFilter{Verdict: []flowpb.Verdict{flowpb.Verdict_AUDIT}}, []string{"audit"}},
		{"the connection: L4 and L7", &flowpb.FlowFilter{SourceIp: []string{"10.244.1.5"}, SourcePort: []string{"43512"}}, []string{"l4", "allowed", "rbac-denied"}},
		{"remote pod by name", &flowpb.FlowFilter{SourcePod: []string{"shop/frontend"}}, []string{"rate-limited", "audit"}},
		{"local pod by label", &flowpb.FlowFilter{DestinationLabel: []string{"k8s:app=db"}, HttpMethod: []string{"DELETE"}}, []string{"rbac-denied"}},
		{"the world", &flowpb.FlowFilter{SourceLabel: []string{"reserved:world"}}, []string{"jwt-denied"}},
		{"protocol http", &flowpb.FlowFilter{Protocol: []string{"http"}, DestinationPort: []string{"80"}}, []string{"audit"}},
		{"trace id", &flowpb.FlowFilter{TraceId: []string{"4bf92f3577b34da6a3ce929d0e0e4736"}}, []string{"allowed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, f := range getFlows(t, n.hubble, tc.filter) {
				got = append(got, flowName(f))
			}
			require.Equal(t, tc.want, got)
		})
	}
}

// A stream must say who sends it before its entries: one that does not
// is refused, naming what is missing, and stores nothing.
func TestStreamIdentifier(t *testing.T) {
	n := startNode(t)
	entries := goldenEntries(t)
	err := sendLogs(t, n.als, nil, entries)
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "the first message carries no identifier (node and log_name)")

	err = sendLogs(t, n.als, &accesslogv3.StreamAccessLogsMessage_Identifier{Node: envoyNode.Node}, entries)
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "LogName")
	require.Empty(t, getFlows(t, n.hubble))

	// The service keeps serving well-formed streams.
	require.NoError(t, sendLogs(t, n.als, envoyNode, entries[:1]))
	require.Len(t, getFlows(t, n.hubble), 1)
}

// Only the entry Envoy writes when a request is done becomes a flow:
// start-of-request and periodic entries would count a request twice.
func TestIntermediateEntries(t *testing.T) {
	n := startNode(t)
	kind := func(typ accesslogdatav3.AccessLogType, intermediate bool) *accesslogdatav3.HTTPAccessLogEntry {
		e := readEntry(t, "allowed")
		e.CommonProperties.AccessLogType, e.CommonProperties.IntermediateLogEntry = typ, intermediate
		return e
	}
	require.NoError(t, sendLogs(t, n.als, envoyNode, []*accesslogdatav3.HTTPAccessLogEntry{
		kind(accesslogdatav3.AccessLogType_DownstreamStart, false),
		kind(accesslogdatav3.AccessLogType_DownstreamPeriodic, false),
		kind(accesslogdatav3.AccessLogType_NotSet, true),
		kind(accesslogdatav3.AccessLogType_UpstreamEnd, false),
		kind(accesslogdatav3.AccessLogType_DownstreamEnd, false),
		kind(accesslogdatav3.AccessLogType_NotSet, false),
	}))
	require.Len(t, getFlows(t, n.hubble), 2)
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
