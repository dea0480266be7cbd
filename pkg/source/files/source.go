package files

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/statedir"
)

const (
	// DefaultDebounce lets an editor's write-rename-chmod burst or a
	// ConfigMap symlink swap finish before the directory is re-read, so one
	// edit becomes one model update rather than several half-states.
	DefaultDebounce = 150 * time.Millisecond
	// maxDebounceDelay bounds how long a continuous stream of events can
	// postpone a reload.
	maxDebounceDelay = 2 * time.Second
	// DefaultResync re-reads the directory even without events, as a safety
	// net for lost inotify events (queue overflow, network filesystems).
	// Reading a few files a minute costs nothing.
	DefaultResync = time.Minute
	// missingDirPoll is how often to look for a missing directory whose
	// parent cannot be watched either. Slow, because it only matters for
	// the first deploy and nothing is lost by waiting a little.
	missingDirPoll = 2 * time.Second
	// DefaultMaxBytes bounds a manifest file. Manifests are kilobytes: a
	// ConfigMap volume holds at most 1 MiB in all, and a file listing a
	// whole large cluster's Services and EndpointSlices a few MiB, so 16
	// MiB leaves room for any real use. Documents outside the YAML subset
	// of the fast decoder are decoded strictly, which is expensive: 16 MiB
	// of them takes about 5 s of one CPU and allocates 1.5 GiB on the way
	// (garbage, collected as it goes); a file is decoded again whenever it
	// changes. The limit bounds what one file dropped into the directory
	// by mistake, or by someone who may write there but not run the agent,
	// can cost it.
	DefaultMaxBytes = 16 << 20
	// firstSaveDelay is how long after Start the last good state is first
	// saved (see saver).
	firstSaveDelay = 2 * time.Second
	// savedStateVersion is bumped when the saved format changes incompatibly.
	savedStateVersion = 1
)

// Options configure a Source.
type Options struct {
	// Dir is the manifest directory. Required.
	Dir string
	// StatePath is where the last good objects are saved (the agent uses
	// <state-dir>/model.json). Empty disables persistence.
	StatePath string
	// Logger defaults to discarding logs.
	Logger *slog.Logger
	// Debounce defaults to DefaultDebounce.
	Debounce time.Duration
	// Resync defaults to DefaultResync; negative disables it.
	Resync time.Duration
	// MaxBytes is the largest manifest file read (the agent's
	// --manifest-max-bytes); a larger one is refused unread. Defaults to
	// DefaultMaxBytes.
	MaxBytes int64
}

// Source reads manifests from a directory into a model.Store.
type Source struct {
	opts Options
	log  *slog.Logger

	// reloadMu serializes reloads; the fields below it are owned by the
	// reload in progress.
	reloadMu sync.Mutex
	store    *model.Store
	good     map[string][]entry // last good objects per file name
	applied  *model.State       // what this source last applied to the store
	// parsed is the last parse of each file, by its contents' hash: a
	// reload decodes only the files that changed.
	parsed map[string]parsedFile
	// parseFile is parseFile; tests count its calls.
	parseFile func(name string, data []byte, isJSON bool) ([]entry, error)
	// goodChanged: good differs from what was last queued for saving.
	goodChanged bool
	// saves hands the saver the last good objects to write (capacity 1:
	// only the latest matters).
	saves chan map[string][]entry

	mu      sync.Mutex // guards the status fields below
	errs    []error
	loadErr error // saved state could not be used; reported until restart
	saveErr error
	synced  bool

	done chan struct{}
}

// New validates opts and returns a source that does nothing until Start.
func New(opts Options) (*Source, error) {
	if opts.Dir == "" {
		return nil, errors.New("manifest directory is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("resolving manifest directory %s: %w", opts.Dir, err)
	}
	opts.Dir = filepath.Clean(dir)
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.Resync == 0 {
		opts.Resync = DefaultResync
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Source{
		opts:      opts,
		log:       log.With("source", "files", "dir", opts.Dir),
		good:      make(map[string][]entry),
		applied:   &model.State{},
		parsed:    make(map[string]parsedFile),
		parseFile: parseFile,
		// Until a saved state is loaded, there is none on disk to match.
		goodChanged: true,
		saves:       make(chan map[string][]entry, 1),
		done:        make(chan struct{}),
	}, nil
}

// parsedFile is the outcome of parsing one version of a file.
type parsedFile struct {
	sum     [sha256.Size]byte
	entries []entry
	err     error
}

// Start loads the saved state and the directory into store synchronously,
// so the caller knows the initial model is in place before it programs the
// datapath, then watches the directory until ctx is done. Problems with
// manifests are not errors here: they are reported by Errors. Start fails
// only if watching cannot be set up at all.
func (s *Source) Start(ctx context.Context, store *model.Store) error {
	if store == nil {
		return errors.New("nil store")
	}
	// Watch before the first read so that no change made during the read
	// is missed.
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching manifest directory %s: %w", s.opts.Dir, err)
	}
	s.addWatches(w)

	s.reloadMu.Lock()
	s.store = store
	s.loadSaved()
	s.reloadMu.Unlock()
	s.reload()
	s.mu.Lock()
	s.synced = true
	s.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer w.Close()
		s.watch(ctx, w)
	}()
	// Saving happens beside the watcher, so that neither the initial load
	// nor a reload waits for the disk.
	go func() {
		defer wg.Done()
		s.saver(ctx)
	}()
	go func() {
		wg.Wait()
		close(s.done)
	}()
	return nil
}

// Run is Start followed by waiting until ctx is done and the watcher stopped.
func (s *Source) Run(ctx context.Context, store *model.Store) error {
	if err := s.Start(ctx, store); err != nil {
		return err
	}
	<-s.done
	return nil
}

// Done is closed when the watcher started by Start has stopped and the
// last good state is saved.
func (s *Source) Done() <-chan struct{} { return s.done }

// Synced reports whether the initial load has been applied to the store.
func (s *Source) Synced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced
}

// Errors returns the current problems, for `sluice status`: manifest errors
// (each a *ManifestError), a missing or empty directory, and saved-state
// problems. A manifest error disappears when its file is fixed or removed.
func (s *Source) Errors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []error
	if s.loadErr != nil {
		out = append(out, s.loadErr)
	}
	out = append(out, s.errs...)
	if s.saveErr != nil {
		out = append(out, s.saveErr)
	}
	return out
}

// savedState is the JSON form of the last good objects, per file so that on
// restart a file that is broken now can fall back to its own last good
// version.
type savedState struct {
	Version int                     `json:"version"`
	Dir     string                  `json:"dir"`
	Files   map[string]*model.State `json:"files"`
}

func (s *Source) loadSaved() {
	if s.opts.StatePath == "" {
		return
	}
	data, err := os.ReadFile(s.opts.StatePath)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	fail := func(err error) {
		// Keep the bad file for inspection; the next save replaces it.
		bad := s.opts.StatePath + ".corrupt"
		_ = os.Rename(s.opts.StatePath, bad)
		err = fmt.Errorf("ignoring saved state %s (moved to %s), starting from the manifest directory alone: %w",
			s.opts.StatePath, bad, err)
		s.log.Error("loading saved state", "err", err)
		s.mu.Lock()
		s.loadErr = err
		s.mu.Unlock()
	}
	if err != nil {
		fail(err)
		return
	}
	var st savedState
	if err := json.Unmarshal(data, &st); err != nil {
		fail(err)
		return
	}
	if st.Version != savedStateVersion {
		fail(fmt.Errorf("unsupported version %d", st.Version))
		return
	}
	if st.Dir != s.opts.Dir {
		// Objects saved for another directory are not this directory's
		// last good state; serving them would resurrect a different host's
		// configuration.
		s.log.Warn("ignoring saved state of another manifest directory", "path", s.opts.StatePath, "savedDir", st.Dir)
		return
	}
	for name, fst := range st.Files {
		if fst == nil {
			continue
		}
		var es []entry
		for _, o := range fst.Objects() {
			es = append(es, entry{obj: o})
		}
		s.good[name] = es
	}
	s.goodChanged = false
	s.log.Info("loaded saved state", "path", s.opts.StatePath, "files", len(st.Files))
}

// isManifest reports whether a directory entry name is a manifest, skipping
// dotfiles (which includes the ..data machinery of ConfigMap volumes) and
// editor leftovers.
func isManifest(name string) bool {
	if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "#") ||
		strings.HasSuffix(name, "~") || strings.HasSuffix(name, ".swp") || strings.HasSuffix(name, ".swx") {
		return false
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// listManifests returns the manifest file names in dir, sorted.
func listManifests(dir string) ([]string, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, de := range des {
		if !isManifest(de.Name()) {
			continue
		}
		// Stat follows symlinks: ConfigMap volumes present files as
		// symlinks into ..data.
		fi, err := os.Stat(filepath.Join(dir, de.Name()))
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		names = append(names, de.Name())
	}
	slices.Sort(names)
	return names, nil
}

type place struct {
	file string
	doc  int
}

func (p place) String() string {
	if p.doc == 0 {
		return p.file
	}
	return fmt.Sprintf("%s document %d", p.file, p.doc)
}

// reload re-reads the directory, applies the difference to the store and
// saves the last good state.
func (s *Source) reload() {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()

	var errs []error
	names, err := listManifests(s.opts.Dir)
	// Links may lead anywhere in the directory's real path (the directory
	// itself may be a link), and nowhere outside it.
	var realDir string
	if err == nil {
		realDir, err = filepath.EvalSymlinks(s.opts.Dir)
	}
	// candidate objects per file, and whether they are newly parsed (as
	// opposed to the file's last good objects).
	cand := map[string][]entry{}
	fresh := map[string]bool{}
	if err != nil || len(names) == 0 {
		// An unmounted volume or a deploy that has not written files yet
		// looks exactly like "delete everything"; pruning on it would drop
		// all services and policies, so keep serving the last good state.
		n := 0
		for _, es := range s.good {
			n += len(es)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("reading manifest directory %s: %w; keeping last good state of %d objects", s.opts.Dir, err, n))
		} else {
			errs = append(errs, fmt.Errorf("manifest directory %s is empty or missing; keeping last good state of %d objects", s.opts.Dir, n))
		}
		for name, es := range s.good {
			cand[name] = es
		}
	} else {
		for name := range s.good {
			if !slices.Contains(names, name) {
				delete(s.good, name) // the file was deleted: a real change
				s.goodChanged = true
			}
		}
		for name := range s.parsed {
			if !slices.Contains(names, name) {
				delete(s.parsed, name)
			}
		}
		for _, name := range names {
			es, err := s.parse(realDir, name)
			if err != nil {
				errs = append(errs, err)
				cand[name] = s.good[name]
				continue
			}
			cand[name] = es
			fresh[name] = !sameEntries(es, s.good[name])
		}
	}

	state, dupErrs := s.merge(cand, fresh)
	errs = append(errs, dupErrs...)

	changes := model.Diff(s.applied, state)
	if len(changes) > 0 {
		rev, err := s.store.Apply(changes)
		if err != nil {
			// Cannot happen with objects from the converter; keep the old
			// view so the next reload retries the whole difference.
			errs = append(errs, fmt.Errorf("applying manifests: %w", err))
		} else {
			s.applied = state
			s.log.Info("applied manifests", "changes", len(changes), "objects", state.Len(), "revision", rev)
		}
	}
	s.save()

	for _, e := range errs {
		s.log.Warn("manifest problem", "err", e)
	}
	s.mu.Lock()
	s.errs = errs
	s.mu.Unlock()
}

// parse returns the objects of manifest name, or its error. A file whose
// contents have not changed since it was last parsed is not decoded
// again: its objects, or its error, are those of last time.
func (s *Source) parse(realDir, name string) ([]entry, error) {
	last, seen := s.parsed[name]
	data, sum, err := s.read(realDir, name, seen, last.sum)
	if err != nil {
		delete(s.parsed, name)
		return nil, &ManifestError{File: name, Err: err}
	}
	if data == nil {
		return last.entries, last.err // unchanged
	}
	es, err := s.parseFile(name, data, strings.EqualFold(filepath.Ext(name), ".json"))
	s.parsed[name] = parsedFile{sum: sum, entries: es, err: err}
	return es, err
}

// read reads the manifest name, refusing a file that resolves outside
// realDir or is larger than MaxBytes, and returns its contents and their
// hash. If known is set and the file's contents still hash to sum, it
// returns nil contents instead, without holding the file in memory. The
// checks are made on the file opened, not on its path, so that swapping a
// link between check and read gains nothing: the agent is root, and a
// manifest's decoding errors quote what it read.
func (s *Source) read(realDir, name string, known bool, sum [sha256.Size]byte) ([]byte, [sha256.Size]byte, error) {
	f, err := s.open(realDir, name)
	if err != nil {
		return nil, sum, err
	}
	defer f.Close()
	limit := s.opts.MaxBytes
	if known {
		h := sha256.New()
		n, err := io.Copy(h, io.LimitReader(f, limit+1))
		if err != nil {
			return nil, sum, fmt.Errorf("reading file: %w", err)
		}
		if n <= limit && [sha256.Size]byte(h.Sum(nil)) == sum {
			return nil, sum, nil
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, sum, fmt.Errorf("reading file: %w", err)
		}
	}
	// The file may grow while it is read: never read more than the limit.
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, sum, fmt.Errorf("reading file: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, sum, fmt.Errorf("grew past the limit of %d bytes while read (--manifest-max-bytes): refused", limit)
	}
	return data, sha256.Sum256(data), nil
}

// open opens the manifest name after the checks read describes.
func (s *Source) open(realDir, name string) (*os.File, error) {
	// O_NONBLOCK: a FIFO put in the file's place since the listing must
	// not block the reload (it is refused below as not a regular file).
	f, err := os.OpenFile(filepath.Join(s.opts.Dir, name), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("reading file: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	// The path the kernel opened, every link resolved. A ConfigMap's
	// files resolve into its ..data directory, inside realDir.
	opened, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		return nil, fmt.Errorf("finding where the file leads (is /proc mounted?): %w", err)
	}
	if !strings.HasPrefix(opened, strings.TrimSuffix(realDir, "/")+"/") {
		return nil, fmt.Errorf("a symlink to %s, outside the manifest directory %s: refused", opened, s.opts.Dir)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file: refused", opened)
	}
	if limit := s.opts.MaxBytes; fi.Size() > limit {
		return nil, fmt.Errorf("%d bytes, more than the limit of %d (--manifest-max-bytes): refused", fi.Size(), limit)
	}
	ok = true
	return f, nil
}

func sameEntries(a, b []entry) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true // the same parse, kept because the file did not change
	}
	return slices.EqualFunc(a, b, func(x, y entry) bool { return model.Equal(x.obj, y.obj) })
}

// merge builds the full state from the candidate objects of every file and
// records accepted files as last good. An object defined in two files is an
// error; the file that changed is the one rejected, because the other one was
// already serving that object, and this way moving an object between files
// works in either order of edits. A rejected file keeps serving its last good
// objects, minus any that collide.
func (s *Source) merge(cand map[string][]entry, fresh map[string]bool) (*model.State, []error) {
	state := &model.State{}
	owners := map[model.Key]place{}
	var errs []error
	names := make([]string, 0, len(cand))
	for name := range cand {
		names = append(names, name)
	}
	slices.Sort(names)

	addEach := func(name string, es []entry) {
		for _, e := range es {
			k := e.obj.Key()
			p := place{name, e.doc}
			if prev, dup := owners[k]; dup {
				errs = append(errs, &ManifestError{File: name, Doc: e.doc, Object: k.String(),
					Err: fmt.Errorf("%w: also defined in %s", ErrDuplicate, prev)})
				continue
			}
			owners[k] = p
			state.Upsert(e.obj)
		}
	}
	for _, name := range names {
		if !fresh[name] {
			addEach(name, cand[name])
		}
	}
	for _, name := range names {
		if !fresh[name] {
			continue
		}
		var dupErr error
		for _, e := range cand[name] {
			if prev, dup := owners[e.obj.Key()]; dup {
				dupErr = &ManifestError{File: name, Doc: e.doc, Object: e.obj.Key().String(),
					Err: fmt.Errorf("%w: also defined in %s", ErrDuplicate, prev)}
				break
			}
		}
		if dupErr != nil {
			errs = append(errs, dupErr)
			addEach(name, s.good[name])
			continue
		}
		addEach(name, cand[name])
		s.good[name] = cand[name]
		s.goodChanged = true
	}
	return state, errs
}

// save queues the last good objects for the saver, if they changed.
func (s *Source) save() {
	if s.opts.StatePath == "" || !s.goodChanged {
		return
	}
	s.goodChanged = false
	snap := maps.Clone(s.good) // the entries themselves never change
	for {
		select {
		case s.saves <- snap:
			return
		default:
			// Replace a pending save nobody took yet: only the latest
			// matters. (reload is the only sender.)
			select {
			case <-s.saves:
			default:
			}
		}
	}
}

// saver writes the last good objects queued by save until ctx is done,
// then writes the one still pending, if any. The first write waits for
// firstSaveDelay: a start has better use for the CPU than encoding every
// object just decoded (the files, which are the truth, are there).
func (s *Source) saver(ctx context.Context) {
	select {
	case <-time.After(firstSaveDelay):
	case <-ctx.Done():
	}
	for {
		select {
		case good := <-s.saves:
			s.write(good)
		case <-ctx.Done():
			select {
			case good := <-s.saves:
				s.write(good)
			default:
			}
			return
		}
	}
}

// write writes good to StatePath atomically (temp file + rename), so a
// crash mid-write leaves the previous version rather than a torn file, and
// with mode 0600: they are the node's whole configuration. It streams one
// object at a time, so even a large state is never held in memory as JSON.
func (s *Source) write(good map[string][]entry) {
	err := statedir.WriteFileFunc(s.opts.StatePath, func(w io.Writer) error {
		return writeSavedState(w, s.opts.Dir, good)
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.saveErr = fmt.Errorf("saving last good state to %s: %w", s.opts.StatePath, err)
		s.log.Error("saving state", "err", err)
		return
	}
	s.saveErr = nil
}

// writeSavedState writes the savedState JSON of good: per file, its
// objects by kind (model.State's JSON form), in key order.
func writeSavedState(w io.Writer, dir string, good map[string][]entry) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	head, err := json.Marshal(dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(bw, "{\"version\":%d,\"dir\":%s,\"files\":{", savedStateVersion, head)
	for i, name := range slices.Sorted(maps.Keys(good)) {
		if i > 0 {
			bw.WriteByte(',')
		}
		if err := enc.Encode(name); err != nil {
			return err
		}
		bw.WriteString(":{")
		fst := &model.State{}
		for _, e := range good[name] {
			fst.Upsert(e.obj)
		}
		objs := fst.Objects() // sorted by kind, then key
		for j, o := range objs {
			if j == 0 || o.Key().Kind != objs[j-1].Key().Kind {
				if j > 0 {
					bw.WriteString("],")
				}
				fmt.Fprintf(bw, "%q:[", stateListName[o.Key().Kind])
			} else {
				bw.WriteByte(',')
			}
			if err := enc.Encode(o); err != nil {
				return err
			}
		}
		if len(objs) > 0 {
			bw.WriteByte(']')
		}
		bw.WriteByte('}')
	}
	bw.WriteString("}}\n")
	return bw.Flush()
}

// stateListName is the list of each kind in model.State's JSON form.
var stateListName = map[model.Kind]string{
	model.KindNamespace:            "namespaces",
	model.KindNode:                 "nodes",
	model.KindPod:                  "pods",
	model.KindService:              "services",
	model.KindEndpointSlice:        "endpointSlices",
	model.KindNetworkPolicy:        "networkPolicies",
	model.KindL7Policy:             "l7Policies",
	model.KindClusterNetworkPolicy: "clusterNetworkPolicies",
}

// addWatches watches the directory, and its parent so that creating,
// removing or replacing the directory itself is seen. Failures are fine:
// the poll in watch covers a directory that cannot be watched yet.
func (s *Source) addWatches(w *fsnotify.Watcher) bool {
	_ = w.Add(filepath.Dir(s.opts.Dir))
	if slices.Contains(w.WatchList(), s.opts.Dir) {
		return true
	}
	return w.Add(s.opts.Dir) == nil
}

func (s *Source) watch(ctx context.Context, w *fsnotify.Watcher) {
	var (
		timer      = time.NewTimer(time.Hour)
		pending    bool
		firstEvent time.Time
	)
	timer.Stop()
	trigger := func() {
		now := time.Now()
		if !pending {
			pending, firstEvent = true, now
		} else if now.Sub(firstEvent) >= maxDebounceDelay {
			return // let the running timer fire
		}
		timer.Reset(s.opts.Debounce)
	}

	var resync <-chan time.Time
	if s.opts.Resync > 0 {
		t := time.NewTicker(s.opts.Resync)
		defer t.Stop()
		resync = t.C
	}
	poll := time.NewTicker(missingDirPoll)
	defer poll.Stop()
	dirWatched := slices.Contains(w.WatchList(), s.opts.Dir)

	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			// Everything in the directory matters (a ConfigMap update is a
			// rename of ..data, not a write to the visible files); in the
			// parent only the directory itself does.
			if ev.Name != s.opts.Dir && filepath.Dir(ev.Name) != s.opts.Dir {
				continue
			}
			if ev.Name == s.opts.Dir {
				dirWatched = s.addWatches(w)
			}
			trigger()
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			// An overflow means events were lost; re-read everything.
			s.log.Warn("watch error", "err", err)
			trigger()
		case <-timer.C:
			pending = false
			if !dirWatched || !slices.Contains(w.WatchList(), s.opts.Dir) {
				dirWatched = s.addWatches(w)
			}
			s.reload()
		case <-poll.C:
			if !slices.Contains(w.WatchList(), s.opts.Dir) {
				if dirWatched = s.addWatches(w); dirWatched {
					trigger()
				}
			}
		case <-resync:
			trigger()
		}
	}
}
