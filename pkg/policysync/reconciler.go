package policysync

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/policy"
	"github.com/sluice-net/sluice/pkg/reconcile"
	"github.com/sluice-net/sluice/pkg/statedir"
)

type nsName = model.NamespacedName

// EndpointLister lists the local endpoints (the endpoint manager).
type EndpointLister interface {
	List() []api.Endpoint
}

// EndpointListerFunc is a function as an EndpointLister. The agent passes
// one at construction that asks the endpoint manager, built after this
// reconciler (it needs the reconciler as its PolicyProvider) and before
// either runs.
type EndpointListerFunc func() []api.Endpoint

// List calls f.
func (f EndpointListerFunc) List() []api.Endpoint { return f() }

// Options configure a Reconciler.
type Options struct {
	NodeName string
	Maps     *datapath.Maps
	Store    *model.Store
	// Endpoints gives the endpoint IDs of local pods for the ipcache; nil:
	// none (tests of the policy alone).
	Endpoints EndpointLister
	// Audit puts every endpoint in audit mode.
	Audit bool
	// MaxEntries is the per-endpoint policy map size.
	MaxEntries int
	// StateDir keeps identities.json and l7-ports.json, so identities and
	// the L7 listeners' proxy ports survive restarts.
	StateDir string
	// ProxyPorts is the range L7 listeners' proxy ports come from; zero:
	// l7.DefaultPortRange.
	ProxyPorts l7.PortRange
	Logger     *slog.Logger
	// Resync is the period of a full pass that rewrites the ipcache and
	// every endpoint's flags from scratch: it only repairs what a failed
	// write left behind, so a minute is plenty.
	Resync time.Duration
	// ObservePass, if set, is told of every pass: whether it was a full
	// one, how long it took and its error (metrics).
	ObservePass func(full bool, took time.Duration, err error)
}

// placement is what is written for an endpoint.
type placement struct {
	epID     uint32
	ifindex  int
	identity uint32
	flags    uint32
	policy   *policy.EndpointPolicy // the content of its maps
	mapsOK   bool
}

// Reconciler computes identities and policy (pkg/policy) from the model and
// writes them into the datapath: the ipcache, each endpoint's policy maps,
// and each endpoint's identity and policy flags; then it bumps the policy
// revision so established connections are judged again.
type Reconciler struct {
	opts Options
	log  *slog.Logger
	loop *reconcile.Loop

	// ipcMu orders ipcache writes: each computes the ipcache from the
	// engine under mu after taking it, so a later write is never older.
	ipcMu sync.Mutex
	// proxyMu orders sl_proxy writes the same way (syncProxyRedirects),
	// and guards proxyRedirects.
	proxyMu sync.Mutex

	mu     sync.Mutex
	engine *policy.Engine
	// ipcRev is the store revision (synced) the ipcache was last written
	// for; ipcLocal the local endpoints' IDs by address it was written with.
	ipcRev   uint64
	ipcLocal map[netip.Addr]uint32
	alloc    *identity.Allocator
	synced   uint64 // store revision the engine has seen
	placed   map[nsName]*placement
	overflow map[nsName]string
	// proxyRedirects (under proxyMu) is what sl_proxy was last told: endpoints whose
	// maps redirect to the node's L7 proxy.
	proxyRedirects uint32
	lastErr        error
	revision       uint32
	savedIDs       [sha256.Size]byte // of the identities last saved
	ports          *l7.Ports
	savedPorts     [sha256.Size]byte // of the proxy ports last saved

	// l7cfg is the compiled L7 policy as of the last pass; l7changed
	// receives (capacity 1, coalescing) when it changes.
	l7cfg     l7.Config
	l7changed chan struct{}
}

// New restores saved identities and builds the engine.
func New(opts Options) (*Reconciler, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Resync == 0 {
		opts.Resync = time.Minute
	}
	alloc := identity.NewAllocator()
	if opts.StateDir != "" {
		b, err := os.ReadFile(filepath.Join(opts.StateDir, identitiesFile))
		switch {
		case err == nil:
			var s identity.Snapshot
			if err := json.Unmarshal(b, &s); err != nil {
				opts.Logger.Warn("ignoring unreadable saved identities", "file", identitiesFile, "error", err)
			} else if err := alloc.Restore(s); err != nil {
				opts.Logger.Warn("ignoring saved identities", "error", err)
			}
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("read saved identities: %w", err)
		}
	}
	if opts.ProxyPorts == (l7.PortRange{}) {
		opts.ProxyPorts = l7.DefaultPortRange
	}
	ports, err := l7.NewPorts(opts.ProxyPorts)
	if err != nil {
		return nil, err
	}
	if opts.StateDir != "" {
		var s l7.PortsSnapshot
		if err := readState(filepath.Join(opts.StateDir, proxyPortsFile), &s); err != nil {
			opts.Logger.Warn("ignoring saved proxy ports", "file", proxyPortsFile, "error", err)
		} else if err := ports.Restore(s); err != nil {
			opts.Logger.Warn("saved proxy ports", "error", err)
		}
	}
	eng, err := policy.NewEngine(policy.Options{NodeName: opts.NodeName, Audit: opts.Audit, MaxEntriesPerEndpoint: opts.MaxEntries,
		ProxyPorts: ports}, alloc)
	if err != nil {
		return nil, err
	}
	r := &Reconciler{
		opts: opts, log: opts.Logger.With("component", "policy"),
		engine: eng, alloc: alloc, placed: map[nsName]*placement{}, overflow: map[nsName]string{},
		ports: ports, l7cfg: l7.Config{Listeners: []l7.Listener{}}, l7changed: make(chan struct{}, 1),
	}
	// No MinInterval: the engine follows the store's revision, so a pass
	// right after a change costs only what changed.
	r.loop = reconcile.New(reconcile.Options{Resync: opts.Resync, Observe: opts.ObservePass}, r.passErr)
	return r, nil
}

const (
	identitiesFile = "identities.json"
	// proxyPortsFile keeps the L7 listeners' proxy ports: a restarted
	// agent gives each rule set the port the datapath's entries and the
	// node's Envoy already use.
	proxyPortsFile = "l7-ports.json"
)

// readState reads a saved state file into v; a missing file leaves v as
// it is.
func readState(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// Run applies model changes until ctx ends.
func (r *Reconciler) Run(ctx context.Context) error {
	ch := r.opts.Store.Subscribe()
	defer r.opts.Store.Unsubscribe(ch)
	r.loop.Run(ctx, true, ch)
	return nil
}

// syncLocked brings the engine up to the store.
func (r *Reconciler) syncLocked() policy.Result {
	rev := r.opts.Store.Revision()
	if rev == r.synced && r.synced != 0 {
		return policy.Result{}
	}
	res := r.engine.Sync(r.opts.Store.Snapshot())
	r.synced = rev
	return res
}

// EndpointFlags turns a computed endpoint policy into the endpoint's
// flags in sl_endpoints (datapath.EPFlagPolicy*), as the reconciler
// writes them.
func EndpointFlags(p *policy.EndpointPolicy) uint32 {
	var f uint32
	if p == nil {
		return 0
	}
	if p.IngressEnforced {
		f |= datapath.EPFlagPolicyIngress
	}
	if p.EgressEnforced {
		f |= datapath.EPFlagPolicyEgress
	}
	if p.Audit {
		f |= datapath.EPFlagPolicyAudit
	}
	if p.Overflow != nil {
		f |= datapath.EPFlagPolicyOverflow
	}
	return f
}

func toDatapath(p *policy.EndpointPolicy) datapath.EndpointPolicy {
	out := datapath.EndpointPolicy{Entries: make([]datapath.PolicyEntry, 0, len(p.Entries))}
	for _, e := range p.Entries {
		out.Entries = append(out.Entries, datapath.PolicyEntry{
			Identity: uint32(e.Identity), Dir: uint8(e.Direction), Proto: e.Protocol, Port: e.Port,
			PortPrefixLen: e.PortPrefixLen, Verdict: uint8(e.Verdict), ProxyPort: e.ProxyPort, Rule: uint32(e.Rule),
			// A tiered direction's buckets are complete and equally long:
			// the datapath must rank them by peer alone, Redirect included.
			Tiered: p.Tiered(e.Direction),
		})
	}
	for _, c := range p.CIDRs {
		out.CIDRs = append(out.CIDRs, datapath.PolicyCIDR{Dir: uint8(c.Direction), Prefix: c.Prefix, Class: uint32(c.Class)})
	}
	return out
}

// writeMapsLocked makes endpoint pl's maps hold p. An endpoint under no
// policy, or one whose policy overflowed (it fails closed on its flag), has
// no maps.
func (r *Reconciler) writeMapsLocked(pod nsName, pl *placement, p *policy.EndpointPolicy) error {
	if p != nil && p.Overflow != nil {
		r.overflow[pod] = p.Overflow.Error()
	} else {
		delete(r.overflow, pod)
	}
	if p == nil || (!p.IngressEnforced && !p.EgressEnforced) || p.Overflow != nil {
		pl.policy, pl.mapsOK = p, true
		return r.opts.Maps.DeleteEndpointPolicy(pl.epID)
	}
	if pl.mapsOK && pl.policy != nil && pl.policy.Equal(p) {
		return nil
	}
	if err := r.opts.Maps.WriteEndpointPolicy(pl.epID, toDatapath(p)); err != nil {
		pl.mapsOK = false
		if errors.Is(err, datapath.ErrMapFull) {
			// The maps are sized from the same limit the engine checks:
			// only a lower --policy-map-max than the engine's gets here.
			r.overflow[pod] = err.Error()
		}
		return fmt.Errorf("endpoint %s: %w", pod, err)
	}
	pl.policy, pl.mapsOK = p, true
	return nil
}

// redirectingLocked counts the endpoints whose maps hand connections to
// the node's L7 proxy.
func (r *Reconciler) redirectingLocked() uint32 {
	var n uint32
	for _, pl := range r.placed {
		if pl.policy == nil || !pl.mapsOK {
			continue
		}
		for _, e := range pl.policy.Entries {
			if e.Verdict == policy.Redirect {
				n++
				break
			}
		}
	}
	return n
}

// desiredLocked is the identity and flags endpoint pod should carry now.
func (r *Reconciler) desiredLocked(pod nsName, pl *placement) (uint32, uint32) {
	p, ok := r.engine.Endpoint(pod)
	if !ok {
		return 0, 0
	}
	f := EndpointFlags(p)
	if !pl.mapsOK && f&(datapath.EPFlagPolicyIngress|datapath.EPFlagPolicyEgress) != 0 {
		// The maps could not be written: fail closed.
		f |= datapath.EPFlagPolicyOverflow
	}
	return uint32(p.Identity), f
}

// Prepare implements endpoint.PolicyProvider. Everything the endpoint's
// policy decides with is written before its flags are returned (and so
// before the caller turns enforcement on): its maps, and the ipcache that
// turns its peers' addresses into the identities those maps name. An
// endpoint placed before the reconciler's first pass, or right after a
// peer appeared, would otherwise deny an allowed peer as world until the
// next pass wrote its address.
func (r *Reconciler) Prepare(pod nsName, epID uint32) (uint32, uint32) {
	r.mu.Lock()
	r.syncLocked()
	pl := r.placed[pod]
	if pl == nil || pl.epID != epID {
		pl = &placement{epID: epID}
		r.placed[pod] = pl
	}
	p, _ := r.engine.Endpoint(pod)
	if err := r.writeMapsLocked(pod, pl, p); err != nil {
		r.log.Warn("policy maps not written: the endpoint fails closed", "pod", pod, "error", err)
	}
	id, flags := r.desiredLocked(pod, pl)
	// The endpoint's own addresses carry its ID in the ipcache.
	local := maps.Clone(r.ipcLocal)
	if local == nil {
		local = map[netip.Addr]uint32{}
	}
	if mp, ok := r.opts.Store.Snapshot().Pods[pod]; ok {
		for _, a := range mp.IPs {
			local[a] = epID
		}
	}
	r.mu.Unlock()
	if err := r.syncIPCache(false, local); err != nil {
		// The next pass writes it again; until then peers may read as world.
		r.log.Warn("ipcache not written before enforcement", "pod", pod, "error", err)
	}
	// An endpoint whose maps redirect needs the uplinks and its clients'
	// endpoints to look for connections to hand to the proxy (sl_proxy),
	// or they would reach it unhanded and fail closed until the next pass.
	if err := r.syncProxyRedirects(false); err != nil {
		r.log.Warn("sl_proxy not written before enforcement", "pod", pod, "error", err)
	}
	return id, flags
}

// syncProxyRedirects tells sl_proxy how many placed endpoints' maps
// redirect to the proxy, unless it already says so (force: write
// regardless). Call it without mu.
func (r *Reconciler) syncProxyRedirects(force bool) error {
	r.proxyMu.Lock()
	defer r.proxyMu.Unlock()
	r.mu.Lock()
	n := r.redirectingLocked()
	r.mu.Unlock()
	if !force && n == r.proxyRedirects {
		return nil
	}
	if err := r.opts.Maps.SetProxyRedirects(n); err != nil {
		return err
	}
	r.proxyRedirects = n
	return nil
}

// syncIPCache writes the engine's ipcache, with local's endpoint IDs for
// this node's pods, unless it was already written for the engine's
// current state (force: write, and prune, regardless). Call it without mu.
func (r *Reconciler) syncIPCache(force bool, local map[netip.Addr]uint32) error {
	r.ipcMu.Lock()
	defer r.ipcMu.Unlock()
	r.mu.Lock()
	if !force && r.ipcRev == r.synced && maps.Equal(local, r.ipcLocal) {
		r.mu.Unlock()
		return nil
	}
	rev := r.synced
	ipc := map[netip.Prefix]datapath.IPCacheEntry{}
	for p, id := range r.engine.IPCache() {
		e := datapath.IPCacheEntry{Identity: uint32(id)}
		if p.IsSingleIP() {
			e.EndpointID = local[p.Addr()]
		}
		ipc[p] = e
	}
	r.mu.Unlock()
	if _, _, err := r.opts.Maps.SyncIPCache(ipc); err != nil {
		return err
	}
	r.mu.Lock()
	r.ipcRev, r.ipcLocal = rev, local
	r.mu.Unlock()
	return nil
}

// Placed implements endpoint.PolicyProvider.
func (r *Reconciler) Placed(pod nsName, epID uint32, ifindex int, id, flags uint32) {
	r.mu.Lock()
	pl := r.placed[pod]
	if pl == nil || pl.epID != epID {
		r.mu.Unlock()
		return
	}
	pl.ifindex, pl.identity, pl.flags = ifindex, id, flags
	wantID, wantFlags := r.desiredLocked(pod, pl)
	r.mu.Unlock()
	if wantID != id || wantFlags != flags {
		r.kick()
	}
}

// Released implements endpoint.PolicyProvider.
func (r *Reconciler) Released(pod nsName, epID uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if pl := r.placed[pod]; pl != nil && pl.epID == epID {
		delete(r.placed, pod)
	}
	delete(r.overflow, pod)
	if err := r.opts.Maps.DeleteEndpointPolicy(epID); err != nil {
		r.log.Warn("remove policy maps", "pod", pod, "error", err)
	}
}

func (r *Reconciler) kick() { r.loop.Trigger() }

func (r *Reconciler) bump() {
	rev, err := r.opts.Maps.BumpPolicyRevision()
	if err != nil {
		r.log.Warn("bump policy revision", "error", err)
		return
	}
	r.mu.Lock()
	r.revision = rev
	r.mu.Unlock()
}

// pass applies what changed; full also rewrites the ipcache and every
// endpoint's flags from scratch.
func (r *Reconciler) pass(full bool) { _ = r.passErr(full) }

// passErr is pass returning the error it left for Status (the loop's pass).
func (r *Reconciler) passErr(full bool) error {
	start := time.Now()
	var errs []error
	ipcLocal := map[netip.Addr]uint32{}
	if lister := r.opts.Endpoints; lister != nil {
		for _, e := range lister.List() {
			for _, s := range e.IPs {
				if a, err := netip.ParseAddr(s); err == nil {
					ipcLocal[a] = e.ID
				}
			}
		}
	}

	r.mu.Lock()
	res := r.syncLocked()
	r.mu.Unlock()
	// Before the maps: the proxy gets a new rule set's listener while the
	// entries that redirect to it are written (until it listens they fail
	// closed); a listener that goes is no longer named by the entries
	// written next, so it only takes connections already handed over.
	r.publishL7()
	r.mu.Lock()
	for _, err := range res.Errors {
		errs = append(errs, err)
	}
	changed := len(res.Endpoints) > 0 || len(res.IPCacheUpserts) > 0 || len(res.IPCacheDeletes) > 0
	for _, p := range res.Endpoints {
		if pl := r.placed[p.Pod]; pl != nil {
			errs = append(errs, r.writeMapsLocked(p.Pod, pl, p))
		}
	}
	if full {
		for pod, pl := range r.placed {
			p, _ := r.engine.Endpoint(pod)
			errs = append(errs, r.writeMapsLocked(pod, pl, p))
		}
	}
	type flagWrite struct {
		pod       nsName
		pl        placement
		id, flags uint32
	}
	var writes []flagWrite
	for pod, pl := range r.placed {
		if pl.ifindex == 0 {
			continue // not placed yet: Placed will check it
		}
		id, f := r.desiredLocked(pod, pl)
		if full || id != pl.identity || f != pl.flags {
			writes = append(writes, flagWrite{pod, *pl, id, f})
			pl.identity, pl.flags = id, f
		}
	}
	snap := r.alloc.Snapshot()
	portSnap := r.ports.Snapshot()
	for _, err := range r.engine.L7Errors() {
		errs = append(errs, err)
	}
	r.mu.Unlock()

	// Before the revision moves: the uplinks look for connections to hand
	// to the proxy while any endpoint's maps redirect.
	if err := r.syncProxyRedirects(full); err != nil {
		errs = append(errs, err)
	}

	// The ipcache is written whole (diffed against the map) when the
	// engine or the local endpoints changed since it was last written
	// (a Prepare may have done it already), before the flags that
	// enforce with it.
	if err := r.syncIPCache(full, ipcLocal); err != nil {
		errs = append(errs, err)
	}
	for _, w := range writes {
		if _, err := r.opts.Maps.SetEndpointPolicy(uint32(w.pl.ifindex), w.pl.epID, w.id, w.flags); err != nil {
			errs = append(errs, fmt.Errorf("endpoint %s: %w", w.pod, err))
		}
	}
	if changed || len(writes) > 0 {
		r.bump()
	}
	r.saveIdentities(snap)
	r.saveState(proxyPortsFile, portSnap, &r.savedPorts)

	err := errors.Join(errs...)
	r.mu.Lock()
	r.lastErr = err
	r.mu.Unlock()
	if err != nil {
		r.log.Warn("policy pass", "error", err)
	}
	if changed || len(writes) > 0 {
		r.log.Info("policy programmed", "endpointsChanged", len(res.Endpoints), "ipcacheUpserts", len(res.IPCacheUpserts),
			"ipcacheDeletes", len(res.IPCacheDeletes), "flagWrites", len(writes), "took", time.Since(start).Round(time.Microsecond))
	}
	return err
}

func (r *Reconciler) saveIdentities(s identity.Snapshot) {
	r.saveState(identitiesFile, s, &r.savedIDs)
}

// saveState writes v to file in the state directory unless it is what was
// last saved (saved, a hash, is updated).
func (r *Reconciler) saveState(file string, v any, saved *[sha256.Size]byte) {
	if r.opts.StateDir == "" {
		return
	}
	b, err := json.Marshal(v)
	// Compared by hash: the JSON of a large cluster's identities is
	// megabytes, which keeping for the comparison would double.
	sum := sha256.Sum256(b)
	if err != nil || sum == *saved {
		return
	}
	// Mode 0600, written atomically (the label sets of the cluster's pods).
	if err := statedir.WriteFile(filepath.Join(r.opts.StateDir, file), b); err != nil {
		r.log.Warn("save state", "file", file, "error", err)
		return
	}
	*saved = sum
}

// publishL7 makes the engine's L7 config the one L7Config returns, and
// tells Changed's receiver, if it changed.
func (r *Reconciler) publishL7() {
	r.mu.Lock()
	cfg := r.engine.L7Config()
	same := reflect.DeepEqual(cfg, r.l7cfg)
	if !same {
		r.l7cfg = cfg
	}
	r.mu.Unlock()
	if same {
		return
	}
	r.log.Info("L7 policy compiled", "listeners", len(cfg.Listeners))
	select {
	case r.l7changed <- struct{}{}:
	default:
	}
}

// L7Config is the node's compiled L7 policy as of the last pass: the
// proxy listeners the endpoints' policy maps redirect to, with their rules
// (the xDS server's input). It is never modified afterwards.
func (r *Reconciler) L7Config() l7.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.l7cfg
}

// Changed receives after a pass that changed L7Config (notifications
// coalesce: read L7Config after each). It has one receiver, the xDS
// server.
func (r *Reconciler) Changed() <-chan struct{} { return r.l7changed }

// Status summarises policy for `sluice status`.
func (r *Reconciler) Status() api.PolicyStatus {
	r.proxyMu.Lock()
	redirecting := int(r.proxyRedirects)
	r.proxyMu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	st := api.PolicyStatus{Revision: r.revision, Identities: len(r.engine.Identities())}
	st.L7Listeners, st.L7Redirecting = len(r.l7cfg.Listeners), redirecting
	for _, pl := range r.placed {
		if pl.flags&(datapath.EPFlagPolicyIngress|datapath.EPFlagPolicyEgress) != 0 {
			st.EnforcedEndpoints++
		}
	}
	for pod, msg := range r.overflow {
		st.FailedClosed = append(st.FailedClosed, api.PolicyFailure{Pod: pod.String(), Error: msg})
	}
	sort.Slice(st.FailedClosed, func(i, j int) bool { return st.FailedClosed[i].Pod < st.FailedClosed[j].Pod })
	if r.lastErr != nil {
		st.LastError = r.lastErr.Error()
	}
	return st
}

// Explain returns the effective policy of a local pod.
func (r *Reconciler) Explain(pod nsName) (*policy.Explanation, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.engine.Explain(pod)
}

// Identities lists the allocated and reserved identities.
func (r *Reconciler) Identities() []identity.Allocation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.engine.Identities()
}

// PodIdentity returns the identity of a pod of the cluster.
func (r *Reconciler) PodIdentity(pod nsName) (identity.ID, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.engine.PodIdentity(pod)
}

// IdentityLabels returns an identity's labels.
func (r *Reconciler) IdentityLabels(id identity.ID) (identity.Labels, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.engine.IdentityLabels(id)
}

// Rule names a rule ID for events.
func (r *Reconciler) Rule(id uint32) (policy.RuleRef, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.engine.Rule(policy.RuleID(id))
}

// View runs fn with the policy engine under the reconciler's lock, as of
// its last pass: what the maps were last written from, for questions
// whose answers must agree with each other (`sluice policy trace`). fn
// must not keep the engine nor change it.
func (r *Reconciler) View(fn func(*policy.Engine)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(r.engine)
}
