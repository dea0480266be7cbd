package datapath

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// DefaultBPFRoot is where maps and links are pinned unless --bpf-root says otherwise.
const DefaultBPFRoot = "/sys/fs/bpf/sluice"

// Config sizes and tunes the datapath. Zero values take the defaults.
type Config struct {
	// BPFRoot is the bpffs directory owned by this agent.
	BPFRoot string
	// CTMax is the connection-tracking table size (entries).
	CTMax uint32
	// EndpointsMax is the maximum number of local endpoints.
	EndpointsMax uint32
	// FragMax is the number of first fragments remembered at once, of
	// each family (sl_frag and sl_frag6).
	FragMax uint32
	// LBMax is the size of sl_lb_svc: one entry per frontend plus one per
	// backend slot (10,000 services of one port and 10 backends: 110,000).
	LBMax uint32
	// LBBackendsMax sizes sl_lb_backends and sl_lb_revnat.
	LBBackendsMax uint32
	// MaglevTableSize is the number of entries of each Maglev table (prime).
	MaglevTableSize uint32
	// MaglevMax is how many frontends may have a Maglev table at once.
	MaglevMax uint32
	// EventsBufBytes is the ring buffer size; a power of two, a multiple of the page size.
	EventsBufBytes uint32
	// CT lifetimes by state.
	CTTimeoutSYN, CTTimeoutTCP, CTTimeoutClose, CTTimeoutOther time.Duration
	// SockLB says which sockets socket-level load balancing serves.
	SockLB SockLBMode
	// HostNetnsCookie is the node's network namespace cookie (socket LB in
	// hostns-only mode); the agent reads it from its own namespace.
	HostNetnsCookie uint64
	// DisableAntispoof lets pods send from addresses that are not theirs.
	DisableAntispoof bool
	// PolicyMapMax is the size of each endpoint's policy map (and of its
	// CIDR map): an endpoint whose policy does not fit fails closed.
	PolicyMapMax uint32
	// IPCacheMax is the number of addresses the ipcache holds (every pod
	// of the cluster plus node addresses).
	IPCacheMax uint32
	// DropEventInterval is the least time between two drop events of one
	// flow, direction and reason (the drops in between are counted in the
	// next event); negative reports every drop.
	DropEventInterval time.Duration
	// DisablePolicyRevoke judges only new connections: established ones
	// survive a policy change that no longer allows them.
	DisablePolicyRevoke bool
	// KernelHostRouting sends packets between the pods of a node through
	// the node's IP stack (routing, netfilter, conntrack) instead of
	// straight to the destination's interface (BPF host routing).
	KernelHostRouting bool
	// FlowEvents is which events the datapath reports.
	FlowEvents FlowEvents
	// SNATPortMin and SNATPortMax bound the source ports external
	// connections toward remote backends are translated to, per node
	// address and protocol: above the default ip_local_port_range
	// (32768-60999) and the NodePort range, so they never collide with the
	// node's own sockets.
	SNATPortMin, SNATPortMax uint16
	// NoSetRetval loads socket LB as on kernels without bpf_set_retval
	// (a refused connect() fails with EPERM), to test that fallback.
	NoSetRetval bool
	// ForceSockDiag destroys the sockets of removed backends through
	// sock_diag netlink even when the BPF socket iterator loaded: the
	// fallback of kernels before 6.5, chosen on purpose to test it.
	ForceSockDiag bool
}

// Defaults returns the configuration a node gets without flags. The CT size
// is sized for a busy node (~25 MiB preallocated); edge hosts may lower it.
func Defaults() Config {
	return Config{
		BPFRoot:           DefaultBPFRoot,
		CTMax:             131072,
		EndpointsMax:      1024,
		LBMax:             262144,
		LBBackendsMax:     65536,
		MaglevTableSize:   16381,
		MaglevMax:         4096,
		FragMax:           8192,
		EventsBufBytes:    1 << 20,
		PolicyMapMax:      16384,
		IPCacheMax:        65536,
		CTTimeoutSYN:      60 * time.Second,
		CTTimeoutTCP:      6 * time.Hour,
		CTTimeoutClose:    10 * time.Second,
		CTTimeoutOther:    60 * time.Second,
		DropEventInterval: time.Second,
		SockLB:            SockLBAll,
		FlowEvents:        FlowEventsConnections,
		SNATPortMin:       61000,
		SNATPortMax:       65535,
	}
}

func (c *Config) withDefaults() Config {
	d := Defaults()
	out := *c
	orDefault(&out.BPFRoot, d.BPFRoot)
	orDefault(&out.SockLB, d.SockLB)
	orDefault(&out.FlowEvents, d.FlowEvents)
	for _, p := range []struct{ v, d *uint32 }{
		{&out.CTMax, &d.CTMax}, {&out.EndpointsMax, &d.EndpointsMax}, {&out.FragMax, &d.FragMax},
		{&out.LBMax, &d.LBMax}, {&out.LBBackendsMax, &d.LBBackendsMax},
		{&out.MaglevTableSize, &d.MaglevTableSize}, {&out.MaglevMax, &d.MaglevMax},
		{&out.EventsBufBytes, &d.EventsBufBytes},
		{&out.PolicyMapMax, &d.PolicyMapMax}, {&out.IPCacheMax, &d.IPCacheMax},
	} {
		orDefault(p.v, *p.d)
	}
	if out.SNATPortMin == 0 && out.SNATPortMax == 0 {
		out.SNATPortMin, out.SNATPortMax = d.SNATPortMin, d.SNATPortMax
	}
	for _, p := range []struct{ v, d *time.Duration }{
		{&out.CTTimeoutSYN, &d.CTTimeoutSYN}, {&out.CTTimeoutTCP, &d.CTTimeoutTCP},
		{&out.CTTimeoutClose, &d.CTTimeoutClose}, {&out.CTTimeoutOther, &d.CTTimeoutOther},
		{&out.DropEventInterval, &d.DropEventInterval},
	} {
		orDefault(p.v, *p.d)
	}
	return out
}

// orDefault sets *v to d when it holds its zero value.
func orDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// Validate names the first setting that cannot work.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if _, err := c.FlowEvents.level(); err != nil {
		errs = append(errs, err)
	}
	if c.SNATPortMin < 1024 || c.SNATPortMin > c.SNATPortMax {
		errs = append(errs, fmt.Errorf("snat-port-range %d-%d is not a range of ports above 1023: use e.g. 61000-65535", c.SNATPortMin, c.SNATPortMax))
	}
	if c.CTMax < 1024 {
		errs = append(errs, fmt.Errorf("ct-max %d is too small: use at least 1024", c.CTMax))
	}
	switch c.SockLB {
	case SockLBAll, SockLBHostOnly, SockLBOff:
	default:
		errs = append(errs, fmt.Errorf("socket-lb %q is unknown: use all, hostns-only or off", c.SockLB))
	}
	if c.LBMax < 1024 || c.LBBackendsMax < 1024 {
		errs = append(errs, fmt.Errorf("lb-max %d and lb-backends-max %d must be at least 1024", c.LBMax, c.LBBackendsMax))
	}
	if c.PolicyMapMax < 16 || c.IPCacheMax < 256 {
		errs = append(errs, fmt.Errorf("policy-map-max %d must be at least 16 and ipcache-max %d at least 256", c.PolicyMapMax, c.IPCacheMax))
	}
	// A ring buffer is a power-of-two multiple of the page size; a power
	// of two of at least one page is one (4 KiB on amd64, up to 64 KiB on
	// arm64 kernels).
	if page := uint32(os.Getpagesize()); c.EventsBufBytes&(c.EventsBufBytes-1) != 0 || c.EventsBufBytes < page {
		errs = append(errs, fmt.Errorf("events-buffer %d must be a power of two of at least the page size (%d bytes)", c.EventsBufBytes, page))
	}
	for name, d := range map[string]time.Duration{
		"ct-timeout-syn": c.CTTimeoutSYN, "ct-timeout-tcp": c.CTTimeoutTCP,
		"ct-timeout-close": c.CTTimeoutClose, "ct-timeout-other": c.CTTimeoutOther,
	} {
		if d < time.Second {
			errs = append(errs, fmt.Errorf("%s %s must be at least 1s", name, d))
		}
	}
	return errors.Join(errs...)
}
