package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/tests/apiserver"
)

// Images the node's containerd holds (imported, never pulled).
const (
	// PauseImage is the pod sandbox image (containerd's sandbox_image).
	PauseImage = "sluice.test/pause:1"
	// WorkloadImage runs tests/cluster/workload: echo servers and clients.
	WorkloadImage = "sluice.test/workload:1"
	// AgentImage is the DaemonSet's image name, built from this checkout.
	AgentImage = "ghcr.io/sluice-net/sluice:dev"
	// BusyboxImage is the mount-bpffs init container's image: Debian's
	// busybox-static under the DaemonSet's image name.
	BusyboxImage = "docker.io/library/busybox:1.37.0"
)

// NodeName is the one node's name.
const NodeName = "node1"

// Options configure Start.
type Options struct {
	Binaries Binaries
	// KubeProxy starts kube-proxy (iptables mode) on the node.
	KubeProxy bool
	// Images is a docker-archive tarball imported into containerd before
	// the kubelet starts (see WriteDockerArchive).
	Images string
	// Name labels the run ("cluster").
	Name string
	Logf func(format string, args ...any)
}

// Cluster is a one-node Kubernetes cluster whose node is a network
// namespace of the test harness (internal/testing/harness, run prefix and stale-run
// cleanup included): etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, containerd, the kubelet and, optionally, kube-proxy all
// run inside the node's namespace (nsenter), so its hostNetwork pods live
// there and nothing listens on the host's interfaces. The API server
// listens on the node's address; the test reaches it by dialling from
// inside the namespace (Dial) or with the node's kubectl (Kubectl).
//
// Everything it creates carries the run's prefix: the node namespace, the
// cgroups (v2 <mount>/<run>/node1, v1 <controller>/<run>/node1, the
// kubelet's --cgroup-root), bpffs /sys/fs/bpf/<run>/node1 and the temporary
// directory holding containerd's root and state (pod network namespaces
// included), the kubelet's root, the CNI configuration and plugins. Stop
// removes it all; a run killed before Stop is removed by the next one
// (harness.CleanupStale: processes, cgroups, mounts, namespaces, pins).
type Cluster struct {
	H    *harness.Cluster
	Node *harness.Node
	CP   *apiserver.ControlPlane
	// Dir is the run's directory for the node's software.
	Dir string
	// Kubeconfig is the admin's, for https://<node IP>:6443.
	Kubeconfig string
	// CNIConfDir and CNIBinDir are containerd's CNI directories (the
	// node's /etc/cni/net.d and /opt/cni/bin).
	CNIConfDir, CNIBinDir string
	// ContainerdSocket is containerd's API socket.
	ContainerdSocket string
	// CgroupRoot is the kubelet's --cgroup-root: pods' cgroups are below
	// it, in the cgroup v2 tree at Node.CgroupRoot.
	CgroupRoot string

	opts  Options
	procs []*apiserver.Process
}

// Start builds the node and starts the cluster, and returns when the node
// is Ready. On error what was started is removed.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if opts.Name == "" {
		opts.Name = "cluster"
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	h, err := harness.NewCluster(ctx, harness.Options{Name: opts.Name, Logf: opts.Logf})
	if err != nil {
		return nil, err
	}
	c = &Cluster{H: h, opts: opts}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Stop())
			c = nil
		}
	}()
	if c.Node, err = h.AddNode(ctx, NodeName, harness.Routed); err != nil {
		return c, err
	}
	c.Dir = filepath.Join(h.TempDir, NodeName, "k8s")
	c.CNIConfDir = filepath.Join(c.Dir, "cni", "net.d")
	c.CNIBinDir = filepath.Join(c.Dir, "cni", "bin")
	c.ContainerdSocket = filepath.Join(c.Dir, "containerd", "containerd.sock")
	c.CgroupRoot = "/" + h.ID + "/" + NodeName
	for _, d := range []string{c.CNIConfDir, c.CNIBinDir, filepath.Join(c.Dir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return c, err
		}
	}
	if err := harness.MakeCgroupV1(c.CgroupRoot); err != nil {
		return c, err
	}
	if err := enableControllers(c.Node.CgroupRoot); err != nil {
		return c, err
	}
	if err := c.writeCNI(); err != nil {
		return c, err
	}
	start := time.Now()
	c.CP, err = apiserver.Start(ctx, apiserver.Options{
		Binaries: opts.Binaries.Binaries,
		Dir:      filepath.Join(c.Dir, "control-plane"),
		Logf:     opts.Logf,
		Netns:    c.Node.NetnsPath,
		Cgroup:   c.Node.CgroupPath,
		Address:  c.Node.IP.String(),
		ForNodes: true,
	})
	if err != nil {
		return c, err
	}
	c.Kubeconfig = c.CP.APIServer.AdminKubeconfig
	opts.Logf("control plane ready after %s", time.Since(start).Round(time.Millisecond))
	if err := c.startControllers(); err != nil {
		return c, err
	}
	if err := c.startContainerd(ctx); err != nil {
		return c, err
	}
	if opts.Images != "" {
		if err := c.ImportImages(ctx, opts.Images); err != nil {
			return c, err
		}
	}
	if err := c.startKubelet(); err != nil {
		return c, err
	}
	if opts.KubeProxy {
		if err := c.startProcess("kube-proxy", opts.Binaries.Proxy,
			"--kubeconfig="+c.Kubeconfig,
			"--hostname-override="+NodeName,
			"--proxy-mode=iptables",
			"--cluster-cidr=10.244.0.0/16",
			// The conntrack table's size and timeouts are the host's
			// (global sysctls): leave them alone.
			"--conntrack-max-per-core=0",
			"--conntrack-tcp-timeout-established=0",
			"--conntrack-tcp-timeout-close-wait=0",
			"--metrics-bind-address=127.0.0.1:10249",
			"--healthz-bind-address=127.0.0.1:10256",
		); err != nil {
			return c, err
		}
	}
	// The node object appears once the kubelet has registered.
	if err := c.WaitFor(ctx, 3*time.Minute, func() error {
		out, err := c.Kubectl(ctx, "get", "node", NodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err == nil && strings.TrimSpace(out) != "True" {
			err = fmt.Errorf("node %s: Ready is %q", NodeName, strings.TrimSpace(out))
		}
		return err
	}); err != nil {
		return c, fmt.Errorf("node %s not ready: %w\nkubelet log tail:\n%s", NodeName, err, c.tail("kubelet", 30))
	}
	// Pods need their namespace's service account, which the controller
	// manager creates.
	if err := c.WaitFor(ctx, 2*time.Minute, func() error {
		_, err := c.Kubectl(ctx, "-n", "default", "get", "serviceaccount", "default")
		return err
	}); err != nil {
		return c, err
	}
	opts.Logf("cluster up after %s: node %s at %s, KUBECONFIG=%s", time.Since(start).Round(time.Millisecond), NodeName, c.Node.IP, c.Kubeconfig)
	return c, nil
}

// writeCNI fills the node's CNI directories: the CNI plugins of Debian's
// containernetworking-plugins linked into the bin dir, and a bridge network
// on the node's pod CIDR (as flannel's cni0), the configuration that
// sluice-cni gets chained into.
func (c *Cluster) writeCNI() error {
	for _, p := range []string{"bridge", "host-local", "loopback", "portmap"} {
		src, err := findCNIPlugin(p)
		if err != nil {
			return err
		}
		if err := os.Symlink(src, filepath.Join(c.CNIBinDir, p)); err != nil {
			return err
		}
	}
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, filepath.Join(c.Dir, "cni", "ipam"), c.Node.PodCIDR.String())
	return os.WriteFile(filepath.Join(c.CNIConfDir, "10-pods.conflist"), []byte(conf), 0o644)
}

// enableControllers lets the kubelet's pod cgroups below dir use the
// cgroup v2 controllers, on a host where they are v2's (no v1 hierarchy):
// each level from the cgroup2 root down delegates them to its children.
// On a hybrid host the controllers are v1's and the kubelet uses those.
func enableControllers(dir string) error {
	v1, err := harness.CgroupV1Mounts()
	if err != nil || len(v1) > 0 {
		return err
	}
	root, err := harness.Cgroup2Mount()
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(root, dir)
	if err != nil {
		return err
	}
	p := root
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		avail, err := os.ReadFile(filepath.Join(p, "cgroup.controllers"))
		if err != nil {
			return err
		}
		var enable []string
		for _, ctl := range strings.Fields(string(avail)) {
			enable = append(enable, "+"+ctl)
		}
		if len(enable) > 0 {
			if err := os.WriteFile(filepath.Join(p, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0o644); err != nil {
				return fmt.Errorf("delegating the cgroup v2 controllers of %s: %w", p, err)
			}
		}
		p = filepath.Join(p, part)
	}
	return nil
}

// CNIPluginDirs are where distributions install the CNI plugins.
var CNIPluginDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

func findCNIPlugin(name string) (string, error) {
	for _, d := range CNIPluginDirs {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no CNI plugin %s in %s: install containernetworking-plugins", name, strings.Join(CNIPluginDirs, " or "))
}

func (c *Cluster) startProcess(name, bin string, args ...string) error {
	p, err := apiserver.StartProcess(bin, args, filepath.Join(c.Dir, "logs", name+".log"), c.Node.NetnsPath, c.Node.CgroupPath)
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	c.opts.Logf("%s: pid %d, log %s", name, p.Pid(), p.Log())
	return nil
}

// tail is the end of a node process's log (for failure messages).
func (c *Cluster) tail(name string, lines int) string {
	for _, p := range c.procs {
		if p.Log() == filepath.Join(c.Dir, "logs", name+".log") {
			return p.Tail(lines)
		}
	}
	return "(no " + name + " started)"
}

func (c *Cluster) startControllers() error {
	if err := c.startProcess("kube-controller-manager", c.opts.Binaries.ControllerManager,
		"--kubeconfig="+c.Kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--service-account-private-key-file="+c.CP.ServiceAccountKeyFile(),
		"--root-ca-file="+c.CP.CAFile,
		"--use-service-account-credentials=false",
	); err != nil {
		return err
	}
	return c.startProcess("kube-scheduler", c.opts.Binaries.Scheduler,
		"--kubeconfig="+c.Kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
	)
}

// startContainerd writes containerd's configuration, with every directory
// in the run's (root, state, runc's root, the pods' network namespaces,
// CNI) so that nothing touches the host's containerd or /etc/cni, and
// starts it in the node's namespace.
func (c *Cluster) startContainerd(ctx context.Context) error {
	dir := filepath.Join(c.Dir, "containerd")
	config := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = %[3]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  # The root user of this kind of machine lacks CAP_SYS_RESOURCE: without
  # this, runc's write of the pod's oom_score_adj fails and with it every
  # sandbox ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  # Pod network namespaces under the run's state directory, not
  # /var/run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[6]q
    conf_dir = %[7]q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %[8]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.ContainerdSocket, filepath.Join(dir, "opt"),
		PauseImage, c.CNIBinDir, c.CNIConfDir, filepath.Join(dir, "runc"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		return err
	}
	if err := c.startProcess("containerd", "containerd", "--config="+path); err != nil {
		return err
	}
	return c.WaitFor(ctx, time.Minute, func() error {
		_, err := c.ctr(ctx, "version")
		return err
	})
}

func (c *Cluster) ctr(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.ContainerdSocket, "--namespace", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ImportImages loads a docker-archive tarball into containerd's k8s.io
// namespace, where the kubelet's images live.
func (c *Cluster) ImportImages(ctx context.Context, tarball string) error {
	_, err := c.ctr(ctx, "images", "import", tarball)
	return err
}

// startKubelet writes the kubelet's configuration and starts it.
func (c *Cluster) startKubelet() error {
	dir := filepath.Join(c.Dir, "kubelet")
	if err := os.MkdirAll(filepath.Join(dir, "root"), 0o755); err != nil {
		return err
	}
	kubeconfig := filepath.Join(dir, "kubelet.kubeconfig")
	if err := c.CP.APIServer.WriteCertKubeconfig(kubeconfig, "system:node:"+NodeName, "system:nodes"); err != nil {
		return err
	}
	config := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %[2]s
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://%[3]s
# cgroupfs, under a cgroup of the run in every hierarchy. The controllers of
# this kind of machine are cgroup v1 (cgroup v2 is at /sys/fs/cgroup/unified,
# without controllers), which the kubelet refuses unless told otherwise.
cgroupDriver: cgroupfs
cgroupRoot: %[4]s
failCgroupV1: false
podLogsDir: %[5]s
clusterDomain: cluster.local
failSwapOn: false
# The machine's disk is shared: do not evict or collect images for it.
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  imagefs.available: 1%%
  nodefs.inodesFree: 1%%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
`, c.Node.IP, c.CP.CAFile, c.ContainerdSocket, c.CgroupRoot, filepath.Join(dir, "pod-logs"))
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		return err
	}
	return c.startProcess("kubelet", c.opts.Binaries.Kubelet,
		"--config="+path,
		"--kubeconfig="+kubeconfig,
		"--root-dir="+filepath.Join(dir, "root"),
		"--cert-dir="+filepath.Join(dir, "pki"),
		"--hostname-override="+NodeName,
		"--node-ip="+c.Node.IP.String(),
	)
}

// Kubectl runs the node's kubectl as the admin inside the node's network
// namespace, as a user on the node would, and returns its output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	return c.KubectlStdin(ctx, nil, args...)
}

// KubectlStdin is Kubectl with stdin.
func (c *Cluster) KubectlStdin(ctx context.Context, stdin []byte, args ...string) (string, error) {
	argv := append([]string{"--net=" + c.Node.NetnsPath, "--", c.opts.Binaries.Kubectl, "--kubeconfig=" + c.Kubeconfig}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()+"\n"+stdout.String()))
	}
	return stdout.String(), nil
}

// Dial connects from the node's network namespace (client-go's Dial).
func (c *Cluster) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return apiserver.DialInNetns(ctx, c.Node.NetnsPath, network, addr)
}

// WaitFor calls f until it succeeds or timeout passes, and returns its
// last error then.
func (c *Cluster) WaitFor(ctx context.Context, timeout time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", timeout, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Stop stops the node's processes (kubelet first, so that it restarts
// nothing) and the control plane, and removes everything of the run:
// containers (through their cgroups), mounts, namespaces, cgroups, pins
// and directories (harness.Cluster.Cleanup).
func (c *Cluster) Stop() error {
	var errs []error
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		if !p.Exited() {
			// SIGKILL: the node's software is gone with its node, and
			// a graceful kubelet or containerd would tear pods down
			// one by one first.
			_ = syscall.Kill(p.Pid(), syscall.SIGKILL)
			<-p.Done()
		}
	}
	if c.CP != nil {
		errs = append(errs, c.CP.Stop())
	}
	if c.H != nil {
		errs = append(errs, c.H.Cleanup())
	}
	return errors.Join(errs...)
}
