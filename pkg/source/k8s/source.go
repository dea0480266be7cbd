package k8s

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/source/k8sconv"
)

const (
	// DefaultMinSyncInterval is the shortest time between two updates of
	// the model. Every update makes the consumers (services, policy,
	// endpoints) recompute and reconcile, so during a rollout that touches
	// thousands of pods they see a couple of batches a second rather than
	// one revision per event; a change arriving in a quiet period still
	// reaches the model within batchDelay.
	DefaultMinSyncInterval = 500 * time.Millisecond
	// DefaultResync is how often every cached object is converted again and
	// the whole result compared with the store, repairing any divergence
	// the incremental updates could have left (a bug, another writer). It
	// costs a few hundred milliseconds of CPU at 20,000 objects, so every
	// few minutes is cheap. It does not talk to the API server: the
	// informers' caches are kept current by their watches.
	DefaultResync = 5 * time.Minute
	// batchDelay is how long the first change after a quiet period waits
	// for the rest of its burst: an informer delivers a relist or a
	// deployment's pods as a series of events milliseconds apart, and they
	// should land in one Apply.
	batchDelay = 20 * time.Millisecond
	// syncPoll is how often Start checks whether the informers have synced.
	syncPoll = 100 * time.Millisecond
	// waitLogInterval is how often Start says what it is still waiting
	// for, so that an agent stuck on RBAC or an unreachable API server
	// explains itself in its log.
	waitLogInterval = 10 * time.Second
	// maxReportedObjectErrors bounds Errors: a cluster where thousands of
	// objects fail the same way needs the first few examples, not a status
	// page of thousands of lines.
	maxReportedObjectErrors = 50
)

// Options configure a Source.
type Options struct {
	// Client is the API server client (see NewClient). Required.
	Client Client
	// NodeName is this node. When set, Errors reports it missing from the
	// cluster's nodes, because then no pod can be recognised as local.
	NodeName string
	// Logger defaults to discarding logs.
	Logger *slog.Logger
	// MinSyncInterval defaults to DefaultMinSyncInterval.
	MinSyncInterval time.Duration
	// Resync defaults to DefaultResync; negative disables it.
	Resync time.Duration
	// SecretNamespace is the namespace whose Secrets a SluiceL7Policy's
	// jwksSecretRef names: the agent's own, the only one whose Secrets it
	// may read (see daemonset/role.yaml). Empty: no Secret is read, and a
	// policy naming one is an error.
	SecretNamespace string
}

// Source keeps a model.Store in step with the API server through shared
// informers. See the package documentation.
type Source struct {
	opts Options
	log  *slog.Logger
	// transform is the informers' transform; tests set it to nil to measure
	// what it saves.
	transform cache.TransformFunc

	kinds  []*kindInformer
	byKind map[model.Kind]*kindInformer
	// secrets is the informer of SecretNamespace's Secrets (nil without
	// one); it is in kinds too, for the waits and errors, with kind 0.
	secrets *kindInformer

	// Owned by the sync loop (and by Start before the loop runs).
	store    *model.Store
	desired  *model.State               // last good conversion of every cached object
	objErrs  map[model.Key]*ObjectError // objects that failed their last conversion
	forceAll bool                       // the next sync must be a full one

	dirtyMu sync.Mutex
	dirty   map[model.Key]struct{} // objects changed since the last sync
	kick    chan struct{}          // capacity 1: "dirty is not empty"
	// secretUsers are the policies whose last conversion read each
	// Secret (by name): a change of the Secret marks them; under dirtyMu.
	secretUsers map[string]map[model.Key]struct{}

	mu        sync.Mutex // guards the fields below and kindInformer.watch*
	started   bool
	synced    bool
	published []error // object errors and the node check, as of the last sync

	done chan struct{}

	fullSyncs atomic.Int64 // for tests
}

// kindInformer is the informer of one resource.
type kindInformer struct {
	kind     model.Kind
	resource string // e.g. "pods", as RBAC and API errors name it
	// namespace is the one namespace read; empty: all of them.
	namespace string
	// optional resources may not be served at all (a CRD not installed):
	// the informer then holds none of them, and Errors says why and which
	// file of daemonset/ installs the CRD (crd).
	optional bool
	crd      string
	informer cache.SharedIndexInformer
	handler  cache.ResourceEventHandlerRegistration

	// notServed is the API server's answer while it does not serve an
	// optional resource; guarded by Source.mu.
	notServed error

	// The last list/watch failure and what the informer looked like then,
	// to tell when it has recovered; guarded by Source.mu.
	watchErr    *WatchError
	watchErrRV  string
	watchErrSyn bool
}

// New validates opts and returns a source that does nothing until Start.
func New(opts Options) (*Source, error) {
	if opts.Client == nil {
		return nil, errors.New("kubernetes client is required")
	}
	if opts.MinSyncInterval <= 0 {
		opts.MinSyncInterval = DefaultMinSyncInterval
	}
	if opts.Resync == 0 {
		opts.Resync = DefaultResync
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Source{
		opts:        opts,
		log:         log.With("source", "kubernetes"),
		transform:   toModel,
		desired:     &model.State{},
		objErrs:     make(map[model.Key]*ObjectError),
		dirty:       make(map[model.Key]struct{}),
		secretUsers: make(map[string]map[model.Key]struct{}),
		kick:        make(chan struct{}, 1),
		done:        make(chan struct{}),
	}, nil
}

// Start starts the informers and returns once every one of them has listed
// its resource and the result is in store, so the caller knows the initial
// model is complete before it programs the datapath; then it keeps store up
// to date until ctx is done. If ctx ends first, Start returns an error
// naming the resources that had not synced and the last list error.
// Objects that fail conversion are not errors here: see Errors.
func (s *Source) Start(ctx context.Context, store *model.Store) error {
	if store == nil {
		return errors.New("nil store")
	}
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("kubernetes source already started")
	}
	s.started = true
	s.mu.Unlock()
	s.store = store

	kinds := []*kindInformer{
		{kind: model.KindNamespace, resource: "namespaces"},
		{kind: model.KindNode, resource: "nodes"},
		// All pods, not just this node's: the ipcache maps every pod IP to
		// its identity.
		{kind: model.KindPod, resource: "pods"},
		{kind: model.KindService, resource: "services"},
		{kind: model.KindEndpointSlice, resource: "endpointslices"},
		{kind: model.KindNetworkPolicy, resource: "networkpolicies"},
		// A cluster without Sluice's CRD has no L7 policies: the agent
		// runs without them, and says so.
		{kind: model.KindL7Policy, resource: v1alpha1.SluiceL7Policies.Resource, optional: true, crd: "crd-sluicel7policies.yaml"},
		// Likewise ClusterNetworkPolicies (network-policy-api's CRD).
		{kind: model.KindClusterNetworkPolicy, resource: k8sconv.ClusterNetworkPolicies.Resource, optional: true,
			crd: "crd-clusternetworkpolicies.yaml"},
	}
	kinds[0].informer = s.newInformer(kinds[0], &corev1.Namespace{})
	kinds[1].informer = s.newInformer(kinds[1], &corev1.Node{})
	kinds[2].informer = s.newInformer(kinds[2], &corev1.Pod{})
	kinds[3].informer = s.newInformer(kinds[3], &corev1.Service{})
	kinds[4].informer = s.newInformer(kinds[4], &discoveryv1.EndpointSlice{})
	kinds[5].informer = s.newInformer(kinds[5], &networkingv1.NetworkPolicy{})
	kinds[6].informer = s.newInformer(kinds[6], &unstructured.Unstructured{})
	kinds[7].informer = s.newInformer(kinds[7], &unstructured.Unstructured{})
	if ns := s.opts.SecretNamespace; ns != "" {
		s.secrets = &kindInformer{resource: "secrets", namespace: ns}
		s.secrets.informer = s.newInformer(s.secrets, &corev1.Secret{})
		kinds = append(kinds, s.secrets)
	}
	s.mu.Lock() // Errors reads kinds
	s.kinds = kinds
	s.mu.Unlock()
	s.byKind = make(map[model.Kind]*kindInformer, len(kinds))
	for _, ki := range kinds {
		s.byKind[ki.kind] = ki
		err := ki.informer.SetWatchErrorHandlerWithContext(func(ctx context.Context, _ *cache.Reflector, err error) {
			s.watchFailed(ctx, ki, err)
		})
		if err == nil {
			h := s.handler(ki.kind)
			if ki == s.secrets {
				h = s.secretHandler()
			}
			ki.handler, err = ki.informer.AddEventHandler(h)
		}
		if err != nil {
			close(s.done)
			return fmt.Errorf("setting up the %s informer: %w", ki.resource, err)
		}
	}

	// client-go logs through the context's logger: send it to ours. Its
	// verbose levels V(n) become slog level -n, below Info, so they show
	// only with debug logging.
	ictx, stop := context.WithCancel(klog.NewContext(ctx, logr.FromSlogHandler(s.log.Handler())))
	var running sync.WaitGroup
	for _, ki := range kinds {
		running.Add(1)
		go func() { defer running.Done(); ki.informer.RunWithContext(ictx) }()
	}
	shutdown := func() { stop(); running.Wait() }
	if err := s.waitForSync(ctx); err != nil {
		shutdown()
		close(s.done)
		return err
	}

	s.sync(true)
	s.mu.Lock()
	s.synced = true
	s.mu.Unlock()
	s.log.Info("kubernetes source synced", "objects", s.desired.Len(), "revision", store.Revision())

	go func() {
		defer close(s.done)
		s.loop(ctx)
		shutdown() // the informers stop with ctx; wait for them
	}()
	return nil
}

// Done is closed when the informers and the sync loop have stopped after
// ctx ended (or when Start failed).
func (s *Source) Done() <-chan struct{} { return s.done }

// Synced reports whether every informer has synced and the initial model is
// in the store. It stays true while watches fail and retry afterwards: the
// model then holds the last state seen, which is what the datapath should
// keep serving, and Errors says that the view may be stale.
func (s *Source) Synced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced
}

// Errors returns the current problems, for `sluice status`: objects that
// failed conversion (*ObjectError, at most maxReportedObjectErrors of them
// plus a count of the rest), this node missing from the cluster's nodes,
// and list/watch failures (*WatchError). An object's error goes away when
// it is fixed or deleted; a list/watch failure when a later list or watch
// request of the resource succeeds (or its informer has synced or seen a
// newer resource version since). A watch refused while the API server is
// down counts as a failure, though the informers retry it silently.
func (s *Source) Errors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.published)
	for _, ki := range s.kinds {
		if ki.notServed != nil {
			out = append(out, fmt.Errorf("%s are not served by the API server, so none is in force (install daemonset/%s; the agent picks them up without a restart): %w",
				ki.resource, ki.crd, ki.notServed))
		}
		if ki.watchErr == nil {
			continue
		}
		if (!ki.watchErrSyn && ki.informer.HasSynced()) || ki.informer.LastSyncResourceVersion() != ki.watchErrRV {
			ki.watchErr = nil // recovered
			continue
		}
		out = append(out, ki.watchErr)
	}
	return out
}

// ObjectError is an object that could not be converted to the model and is
// ignored until it changes.
type ObjectError struct {
	// Object is the object's kind, namespace and name.
	Object model.Key
	// Field is the path of the offending field, e.g. "spec.clusterIP";
	// empty if not known.
	Field string
	Err   error
	// Kept is set when an earlier version of the object converted and is
	// still in the model: a bad update never takes a service or policy out.
	Kept bool
}

func (e *ObjectError) Error() string {
	var b strings.Builder
	b.WriteString(e.Object.String())
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Err.Error())
	if e.Kept {
		b.WriteString("; ignored, the model keeps its previous version")
	} else {
		b.WriteString("; ignored, not in the model")
	}
	return b.String()
}

func (e *ObjectError) Unwrap() error { return e.Err }

// WatchError is a failed list or watch of one resource. The informer retries
// with backoff (up to 30s between attempts) and the model keeps the last
// state it saw meanwhile.
type WatchError struct {
	// Resource is e.g. "pods".
	Resource string
	Err      error
	Time     time.Time
}

func (e *WatchError) Error() string {
	msg := fmt.Sprintf("listing/watching %s failed at %s (retrying; the model keeps the last state seen): %v",
		e.Resource, e.Time.Format(time.RFC3339), e.Err)
	if apierrors.IsForbidden(e.Err) || apierrors.IsUnauthorized(e.Err) {
		msg += fmt.Sprintf("; the agent's service account needs list and watch on %s (see its ClusterRole)", e.Resource)
	}
	return msg
}

func (e *WatchError) Unwrap() error { return e.Err }

// watchFailed is the informers' WatchErrorHandler: it is called when a list
// or watch fails, before the reflector backs off and retries.
func (s *Source) watchFailed(ctx context.Context, ki *kindInformer, err error) {
	switch {
	case ctx.Err() != nil:
		return // stopping
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		apierrors.IsResourceExpired(err), apierrors.IsGone(err):
		// A watch closed by the server or a proxy, or too old to resume:
		// the reflector re-watches or re-lists at once. Routine.
		s.log.Debug("watch closed, resuming", "resource", ki.resource, "err", err)
		return
	case ki.optional && apierrors.IsNotFound(err):
		// Not served: Errors says so (notServed) once, not every retry.
		s.log.Debug("resource not served, retrying", "resource", ki.resource, "err", err)
		return
	}
	we := &WatchError{Resource: ki.resource, Err: err, Time: time.Now()}
	s.log.Warn("list/watch failed, retrying with backoff", "resource", ki.resource, "err", err)
	s.mu.Lock()
	defer s.mu.Unlock()
	ki.watchErr = we
	ki.watchErrRV = ki.informer.LastSyncResourceVersion()
	ki.watchErrSyn = ki.informer.HasSynced()
}

// newInformer is a shared informer of ki's resource, whose objects are
// like obj, as client-go's generated informers build it, except that its
// requests tell the source how they went (observeWatch, observeList), its
// transform is s.transform, and it keeps no index: the source reads its
// cache by key and as a whole only.
func (s *Source) newInformer(ki *kindInformer, obj runtime.Object) cache.SharedIndexInformer {
	c := s.opts.Client
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			l, err := c.List(ctx, ki.namespace, ki.resource, opts)
			if ki.optional && apierrors.IsNotFound(err) {
				// The resource is not served (its CRD is not installed):
				// none exist. The watch that follows fails the same way,
				// and the reflector lists again after its backoff, which
				// is how a CRD installed later is found.
				s.mu.Lock()
				if ki.notServed == nil {
					s.log.Warn("resource not served by the API server; none is in force until it is", "resource", ki.resource, "err", err)
				}
				ki.notServed = err
				s.mu.Unlock()
				return &unstructured.UnstructuredList{}, nil
			}
			s.observeList(ki, err)
			if err != nil {
				return nil, err
			}
			return l, nil
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			w, err := c.Watch(ctx, ki.namespace, ki.resource, opts)
			s.observeWatch(ctx, ki, err)
			return w, err
		},
	}
	// No informer resync: the handlers only mark objects dirty, and the
	// loop's own resync re-reads the caches without waking every handler.
	inf := cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, c), obj,
		cache.SharedIndexInformerOptions{ResyncPeriod: 0, Indexers: cache.Indexers{}})
	if s.transform != nil {
		// Cannot fail before the informer runs.
		_ = inf.SetTransform(s.transform)
	}
	return inf
}

// observeWatch records the outcome of opening a watch. The reflector hands
// list failures and broken watches to watchFailed, but a watch it cannot
// reopen because the connection is refused (or throttled, 429) it retries
// with backoff without telling anyone: that is what an API server outage
// looks like once the informers have synced, and the model would go stale
// while Errors said nothing. So those failures are recorded here; and any
// request that succeeds ends the resource's failure: the API server
// answers again.
func (s *Source) observeWatch(ctx context.Context, ki *kindInformer, err error) {
	if err != nil {
		if utilnet.IsConnectionRefused(err) || apierrors.IsTooManyRequests(err) {
			s.watchFailed(ctx, ki, err)
		}
		return
	}
	s.recovered(ki)
}

// observeList records the outcome of a list; its failures reach
// watchFailed through the reflector.
func (s *Source) observeList(ki *kindInformer, err error) {
	if err == nil {
		s.recovered(ki)
	}
}

func (s *Source) recovered(ki *kindInformer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ki.notServed != nil {
		s.log.Info("resource served now", "resource", ki.resource)
		ki.notServed = nil
	}
	if ki.watchErr != nil {
		s.log.Info("list/watch works again", "resource", ki.resource, "failedSince", ki.watchErr.Time)
		ki.watchErr = nil
	}
}

// waitForSync waits until every informer has synced, and has delivered its
// initial objects to our handler (so that the first full sync does not
// leave them all marked for a second look), or ctx ends.
func (s *Source) waitForSync(ctx context.Context) error {
	t := time.NewTicker(syncPoll)
	defer t.Stop()
	start, lastLog := time.Now(), time.Now()
	for {
		var waiting []string
		for _, ki := range s.kinds {
			if !ki.handler.HasSynced() {
				waiting = append(waiting, ki.resource)
			}
		}
		if len(waiting) == 0 {
			return nil
		}
		var lastErr []error
		s.mu.Lock()
		for _, ki := range s.kinds {
			if ki.watchErr != nil && !ki.informer.HasSynced() {
				lastErr = append(lastErr, ki.watchErr)
			}
		}
		s.mu.Unlock()
		if time.Since(lastLog) >= waitLogInterval {
			lastLog = time.Now()
			s.log.Warn("waiting for the API server: informers not synced yet", "resources", waiting,
				"waited", time.Since(start).Round(time.Second), "errors", errors.Join(lastErr...))
		}
		select {
		case <-ctx.Done():
			err := fmt.Errorf("%s not synced with the API server: %w", strings.Join(waiting, ", "), ctx.Err())
			return errors.Join(append([]error{err}, lastErr...)...)
		case <-t.C:
		}
	}
}

// handler marks the changed object; the loop does the work.
func (s *Source) handler(kind model.Kind) cache.ResourceEventHandler {
	return s.marker(func(ns, name string) bool {
		s.dirty[model.Key{Kind: kind, Namespace: ns, Name: name}] = struct{}{}
		return true
	})
}

// marker is an event handler that calls mark, under dirtyMu, with the
// namespace and name of each changed object, and kicks the loop when mark
// marked something.
func (s *Source) marker(mark func(ns, name string) bool) cache.ResourceEventHandler {
	changed := func(obj any) {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		if err != nil {
			return
		}
		ns, name, err := cache.SplitMetaNamespaceKey(key)
		if err != nil {
			return
		}
		s.dirtyMu.Lock()
		marked := mark(ns, name)
		s.dirtyMu.Unlock()
		if !marked {
			return
		}
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    changed,
		UpdateFunc: func(_, obj any) { changed(obj) },
		DeleteFunc: changed,
	}
}

// loop applies marked changes at most once per MinSyncInterval, and
// everything every Resync.
func (s *Source) loop(ctx context.Context) {
	var resync <-chan time.Time
	if s.opts.Resync > 0 {
		t := time.NewTicker(s.opts.Resync)
		defer t.Stop()
		resync = t.C
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	pending := false
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
			if !pending {
				pending = true
				timer.Reset(max(batchDelay, time.Until(last.Add(s.opts.MinSyncInterval))))
			}
		case <-timer.C:
			pending = false
			s.sync(s.forceAll)
			last = time.Now()
		case <-resync:
			s.sync(true)
			last = time.Now()
		}
	}
}

// sync converts the marked objects (all cached objects if full) and applies
// the difference from the store's snapshot in one Apply.
func (s *Source) sync(full bool) {
	start := time.Now()
	s.dirtyMu.Lock()
	dirty := s.dirty
	s.dirty = make(map[model.Key]struct{})
	s.dirtyMu.Unlock()

	snap := s.store.Snapshot()
	var changes []model.Change
	if full {
		// Everything marked so far is read below; what is marked from now
		// on is handled by the next sync.
		next := &model.State{}
		errs := make(map[model.Key]*ObjectError)
		for _, ki := range s.kinds {
			if ki == s.secrets {
				continue
			}
			for _, obj := range ki.informer.GetStore().List() {
				ns, name, ok := objectName(obj)
				if !ok {
					continue
				}
				k := model.Key{Kind: ki.kind, Namespace: ns, Name: name}
				if o := s.convert(k, obj, errs); o != nil {
					next.Upsert(o)
				}
			}
		}
		s.objErrs = errs
		s.desired = next
		s.fullSyncs.Add(1)
		changes = model.Diff(snap, next)
	} else {
		// Compare only the marked objects: their versions in the store
		// against their new conversions.
		before, after := &model.State{}, &model.State{}
		for k := range dirty {
			if o, ok := snap.Get(k); ok {
				before.Upsert(o)
			}
			s.refresh(k)
			if o, ok := s.desired.Get(k); ok {
				after.Upsert(o)
			}
		}
		changes = model.Diff(before, after)
	}

	s.forceAll = false
	if len(changes) > 0 {
		rev, err := s.store.Apply(changes)
		if err != nil {
			// Cannot happen with converted objects; compare everything
			// next time rather than lose these changes.
			s.log.Error("applying kubernetes objects to the model", "err", err)
			s.forceAll = true
		} else {
			s.log.Debug("applied kubernetes objects", "changes", len(changes), "full", full,
				"objects", s.desired.Len(), "revision", rev, "took", time.Since(start))
		}
	}
	s.publish()
}

// objectName is the namespace and name of a cached object.
func objectName(obj any) (namespace, name string, ok bool) {
	if c, ok := obj.(*cached); ok {
		return c.namespace, c.name, true
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return "", "", false
	}
	return m.GetNamespace(), m.GetName(), true
}

// refresh converts the cached version of one object into s.desired, or
// removes it when it is no longer cached (deleted).
func (s *Source) refresh(k model.Key) {
	ki := s.byKind[k.Kind]
	key := k.Name
	if k.Namespace != "" {
		key = k.Namespace + "/" + k.Name
	}
	obj, exists, err := ki.informer.GetStore().GetByKey(key)
	if err != nil || !exists {
		s.desired.Delete(k)
		delete(s.objErrs, k)
		s.setSecretUsers(k, nil)
		return
	}
	if o := s.convert(k, obj, s.objErrs); o != nil {
		s.desired.Upsert(o)
	}
}

// convert converts obj and records the outcome in errs. On failure it
// returns the object's last good version (nil if there is none), so that a
// bad update leaves the object as it was rather than removing it.
func (s *Source) convert(k model.Key, obj any, errs map[model.Key]*ObjectError) model.Object {
	o, err := converted(obj)
	if p, ok := o.(*model.L7Policy); ok && err == nil {
		o, err = s.resolveSecrets(k, p)
	}
	if err == nil {
		if old := s.objErrs[k]; old != nil {
			s.log.Info("object fixed", "object", k.String())
		}
		delete(errs, k)
		return o
	}
	prev, kept := s.desired.Get(k)
	oe := &ObjectError{Object: k, Err: err, Kept: kept}
	var fe *k8sconv.FieldError
	if errors.As(err, &fe) {
		oe.Field, oe.Err = fe.Field, fe.Err
	}
	if old := s.objErrs[k]; old == nil || old.Error() != oe.Error() {
		s.log.Warn("ignoring invalid object", "err", oe)
	}
	errs[k] = oe
	return prev
}

// publish makes the current object errors visible to Errors.
func (s *Source) publish() {
	keys := make([]model.Key, 0, len(s.objErrs))
	for k := range s.objErrs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b model.Key) int {
		if a.Less(b) {
			return -1
		}
		if b.Less(a) {
			return 1
		}
		return 0
	})
	var out []error
	for i, k := range keys {
		if i == maxReportedObjectErrors {
			out = append(out, fmt.Errorf("%d more invalid objects ignored (see the agent's log)", len(keys)-i))
			break
		}
		out = append(out, s.objErrs[k])
	}
	if n := s.opts.NodeName; n != "" {
		if _, ok := s.desired.Nodes[n]; !ok {
			out = append(out, fmt.Errorf("this node %q is not among the cluster's %d nodes, so no pod is recognised as local: check the agent's node name (--node-name or NODE_NAME)",
				n, len(s.desired.Nodes)))
		}
	}
	s.mu.Lock()
	s.published = out
	s.mu.Unlock()
}
