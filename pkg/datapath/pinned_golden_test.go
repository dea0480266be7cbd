package datapath

// The pinned maps' layouts are a contract with every agent already
// running: a new agent adopts what an older one pinned only where the
// layout fingerprint it records matches (Load, reconcilePins). This test
// holds the fingerprints, kinds and default capacities of every pinned map
// of every embedded object to a golden file written from the objects of a
// released agent, so that a change which moves types or renames generated
// Go code but not the maps (a refactoring) is proven not to replace a
// single pin on upgrade. A deliberate layout change updates the file with
// `go test ./pkg/datapath -run TestPinnedLayoutsUnchanged -update-layouts`
// and says in its commit which maps an upgrade replaces.

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
)

var updateLayouts = flag.Bool("update-layouts", false, "rewrite testdata/pinned-layouts.golden from the embedded objects")

const pinnedLayoutsGolden = "testdata/pinned-layouts.golden"

func TestPinnedLayoutsUnchanged(t *testing.T) {
	objects := []struct {
		name string
		load func() (*ebpf.CollectionSpec, error)
	}{
		{"endpoint", bpfobj.LoadEndpoint},
		{"sock", bpfobj.LoadSock},
		{"host", bpfobj.LoadHost},
		{"iter", bpfobj.LoadIter},
	}
	// One line per pinned map: the objects that share it must agree on it.
	lines := map[string]string{}
	users := map[string][]string{}
	for _, o := range objects {
		spec, err := o.load()
		require.NoError(t, err, o.name)
		cfg := Config{}
		require.NoError(t, configureSpec(spec, cfg.withDefaults()), o.name)
		for _, ms := range pinnedMaps(spec) {
			line := fmt.Sprintf("%s %s fingerprint=%016x max=%d", ms.Name, ms.Type, layoutFingerprint(ms), ms.MaxEntries)
			if ms.InnerMap != nil {
				line += fmt.Sprintf(" inner=%s/%d", ms.InnerMap.Type, ms.InnerMap.MaxEntries)
			}
			if prev, ok := lines[ms.Name]; ok {
				require.Equal(t, prev, line, "%s: objects %v and %s pin it with different layouts", ms.Name, users[ms.Name], o.name)
			}
			lines[ms.Name] = line
			users[ms.Name] = append(users[ms.Name], o.name)
		}
	}
	var out []string
	for name, line := range lines {
		out = append(out, line+" objects="+strings.Join(users[name], ","))
	}
	sort.Strings(out)
	got := strings.Join(out, "\n") + "\n"

	if *updateLayouts {
		require.NoError(t, os.MkdirAll(filepath.Dir(pinnedLayoutsGolden), 0o755))
		require.NoError(t, os.WriteFile(pinnedLayoutsGolden, []byte(got), 0o644))
	}
	want, err := os.ReadFile(pinnedLayoutsGolden)
	require.NoError(t, err, "run with -update-layouts to create it")
	require.Equal(t, string(want), got, "a pinned map's layout, kind or default capacity changed: an upgrade would replace it instead of adopting it")
}
