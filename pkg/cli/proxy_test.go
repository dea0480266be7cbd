package cli_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/api"
)

const ldsType = "type.googleapis.com/envoy.config.listener.v3.Listener"

var testProxy = api.ProxyStatus{
	Socket: "/var/run/sluice/xds.sock", Version: "9f2c", PushedAt: t0, Pushes: 3,
	Listeners: []api.ProxyListener{{Name: "l7-15001", Port: 15001, Rules: 2}, {Name: "l7-15002", Port: 15002, Rules: 1, Audit: true}},
	Streams:   []api.ProxyStream{{ID: 1, Node: "worker-1", Opened: t0}},
	Acks: []api.ProxyAck{
		{TypeURL: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Version: "9f2c", Node: "worker-1", At: t0, Latency: 1500 * time.Microsecond},
		{TypeURL: ldsType, Version: "77aa", Node: "worker-1", At: t0, Latency: 2 * time.Millisecond},
	},
	NACKs: 1,
	LastNACK: &api.ProxyNACK{TypeURL: ldsType, Version: "9f2c", Resources: []string{"l7-15001", "l7-15002"},
		Message: "cannot bind '127.0.0.1:15002': Address already in use", Node: "worker-1", At: t0},
	LastError:   "rule shop/api/ports[0]/rules[0] (listener l7-15001): method: \"GET(\" is not a regular expression",
	LastErrorAt: t0,
}

func TestProxyStatus(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle(api.PathProxy, serveJSON(testProxy))
	dir := fakeAgent(t, mux)

	out, err := run(t, "--state-dir", dir, "proxy", "status")
	require.NoError(t, err)
	requireLine(t, out, "Socket: /var/run/sluice/xds.sock")
	require.Regexp(t, `(?m)^Version:\s+9f2c \(served \S+ ago, 3 pushes\)$`, out)
	requireLine(t, out, "In sync: no (Envoy has not acknowledged version 9f2c of every type)")
	requireLine(t, out, "l7-15001 15001 2 enforce")
	requireLine(t, out, "l7-15002 15002 1 audit")
	require.Regexp(t, `(?m)^\s+1\s+worker-1\s+\S+$`, out)
	require.Regexp(t, `(?m)^\s+Listener\s+77aa\s+worker-1\s+2ms\s+\S+$`, out)
	require.Regexp(t, `(?m)^\s+Cluster\s+9f2c\s+worker-1\s+1\.5ms\s+\S+$`, out)
	require.Regexp(t, `(?m)^NACKs:\s+1; the last \S+ ago, node worker-1 rejected version 9f2c of Listener l7-15001, l7-15002:$`, out)
	requireLine(t, out, "cannot bind '127.0.0.1:15002': Address already in use")
	require.Contains(t, out, `Not served:  rule shop/api/ports[0]/rules[0] (listener l7-15001): method: "GET(" is not a regular expression`)

	out, err = run(t, "--state-dir", dir, "proxy", "status", "-o", "json")
	require.NoError(t, err)
	var got api.ProxyStatus
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	require.Equal(t, testProxy, got)
}

func TestProxyStatusInSyncAndOff(t *testing.T) {
	synced := api.ProxyStatus{Socket: "/run/x/xds.sock", Version: "abc", PushedAt: t0, Pushes: 1,
		Streams: []api.ProxyStream{{ID: 7, Node: "n", Opened: t0}},
		Acks:    []api.ProxyAck{{TypeURL: ldsType, Version: "abc", At: t0}}}
	mux := http.NewServeMux()
	mux.Handle(api.PathProxy, serveJSON(synced))
	st := testStatus
	st.Proxy = &synced
	mux.Handle(api.PathStatus, serveJSON(st))
	dir := fakeAgent(t, mux)
	out, err := run(t, "--state-dir", dir, "proxy", "status")
	require.NoError(t, err)
	requireLine(t, out, "In sync: yes (Envoy acknowledged version abc)")
	requireLine(t, out, "Listeners: none")
	requireLine(t, out, "NACKs: 0")
	require.NotContains(t, out, "Not served")
	out, err = run(t, "--state-dir", dir, "status")
	require.NoError(t, err)
	requireLine(t, out, "Proxy (xDS): version abc, 0 listeners, 1 Envoy streams, in sync: yes (Envoy acknowledged version abc), 0 NACKs")

	// --xds=false: the agent answers 404 with why, and status says off.
	mux = http.NewServeMux()
	mux.HandleFunc(api.PathProxy, func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "the xDS server is off (--xds=false): this node serves no L7 policy", http.StatusNotFound)
	})
	mux.Handle(api.PathStatus, serveJSON(testStatus))
	dir = fakeAgent(t, mux)
	_, err = run(t, "--state-dir", dir, "proxy", "status")
	require.ErrorContains(t, err, "the xDS server is off (--xds=false)")
	out, err = run(t, "--state-dir", dir, "status")
	require.NoError(t, err)
	requireLine(t, out, "Proxy (xDS): off")
}
