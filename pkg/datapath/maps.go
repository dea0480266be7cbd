package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/datapath/events"
	"github.com/sluice-net/sluice/pkg/datapath/internal/raw"
	"github.com/sluice-net/sluice/pkg/model"
)

// Maps gives typed access to the datapath's maps, either those of a loaded
// Datapath or, for the CLI, the pins alone (OpenPinned).
type Maps struct {
	Endpoints *ebpf.Map
	CT        *ebpf.Map
	Metrics   *ebpf.Map
	// MetricsFast holds the counters without a reason (sl_metrics_fast).
	MetricsFast *ebpf.Map
	LBSvc       *ebpf.Map
	LBBackends  *ebpf.Map
	LBRevNat    *ebpf.Map
	LBMaglev    *ebpf.Map
	LBSrcRange  *ebpf.Map
	Uplinks     *ebpf.Map
	IPCache     *ebpf.Map
	Policy      *ebpf.Map
	PolicyCIDR  *ebpf.Map
	PolicyRev   *ebpf.Map
	NAT         *ebpf.Map
	Proxy       *ebpf.Map
	owned       []*ebpf.Map
	// The SNAT port range and the closing-connection lifetime the programs
	// were loaded with (loaded datapaths only): what NATUsage measures
	// against.
	snatPortMin, snatPortMax uint16
	ctTimeoutClose           uint64
	flowEvents               FlowEvents
	// maglevInner is the spec of a Maglev table (loaded datapaths only).
	maglevInner *ebpf.MapSpec
	// policyInner and cidrInner are the specs of endpoint policy maps.
	policyInner, cidrInner *ebpf.MapSpec
	// epMu serialises read-modify-writes of endpoint entries (shared by
	// every Maps of one Datapath).
	epMu *sync.Mutex
}

// Maps returns typed access to the loaded datapath's maps.
func (dp *Datapath) Maps() *Maps {
	o := &dp.objs
	return &Maps{Endpoints: o.SlEndpoints, CT: o.SlCt, Metrics: o.SlMetrics, MetricsFast: o.SlMetricsFast, LBSvc: o.SlLbSvc, LBBackends: o.SlLbBackends,
		LBRevNat: o.SlLbRevnat, LBMaglev: o.SlLbMaglev, LBSrcRange: o.SlLbSrcRange, Uplinks: o.SlUplinks,
		IPCache: o.SlIpcache, Policy: o.SlPolicy, PolicyCIDR: o.SlPolicyCidr, PolicyRev: o.SlPolicyRev, NAT: o.SlNat, Proxy: o.SlProxy,
		snatPortMin: dp.cfg.SNATPortMin, snatPortMax: dp.cfg.SNATPortMax, ctTimeoutClose: uint64(dp.cfg.CTTimeoutClose.Nanoseconds()),
		flowEvents:  dp.cfg.FlowEvents,
		maglevInner: dp.maglevInner, policyInner: dp.policyInner, cidrInner: dp.cidrInner, epMu: &dp.epMu}
}

// ErrLayoutMismatch is returned (wrapped) by OpenPinned for a pinned map
// whose recorded layout is not the one this build reads: the pins belong
// to an agent of another version.
var ErrLayoutMismatch = errors.New("the agent on this node runs a different version of sluice; use its own CLI " +
	"(kubectl -n sluice-system exec <the node's sluice pod> -c agent -- sluice ...)")

// OpenPinned opens the maps pinned under root read-only, without loading
// any program: this is how `sluice bpf ...` works while the agent is down.
// Each map's layout fingerprint in sl_layout must be this build's: pins an
// agent of another version wrote are refused (ErrLayoutMismatch), never
// misread.
func OpenPinned(root string) (*Maps, error) {
	m := &Maps{}
	pinned := []struct {
		name string
		dst  **ebpf.Map
	}{
		{bpfobj.EndpointMapSlEndpoints, &m.Endpoints},
		{bpfobj.EndpointMapSlCt, &m.CT},
		{bpfobj.EndpointMapSlMetrics, &m.Metrics},
		{bpfobj.EndpointMapSlMetricsFast, &m.MetricsFast},
		{bpfobj.EndpointMapSlLbSvc, &m.LBSvc},
		{bpfobj.EndpointMapSlLbBackends, &m.LBBackends},
		{bpfobj.EndpointMapSlLbRevnat, &m.LBRevNat},
		{bpfobj.EndpointMapSlLbMaglev, &m.LBMaglev},
		{bpfobj.EndpointMapSlLbSrcRange, &m.LBSrcRange},
		{bpfobj.EndpointMapSlIpcache, &m.IPCache},
		{bpfobj.EndpointMapSlPolicy, &m.Policy},
		{bpfobj.EndpointMapSlPolicyCidr, &m.PolicyCIDR},
		{bpfobj.EndpointMapSlPolicyRev, &m.PolicyRev},
		{bpfobj.EndpointMapSlNat, &m.NAT},
	}
	for _, x := range pinned {
		path := filepath.Join(root, x.name)
		mp, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("open pinned map %s (is --bpf-root right, and has an agent run on this node?): %w", path, err)
		}
		*x.dst = mp
		m.owned = append(m.owned, mp)
	}
	names := make([]string, len(pinned))
	for i, x := range pinned {
		names[i] = x.name
	}
	if err := checkPinnedLayouts(root, names); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// checkPinnedLayouts compares the fingerprints the agent recorded in
// sl_layout for the maps with this build's. Capacities are not part of a
// fingerprint, so the agent's sizing flags do not matter here.
func checkPinnedLayouts(root string, names []string) error {
	wantLayouts, err := buildLayouts()
	if err != nil {
		return err
	}
	path := filepath.Join(root, bpfobj.EndpointMapSlLayout)
	lm, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("open pinned map %s, which records the layouts of the others: %w: %w", path, err, ErrLayoutMismatch)
	}
	defer lm.Close()
	recorded, err := readLayoutMap(lm)
	if err != nil {
		return err
	}
	for _, name := range names {
		want, ok := wantLayouts[name]
		if !ok {
			return fmt.Errorf("this build's eBPF object has no map %s", name)
		}
		have, ok := recorded[name]
		if !ok {
			return fmt.Errorf("pinned map %s has no recorded layout but this sluice expects %#x: %w", name, want, ErrLayoutMismatch)
		}
		if have != want {
			return fmt.Errorf("pinned map %s has layout %#x but this sluice expects %#x: %w", name, have, want, ErrLayoutMismatch)
		}
	}
	return nil
}

// buildLayouts are this build's layout fingerprints by map name, from the
// embedded object. It never changes while the process runs, so it is
// parsed once (some milliseconds): what opens the pins again and again,
// such as the CLI's tests and fuzzer, does not pay for it each time.
var buildLayouts = sync.OnceValues(func() (map[string]uint64, error) {
	spec, err := bpfobj.LoadEndpoint()
	if err != nil {
		return nil, fmt.Errorf("parse embedded eBPF object: %w", err)
	}
	out := make(map[string]uint64, len(spec.Maps))
	for name, ms := range spec.Maps {
		out[name] = layoutFingerprint(ms)
	}
	return out, nil
})

// Close closes maps opened by OpenPinned.
func (m *Maps) Close() error {
	var errs []error
	for _, mp := range m.owned {
		errs = append(errs, mp.Close())
	}
	m.owned = nil
	return errors.Join(errs...)
}

// Endpoint policy flags: SL_EP_F_POLICY_* of sl_ep_flag
// (bpf/include/sluice/types.h), generated.
const (
	EPFlagPolicyIngress  = uint32(bpfobj.EndpointSlEpFlagSL_EP_F_POLICY_INGRESS)
	EPFlagPolicyEgress   = uint32(bpfobj.EndpointSlEpFlagSL_EP_F_POLICY_EGRESS)
	EPFlagPolicyAudit    = uint32(bpfobj.EndpointSlEpFlagSL_EP_F_POLICY_AUDIT)
	EPFlagPolicyOverflow = uint32(bpfobj.EndpointSlEpFlagSL_EP_F_POLICY_OVERFLOW)
	epFlagsPolicy        = EPFlagPolicyIngress | EPFlagPolicyEgress | EPFlagPolicyAudit | EPFlagPolicyOverflow
)

// PolicyFlagNames names the policy flags set in f, in the order ingress,
// egress, audit, fails-closed.
func PolicyFlagNames(f uint32) []string {
	out := []string{}
	for _, x := range []struct {
		flag uint32
		name string
	}{
		{EPFlagPolicyIngress, "ingress"}, {EPFlagPolicyEgress, "egress"},
		{EPFlagPolicyAudit, "audit"}, {EPFlagPolicyOverflow, "fails-closed"},
	} {
		if f&x.flag != 0 {
			out = append(out, x.name)
		}
	}
	return out
}

// EndpointEntry is one row of sl_endpoints.
type EndpointEntry struct {
	IfIndex uint32     `json:"ifindex"`
	ID      uint32     `json:"id"`
	IPv4    netip.Addr `json:"ipv4,omitzero"`
	IPv6    netip.Addr `json:"ipv6,omitzero"`
	// Identity is the pod's security identity.
	Identity uint32 `json:"identity,omitempty"`
	// PolicyFlags are EPFlagPolicy* bits.
	PolicyFlags uint32 `json:"policyFlags,omitempty"`
}

// PutEndpoint creates or updates an endpoint entry.
func (m *Maps) PutEndpoint(e EndpointEntry) error {
	v := bpfobj.EndpointSlEndpoint{EpId: e.ID, Identity: e.Identity, Flags: e.PolicyFlags & epFlagsPolicy}
	if e.IPv4.Is4() {
		v.Flags |= uint32(bpfobj.EndpointSlEpFlagSL_EP_F_HAS_IPV4)
		v.Ipv4.Addr6 = raw.AddrTo(e.IPv4)
	}
	if e.IPv6.Is6() {
		v.Flags |= uint32(bpfobj.EndpointSlEpFlagSL_EP_F_HAS_IPV6)
		v.Ipv6.Addr6 = raw.AddrTo(e.IPv6)
	}
	m.lockEndpoints()
	defer m.unlockEndpoints()
	if err := m.Endpoints.Put(e.IfIndex, &v); err != nil {
		return fmt.Errorf("write endpoint %d (ifindex %d): %w", e.ID, e.IfIndex, err)
	}
	return nil
}

// SetEndpointPolicy changes the identity and policy flags of the endpoint
// entry at ifindex, if it still is endpoint epID. It reports whether the
// entry was there to change.
func (m *Maps) SetEndpointPolicy(ifindex, epID, identity, flags uint32) (bool, error) {
	m.lockEndpoints()
	defer m.unlockEndpoints()
	var v bpfobj.EndpointSlEndpoint
	if err := m.Endpoints.Lookup(ifindex, &v); errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("read endpoint ifindex %d: %w", ifindex, err)
	}
	if v.EpId != epID {
		return false, nil
	}
	v.Identity = identity
	v.Flags = v.Flags&^epFlagsPolicy | flags&epFlagsPolicy
	if err := m.Endpoints.Put(ifindex, &v); err != nil {
		return false, fmt.Errorf("write endpoint %d (ifindex %d): %w", epID, ifindex, err)
	}
	return true, nil
}

func (m *Maps) lockEndpoints() {
	if m.epMu != nil {
		m.epMu.Lock()
	}
}

func (m *Maps) unlockEndpoints() {
	if m.epMu != nil {
		m.epMu.Unlock()
	}
}

// DeleteEndpoint removes the entry for ifindex, if any.
func (m *Maps) DeleteEndpoint(ifindex uint32) error {
	if err := m.Endpoints.Delete(ifindex); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete endpoint ifindex %d: %w", ifindex, err)
	}
	return nil
}

// PutUplink records an uplink and the addresses external connections are
// source-translated to when they leave through it, one per family (an
// invalid snat6: IPv6 connections keep the address they were sent to).
func (m *Maps) PutUplink(ifindex uint32, snat4, snat6 netip.Addr) error {
	var v bpfobj.EndpointSlUplink
	if snat4.IsValid() {
		v.Ipv4.Addr6 = raw.AddrTo(snat4)
	}
	if snat6.IsValid() {
		v.Ipv6.Addr6 = raw.AddrTo(snat6)
	}
	if err := m.Uplinks.Put(ifindex, &v); err != nil {
		return fmt.Errorf("write uplink ifindex %d: %w", ifindex, mapErr(m.Uplinks, err))
	}
	return nil
}

// DeleteUplink forgets an uplink.
func (m *Maps) DeleteUplink(ifindex uint32) error {
	if err := m.Uplinks.Delete(ifindex); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete uplink ifindex %d: %w", ifindex, err)
	}
	return nil
}

// ListEndpoints returns all endpoint entries ordered by ID.
func (m *Maps) ListEndpoints() ([]EndpointEntry, error) {
	var (
		k   uint32
		v   bpfobj.EndpointSlEndpoint
		out []EndpointEntry
	)
	it := m.Endpoints.Iterate()
	for it.Next(&k, &v) {
		e := EndpointEntry{IfIndex: k, ID: v.EpId, Identity: v.Identity, PolicyFlags: v.Flags & epFlagsPolicy}
		if v.Flags&uint32(bpfobj.EndpointSlEpFlagSL_EP_F_HAS_IPV4) != 0 {
			e.IPv4 = raw.AddrFrom(v.Ipv4.Addr6, unix.AF_INET)
		}
		if v.Flags&uint32(bpfobj.EndpointSlEpFlagSL_EP_F_HAS_IPV6) != 0 {
			e.IPv6 = raw.AddrFrom(v.Ipv6.Addr6, unix.AF_INET6)
		}
		out = append(out, e)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate endpoints: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Names of the counter kinds that count something other than packets, as
// Counter.Metric carries them.
var (
	// MetricEventsLost counts events the datapath could not emit because
	// the ring buffer was full.
	MetricEventsLost = bpfobj.EndpointSlMetricSL_METRIC_EVENTS_LOST.String()
	// MetricSocketsDestroyed counts sockets of removed backends destroyed.
	MetricSocketsDestroyed = bpfobj.EndpointSlMetricSL_METRIC_SOCK_DESTROYED.String()
)

// MonotonicNow is CLOCK_MONOTONIC in nanoseconds, the datapath's clock
// (CT entries' times).
func MonotonicNow() uint64 { return raw.MonotonicNow() }

// expiredEvent is the end event of a connection that expired.
func expiredEvent(k bpfobj.EndpointSlCtKey, v bpfobj.EndpointSlCtEntry, now uint64) events.Event {
	last := v.Expires
	if last > now {
		last = now
	}
	return events.Event{
		Time: raw.MonotonicEpoch().Add(time.Duration(now)), Type: events.ConnEnd, Dir: events.Direction(v.Origin),
		EndpointID: k.EpId, Proto: k.Proto,
		Src:         netip.AddrPortFrom(raw.AddrFrom(k.Saddr.Addr6, k.Family), raw.Ntohs(k.Sport)),
		Dst:         netip.AddrPortFrom(raw.AddrFrom(k.Daddr.Addr6, k.Family), raw.Ntohs(k.Dport)),
		PacketsOrig: v.PacketsOrig, BytesOrig: v.BytesOrig, PacketsReply: v.PacketsReply, BytesReply: v.BytesReply,
		Duration: time.Duration(last - v.Created), Expired: true,
	}
}

// CTEntry is one connection-tracking entry in readable form.
type CTEntry struct {
	EndpointID uint32 `json:"endpointID"`
	// Scope is "flow", or "service" for the entry that pins a translated
	// connection's backend (Dst is then the VIP).
	Scope string `json:"scope"`
	// ServiceID and BackendID are set on translated connections.
	ServiceID uint32 `json:"serviceID,omitempty"`
	BackendID uint32 `json:"backendID,omitempty"`
	Proto     string `json:"proto"`
	Src       string `json:"src"`
	Dst       string `json:"dst"`
	State     string `json:"state"`
	// Origin is the direction of the first packet relative to the endpoint.
	Origin       string        `json:"origin"`
	Age          time.Duration `json:"age"`
	ExpiresIn    time.Duration `json:"expiresIn"`
	PacketsOrig  uint64        `json:"packetsOrig"`
	BytesOrig    uint64        `json:"bytesOrig"`
	PacketsReply uint64        `json:"packetsReply"`
	BytesReply   uint64        `json:"bytesReply"`

	SrcAddr netip.AddrPort `json:"-"`
	DstAddr netip.AddrPort `json:"-"`
}

func ctEntryFrom(k *bpfobj.EndpointSlCtKey, v *bpfobj.EndpointSlCtEntry, now uint64) CTEntry {
	src := netip.AddrPortFrom(raw.AddrFrom(k.Saddr.Addr6, k.Family), raw.Ntohs(k.Sport))
	dst := netip.AddrPortFrom(raw.AddrFrom(k.Daddr.Addr6, k.Family), raw.Ntohs(k.Dport))
	return CTEntry{
		EndpointID: k.EpId, Proto: string(model.ProtocolOf(k.Proto)), Scope: bpfobj.EndpointSlCtScope(k.Scope).String(),
		ServiceID: v.RevNatId, BackendID: v.BackendId,
		Src: src.String(), Dst: dst.String(), SrcAddr: src, DstAddr: dst,
		State: bpfobj.EndpointSlCtState(v.State).String(), Origin: events.Direction(v.Origin).String(),
		Age:         time.Duration(now - v.Created),
		ExpiresIn:   time.Duration(int64(v.Expires) - int64(now)),
		PacketsOrig: v.PacketsOrig, BytesOrig: v.BytesOrig,
		PacketsReply: v.PacketsReply, BytesReply: v.BytesReply,
	}
}

// ListCT returns the live (unexpired) CT entries.
func (m *Maps) ListCT() ([]CTEntry, error) {
	var out []CTEntry
	now := MonotonicNow()
	err := walk(m.CT, func(k *bpfobj.EndpointSlCtKey, v *bpfobj.EndpointSlCtEntry) bool {
		if v.Expires > now {
			out = append(out, ctEntryFrom(k, v, now))
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("walk conntrack: %w", err)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].EndpointID != out[j].EndpointID {
			return out[i].EndpointID < out[j].EndpointID
		}
		return out[i].Age > out[j].Age
	})
	return out, nil
}

// CTStats is the result of one GC pass.
type CTStats struct {
	Live, Expired, Deleted int
}

// GCCT deletes expired entries and, when endpointGone is not nil, every
// entry of an endpoint for which it returns true. It returns the counts.
func (m *Maps) GCCT(endpointGone func(id uint32) bool, ended func(events.Event)) (CTStats, error) {
	var (
		dead  []bpfobj.EndpointSlCtKey
		stats CTStats
	)
	now := MonotonicNow()
	err := walk(m.CT, func(k *bpfobj.EndpointSlCtKey, v *bpfobj.EndpointSlCtEntry) bool {
		switch {
		case v.Expires <= now:
			stats.Expired++
			dead = append(dead, *k)
			// Closed TCP connections were reported by the datapath
			// when they closed; the others end by expiring.
			// An SNATed external connection has only its SERVICE
			// entry on the uplink (endpoint 0).
			conn := k.Scope == uint8(bpfobj.EndpointSlCtScopeSL_CT_SCOPE_FLOW) || (k.EpId == 0 && v.NatFlags&uint8(bpfobj.EndpointSlCtNatFlagSL_CT_NAT_SNAT) != 0)
			if ended != nil && v.State != uint8(bpfobj.EndpointSlCtStateSL_CT_CLOSED) && conn && m.reportsEnd(v) {
				ended(expiredEvent(*k, *v, now))
			}
		case endpointGone != nil && endpointGone(k.EpId):
			dead = append(dead, *k)
		default:
			stats.Live++
		}
		return true
	})
	if err != nil {
		return stats, fmt.Errorf("walk conntrack: %w", err)
	}
	// Deleting after the walk: deleting during it makes the hash
	// iteration restart and revisit entries.
	stats.Deleted = deleteKeys(m.CT, dead)
	return stats, nil
}

// deleteKeys deletes keys from m, in batches where the kernel has them,
// and returns how many it deleted. A key gone meanwhile (another GC, the
// endpoint manager) is skipped.
func deleteKeys[K any](m *ebpf.Map, keys []K) int {
	deleted := 0
	for len(keys) > 0 {
		chunk := keys[:min(len(keys), walkChunk)]
		n, err := m.BatchDelete(chunk, nil)
		deleted += n
		if err == nil {
			keys = keys[len(chunk):]
			continue
		}
		// The batch stopped at a key it could not delete (gone, or no
		// batch support): the rest one by one.
		for i := n; i < len(keys); i++ {
			if m.Delete(&keys[i]) == nil {
				deleted++
			}
		}
		return deleted
	}
	return deleted
}

// reportsEnd applies --flow-events to a connection that expired, as the
// datapath does to one that closes: no ends below "connections", and at
// "connections" the server side of a connection between two pods of the
// node is left to the client's side.
func (m *Maps) reportsEnd(v *bpfobj.EndpointSlCtEntry) bool {
	if m.flowEvents == "" {
		return true // pins only (CLI): everything
	}
	if !m.flowEvents.reportsEnds() {
		return false
	}
	return m.flowEvents != FlowEventsConnections || v.Origin != uint8(bpfobj.EndpointSlDirSL_DIR_INGRESS) ||
		v.PolicyFlags&uint8(bpfobj.EndpointSlCtPolFlagSL_CT_POL_PEER_LOCAL) == 0
}

// ctUsage walks sl_ct once: live (unexpired) entries and all of them.
func (m *Maps) ctUsage() (live, total int, err error) {
	now := MonotonicNow()
	err = walk(m.CT, func(_ *bpfobj.EndpointSlCtKey, v *bpfobj.EndpointSlCtEntry) bool {
		total++
		if v.Expires > now {
			live++
		}
		return true
	})
	return live, total, err
}

// Counter is one datapath counter summed over CPUs.
type Counter struct {
	Metric string `json:"metric"`
	Dir    string `json:"direction"`
	Reason string `json:"reason,omitempty"`
	// Family is the packets' address family, "ipv4" or "ipv6" ("" for
	// what is not an IP packet: ARP, lost events, sockets); only
	// CountersByFamily sets it, Counters sums over families.
	Family  string `json:"family,omitempty"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`

	MetricID uint8  `json:"-"`
	DirID    uint8  `json:"-"`
	ReasonID uint16 `json:"-"`
}

// metricFamilies names enum sl_metric_family.
var metricFamilies = [...]string{"", "ipv4", "ipv6", ""}

// Counters sums the per-CPU counters, over address families too: one per
// (metric, direction, reason).
func (m *Maps) Counters() ([]Counter, error) {
	return m.counters(false)
}

// CountersByFamily is Counters with one counter per address family.
func (m *Maps) CountersByFamily() ([]Counter, error) {
	return m.counters(true)
}

func (m *Maps) counters(byFamily bool) ([]Counter, error) {
	type key struct {
		metric, dir uint8
		reason      uint16
		family      string
	}
	sums := map[key]*Counter{}
	add := func(metric, dir uint8, reason uint16, family uint8, pk, by uint64) {
		k := key{metric: metric, dir: dir, reason: reason}
		if byFamily {
			k.family = metricFamilies[family&3]
		}
		c, ok := sums[k]
		if !ok {
			c = &Counter{Metric: bpfobj.EndpointSlMetric(metric).String(), Dir: events.Direction(dir).String(), Family: k.family,
				MetricID: metric, DirID: dir, ReasonID: reason}
			if reason != 0 {
				c.Reason = events.DropReason(reason).String()
			}
			sums[k] = c
		}
		c.Packets += pk
		c.Bytes += by
	}
	var (
		k  bpfobj.EndpointSlMetricsKey
		vs []bpfobj.EndpointSlMetricsVal
	)
	total := func() (pk, by uint64) {
		for _, v := range vs {
			pk += v.Packets
			by += v.Bytes
		}
		return pk, by
	}
	it := m.Metrics.Iterate()
	for it.Next(&k, &vs) {
		pk, by := total()
		add(k.Metric, k.Dir, k.Reason, k.Family, pk, by)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate metrics: %w", err)
	}
	if m.MetricsFast != nil {
		// Counters without a reason, at index metric<<4 | family<<2 |
		// direction. An agent before this map counted them in
		// sl_metrics: both add up.
		var idx uint32
		it := m.MetricsFast.Iterate()
		for it.Next(&idx, &vs) {
			if pk, by := total(); pk != 0 || by != 0 {
				add(uint8(idx>>4), uint8(idx&3), 0, uint8(idx>>2&3), pk, by)
			}
		}
		if err := it.Err(); err != nil {
			return nil, fmt.Errorf("iterate sl_metrics_fast: %w", err)
		}
	}
	out := make([]Counter, 0, len(sums))
	for _, c := range sums {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.MetricID != b.MetricID {
			return a.MetricID < b.MetricID
		}
		if a.ReasonID != b.ReasonID {
			return a.ReasonID < b.ReasonID
		}
		if a.Dir != b.Dir {
			return a.Dir < b.Dir
		}
		return a.Family < b.Family
	})
	return out, nil
}

// MapPressure is how full one map is.
type MapPressure struct {
	Map     string `json:"map"`
	Entries int    `json:"entries"`
	Max     int    `json:"max"`
	// Live, for sl_ct, counts the entries not yet expired (the others
	// wait for the CT GC); counted in the same walk.
	Live int `json:"live,omitempty"`
}

// MapCT is the name of the conntrack map, whose Pressure row (Live) also
// counts live connections.
const MapCT = "sl_ct"

// Pressure counts the entries of the maps that can fill up (keys only;
// connection tracking counts every entry, expired or not, since the map
// holds them until GC). It walks each map: a status call, not a hot path.
func (m *Maps) Pressure() ([]MapPressure, error) {
	var out []MapPressure
	var errs []error
	for _, x := range []struct {
		name string
		m    *ebpf.Map
	}{
		{MapCT, m.CT}, {"sl_endpoints", m.Endpoints}, {"sl_lb_svc", m.LBSvc}, {"sl_lb_backends", m.LBBackends},
		{"sl_lb_revnat", m.LBRevNat}, {"sl_lb_maglev", m.LBMaglev}, {"sl_ipcache", m.IPCache}, {"sl_policy", m.Policy},
		{"sl_nat", m.NAT},
	} {
		if x.m == nil {
			continue
		}
		if x.m == m.CT {
			live, total, err := m.ctUsage()
			if err != nil {
				errs = append(errs, fmt.Errorf("count %s: %w", x.name, err))
				continue
			}
			out = append(out, MapPressure{Map: x.name, Entries: total, Max: int(x.m.MaxEntries()), Live: live})
			continue
		}
		n, err := countKeys(x.m)
		if err != nil {
			errs = append(errs, fmt.Errorf("count %s: %w", x.name, err))
			continue
		}
		out = append(out, MapPressure{Map: x.name, Entries: n, Max: int(x.m.MaxEntries())})
	}
	return out, errors.Join(errs...)
}

// countKeys walks a map's keys.
func countKeys(m *ebpf.Map) (int, error) {
	key := make([]byte, m.KeySize())
	next := make([]byte, m.KeySize())
	n := 0
	var cur any
	for {
		err := m.NextKey(cur, next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
		copy(key, next)
		cur = key
	}
}
