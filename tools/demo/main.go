// Command demo shows Sluice end to end on one machine (`make demo`, as root):
// two simulated nodes (network namespaces, cgroups and bpffs directories built
// by internal/testing/harness) with a few pods and an external host, an agent per node,
// real TCP, UDP and ICMP traffic, connection tracking, a drop with its reason,
// the pinned maps seen by bpftool, an established connection surviving an
// agent SIGKILL, network policy, and L7 policy through the node's proxy (a
// test proxy standing in for Envoy, labelled as such in the output).
// Everything is removed on exit, on error and on Ctrl-C.
//
// The demo doubles as a smoke test: it exits non-zero when a step that should
// succeed fails (or one that should fail succeeds).
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/l7"
)

const (
	agentPkg = "github.com/sluice-net/sluice/cmd/sluice-agent"
	cliPkg   = "github.com/sluice-net/sluice/cmd/sluice"

	tcpPort = 8080
	udpPort = 5353
	// spoofAddr is an address the frontend pod does not own.
	spoofAddr = "10.99.0.1"
)

func main() {
	// Workloads (echo servers, clients, pings) re-execute this binary: this
	// must come before anything else.
	harness.RunWorkloadIfRequested()

	binDir := flag.String("bin-dir", "", "directory holding prebuilt sluice-agent and sluice (default: build them)")
	keep := flag.Bool("keep", false, "leave the cluster's namespaces, pins and directories in place for inspection")
	cleanupOnly := flag.Bool("cleanup", false, "only remove what earlier (aborted or --keep) runs left behind, then exit")
	verbose := flag.Bool("verbose", false, "log the harness's steps to stderr")
	flag.Parse()

	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: must run as root: it creates network namespaces, cgroups and bpffs pins and loads eBPF programs "+
			"(needs CAP_SYS_ADMIN, CAP_NET_ADMIN and CAP_BPF); try: sudo make demo")
		os.Exit(2)
	}
	if *cleanupOnly {
		removed, err := harness.CleanupStale()
		for _, p := range removed {
			fmt.Println("removed", p)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo: cleanup:", err)
			os.Exit(1)
		}
		fmt.Println("cleaned up")
		return
	}

	d := &demo{binDir: *binDir, keep: *keep, verbose: *verbose}
	err := d.run()
	switch {
	case errors.Is(err, errInterrupted):
		fmt.Fprintf(os.Stderr, "\ndemo %v\n", err)
		os.Exit(130)
	case err != nil:
		fmt.Fprintf(os.Stderr, "\ndemo FAILED: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("\ndemo OK")
}

var errInterrupted = errors.New("interrupted")

// cleanupError is a failure of Cluster.Cleanup, which is reported even when
// the demo was interrupted.
type cleanupError struct{ err error }

func (e *cleanupError) Error() string { return "cleanup: " + e.err.Error() }
func (e *cleanupError) Unwrap() error { return e.err }

// cleanupErr returns the cleanup failure in err, if any.
func cleanupErr(err error) error {
	var ce *cleanupError
	if errors.As(err, &ce) {
		return ce
	}
	return nil
}

type demo struct {
	binDir  string
	keep    bool
	verbose bool

	// interrupted is set when SIGINT or SIGTERM cancelled the story.
	interrupted atomic.Bool

	agentBin, cliBin string
	c                *harness.Cluster
	agents           map[*harness.Node]*harness.Agent
	start            time.Time
}

func (d *demo) run() (err error) {
	d.start = time.Now()
	d.agents = map[*harness.Node]*harness.Agent{}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal the context is cancelled, the story stops and
	// the deferred cleanup runs; the default handling is restored so that a
	// second Ctrl-C forces the exit (the next `make demo` removes what is left).
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
			d.interrupted.Store(true)
			stop()
			fmt.Fprintln(os.Stderr, "\ninterrupted: cleaning up (Ctrl-C again to force exit)")
		case <-finished:
		}
	}()
	defer func() {
		if d.interrupted.Load() {
			err = errors.Join(errInterrupted, cleanupErr(err))
		}
	}()

	if removed, err := harness.CleanupStale(); err != nil {
		fmt.Fprintf(os.Stderr, "warning: removing leftovers of earlier runs: %v\n", err)
	} else if len(removed) > 0 {
		fmt.Printf("removed %d leftovers of an earlier aborted run\n", len(removed))
	}

	if err := d.binaries(ctx); err != nil {
		return err
	}

	opts := harness.Options{Name: "demo"}
	if d.verbose {
		opts.Logf = func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "harness: "+format+"\n", args...)
		}
	}
	header("1. Cluster: two simulated nodes, three pods, one external host")
	c, err := harness.NewCluster(ctx, opts)
	if err != nil {
		return fmt.Errorf("create cluster: %w", err)
	}
	d.c = c
	defer d.cleanup(&err)

	return d.story(ctx)
}

// cleanup removes the cluster, unless --keep asked to leave it.
func (d *demo) cleanup(errp *error) {
	if *errp != nil && !d.interrupted.Load() {
		for n, a := range d.agents {
			fmt.Fprintf(os.Stderr, "--- tail of the agent log of %s (%s):\n%s\n", n.Name, a.LogPath, tail(a.Logs(), 20))
		}
	}
	if d.keep {
		d.printKeep()
		return
	}
	header("9. Cleanup")
	if err := d.c.Cleanup(); err != nil {
		*errp = errors.Join(*errp, &cleanupError{err})
		return
	}
	fmt.Printf("cleaned up (run %s: namespaces, cgroups, bpffs pins and temp dirs removed) after %s\n",
		d.c.ID, time.Since(d.start).Round(100*time.Millisecond))
}

func (d *demo) printKeep() {
	header("9. Kept for inspection (--keep)")
	fmt.Printf("run %s is left in place. Agents and workloads stopped with the demo; the pinned\n", d.c.ID)
	fmt.Println("maps and programs, namespaces and directories remain:")
	fmt.Printf("  ip netns list | grep %s\n", d.c.Prefix)
	for _, n := range d.c.Nodes() {
		fmt.Printf("  %s --bpf-root %s bpf ct list      # %s\n", d.cliBin, n.BPFRoot, n.Name)
		fmt.Printf("  bpftool map dump pinned %s/sl_endpoints\n", n.BPFRoot)
		fmt.Printf("  ip netns exec %s ip addr               # agent logs: %s\n", n.NetnsName, n.StateDir)
	}
	fmt.Println("remove it with: go run ./tools/demo --cleanup   (the next `make demo` does it too)")
}

// binaries finds sluice-agent and sluice in --bin-dir or builds them.
func (d *demo) binaries(ctx context.Context) error {
	if d.binDir != "" {
		d.agentBin = filepath.Join(d.binDir, "sluice-agent")
		d.cliBin = filepath.Join(d.binDir, "sluice")
		for _, p := range []string{d.agentBin, d.cliBin} {
			if _, err := os.Stat(p); err != nil {
				return fmt.Errorf("--bin-dir: %w (run `make build` first)", err)
			}
		}
		return nil
	}
	fmt.Println("building sluice-agent and sluice ...")
	var err error
	if d.agentBin, err = harness.Build(ctx, agentPkg); err != nil {
		return err
	}
	if d.cliBin, err = harness.Build(ctx, cliPkg); err != nil {
		return err
	}
	return nil
}

func (d *demo) story(ctx context.Context) error {
	c := d.c
	n1, err := c.AddNode(ctx, "node1", harness.Routed)
	if err != nil {
		return err
	}
	n2, err := c.AddNode(ctx, "node2", harness.Bridge)
	if err != nil {
		return err
	}
	ports := []harness.Port{{Name: "echo", Port: tcpPort}, {Name: "echo-udp", Port: udpPort, Protocol: "UDP"}}
	frontend, err := n1.AddPod(ctx, "default", "frontend", map[string]string{"app": "frontend"})
	if err != nil {
		return err
	}
	backend, err := n1.AddPod(ctx, "default", "backend", map[string]string{"app": "backend"}, ports...)
	if err != nil {
		return err
	}
	db, err := n2.AddPod(ctx, "shop", "db", map[string]string{"app": "db"}, ports...)
	if err != nil {
		return err
	}
	ext, err := c.AddExternal(ctx, "ext1")
	if err != nil {
		return err
	}
	fmt.Printf("run %s (every netns, cgroup and bpffs directory is named %s...)\n", c.ID, c.Prefix)
	for _, n := range c.Nodes() {
		style := "routed /32 veths, Calico-style"
		if n.Mode == harness.Bridge {
			style = "pod bridge " + harness.BridgeName + ", flannel-style"
		}
		fmt.Printf("  node %-5s %-14s pod CIDR %-15s netns %s (%s)\n", n.Name, n.IP, n.PodCIDR, n.NetnsName, style)
		for _, p := range n.Pods() {
			fmt.Printf("    pod %-16s %-14s host veth %s\n", p.String(), p.IP, p.HostIfName)
		}
	}
	fmt.Printf("  external %-14s netns %s (outside the cluster)\n", ext.IP, ext.NetnsName)

	if err := c.SyncManifests(); err != nil {
		return err
	}
	fmt.Println("wrote the cluster's Namespaces, Nodes and Pods as manifests for each node's agent:")
	fmt.Printf("  %s\n  %s\n", filepath.Join(n1.ManifestDir, "cluster.yaml"), filepath.Join(n2.ManifestDir, "cluster.yaml"))

	for _, n := range c.Nodes() {
		if err := d.startAgent(ctx, n); err != nil {
			return err
		}
	}
	if _, err := d.sluice(ctx, n1, "status"); err != nil {
		return err
	}
	for _, n := range c.Nodes() {
		if _, err := d.sluice(ctx, n, "endpoint", "list"); err != nil {
			return err
		}
	}

	// 2. Traffic.
	header("2. Traffic: TCP, UDP and ICMP on one node, across nodes and from outside")
	for _, p := range []*harness.Pod{backend, db} {
		if _, err := p.StartTCPEchoServer(tcpPort); err != nil {
			return fmt.Errorf("%s: TCP echo server: %w", p, err)
		}
		if _, err := p.StartUDPEchoServer(udpPort); err != nil {
			return fmt.Errorf("%s: UDP echo server: %w", p, err)
		}
		fmt.Printf("%s runs a TCP echo server on :%d and a UDP echo server on :%d\n", p, tcpPort, udpPort)
	}
	type req struct {
		from     *harness.Host
		fromName string
		fromIP   netip.Addr
		to       *harness.Pod
		proto    string
		payload  string
		want     string
		where    string
	}
	reqs := []req{
		{&frontend.Host, frontend.String(), frontend.IP, backend, "TCP", "whoami", backend.String(), "same node"},
		{&frontend.Host, frontend.String(), frontend.IP, backend, "UDP", "hello over UDP", "hello over UDP", "same node"},
		{&frontend.Host, frontend.String(), frontend.IP, db, "TCP", "whoami", db.String(), "node1 -> node2"},
		{&frontend.Host, frontend.String(), frontend.IP, db, "ICMP", "", "", "node1 -> node2"},
		{&ext.Host, "ext1", ext.IP, backend, "TCP", "whoami", backend.String(), "external -> node1"},
	}
	for _, r := range reqs {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		t0 := time.Now()
		var reply string
		var err error
		switch r.proto {
		case "TCP":
			reply, err = r.from.TCPRequest(rctx, r.to.IP, tcpPort, r.payload)
		case "UDP":
			reply, err = r.from.UDPRequest(rctx, r.to.IP, udpPort, r.payload)
		case "ICMP":
			err = r.from.Ping(rctx, r.to.IP)
		}
		cancel()
		rtt := time.Since(t0).Round(100 * time.Microsecond)
		dst := fmt.Sprintf("%s (%s)", r.to, r.to.IP)
		switch r.proto {
		case "TCP":
			dst = fmt.Sprintf("%s (%s:%d)", r.to, r.to.IP, tcpPort)
		case "UDP":
			dst = fmt.Sprintf("%s (%s:%d)", r.to, r.to.IP, udpPort)
		}
		line := fmt.Sprintf("%-4s %-16s (%s) -> %-32s", r.proto, r.fromName, r.fromIP, dst)
		if err != nil {
			fmt.Printf("%s FAILED: %v\n", line, err)
			return fmt.Errorf("%s %s -> %s: %w", r.proto, r.fromName, r.to, err)
		}
		if r.proto == "ICMP" {
			fmt.Printf("%s echo request -> echo reply  [%s, %s]\n", line, r.where, rtt)
			continue
		}
		fmt.Printf("%s sent %q -> got %q  [%s, %s]\n", line, r.payload, reply, r.where, rtt)
		if reply != r.want {
			return fmt.Errorf("%s %s -> %s: got %q, want %q", r.proto, r.fromName, r.to, reply, r.want)
		}
	}

	// 3. Connections.
	header("3. Connections: the conntrack map of each node")
	for _, n := range c.Nodes() {
		out, err := d.sluice(ctx, n, "bpf", "ct", "list")
		if err != nil {
			return err
		}
		if len(strings.Split(strings.TrimSpace(out), "\n")) < 2 {
			return fmt.Errorf("%s: no connection-tracking entries after traffic", n.Name)
		}
	}
	fmt.Println("Each endpoint keeps its own view of a connection: the client's pod has an egress entry,")
	fmt.Println("the server's pod an ingress entry, so frontend -> backend shows twice on node1 and")
	fmt.Println("frontend -> db once on each node (ext1 -> backend: only backend's ingress entry).")

	// 4. Drops.
	header("4. Drops: a pod sending from an address that is not its own")
	if err := d.podExec(ctx, frontend, true, "ip", "addr", "add", spoofAddr+"/32", "dev", "eth0"); err != nil {
		return err
	}
	if err := d.podExec(ctx, frontend, false, "ping", "-c", "2", "-W", "1", "-I", spoofAddr, backend.IP.String()); err != nil {
		return err
	}
	drops := []string{"--state-dir", n1.StateDir, "observe", "--last", "20", "--verdict", "DROPPED"}
	if err := waitFor(ctx, 5*time.Second, "INVALID_SOURCE_IP drop flow on node1", func() bool {
		out, err := exec.CommandContext(ctx, d.cliBin, drops...).Output()
		return err == nil && strings.Contains(string(out), "INVALID_SOURCE_IP")
	}); err != nil {
		return err
	}
	out, err := d.sluice(ctx, n1, "observe", "--last", "20", "--verdict", "DROPPED")
	if err != nil {
		return err
	}
	if !strings.Contains(out, "INVALID_SOURCE_IP") {
		return errors.New("sluice observe shows no INVALID_SOURCE_IP drop")
	}
	out, err = d.sluiceQuiet(ctx, n1, "status")
	if err != nil {
		return err
	}
	fmt.Println("(counters part)")
	counters := section(out, "Counters:")
	fmt.Print(counters)
	if !strings.Contains(counters, "INVALID_SOURCE_IP") {
		return errors.New("sluice status counters show no INVALID_SOURCE_IP drop")
	}

	// 5. Maps.
	header("5. The pinned maps are ordinary BPF maps: bpftool reads them")
	if _, err := d.run1(ctx, "bpftool", "bpftool", "map", "dump", "pinned", filepath.Join(n1.BPFRoot, "sl_endpoints")); err != nil {
		return err
	}

	// 5b. Services.
	header("5b. A Service: ClusterIP translated in the kernel, no kube-proxy")
	vip := netip.MustParseAddr("10.96.0.20")
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  clusterIP: %[1]s
  ports:
  - {name: echo, port: 80, targetPort: echo, protocol: TCP}
  - {name: echo-udp, port: 53, targetPort: %[2]d, protocol: UDP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-x1
  namespace: default
  labels: {kubernetes.io/service-name: echo}
addressType: IPv4
ports:
- {name: echo, port: %[3]d, protocol: TCP}
- {name: echo-udp, port: %[2]d, protocol: UDP}
endpoints:
- {addresses: [%[4]s], nodeName: node1, conditions: {ready: true}, targetRef: {kind: Pod, namespace: default, name: backend}}
- {addresses: [%[5]s], nodeName: node2, conditions: {ready: true}, targetRef: {kind: Pod, namespace: shop, name: db}}
`, vip, udpPort, tcpPort, backend.IP, db.IP)
	if err := c.WriteManifest("svc-echo.yaml", manifest); err != nil {
		return err
	}
	fmt.Printf("wrote Service default/echo (ClusterIP %s, TCP 80 -> targetPort \"echo\", UDP 53 -> %d) and its EndpointSlice (backend on node1, db on node2)\n", vip, udpPort)
	if err := waitFor(ctx, 10*time.Second, "the service to be programmed", func() bool {
		out, err := exec.CommandContext(ctx, d.cliBin, "--bpf-root", n1.BPFRoot, "bpf", "lb", "list").CombinedOutput()
		return err == nil && strings.Contains(string(out), vip.String()+":80/TCP")
	}); err != nil {
		return err
	}
	if _, err := d.sluice(ctx, n1, "service", "list"); err != nil {
		return err
	}
	if _, err := d.sluice(ctx, n1, "bpf", "lb", "list"); err != nil {
		return err
	}
	hits := map[string]int{}
	for i := 0; i < 10; i++ {
		who, err := frontend.TCPRequest(ctx, vip, 80, "whoami")
		if err != nil {
			return fmt.Errorf("TCP to the VIP: %w", err)
		}
		hits[who]++
	}
	fmt.Printf("10 TCP connections from %s to %s:80 reached: %v\n", frontend, vip, hits)
	_, peer, err := frontend.PeerRequest(ctx, "tcp", vip, 80, "whoami")
	if err != nil {
		return err
	}
	fmt.Printf("getpeername() in the client says %s: the application only ever sees the VIP (socket LB translated connect())\n", peer)
	who, err := frontend.UDPRequest(ctx, vip, 53, "whoami")
	if err != nil {
		return fmt.Errorf("UDP to the VIP: %w", err)
	}
	fmt.Printf("UDP %s:53 answered by %s\n", vip, who)

	// 6. Restart survival.
	header("6. Restart survival: SIGKILL the agent under a live connection")
	conn, err := frontend.StartTCPClient(backend.IP, tcpPort, 100*time.Millisecond)
	if err != nil {
		return fmt.Errorf("start TCP client: %w", err)
	}
	fmt.Printf("%s (%s) -> %s:%d: one TCP connection, a numbered line every 100ms\n", frontend, conn.LocalAddr, backend.IP, tcpPort)
	if err := waitRT(ctx, conn, 5); err != nil {
		return err
	}
	fmt.Printf("round trips: %d\n", conn.RoundTrips())
	a := d.agents[n1]
	fmt.Printf("\n$ kill -KILL %d   # node1's agent\n", a.Pid())
	if err := a.Kill(); err != nil {
		return fmt.Errorf("kill agent: %w", err)
	}
	delete(d.agents, n1)
	down := conn.RoundTrips()
	for i := 0; i < 4; i++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		fmt.Printf("agent down %.1fs: round trips %d\n", float64(i+1)*0.5, conn.RoundTrips())
	}
	if err := waitRT(ctx, conn, down+10); err != nil {
		return fmt.Errorf("connection stalled while the agent was down: %w", err)
	}
	fmt.Println("the CLI reads the pinned maps directly, with no agent running:")
	if _, err := d.sluice(ctx, n1, "bpf", "ct", "list"); err != nil {
		return err
	}
	if err := d.startAgent(ctx, n1); err != nil {
		return err
	}
	out, err = d.sluiceQuiet(ctx, n1, "status")
	if err != nil {
		return err
	}
	adopted := false
	for _, l := range strings.Split(out, "\n") {
		for _, p := range []string{"Node:", "Attach mode:", "BPF root:", "Endpoints:"} {
			if strings.HasPrefix(l, p) {
				fmt.Println(l)
			}
		}
		if strings.HasPrefix(l, "BPF root:") && strings.Contains(l, "adopted pinned state: yes") {
			adopted = true
		}
	}
	if !adopted {
		return errors.New("the restarted agent did not adopt the pinned state")
	}
	up := conn.RoundTrips()
	if err := waitRT(ctx, conn, up+10); err != nil {
		return fmt.Errorf("connection stalled after the restart: %w", err)
	}
	fmt.Printf("round trips after the restart: %d -> %d, failures %d (the same connection throughout)\n", up, conn.RoundTrips(), conn.Failures())
	if f := conn.Failures(); f != 0 {
		return fmt.Errorf("%d round trips failed; last error: %v", f, conn.LastErr())
	}
	_ = conn.Stop()
	if err := d.policyStory(ctx, n2, frontend, backend, db); err != nil {
		return err
	}
	if err := d.clusterPolicyStory(ctx, n2, backend, db); err != nil {
		return err
	}
	return d.l7Story(ctx, n1, frontend, backend)
}

// policyStory: a NetworkPolicy on db, enforced on identities in the kernel,
// decisions visible as events, and an established connection cut when the
// policy stops allowing it.
func (d *demo) policyStory(ctx context.Context, n2 *harness.Node, frontend, backend, db *harness.Pod) error {
	header("7. Network policy: only app=backend may reach shop/db")
	conn, err := frontend.StartTCPClient(db.IP, tcpPort, 100*time.Millisecond)
	if err != nil {
		return fmt.Errorf("start TCP client: %w", err)
	}
	defer conn.Stop()
	if err := waitRT(ctx, conn, 3); err != nil {
		return err
	}
	fmt.Printf("%s -> %s:%d: a live connection (%d round trips) before any policy\n", frontend, db, tcpPort, conn.RoundTrips())
	policy := `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-backend, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: default}}
      podSelector: {matchLabels: {app: backend}}
    ports:
    - {protocol: TCP, port: echo}
`
	if err := d.c.WriteManifest("netpol-db.yaml", policy); err != nil {
		return err
	}
	fmt.Print("wrote NetworkPolicy shop/db-from-backend:\n" + policy)
	if err := waitFor(ctx, 10*time.Second, "the live connection to be cut", func() bool { return conn.Closed() != nil }); err != nil {
		return err
	}
	fmt.Printf("the frontend's established connection was cut by the kernel: %v\n", conn.Closed())
	who, err := backend.TCPRequest(ctx, db.IP, tcpPort, "whoami")
	if err != nil {
		return fmt.Errorf("backend to db must be allowed: %w", err)
	}
	fmt.Printf("%s -> %s:%d answered %q (allowed)\n", backend, db, tcpPort, who)
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = frontend.TCPRequest(short, db.IP, tcpPort, "whoami")
	cancel()
	if err == nil {
		return errors.New("frontend to db must be denied")
	}
	fmt.Printf("%s -> %s:%d: no answer (denied)\n", frontend, db, tcpPort)
	if _, err := d.sluice(ctx, n2, "policy", "get", "shop/db"); err != nil {
		return err
	}
	// Policy verdicts and policy drops: the flows into the db.
	out, err := d.sluice(ctx, n2, "observe", "--last", "20", "--to-pod", "shop/db", "--type", "policy-verdict", "--type", "drop")
	if err != nil {
		return err
	}
	if !strings.Contains(out, "POLICY_DENIED") {
		return errors.New("sluice observe shows no POLICY_DENIED drop into shop/db")
	}
	_, err = d.sluice(ctx, n2, "bpf", "policy", "list")
	return err
}

// clusterPolicyStory: a platform engineer's Admin ClusterNetworkPolicy
// overrides the namespace's NetworkPolicy: the backend, which
// shop/db-from-backend admits, is denied, and the trace and the flows name
// the guardrail's rule; removing it restores the NetworkPolicy's decision.
func (d *demo) clusterPolicyStory(ctx context.Context, n2 *harness.Node, backend, db *harness.Pod) error {
	header("7b. Cluster-wide guardrail: an Admin ClusterNetworkPolicy overrides the namespace's NetworkPolicy")
	policy := `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: shop-guardrail}
spec:
  tier: Admin
  priority: 10
  subject:
    namespaces: {matchLabels: {kubernetes.io/metadata.name: shop}}
  ingress:
  - name: no-default-namespace
    action: Deny
    from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: default}}}]
`
	if err := d.c.WriteManifest("cnp-guardrail.yaml", policy); err != nil {
		return err
	}
	fmt.Print("wrote ClusterNetworkPolicy shop-guardrail:\n" + policy)
	denied := func() bool {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := backend.TCPRequest(c, db.IP, tcpPort, "whoami")
		return err != nil
	}
	if err := waitFor(ctx, 10*time.Second, "the guardrail to deny the backend", denied); err != nil {
		return err
	}
	fmt.Printf("%s -> %s:%d: no answer (denied by the Admin tier, though shop/db-from-backend allows it)\n", backend, db, tcpPort)
	out, err := d.sluice(ctx, n2, "policy", "trace", "--from", backend.String(), "--to", fmt.Sprintf("%s:%d", db, tcpPort))
	if err != nil {
		return err
	}
	if !strings.Contains(out, "Admin tier: cnp/shop-guardrail ingress[0]") {
		return errors.New("sluice policy trace does not name the guardrail's rule")
	}
	out, err = d.sluice(ctx, n2, "observe", "--last", "5", "--to-pod", "shop/db", "--type", "drop")
	if err != nil {
		return err
	}
	if !strings.Contains(out, "cnp/shop-guardrail ingress[0] (ClusterNetworkPolicy)") {
		return errors.New("sluice observe does not name the guardrail's rule")
	}
	if err := d.c.RemoveManifest("cnp-guardrail.yaml"); err != nil {
		return err
	}
	if err := waitFor(ctx, 10*time.Second, "the backend to be allowed again", func() bool { return !denied() }); err != nil {
		return err
	}
	fmt.Printf("guardrail removed: %s -> %s:%d answers again (shop/db-from-backend decides)\n", backend, db, tcpPort)
	return nil
}

// l7Story: a SluiceL7Policy on the backend allows GET under /api/ and
// nothing else; the kernel hands the backend's port to the node's proxy,
// which decides each request. No Envoy runs here: the test proxy
// (internal/testing/l7proxy) stands in for it, and says so.
func (d *demo) l7Story(ctx context.Context, n1 *harness.Node, frontend, backend *harness.Pod) error {
	header("8. L7 policy: GET /api/* allowed, DELETE denied (a test proxy stands in for Envoy)")
	policy := fmt.Sprintf(`apiVersion: sluice.io/v1alpha1
kind: SluiceL7Policy
metadata: {name: backend-api, namespace: default}
spec:
  podSelector: {matchLabels: {app: backend}}
  ports:
  - port: %d
    rules:
      http:
      - method: GET
        pathPrefix: /api/
`, tcpPort)
	if err := d.c.WriteManifest("l7-backend.yaml", policy); err != nil {
		return err
	}
	fmt.Print("wrote SluiceL7Policy default/backend-api:\n" + policy)
	var cfg l7.Config
	if err := waitFor(ctx, 10*time.Second, "the agent's L7 config", func() bool {
		var st api.Status
		return n1.AgentGet(ctx, api.PathL7Config, &cfg) == nil && len(cfg.Listeners) == 1 &&
			n1.AgentGet(ctx, api.PathStatus, &st) == nil && st.Policy.L7Redirecting > 0
	}); err != nil {
		return err
	}
	port := cfg.Listeners[0].Port
	fmt.Printf("the agent compiled it to one proxy listener, %s on port %d; the backend's policy map redirects its port %d there\n",
		cfg.Listeners[0].Name, port, tcpPort)

	request := func(method, path string) (string, error) {
		reply, err := frontend.TCPRequest(ctx, backend.IP, tcpPort, method+" "+path+" HTTP/1.1\r\nHost: backend\r\n\r")
		return strings.TrimSpace(reply), err
	}
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := frontend.TCPRequest(short, backend.IP, tcpPort, "GET /api/orders HTTP/1.1\r\n\r")
	cancel()
	if err == nil {
		return errors.New("with no proxy listening the connection must fail closed")
	}
	fmt.Printf("%s -> %s:%d with no proxy listening: %v (fails closed, never bypasses the proxy)\n", frontend, backend, tcpPort, err)

	fmt.Printf("\n[test proxy] starting the stand-in for Envoy in %s: it follows the agent's L7 config, listens IP_TRANSPARENT on 127.0.0.1:%d\n"+
		"[test proxy] and applies the rules to each connection's first HTTP request (method, path, host, headers; JWT and rate limits are Envoy's)\n", n1.NetnsName, port)
	proxy, err := n1.StartL7Proxy(true)
	if err != nil {
		return err
	}
	defer proxy.Stop()
	if err := waitFor(ctx, 10*time.Second, "the test proxy to listen", func() bool { return len(proxy.Listening()) == 1 }); err != nil {
		return err
	}
	for _, r := range [][2]string{{"GET", "/api/orders"}, {"DELETE", "/api/orders"}, {"GET", "/admin"}} {
		reply, err := request(r[0], r[1])
		if err != nil {
			return fmt.Errorf("%s %s: %w", r[0], r[1], err)
		}
		fmt.Printf("%s -> %s: %s %s -> %q\n", frontend, backend, r[0], r[1], reply)
		want := "HTTP/1.1 403 Forbidden"
		if r[0] == "GET" && strings.HasPrefix(r[1], "/api/") {
			want = r[0] + " " + r[1] + " HTTP/1.1" // the echo server's answer: it got the request
		}
		if reply != want {
			return fmt.Errorf("%s %s: got %q, want %q", r[0], r[1], reply, want)
		}
	}
	fmt.Println("[test proxy] what it saw (client address and original destination as the kernel handed them over):")
	for _, c := range proxy.Conns() {
		fmt.Println("[test proxy]   " + c.String())
	}
	if _, err := d.sluice(ctx, n1, "policy", "get", "default/backend"); err != nil {
		return err
	}
	out, err := d.sluice(ctx, n1, "observe", "--last", "10", "--to-pod", "default/backend", "--verdict", "REDIRECTED")
	if err != nil {
		return err
	}
	if !strings.Contains(out, "REDIRECTED") {
		return errors.New("sluice observe shows no REDIRECTED flow to default/backend")
	}
	return nil
}

// startAgent starts n's agent and waits until it is ready and every local
// pod is an attached endpoint.
func (d *demo) startAgent(ctx context.Context, n *harness.Node) error {
	fmt.Printf("\n$ nsenter --net=%s -- sluice-agent --source=files --manifests %s --node-name %s --bpf-root %s --cgroup-root %s --state-dir %s &\n",
		n.NetnsPath, n.ManifestDir, n.Name, n.BPFRoot, n.CgroupRoot, n.StateDir)
	a, err := n.StartAgent(d.agentBin)
	if err != nil {
		return fmt.Errorf("start agent on %s: %w", n.Name, err)
	}
	d.agents[n] = a
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := a.WaitReady(rctx); err != nil {
		return fmt.Errorf("agent on %s not ready: %w", n.Name, err)
	}
	err = waitFor(rctx, 20*time.Second, "endpoints of "+n.Name+" ready", func() bool {
		var eps []api.Endpoint
		if err := n.AgentGet(rctx, api.PathEndpoints, &eps); err != nil {
			return false
		}
		ready := map[string]bool{}
		for _, ep := range eps {
			if ep.State == "ready" {
				ready[ep.Namespace+"/"+ep.Pod] = true
			}
		}
		for _, p := range n.Pods() {
			if !ready[p.String()] {
				return false
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	fmt.Printf("agent on %s ready (pid %d, log %s)\n", n.Name, a.Pid(), a.LogPath)
	return nil
}

// sluice runs the CLI against n's agent and pins, printing the command and
// streaming its output; it returns the output too.
func (d *demo) sluice(ctx context.Context, n *harness.Node, args ...string) (string, error) {
	full := append([]string{"--state-dir", n.StateDir, "--bpf-root", n.BPFRoot}, args...)
	return d.run1(ctx, "sluice", d.cliBin, full...)
}

// sluiceQuiet is sluice that prints the command but not the output.
func (d *demo) sluiceQuiet(ctx context.Context, n *harness.Node, args ...string) (string, error) {
	full := append([]string{"--state-dir", n.StateDir, "--bpf-root", n.BPFRoot}, args...)
	fmt.Printf("\n$ sluice %s\n", strings.Join(full, " "))
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(rctx, d.cliBin, full...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("sluice %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// run1 runs bin (shown as name) in the root namespace, streaming its output.
func (d *demo) run1(ctx context.Context, name, bin string, args ...string) (string, error) {
	fmt.Printf("\n$ %s %s\n", name, strings.Join(args, " "))
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var buf bytes.Buffer
	cmd := exec.CommandContext(rctx, bin, args...)
	w := io.MultiWriter(os.Stdout, &buf)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		return buf.String(), fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return buf.String(), nil
}

// podExec runs a command in pod p's netns and cgroup and prints it with its
// output. wantOK says whether it should succeed: a command that should fail
// (a dropped ping) and succeeds is an error too.
func (d *demo) podExec(ctx context.Context, p *harness.Pod, wantOK bool, name string, args ...string) error {
	fmt.Printf("\n$ %s   # in pod %s\n", strings.Join(append([]string{name}, args...), " "), p)
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := p.Exec(rctx, name, args...)
	fmt.Print(out)
	if out != "" && !strings.HasSuffix(out, "\n") {
		fmt.Println()
	}
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case wantOK && err != nil:
		return fmt.Errorf("%s in %s: %w", name, p, err)
	case !wantOK && err == nil:
		return fmt.Errorf("%s in %s succeeded, but should have been dropped", name, p)
	case !wantOK:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			fmt.Printf("(exit status %d, as expected)\n", ee.ExitCode())
		} else {
			fmt.Println("(failed, as expected)")
		}
	}
	return nil
}

func waitRT(ctx context.Context, conn *harness.TCPClient, n int) error {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := conn.WaitRoundTrips(rctx, n); err != nil {
		return fmt.Errorf("waiting for %d round trips (have %d, last error %v): %w", n, conn.RoundTrips(), conn.LastErr(), err)
	}
	return nil
}

func waitFor(ctx context.Context, timeout time.Duration, what string, f func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if f() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for %s", what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// section returns the lines of out from the one starting with start up to
// the next line that is not indented.
func section(out, start string) string {
	var b strings.Builder
	in := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, start):
			in = true
		case in && !strings.HasPrefix(l, " "):
			return b.String()
		}
		if in {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func header(s string) {
	fmt.Printf("\n=== %s %s\n", s, strings.Repeat("=", max(0, 74-len(s))))
}
