// Package harness builds simulated Kubernetes nodes and pods out of network
// namespaces, cgroups and bpffs directories on one machine, for the
// end-to-end tests (tests/e2e) and `make demo` (tools/demo).
//
// Topology of a cluster with a routed node, a bridge node and an external
// host (run prefix "sl3f9a-" shown as "<p>"; N is the node's number, 10 for
// the first node, 11 for the second):
//
//	 netns <p>ul (underlay, no link to the root namespace)
//	┌──────────────────────────── br0 172.31.0.1/24 ─────────────────────────────┐
//	│        n10                         n11                         x200        │
//	└─────────┼───────────────────────────┼───────────────────────────┼──────────┘
//	          │ veth                      │ veth                      │ veth
//	┌─────────┼───────────────┐ ┌─────────┼───────────────┐ ┌─────────┼───────────────┐
//	│ eth0 172.31.0.10/24     │ │ eth0 172.31.0.11/24     │ │ eth0 172.31.0.200/24    │
//	│ netns <p>node1 (Routed) │ │ netns <p>node2 (Bridge) │ │ netns <p>ext1 (External)│
//	│ ip_forward=1            │ │ ip_forward=1            │ │ 10.244.10.0/24 via .10  │
//	│ 10.244.11.0/24 via .11  │ │ 10.244.10.0/24 via .10  │ │ 10.244.11.0/24 via .11  │
//	│ 10.244.10.2 dev lxcA    │ │ cni0 10.244.11.1/24     │ └─────────────────────────┘
//	│ lxcA (proxy_arp=1)      │ │  └ lxcC (bridge port)   │
//	└───┼─────────────────────┘ └───┼─────────────────────┘
//	    │ veth                      │ veth
//	┌───┼─────────────────────┐ ┌───┼─────────────────────┐
//	│ eth0 10.244.10.2/32     │ │ eth0 10.244.11.2/24     │
//	│ default via 169.254.1.1 │ │ default via 10.244.11.1 │
//	│   dev eth0 onlink       │ │                         │
//	│ netns <p>node1-default_a│ │ netns <p>node2-default_c│
//	└─────────────────────────┘ └─────────────────────────┘
//
// Every node has a default route via br0's address: nothing lies beyond it,
// but proxy ARP on a routed node answers for 169.254.1.1 only when the node
// has a route to it, as on a real Calico host.
//
// IPv6 runs beside it (AddPodFamily: DualStack or IPv6Only pods): br0 and
// every eth0 above also carry fd00:31::N/64 (fd00:31::1 on br0), node N's
// pods get fd00:10:244:N::k from its PodCIDR6, and every node and
// external host routes each node's PodCIDR6 via that node's fd00:31::N, as
// IPv4. Routed pods' IPv6 gateway is fe80::1 on their host veth; bridge
// pods', fd00:10:244:N::1 on cni0. Nodes list both underlay addresses as
// InternalIPs in their manifests.
//
// Besides its namespace each node has a bpffs directory
// (/sys/fs/bpf/<run id>/<node>), a cgroup v2 root (<cgroup2
// mount>/<run id>/<node>, pods' cgroups below it as <namespace>_<name>), a
// state directory and a manifest directory, which are the agent's
// --bpf-root, --cgroup-root, --state-dir and --manifests. Node.StartAgent
// starts an agent inside the node's namespace with nsenter.
//
// Workloads (echo servers, clients, one-shot requests, ping) are the test
// binary itself, re-executed with SLUICE_HARNESS_WORKLOAD set, entered into
// the pod's netns with nsenter and cloned straight into the pod's cgroup, so
// a node's socket-level programs see them as the pod's. Binaries using the
// harness must call RunWorkloadIfRequested first thing (harness.Main does it
// for tests):
//
//	func TestMain(m *testing.M) { harness.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		c := harness.NewTestCluster(t, harness.Options{Name: "e2e"})
//		ctx := context.Background()
//		n1, err := c.AddNode(ctx, "node1", harness.Routed)
//		...
//		web, err := n1.AddPod(ctx, "default", "web", map[string]string{"app": "web"})
//		srv, err := web.StartTCPEchoServer(8080)
//		reply, err := client.TCPRequest(ctx, web.IP, 8080, "hello")
//	}
//
// HTTP workloads (StartHTTPServer, HTTPRequest, StartHTTPClient) keep the
// echo's conventions in HTTP/1.1, for what parses HTTP on the way.
// Node.StartEnvoy runs a real Envoy binary in a node as the DaemonSet runs
// it (its bootstrap from daemonset/envoy-configmap.yaml, its command line
// from daemonset/daemonset.yaml), configured by the node's agent over ADS.
//
// Manifests: SyncManifests writes the cluster's Namespaces, Nodes and Pods
// (with their labels and container ports) into every node's manifest
// directory; Cluster.SetNamespaceLabels and Pod.SetLabels change labels for
// the next SyncManifests, and WriteManifest adds Services, NetworkPolicies
// and the like. Host.Probe asks many targets "whoami" at once from one
// workload process, each with its own short timeout: the building block of
// reachability matrices (tests/e2e/netpol_conformance_test.go).
//
// Traffic stays inside the run's namespaces: the underlay bridge has no port
// in the root namespace. All names start with the run prefix
// (GlobalPrefix + 4 hex digits + "-"), so parallel runs never collide, and
// Cluster.Cleanup (registered with t.Cleanup by NewTestCluster) removes
// everything even after failures; CleanupStale removes what aborted runs
// left.
package harness
