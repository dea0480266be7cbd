package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/observer"
	"github.com/sluice-net/sluice/pkg/service"
	"github.com/sluice-net/sluice/pkg/source/files"
	"github.com/sluice-net/sluice/pkg/statedir"
)

// errEdgeBuild is what the edge build (-tags sluice_edge: edge.go) says
// of the features it leaves out.
var errEdgeBuild = errors.New("this sluice-agent is the edge build (-tags sluice_edge, make build-edge), without the Kubernetes source and the xDS server: use the default build")

// DefaultStateDir holds the API socket and the saved model.
const DefaultStateDir = api.DefaultStateDir

// Options is the agent's configuration.
type Options struct {
	NodeName    string
	Source      string
	ManifestDir string
	Kubeconfig  string // for --source=kubernetes; empty: in-cluster configuration
	// JWKSSecretNamespace is the namespace whose Secrets SluiceL7Policies'
	// jwksSecretRef name (--source=kubernetes): the agent's own.
	JWKSSecretNamespace string
	BPFRoot             string
	CgroupRoot          string
	StateDir            string
	// AttachMode is auto (tcx when the kernel has it), tcx or tc.
	AttachMode   string
	TCPriority   uint16
	CTGCInterval time.Duration
	LogLevel     string
	Datapath     datapath.Config
	// LBAlgorithm is the default backend selection (random or maglev).
	LBAlgorithm string
	// MaglevSeed must be the same on every node of a cluster.
	MaglevSeed string
	// PolicyAudit reports would-be policy denials instead of dropping.
	PolicyAudit bool
	// ProxyPorts is where the L7 proxy's listeners listen: one port per
	// distinct rule set of the node's SluiceL7Policies.
	ProxyPorts l7.PortRange
	// FlowBuffer is how many flows the observer keeps.
	FlowBuffer int
	// Pprof serves Go's runtime profiles (net/http/pprof) on the local
	// API socket under /debug/pprof/, for measuring the agent under load.
	Pprof bool
	// HubbleSocket is the Hubble observer API's unix socket (default
	// <state-dir>/hubble.sock); HubbleAddress an optional TCP address.
	HubbleSocket  string
	HubbleAddress string
	// HealthAddress serves the health probes (/healthz, /readyz) over
	// HTTP, on loopback by default; empty disables it.
	HealthAddress string
	// MetricsAddress serves Prometheus metrics (/metrics), and the probes
	// too, over HTTP; empty disables it.
	MetricsAddress string
	// PprofAddress serves Go's runtime profiles (net/http/pprof) over
	// HTTP; empty (the default) disables it.
	PprofAddress string
	// SocketGroup owns the unix sockets in the state directory (the local
	// API, the Hubble observer) with root: a group name or numeric GID.
	// The sockets are mode 0660, so its members can use `sluice` and
	// `hubble` without root.
	SocketGroup string
	// ManifestMaxBytes is the largest manifest file the files source
	// reads; a larger one is refused.
	ManifestMaxBytes int64
	// CNI is where the sluice-cni plugin is installed, and when the
	// agent removes it (see cni.go).
	CNI CNIOptions
	// XDS serves the node's shared Envoy its L7 configuration over ADS on
	// <state-dir>/xds.sock. On by default; off on hosts without Envoy.
	XDS bool
}

// hubbleSocket is where the observer API listens.
func (o *Options) hubbleSocket() string {
	if o.HubbleSocket != "" {
		return o.HubbleSocket
	}
	return filepath.Join(o.StateDir, observer.DefaultSocketName)
}

// Defaults returns the options an agent runs with when no flag is given.
func Defaults() Options {
	node, _ := os.Hostname()
	if env := os.Getenv("NODE_NAME"); env != "" {
		node = env
	}
	return Options{
		NodeName: node, Source: "files", ManifestDir: "/etc/sluice/manifests",
		// The DaemonSet passes the pod's namespace (downward API).
		JWKSSecretNamespace: os.Getenv("POD_NAMESPACE"),
		BPFRoot:             datapath.DefaultBPFRoot, StateDir: DefaultStateDir,
		AttachMode: "auto", TCPriority: datapath.DefaultTCPriority,
		CTGCInterval: 10 * time.Second, LogLevel: "info",
		Datapath: datapath.Defaults(),
		// A stored flow is a fixed-size record of about 240 bytes plus
		// the ends it shares (pkg/flow): 16384 flows are about 4 MiB,
		// and a follower may fall 16384 flows behind (0.3 s at 50k
		// events/s) before it misses any.
		FlowBuffer:  16384,
		LBAlgorithm: "random", MaglevSeed: "sluice",
		HealthAddress:    DefaultHealthAddress,
		MetricsAddress:   DefaultMetricsAddress,
		SocketGroup:      "0",
		ManifestMaxBytes: files.DefaultMaxBytes,
		XDS:              xdsBuiltIn,
		ProxyPorts:       l7.DefaultPortRange,
	}
}

// AddFlags registers the options on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.NodeName, "node-name", o.NodeName, "name of this node (pods with this spec.nodeName are local); default $NODE_NAME or the hostname")
	fs.StringVar(&o.Source, "source", o.Source, "source of truth: files (a directory of Kubernetes YAML) or kubernetes (the API server)")
	fs.StringVar(&o.ManifestDir, "manifests", o.ManifestDir, "directory of manifests for --source=files")
	fs.Int64Var(&o.ManifestMaxBytes, "manifest-max-bytes", o.ManifestMaxBytes, "largest manifest file --source=files reads; a larger one is refused unread, with an error naming it, and its last good objects stay in force")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig file for --source=kubernetes (default: the in-cluster configuration of the pod's service account)")
	fs.StringVar(&o.JWKSSecretNamespace, "jwks-secret-namespace", o.JWKSSecretNamespace, "the one namespace whose Secrets a SluiceL7Policy's jwksSecretRef may name (--source=kubernetes), the agent's own; default $POD_NAMESPACE; empty: no Secret is read")
	fs.StringVar(&o.BPFRoot, "bpf-root", o.BPFRoot, "bpffs directory this agent owns (maps and links are pinned here)")
	fs.StringVar(&o.CgroupRoot, "cgroup-root", o.CgroupRoot, "cgroup v2 directory for socket hooks (default: the cgroup2 mount)")
	fs.StringVar(&o.StateDir, "state-dir", o.StateDir, "directory for the API socket and saved state")
	fs.StringVar(&o.AttachMode, "attach-mode", o.AttachMode, "how programs attach to interfaces: auto, tcx or tc (legacy clsact)")
	fs.Uint16Var(&o.TCPriority, "tc-priority", o.TCPriority, "priority of Sluice's legacy tc filters (lower runs first)")
	fs.DurationVar(&o.CTGCInterval, "ct-gc-interval", o.CTGCInterval, "how often expired connection-tracking entries are removed")
	fs.StringVar(&o.LogLevel, "log-level", o.LogLevel, "debug, info, warn or error")
	fs.Uint32Var(&o.Datapath.CTMax, "ct-max", o.Datapath.CTMax, "connection-tracking table size (entries)")
	fs.Uint32Var(&o.Datapath.EndpointsMax, "endpoints-max", o.Datapath.EndpointsMax, "maximum local endpoints")
	fs.Uint32Var(&o.Datapath.EventsBufBytes, "events-buffer", o.Datapath.EventsBufBytes, "event ring buffer size in bytes: a power of two, at least the page size; a full ring loses events (counted: sluice status, sluice_events_lost_total)")
	fs.DurationVar(&o.Datapath.CTTimeoutTCP, "ct-timeout-tcp", o.Datapath.CTTimeoutTCP, "lifetime of an idle established TCP connection")
	fs.DurationVar(&o.Datapath.CTTimeoutOther, "ct-timeout-other", o.Datapath.CTTimeoutOther, "lifetime of an idle UDP/ICMP/other flow")
	fs.DurationVar(&o.Datapath.CTTimeoutSYN, "ct-timeout-syn", o.Datapath.CTTimeoutSYN, "lifetime of a TCP handshake in progress")
	fs.DurationVar(&o.Datapath.CTTimeoutClose, "ct-timeout-close", o.Datapath.CTTimeoutClose, "lifetime of a closing TCP connection")
	fs.Uint32Var(&o.Datapath.LBMax, "lb-max", o.Datapath.LBMax, "service map size: one entry per frontend plus one per backend slot")
	fs.Uint32Var(&o.Datapath.LBBackendsMax, "lb-backends-max", o.Datapath.LBBackendsMax, "maximum service backends (and frontends)")
	fs.StringVar((*string)(&o.Datapath.SockLB), "socket-lb", string(o.Datapath.SockLB), "socket-level service translation at connect(): all, hostns-only (the node's own sockets) or off (per-packet translation only)")
	fs.StringVar(&o.LBAlgorithm, "lb-algorithm", o.LBAlgorithm, "default backend selection: random or maglev (per service: annotation sluice.io/lb-algorithm)")
	fs.Uint32Var(&o.Datapath.MaglevTableSize, "maglev-table-size", o.Datapath.MaglevTableSize, "Maglev table size per service (a prime: 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)")
	fs.StringVar(&o.MaglevSeed, "maglev-seed", o.MaglevSeed, "Maglev hash seed; must be the same on every node of the cluster")
	fs.Uint32Var(&o.Datapath.PolicyMapMax, "policy-map-max", o.Datapath.PolicyMapMax, "policy map entries per endpoint; an endpoint whose policy needs more fails closed")
	fs.Uint32Var(&o.Datapath.IPCacheMax, "ipcache-max", o.Datapath.IPCacheMax, "ipcache entries (pods of the whole cluster plus node addresses)")
	fs.IntVar(&o.FlowBuffer, "flow-buffer", o.FlowBuffer, "flows kept in memory for the Hubble observer API and `sluice observe` (about 250 bytes each); also how far a following client may fall behind before it misses flows")
	fs.BoolVar(&o.Pprof, "pprof", o.Pprof, "serve Go's runtime profiles (CPU, heap, goroutines) under /debug/pprof/ on the local API socket (<state-dir>/sluice.sock), for measuring the agent: `curl --unix-socket <state-dir>/sluice.sock http://agent/debug/pprof/profile?seconds=10 > cpu.pprof`")
	fs.StringVar(&o.HubbleSocket, "hubble-socket", o.HubbleSocket, "unix socket of the Hubble observer API (default <state-dir>/hubble.sock)")
	fs.StringVar(&o.HubbleAddress, "hubble-listen-address", o.HubbleAddress, "also serve the Hubble observer API on this TCP address (plaintext gRPC: bind it where only trusted clients reach), e.g. :4244")
	fs.StringVar(&o.HealthAddress, "health-address", o.HealthAddress, "HTTP address serving liveness on /healthz (the process serves) and readiness on /readyz (the agent is ready, as in `sluice status`) for the kubelet's probes; loopback by default, empty disables it")
	fs.StringVar(&o.MetricsAddress, "metrics-address", o.MetricsAddress, "HTTP address serving Prometheus metrics on /metrics, and /healthz and /readyz too; every address of the node by default: bind it to the node's internal address (e.g. 10.0.0.5:9962) or 127.0.0.1:9962 to keep it off other networks, or set it empty to disable it")
	fs.StringVar(&o.PprofAddress, "pprof-address", o.PprofAddress, "HTTP address serving Go's runtime profiles on /debug/pprof/ (heap, CPU, goroutines) for diagnosing memory and CPU use, e.g. 127.0.0.1:6060; off by default: bind it to loopback only, a profile shows the agent's internals")
	fs.StringVar(&o.SocketGroup, "socket-group", o.SocketGroup, "group (name or numeric GID; 0 is root) that owns the agent's unix sockets, sluice.sock and hubble.sock, with root; they are mode 0660, so its members may use the sluice CLI and hubble. A group the agent is not in needs CAP_CHOWN")
	fs.Var((*proxyPortRange)(&o.ProxyPorts), "proxy-port-range", "ports (MIN-MAX) the node's L7 proxy listens on, one per distinct rule set of the SluiceL7Policies; a rule set that finds none free fails closed (sluice status says so). Keep it free of other listeners on the node")
	fs.BoolVar(&o.PolicyAudit, "policy-audit", o.PolicyAudit, "audit mode for every endpoint: report would-be policy denials (verdict audit) and forward them; per namespace: label sluice.io/policy-audit=true")
	fs.BoolVar(&o.Datapath.DisablePolicyRevoke, "disable-policy-revoke", o.Datapath.DisablePolicyRevoke, "judge only new connections: established ones survive a policy change that no longer allows them (by default they are cut on their next packet, TCP with an RST)")
	fs.BoolVar(&o.Datapath.KernelHostRouting, "kernel-host-routing", o.Datapath.KernelHostRouting, "send packets between the pods of this node through the node's IP stack (routing, netfilter, conntrack) instead of straight to the destination pod's interface (BPF host routing, the default): for netfilter rules of your own that must see that traffic")
	fs.DurationVar(&o.Datapath.DropEventInterval, "drop-event-interval", o.Datapath.DropEventInterval, "at most one drop event per flow and reason per interval; the drops in between are counted in the next event (negative: report every drop)")
	fs.StringVar((*string)(&o.Datapath.FlowEvents), "flow-events", string(o.Datapath.FlowEvents), "which flows the datapath reports (counters count everything): all (each connection at every endpoint that sees it, its end at each, socket-LB translations, drops), connections (each connection once per node with its end, socket-LB translations, policy verdicts, drops), drops-and-verdicts (policy decisions and drops), none")
	fs.BoolVar(&o.Datapath.DisableAntispoof, "disable-antispoof", o.Datapath.DisableAntispoof, "let pods send from addresses that are not theirs")
	fs.Var((*portRange)(&o.Datapath), "snat-port-range", "source ports (MIN-MAX) that external connections toward backends on other nodes are translated to, per node address and protocol (NodePort, externalIPs, LoadBalancer with externalTrafficPolicy: Cluster); keep it outside net.ipv4.ip_local_port_range and the NodePort range")
	o.CNI.addFlags(fs)
	fs.BoolVar(&o.XDS, "xds", o.XDS, "serve the node's shared Envoy its L7 policy over xDS (ADS) on <state-dir>/xds.sock, mode 0660 like the other sockets; --xds=false on hosts without Envoy (an L7-policed port then fails closed)")
	fs.BoolVar(&o.Datapath.NoSetRetval, "no-set-retval", o.Datapath.NoSetRetval, "refuse connect() to a service without endpoints with EPERM, as on kernels without bpf_set_retval (before 5.18), even where it is available: to test that fallback")
	fs.BoolVar(&o.Datapath.ForceSockDiag, "force-sock-diag", o.Datapath.ForceSockDiag, "destroy connected UDP sockets of removed backends through sock_diag netlink (SOCK_DESTROY), the fallback of kernels before 6.5, even when the BPF socket iterator is available")
}

// Validate names every setting that cannot work.
func (o *Options) Validate() error {
	var errs []error
	if o.NodeName == "" {
		errs = append(errs, errors.New("--node-name is empty: set it or NODE_NAME"))
	}
	switch o.Source {
	case "files":
		if o.ManifestDir == "" {
			errs = append(errs, errors.New("--manifests is required with --source=files"))
		}
	case "kubernetes":
		if !kubeBuiltIn {
			errs = append(errs, fmt.Errorf("--source=kubernetes: %w", errEdgeBuild))
		} else if o.Kubeconfig == "" && !kubeInCluster() {
			errs = append(errs, errors.New("--source=kubernetes outside a pod needs --kubeconfig: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set, so there is no in-cluster configuration"))
		}
	default:
		errs = append(errs, fmt.Errorf("--source=%q is unknown: use files or kubernetes", o.Source))
	}
	switch o.AttachMode {
	case "auto", "tcx", "tc":
	default:
		errs = append(errs, fmt.Errorf("--attach-mode=%q is unknown: use auto, tcx or tc", o.AttachMode))
	}
	switch o.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("--log-level=%q is unknown: use debug, info, warn or error", o.LogLevel))
	}
	for flag, p := range map[string]string{"--bpf-root": o.BPFRoot, "--state-dir": o.StateDir} {
		if p == "" || !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s %q must be an absolute path", flag, p))
		}
	}
	if o.MetricsAddress != "" {
		if _, _, err := net.SplitHostPort(o.MetricsAddress); err != nil {
			errs = append(errs, fmt.Errorf("--metrics-address %q must be HOST:PORT or :PORT, e.g. :9962 or 127.0.0.1:9962", o.MetricsAddress))
		}
	}
	if o.HealthAddress != "" {
		if _, _, err := net.SplitHostPort(o.HealthAddress); err != nil {
			errs = append(errs, fmt.Errorf("--health-address %q must be HOST:PORT, e.g. %s", o.HealthAddress, DefaultHealthAddress))
		}
		if o.HealthAddress == o.MetricsAddress {
			errs = append(errs, fmt.Errorf("--health-address and --metrics-address are both %s: the metrics server serves the probes as well, so set --health-address= (empty) to serve them there alone", o.HealthAddress))
		}
	}
	if o.PprofAddress != "" {
		if _, _, err := net.SplitHostPort(o.PprofAddress); err != nil {
			errs = append(errs, fmt.Errorf("--pprof-address %q must be HOST:PORT, e.g. 127.0.0.1:6060", o.PprofAddress))
		}
	}
	if o.ManifestMaxBytes <= 0 {
		errs = append(errs, fmt.Errorf("--manifest-max-bytes %d must be positive (default %d)", o.ManifestMaxBytes, files.DefaultMaxBytes))
	}
	if _, err := statedir.LookupGroup(o.SocketGroup); err != nil {
		errs = append(errs, fmt.Errorf("--socket-group: %w", err))
	}
	if err := o.ProxyPorts.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--proxy-port-range: %w", err))
	}
	if o.CTGCInterval < time.Second {
		errs = append(errs, fmt.Errorf("--ct-gc-interval %s must be at least 1s", o.CTGCInterval))
	}
	if err := o.Datapath.Validate(); err != nil {
		errs = append(errs, err)
	}
	so := o.serviceOptions()
	if err := so.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, o.CNI.validate(o.Source))
	return errors.Join(errs...)
}

func (o *Options) serviceOptions() service.Options {
	return service.Options{
		NodeName: o.NodeName, DefaultAlgorithm: service.Algorithm(o.LBAlgorithm),
		MaglevTableSize: o.Datapath.MaglevTableSize, MaglevSeed: o.MaglevSeed,
	}
}

// proxyPortRange is the pflag.Value of --proxy-port-range.
type proxyPortRange l7.PortRange

func (r *proxyPortRange) String() string { return l7.PortRange(*r).String() }

func (r *proxyPortRange) Type() string { return "MIN-MAX" }

func (r *proxyPortRange) Set(s string) error {
	v, err := l7.ParsePortRange(s)
	if err != nil {
		return err
	}
	*r = proxyPortRange(v)
	return nil
}

// portRange is the pflag.Value of --snat-port-range: "MIN-MAX" into the
// datapath configuration's SNAT bounds.
type portRange datapath.Config

func (r *portRange) String() string { return fmt.Sprintf("%d-%d", r.SNATPortMin, r.SNATPortMax) }

func (r *portRange) Type() string { return "MIN-MAX" }

func (r *portRange) Set(s string) error {
	lo, hi, ok := strings.Cut(s, "-")
	minPort, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	maxPort, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("%q is not a port range: write MIN-MAX, e.g. 61000-65535", s)
	}
	r.SNATPortMin, r.SNATPortMax = uint16(minPort), uint16(maxPort)
	return nil
}
