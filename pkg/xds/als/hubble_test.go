package als

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
)

// hubbleCLI returns the official hubble CLI: $SLUICE_HUBBLE, else hubble
// on PATH. `make hubble-bin` builds it (cilium's hubble command at the
// version go.mod requires) into $SLUICE_CACHE/hubble/<version>/, and
// `make test` points SLUICE_HUBBLE at it.
func hubbleCLI(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SLUICE_HUBBLE"); p != "" {
		return p
	}
	p, err := exec.LookPath("hubble")
	if err != nil {
		t.Skip("no hubble CLI: build it with `make hubble-bin` (about 6 minutes the first time on 2 cores) " +
			"and set SLUICE_HUBBLE to the path it prints, or put hubble on PATH")
	}
	return p
}

// runHubble runs `hubble observe` against the node's observer socket.
func runHubble(t *testing.T, bin, socket string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"observe", "--server", "unix://" + socket}, args...)...)
	// No user configuration: a fresh home.
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	out, err := cmd.Output()
	var stderr string
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = string(ee.Stderr)
	}
	require.NoError(t, err, "hubble %s: %s", strings.Join(args, " "), stderr)
	return string(out)
}

// The official hubble CLI shows the L7 flows and its own --type l7,
// --http-method, --http-status and --http-path flags select them on the
// server, as they do against Cilium.
func TestHubbleCLI(t *testing.T) {
	bin := hubbleCLI(t)
	n := startNode(t)
	require.NoError(t, sendLogs(t, n.als, envoyNode, goldenEntries(t)))
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--type", "l7"}, goldenNames},
		{[]string{"--http-method", "GET"}, []string{"allowed", "rate-limited"}},
		{[]string{"--type", "l7", "--http-status", "403"}, []string{"rbac-denied"}},
		{[]string{"--http-status", "4+"}, []string{"rbac-denied", "rate-limited", "jwt-denied"}},
		{[]string{"--http-path", "^/api/items"}, []string{"allowed", "rbac-denied"}},
		{[]string{"--type", "l7", "--verdict", "AUDIT"}, []string{"audit"}},
		{[]string{"--drop-reason-desc", "DROP_RATE_LIMITED"}, []string{"rate-limited"}},
		{[]string{"--from-pod", "shop/frontend", "--http-method", "PUT"}, []string{"audit"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var got []string
			for line := range strings.Lines(runHubble(t, bin, n.hubble, append(tc.args, "-o", "jsonpb")...)) {
				var r observerpb.GetFlowsResponse
				require.NoError(t, protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal([]byte(line), &r), line)
				got = append(got, flowName(r.GetFlow()))
			}
			require.Equal(t, tc.want, got)
		})
	}

	// Hubble's compact line: the type, the verdict, the summary with the
	// proxy's reason.
	out := runHubble(t, bin, n.hubble, "--http-status", "429")
	require.Contains(t, out, "shop/frontend-6c5b9-k2j4m:38000")
	require.Contains(t, out, "shop/db-0:8080")
	require.Contains(t, out, "http-response DROPPED (HTTP/2 429 0ms (GET http://db.shop:8080/api/search?q=shoes); rate limited by shop/api/ports[0]/rules[1])")
}
