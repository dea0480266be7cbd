package datapath

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
)

// Datapath is the loaded programs and pinned maps of one agent. It owns the
// file descriptors; Close releases them and leaves the pins (and therefore
// the running datapath) in place.
type Datapath struct {
	cfg Config
	// maglevInner creates Maglev tables of the configured size.
	maglevInner *ebpf.MapSpec
	// policyInner and cidrInner create endpoint policy maps.
	policyInner, cidrInner *ebpf.MapSpec
	// epMu serialises read-modify-writes of sl_endpoints entries.
	epMu sync.Mutex
	objs bpfobj.EndpointObjects
	sock bpfobj.SockObjects
	host bpfobj.HostObjects
	iter bpfobj.IterObjects
	// iterErr says why the socket iterator could not load (kernel without
	// bpf_sock_destroy or BTF); socket destruction is then unavailable.
	iterErr error
	log     *slog.Logger
	// Adopted is true when pinned maps from an earlier agent were reused.
	Adopted bool
	// Replaced names maps that were replaced or migrated at load, with why.
	Replaced []string
}

// Load loads the programs and adopts or creates the pinned maps under
// cfg.BPFRoot. The caller must hold the root's lock (LockRoot).
func Load(cfg Config, log *slog.Logger) (*Datapath, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.BPFRoot, 0o700); err != nil {
		return nil, fmt.Errorf("create bpf root %s: %w", cfg.BPFRoot, err)
	}
	if err := checkBPFFS(cfg.BPFRoot); err != nil {
		return nil, err
	}
	spec, err := bpfobj.LoadEndpoint()
	if err != nil {
		return nil, fmt.Errorf("parse embedded eBPF object: %w", err)
	}
	if err := configureSpec(spec, cfg); err != nil {
		return nil, err
	}

	dp := &Datapath{cfg: cfg, log: log, maglevInner: spec.Maps[bpfobj.EndpointMapSlLbMaglev].InnerMap.Copy(),
		policyInner: spec.Maps[bpfobj.EndpointMapSlPolicy].InnerMap.Copy(),
		cidrInner:   spec.Maps[bpfobj.EndpointMapSlPolicyCidr].InnerMap.Copy()}
	if err := dp.reconcilePins(spec); err != nil {
		return nil, err
	}

	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: cfg.BPFRoot}}
	if err := spec.LoadAndAssign(&dp.objs, opts); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			// The whole log: the tail alone rarely shows why.
			return nil, fmt.Errorf("load eBPF programs: %+v", verr)
		}
		return nil, fmt.Errorf("load eBPF programs: %w", err)
	}
	if err := dp.writeLayouts(spec); err != nil {
		dp.objs.Close()
		return nil, err
	}

	// The other objects share the maps just adopted or created, by pin.
	if err := loadShared(bpfobj.LoadSock, cfg, opts, &dp.sock); err != nil {
		dp.objs.Close()
		return nil, loadErr("socket-LB programs", err)
	}
	if err := loadShared(bpfobj.LoadHost, cfg, opts, &dp.host); err != nil {
		dp.objs.Close()
		dp.sock.Close()
		return nil, loadErr("uplink programs", err)
	}
	// Optional: kernels before 6.5 lack bpf_sock_destroy.
	if err := loadShared(bpfobj.LoadIter, cfg, opts, &dp.iter); err != nil {
		dp.iterErr = loadErr("socket iterator (bpf_sock_destroy, Linux 6.5+)", err)
		dp.log.Info("socket iterator unavailable: connected UDP sockets of removed backends are destroyed through sock_diag instead", "error", dp.iterErr)
	}
	return dp, nil
}

// loadShared loads one more embedded object, configured like the first,
// into dst; its maps resolve to the pins the first load adopted or made.
func loadShared(load func() (*ebpf.CollectionSpec, error), cfg Config, opts *ebpf.CollectionOptions, dst any) error {
	spec, err := load()
	if err != nil {
		return fmt.Errorf("parse embedded object: %w", err)
	}
	if err := configureSpec(spec, cfg); err != nil {
		return err
	}
	return spec.LoadAndAssign(dst, opts)
}

// loadErr prints a verifier log whole: its tail alone rarely shows why.
func loadErr(what string, err error) error {
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		return fmt.Errorf("load %s: %+v", what, verr)
	}
	return fmt.Errorf("load %s: %w", what, err)
}

// checkBPFFS refuses a root that is not on bpffs: pins elsewhere fail
// late and confusingly.
func checkBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("bpf root %s is not on a bpf filesystem: mount one with `mount -t bpf bpf %s` or choose --bpf-root under a bpffs mount", dir, filepath.Dir(dir))
	}
	return nil
}

func configureSpec(spec *ebpf.CollectionSpec, cfg Config) error {
	sizes := map[string]uint32{
		bpfobj.EndpointMapSlCt:         cfg.CTMax,
		bpfobj.EndpointMapSlEndpoints:  cfg.EndpointsMax,
		bpfobj.EndpointMapSlFrag:       cfg.FragMax,
		bpfobj.EndpointMapSlFrag6:      cfg.FragMax,
		bpfobj.EndpointMapSlEvents:     cfg.EventsBufBytes,
		bpfobj.EndpointMapSlLbSvc:      cfg.LBMax,
		bpfobj.EndpointMapSlLbBackends: cfg.LBBackendsMax,
		bpfobj.EndpointMapSlLbRevnat:   cfg.LBBackendsMax,
		bpfobj.EndpointMapSlLbAffinity: cfg.LBBackendsMax,
		bpfobj.EndpointMapSlLbSock:     cfg.LBBackendsMax,
		bpfobj.EndpointMapSlLbSrcRange: cfg.LBBackendsMax,
		bpfobj.EndpointMapSlIpcache:    cfg.IPCacheMax,
		bpfobj.EndpointMapSlPolicy:     cfg.EndpointsMax,
		bpfobj.EndpointMapSlPolicyCidr: cfg.EndpointsMax,
	}
	for name, n := range sizes {
		spec.Maps[name].MaxEntries = n
	}
	spec.Maps[bpfobj.EndpointMapSlLbMaglev].MaxEntries = cfg.MaglevMax
	spec.Maps[bpfobj.EndpointMapSlLbMaglev].InnerMap.MaxEntries = cfg.MaglevTableSize
	spec.Maps[bpfobj.EndpointMapSlPolicy].InnerMap.MaxEntries = cfg.PolicyMapMax
	spec.Maps[bpfobj.EndpointMapSlPolicyCidr].InnerMap.MaxEntries = cfg.PolicyMapMax
	antispoof := uint8(1)
	if cfg.DisableAntispoof {
		antispoof = 0
	}
	mode := uint8(bpfobj.EndpointSlSockLbModeSL_SOCK_LB_ALL)
	if cfg.SockLB == SockLBHostOnly {
		mode = uint8(bpfobj.EndpointSlSockLbModeSL_SOCK_LB_HOSTNS_ONLY)
	}
	level, err := cfg.FlowEvents.level()
	if err != nil {
		return err
	}
	vars := map[string]any{
		bpfobj.EndpointVarFlowEvents:       uint8(level),
		"sock_lb_mode":                     mode,
		"host_netns_cookie":                cfg.HostNetnsCookie,
		"have_set_retval":                  boolByte(ProbeSetRetval() && !cfg.NoSetRetval),
		"maglev_size":                      cfg.MaglevTableSize,
		"events_ring_size":                 uint64(cfg.EventsBufBytes),
		bpfobj.EndpointVarCtTimeoutSynNs:   uint64(cfg.CTTimeoutSYN.Nanoseconds()),
		bpfobj.EndpointVarCtTimeoutTcpNs:   uint64(cfg.CTTimeoutTCP.Nanoseconds()),
		bpfobj.EndpointVarCtTimeoutCloseNs: uint64(cfg.CTTimeoutClose.Nanoseconds()),
		bpfobj.EndpointVarCtTimeoutOtherNs: uint64(cfg.CTTimeoutOther.Nanoseconds()),
		bpfobj.EndpointVarEnableAntispoof:  antispoof,
		"enable_policy_revoke":             boolByte(!cfg.DisablePolicyRevoke),
		"enable_host_routing":              boolByte(!cfg.KernelHostRouting),
		"drop_event_interval_ns":           uint64(max(cfg.DropEventInterval, 0).Nanoseconds()),
		bpfobj.EndpointVarSnatPortMin:      cfg.SNATPortMin,
		bpfobj.EndpointVarSnatPortMax:      cfg.SNATPortMax,
	}
	for name, v := range vars {
		vs, ok := spec.Variables[name]
		if !ok {
			continue // not used by this object
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	return nil
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// pinnedMaps lists the spec's maps that are pinned by name.
func pinnedMaps(spec *ebpf.CollectionSpec) []*ebpf.MapSpec {
	var out []*ebpf.MapSpec
	for _, m := range spec.Maps {
		if m.Pinning == ebpf.PinByName {
			out = append(out, m)
		}
	}
	return out
}

// reconcilePins makes every existing pin loadable by the spec before
// LoadAndAssign runs: compatible pins stay, resized hash maps are migrated,
// anything else is unpinned so a fresh map takes its place.
//
// A map of maps is replaced when its inner maps changed, in layout or in
// capacity (--maglev-table-size, --policy-map-max): the kernel fixes the
// inner map template when the outer map is created, refuses inner maps
// that do not match it (Maglev tables of another size), and the old inner
// maps would not fit the new programs anyway (maglev_size indexes them).
// The replacement starts empty; the reconcilers fill it on their first
// pass, which rewrites every Maglev table (a dump never reads tables back)
// and every endpoint's policy maps (Prepare, on every endpoint an agent
// adopts).
//
// Replacing a pin does not pull a map from under running programs: the
// previous agent's programs, attached through pinned tcx or cgroup links
// or tc filters, hold their own references to the maps they were loaded
// with and keep using them (the old outer map and its inner tables, which
// match the constants those programs were loaded with) until the new agent
// swaps the program on each hook (Attacher.Attach, AttachUplink,
// AttachSockLB update the link or replace the filter in place). The agent
// swaps only after the new map is filled for that hook: the LB
// reconciler's first pass runs before any program is swapped, and the
// endpoint manager writes an endpoint's policy maps (Prepare) before it
// attaches that endpoint's programs. So no packet meets an empty
// replacement; the old maps are freed with the last program using them.
func (dp *Datapath) reconcilePins(spec *ebpf.CollectionSpec) error {
	layouts := dp.readLayouts()
	for _, ms := range pinnedMaps(spec) {
		path := filepath.Join(dp.cfg.BPFRoot, ms.Name)
		old, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			dp.replace(path, ms.Name, fmt.Sprintf("cannot open pin: %v", err))
			continue
		}
		dp.Adopted = true
		want := layoutFingerprint(ms)
		have, known := layouts[ms.Name]
		compatErr := ms.Compatible(old)
		switch {
		case ms.Name == bpfobj.EndpointMapSlLayout && compatErr == nil:
			// The fingerprint table's own layout is fixed forever.
		case known && have != want && hashKindChanged(ms, old, have):
			// Same entries, another hash kind (sl_nat was an LRU hash
			// before SNAT ports were released with their connections):
			// copy them, so established connections keep their state.
			if err := dp.migrate(path, ms, old); err != nil {
				dp.replace(path, ms.Name, fmt.Sprintf("migration from %s failed: %v", old.Type(), err))
			}
		case known && have != want && compatErr == nil && slices.Contains(samePinnedBytes[ms.Name], have):
			// An earlier layout whose entries read the same: adopted.
		case known && have != want:
			dp.replace(path, ms.Name, fmt.Sprintf("type, key/value or inner map layout changed: fingerprint %#x, this agent's %#x", have, want))
		case !known:
			dp.replace(path, ms.Name, "no layout fingerprint recorded")
		case ms.InnerMap != nil && layouts[capacityName(ms.Name)] != uint64(ms.InnerMap.MaxEntries):
			dp.replace(path, ms.Name, innerChange(ms, layouts))
		case compatErr != nil && canMigrate(ms, old):
			if err := dp.migrate(path, ms, old); err != nil {
				dp.replace(path, ms.Name, fmt.Sprintf("migration failed: %v", err))
			}
		case compatErr != nil:
			dp.replace(path, ms.Name, compatErr.Error())
		}
		old.Close()
	}
	return nil
}

// samePinnedBytes are the fingerprints of earlier layouts of maps whose
// pinned entries this agent reads as they are: a padding byte became a
// field whose zero means what those entries meant. The LB maps' family
// byte (IPv6 services) is such a field: 0 is IPv4, so an upgrade keeps
// the frontends, the backends (and the IDs conntrack holds) and socket
// LB's reverse translations of connected sockets. So is sl_nat's (IPv6
// NodePorts): the SNAT ports of open external connections stay theirs.
var samePinnedBytes = map[string][]uint64{
	bpfobj.EndpointMapSlLbSvc:      {0x418b868937cfe6aa},
	bpfobj.EndpointMapSlLbBackends: {0x483b820edd8095f5},
	bpfobj.EndpointMapSlLbSock:     {0xf8887379e559e8cc},
	bpfobj.EndpointMapSlNat:        {0x60e32db91de72afb},
}

// innerChange says why a map of maps' inner capacity does not match.
func innerChange(ms *ebpf.MapSpec, layouts map[string]uint64) string {
	n, ok := layouts[capacityName(ms.Name)]
	if !ok {
		return "no inner map capacity recorded"
	}
	return fmt.Sprintf("inner maps of %d entries, this agent's hold %d", n, ms.InnerMap.MaxEntries)
}

func (dp *Datapath) replace(path, name, why string) {
	dp.log.Warn("replacing pinned map", "map", name, "reason", why)
	dp.Replaced = append(dp.Replaced, name+": replaced ("+why+")")
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		dp.log.Error("unpin map", "path", path, "error", err)
	}
}

// canMigrate: same kind of hash map with the same key and value sizes; only
// the capacity changed, so entries carry over unchanged.
func canMigrate(ms *ebpf.MapSpec, old *ebpf.Map) bool {
	if ms.Type != ebpf.Hash && ms.Type != ebpf.LRUHash {
		return false
	}
	return old.Type() == ms.Type && old.KeySize() == ms.KeySize && old.ValueSize() == ms.ValueSize && old.Flags() == ms.Flags
}

// hashKindChanged reports whether the pinned map differs from the spec
// only in being the other kind of hash (LRU or not): its recorded
// fingerprint is the spec's with the pinned map's type.
func hashKindChanged(ms *ebpf.MapSpec, old *ebpf.Map, have uint64) bool {
	kinds := map[ebpf.MapType]bool{ebpf.Hash: true, ebpf.LRUHash: true}
	if !kinds[ms.Type] || !kinds[old.Type()] || ms.Type == old.Type() || ms.InnerMap != nil {
		return false
	}
	as := ms.Copy()
	as.Type = old.Type()
	return layoutFingerprint(as) == have && old.KeySize() == ms.KeySize && old.ValueSize() == ms.ValueSize
}

// migrate copies old's entries into a new map of the spec's size and swaps
// the pin atomically (rename), so the path never points at nothing.
func (dp *Datapath) migrate(path string, ms *ebpf.MapSpec, old *ebpf.Map) error {
	spec := ms.Copy()
	spec.Pinning = ebpf.PinNone
	nm, err := ebpf.NewMap(spec)
	if err != nil {
		return fmt.Errorf("create %s: %w", ms.Name, err)
	}
	defer nm.Close()
	key := make([]byte, ms.KeySize)
	val := make([]byte, ms.ValueSize)
	copied, dropped := 0, 0
	it := old.Iterate()
	for it.Next(&key, &val) {
		if err := nm.Put(key, val); err != nil {
			dropped++
			continue
		}
		copied++
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate %s: %w", ms.Name, err)
	}
	tmp := path + "_migrating" // bpffs refuses dots in pin names
	_ = os.Remove(tmp)
	if err := nm.Pin(tmp); err != nil {
		return fmt.Errorf("pin %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("swap pin %s: %w", path, err)
	}
	msg := fmt.Sprintf("%s: migrated %d -> %d entries max (%d copied, %d did not fit)", ms.Name, old.MaxEntries(), ms.MaxEntries, copied, dropped)
	dp.log.Info("migrated pinned map", "map", ms.Name, "from", old.MaxEntries(), "to", ms.MaxEntries, "copied", copied, "dropped", dropped)
	dp.Replaced = append(dp.Replaced, msg)
	return nil
}

func layoutKey(name string) bpfobj.EndpointSlLayoutKey {
	var k bpfobj.EndpointSlLayoutKey
	for i := 0; i < len(k.Name)-1 && i < len(name); i++ {
		k.Name[i] = int8(name[i])
	}
	return k
}

// capacityName is the sl_layout record of a map of maps' inner capacity:
// "#" and the map's name ('#' is never part of a map name). The inner
// capacity is kept apart from the layout fingerprint because it is agent
// configuration: the CLI, which checks layouts, cannot know it.
func capacityName(name string) string { return "#" + name }

// readLayouts reads the records the previous agent wrote: fingerprints by
// map name, inner capacities by capacityName.
func (dp *Datapath) readLayouts() map[string]uint64 {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dp.cfg.BPFRoot, bpfobj.EndpointMapSlLayout), nil)
	if err != nil {
		return map[string]uint64{}
	}
	defer m.Close()
	out, err := readLayoutMap(m)
	if err != nil {
		// The maps whose records were not read are replaced: never misread.
		dp.log.Warn("read layout records", "error", err)
	}
	return out
}

func readLayoutMap(m *ebpf.Map) (map[string]uint64, error) {
	out := map[string]uint64{}
	var k bpfobj.EndpointSlLayoutKey
	var v uint64
	it := m.Iterate()
	for it.Next(&k, &v) {
		b := make([]byte, 0, len(k.Name))
		for _, c := range k.Name {
			if c == 0 {
				break
			}
			b = append(b, byte(c))
		}
		out[string(b)] = v
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("read %s: %w", bpfobj.EndpointMapSlLayout, err)
	}
	return out, nil
}

func (dp *Datapath) writeLayouts(spec *ebpf.CollectionSpec) error {
	for _, ms := range pinnedMaps(spec) {
		k := layoutKey(ms.Name)
		if err := dp.objs.SlLayout.Put(&k, layoutFingerprint(ms)); err != nil {
			return fmt.Errorf("record layout of %s: %w", ms.Name, err)
		}
		if ms.InnerMap == nil {
			continue
		}
		name := capacityName(ms.Name)
		if len(name) >= len(k.Name) {
			return fmt.Errorf("record inner capacity of %s: %q does not fit a %d-byte sl_layout key: shorten the map's name", ms.Name, name, len(k.Name))
		}
		ck := layoutKey(name)
		if err := dp.objs.SlLayout.Put(&ck, uint64(ms.InnerMap.MaxEntries)); err != nil {
			return fmt.Errorf("record inner capacity of %s: %w", ms.Name, err)
		}
	}
	return nil
}

// layoutFingerprint hashes what decides how a map's bytes are read: its
// type, sizes, flags and the BTF layout of key and value, and for a map of
// maps the same of its inner map. Capacities are left out on purpose: a
// resize is migrated, not a layout change, and an inner map's capacity is
// configuration the CLI cannot know (it is recorded apart: capacityName).
//
// Maps without an inner map hash exactly what agents before inner maps
// were fingerprinted did, so an upgrade with the same flags adopts them.
// The three maps of maps (sl_lb_maglev, sl_policy, sl_policy_cidr) get
// new fingerprints, so the first start after that upgrade replaces them
// once: the old fingerprint says nothing of the inner maps, so adopting
// would be a guess, and the replacement is filled on the reconcilers'
// first pass before any new program uses it (see reconcilePins).
func layoutFingerprint(ms *ebpf.MapSpec) uint64 {
	var b strings.Builder
	describeMap(&b, ms)
	if ms.InnerMap != nil {
		b.WriteString("|inner:")
		describeMap(&b, ms.InnerMap)
	}
	h := fnv.New64a()
	h.Write([]byte(b.String()))
	return h.Sum64()
}

// describeMap writes what layoutFingerprint hashes of one map: its type
// is there, so a change of kind (LRU hash to hash) is a layout change.
func describeMap(b *strings.Builder, ms *ebpf.MapSpec) {
	fmt.Fprintf(b, "%s/%d/%d/%d|", ms.Type, ms.KeySize, ms.ValueSize, ms.Flags)
	describeType(b, ms.Key, 0)
	b.WriteString("|")
	describeType(b, ms.Value, 0)
}

func describeType(b *strings.Builder, t btf.Type, depth int) {
	if t == nil || depth > 8 {
		b.WriteString("?")
		return
	}
	switch v := t.(type) {
	case *btf.Typedef:
		describeType(b, v.Type, depth+1)
	case *btf.Volatile:
		describeType(b, v.Type, depth+1)
	case *btf.Const:
		describeType(b, v.Type, depth+1)
	case *btf.Int:
		fmt.Fprintf(b, "int%d%v", v.Size*8, v.Encoding)
	case *btf.Enum:
		fmt.Fprintf(b, "enum%d", v.Size*8)
	case *btf.Array:
		fmt.Fprintf(b, "[%d]", v.Nelems)
		describeType(b, v.Type, depth+1)
	case *btf.Struct:
		describeMembers(b, "struct", v.Size, v.Members, depth)
	case *btf.Union:
		describeMembers(b, "union", v.Size, v.Members, depth)
	default:
		fmt.Fprintf(b, "%T", t)
	}
}

func describeMembers(b *strings.Builder, kind string, size uint32, ms []btf.Member, depth int) {
	fmt.Fprintf(b, "%s%d{", kind, size)
	for _, m := range ms {
		fmt.Fprintf(b, "%s@%d:", m.Name, m.Offset)
		describeType(b, m.Type, depth+1)
		b.WriteString(";")
	}
	b.WriteString("}")
}

// Close releases this process's handles. Pins, links and filters stay, so
// traffic keeps flowing on the last loaded programs.
func (dp *Datapath) Close() error {
	return errors.Join(dp.objs.Close(), dp.sock.Close(), dp.host.Close(), dp.iter.Close())
}

// Config returns the effective configuration.
func (dp *Datapath) Config() Config { return dp.cfg }

// EventRing is the datapath's event ring buffer (sl_events), for
// events.NewReader.
func (dp *Datapath) EventRing() *ebpf.Map { return dp.objs.SlEvents }

// Objects exposes the loaded programs and maps to the attach and map code.
func (dp *Datapath) Objects() *bpfobj.EndpointObjects { return &dp.objs }
