package harness_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/xds"
)

func readRepoFile(t *testing.T, rel string) []byte {
	t.Helper()
	p, err := harness.RepoFile(rel)
	require.NoError(t, err)
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return b
}

// daemonSetBootstrap is the bootstrap of daemonset/envoy-configmap.yaml
// as Envoy reads it.
func daemonSetBootstrap(t *testing.T) *bootstrapv3.Bootstrap {
	t.Helper()
	var cm struct {
		Data map[string]string `json:"data"`
	}
	require.NoError(t, yaml.Unmarshal(readRepoFile(t, harness.EnvoyConfigMapFile), &cm))
	js, err := yaml.YAMLToJSON([]byte(cm.Data["envoy.yaml"]))
	require.NoError(t, err)
	var b bootstrapv3.Bootstrap
	require.NoError(t, protojson.Unmarshal(js, &b))
	return &b
}

// The bootstrap the end-to-end tests start a real Envoy with is the
// DaemonSet's, valid as Envoy's own schema says (go-control-plane's
// generated validation, typed configs unpacked), with only the agent's
// socket and the admin port changed.
func TestEnvoyBootstrap(t *testing.T) {
	const stateDir = "/tmp/sl-test/node1/state"
	out, err := harness.EnvoyBootstrap(readRepoFile(t, harness.EnvoyConfigMapFile), stateDir, 41234)
	require.NoError(t, err)

	var got bootstrapv3.Bootstrap
	require.NoError(t, protojson.Unmarshal(out, &got), "the bootstrap as an envoy.config.bootstrap.v3.Bootstrap: %s", out)
	require.NoError(t, got.ValidateAll())
	require.NoError(t, xds.ValidateMessage(&got), "every typed config inside it too")

	sa := got.GetAdmin().GetAddress().GetSocketAddress()
	assert.Equal(t, "127.0.0.1", sa.GetAddress(), "admin on loopback only")
	assert.Equal(t, uint32(41234), sa.GetPortValue())
	pipes := 0
	for _, c := range got.GetStaticResources().GetClusters() {
		for _, le := range c.GetLoadAssignment().GetEndpoints() {
			for _, e := range le.GetLbEndpoints() {
				if p := e.GetEndpoint().GetAddress().GetPipe(); p != nil {
					assert.Equal(t, filepath.Join(stateDir, xds.DefaultSocketName), p.GetPath(), "cluster %s", c.GetName())
					pipes++
				}
			}
		}
	}
	assert.Equal(t, 2, pipes, "xDS and the access log service, both on the agent's socket")

	// Nothing else differs from the DaemonSet's.
	want := daemonSetBootstrap(t)
	want.GetAdmin().GetAddress().GetSocketAddress().PortSpecifier = sa.PortSpecifier
	for _, c := range want.GetStaticResources().GetClusters() {
		c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetPipe().Path =
			filepath.Join(stateDir, xds.DefaultSocketName)
	}
	assert.True(t, proto.Equal(want, &got), "only the socket and the admin port change:\nwant %v\ngot  %v", want, &got)
}

// Input that is not the DaemonSet's bootstrap is refused, naming the
// file and the field.
func TestEnvoyBootstrapErrors(t *testing.T) {
	cm := string(readRepoFile(t, harness.EnvoyConfigMapFile))
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"not a ConfigMap", strings.Replace(cm, "kind: ConfigMap", "kind: Secret", 1), `kind is "Secret", not ConfigMap`},
		{"no bootstrap", strings.Replace(cm, "  envoy.yaml: |", "  other.yaml: |", 1), "no data.envoy.yaml"},
		{"a field Envoy does not know", strings.Replace(cm, "    node:\n", "    nodes:\n", 1), `data.envoy.yaml as an Envoy bootstrap: `},
		{"not on the agent's socket", strings.ReplaceAll(cm, "/var/run/sluice/xds.sock", "/run/other.sock"), "no static cluster reaches the agent on /var/run/sluice/xds.sock"},
		{"no admin address", strings.Replace(cm, "address:\n        socket_address: { address: 127.0.0.1, port_value: 9901 }", "{}", 1), "admin.address.socket_address is not set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NotEqual(t, cm, tc.yaml, "the case changes the ConfigMap")
			_, err := harness.EnvoyBootstrap([]byte(tc.yaml), "/tmp/state", 9901)
			require.Error(t, err)
			assert.Contains(t, err.Error(), harness.EnvoyConfigMapFile)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// Envoy runs with the DaemonSet's command line: the node's name where the
// pod's would be, the generated bootstrap for the ConfigMap's.
func TestEnvoyArgs(t *testing.T) {
	args, err := harness.EnvoyArgs(readRepoFile(t, harness.DaemonSetFile), "node1", "/tmp/state/envoy-1.json")
	require.NoError(t, err)
	at := func(flag string) string {
		i := slices.Index(args, flag)
		require.GreaterOrEqual(t, i, 0, "%s in %v", flag, args)
		require.Less(t, i+1, len(args))
		return args[i+1]
	}
	assert.Equal(t, "/tmp/state/envoy-1.json", at("--config-path"))
	assert.Equal(t, "node1", at("--service-node"))
	assert.Equal(t, "sluice-envoy", at("--service-cluster"))
	assert.Contains(t, args, "--disable-hot-restart", "no shared memory between the Envoys of one machine")
	assert.NotContains(t, strings.Join(args, " "), "$(", "every variable substituted")
	assert.NotEqual(t, "envoy", args[0], "the program is the caller's")

	_, err = harness.EnvoyArgs([]byte("kind: DaemonSet\nspec: {template: {spec: {containers: [{name: agent}]}}}\n"), "n", "c")
	require.ErrorContains(t, err, `daemonset/daemonset.yaml: no container "envoy"`)
	_, err = harness.EnvoyArgs([]byte("kind: DaemonSet\nspec: {template: {spec: {containers: [{name: envoy, args: [--log-level, info]}]}}}\n"), "n", "c")
	require.ErrorContains(t, err, "container envoy: no --config-path")
}

// SLUICE_ENVOY is the binary or a clear error, never a silent fall back.
func TestEnvoyBinary(t *testing.T) {
	t.Setenv(harness.EnvEnvoy, "")
	p, err := harness.EnvoyBinary()
	require.NoError(t, err)
	require.Empty(t, p, "unset: the test proxy")

	t.Setenv(harness.EnvEnvoy, "/nonexistent")
	_, err = harness.EnvoyBinary()
	require.EqualError(t, err, "SLUICE_ENVOY=/nonexistent: no such file")

	dir := t.TempDir()
	plain := filepath.Join(dir, "envoy.txt")
	require.NoError(t, os.WriteFile(plain, []byte("not a program"), 0o644))
	t.Setenv(harness.EnvEnvoy, plain)
	_, err = harness.EnvoyBinary()
	require.ErrorContains(t, err, "SLUICE_ENVOY="+plain+": ")

	exe := filepath.Join(dir, "envoy")
	require.NoError(t, os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755))
	t.Setenv(harness.EnvEnvoy, exe)
	p, err = harness.EnvoyBinary()
	require.NoError(t, err)
	require.Equal(t, exe, p)
}

// The HTTP workloads a real Envoy needs behind and in front of it: the
// server answers whoami, whoiscalling and otherwise its request line; a
// one-shot request returns any status; the client keeps one connection
// and sees it reset.
func TestHTTPWorkloads(t *testing.T) {
	t.Parallel()
	c := harness.NewTestCluster(t, harness.Options{Name: "http"})
	n, err := c.AddNode(context.Background(), "node1", harness.Routed)
	require.NoError(t, err)
	web, err := n.AddPod(context.Background(), "x", "web", nil)
	require.NoError(t, err)
	cli, err := n.AddPod(context.Background(), "x", "cli", nil)
	require.NoError(t, err)
	srv, err := web.StartHTTPServer(8080)
	require.NoError(t, err)

	ctx := ctxT(t, 20*time.Second)
	for path, want := range map[string]string{
		"/api/items?a=1": "GET /api/items?a=1 HTTP/1.1",
		"/api/whoami":    "x/web",
		"/whoami":        "x/web",
	} {
		r, err := cli.HTTPRequest(ctx, web.IP, 8080, "GET", path)
		require.NoError(t, err)
		assert.Equal(t, harness.HTTPReply{Status: 200, Body: want}, r, path)
	}
	r, err := cli.HTTPRequest(ctx, web.IP, 8080, "DELETE", "/api/whoiscalling")
	require.NoError(t, err)
	assert.Equal(t, 200, r.Status)
	assert.True(t, strings.HasPrefix(r.Body, cli.IP.String()+":"), "the client's address: %s", r.Body)
	_, err = cli.HTTPRequest(ctx, web.IP, 8081, "GET", "/")
	require.ErrorContains(t, err, "connection refused")

	cl, err := cli.StartHTTPClient(web.IP, 8080, "/api/seq", 50*time.Millisecond)
	require.NoError(t, err)
	require.NoError(t, cl.WaitRoundTrips(ctx, 3))
	assert.Zero(t, cl.Failures(), "%v", cl.LastErr())
	assert.Equal(t, cli.IP, cl.LocalAddr.Addr())
	// The server goes: the one connection ends, it is not reopened.
	require.NoError(t, srv.Stop())
	require.Eventually(t, func() bool { return cl.Closed() != nil }, 5*time.Second, 20*time.Millisecond)
}
