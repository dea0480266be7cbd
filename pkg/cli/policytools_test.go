package cli_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/api"
)

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
