package harness

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Addressing of the simulated cluster. The underlay is one /24; node i gets
// .(10+i) and the pod CIDR 10.244.(10+i).0/24, so the node's address and pod
// CIDR share the number N; external hosts get .200 and up.
var (
	underlayPrefix = netip.MustParsePrefix("172.31.0.0/24")
	// underlayPrefix6 is the underlay's IPv6 (ULA) range: a node or
	// external host with underlay address 172.31.0.N also has fd00:31::N.
	underlayPrefix6 = netip.MustParsePrefix("fd00:31::/64")
	// underlayGateway is br0's address. Nodes use it as their default
	// gateway; it forwards nothing (the underlay has no uplink), but a
	// default route must exist for proxy ARP on routed nodes to answer for
	// the pods' fake gateway 169.254.1.1, exactly as on a real Calico host.
	underlayGateway = netip.MustParseAddr("172.31.0.1")
	// routedPodGateway is the link-local next hop routed pods use, answered
	// by proxy ARP on the host side of their veth (Calico's convention).
	routedPodGateway = netip.MustParseAddr("169.254.1.1")
	// routedPodGateway6 is routed pods' IPv6 next hop: a link-local
	// address on the host side of their veth.
	routedPodGateway6 = netip.MustParsePrefix("fe80::1/64")
)

const (
	firstNodeOctet     = 10
	lastNodeOctet      = 199
	firstExternalOctet = 200
	lastExternalOctet  = 254
	firstPodOctet      = 2
	lastPodOctet       = 254
)

// Options configure a Cluster.
type Options struct {
	// Name labels the run in temporary directory names and logs
	// ("e2e", "demo"). Default "harness".
	Name string
	// Logf, when set, receives one line per notable step (namespaces
	// created, agents started, cleanup errors).
	Logf func(format string, args ...any)
}

// Cluster is a set of simulated nodes and external hosts on one underlay
// bridge. All kernel objects and directories it creates carry the run prefix
// and are removed by Cleanup. Its methods are safe for concurrent use.
type Cluster struct {
	// ID is the run id, GlobalPrefix + 4 hex digits ("sl3f9a").
	ID string
	// Prefix is ID + "-", the prefix of every named netns of the run.
	Prefix string
	// UnderlayNetns is the path of the underlay namespace holding br0.
	UnderlayNetns string
	// CgroupRoot is the run's cgroup v2 directory; node cgroup roots are below it.
	CgroupRoot string
	// BPFRoot is the run's bpffs directory; node BPF roots are below it.
	BPFRoot string
	// TempDir holds node state and manifest directories and agent logs.
	TempDir string

	opts Options

	mu        sync.Mutex
	nodes     []*Node
	externals []*External
	names     map[string]bool              // node and external names, which share the netns namespace
	nsLabels  map[string]map[string]string // Namespace labels set with SetNamespaceLabels
	// nsAnnotations are set with SetNamespaceAnnotations.
	nsAnnotations map[string]map[string]string
	procs         map[stopper]struct{}
	nsOrder       []string // netns names in creation order, deleted in reverse
	closed        bool
}

// stopper is anything the cluster must stop on Cleanup: workloads and agents.
type stopper interface {
	kill()
	host() *Host
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// NewCluster builds an empty cluster: the underlay namespace with bridge br0,
// the run's cgroup and bpffs directories and a temporary directory. The caller
// must call Cleanup, also on error paths (NewCluster cleans up after itself
// when it fails). It needs root, cgroup v2, bpffs, `ip` and `nsenter`.
func NewCluster(ctx context.Context, opts Options) (c *Cluster, err error) {
	refuseInsideWorkload()
	if opts.Name == "" {
		opts.Name = "harness"
	}
	if !dnsLabel.MatchString(opts.Name) {
		return nil, fmt.Errorf("cluster name %q must be a lowercase DNS label", opts.Name)
	}
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	cg, err := Cgroup2Mount()
	if err != nil {
		return nil, err
	}
	bpffs, err := BPFFSMount()
	if err != nil {
		return nil, err
	}
	id, err := claimRunID(opts.Name)
	if err != nil {
		return nil, err
	}
	c = &Cluster{
		ID:         id,
		Prefix:     id + "-",
		CgroupRoot: filepath.Join(cg, id),
		BPFRoot:    filepath.Join(bpffs, id),
		opts:       opts,
		names:      map[string]bool{},
		nsLabels:   map[string]map[string]string{},
		procs:      map[stopper]struct{}{},
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Cleanup())
			c = nil
		}
	}()
	if c.TempDir, err = os.MkdirTemp("", c.Prefix+opts.Name+"-"); err != nil {
		return c, fmt.Errorf("create temp dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(c.TempDir, tempMarker), []byte(id+"\n"), 0o644); err != nil {
		return c, fmt.Errorf("mark temp dir: %w", err)
	}
	if err := os.Mkdir(c.CgroupRoot, 0o755); err != nil {
		return c, fmt.Errorf("create cgroup %s: %w", c.CgroupRoot, err)
	}
	if err := os.Mkdir(c.BPFRoot, 0o700); err != nil {
		return c, fmt.Errorf("create bpffs dir %s: %w", c.BPFRoot, err)
	}
	if err := c.buildUnderlay(ctx); err != nil {
		return c, err
	}
	c.logf("cluster %s: underlay %s, temp dir %s", id, c.UnderlayNetns, c.TempDir)
	return c, nil
}

// NewTestCluster is NewCluster for tests: it skips the test when not root or
// when cgroup v2 or bpffs are missing (fails instead when CI is set), fails
// the test on error, logs through tb and registers Cleanup with tb.Cleanup, so
// everything is removed after failures and panics too.
func NewTestCluster(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	RequireRoot(tb)
	RequireCgroup2(tb)
	RequireBPFFS(tb)
	RequireTools(tb)
	if opts.Logf == nil {
		opts.Logf = tb.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := NewCluster(ctx, opts)
	if err != nil {
		tb.Fatalf("create cluster: %v", err)
	}
	tb.Cleanup(func() {
		if err := c.Cleanup(); err != nil {
			tb.Errorf("cluster cleanup: %v", err)
		}
	})
	return c
}

func (c *Cluster) logf(format string, args ...any) {
	if c.opts.Logf != nil {
		c.opts.Logf(format, args...)
	}
}

// netnsName returns the name of the run's namespace for suffix.
func (c *Cluster) netnsName(suffix string) string { return c.Prefix + suffix }

// addNetns creates a named netns of the run and remembers it for Cleanup.
func (c *Cluster) addNetns(ctx context.Context, suffix string) (string, string, error) {
	name := c.netnsName(suffix)
	c.nsOrder = append(c.nsOrder, name)
	path, err := addNetns(ctx, name)
	return name, path, err
}

func (c *Cluster) buildUnderlay(ctx context.Context) error {
	_, path, err := c.addNetns(ctx, "ul")
	if err != nil {
		return err
	}
	c.UnderlayNetns = path
	return withNetlink(path, func(h *netlink.Handle) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
		if err := h.LinkAdd(br); err != nil {
			return fmt.Errorf("create underlay bridge br0: %w", err)
		}
		for _, a := range []netip.Prefix{
			netip.PrefixFrom(underlayGateway, underlayPrefix.Bits()),
			netip.PrefixFrom(underlayAddr6(1), underlayPrefix6.Bits()),
		} {
			// No duplicate address detection: the underlay is ours alone,
			// and a tentative address would not answer for seconds.
			if err := h.AddrAdd(br, &netlink.Addr{IPNet: prefixToIPNet(a), Flags: unix.IFA_F_NODAD}); err != nil {
				return fmt.Errorf("address underlay bridge br0 with %s: %w", a, err)
			}
		}
		if err := h.LinkSetUp(br); err != nil {
			return fmt.Errorf("set br0 up: %w", err)
		}
		return nil
	})
}

// plugIntoUnderlay creates a veth whose end "eth0" is in the namespace at
// nsPath with addresses ip/24 and ip6/64 and whose other end, portName, is
// a port of br0.
func (c *Cluster) plugIntoUnderlay(nsPath, portName string, ip, ip6 netip.Addr) error {
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer target.Close()
	err = withNetlink(c.UnderlayNetns, func(h *netlink.Handle) error {
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: portName},
			PeerName:      "eth0",
			PeerNamespace: netlink.NsFd(target),
		}
		if err := h.LinkAdd(veth); err != nil {
			return fmt.Errorf("create underlay veth %s: %w", portName, err)
		}
		port, err := h.LinkByName(portName)
		if err != nil {
			return fmt.Errorf("find underlay port %s: %w", portName, err)
		}
		br, err := h.LinkByName("br0")
		if err != nil {
			return fmt.Errorf("find br0: %w", err)
		}
		if err := h.LinkSetMaster(port, br); err != nil {
			return fmt.Errorf("attach %s to br0: %w", portName, err)
		}
		if err := h.LinkSetUp(port); err != nil {
			return fmt.Errorf("set %s up: %w", portName, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return withNetlink(nsPath, func(h *netlink.Handle) error {
		eth0, err := h.LinkByName("eth0")
		if err != nil {
			return fmt.Errorf("find eth0 in %s: %w", nsPath, err)
		}
		for _, a := range []netip.Prefix{netip.PrefixFrom(ip, underlayPrefix.Bits()), netip.PrefixFrom(ip6, underlayPrefix6.Bits())} {
			if err := h.AddrAdd(eth0, &netlink.Addr{IPNet: prefixToIPNet(a), Flags: unix.IFA_F_NODAD}); err != nil {
				return fmt.Errorf("address eth0 in %s with %s: %w", nsPath, a, err)
			}
		}
		if err := h.LinkSetUp(eth0); err != nil {
			return fmt.Errorf("set eth0 up in %s: %w", nsPath, err)
		}
		return nil
	})
}

// Nodes returns the cluster's nodes in the order they were added.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Node(nil), c.nodes...)
}

// Externals returns the cluster's external hosts in the order they were added.
func (c *Cluster) Externals() []*External {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*External(nil), c.externals...)
}

// Node returns the node called name, or nil.
func (c *Cluster) Node(name string) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Pods returns every pod of every node.
func (c *Cluster) Pods() []*Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	var pods []*Pod
	for _, n := range c.nodes {
		pods = append(pods, n.pods...)
	}
	return pods
}

func (c *Cluster) claimName(kind, name string) error {
	if !dnsLabel.MatchString(name) || len(name) > 30 {
		return fmt.Errorf("%s name %q must be a lowercase DNS label of at most 30 characters", kind, name)
	}
	if c.closed {
		return errors.New("cluster is cleaned up")
	}
	if c.names[name] {
		return fmt.Errorf("%s name %q is already used by a node or external host", kind, name)
	}
	c.names[name] = true
	return nil
}

// External is a host on the underlay that is not a node: a client outside the
// cluster. It has routes to every pod CIDR via the owning node. Its workloads
// run in no cgroup of the run, so no node's cgroup programs affect them.
type External struct {
	Host
	Name string
	IP   netip.Addr
	IP6  netip.Addr // its IPv6 underlay address (fd00:31::N)
}

// AddExternal adds an external host <prefix><name> on the underlay.
func (c *Cluster) AddExternal(ctx context.Context, name string) (*External, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.claimName("external", name); err != nil {
		return nil, err
	}
	octet := firstExternalOctet + len(c.externals)
	if octet > lastExternalOctet {
		return nil, fmt.Errorf("add external %s: at most %d external hosts", name, lastExternalOctet-firstExternalOctet+1)
	}
	ip := underlayAddr(octet)
	nsName, path, err := c.addNetns(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("add external %s: %w", name, err)
	}
	e := &External{
		Host: Host{NetnsName: nsName, NetnsPath: path, ident: "external/" + name, cluster: c},
		Name: name,
		IP:   ip,
		IP6:  underlayAddr6(octet),
	}
	if err := c.plugIntoUnderlay(path, fmt.Sprintf("x%d", octet), ip, e.IP6); err != nil {
		return nil, fmt.Errorf("add external %s: %w", name, err)
	}
	for _, n := range c.nodes {
		if err := n.routePodsFrom(path); err != nil {
			return nil, fmt.Errorf("add external %s: %w", name, err)
		}
	}
	c.externals = append(c.externals, e)
	c.logf("external %s: netns %s, ip %s", name, nsName, ip)
	return e, nil
}

func (c *Cluster) track(s stopper) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.procs[s] = struct{}{}
}

func (c *Cluster) untrack(s stopper) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.procs, s)
}

// Cleanup removes everything the cluster created, in dependency order:
// agents and workloads (and any other process found in the run's namespaces or
// cgroups) are killed, then the pod, node, external and underlay namespaces
// are deleted (which deletes their interfaces), then the cgroups, the bpffs
// directories (pins included) and the temporary directories. It is idempotent
// and keeps going after errors, returning all of them.
func (c *Cluster) Cleanup() error {
	c.mu.Lock()
	c.closed = true
	procs := make([]stopper, 0, len(c.procs))
	for p := range c.procs {
		procs = append(procs, p)
	}
	c.procs = map[stopper]struct{}{}
	order := make([]string, 0, len(c.nsOrder))
	for i := len(c.nsOrder) - 1; i >= 0; i-- {
		order = append(order, c.nsOrder[i])
	}
	c.mu.Unlock()

	for _, p := range procs {
		p.kill()
	}
	err := removeRun(c.ID, order)
	if err != nil {
		c.logf("cluster %s cleanup: %v", c.ID, err)
		return fmt.Errorf("clean up run %s: %w", c.ID, err)
	}
	return nil
}

// SetNamespaceLabels replaces the labels of Kubernetes namespace ns in the
// manifests written afterwards (SyncManifests): that is how a test labels
// namespaces for namespaceSelectors, or changes them later. The namespace is
// rendered from then on even when it has no pods. kubernetes.io/metadata.name
// is always set to ns, as the API server does, and cannot be overridden.
func (c *Cluster) SetNamespaceLabels(ns string, labels map[string]string) error {
	if !dnsLabel.MatchString(ns) {
		return fmt.Errorf("set labels of namespace %q: the name must be a lowercase DNS label", ns)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nsLabels[ns] = copyLabels(labels)
	return nil
}

// SetNamespaceAnnotations replaces the annotations of Kubernetes namespace
// ns in the manifests written afterwards (SyncManifests), such as
// sluice.io/policy-audit. The namespace is rendered from then on even when
// it has no pods.
func (c *Cluster) SetNamespaceAnnotations(ns string, annotations map[string]string) error {
	if !dnsLabel.MatchString(ns) {
		return fmt.Errorf("set annotations of namespace %q: the name must be a lowercase DNS label", ns)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nsAnnotations == nil {
		c.nsAnnotations = map[string]map[string]string{}
	}
	c.nsAnnotations[ns] = copyLabels(annotations)
	return nil
}

// SyncManifests writes the cluster's Namespaces, Nodes and Pods as
// cluster.yaml into every node's ManifestDir, as an API server would show
// every node the whole cluster. The write is atomic (temporary file + rename).
func (c *Cluster) SyncManifests() error {
	y, err := c.Manifests()
	if err != nil {
		return err
	}
	return c.WriteManifest("cluster.yaml", y)
}

// WriteManifest atomically writes yaml as filename into every node's
// ManifestDir (Services, NetworkPolicies and the like that tests write).
func (c *Cluster) WriteManifest(filename, yaml string) error {
	var errs []error
	for _, n := range c.Nodes() {
		errs = append(errs, n.WriteManifest(filename, yaml))
	}
	return errors.Join(errs...)
}

// RemoveManifest removes filename from every node's ManifestDir.
func (c *Cluster) RemoveManifest(filename string) error {
	var errs []error
	for _, n := range c.Nodes() {
		errs = append(errs, n.RemoveManifest(filename))
	}
	return errors.Join(errs...)
}

func underlayAddr6(octet int) netip.Addr {
	b := underlayPrefix6.Addr().As16()
	b[15] = byte(octet)
	return netip.AddrFrom16(b)
}

func underlayAddr(octet int) netip.Addr {
	b := underlayPrefix.Addr().As4()
	b[3] = byte(octet)
	return netip.AddrFrom4(b)
}
