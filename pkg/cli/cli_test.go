package cli_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/datapathtest"
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/cli"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/servicesync"
)

// run executes `sluice args...` as a user would and returns what it wrote
// to stdout.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := cli.NewRootCommand()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

// requireLine asserts that out has a line whose whitespace-separated fields
// read want: table columns are padded, so spacing is not part of the contract.
func requireLine(t *testing.T, out, want string) {
	t.Helper()
	want = strings.Join(strings.Fields(want), " ")
	for line := range strings.Lines(out) {
		if strings.Join(strings.Fields(line), " ") == want {
			return
		}
	}
	require.Failf(t, "line not found", "want a line reading %q in:\n%s", want, out)
}

// fakeAgent serves handler on <dir>/sluice.sock, as the agent does on its
// --state-dir, and returns dir.
func fakeAgent(t *testing.T, handler http.Handler) string {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(dir, api.SocketName))
	require.NoError(t, err)
	srv := &http.Server{Handler: handler}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Close())
		require.ErrorIs(t, <-done, http.ErrServerClosed)
	})
	return dir
}

func serveJSON(v any) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
}

var (
	t0 = time.Date(2025, 3, 14, 9, 26, 53, 589_000_000, time.UTC)

	testStatus = api.Status{
		NodeName:   "worker-1",
		Ready:      true,
		StartedAt:  t0,
		Source:     "files:/etc/sluice/state",
		BPFRoot:    "/sys/fs/bpf/sluice",
		StateDir:   "/var/run/sluice",
		CgroupRoot: "/sys/fs/cgroup",
		AttachMode: "tcx",
		Kernel:     api.KernelFeatures{Release: "6.18.0-1-amd64", TCX: true, RingBuf: false, SockDestroy: "sock-diag"},
		Endpoints:  3,
		CTEntries:  17,
		CTMax:      65536,
		SocketLB:   "all",
		Services:   api.ServicesStatus{Frontends: 4, Backends: 5, Applied: 12, ConnectionsCleaned: 2},
		Adopted:    true,
		EventsLost: 4,
		Counters: []api.Counter{
			{Verdict: "forwarded", Direction: "egress", Packets: 1200, Bytes: 95000},
			{Verdict: "dropped", Reason: "INVALID_SOURCE_IP", Direction: "ingress", Packets: 3, Bytes: 180},
		},
		Errors: []api.Error{
			{Component: "source", Message: "policy.yaml: unknown field \"spec.ingres\"", Time: t0.Add(time.Minute)},
			{Component: "endpoint", Message: "default/web-2: attach to veth9: no such device", Time: t0.Add(2 * time.Minute)},
		},
	}

	testEndpoints = []api.Endpoint{
		{ID: 3, Namespace: "default", Pod: "web-0", IPs: []string{"10.244.1.5", "fd00:10:244:1::5"}, Interface: "veth1a2b", IfIndex: 5, State: "ready"},
		{ID: 4, Namespace: "kube-system", Pod: "coredns-7d", IPs: []string{"10.244.1.6"}, State: "waiting-for-interface"},
		{ID: 7, Namespace: "default", Pod: "web-2", IPs: []string{"10.244.1.9"}, Interface: "veth9", IfIndex: 11, State: "error", Error: "attach to veth9: no such device"},
	}
)

func backend(id uint32, addrPort string, state string) api.Backend {
	ap := netip.MustParseAddrPort(addrPort)
	return api.Backend{ID: id, Address: ap.Addr(), Port: ap.Port(), Protocol: "TCP", State: state}
}

var (
	web    = api.NamespacedName{Namespace: "default", Name: "web"}
	dns    = api.NamespacedName{Namespace: "kube-system", Name: "kube-dns"}
	orders = api.NamespacedName{Namespace: "shop", Name: "orders"}

	testServices = api.Services{
		MaglevTableSize: 16381,
		Frontends: []api.Frontend{
			{
				ID: 1, Service: web, PortName: "http", Kind: "ClusterIP",
				Address: netip.MustParseAddr("10.96.0.10"), Port: 80, Protocol: "TCP",
				Algorithm: "random", SessionAffinity: true, AffinityTimeout: 10800,
				Backends: []api.Backend{
					backend(11, "10.244.1.5:8080", api.BackendActive),
					backend(12, "10.244.2.7:8080", "Terminating"),
				},
			},
			{
				ID: 2, Service: web, PortName: "http", Kind: "NodePort",
				Address: netip.MustParseAddr("0.0.0.0"), Port: 30080, Protocol: "TCP",
				Algorithm: "random", TrafficPolicyLocal: true, NoEndpoints: true, NoLocalEndpoints: true,
				ClusterFrontendID: 1,
			},
			{
				ID: 3, Service: dns, PortName: "dns", Kind: "ClusterIP",
				Address: netip.MustParseAddr("10.96.0.53"), Port: 53, Protocol: "UDP",
				Algorithm: "random", NoEndpoints: true,
			},
			{
				ID: 4, Service: orders, Kind: "ClusterIP",
				Address: netip.MustParseAddr("fd00:96::20"), Port: 443, Protocol: "TCP",
				Algorithm: "maglev",
				Backends: []api.Backend{
					backend(21, "[fd00:244:1::9]:8443", api.BackendActive),
					backend(22, "[fd00:244:2::4]:8443", api.BackendActive),
					backend(23, "[fd00:244:3::1]:8443", "NotReady"),
				},
			},
			{
				ID: 5, Service: orders, Kind: "LoadBalancer",
				Address: netip.MustParseAddr("2001:db8::80"), Port: 443, Protocol: "TCP",
				Algorithm: "maglev", ClusterFrontendID: 4,
				Backends: []api.Backend{
					backend(21, "[fd00:244:1::9]:8443", api.BackendActive),
				},
			},
		},
		Memory: []api.ServiceMemory{{Service: orders, Tables: 2, Bytes: 131048}},
	}
)

// agentMux serves the API paths with the given values.
func agentMux(st api.Status, eps []api.Endpoint) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle(api.PathStatus, serveJSON(st))
	mux.Handle(api.PathEndpoints, serveJSON(eps))
	mux.Handle(api.PathServices, serveJSON(testServices))
	return mux
}

func TestStatus(t *testing.T) {
	dir := fakeAgent(t, agentMux(testStatus, testEndpoints))

	t.Run("table", func(t *testing.T) {
		out, err := run(t, "--state-dir", dir, "status")
		require.NoError(t, err)
		require.Regexp(t, `(?m)^Node:\s+worker-1 \(ready, up \S+\)$`, out)
		requireLine(t, out, "Source: files:/etc/sluice/state")
		requireLine(t, out, "Kernel: 6.18.0-1-amd64 (tcx: yes, ring buffer: no)")
		requireLine(t, out, "Attach mode: tcx")
		requireLine(t, out, "BPF root: /sys/fs/bpf/sluice (adopted pinned state: yes)")
		requireLine(t, out, "Endpoints: 3")
		requireLine(t, out, "Conntrack: 17/65536 entries")
		requireLine(t, out, "Socket LB: all (UDP sockets of removed backends destroyed by sock-diag)")
		requireLine(t, out, "Services: 4 frontends, 5 backends (applied 12 times, 2 connections cleaned)")
		requireLine(t, out, "Events lost: 4")
		requireLine(t, out, "VERDICT DIRECTION REASON PACKETS BYTES")
		requireLine(t, out, "forwarded egress - 1200 95000")
		requireLine(t, out, "dropped ingress INVALID_SOURCE_IP 3 180")
		requireLine(t, out, `[source] policy.yaml: unknown field "spec.ingres"`)
		requireLine(t, out, "[endpoint] default/web-2: attach to veth9: no such device")
		require.NotContains(t, out, "Errors:        none")
	})

	t.Run("json", func(t *testing.T) {
		out, err := run(t, "--state-dir", dir, "status", "-o", "json")
		require.NoError(t, err)
		var got api.Status
		require.NoError(t, json.Unmarshal([]byte(out), &got), out)
		require.Equal(t, testStatus, got)
	})
}

func TestStatusNotReadyNoErrors(t *testing.T) {
	st := api.Status{
		NodeName: "worker-2", StartedAt: t0, AttachMode: "tc",
		Kernel: api.KernelFeatures{Release: "5.15.0", RingBuf: true},
		CTMax:  1024,
	}
	dir := fakeAgent(t, agentMux(st, nil))
	out, err := run(t, "--state-dir", dir, "status")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^Node:\s+worker-2 \(not ready, up \S+\)$`, out)
	requireLine(t, out, "Kernel: 5.15.0 (tcx: no, ring buffer: yes)")
	requireLine(t, out, "Attach mode: tc")
	requireLine(t, out, "Conntrack: 0/1024 entries")
	requireLine(t, out, "Socket LB: -")
	requireLine(t, out, "Services: 0 frontends, 0 backends (applied 0 times, 0 connections cleaned)")
	requireLine(t, out, "Errors: none")
	require.NotContains(t, out, "Counters:", "no counters means no counters table")
}

func TestEndpointList(t *testing.T) {
	dir := fakeAgent(t, agentMux(testStatus, testEndpoints))

	t.Run("table", func(t *testing.T) {
		out, err := run(t, "--state-dir", dir, "endpoint", "list")
		require.NoError(t, err)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 1+len(testEndpoints), out)
		requireLine(t, lines[0], "ID POD IPS INTERFACE STATE")
		requireLine(t, lines[1], "3 default/web-0 10.244.1.5,fd00:10:244:1::5 veth1a2b (5) ready")
		requireLine(t, lines[2], "4 kube-system/coredns-7d 10.244.1.6 - waiting-for-interface")
		requireLine(t, lines[3], "7 default/web-2 10.244.1.9 veth9 (11) error: attach to veth9: no such device")
	})

	t.Run("json", func(t *testing.T) {
		out, err := run(t, "--state-dir", dir, "endpoint", "list", "-o", "json")
		require.NoError(t, err)
		var got []api.Endpoint
		require.NoError(t, json.Unmarshal([]byte(out), &got), out)
		require.Equal(t, testEndpoints, got)
	})
}

// sluice events is observe under its old name: the same flows, the same
// flags, and a note on stderr only (scripts reading -o json keep working).
func TestEventsIsObserve(t *testing.T) {
	dir, _ := fakeObserver(t)
	for _, args := range [][]string{{"--last", "5"}, {"-o", "json", "--verdict", "DROPPED"}} {
		want, err := run(t, append([]string{"--state-dir", dir, "observe"}, args...)...)
		require.NoError(t, err)
		root := cli.NewRootCommand()
		var out, errOut bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&errOut)
		root.SetArgs(append([]string{"--state-dir", dir, "events"}, args...))
		require.NoError(t, root.ExecuteContext(t.Context()))
		require.Equal(t, want, out.String(), "sluice events %v", args)
		require.Contains(t, errOut.String(), "deprecated")
		require.Contains(t, errOut.String(), "sluice observe")
	}
}

func TestServiceList(t *testing.T) {
	dir := fakeAgent(t, agentMux(testStatus, testEndpoints))

	t.Run("table", func(t *testing.T) {
		out, err := run(t, "--state-dir", dir, "service", "list")
		require.NoError(t, err)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 1+len(testServices.Frontends)+1, out)
		requireLine(t, lines[0], "SERVICE KIND FRONTEND ALGORITHM BACKENDS")
		requireLine(t, lines[1], "default/web:http ClusterIP 10.96.0.10:80/TCP random affinity 10800s 10.244.1.5:8080, 10.244.2.7:8080 (Terminating)")
		requireLine(t, lines[2], "default/web:http NodePort 0.0.0.0:30080/TCP random none local (drops) [local]")
		requireLine(t, lines[3], "kube-system/kube-dns:dns ClusterIP 10.96.0.53:53/UDP random none (rejects)")
		// No port name: the port number stands in, as in Frontend.String.
		requireLine(t, lines[4], "shop/orders:443 ClusterIP [fd00:96::20]:443/TCP maglev [fd00:244:1::9]:8443, [fd00:244:2::4]:8443, [fd00:244:3::1]:8443 (NotReady)")
		requireLine(t, lines[5], "shop/orders:443 LoadBalancer [2001:db8::80]:443/TCP maglev [fd00:244:1::9]:8443")
		require.Equal(t, "maglev memory: shop/orders 2 tables, 131048 bytes", lines[6])
	})

	t.Run("filter", func(t *testing.T) {
		out, err := run(t, "--state-dir", dir, "service", "list", "--service", "default/web")
		require.NoError(t, err)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 3, out)
		require.Contains(t, lines[1], "default/web:http")
		require.Contains(t, lines[2], "default/web:http")
		require.NotContains(t, out, "maglev memory", "the memory lines are filtered too")

		out, err = run(t, "--state-dir", dir, "service", "list", "--service", "shop/orders")
		require.NoError(t, err)
		lines = strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 4, out)
		require.Equal(t, "maglev memory: shop/orders 2 tables, 131048 bytes", lines[3])

		out, err = run(t, "--state-dir", dir, "service", "list", "--service", "default/nope")
		require.NoError(t, err)
		require.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 1, "header only:\n%s", out)
	})

	t.Run("json", func(t *testing.T) {
		out, err := run(t, "--state-dir", dir, "service", "list", "-o", "json")
		require.NoError(t, err)
		var got api.Services
		require.NoError(t, json.Unmarshal([]byte(out), &got), out)
		require.Equal(t, testServices, got)

		out, err = run(t, "--state-dir", dir, "service", "list", "-o", "json", "--service", "kube-system/kube-dns")
		require.NoError(t, err)
		got = api.Services{}
		require.NoError(t, json.Unmarshal([]byte(out), &got), out)
		require.Equal(t, api.Services{MaglevTableSize: 16381, Frontends: testServices.Frontends[2:3]}, got)
	})

	t.Run("json without services", func(t *testing.T) {
		mux := http.NewServeMux()
		mux.Handle(api.PathServices, serveJSON(api.Services{MaglevTableSize: 16381}))
		out, err := run(t, "--state-dir", fakeAgent(t, mux), "service", "list", "-o", "json")
		require.NoError(t, err)
		require.JSONEq(t, `{"frontends": [], "maglevTableSize": 16381}`, out)
	})
}

// An empty list prints as [] in JSON so that scripts can iterate it.
func TestEmptyListsJSON(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle(api.PathEndpoints, serveJSON(nil)) // an agent may well send null
	dir := fakeAgent(t, mux)
	for _, cmd := range [][]string{{"endpoint", "list"}} {
		out, err := run(t, append([]string{"--state-dir", dir, "-o", "json"}, cmd...)...)
		require.NoError(t, err)
		require.JSONEq(t, "[]", out, "sluice %s -o json", strings.Join(cmd, " "))
	}
}

func TestAgentFlagOverridesStateDir(t *testing.T) {
	dir := fakeAgent(t, agentMux(testStatus, testEndpoints))
	elsewhere := filepath.Join(t.TempDir(), "no-agent-here")
	out, err := run(t, "--state-dir", elsewhere, "--agent", filepath.Join(dir, api.SocketName), "status")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^Node:\s+worker-1 \(ready`, out)
}

func TestAgentErrors(t *testing.T) {
	t.Run("not running", func(t *testing.T) {
		dir := t.TempDir()
		for _, cmd := range [][]string{{"status"}, {"endpoint", "list"}, {"service", "list"}} {
			_, err := run(t, append([]string{"--state-dir", dir}, cmd...)...)
			require.Error(t, err, "sluice %v", cmd)
			require.ErrorContains(t, err, filepath.Join(dir, api.SocketName))
			require.ErrorContains(t, err, "--state-dir")
			require.ErrorContains(t, err, "--agent")
		}
	})

	t.Run("bad output format", func(t *testing.T) {
		// No agent at all: the format is checked before anything is read.
		dir := t.TempDir()
		for _, cmd := range [][]string{{"status"}, {"endpoint", "list"}, {"service", "list"}, {"bpf", "ct", "list"}, {"bpf", "endpoint", "list"}, {"bpf", "lb", "list"}} {
			_, err := run(t, append([]string{"--state-dir", dir, "--bpf-root", dir, "-o", "yaml"}, cmd...)...)
			require.Error(t, err, "sluice %v", cmd)
			require.ErrorContains(t, err, `"yaml"`)
			require.ErrorContains(t, err, "table or json")
		}
	})

	t.Run("agent answers 500", func(t *testing.T) {
		dir := fakeAgent(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "state not loaded yet", http.StatusInternalServerError)
		}))
		out, err := run(t, "--state-dir", dir, "status")
		require.Error(t, err)
		require.ErrorContains(t, err, "500 Internal Server Error")
		require.ErrorContains(t, err, "state not loaded yet")
		require.Empty(t, out)
	})

	t.Run("agent answers garbage", func(t *testing.T) {
		dir := fakeAgent(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte("<html>not the agent</html>"))
		}))
		_, err := run(t, "--state-dir", dir, "endpoint", "list")
		require.Error(t, err)
		require.ErrorContains(t, err, api.PathEndpoints)
		require.ErrorContains(t, err, filepath.Join(dir, api.SocketName))
	})
}

// htons stores a port in network byte order, as the datapath does.
func htons(p uint16) uint16 {
	return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, p))
}

func addr16(a netip.Addr) (out [16]uint8) {
	if a.Is4() {
		b := a.As4()
		copy(out[:], b[:])
		return out
	}
	return a.As16()
}

func ctKey(ep uint32, src, dst netip.AddrPort) bpfobj.EndpointSlCtKey {
	k := bpfobj.EndpointSlCtKey{EpId: ep, Family: 2, Proto: 6, Sport: htons(src.Port()), Dport: htons(dst.Port())}
	k.Saddr.Addr6 = addr16(src.Addr())
	k.Daddr.Addr6 = addr16(dst.Addr())
	return k
}

// bpfRoot makes a fresh directory on bpffs, removed at the end of the test.
func bpfRoot(t *testing.T) string { return datapathtest.Root(t) }

// loadAndClose loads the datapath under dir, lets fill write to its maps,
// then closes it: the pins stay, as they do when the agent exits, and the
// CLI must read them with no agent and no program handle open.
func loadAndClose(t *testing.T, dir string, fill func(dp *datapath.Datapath)) {
	t.Helper()
	lock, err := datapath.LockRoot(dir)
	require.NoError(t, err)
	defer lock.Close()
	dp, err := datapath.Load(datapath.Config{BPFRoot: dir}, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, dp.Close()) }()
	fill(dp)
}

func TestBPFPinnedMaps(t *testing.T) {
	dir := bpfRoot(t)
	client := netip.MustParseAddrPort("10.244.1.5:43512")
	server := netip.MustParseAddrPort("192.0.2.10:443")
	loadAndClose(t, dir, func(dp *datapath.Datapath) {
		m := dp.Maps()
		require.NoError(t, m.PutEndpoint(datapath.EndpointEntry{IfIndex: 5, ID: 3, IPv4: netip.MustParseAddr("10.244.1.5")}))
		require.NoError(t, m.PutEndpoint(datapath.EndpointEntry{IfIndex: 6, ID: 4,
			IPv4: netip.MustParseAddr("10.244.1.6"), IPv6: netip.MustParseAddr("fd00:10:244:1::6")}))

		now := datapath.MonotonicNow()
		live := bpfobj.EndpointSlCtEntry{
			Expires: now + uint64(60*time.Second), Created: now - uint64(5*time.Second),
			PacketsOrig: 12, BytesOrig: 1500, PacketsReply: 10, BytesReply: 9000,
			State: 3, Origin: 2,
		}
		k := ctKey(3, client, server)
		require.NoError(t, dp.Objects().SlCt.Put(&k, &live))
		// An expired entry the GC has not reaped yet: not a live connection,
		// so not listed.
		expired := live
		expired.Expires = now - uint64(time.Second)
		k2 := ctKey(3, netip.MustParseAddrPort("10.244.1.5:40000"), server)
		require.NoError(t, dp.Objects().SlCt.Put(&k2, &expired))
	})

	t.Run("ct table", func(t *testing.T) {
		out, err := run(t, "--bpf-root", dir, "bpf", "ct", "list")
		require.NoError(t, err)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 2, "header and the one live entry:\n%s", out)
		requireLine(t, lines[0], "ENDPOINT SCOPE PROTO SOURCE DESTINATION STATE ORIGIN AGE EXPIRES PKTS (ORIG/REPLY) BYTES (ORIG/REPLY)")
		f := strings.Fields(lines[1])
		require.Len(t, f, 11, lines[1])
		require.Equal(t, []string{"3", "flow", "TCP", "10.244.1.5:43512", "192.0.2.10:443", "established", "egress"}, f[:7])
		require.Equal(t, []string{"12/10", "1500/9000"}, f[9:])
		// Age and expiry depend on how long the test took; bound them.
		age, err := time.ParseDuration(f[7])
		require.NoError(t, err)
		require.GreaterOrEqual(t, age, 5*time.Second)
		expires, err := time.ParseDuration(f[8])
		require.NoError(t, err)
		require.Greater(t, expires, time.Duration(0))
		require.LessOrEqual(t, expires, time.Minute)
	})

	t.Run("ct json", func(t *testing.T) {
		out, err := run(t, "--bpf-root", dir, "bpf", "ct", "list", "-o", "json")
		require.NoError(t, err)
		var got []datapath.CTEntry
		require.NoError(t, json.Unmarshal([]byte(out), &got), out)
		require.Len(t, got, 1)
		e := got[0]
		require.Equal(t, uint32(3), e.EndpointID)
		require.Equal(t, "TCP", e.Proto)
		require.Equal(t, client.String(), e.Src)
		require.Equal(t, server.String(), e.Dst)
		require.Equal(t, "established", e.State)
		require.Equal(t, "egress", e.Origin)
		require.Equal(t, [4]uint64{12, 1500, 10, 9000}, [4]uint64{e.PacketsOrig, e.BytesOrig, e.PacketsReply, e.BytesReply})
		require.GreaterOrEqual(t, e.Age, 5*time.Second)
		require.Greater(t, e.ExpiresIn, time.Duration(0))
		require.LessOrEqual(t, e.ExpiresIn, time.Minute)
	})

	t.Run("endpoint table", func(t *testing.T) {
		out, err := run(t, "--bpf-root", dir, "bpf", "endpoint", "list")
		require.NoError(t, err)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 3, out)
		requireLine(t, lines[0], "ID IFINDEX IPV4 IPV6 IDENTITY POLICY")
		requireLine(t, lines[1], "3 5 10.244.1.5 - 0 -")
		requireLine(t, lines[2], "4 6 10.244.1.6 fd00:10:244:1::6 0 -")
	})

	t.Run("endpoint json", func(t *testing.T) {
		out, err := run(t, "--bpf-root", dir, "bpf", "endpoint", "list", "-o", "json")
		require.NoError(t, err)
		var got []datapath.EndpointEntry
		require.NoError(t, json.Unmarshal([]byte(out), &got), out)
		require.Equal(t, []datapath.EndpointEntry{
			{IfIndex: 5, ID: 3, IPv4: netip.MustParseAddr("10.244.1.5")},
			{IfIndex: 6, ID: 4, IPv4: netip.MustParseAddr("10.244.1.6"), IPv6: netip.MustParseAddr("fd00:10:244:1::6")},
		}, got)
	})
}

func TestBPFEmptyMaps(t *testing.T) {
	dir := bpfRoot(t)
	loadAndClose(t, dir, func(*datapath.Datapath) {})
	for _, cmd := range [][]string{{"bpf", "ct", "list"}, {"bpf", "endpoint", "list"}} {
		out, err := run(t, append([]string{"--bpf-root", dir}, cmd...)...)
		require.NoError(t, err)
		require.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 1, "header only:\n%s", out)

		out, err = run(t, append([]string{"--bpf-root", dir, "-o", "json"}, cmd...)...)
		require.NoError(t, err)
		require.JSONEq(t, "[]", out, "sluice %s -o json", strings.Join(cmd, " "))
	}
}

// lbJSON is what `sluice bpf lb list -o json` prints.
type lbJSON struct {
	Frontends []struct {
		ID              uint32     `json:"id"`
		Address         netip.Addr `json:"address"`
		Port            uint16     `json:"port"`
		Protocol        string     `json:"protocol"`
		Flags           []string   `json:"flags"`
		AffinityTimeout uint32     `json:"affinityTimeout"`
		Slots           []uint32   `json:"slots"`
	} `json:"frontends"`
	Backends []struct {
		ID       uint32     `json:"id"`
		Address  netip.Addr `json:"address"`
		Port     uint16     `json:"port"`
		Protocol string     `json:"protocol"`
		State    string     `json:"state"`
	} `json:"backends"`
}

func TestBPFLBList(t *testing.T) {
	dir := bpfRoot(t)
	vip := datapath.LBFrontendKey{Addr: netip.MustParseAddr("10.96.0.10"), Port: 80, Proto: 6}
	dnsVIP := datapath.LBFrontendKey{Addr: netip.MustParseAddr("10.96.0.53"), Port: 53, Proto: 17}
	maglevVIP := datapath.LBFrontendKey{Addr: netip.MustParseAddr("10.96.0.90"), Port: 443, Proto: 6}
	want := datapath.LBState{
		Frontends: map[datapath.LBFrontendKey]datapath.LBFrontend{
			vip: {Key: vip, ID: 7, Flags: datapath.LBFlagAffinity, AffinityTimeout: 10800, Slots: []uint32{12, 11}},
			// A frontend without endpoints: its service entry, no slots.
			dnsVIP: {Key: dnsVIP, ID: 8},
			// A Maglev table is thousands of slots: the table lists each
			// backend once with its slot count.
			maglevVIP: {Key: maglevVIP, ID: 9, Flags: datapath.LBFlagMaglev, Slots: []uint32{12, 11, 12, 12, 11}},
		},
		Backends: map[uint32]datapath.LBBackend{
			11: {ID: 11, Addr: netip.MustParseAddr("10.244.1.5"), Port: 8080, Proto: 6},
			12: {ID: 12, Addr: netip.MustParseAddr("10.244.2.7"), Port: 8080, Proto: 6},
			// Terminating: kept for its established connections, in no slot.
			13: {ID: 13, Addr: netip.MustParseAddr("10.244.3.2"), Port: 8080, Proto: 6, Terminating: true},
		},
	}
	loadAndClose(t, dir, func(dp *datapath.Datapath) {
		require.NoError(t, dp.Maps().ApplyLB(servicesync.Plan(datapath.LBState{}, want)))
	})

	t.Run("table", func(t *testing.T) {
		out, err := run(t, "--bpf-root", dir, "bpf", "lb", "list")
		require.NoError(t, err)
		frontends, backends, ok := strings.Cut(strings.TrimSpace(out), "\n\n")
		require.True(t, ok, "two tables separated by a blank line:\n%s", out)
		lines := strings.Split(frontends, "\n")
		require.Len(t, lines, 4, out)
		requireLine(t, lines[0], "ID FRONTEND FLAGS SLOTS BACKENDS")
		requireLine(t, lines[1], "7 10.96.0.10:80/TCP affinity 2 12=10.244.2.7:8080,11=10.244.1.5:8080")
		requireLine(t, lines[2], "8 10.96.0.53:53/UDP - 0 -")
		requireLine(t, lines[3], "9 10.96.0.90:443/TCP maglev 5 12=10.244.2.7:8080 (3 slots),11=10.244.1.5:8080 (2 slots)")
		lines = strings.Split(backends, "\n")
		require.Len(t, lines, 4, out)
		requireLine(t, lines[0], "ID ADDRESS STATE")
		requireLine(t, lines[1], "11 10.244.1.5:8080/TCP active")
		requireLine(t, lines[2], "12 10.244.2.7:8080/TCP active")
		requireLine(t, lines[3], "13 10.244.3.2:8080/TCP terminating")
	})

	t.Run("json", func(t *testing.T) {
		out, err := run(t, "--bpf-root", dir, "bpf", "lb", "list", "-o", "json")
		require.NoError(t, err)
		var got lbJSON
		require.NoError(t, json.Unmarshal([]byte(out), &got), out)
		require.Len(t, got.Frontends, 3, out)
		f := got.Frontends[0]
		require.Equal(t, uint32(7), f.ID)
		require.Equal(t, vip.Addr, f.Address)
		require.Equal(t, uint16(80), f.Port)
		require.Equal(t, "TCP", f.Protocol)
		require.Equal(t, []string{"affinity"}, f.Flags)
		require.Equal(t, uint32(10800), f.AffinityTimeout)
		require.Equal(t, []uint32{12, 11}, f.Slots)
		f = got.Frontends[1]
		require.Equal(t, uint32(8), f.ID)
		require.Equal(t, "UDP", f.Protocol)
		require.Equal(t, []string{}, f.Flags)
		require.Equal(t, []uint32{}, f.Slots)
		f = got.Frontends[2]
		require.Equal(t, []string{"maglev"}, f.Flags)
		require.Equal(t, []uint32{12, 11, 12, 12, 11}, f.Slots, "JSON has every slot")

		require.Len(t, got.Backends, 3, out)
		for i, id := range []uint32{11, 12, 13} {
			b := got.Backends[i]
			require.Equal(t, id, b.ID)
			require.Equal(t, want.Backends[id].Addr, b.Address)
			require.Equal(t, uint16(8080), b.Port)
			require.Equal(t, "TCP", b.Protocol)
		}
		require.Equal(t, "active", got.Backends[0].State)
		require.Equal(t, "terminating", got.Backends[2].State)
	})
}

func TestBPFLBListEmpty(t *testing.T) {
	dir := bpfRoot(t)
	loadAndClose(t, dir, func(*datapath.Datapath) {})
	out, err := run(t, "--bpf-root", dir, "bpf", "lb", "list")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, "headers only:\n%s", out)
	requireLine(t, lines[0], "ID FRONTEND FLAGS SLOTS BACKENDS")
	require.Empty(t, lines[1])
	requireLine(t, lines[2], "ID ADDRESS STATE")

	out, err = run(t, "--bpf-root", dir, "bpf", "lb", "list", "-o", "json")
	require.NoError(t, err)
	require.JSONEq(t, `{"frontends": [], "backends": []}`, out)
}

func TestBPFWrongRoot(t *testing.T) {
	// Needs no privilege: nothing is pinned here, so opening fails first.
	dir := filepath.Join(t.TempDir(), "not-a-bpf-root")
	for _, cmd := range [][]string{{"bpf", "ct", "list"}, {"bpf", "endpoint", "list"}, {"bpf", "lb", "list"}} {
		out, err := run(t, append([]string{"--bpf-root", dir}, cmd...)...)
		require.Error(t, err, "sluice %v", cmd)
		require.ErrorContains(t, err, "--bpf-root")
		require.ErrorContains(t, err, dir)
		require.True(t, errors.Is(err, os.ErrNotExist), "want the cause kept: %v", err)
		require.Empty(t, out)
	}
}

func TestHelpOnEveryCommand(t *testing.T) {
	var walk func(c *cobra.Command)
	seen := 0
	walk = func(c *cobra.Command) {
		seen++
		// CommandPath is "sluice endpoint list"; the args are what follows.
		args := append(strings.Fields(c.CommandPath())[1:], "--help")
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			require.NotEmpty(t, c.Short, "every command needs a Short description")
			out, err := run(t, args...)
			require.NoError(t, err)
			require.Contains(t, out, c.Short)
			require.Contains(t, out, "Usage:")
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(cli.NewRootCommand())
	// sluice, status, events, endpoint, endpoint list, service, service list,
	// bpf, bpf ct, bpf ct list, bpf endpoint, bpf endpoint list, bpf lb,
	// bpf lb list, policy, policy get, identity, identity list, bpf policy,
	// bpf policy list, bpf ipcache, bpf ipcache list, bpf metrics,
	// bpf metrics list, observe, map, proxy, proxy status, policy trace, policy suggest.
	require.Equal(t, 30, seen)
}

// The policy, ipcache and counter maps decoded from the pins alone.
func TestBPFPolicyMapsFromPins(t *testing.T) {
	dir := bpfRoot(t)
	loadAndClose(t, dir, func(dp *datapath.Datapath) {
		m := dp.Maps()
		require.NoError(t, m.WriteEndpointPolicy(3, datapath.EndpointPolicy{
			Entries: []datapath.PolicyEntry{
				{Identity: datapath.IdentityHost, Dir: 1, Verdict: datapath.VerdictAllow, Rule: 1},
				{Identity: 300, Dir: 1, Proto: 6, Port: 8192, PortPrefixLen: 8, Verdict: datapath.VerdictAllow, Rule: 7},
				{Identity: 1<<24 + 1, Dir: 2, Proto: 17, Port: 53, PortPrefixLen: 16, Verdict: datapath.VerdictRedirect, ProxyPort: 15001, Rule: 8},
			},
			CIDRs: []datapath.PolicyCIDR{{Dir: 2, Prefix: netip.MustParsePrefix("192.0.2.0/24"), Class: 1<<24 + 1}},
		}))
		_, _, err := m.SyncIPCache(map[netip.Prefix]datapath.IPCacheEntry{
			netip.MustParsePrefix("10.244.1.5/32"): {Identity: 300, EndpointID: 3},
			netip.MustParsePrefix("0.0.0.0/0"):     {Identity: datapath.IdentityWorld},
		})
		require.NoError(t, err)
		// One packet on an interface with no endpoint entry: a counter.
		_, err = dp.Objects().SlFromEp.Run(&ebpf.RunOptions{Data: make([]byte, 64)})
		require.NoError(t, err)
	})

	out, err := run(t, "--bpf-root", dir, "bpf", "policy", "list")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	requireLine(t, lines[0], "ENDPOINT DIRECTION IDENTITY PROTO PORTS VERDICT RULE")
	requireLine(t, lines[1], "3 ingress 1 (host) any any allowed 1")
	requireLine(t, lines[2], "3 ingress 300 TCP 8192-8447 allowed 7")
	requireLine(t, lines[3], "3 egress cidr-class 1 UDP 53 redirect:15001 8")
	requireLine(t, lines[5], "ENDPOINT DIRECTION PREFIX CLASS")
	requireLine(t, lines[6], "3 egress 192.0.2.0/24 cidr-class 1")

	out, err = run(t, "--bpf-root", dir, "bpf", "ipcache", "list")
	require.NoError(t, err)
	lines = strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	requireLine(t, lines[1], "0.0.0.0/0 2 (world) -")
	requireLine(t, lines[2], "10.244.1.5/32 300 3")

	out, err = run(t, "--bpf-root", dir, "bpf", "metrics", "list")
	require.NoError(t, err)
	require.Contains(t, out, "METRIC")
	require.Regexp(t, `passed-non-ip\s+egress\s+-\s+1\s+64`, out)
}

// Pins an agent of another version wrote (a fingerprint in sl_layout that
// is not this build's) are refused with an error naming the map, never
// decoded with this build's layout.
func TestBPFRefusesAnotherLayout(t *testing.T) {
	dir := bpfRoot(t)
	loadAndClose(t, dir, func(dp *datapath.Datapath) {
		require.NoError(t, dp.Maps().PutEndpoint(datapath.EndpointEntry{IfIndex: 5, ID: 3, IPv4: netip.MustParseAddr("10.244.1.5")}))
	})
	layouts, err := ebpf.LoadPinnedMap(filepath.Join(dir, bpfobj.EndpointMapSlLayout), nil)
	require.NoError(t, err)
	defer layouts.Close()
	key := func(name string) bpfobj.EndpointSlLayoutKey {
		var k bpfobj.EndpointSlLayoutKey
		for i := range name {
			k.Name[i] = int8(name[i])
		}
		return k
	}

	for _, c := range []struct {
		m   string
		cmd []string
	}{
		{bpfobj.EndpointMapSlCt, []string{"bpf", "ct", "list"}},
		{bpfobj.EndpointMapSlEndpoints, []string{"bpf", "endpoint", "list"}},
		{bpfobj.EndpointMapSlLbMaglev, []string{"bpf", "lb", "list"}},
		{bpfobj.EndpointMapSlPolicy, []string{"bpf", "policy", "list"}},
		{bpfobj.EndpointMapSlPolicyCidr, []string{"bpf", "policy", "list", "-o", "json"}},
		{bpfobj.EndpointMapSlIpcache, []string{"bpf", "ipcache", "list"}},
		{bpfobj.EndpointMapSlMetrics, []string{"bpf", "metrics", "list"}},
	} {
		t.Run(c.m, func(t *testing.T) {
			k := key(c.m)
			var good uint64
			require.NoError(t, layouts.Lookup(&k, &good))
			defer func() { require.NoError(t, layouts.Put(&k, good)) }()
			_, err := run(t, append([]string{"--bpf-root", dir}, c.cmd...)...)
			require.NoError(t, err, "the agent's own layout reads")

			require.NoError(t, layouts.Put(&k, uint64(0xbad)))
			out, err := run(t, append([]string{"--bpf-root", dir}, c.cmd...)...)
			require.ErrorIs(t, err, datapath.ErrLayoutMismatch)
			require.ErrorContains(t, err, "pinned map "+c.m+" has layout 0xbad but this sluice expects 0x")
			require.ErrorContains(t, err, "different version of sluice; use its own CLI")
			require.Empty(t, out)

			require.NoError(t, layouts.Delete(&k))
			_, err = run(t, append([]string{"--bpf-root", dir}, c.cmd...)...)
			require.ErrorIs(t, err, datapath.ErrLayoutMismatch)
			require.ErrorContains(t, err, "pinned map "+c.m+" has no recorded layout")
		})
	}
}
