package datapath

// Layout fingerprints in sl_layout: what makes an agent replace a pinned
// map instead of adopting it, and what the CLI checks before it reads one.

import (
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
)

// legacyFingerprint is layoutFingerprint as agents before inner maps were
// fingerprinted computed it (key and value of the map itself only), kept
// here frozen: an upgrade from such an agent with the same flags must
// adopt every map whose layout did not change.
func legacyFingerprint(ms *ebpf.MapSpec) uint64 {
	var b strings.Builder
	fmt.Fprintf(&b, "%s/%d/%d/%d|", ms.Type, ms.KeySize, ms.ValueSize, ms.Flags)
	describeType(&b, ms.Key, 0)
	b.WriteString("|")
	describeType(&b, ms.Value, 0)
	h := fnv.New64a()
	h.Write([]byte(b.String()))
	return h.Sum64()
}

func configuredSpec(t *testing.T, cfg Config) *ebpf.CollectionSpec {
	t.Helper()
	spec, err := bpfobj.LoadEndpoint()
	require.NoError(t, err)
	require.NoError(t, configureSpec(spec, cfg.withDefaults()))
	return spec
}

// mapsOfMaps are the pinned maps with inner maps.
var mapsOfMaps = []string{bpfobj.EndpointMapSlLbMaglev, bpfobj.EndpointMapSlPolicy, bpfobj.EndpointMapSlPolicyCidr}

func TestLayoutFingerprint(t *testing.T) {
	spec := configuredSpec(t, Config{})
	var inner []string
	for _, ms := range pinnedMaps(spec) {
		if ms.InnerMap == nil {
			require.Equal(t, legacyFingerprint(ms), layoutFingerprint(ms), "%s: unchanged layout, unchanged fingerprint", ms.Name)
			continue
		}
		inner = append(inner, ms.Name)
		require.NotEqual(t, legacyFingerprint(ms), layoutFingerprint(ms), "%s: its fingerprint now covers its inner map", ms.Name)
		require.Less(t, len(capacityName(ms.Name)), len(bpfobj.EndpointSlLayoutKey{}.Name), "%s: its capacity record fits an sl_layout key", ms.Name)
	}
	sort.Strings(inner)
	require.Equal(t, mapsOfMaps, inner)

	// What changes how bytes are read changes the fingerprint; capacity,
	// which is configuration, does not.
	maglev := spec.Maps[bpfobj.EndpointMapSlLbMaglev]
	base := layoutFingerprint(maglev)
	for name, change := range map[string]func(ms *ebpf.MapSpec){
		"inner type":       func(ms *ebpf.MapSpec) { ms.InnerMap.Type = ebpf.Hash },
		"inner key size":   func(ms *ebpf.MapSpec) { ms.InnerMap.KeySize = 8 },
		"inner value size": func(ms *ebpf.MapSpec) { ms.InnerMap.ValueSize = 8 },
		"inner flags":      func(ms *ebpf.MapSpec) { ms.InnerMap.Flags = 1 },
		"inner value type": func(ms *ebpf.MapSpec) { ms.InnerMap.Value = spec.Maps[bpfobj.EndpointMapSlLbSvc].Value },
		"outer type":       func(ms *ebpf.MapSpec) { ms.Type = ebpf.ArrayOfMaps },
	} {
		ms := maglev.Copy()
		change(ms)
		require.NotEqual(t, base, layoutFingerprint(ms), name)
	}
	ms := maglev.Copy()
	ms.MaxEntries, ms.InnerMap.MaxEntries = 1, 2
	require.Equal(t, base, layoutFingerprint(ms), "capacities are not layout")

	// A change of map kind alone (sl_nat from LRU hash to hash) is caught.
	nat := spec.Maps[bpfobj.EndpointMapSlNat].Copy()
	require.Equal(t, ebpf.Hash, nat.Type)
	before := layoutFingerprint(nat)
	nat.Type = ebpf.LRUHash
	require.NotEqual(t, before, layoutFingerprint(nat))
}

// An agent started with another --maglev-table-size or --policy-map-max
// replaces the maps of maps whose inner maps changed size, and only those;
// one whose inner capacity was never recorded is replaced too.
func TestInnerCapacityChangeReplaces(t *testing.T) {
	root := testRoot(t)
	load := func(cfg Config) *Datapath {
		t.Helper()
		cfg.BPFRoot = root
		dp, err := Load(cfg, nil)
		require.NoError(t, err)
		return dp
	}
	dp := load(Config{MaglevTableSize: 251, PolicyMapMax: 64})
	require.NoError(t, dp.Maps().PutEndpoint(EndpointEntry{IfIndex: 5, ID: 3, IPv4: podIP}))
	dp.Close()

	dp = load(Config{MaglevTableSize: 509, PolicyMapMax: 64})
	require.Equal(t, []string{"sl_lb_maglev: replaced (inner maps of 251 entries, this agent's hold 509)"}, dp.Replaced)
	table := make([]uint32, 509)
	require.NoError(t, dp.Maps().writeMaglev(1, table), "tables of the new size go into the replacement")
	eps, err := dp.Maps().ListEndpoints()
	require.NoError(t, err)
	require.Len(t, eps, 1, "other maps are adopted")
	dp.Close()

	dp = load(Config{MaglevTableSize: 509, PolicyMapMax: 128})
	require.Equal(t, []string{
		"sl_policy: replaced (inner maps of 64 entries, this agent's hold 128)",
		"sl_policy_cidr: replaced (inner maps of 64 entries, this agent's hold 128)",
	}, sortedCopy(dp.Replaced))
	ck := layoutKey(capacityName(bpfobj.EndpointMapSlLbMaglev))
	require.NoError(t, dp.objs.SlLayout.Delete(&ck))
	dp.Close()

	dp = load(Config{MaglevTableSize: 509, PolicyMapMax: 128})
	defer dp.Close()
	require.Equal(t, []string{"sl_lb_maglev: replaced (no inner map capacity recorded)"}, dp.Replaced)
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// An upgrade from an agent that fingerprinted maps without their inner
// maps, with the same flags: every map is adopted with its entries, except
// the three maps of maps, replaced once (their old fingerprints say nothing
// of their inner maps; the reconcilers refill them on their first pass).
// The next start adopts everything.
func TestUpgradeAdoptsUnchangedLayouts(t *testing.T) {
	root := testRoot(t)
	dp, err := Load(Config{BPFRoot: root}, nil)
	require.NoError(t, err)
	m := dp.Maps()
	require.NoError(t, m.PutEndpoint(EndpointEntry{IfIndex: 5, ID: 3, IPv4: podIP}))
	ctKey := bpfobj.EndpointSlCtKey{EpId: 3, Family: 2, Proto: 6, Sport: 7}
	require.NoError(t, dp.objs.SlCt.Put(&ctKey, &bpfobj.EndpointSlCtEntry{Expires: ^uint64(0) >> 1, State: 3}))
	require.NoError(t, m.WriteEndpointPolicy(3, EndpointPolicy{Entries: []PolicyEntry{{Identity: IdentityHost, Dir: 1, Verdict: VerdictAllow}}}))

	// Make sl_layout what the older agent left: legacy fingerprints, no
	// capacity records.
	spec := configuredSpec(t, Config{})
	for _, ms := range pinnedMaps(spec) {
		k := layoutKey(ms.Name)
		require.NoError(t, dp.objs.SlLayout.Put(&k, legacyFingerprint(ms)))
		if ms.InnerMap != nil {
			ck := layoutKey(capacityName(ms.Name))
			require.NoError(t, dp.objs.SlLayout.Delete(&ck))
		}
	}
	dp.Close()

	dp, err = Load(Config{BPFRoot: root}, nil)
	require.NoError(t, err)
	var replaced []string
	for _, r := range dp.Replaced {
		name, why, _ := strings.Cut(r, ": ")
		replaced = append(replaced, name)
		require.Contains(t, why, "replaced (type, key/value or inner map layout changed", r)
	}
	sort.Strings(replaced)
	require.Equal(t, mapsOfMaps, replaced)
	var ct bpfobj.EndpointSlCtEntry
	require.NoError(t, dp.objs.SlCt.Lookup(&ctKey, &ct), "conntrack adopted with its entries")
	eps, err := dp.Maps().ListEndpoints()
	require.NoError(t, err)
	require.Len(t, eps, 1, "endpoints adopted with their entries")
	ids, err := dp.Maps().PolicyEndpoints()
	require.NoError(t, err)
	require.Empty(t, ids, "sl_policy starts over, for the policy reconciler to fill")
	dp.Close()

	dp, err = Load(Config{BPFRoot: root}, nil)
	require.NoError(t, err)
	defer dp.Close()
	require.True(t, dp.Adopted)
	require.Empty(t, dp.Replaced, "the same agent again adopts every pin")
}

// An agent from before SNAT ports were released pinned sl_nat as an LRU
// hash: the upgrade copies its mappings into the plain hash, so external
// connections through a remote backend keep working across it.
func TestNATMapKindChangeMigrates(t *testing.T) {
	root := testRoot(t)
	dp, err := Load(Config{BPFRoot: root}, nil)
	require.NoError(t, err)
	dp.Close()

	// Replace the pin with what the older agent left: an LRU hash with a
	// mapping, and its fingerprint.
	spec := configuredSpec(t, Config{})
	old := spec.Maps[bpfobj.EndpointMapSlNat].Copy()
	old.Type = ebpf.LRUHash
	old.Pinning = ebpf.PinNone
	lru, err := ebpf.NewMap(old)
	require.NoError(t, err)
	k := bpfobj.EndpointSlNatKey{Port: 0x4242, Proto: 6}
	require.NoError(t, lru.Put(&k, &bpfobj.EndpointSlNatVal{ClientPort: 0x1234}))
	path := filepath.Join(root, bpfobj.EndpointMapSlNat)
	require.NoError(t, os.Remove(path))
	require.NoError(t, lru.Pin(path))
	lru.Close()
	layouts, err := ebpf.LoadPinnedMap(filepath.Join(root, bpfobj.EndpointMapSlLayout), nil)
	require.NoError(t, err)
	lk := layoutKey(bpfobj.EndpointMapSlNat)
	require.NoError(t, layouts.Put(&lk, layoutFingerprint(old)))
	layouts.Close()

	dp, err = Load(Config{BPFRoot: root}, nil)
	require.NoError(t, err)
	defer dp.Close()
	require.Len(t, dp.Replaced, 1)
	require.Contains(t, dp.Replaced[0], "sl_nat: migrated", "migrated, not replaced")
	require.Equal(t, ebpf.Hash, dp.objs.SlNat.Type())
	var v bpfobj.EndpointSlNatVal
	require.NoError(t, dp.objs.SlNat.Lookup(&k, &v), "the mapping survives the upgrade")
	require.Equal(t, uint16(0x1234), v.ClientPort)
}
