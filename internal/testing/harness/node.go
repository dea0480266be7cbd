package harness

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Mode is how a node wires its pods, after the two families of CNIs Sluice
// must work beside.
type Mode int

const (
	// Routed nodes give each pod a /32 and a point-to-point veth: the pod's
	// default route is 169.254.1.1 (answered by proxy ARP on the host side),
	// the node has a /32 route per pod to its host veth (Calico, kindnet/ptp).
	Routed Mode = iota
	// Bridge nodes put the host side of each pod veth into bridge cni0, which
	// holds the pod CIDR's first address as the pods' gateway (flannel).
	Bridge
)

func (m Mode) String() string {
	switch m {
	case Routed:
		return "routed"
	case Bridge:
		return "bridge"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// BridgeName is the pod bridge of Bridge nodes.
const BridgeName = "cni0"

// Node is a simulated Kubernetes node: a network namespace on the underlay
// with its own pod CIDR, bpffs directory, cgroup root, state directory and
// manifest directory, ready for one agent.
type Node struct {
	Host
	Name string
	Mode Mode
	IP   netip.Addr
	// IP6 is the node's IPv6 underlay address (fd00:31::N), its second
	// InternalIP.
	IP6     netip.Addr
	PodCIDR netip.Prefix
	// PodCIDR6 is the node's IPv6 pod range (fd00:10:244:N::/64), for
	// pods added with an IPv6 family, routed across the underlay as
	// PodCIDR is.
	PodCIDR6 netip.Prefix
	// BPFRoot is the node's bpffs directory, for the agent's --bpf-root.
	BPFRoot string
	// StateDir is the agent's --state-dir (API socket, agent logs).
	StateDir string
	// CgroupRoot is the node's cgroup v2 directory, for --cgroup-root; pod
	// cgroups are its children.
	CgroupRoot string
	// ManifestDir is where the node's agent reads YAML (--manifests).
	ManifestDir string

	cluster *Cluster
	pods    []*Pod
	nextPod int
	agents  int
	envoys  int
}

// AddNode adds node <prefix><name> in the given mode, connected to the
// underlay, and adds routes between its pod CIDR and every other node's.
func (c *Cluster) AddNode(ctx context.Context, name string, mode Mode) (*Node, error) {
	if mode != Routed && mode != Bridge {
		return nil, fmt.Errorf("add node %s: unknown mode %v", name, mode)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.claimName("node", name); err != nil {
		return nil, err
	}
	octet := firstNodeOctet + len(c.nodes)
	if octet > lastNodeOctet {
		return nil, fmt.Errorf("add node %s: at most %d nodes", name, lastNodeOctet-firstNodeOctet+1)
	}
	n, err := c.addNode(ctx, name, mode, octet)
	if err != nil {
		return nil, fmt.Errorf("add node %s: %w", name, err)
	}
	c.nodes = append(c.nodes, n)
	c.logf("node %s (%s): netns %s, ip %s, pod CIDR %s", name, mode, n.NetnsName, n.IP, n.PodCIDR)
	return n, nil
}

func (c *Cluster) addNode(ctx context.Context, name string, mode Mode, octet int) (*Node, error) {
	nsName, path, err := c.addNetns(ctx, name)
	if err != nil {
		return nil, err
	}
	n := &Node{
		Host:        Host{NetnsName: nsName, NetnsPath: path, ident: "node/" + name, cluster: c},
		Name:        name,
		Mode:        mode,
		IP:          underlayAddr(octet),
		IP6:         underlayAddr6(octet),
		PodCIDR:     netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(octet), 0}), 24),
		PodCIDR6:    netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x10, 0x02, 0x44, 0, byte(octet)}), 64),
		BPFRoot:     filepath.Join(c.BPFRoot, name),
		StateDir:    filepath.Join(c.TempDir, name, "state"),
		CgroupRoot:  filepath.Join(c.CgroupRoot, name),
		ManifestDir: filepath.Join(c.TempDir, name, "manifests"),
		cluster:     c,
		nextPod:     firstPodOctet,
	}
	for _, d := range []string{n.StateDir, n.ManifestDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	if err := os.Mkdir(n.BPFRoot, 0o700); err != nil {
		return nil, fmt.Errorf("create bpffs dir %s: %w", n.BPFRoot, err)
	}
	if err := os.Mkdir(n.CgroupRoot, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", n.CgroupRoot, err)
	}
	// The node's own processes (Host.Exec and requests on the node) run in
	// a "host" cgroup under the node's root, as system.slice does on a real
	// node: the agent's cgroup programs see them like any host process.
	n.Host.CgroupPath = filepath.Join(n.CgroupRoot, "host")
	if err := os.Mkdir(n.Host.CgroupPath, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", n.Host.CgroupPath, err)
	}
	if err := setSysctls(path, map[string]string{"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"}); err != nil {
		return nil, err
	}
	if err := c.plugIntoUnderlay(path, fmt.Sprintf("n%d", octet), n.IP, n.IP6); err != nil {
		return nil, err
	}
	err = withNetlink(path, func(h *netlink.Handle) error {
		eth0, err := h.LinkByName("eth0")
		if err != nil {
			return fmt.Errorf("find eth0: %w", err)
		}
		def := &netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: underlayGateway.AsSlice()}
		if err := h.RouteAdd(def); err != nil {
			return fmt.Errorf("add default route via %s: %w", underlayGateway, err)
		}
		if mode != Bridge {
			return nil
		}
		// An address of its own, as a CNI's bridge has: a bridge without
		// one takes the lowest of its ports' and takes another as pods'
		// veths join and leave, and the pods' neighbour entries for their
		// gateway then name a MAC that is gone: their traffic to other
		// nodes is lost until those entries expire, half a minute and
		// more (TestBridgeGatewaySurvivesPodChurn).
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: BridgeName,
			HardwareAddr: net.HardwareAddr{0x02, 0x00, 10, 244, byte(octet), 1}}}
		if err := h.LinkAdd(br); err != nil {
			return fmt.Errorf("create %s: %w", BridgeName, err)
		}
		gw := netip.PrefixFrom(n.PodCIDR.Addr().Next(), n.PodCIDR.Bits())
		if err := h.AddrAdd(br, &netlink.Addr{IPNet: prefixToIPNet(gw)}); err != nil {
			return fmt.Errorf("address %s: %w", BridgeName, err)
		}
		gw6 := netip.PrefixFrom(n.PodCIDR6.Addr().Next(), n.PodCIDR6.Bits())
		if err := h.AddrAdd(br, &netlink.Addr{IPNet: prefixToIPNet(gw6), Flags: unix.IFA_F_NODAD}); err != nil {
			return fmt.Errorf("address %s: %w", BridgeName, err)
		}
		if err := h.LinkSetUp(br); err != nil {
			return fmt.Errorf("set %s up: %w", BridgeName, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, o := range c.nodes {
		if err := o.routePodsFrom(path); err != nil {
			return nil, err
		}
		if err := n.routePodsFrom(o.NetnsPath); err != nil {
			return nil, err
		}
	}
	for _, e := range c.externals {
		if err := n.routePodsFrom(e.NetnsPath); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// routePodsFrom routes n's pod CIDRs, both families, via n's underlay
// addresses in the namespace at path.
func (n *Node) routePodsFrom(path string) error {
	if err := addRoute(path, n.PodCIDR, n.IP); err != nil {
		return err
	}
	return addRoute(path, n.PodCIDR6, n.IP6)
}

// Pods returns the node's pods in the order they were added.
func (n *Node) Pods() []*Pod {
	n.cluster.mu.Lock()
	defer n.cluster.mu.Unlock()
	return append([]*Pod(nil), n.pods...)
}

// APISocket is the path of the agent API socket in the node's state directory.
func (n *Node) APISocket() string { return filepath.Join(n.StateDir, api.SocketName) }

// WriteManifest atomically writes yaml as filename into the node's ManifestDir.
func (n *Node) WriteManifest(filename, yaml string) error {
	if filename != filepath.Base(filename) || strings.HasPrefix(filename, ".") {
		return fmt.Errorf("manifest file name %q must be a plain, non-hidden file name", filename)
	}
	// The temporary file is hidden so that a directory watcher ignoring dot
	// files never reads a half-written manifest.
	tmp, err := os.CreateTemp(n.ManifestDir, ".tmp-"+filename+"-")
	if err != nil {
		return fmt.Errorf("write manifest %s for node %s: %w", filename, n.Name, err)
	}
	_, werr := tmp.WriteString(yaml)
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(tmp.Name(), 0o644)
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), filepath.Join(n.ManifestDir, filename))
	}
	if werr != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write manifest %s for node %s: %w", filename, n.Name, werr)
	}
	return nil
}

// RemoveManifest removes filename from the node's ManifestDir; a missing
// file is not an error.
func (n *Node) RemoveManifest(filename string) error {
	err := os.Remove(filepath.Join(n.ManifestDir, filepath.Base(filename)))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove manifest %s for node %s: %w", filename, n.Name, err)
	}
	return nil
}

// Port is a container port declared in a pod's manifest.
type Port struct {
	Name     string
	Port     int
	Protocol string // "TCP" (default), "UDP" or "SCTP"
}

// Pod is a simulated pod: a network namespace with one veth to its node and a
// cgroup under the node's cgroup root in which its workloads run.
type Pod struct {
	Host
	Namespace string
	Name      string
	UID       string
	Labels    map[string]string
	Ports     []Port
	// IP is the pod's first address: IPv4, or IPv6 for an IPv6-only pod.
	IP netip.Addr
	// IPs are all its addresses (status.podIPs): IPv4 first.
	IPs []netip.Addr
	// HostIfName is the node-side veth ("lxc" + 8 hex digits).
	HostIfName string
	// MAC is the pod-side eth0's hardware address.
	MAC net.HardwareAddr
	// HostMAC is the node-side veth's hardware address.
	HostMAC net.HardwareAddr
	Node    *Node
	deleted bool
	// pending: the manifest shows the pod as the API server has it
	// while the CNI sets up its sandbox (see SetPending).
	pending bool
	// controller is its controller owner (see SetController).
	controller *ownerReference
}

// String returns "namespace/name".
func (p *Pod) String() string { return p.Namespace + "/" + p.Name }

// SetLabels replaces the pod's labels in the manifests written afterwards
// (SyncManifests), as a `kubectl label` would: the pod keeps its address,
// interfaces and workloads. Change labels only through SetLabels, which
// holds the lock Manifests reads them under.
func (p *Pod) SetLabels(labels map[string]string) {
	c := p.Node.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	p.Labels = copyLabels(labels)
}

// SetController gives the pod a controller owner in the manifests written
// afterwards (SyncManifests), as the pods of a workload have: kind
// ReplicaSet (of a Deployment, with the pod's pod-template-hash label),
// StatefulSet, DaemonSet or Job, and the owner's name. Flows name the
// pod's workload from it.
func (p *Pod) SetController(kind, name string) {
	apiVersion := "apps/v1"
	if kind == "Job" {
		apiVersion = "batch/v1"
	}
	c := p.Node.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	p.controller = &ownerReference{APIVersion: apiVersion, Kind: kind, Name: name, UID: newUID(), Controller: true}
}

// SetPending makes the manifests written afterwards (SyncManifests) show
// the pod as a real API server does while its sandbox is being created,
// when the CNI plugins run: scheduled (spec.nodeName, labels, ports) but
// Pending, with no status.podIP(s) yet, which the kubelet writes only
// after the CNI ADD returned. SetPending(false) writes the status.
func (p *Pod) SetPending(pending bool) {
	c := p.Node.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	p.pending = pending
}

// AddPod creates pod namespace/name on the node with the next free address of
// the node's pod CIDR. Its network namespace is <prefix><node>-<namespace>_<name>
// and its cgroup <node CgroupRoot>/<namespace>_<name> ("_" cannot occur in
// Kubernetes names, so neither can collide). labels and ports go into the
// pod's manifest only.
func (n *Node) AddPod(ctx context.Context, namespace, name string, labels map[string]string, ports ...Port) (*Pod, error) {
	return n.AddPodFamily(ctx, IPv4, namespace, name, labels, ports...)
}

// Family is which address families a pod gets.
type Family int

const (
	// IPv4 pods have one address from the node's PodCIDR.
	IPv4 Family = iota
	// IPv6Only pods have one address from the node's PodCIDR6 and no IPv4.
	IPv6Only
	// DualStack pods have both, IPv4 first.
	DualStack
)

// AddPodFamily is AddPod with the pod's address families.
func (n *Node) AddPodFamily(ctx context.Context, fam Family, namespace, name string, labels map[string]string, ports ...Port) (*Pod, error) {
	c := n.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("cluster is cleaned up")
	}
	if !dnsLabel.MatchString(namespace) || !dnsLabel.MatchString(name) {
		return nil, fmt.Errorf("add pod %s/%s: namespace and name must be lowercase DNS labels", namespace, name)
	}
	for _, o := range n.pods {
		if o.Namespace == namespace && o.Name == name {
			return nil, fmt.Errorf("add pod %s/%s: already exists on node %s", namespace, name, n.Name)
		}
	}
	if n.nextPod > lastPodOctet {
		return nil, fmt.Errorf("add pod %s/%s: pod CIDR %s of node %s is exhausted", namespace, name, n.PodCIDR, n.Name)
	}
	a := n.PodCIDR.Addr().As4()
	a[3] = byte(n.nextPod)
	a6 := n.PodCIDR6.Addr().As16()
	a6[15] = byte(n.nextPod)
	n.nextPod++
	p := &Pod{
		Namespace: namespace,
		Name:      name,
		UID:       newUID(),
		Labels:    copyLabels(labels),
		Ports:     append([]Port(nil), ports...),
		Node:      n,
	}
	if fam != IPv6Only {
		p.IPs = append(p.IPs, netip.AddrFrom4(a))
	}
	if fam != IPv4 {
		p.IPs = append(p.IPs, netip.AddrFrom16(a6))
	}
	p.IP = p.IPs[0]
	p.HostIfName = hostIfName(n.Name, namespace, name)
	leaf := namespace + "_" + name
	p.Host = Host{
		CgroupPath: filepath.Join(n.CgroupRoot, leaf),
		ident:      p.String(),
		cluster:    c,
	}
	if err := n.wirePod(ctx, p, leaf); err != nil {
		return nil, fmt.Errorf("add pod %s on node %s: %w", p, n.Name, err)
	}
	n.pods = append(n.pods, p)
	c.logf("pod %s on %s: ip %s, netns %s, host veth %s", p, n.Name, p.IP, p.NetnsName, p.HostIfName)
	return p, nil
}

func (n *Node) wirePod(ctx context.Context, p *Pod, leaf string) error {
	c := n.cluster
	if err := os.Mkdir(p.CgroupPath, 0o755); err != nil {
		return fmt.Errorf("create cgroup %s: %w", p.CgroupPath, err)
	}
	nsName, path, err := c.addNetns(ctx, n.Name+"-"+leaf)
	if err != nil {
		return err
	}
	p.NetnsName, p.NetnsPath = nsName, path
	podNs, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer podNs.Close()

	// Node side: the veth (its peer is created directly in the pod netns),
	// then bridge port or proxy ARP and /32 route.
	err = withNetlink(n.NetnsPath, func(h *netlink.Handle) error {
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: p.HostIfName},
			PeerName:      "eth0",
			PeerNamespace: netlink.NsFd(podNs),
		}
		if err := h.LinkAdd(veth); err != nil {
			return fmt.Errorf("create veth %s: %w", p.HostIfName, err)
		}
		host, err := h.LinkByName(p.HostIfName)
		if err != nil {
			return fmt.Errorf("find veth %s: %w", p.HostIfName, err)
		}
		p.HostMAC = host.Attrs().HardwareAddr
		if n.Mode == Bridge {
			br, err := h.LinkByName(BridgeName)
			if err != nil {
				return fmt.Errorf("find %s: %w", BridgeName, err)
			}
			if err := h.LinkSetMaster(host, br); err != nil {
				return fmt.Errorf("attach %s to %s: %w", p.HostIfName, BridgeName, err)
			}
		}
		if err := h.LinkSetUp(host); err != nil {
			return fmt.Errorf("set %s up: %w", p.HostIfName, err)
		}
		if n.Mode == Routed {
			for _, ip := range p.IPs {
				r := &netlink.Route{
					LinkIndex: host.Attrs().Index,
					Dst:       prefixToIPNet(netip.PrefixFrom(ip, ip.BitLen())),
					Scope:     netlink.SCOPE_LINK,
				}
				if err := h.RouteAdd(r); err != nil {
					return fmt.Errorf("add route %s dev %s: %w", ip, p.HostIfName, err)
				}
			}
			if p.IPv6().IsValid() {
				// The pods' IPv6 gateway: the host side's own
				// link-local address, as Calico's fe80::ecee:eeff:feee:eeee.
				ll := &netlink.Addr{IPNet: prefixToIPNet(routedPodGateway6), Flags: unix.IFA_F_NODAD}
				if err := h.AddrAdd(host, ll); err != nil {
					return fmt.Errorf("address %s with %s: %w", p.HostIfName, routedPodGateway6, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if n.Mode == Routed {
		// proxy_delay 0: answer at once instead of after up to 0.8s
		// (Calico sets the same).
		if err := setSysctls(n.NetnsPath, map[string]string{
			"net.ipv4.conf." + p.HostIfName + ".proxy_arp":    "1",
			"net.ipv4.neigh." + p.HostIfName + ".proxy_delay": "0",
		}); err != nil {
			return err
		}
	}

	// Pod side.
	err = withNetlink(path, func(h *netlink.Handle) error {
		eth0, err := h.LinkByName("eth0")
		if err != nil {
			return fmt.Errorf("find pod eth0: %w", err)
		}
		p.MAC = eth0.Attrs().HardwareAddr
		for _, ip := range p.IPs {
			bits := ip.BitLen()
			if n.Mode == Bridge && ip.Is4() {
				bits = n.PodCIDR.Bits()
			} else if n.Mode == Bridge {
				bits = n.PodCIDR6.Bits()
			}
			addr := &netlink.Addr{IPNet: prefixToIPNet(netip.PrefixFrom(ip, bits))}
			if ip.Is6() {
				addr.Flags = unix.IFA_F_NODAD
			}
			if err := h.AddrAdd(eth0, addr); err != nil {
				return fmt.Errorf("address pod eth0 with %s: %w", ip, err)
			}
		}
		if err := h.LinkSetUp(eth0); err != nil {
			return fmt.Errorf("set pod eth0 up: %w", err)
		}
		for _, ip := range p.IPs {
			gw := routedPodGateway
			switch {
			case n.Mode == Bridge && ip.Is4():
				gw = n.PodCIDR.Addr().Next()
			case n.Mode == Bridge:
				gw = n.PodCIDR6.Addr().Next()
			case ip.Is6():
				gw = routedPodGateway6.Addr()
			}
			def := &netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: gw.AsSlice()}
			if n.Mode == Routed && ip.Is4() {
				def.Flags = int(netlink.FLAG_ONLINK)
			}
			if err := h.RouteAdd(def); err != nil {
				return fmt.Errorf("add pod default route via %s: %w", gw, err)
			}
		}
		return waitOperUp(h, "eth0")
	})
	if err != nil {
		return err
	}
	return withNetlink(n.NetnsPath, func(h *netlink.Handle) error { return waitOperUp(h, p.HostIfName) })
}

// IPv6 returns the pod's IPv6 address, if it has one.
func (p *Pod) IPv6() netip.Addr {
	for _, ip := range p.IPs {
		if ip.Is6() {
			return ip
		}
	}
	return netip.Addr{}
}

// waitOperUp waits until link name is operationally up. A veth set up has
// its queueing discipline attached only when the kernel's link watcher runs,
// which it delays by up to a second after another link event (and longer
// on a loaded machine); until then every packet sent on it is dropped, so
// a probe right after AddPod would time out.
func waitOperUp(h *netlink.Handle, name string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s: %w", name, err)
		}
		if l.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is not operationally up after 10s (state %s)", name, l.Attrs().OperState)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Delete removes the pod as a CNI DEL would: its processes are killed, its
// host veth (and with it the /32 route), network namespace and cgroup are
// removed. The pod stays out of manifests written afterwards.
func (p *Pod) Delete() error {
	n, c := p.Node, p.Node.cluster
	c.mu.Lock()
	if p.deleted {
		c.mu.Unlock()
		return nil
	}
	p.deleted = true
	for i, o := range n.pods {
		if o == p {
			n.pods = append(n.pods[:i], n.pods[i+1:]...)
			break
		}
	}
	var procs []stopper
	for s := range c.procs {
		if s.host() == &p.Host {
			procs = append(procs, s)
			delete(c.procs, s)
		}
	}
	c.mu.Unlock()
	for _, s := range procs {
		s.kill()
	}
	var errs []error
	errs = append(errs, killNetnsProcs(p.NetnsPath))
	errs = append(errs, killCgroup(p.CgroupPath, cgroupKillTimeout))
	// Delete the host veth explicitly: namespace teardown is asynchronous,
	// and a pod re-added under the same name needs the interface name back.
	errs = append(errs, withNetlink(n.NetnsPath, func(h *netlink.Handle) error {
		l, err := h.LinkByName(p.HostIfName)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				return nil
			}
			return fmt.Errorf("find %s: %w", p.HostIfName, err)
		}
		if err := h.LinkDel(l); err != nil {
			return fmt.Errorf("delete %s: %w", p.HostIfName, err)
		}
		return nil
	}))
	errs = append(errs, deleteNetns(p.NetnsName))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete pod %s: %w", p, err)
	}
	c.logf("pod %s on %s deleted", p, n.Name)
	return nil
}

// hostIfName derives the node-side veth name from the pod's identity, like
// Calico's "cali" + hash: stable, unique per node and within the 15-byte
// interface name limit.
func hostIfName(node, namespace, name string) string {
	sum := sha256.Sum256([]byte(node + "/" + namespace + "/" + name))
	return "lxc" + hex.EncodeToString(sum[:4])
}

func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func copyLabels(l map[string]string) map[string]string {
	out := make(map[string]string, len(l))
	for k, v := range l {
		out[k] = v
	}
	return out
}

// withNetlink runs fn with a netlink handle bound to the namespace at path.
// The handle's sockets live in that namespace; no thread changes namespace
// while fn runs.
func withNetlink(path string, fn func(*netlink.Handle) error) error {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink handle in %s: %w", path, err)
	}
	defer h.Close()
	return fn(h)
}

// addRoute adds "dst via gw" in the namespace at path.
func addRoute(path string, dst netip.Prefix, gw netip.Addr) error {
	return withNetlink(path, func(h *netlink.Handle) error {
		r := &netlink.Route{Dst: prefixToIPNet(dst), Gw: gw.AsSlice()}
		if err := h.RouteAdd(r); err != nil {
			return fmt.Errorf("add route %s via %s in %s: %w", dst, gw, path, err)
		}
		return nil
	})
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
