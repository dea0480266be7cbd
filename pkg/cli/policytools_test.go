package cli_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-net/sluice/pkg/api"
)

// A file of `observe -o jsonpb` lines (and -o json ones, and a lost-events
// notice) becomes policies; filters and --namespace apply.
func TestPolicySuggestFromFile(t *testing.T) {
	ep := func(pod, app string) *flowpb.Endpoint {
		return &flowpb.Endpoint{Namespace: "shop", PodName: pod, Labels: []string{"k8s:app=" + app, "k8s:pod-template-hash=abc"},
			Workloads: []*flowpb.Workload{{Kind: "Deployment", Name: app}}}
	}
	flow := func(sport uint32, from, to *flowpb.Endpoint, src, dst string, port uint32) *flowpb.Flow {
		return &flowpb.Flow{Time: timestamppb.New(time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)), Verdict: flowpb.Verdict_FORWARDED,
			IP: &flowpb.IP{Source: src, Destination: dst}, Source: from, Destination: to,
			L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sport, DestinationPort: port}}}}
	}
	web, api, other := ep("web-abc-1", "web"), ep("api-abc-1", "api"), &flowpb.Endpoint{Namespace: "else", PodName: "x", Labels: []string{"k8s:app=x"}}
	var lines []string
	for _, r := range []*observerpb.GetFlowsResponse{
		{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: flow(40000, web, api, "10.0.0.1", "10.0.0.2", 8080)}},
		{ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{NumEventsLost: 3}}},
		{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: flow(40001, other, other, "10.0.9.1", "10.0.9.2", 80)}},
	} {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(r)
		require.NoError(t, err)
		lines = append(lines, string(b))
	}
	// An -o json line: the flow alone.
	b, err := protojson.Marshal(flow(40002, api, web, "10.0.0.2", "10.0.0.1", 9090))
	require.NoError(t, err)
	lines = append(lines, string(b))
	file := filepath.Join(t.TempDir(), "flows.jsonpb")
	require.NoError(t, os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600))

	out, err := run(t, "policy", "suggest", "--from-file", file, "--namespace", "shop")
	require.NoError(t, err)
	require.Contains(t, out, "name: web-suggested")
	require.Contains(t, out, "name: api-suggested")
	require.NotContains(t, out, "namespace: else", "--namespace selects the flows and the policies")
	require.NotContains(t, out, "pod-template-hash")
	require.Contains(t, out, "from 2 flows: 2 connections")

	out, err = run(t, "policy", "suggest", "--from-file", file, "--namespace", "shop", "--not", "--to-port", "9090")
	require.NoError(t, err)
	require.Contains(t, out, "from 1 flow: 1 connection", "the filter flags of observe apply")

	bad := filepath.Join(t.TempDir(), "bad.jsonpb")
	require.NoError(t, os.WriteFile(bad, []byte(lines[0]+"\nnot json\n"), 0o600))
	_, err = run(t, "policy", "suggest", "--from-file", bad)
	require.ErrorContains(t, err, "--from-file "+bad+": line 2: not a flow of -o jsonpb or -o json")
}

// The trace prints the agent's answer; a disagreement with the maps is an
// ERROR line and a failure. --what-if sends the manifest.
func TestPolicyTrace(t *testing.T) {
	var gotMethod, gotBody, gotQuery string
	answer := api.PolicyTraceAnswer{Trace: &api.PolicyTrace{
		From:     api.TraceEnd{Kind: "pod", Name: "shop/web", Address: netip.MustParseAddr("10.0.0.1"), Node: "n1", Local: true, Identity: 300},
		To:       api.TraceEnd{Kind: "pod", Name: "shop/db", Address: netip.MustParseAddr("10.0.0.2"), Node: "n1", Local: true},
		Protocol: "TCP", Port: 5432, Verdict: "denied",
		Paths: []api.TracePath{{To: api.TraceEnd{Kind: "pod", Name: "shop/db", Address: netip.MustParseAddr("10.0.0.2"), Node: "n1"}, Port: 5432,
			Ingress: &api.TraceDecision{Endpoint: api.NamespacedName{Namespace: "shop", Name: "db"}, Node: "n1", Local: true, Direction: "ingress",
				Peer: 300, Enforced: true, Verdict: "denied", Rule: "default-deny",
				Maps: &api.TraceMapCheck{EndpointID: 4, Flags: []string{"ingress"}, Peer: 300, Verdict: "allowed", Rule: "shop/db ingress[0]", RuleID: 9,
					Entry: "identity 300 TCP/5432"}},
			Verdict: "denied"}},
		Problems: []string{"ingress at shop/db: the datapath's maps decide allowed (...), the model denied (default-deny)"},
	}}
	dir := fakeAgent(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotMethod, gotQuery = r.Method, r.URL.RawQuery
		b, _ := io.ReadAll(r.Body)
		gotBody = string(b)
		w.Header().Set("Content-Type", "application/json")
		require.NoError(t, json.NewEncoder(w).Encode(answer))
	}))
	out, err := run(t, "--state-dir", dir, "policy", "trace", "--from", "shop/web", "--to", "shop/db:5432")
	require.ErrorContains(t, err, "the datapath's maps disagree with the agent's model (1 problem)")
	require.Equal(t, http.MethodGet, gotMethod)
	require.Contains(t, gotQuery, "to=shop%2Fdb%3A5432")
	requireLine(t, out, "ingress: at shop/db (this node): denied by default-deny")
	requireLine(t, out, "maps: endpoint 4 [ingress], peer identity 300: allowed by shop/db ingress[0], entry identity 300 TCP/5432; DIFFERS from the model")
	requireLine(t, out, "ERROR: ingress at shop/db: the datapath's maps decide allowed (...), the model denied (default-deny)")
	requireLine(t, out, "Verdict: DENIED")

	answer.Trace.Problems = nil
	manifest := filepath.Join(t.TempDir(), "lockdown.yaml")
	require.NoError(t, os.WriteFile(manifest, []byte("kind: NetworkPolicy\n"), 0o600))
	answer.WhatIf = &api.PolicyWhatIf{Policies: []string{"shop/lockdown"}, Connections: 7, Denied: []api.WhatIfDenied{{
		From: "shop/web (Deployment)", To: "shop/db (StatefulSet)", Protocol: "TCP", Port: 5432, At: "ingress (default-deny)",
		Now: "allowed by shop/db ingress[0]", Count: 3, Example: "shop/web-1 10.0.0.1:40000 -> shop/db-0 10.0.0.2:5432 TCP"}}}
	out, err = run(t, "--state-dir", dir, "policy", "trace", "--what-if", manifest)
	require.NoError(t, err)
	require.Equal(t, http.MethodPost, gotMethod)
	require.Equal(t, "kind: NetworkPolicy\n", gotBody)
	require.Contains(t, gotQuery, "file=lockdown.yaml")
	require.Contains(t, out, "7 connections in the flow store; the manifest would deny 3 of them:")
	require.Contains(t, out, "shop/web (Deployment)")

	_, err = run(t, "--state-dir", dir, "policy", "trace", "--from", "shop/web")
	require.EqualError(t, err, "give both --from and --to")
}
