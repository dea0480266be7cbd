package endpoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/reconcile"
)

// Options configure a Manager.
type Options struct {
	NodeName string
	Maps     *datapath.Maps
	Attacher *datapath.Attacher
	Store    *model.Store
	Logger   *slog.Logger
	// Resync is the period of the full reconcile that also prunes leftovers.
	// It only catches what no notification reported (a missed netlink
	// message, a pin removed by hand): 30s keeps that window short without
	// walking every interface often.
	Resync time.Duration
	// MinInterval bounds how often bursts of notifications (a pod start
	// brings link, address, route and neighbour messages) cause a pass.
	MinInterval time.Duration
	// Policy, when set, gives each endpoint its identity and policy
	// flags; without it endpoints carry neither (no policy enforced).
	Policy PolicyProvider
	// ObservePass, if set, is told of every pass: whether it was a full
	// one, how long it took and the error it left (metrics).
	ObservePass func(full bool, took time.Duration, err error)
}

// PolicyProvider decides endpoints' security identity and policy flags.
type PolicyProvider interface {
	// Prepare returns the identity and flags (datapath.EPFlagPolicy*)
	// of the pod's endpoint epID, with its policy maps already in place:
	// the flags never point at maps that are not there.
	Prepare(pod model.NamespacedName, epID uint32) (identity, flags uint32)
	// Placed tells that the entry is written, at ifindex, with what
	// Prepare returned: the provider rewrites it if its decision has
	// changed in between.
	Placed(pod model.NamespacedName, epID uint32, ifindex int, identity, flags uint32)
	// Released tells that the endpoint is gone: its maps can go.
	Released(pod model.NamespacedName, epID uint32)
}

type endpoint struct {
	id      uint32
	pod     model.NamespacedName
	ips     addrs
	ifindex int
	ifname  string
	state   string
	err     string
}

// Manager reconciles local pods with endpoint map entries and attachments.
type Manager struct {
	opts Options
	log  *slog.Logger
	loop *reconcile.Loop

	mu        sync.Mutex
	endpoints map[model.NamespacedName]*endpoint
	// attached records interfaces whose programs this agent attached (so
	// they run this agent's programs, not a predecessor's).
	attached map[int]bool
	// uplinks are the interfaces with the uplink programs, and the SNAT
	// address recorded for each.
	uplinks map[int]uplink
	synced  bool
	lastErr error
	// passes counts completed reconcile passes; passed is closed and
	// replaced at the end of each, waking WaitReady and WaitPass.
	passes uint64
	passed chan struct{}
	// hints are host interfaces a CNI ADD named for pods (see SetHint).
	hints map[model.NamespacedName][]string
}

// New returns a Manager; Run starts it.
func New(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Resync == 0 {
		opts.Resync = 30 * time.Second
	}
	if opts.MinInterval == 0 {
		opts.MinInterval = 50 * time.Millisecond
	}
	m := &Manager{
		opts: opts, log: opts.Logger,
		endpoints: map[model.NamespacedName]*endpoint{}, attached: map[int]bool{}, uplinks: map[int]uplink{},
		passed: make(chan struct{}), hints: map[model.NamespacedName][]string{},
	}
	m.loop = reconcile.New(reconcile.Options{MinInterval: opts.MinInterval, Resync: opts.Resync, Observe: opts.ObservePass}, m.reconcile)
	return m
}

// Trigger marks work; it never blocks.
func (m *Manager) Trigger() { m.loop.Trigger() }

// Synced reports whether one full reconcile has completed.
func (m *Manager) Synced() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.synced
}

// Run reconciles until ctx is done. The first pass adopts what an earlier
// agent left (endpoint IDs from sl_endpoints) and re-attaches every
// endpoint, which swaps in this agent's programs without a gap.
func (m *Manager) Run(ctx context.Context) error {
	m.adopt()
	done := make(chan struct{})
	defer close(done)
	if err := m.subscribe(done); err != nil {
		return err
	}
	modelCh := m.opts.Store.Subscribe()
	defer m.opts.Store.Unsubscribe(modelCh)
	m.loop.Run(ctx, true, modelCh)
	return nil
}

// subscribe turns netlink notifications into triggers.
func (m *Manager) subscribe(done chan struct{}) error {
	onErr := func(err error) {
		select {
		case <-done:
			return // shutting down: the subscription's socket was closed
		default:
		}
		m.log.Warn("netlink subscription", "error", err)
		m.Trigger()
	}
	links := make(chan netlink.LinkUpdate, 64)
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribe to link updates: %w", err)
	}
	routes := make(chan netlink.RouteUpdate, 64)
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribe to route updates: %w", err)
	}
	neighs := make(chan netlink.NeighUpdate, 256)
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribe to neighbour updates: %w", err)
	}
	go func() {
		for {
			select {
			case <-done:
				return
			case _, ok := <-links:
				if !ok {
					return
				}
			case _, ok := <-routes:
				if !ok {
					return
				}
			case _, ok := <-neighs:
				if !ok {
					return
				}
			}
			m.Trigger()
		}
	}()
	return nil
}

// adopt reads the endpoint IDs an earlier agent allocated, so endpoints keep
// their IDs (and with them their CT entries) across a restart.
func (m *Manager) adopt() {
	entries, err := m.opts.Maps.ListEndpoints()
	if err != nil {
		m.log.Warn("read pinned endpoints", "error", err)
		return
	}
	snap := m.opts.Store.Snapshot()
	byIP := map[netip.Addr]*model.Pod{}
	for _, p := range snap.LocalPods(m.opts.NodeName) {
		if a := podAddrs(p); a.valid() {
			byIP[a.primary()] = p
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range entries {
		ea := addrs{v4: e.IPv4, v6: e.IPv6}
		p, ok := byIP[ea.primary()]
		if !ok {
			continue
		}
		nn := model.NamespacedName{Namespace: p.Namespace, Name: p.Name}
		m.endpoints[nn] = &endpoint{id: e.ID, pod: nn, ips: ea, ifindex: int(e.IfIndex), state: "adopted"}
	}
	if len(m.endpoints) > 0 {
		m.log.Info("adopted endpoints from pinned state", "count", len(m.endpoints))
	}
}

// addrs are the addresses an endpoint carries: a pod's first address of
// each family (Kubernetes gives a pod at most one per family).
type addrs struct{ v4, v6 netip.Addr }

func podAddrs(p *model.Pod) addrs {
	var a addrs
	for _, ip := range p.IPs {
		switch {
		case ip.Is4() && !a.v4.IsValid():
			a.v4 = ip
		case ip.Is6() && !ip.Is4In6() && !a.v6.IsValid():
			a.v6 = ip
		}
	}
	return a
}

func (a addrs) valid() bool { return a.v4.IsValid() || a.v6.IsValid() }

// primary is the address the pod's interface is found by: IPv4 when it
// has one (dual-stack CNIs route both families to the same interface).
func (a addrs) primary() netip.Addr {
	if a.v4.IsValid() {
		return a.v4
	}
	return a.v6
}

func (a addrs) has(ip netip.Addr) bool { return ip.IsValid() && (ip == a.v4 || ip == a.v6) }

func (a addrs) list() []string {
	var out []string
	for _, ip := range []netip.Addr{a.v4, a.v6} {
		if ip.IsValid() {
			out = append(out, ip.String())
		}
	}
	return out
}

func (m *Manager) allocID() uint32 {
	used := map[uint32]bool{}
	for _, e := range m.endpoints {
		used[e.id] = true
	}
	for id := uint32(1); ; id++ {
		if !used[id] {
			return id
		}
	}
}

// reconcile makes the kernel match the local pods. full also prunes
// leftovers that no longer belong to any endpoint. It returns the error it
// leaves for Err.
func (m *Manager) reconcile(full bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	snap := m.opts.Store.Snapshot()
	desired := map[model.NamespacedName]*model.Pod{}
	for _, p := range snap.LocalPods(m.opts.NodeName) {
		desired[model.NamespacedName{Namespace: p.Namespace, Name: p.Name}] = p
	}

	var errs []error
	gone := map[uint32]bool{}
	// Pods that are gone, or whose IP changed: release their interface.
	for nn, ep := range m.endpoints {
		p, ok := desired[nn]
		var ips addrs
		if ok {
			ips = podAddrs(p)
		}
		if ok && ips == ep.ips {
			continue
		}
		errs = append(errs, m.release(ep))
		gone[ep.id] = true
		if !ok {
			if m.opts.Policy != nil {
				m.opts.Policy.Released(nn, ep.id)
			}
			delete(m.endpoints, nn)
			delete(m.hints, nn)
			m.log.Info("endpoint removed", "pod", nn, "id", ep.id)
		} else {
			ep.ips, ep.ifindex, ep.ifname = ips, 0, ""
		}
	}

	if len(gone) > 0 {
		// Their connections are over: free the CT entries now rather
		// than when they expire, so a reused ID starts clean.
		if _, err := m.opts.Maps.GCCT(func(id uint32) bool { return gone[id] }, nil); err != nil {
			errs = append(errs, err)
		}
	}

	res := newResolver()
	for nn, p := range desired {
		ips := podAddrs(p)
		if !ips.valid() {
			continue // no address yet
		}
		ep := m.endpoints[nn]
		if ep == nil {
			ep = &endpoint{id: m.allocID(), pod: nn, ips: ips}
			m.endpoints[nn] = ep
		}
		errs = append(errs, m.ensure(ep, res))
	}

	errs = append(errs, m.reconcileUplinks(snap))
	if full {
		errs = append(errs, m.prune())
	}
	m.lastErr = errors.Join(errs...)
	m.synced = true
	m.passes++
	close(m.passed)
	m.passed = make(chan struct{})
	return m.lastErr
}

// ensure attaches ep to its current interface.
func (m *Manager) ensure(ep *endpoint, res *resolver) error {
	var err error
	l := m.hintedInterface(ep.pod)
	if l == nil {
		l, err = res.hostInterface(ep.ips.primary())
	}
	if err != nil {
		if ep.ifindex != 0 && m.attached[ep.ifindex] {
			// The interface went away: forget it, re-attach when it is back.
			_ = m.release(ep)
			ep.ifindex, ep.ifname = 0, ""
		}
		ep.state = "waiting-for-interface"
		if errors.Is(err, errNoInterface) {
			ep.err = ""
			return nil
		}
		ep.err = err.Error()
		return fmt.Errorf("endpoint %s: %w", ep.pod, err)
	}
	idx := l.Attrs().Index
	if ep.ifindex != 0 && ep.ifindex != idx {
		// Recreated interface (new ifindex): drop the old one's state.
		_ = m.release(ep)
	}
	if ep.ifindex == idx && m.attached[idx] && ep.state == "ready" {
		return nil
	}
	ep.ifindex, ep.ifname = idx, l.Attrs().Name
	// Entry first, then programs: a packet never meets our program on an
	// interface without its endpoint entry.
	entry := datapath.EndpointEntry{IfIndex: uint32(idx), ID: ep.id, IPv4: ep.ips.v4, IPv6: ep.ips.v6}
	if m.opts.Policy != nil {
		entry.Identity, entry.PolicyFlags = m.opts.Policy.Prepare(ep.pod, ep.id)
	}
	if err := m.opts.Maps.PutEndpoint(entry); err != nil {
		ep.state, ep.err = "error", err.Error()
		return fmt.Errorf("endpoint %s: %w", ep.pod, err)
	}
	if m.opts.Policy != nil {
		m.opts.Policy.Placed(ep.pod, ep.id, idx, entry.Identity, entry.PolicyFlags)
	}
	if err := m.opts.Attacher.Attach(idx); err != nil {
		ep.state, ep.err = "error", err.Error()
		return fmt.Errorf("endpoint %s: %w", ep.pod, err)
	}
	m.attached[idx] = true
	ep.state, ep.err = "ready", ""
	m.log.Info("endpoint ready", "pod", ep.pod, "id", ep.id, "ips", ep.ips.list(), "interface", ep.ifname, "ifindex", idx, "mode", m.opts.Attacher.Mode())
	return nil
}

// release detaches from ep's interface and deletes its entry.
func (m *Manager) release(ep *endpoint) error {
	if ep.ifindex == 0 {
		return nil
	}
	err := errors.Join(m.opts.Attacher.Detach(ep.ifindex), m.opts.Maps.DeleteEndpoint(uint32(ep.ifindex)))
	delete(m.attached, ep.ifindex)
	return err
}

// prune removes entries, links, filters and CT state that belong to no
// current endpoint: what a predecessor left for pods deleted while no
// agent ran, or what a failed step left behind.
func (m *Manager) prune() error {
	live := map[int]bool{}
	ids := map[uint32]bool{}
	for _, ep := range m.endpoints {
		ids[ep.id] = true
		if ep.ifindex != 0 {
			live[ep.ifindex] = true
		}
	}
	var errs []error
	entries, err := m.opts.Maps.ListEndpoints()
	errs = append(errs, err)
	for _, e := range entries {
		if !live[int(e.IfIndex)] {
			errs = append(errs, m.opts.Maps.DeleteEndpoint(e.IfIndex))
		}
	}
	pinned, err := m.opts.Attacher.PinnedLinkIfindexes()
	errs = append(errs, err)
	for _, idx := range pinned {
		if !live[idx] {
			errs = append(errs, m.opts.Attacher.Detach(idx))
		}
	}
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			idx := l.Attrs().Index
			if _, up := m.uplinks[idx]; !live[idx] && !up && (l.Type() == "veth" || l.Type() == "netkit") {
				errs = append(errs, m.opts.Attacher.Detach(idx))
			}
		}
	}
	// Endpoint ID 0 is the uplinks' view (external service connections).
	if _, err := m.opts.Maps.GCCT(func(id uint32) bool { return id != 0 && !ids[id] }, nil); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// List returns the endpoints for the API.
func (m *Manager) List() []api.Endpoint {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]api.Endpoint, 0, len(m.endpoints))
	for _, ep := range m.endpoints {
		out = append(out, ep.toAPI())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (ep *endpoint) toAPI() api.Endpoint {
	return api.Endpoint{
		ID: ep.id, Namespace: ep.pod.Namespace, Pod: ep.pod.Name, IPs: ep.ips.list(),
		Interface: ep.ifname, IfIndex: ep.ifindex, State: ep.state, Error: ep.err,
	}
}

// PodByID names the pod of an endpoint ID, for event enrichment.
func (m *Manager) PodByID(id uint32) (model.NamespacedName, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ep := range m.endpoints {
		if ep.id == id {
			return ep.pod, true
		}
	}
	return model.NamespacedName{}, false
}

// IDOf returns the endpoint ID of a local pod (a map lookup: the flow
// enricher asks it for every event).
func (m *Manager) IDOf(pod model.NamespacedName) (uint32, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ep, ok := m.endpoints[pod]
	if !ok {
		return 0, false
	}
	return ep.id, true
}

// Err returns the errors of the last pass, if any.
func (m *Manager) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastErr
}
