package files

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/model"
)

// exampleObjects is the number of objects in testdata/example.
const exampleObjects = 9

var (
	webPod     = model.NamespacedName{Namespace: "shop", Name: "web-1"}
	migratePod = model.NamespacedName{Namespace: "shop", Name: "migrate-db"}
	webSvc     = model.NamespacedName{Namespace: "shop", Name: "web"}
)

func copyExample(t *testing.T, dir string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	src := filepath.Join("testdata", "example")
	des, err := os.ReadDir(src)
	require.NoError(t, err)
	for _, de := range des {
		data, err := os.ReadFile(filepath.Join(src, de.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, de.Name()), data, 0o644))
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(data), 0o644))
}

// start starts a source and stops it at the end of the test, waiting for the
// watcher so it does not outlive the temp dir.
func start(t *testing.T, opts Options) (*Source, *model.Store) {
	t.Helper()
	if opts.Debounce == 0 {
		opts.Debounce = 20 * time.Millisecond
	}
	s, err := New(opts)
	require.NoError(t, err)
	store := model.NewStore()
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, s.Start(ctx, store))
	t.Cleanup(func() {
		cancel()
		<-s.Done()
	})
	require.True(t, s.Synced())
	return s, store
}

// startManual is start for tests that change several files and then call
// s.reload themselves: the watcher waits an hour, so it never reloads a
// half-changed directory between two of the test's steps (a slow machine
// can leave more than start's 20 ms between two file operations).
func startManual(t *testing.T, opts Options) (*Source, *model.Store) {
	t.Helper()
	opts.Debounce = time.Hour
	return start(t, opts)
}

func manifestErrors(t *testing.T, s *Source) []*ManifestError {
	t.Helper()
	var out []*ManifestError
	for _, err := range s.Errors() {
		var me *ManifestError
		if errors.As(err, &me) {
			out = append(out, me)
		}
	}
	return out
}

func TestSourceInitialLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "manifests")
	copyExample(t, dir)
	s, store := start(t, Options{Dir: dir})

	snap := store.Snapshot()
	assert.Equal(t, exampleObjects, snap.Len())
	assert.Empty(t, s.Errors())
	assert.Equal(t, "shop", snap.NamespaceLabels("shop")["kubernetes.io/metadata.name"],
		"the namespace name label overrides the manifest's value")
	require.Len(t, snap.LocalPods("edge-1"), 1, "succeeded and host-network pods are not endpoints")
	assert.Equal(t, "web-1", snap.LocalPods("edge-1")[0].Name)
	assert.Contains(t, snap.Pods, migratePod)
}

func TestSourceBadFileKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	copyExample(t, dir)
	s, store := startManual(t, Options{Dir: dir})
	pods := filepath.Join(dir, "pods.yaml")
	orig, err := os.ReadFile(pods)
	require.NoError(t, err)

	// Break one document and drop another: the whole file is rejected, so
	// neither edit takes effect.
	bad := strings.Replace(string(orig), "containerPort: 8080", "containerPort: 70000", 1)
	bad = bad[:strings.Index(bad, "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: migrate-db")]
	writeFile(t, pods, bad)
	// A good edit elsewhere still applies.
	writeFile(t, filepath.Join(dir, "extra.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: extra}\n")
	s.reload()

	snap := store.Snapshot()
	assert.Contains(t, snap.Pods, migratePod)
	assert.Equal(t, uint16(8080), snap.Pods[webPod].Ports[0].Port)
	assert.Contains(t, snap.Namespaces, "extra")
	errs := manifestErrors(t, s)
	require.Len(t, errs, 1)
	assert.Equal(t, "pods.yaml: document 1 (Pod shop/web-1): spec.containers[0].ports[0].containerPort: 70000 is out of range 1-65535", errs[0].Error())

	// Fixing the file clears the error and applies the file as it is now.
	fixed := strings.Replace(bad, "containerPort: 70000", "containerPort: 8081", 1)
	writeFile(t, pods, fixed)
	s.reload()
	snap = store.Snapshot()
	assert.Empty(t, s.Errors())
	assert.NotContains(t, snap.Pods, migratePod)
	assert.Equal(t, uint16(8081), snap.Pods[webPod].Ports[0].Port)
}

func TestSourceFileDeletedPrunes(t *testing.T) {
	dir := t.TempDir()
	copyExample(t, dir)
	s, store := startManual(t, Options{Dir: dir})
	rev := store.Revision()

	// A bad file that is then removed takes its error with it.
	writeFile(t, filepath.Join(dir, "bad.yaml"), "kind: Pod\n")
	s.reload()
	require.Len(t, s.Errors(), 1)

	require.NoError(t, os.Remove(filepath.Join(dir, "services.yaml")))
	require.NoError(t, os.Remove(filepath.Join(dir, "bad.yaml")))
	s.reload()
	snap := store.Snapshot()
	assert.NotContains(t, snap.Services, webSvc)
	assert.Empty(t, snap.EndpointSlices)
	assert.Equal(t, exampleObjects-2, snap.Len())
	assert.Equal(t, rev+1, snap.Revision, "one reload is one store update")
	assert.Empty(t, s.Errors())
}

func TestSourceEmptyOrMissingDirPrunesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "manifests")
	copyExample(t, dir)
	s, store := startManual(t, Options{Dir: dir})
	rev := store.Revision()

	for _, name := range []string{"namespaces.yaml", "node.yaml", "pods.yaml", "policy.json", "services.yaml"} {
		require.NoError(t, os.Remove(filepath.Join(dir, name)))
	}
	s.reload()
	assert.Equal(t, exampleObjects, store.Snapshot().Len())
	assert.Equal(t, rev, store.Revision())
	errs := s.Errors()
	require.Len(t, errs, 1)
	assert.Equal(t, "manifest directory "+dir+" is empty or missing; keeping last good state of 9 objects", errs[0].Error())

	require.NoError(t, os.RemoveAll(dir))
	s.reload()
	assert.Equal(t, exampleObjects, store.Snapshot().Len())
	require.Len(t, s.Errors(), 1)

	// Files coming back is a normal reload; the warning goes away.
	copyExample(t, dir)
	s.reload()
	assert.Empty(t, s.Errors())
	assert.Equal(t, rev, store.Revision())
}

func TestSourceDuplicateAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	copyExample(t, dir)
	s, store := startManual(t, Options{Dir: dir})

	// Moving web-1 to another file: adding it there first is rejected
	// (naming both places) and the new file is held back as a whole...
	moved := `apiVersion: v1
kind: Namespace
metadata: {name: moved}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web, moved: "true"}}
spec: {nodeName: edge-1, containers: [{name: web, image: nginx}]}
status: {phase: Running, podIP: 10.244.0.11}
`
	writeFile(t, filepath.Join(dir, "a-moved.yaml"), moved)
	s.reload()
	errs := manifestErrors(t, s)
	require.Len(t, errs, 1)
	assert.Equal(t, "a-moved.yaml: document 2 (Pod shop/web-1): duplicate object: also defined in pods.yaml document 1", errs[0].Error())
	assert.ErrorIs(t, errs[0], ErrDuplicate)
	snap := store.Snapshot()
	assert.NotContains(t, snap.Namespaces, "moved")
	assert.Empty(t, snap.Pods[webPod].Labels["moved"])

	// ...and accepted once the old definition is gone.
	pods := filepath.Join(dir, "pods.yaml")
	orig, err := os.ReadFile(pods)
	require.NoError(t, err)
	rest := string(orig)[strings.Index(string(orig), "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: migrate-db"):]
	writeFile(t, pods, rest)
	s.reload()
	assert.Empty(t, s.Errors())
	snap = store.Snapshot()
	assert.Contains(t, snap.Namespaces, "moved")
	assert.Equal(t, "true", snap.Pods[webPod].Labels["moved"])
}

func TestSourceRestartFromSavedState(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "manifests")
	statePath := filepath.Join(tmp, "state", "model.json")
	copyExample(t, dir)

	ctx, cancel := context.WithCancel(context.Background())
	first, err := New(Options{Dir: dir, StatePath: statePath})
	require.NoError(t, err)
	require.NoError(t, first.Start(ctx, model.NewStore()))
	cancel()
	<-first.Done()
	fi, err := os.Stat(statePath)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode(), "the node's whole configuration: root's only")

	t.Run("bad file uses its saved objects", func(t *testing.T) {
		writeFile(t, filepath.Join(dir, "pods.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {bogus: 1}\n")
		s, store := start(t, Options{Dir: dir, StatePath: statePath})
		snap := store.Snapshot()
		assert.Equal(t, exampleObjects, snap.Len())
		assert.Contains(t, snap.Pods, webPod)
		errs := manifestErrors(t, s)
		require.Len(t, errs, 1)
		assert.Equal(t, `pods.yaml: document 1 (Pod default/x): unknown field "spec.bogus"`, errs[0].Error())
	})

	t.Run("missing dir uses the whole saved state", func(t *testing.T) {
		require.NoError(t, os.RemoveAll(dir))
		s, store := start(t, Options{Dir: dir, StatePath: statePath})
		assert.Equal(t, exampleObjects, store.Snapshot().Len())
		require.Len(t, s.Errors(), 1)
		assert.Contains(t, s.Errors()[0].Error(), "is empty or missing; keeping last good state of 9 objects")
	})

	t.Run("corrupt saved state is reported and ignored", func(t *testing.T) {
		copyExample(t, dir)
		writeFile(t, statePath, "{not json")
		s, store := start(t, Options{Dir: dir, StatePath: statePath})
		assert.Equal(t, exampleObjects, store.Snapshot().Len())
		errs := s.Errors()
		require.Len(t, errs, 1)
		assert.Contains(t, errs[0].Error(), "ignoring saved state "+statePath)
		assert.FileExists(t, statePath+".corrupt")
		// A good state is written in its place (by the saver, beside the
		// watcher).
		require.Eventually(t, func() bool {
			data, err := os.ReadFile(statePath)
			return err == nil && strings.Contains(string(data), `"web-1"`)
		}, 5*time.Second, 10*time.Millisecond)
	})
}

func TestSourceWatch(t *testing.T) {
	dir := t.TempDir()
	_, store := start(t, Options{Dir: dir})
	const wait, tick = 10 * time.Second, 10 * time.Millisecond
	has := func(name string) func() bool {
		return func() bool { _, ok := store.Snapshot().Namespaces[name]; return ok }
	}

	// create
	writeFile(t, filepath.Join(dir, "ns.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n")
	require.Eventually(t, has("one"), wait, tick)

	// modify
	writeFile(t, filepath.Join(dir, "ns.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: one, labels: {a: b}}\n")
	require.Eventually(t, func() bool { return store.Snapshot().NamespaceLabels("one")["a"] == "b" }, wait, tick)

	// rename over (how editors and atomic writers save)
	tmp := filepath.Join(dir, ".ns.yaml.swp")
	writeFile(t, tmp, "apiVersion: v1\nkind: Namespace\nmetadata: {name: two}\n")
	require.NoError(t, os.Rename(tmp, filepath.Join(dir, "ns.yaml")))
	require.Eventually(t, func() bool { return has("two")() && !has("one")() }, wait, tick)

	// delete (another file remains, so this is a real removal)
	writeFile(t, filepath.Join(dir, "keep.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: keep}\n")
	require.Eventually(t, has("keep"), wait, tick)
	require.NoError(t, os.Remove(filepath.Join(dir, "ns.yaml")))
	require.Eventually(t, func() bool { return !has("two")() }, wait, tick)
}

func TestSourceWatchDirCreatedLater(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "later")
	s, store := start(t, Options{Dir: dir})
	require.Len(t, s.Errors(), 1)

	require.NoError(t, os.Mkdir(dir, 0o755))
	writeFile(t, filepath.Join(dir, "ns.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: late}\n")
	require.Eventually(t, func() bool {
		_, ok := store.Snapshot().Namespaces["late"]
		return ok && len(s.Errors()) == 0
	}, 10*time.Second, 10*time.Millisecond)

	// Removing and recreating the directory is followed too.
	require.NoError(t, os.RemoveAll(dir))
	require.NoError(t, os.Mkdir(dir, 0o755))
	writeFile(t, filepath.Join(dir, "ns.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: again}\n")
	require.Eventually(t, func() bool {
		_, ok := store.Snapshot().Namespaces["again"]
		return ok
	}, 10*time.Second, 10*time.Millisecond)
}

// TestSourceWatchConfigMapSwap mimics how the kubelet updates a ConfigMap
// volume: the visible files are symlinks through ..data, and an update
// atomically repoints ..data at a new timestamped directory.
func TestSourceWatchConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	v1 := filepath.Join(dir, "..2024_01_01_00_00_00.1")
	require.NoError(t, os.Mkdir(v1, 0o755))
	writeFile(t, filepath.Join(v1, "ns.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: v1}\n")
	require.NoError(t, os.Symlink(filepath.Base(v1), filepath.Join(dir, "..data")))
	require.NoError(t, os.Symlink(filepath.Join("..data", "ns.yaml"), filepath.Join(dir, "ns.yaml")))

	s, store := start(t, Options{Dir: dir})
	require.Contains(t, store.Snapshot().Namespaces, "v1")
	require.Empty(t, s.Errors(), "links through ..data stay in the directory")

	v2 := filepath.Join(dir, "..2024_01_01_00_00_01.2")
	require.NoError(t, os.Mkdir(v2, 0o755))
	writeFile(t, filepath.Join(v2, "ns.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: v2}\n")
	require.NoError(t, os.Symlink(filepath.Base(v2), filepath.Join(dir, "..data_tmp")))
	require.NoError(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	require.NoError(t, os.RemoveAll(v1))

	require.Eventually(t, func() bool {
		ns := store.Snapshot().Namespaces
		_, ok2 := ns["v2"]
		_, ok1 := ns["v1"]
		return ok2 && !ok1 && len(s.Errors()) == 0
	}, 10*time.Second, 10*time.Millisecond)
}

// A symlink may point anywhere in the manifest directory, but not out of
// it: the agent runs as root, and a manifest error quotes what it read, so
// a link to /etc/shadow would otherwise show its lines in `sluice status`.
// A refused file keeps its last good objects, like a file that does not
// parse, and the rest of the directory keeps working.
func TestSourceRefusesSymlinksOutOfTheDirectory(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "manifests")
	copyExample(t, dir)
	outside := filepath.Join(tmp, "outside")
	require.NoError(t, os.Mkdir(outside, 0o755))
	writeFile(t, filepath.Join(outside, "ns.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: outside}\n")
	s, store := startManual(t, Options{Dir: dir})

	// Links within the directory work, relative or absolute, to a file in
	// a subdirectory too.
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	writeFile(t, filepath.Join(dir, "sub", "a.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: linked-a}\n")
	writeFile(t, filepath.Join(dir, "sub", "b.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: linked-b}\n")
	require.NoError(t, os.Symlink("sub/a.yaml", filepath.Join(dir, "a.yaml")))
	require.NoError(t, os.Symlink(filepath.Join(dir, "sub", "b.yaml"), filepath.Join(dir, "b.yaml")))
	// Out of it: a new file, and one that replaces pods.yaml.
	require.NoError(t, os.Symlink("../outside/ns.yaml", filepath.Join(dir, "new.yaml")))
	require.NoError(t, os.Remove(filepath.Join(dir, "pods.yaml")))
	require.NoError(t, os.Symlink(filepath.Join(outside, "ns.yaml"), filepath.Join(dir, "pods.yaml")))
	s.reload()

	snap := store.Snapshot()
	assert.Contains(t, snap.Namespaces, "linked-a")
	assert.Contains(t, snap.Namespaces, "linked-b")
	assert.NotContains(t, snap.Namespaces, "outside")
	assert.Contains(t, snap.Pods, webPod, "pods.yaml's last good objects stay in force")
	assert.Equal(t, exampleObjects+2, snap.Len())
	errs := manifestErrors(t, s)
	require.Len(t, errs, 2)
	target, err := filepath.EvalSymlinks(filepath.Join(outside, "ns.yaml"))
	require.NoError(t, err)
	assert.Equal(t, "new.yaml: a symlink to "+target+", outside the manifest directory "+dir+": refused", errs[0].Error())
	assert.Equal(t, "pods.yaml: a symlink to "+target+", outside the manifest directory "+dir+": refused", errs[1].Error())

	// The manifest directory may itself be a link (its real path is what
	// links must stay in).
	link := filepath.Join(tmp, "link")
	require.NoError(t, os.Symlink(dir, link))
	s2, store2 := start(t, Options{Dir: link})
	assert.Contains(t, store2.Snapshot().Namespaces, "linked-a")
	assert.NotContains(t, store2.Snapshot().Namespaces, "outside")
	assert.Len(t, manifestErrors(t, s2), 2)
}

// A file over the size limit is refused without being read (a manifest
// directory on a shared volume must not be able to take the agent's
// memory), with its last good objects kept.
func TestSourceRefusesFilesOverTheSizeLimit(t *testing.T) {
	dir := t.TempDir()
	copyExample(t, dir)
	const limit = 4096
	s, store := startManual(t, Options{Dir: dir, MaxBytes: limit})
	require.Empty(t, s.Errors(), "the example's files are under 4 KiB")

	pods := filepath.Join(dir, "pods.yaml")
	orig, err := os.ReadFile(pods)
	require.NoError(t, err)
	big := strings.Replace(string(orig), "containerPort: 8080", "containerPort: 8081", 1) + "# " + strings.Repeat("x", limit) + "\n"
	writeFile(t, pods, big)
	writeFile(t, filepath.Join(dir, "extra.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: extra}\n")
	s.reload()

	snap := store.Snapshot()
	assert.Equal(t, uint16(8080), snap.Pods[webPod].Ports[0].Port, "pods.yaml's last good objects stay in force")
	assert.Contains(t, snap.Namespaces, "extra", "the rest of the directory keeps working")
	errs := manifestErrors(t, s)
	require.Len(t, errs, 1)
	assert.Equal(t, fmt.Sprintf("pods.yaml: %d bytes, more than the limit of %d (--manifest-max-bytes): refused", len(big), limit), errs[0].Error())

	// 64 GiB (sparse): refused at once, never read.
	require.NoError(t, os.Truncate(pods, 64<<30))
	s.reload()
	errs = manifestErrors(t, s)
	require.Len(t, errs, 1)
	assert.Equal(t, fmt.Sprintf("pods.yaml: %d bytes, more than the limit of %d (--manifest-max-bytes): refused", 64<<30, limit), errs[0].Error())
	assert.Contains(t, store.Snapshot().Pods, webPod)

	// Back under the limit, it applies.
	writeFile(t, pods, strings.Replace(string(orig), "containerPort: 8080", "containerPort: 8081", 1))
	s.reload()
	assert.Empty(t, s.Errors())
	assert.Equal(t, uint16(8081), store.Snapshot().Pods[webPod].Ports[0].Port)
}

// TestSourceReloadDecodesOnlyChangedFiles: a reload (an edit elsewhere,
// the periodic resync) decodes a file again only when its contents
// changed, and a file that is still broken keeps its error.
func TestSourceReloadDecodesOnlyChangedFiles(t *testing.T) {
	dir := t.TempDir()
	copyExample(t, dir)
	writeFile(t, filepath.Join(dir, "broken.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {bogus: 1}\n")
	// No reloads but ours: no resync, and edits wait an hour.
	s, err := New(Options{Dir: dir, Resync: -1, Debounce: time.Hour})
	require.NoError(t, err)
	decoded := map[string]int{} // written under reloadMu, read between reloads
	s.parseFile = func(name string, data []byte, isJSON bool) ([]entry, error) {
		decoded[name]++
		return parseFile(name, data, isJSON)
	}
	store := model.NewStore()
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); <-s.Done() }()
	require.NoError(t, s.Start(ctx, store))
	require.Equal(t, map[string]int{"namespaces.yaml": 1, "node.yaml": 1, "pods.yaml": 1, "policy.json": 1, "services.yaml": 1, "broken.yaml": 1}, decoded)
	require.Len(t, manifestErrors(t, s), 1)

	s.reload()
	assert.Equal(t, map[string]int{"namespaces.yaml": 1, "node.yaml": 1, "pods.yaml": 1, "policy.json": 1, "services.yaml": 1, "broken.yaml": 1}, decoded,
		"nothing changed: nothing decoded again")
	errs := manifestErrors(t, s)
	require.Len(t, errs, 1)
	assert.Equal(t, `broken.yaml: document 1 (Pod default/x): unknown field "spec.bogus"`, errs[0].Error())
	assert.Equal(t, exampleObjects, store.Snapshot().Len())

	// The same size, other contents: decoded again.
	data, err := os.ReadFile(filepath.Join(dir, "node.yaml"))
	require.NoError(t, err)
	writeFile(t, filepath.Join(dir, "node.yaml"), strings.Replace(string(data), "edge-1", "edge-2", 1))
	s.reload()
	assert.Equal(t, 2, decoded["node.yaml"])
	assert.Equal(t, 1, decoded["pods.yaml"])
	assert.Contains(t, store.Snapshot().Nodes, "edge-2")

	// Fixed: decoded again, error gone.
	require.NoError(t, os.Remove(filepath.Join(dir, "broken.yaml")))
	writeFile(t, filepath.Join(dir, "broken.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n")
	s.reload()
	assert.Equal(t, 2, decoded["broken.yaml"])
	assert.Empty(t, manifestErrors(t, s))
}
