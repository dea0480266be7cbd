//go:build !sluice_edge

package agent

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/xds"
)

// getProxy asks the agent's API socket in dir for the proxy status.
func getProxy(t *testing.T, dir string) (int, []byte) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(dir, api.SocketName))
	}}}
	resp, err := client.Get("http://agent" + api.PathProxy)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

// TestProxyAPI: with --xds (the default) the agent serves xDS on
// <state-dir>/xds.sock, fed the (for now empty) L7 config, and answers
// /v1/proxy with the server's status; with --xds=false it answers 404
// saying so, and status carries no proxy.
func TestProxyAPI(t *testing.T) {
	dir := t.TempDir()
	opts := Defaults()
	opts.StateDir, opts.SocketGroup = dir, ""
	require.True(t, opts.XDS, "on by default")
	a := &Agent{opts: opts, log: slog.New(slog.DiscardHandler), l7: noL7{}}
	srvX, err := a.newXDS()
	require.NoError(t, err)
	require.NoError(t, srvX.Start())
	t.Cleanup(srvX.Close)
	a.xds = srvX
	require.FileExists(t, filepath.Join(dir, xds.DefaultSocketName))
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); srvX.Run(ctx, a.l7, nil) }()
	t.Cleanup(func() { cancel(); <-ran })

	srv, err := a.listenAPI()
	require.NoError(t, err)
	go func() { _ = srv.serve(context.Background()) }()
	t.Cleanup(srv.shutdown)
	require.Eventually(t, func() bool { return srvX.Status().Version != "" }, 5*time.Second, 10*time.Millisecond, "the empty config served")
	code, body := getProxy(t, dir)
	require.Equal(t, http.StatusOK, code, string(body))
	var st api.ProxyStatus
	require.NoError(t, json.Unmarshal(body, &st))
	want, err := xds.Version(l7.Config{}, xds.ResourceOptions{})
	require.NoError(t, err)
	assert.Equal(t, want, st.Version)
	assert.Equal(t, filepath.Join(dir, xds.DefaultSocketName), st.Socket)
	assert.Empty(t, st.Listeners)
	assert.Empty(t, proxyErrors(a.proxyStatus()))

	// An L7 config that cannot be served is an error of `sluice status`.
	bad := l7.Config{Listeners: []l7.Listener{{Name: "l7-1", Port: 15001, Rules: []l7.Rule{{Ref: l7.RuleRef{Namespace: "ns", Policy: "p"}, Method: "("}}}}}
	require.Error(t, srvX.Update(bad))
	errs := proxyErrors(a.proxyStatus())
	require.Len(t, errs, 1)
	assert.Equal(t, "proxy", errs[0].Component)
	assert.Contains(t, errs[0].Message, "L7 config not served (the previous one still is): rule ns/p/ports[0]/rules[0] (listener l7-1): method")

	off := &Agent{opts: opts, log: a.log}
	off.opts.StateDir = t.TempDir()
	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	off.opts.AddFlags(fs)
	require.NoError(t, fs.Parse([]string{"--xds=false"}))
	require.False(t, off.opts.XDS)
	offX, err := off.newXDS()
	require.NoError(t, err)
	require.Nil(t, offX)
	srv2, err := off.listenAPI()
	require.NoError(t, err)
	go func() { _ = srv2.serve(context.Background()) }()
	t.Cleanup(srv2.shutdown)
	code, body = getProxy(t, off.opts.StateDir)
	assert.Equal(t, http.StatusNotFound, code)
	assert.Contains(t, string(body), "--xds=false")
	assert.Nil(t, off.proxyStatus())
}
