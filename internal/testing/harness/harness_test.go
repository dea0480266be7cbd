package harness_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/api"
)

func TestMain(m *testing.M) {
	// The agent-plumbing test starts this binary as a stand-in agent.
	if slices.Contains(os.Args, "--source=files") {
		os.Exit(fakeAgent(os.Args[1:]))
	}
	harness.Main(m)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// checkReachable asserts TCP, UDP and ICMP from src to dst, and that the
// reply came from dst's servers (whoami).
func checkReachable(t *testing.T, src *harness.Host, dst *harness.Pod) {
	t.Helper()
	checkReachableAt(t, src, dst, dst.IP)
}

// checkReachableAt checks TCP, UDP and ping from src to dst at its
// address addr (of either family).
func checkReachableAt(t *testing.T, src *harness.Host, dst *harness.Pod, addr netip.Addr) {
	t.Helper()
	ctx := ctxT(t, 20*time.Second)
	reply, err := src.TCPRequest(ctx, addr, 8080, "hello "+dst.Name)
	require.NoError(t, err, "tcp to %s", dst)
	assert.Equal(t, "hello "+dst.Name, reply)
	who, err := src.TCPRequest(ctx, addr, 8080, "whoami")
	require.NoError(t, err)
	assert.Equal(t, dst.String(), who)
	udp, err := src.UDPRequest(ctx, addr, 5353, "whoami")
	require.NoError(t, err, "udp to %s at %s", dst, addr)
	assert.Equal(t, dst.String(), udp)
	require.NoError(t, src.Ping(ctx, addr), "ping %s at %s", dst, addr)
}

// addServingPod adds a pod running TCP echo on 8080 and UDP echo on 5353.
func addServingPod(t *testing.T, n *harness.Node, ns, name string) *harness.Pod {
	t.Helper()
	return addServingPodFamily(t, n, harness.IPv4, ns, name)
}

func addServingPodFamily(t *testing.T, n *harness.Node, fam harness.Family, ns, name string) *harness.Pod {
	t.Helper()
	p, err := n.AddPodFamily(context.Background(), fam, ns, name, map[string]string{"app": name},
		harness.Port{Name: "tcp", Port: 8080}, harness.Port{Name: "udp", Port: 5353, Protocol: "UDP"})
	require.NoError(t, err)
	_, err = p.StartTCPEchoServer(8080)
	require.NoError(t, err)
	_, err = p.StartUDPEchoServer(5353)
	require.NoError(t, err)
	return p
}

func TestSameNode(t *testing.T) {
	for _, mode := range []harness.Mode{harness.Routed, harness.Bridge} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			c := harness.NewTestCluster(t, harness.Options{Name: "same"})
			n, err := c.AddNode(context.Background(), "node1", mode)
			require.NoError(t, err)
			a := addServingPod(t, n, "default", "a")
			b := addServingPod(t, n, "other", "b")
			checkReachable(t, &a.Host, b)
			checkReachable(t, &b.Host, a)

			ctx := ctxT(t, 10*time.Second)
			routes, err := n.Exec(ctx, "ip", "-4", "route")
			require.NoError(t, err)
			proxyARP, err := n.Exec(ctx, "cat", "/proc/sys/net/ipv4/conf/"+a.HostIfName+"/proxy_arp")
			require.NoError(t, err)
			podRoutes, err := a.Exec(ctx, "ip", "-4", "route")
			require.NoError(t, err)
			switch mode {
			case harness.Routed:
				assert.Contains(t, routes, a.IP.String()+" dev "+a.HostIfName+" scope link")
				assert.Equal(t, "1", strings.TrimSpace(proxyARP))
				assert.Contains(t, podRoutes, "default via 169.254.1.1 dev eth0 onlink")
				assert.Equal(t, 32, mustPrefixLen(t, a))
			case harness.Bridge:
				assert.NotContains(t, routes, a.IP.String()+" dev")
				master, err := n.Exec(ctx, "ip", "-o", "link", "show", "master", harness.BridgeName)
				require.NoError(t, err)
				assert.Contains(t, master, a.HostIfName+"@")
				assert.Contains(t, podRoutes, "default via "+n.PodCIDR.Addr().Next().String()+" dev eth0")
				assert.Equal(t, 24, mustPrefixLen(t, a))
			}
			assert.True(t, n.PodCIDR.Contains(a.IP) && n.PodCIDR.Contains(b.IP))
			assert.NotEqual(t, a.IP, b.IP)
			assert.LessOrEqual(t, len(a.HostIfName), 15)
			assert.Len(t, a.MAC, 6)
		})
	}
}

func mustPrefixLen(t *testing.T, p *harness.Pod) int {
	t.Helper()
	out, err := p.Exec(context.Background(), "ip", "-4", "-o", "addr", "show", "dev", "eth0")
	require.NoError(t, err)
	for _, f := range strings.Fields(out) {
		if ip, n, ok := strings.Cut(f, "/"); ok && ip == p.IP.String() {
			var bits int
			_, err := fmt.Sscan(n, &bits)
			require.NoError(t, err)
			return bits
		}
	}
	t.Fatalf("no %s on eth0 of %s: %s", p.IP, p, out)
	return 0
}

func TestAcrossNodesAndExternal(t *testing.T) {
	t.Parallel()
	c := harness.NewTestCluster(t, harness.Options{Name: "cross"})
	ctx := context.Background()
	// The external host comes first so that routes to later nodes' pod
	// CIDRs must be added to it afterwards.
	ext, err := c.AddExternal(ctx, "ext1")
	require.NoError(t, err)
	n1, err := c.AddNode(ctx, "node1", harness.Routed)
	require.NoError(t, err)
	n2, err := c.AddNode(ctx, "node2", harness.Bridge)
	require.NoError(t, err)
	a := addServingPodFamily(t, n1, harness.DualStack, "default", "a")
	b := addServingPodFamily(t, n2, harness.DualStack, "default", "b")

	// Both families cross the underlay: IPv4 and IPv6 pod CIDRs are
	// routed via the nodes' underlay addresses of that family.
	for _, fam := range []func(*harness.Pod) netip.Addr{func(p *harness.Pod) netip.Addr { return p.IP }, (*harness.Pod).IPv6} {
		checkReachableAt(t, &a.Host, b, fam(b))
		checkReachableAt(t, &b.Host, a, fam(a))
		checkReachableAt(t, &ext.Host, a, fam(a))
		checkReachableAt(t, &ext.Host, b, fam(b))
	}

	// Node to remote pod, over the underlay.
	reply, err := n2.TCPRequest(ctxT(t, 10*time.Second), a.IP, 8080, "from node2")
	require.NoError(t, err)
	assert.Equal(t, "from node2", reply)

	assert.Equal(t, "172.31.0.10", n1.IP.String())
	assert.Equal(t, "10.244.11.0/24", n2.PodCIDR.String())
	assert.Equal(t, "172.31.0.200", ext.IP.String())
	assert.Equal(t, "fd00:31::b", n2.IP6.String())
	assert.Equal(t, "fd00:31::c8", ext.IP6.String())
}

// A pod of a bridge node keeps reaching other nodes through its gateway
// (the bridge) when another pod leaves the bridge. A bridge with no address
// of its own takes the lowest of its ports' and takes another when that
// port goes: the pods' neighbour entries for the gateway would then name a
// MAC nobody answers to, and their traffic to other nodes would be lost
// until those entries expire (half a minute and more), as a bridge CNI's
// pods would not see it (the CNI's bridge keeps its address).
func TestBridgeGatewaySurvivesPodChurn(t *testing.T) {
	t.Parallel()
	c := harness.NewTestCluster(t, harness.Options{Name: "brmac"})
	ctx := context.Background()
	n1, err := c.AddNode(ctx, "node1", harness.Routed)
	require.NoError(t, err)
	n2, err := c.AddNode(ctx, "node2", harness.Bridge)
	require.NoError(t, err)
	a := addServingPod(t, n1, "default", "a")
	client, err := n2.AddPod(ctx, "default", "client", nil)
	require.NoError(t, err)
	low, err := n2.AddPod(ctx, "default", "low", nil)
	require.NoError(t, err)
	// The lowest address a kernel-chosen (locally administered) MAC can
	// have: the port with it is the one an unpinned bridge takes its own
	// from.
	out, err := n2.Exec(ctxT(t, 10*time.Second), "ip", "link", "set", low.HostIfName, "address", "02:00:00:00:00:01")
	require.NoError(t, err, out)
	brMAC := func() string {
		// (The node shares the test's mount namespace, so its /sys shows
		// the test's own interfaces: ask netlink.)
		out, err := n2.Exec(ctxT(t, 10*time.Second), "ip", "-br", "link", "show", "dev", harness.BridgeName)
		require.NoError(t, err)
		f := strings.Fields(out)
		require.GreaterOrEqual(t, len(f), 3, "ip -br link: %s", out)
		return f[2]
	}
	before := brMAC()

	// The client resolves its gateway, then the pod leaves the bridge.
	reply, err := client.TCPRequest(ctxT(t, 10*time.Second), a.IP, 8080, "before")
	require.NoError(t, err)
	require.Equal(t, "before", reply)
	require.NoError(t, low.Delete())
	assert.Equal(t, before, brMAC(), "the bridge's MAC changed when a pod left")
	// Well within the gateway's neighbour entry's life: a frame to a MAC
	// that is gone would be lost, and so would the SYN's retransmissions.
	reply, err = client.TCPRequest(ctxT(t, 3*time.Second), a.IP, 8080, "after")
	require.NoError(t, err, "the client no longer reaches another node through its gateway")
	require.Equal(t, "after", reply)
}

func TestWorkloadPlacement(t *testing.T) {
	t.Parallel()
	c := harness.NewTestCluster(t, harness.Options{Name: "place"})
	n, err := c.AddNode(context.Background(), "node1", harness.Routed)
	require.NoError(t, err)
	p, err := n.AddPod(context.Background(), "default", "web", nil)
	require.NoError(t, err)
	srv, err := p.StartTCPEchoServer(8080)
	require.NoError(t, err)

	cg2, err := harness.Cgroup2Mount()
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(n.CgroupRoot, "default_web"), p.CgroupPath)
	assert.Equal(t, "0::/"+strings.TrimPrefix(p.CgroupPath, cg2+"/"), cgroupV2Line(t, srv.Pid()))
	assert.Equal(t, netnsInode(t, p.NetnsPath), pidNetns(t, srv.Pid()))
	assert.NotEqual(t, pidNetns(t, os.Getpid()), pidNetns(t, srv.Pid()))

	// One-shot commands land in the same place.
	out, err := p.Exec(ctxT(t, 10*time.Second), "sh", "-c", "cat /proc/self/cgroup; readlink /proc/self/ns/net")
	require.NoError(t, err)
	assert.Contains(t, out, "0::/"+strings.TrimPrefix(p.CgroupPath, cg2+"/")+"\n")
	assert.Contains(t, out, netnsInode(t, p.NetnsPath))

	require.NoError(t, srv.Stop())
	select {
	case <-srv.Done():
	default:
		t.Fatal("server still running after Stop")
	}
}

func TestTCPClientKeepsOneConnection(t *testing.T) {
	t.Parallel()
	c := harness.NewTestCluster(t, harness.Options{Name: "client"})
	n, err := c.AddNode(context.Background(), "node1", harness.Routed)
	require.NoError(t, err)
	srvPod := addServingPod(t, n, "default", "srv")
	cliPod, err := n.AddPod(context.Background(), "default", "cli", nil)
	require.NoError(t, err)

	cl, err := cliPod.StartTCPClient(srvPod.IP, 8080, 50*time.Millisecond)
	require.NoError(t, err)
	assert.Equal(t, cliPod.IP, cl.LocalAddr.Addr())
	require.NoError(t, cl.WaitRoundTrips(ctxT(t, 10*time.Second), 5))
	assert.Zero(t, cl.Failures())
	assert.NoError(t, cl.LastErr())

	// Deleting the server pod breaks the one connection for good.
	require.NoError(t, srvPod.Delete())
	err = cl.WaitRoundTrips(ctxT(t, 10*time.Second), cl.RoundTrips()+1000)
	require.Error(t, err)
	assert.Error(t, cl.LastErr())
	require.NoError(t, cl.Stop())
}

func TestRequestsFailWhenNothingListens(t *testing.T) {
	t.Parallel()
	c := harness.NewTestCluster(t, harness.Options{Name: "fail"})
	n, err := c.AddNode(context.Background(), "node1", harness.Bridge)
	require.NoError(t, err)
	a, err := n.AddPod(context.Background(), "default", "a", nil)
	require.NoError(t, err)
	b, err := n.AddPod(context.Background(), "default", "b", nil)
	require.NoError(t, err)
	ctx := ctxT(t, 10*time.Second)
	_, err = a.TCPRequest(ctx, b.IP, 9, "x")
	assert.ErrorContains(t, err, "connection refused")
	// An address nobody owns: the request must end by its own deadline.
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	err = a.Ping(short, n.PodCIDR.Addr().Next().Next().Next().Next())
	assert.Error(t, err)
}

// TestProbe checks the batched probe: replies from servers, refusals and
// drops each reported per target, within about one timeout overall.
func TestProbe(t *testing.T) {
	t.Parallel()
	c := harness.NewTestCluster(t, harness.Options{Name: "probe"})
	n, err := c.AddNode(context.Background(), "node1", harness.Bridge)
	require.NoError(t, err)
	srv := addServingPod(t, n, "default", "srv")
	cli, err := n.AddPod(context.Background(), "default", "cli", nil)
	require.NoError(t, err)
	nobody := n.PodCIDR.Addr().Next().Next().Next().Next() // no pod has it: dropped
	targets := []harness.Target{
		{Protocol: "TCP", Addr: srv.IP, Port: 8080},
		{Protocol: "UDP", Addr: srv.IP, Port: 5353},
		{Protocol: "TCP", Addr: srv.IP, Port: 9},
		{Protocol: "UDP", Addr: srv.IP, Port: 9},
		{Protocol: "TCP", Addr: nobody, Port: 8080},
		{Protocol: "UDP", Addr: nobody, Port: 5353},
	}
	start := time.Now()
	res, err := cli.Probe(ctxT(t, 20*time.Second), 500*time.Millisecond, targets...)
	took := time.Since(start)
	require.NoError(t, err)
	require.Len(t, res, len(targets))
	for i, r := range res[:2] {
		assert.Equal(t, targets[i], r.Target)
		assert.NoError(t, r.Err, "%s", r.Target)
		assert.Equal(t, "default/srv", r.Reply, "%s", r.Target)
	}
	assert.ErrorContains(t, res[2].Err, "connection refused")
	assert.ErrorContains(t, res[3].Err, "connection refused")
	assert.ErrorContains(t, res[4].Err, "timeout")
	assert.ErrorContains(t, res[5].Err, "timeout")
	assert.Less(t, took, 5*time.Second, "targets are probed at once")

	_, err = cli.Probe(ctxT(t, 10*time.Second), time.Second, harness.Target{Protocol: "SCTP", Addr: srv.IP, Port: 80})
	assert.ErrorContains(t, err, "protocol must be TCP or UDP")
}

func TestManifests(t *testing.T) {
	c := harness.NewTestCluster(t, harness.Options{Name: "manifest"})
	ctx := context.Background()
	n1, err := c.AddNode(ctx, "node1", harness.Routed)
	require.NoError(t, err)
	n2, err := c.AddNode(ctx, "node2", harness.Bridge)
	require.NoError(t, err)
	p, err := n2.AddPod(ctx, "shop", "cart", map[string]string{"app": "cart"}, harness.Port{Name: "http", Port: 8080})
	require.NoError(t, err)
	require.NoError(t, c.SetNamespaceLabels("shop", map[string]string{"team": "web", "kubernetes.io/metadata.name": "other"}))
	require.NoError(t, c.SyncManifests())

	for _, n := range []*harness.Node{n1, n2} {
		b, err := os.ReadFile(filepath.Join(n.ManifestDir, "cluster.yaml"))
		require.NoError(t, err)
		docs := strings.Split(string(b), "\n---\n")
		byKind := map[string][]map[string]any{}
		for _, d := range docs {
			var m map[string]any
			require.NoError(t, yaml.Unmarshal([]byte(d), &m))
			byKind[m["kind"].(string)] = append(byKind[m["kind"].(string)], m)
		}
		require.Len(t, byKind["Node"], 2)
		require.Len(t, byKind["Namespace"], 2) // default, shop
		require.Len(t, byKind["Pod"], 1)
		def, shop := byKind["Namespace"][0], byKind["Namespace"][1]
		assert.Equal(t, map[string]any{"kubernetes.io/metadata.name": "default"}, dig(def, "metadata", "labels"))
		assert.Equal(t, map[string]any{"kubernetes.io/metadata.name": "shop", "team": "web"}, dig(shop, "metadata", "labels"),
			"labels as set, and the name label as the API server forces it")
		pod := byKind["Pod"][0]
		assert.Equal(t, "node2", dig(pod, "spec", "nodeName"))
		assert.Equal(t, p.IP.String(), dig(pod, "status", "podIP"))
		assert.Equal(t, "Running", dig(pod, "status", "phase"))
		assert.Equal(t, "cart", dig(pod, "metadata", "labels", "app"))
		assert.Equal(t, "shop", dig(pod, "metadata", "namespace"))
		node := byKind["Node"][1]
		assert.Equal(t, n2.PodCIDR.String(), dig(node, "spec", "podCIDR"))
		assert.Contains(t, fmt.Sprint(dig(node, "status", "addresses")), n2.IP.String())
	}
	// Relabelling: a namespace without pods is rendered once labelled, and
	// pod labels change in place.
	require.NoError(t, c.SetNamespaceLabels("empty", map[string]string{"env": "test"}))
	require.Error(t, c.SetNamespaceLabels("Not_A_Label", nil))
	p.SetLabels(map[string]string{"app": "cart", "version": "v2"})
	y, err := c.Manifests()
	require.NoError(t, err)
	assert.Contains(t, y, "name: empty\n")
	assert.Contains(t, y, "env: test\n")
	assert.Contains(t, y, "version: v2\n")

	require.NoError(t, c.WriteManifest("svc.yaml", "kind: Service\n"))
	require.FileExists(t, filepath.Join(n1.ManifestDir, "svc.yaml"))
	require.NoError(t, c.RemoveManifest("svc.yaml"))
	require.NoFileExists(t, filepath.Join(n1.ManifestDir, "svc.yaml"))
	entries, err := os.ReadDir(n1.ManifestDir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary files left behind")
}

func dig(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

// TestAgentPlumbing starts this test binary as a stand-in agent (see
// fakeAgent) to check the flags, namespace, log, readiness and stop paths.
func TestAgentPlumbing(t *testing.T) {
	c := harness.NewTestCluster(t, harness.Options{Name: "agent"})
	n, err := c.AddNode(context.Background(), "node1", harness.Routed)
	require.NoError(t, err)
	self, err := os.Executable()
	require.NoError(t, err)

	ag, err := n.StartAgent(self, "--extra=yes")
	require.NoError(t, err)
	require.NoError(t, ag.WaitReady(ctxT(t, 20*time.Second)), "logs:\n%s", ag.Logs())
	st, err := n.AgentStatus(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "node1", st.NodeName)
	assert.Equal(t, n.BPFRoot, st.BPFRoot)
	assert.Equal(t, n.CgroupRoot, st.CgroupRoot)
	logs := ag.Logs()
	assert.Contains(t, logs, "netns "+netnsInode(t, n.NetnsPath))
	assert.Contains(t, logs, "extra yes")
	assert.Contains(t, logs, "manifests "+n.ManifestDir)
	require.NoError(t, ag.Stop(), "graceful stop")

	// A second start (restart) gets a fresh log; Kill is a crash.
	ag2, err := n.StartAgent(self)
	require.NoError(t, err)
	require.NoError(t, ag2.WaitReady(ctxT(t, 20*time.Second)), "logs:\n%s", ag2.Logs())
	assert.NotEqual(t, ag.LogPath, ag2.LogPath)
	require.NoError(t, ag2.Kill())
	assert.Error(t, ag2.ExitErr())

	// An agent that exits early makes WaitReady fail fast with its log.
	ag3, err := n.StartAgent(self, "--exit-now")
	require.NoError(t, err)
	err = ag3.WaitReady(ctxT(t, 20*time.Second))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "exited before ready")
	assert.Contains(t, err.Error(), "exiting as asked")
}

// fakeAgent is a minimal stand-in for sluice-agent: it accepts the flags
// StartAgent passes, reports its network namespace and serves /v1/status.
func fakeAgent(args []string) int {
	fs := flag.NewFlagSet("fake-agent", flag.ContinueOnError)
	source := fs.String("source", "", "")
	manifests := fs.String("manifests", "", "")
	nodeName := fs.String("node-name", "", "")
	bpfRoot := fs.String("bpf-root", "", "")
	cgroupRoot := fs.String("cgroup-root", "", "")
	stateDir := fs.String("state-dir", "", "")
	extra := fs.String("extra", "", "")
	exitNow := fs.Bool("exit-now", false, "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	netns, _ := os.Readlink("/proc/self/ns/net")
	fmt.Printf("fake agent: source %s manifests %s netns %s extra %s\n", *source, *manifests, netns, *extra)
	if *exitNow {
		fmt.Println("exiting as asked")
		return 1
	}
	sock := filepath.Join(*stateDir, api.SocketName)
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	mux := http.NewServeMux()
	mux.HandleFunc(api.PathStatus, func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(api.Status{NodeName: *nodeName, Ready: true, Source: *source,
			BPFRoot: *bpfRoot, CgroupRoot: *cgroupRoot, StateDir: *stateDir})
	})
	srv := &http.Server{Handler: mux}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	go func() {
		<-sig
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Println(err)
		return 1
	}
	return 0
}

// TestCleanupLeavesNothing builds a cluster with every kind of object and
// checks that Cleanup removes all of it.
func TestCleanupLeavesNothing(t *testing.T) {
	harness.RequireRoot(t)
	ctx := ctxT(t, time.Minute)
	linksBefore := rootLinks(t)
	c, err := harness.NewCluster(ctx, harness.Options{Name: "leak", Logf: t.Logf})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Cleanup() }) // in case an assertion fails first
	n1, err := c.AddNode(ctx, "node1", harness.Routed)
	require.NoError(t, err)
	n2, err := c.AddNode(ctx, "node2", harness.Bridge)
	require.NoError(t, err)
	_, err = c.AddExternal(ctx, "ext1")
	require.NoError(t, err)
	a := addServingPod(t, n1, "default", "a")
	b := addServingPod(t, n2, "default", "b")
	cl, err := a.StartTCPClient(b.IP, 8080, 20*time.Millisecond)
	require.NoError(t, err)
	require.NoError(t, c.SyncManifests())
	require.NoError(t, os.MkdirAll(filepath.Join(n1.BPFRoot, "maps", "sub"), 0o700)) // like an agent's pin tree
	pid := cl.Pid()

	require.NoError(t, c.Cleanup())
	require.NoError(t, c.Cleanup(), "idempotent")

	nss, _ := os.ReadDir("/var/run/netns")
	for _, e := range nss {
		assert.False(t, strings.HasPrefix(e.Name(), c.Prefix), "netns %s left", e.Name())
	}
	for _, p := range []string{c.CgroupRoot, c.BPFRoot, c.TempDir, n1.StateDir, n2.ManifestDir} {
		assert.NoDirExists(t, p)
	}
	assert.NoFileExists(t, filepath.Join("/run/sluice-harness", c.ID+".json"))
	assert.NoDirExists(t, fmt.Sprintf("/proc/%d", pid), "workload process left")
	assert.Equal(t, linksBefore, rootLinks(t), "links in the root namespace changed")
}

func TestCleanupStale(t *testing.T) {
	harness.RequireRoot(t)
	ctx := ctxT(t, time.Minute)
	live := harness.NewTestCluster(t, harness.Options{Name: "live"})
	_, err := live.AddNode(ctx, "node1", harness.Routed)
	require.NoError(t, err)

	// An "aborted run": objects with a run prefix and no owner.
	cg2, err := harness.Cgroup2Mount()
	require.NoError(t, err)
	const id = harness.GlobalPrefix + "ffff"
	if _, err := os.Stat("/run/sluice-harness/" + id + ".json"); err == nil {
		t.Skipf("run id %s is in use", id)
	}
	out, err := execOut(ctx, "ip", "netns", "add", id+"-node9")
	require.NoError(t, err, out)
	require.NoError(t, os.MkdirAll(filepath.Join(cg2, id, "node9", "default_x"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join("/sys/fs/bpf", id, "node9"), 0o700))

	removed, err := harness.CleanupStale()
	require.NoError(t, err)
	assert.Contains(t, removed, "/var/run/netns/"+id+"-node9")
	assert.NoFileExists(t, "/var/run/netns/"+id+"-node9")
	assert.NoDirExists(t, filepath.Join(cg2, id))
	assert.NoDirExists(t, filepath.Join("/sys/fs/bpf", id))
	// The live run is untouched.
	assert.FileExists(t, live.UnderlayNetns)
	assert.DirExists(t, live.CgroupRoot)
	for _, r := range removed {
		assert.NotContains(t, r, live.ID)
	}
}

// Helpers reading /proc.

func cgroupV2Line(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "0::") {
			return l
		}
	}
	t.Fatalf("no cgroup v2 line for pid %d: %s", pid, b)
	return ""
}

func pidNetns(t *testing.T, pid int) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	require.NoError(t, err)
	return l
}

func netnsInode(t *testing.T, path string) string {
	t.Helper()
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(path, &st))
	return fmt.Sprintf("net:[%d]", st.Ino)
}

func rootLinks(t *testing.T) []string {
	t.Helper()
	ifs, err := net.Interfaces()
	require.NoError(t, err)
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return names
}

func execOut(ctx context.Context, name string, args ...string) (string, error) {
	b, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(b), err
}

// TestCleanupStaleNodeSoftware: what a killed run of real node software
// (tests/cluster: containerd, a kubelet) leaves besides the harness's own
// objects is removed too: a mount in its temporary directory (a
// container's root, a pod's network namespace), which must be detached
// rather than emptied, and a cgroup v1 subtree with a process in it (the
// kubelet's pods on a hybrid host).
func TestCleanupStaleNodeSoftware(t *testing.T) {
	harness.RequireRoot(t)
	const id = harness.GlobalPrefix + "fffe"
	if _, err := os.Stat("/run/sluice-harness/" + id + ".json"); err == nil {
		t.Skipf("run id %s is in use", id)
	}
	tmp := filepath.Join(os.TempDir(), id+"-cluster-1")
	mnt := filepath.Join(tmp, "node1", "k8s", "rootfs")
	require.NoError(t, os.MkdirAll(mnt, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(tmp, ".sluice-harness"), []byte(id+"\n"), 0o644))
	t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH); _ = os.RemoveAll(tmp) })
	require.NoError(t, syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"))
	// A file on the mounted file system: removing the run must not
	// reach into it (a container's image layer, say).
	require.NoError(t, os.WriteFile(filepath.Join(mnt, "layer-file"), []byte("x"), 0o644))

	v1, err := harness.CgroupV1Mounts()
	require.NoError(t, err)
	var pid int
	var pidsCgroup string
	for _, h := range v1 {
		if filepath.Base(h) == "pids" {
			pidsCgroup = filepath.Join(h, id, "node1", "kubepods")
		}
	}
	if pidsCgroup != "" {
		require.NoError(t, harness.MakeCgroupV1(id+"/node1/kubepods"))
		sleep := exec.Command("sleep", "600")
		require.NoError(t, sleep.Start())
		pid = sleep.Process.Pid
		go func() { _ = sleep.Wait() }()
		t.Cleanup(func() { _ = sleep.Process.Kill() })
		require.NoError(t, os.WriteFile(filepath.Join(pidsCgroup, "cgroup.procs"), []byte(fmt.Sprint(pid)), 0o644))
	} else {
		t.Log("no cgroup v1 pids hierarchy here: only the mount is checked")
	}

	removed, err := harness.CleanupStale()
	require.NoError(t, err)
	assert.Contains(t, removed, tmp)
	assert.NoDirExists(t, tmp)
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	assert.NotContains(t, string(mounts), tmp, "the mount is detached")
	if pidsCgroup != "" {
		for _, h := range v1 {
			assert.NoDirExists(t, filepath.Join(h, id))
		}
		require.Eventually(t, func() bool {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			return err != nil || strings.Contains(string(b), ") Z ")
		}, 5*time.Second, 20*time.Millisecond, "the process in the run's v1 cgroup is killed")
	}
}
