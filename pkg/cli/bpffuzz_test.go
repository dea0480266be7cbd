package cli_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/sluice-net/sluice/internal/testing/datapathtest"
	"github.com/sluice-net/sluice/pkg/cli"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
)

// fuzzMap is a pinned map whose entries FuzzBPFList writes raw.
type fuzzMap struct {
	name string
	m    *ebpf.Map
}

// bpfFuzz is the datapath FuzzBPFList writes into: loaded once per fuzzing
// process and left loaded (the CLI reads its pins, as it reads a running
// agent's).
type bpfFuzz struct {
	root string
	maps []fuzzMap
	cpus int
}

var (
	bpfFuzzOnce  sync.Once
	bpfFuzzState *bpfFuzz
	bpfFuzzErr   error
)

// The endpoint whose policy maps (inner maps of sl_policy and
// sl_policy_cidr) the fuzzer writes into.
const fuzzPolicyEndpoint = 7

func loadBPFFuzz(f *testing.F) *bpfFuzz {
	root := datapathtest.Root(f) // skips (or fails under CI) without root and bpffs
	bpfFuzzOnce.Do(func() { bpfFuzzState, bpfFuzzErr = newBPFFuzz(root) })
	if bpfFuzzErr != nil {
		f.Fatalf("load the datapath for fuzzing: %v", bpfFuzzErr)
	}
	return bpfFuzzState
}

func newBPFFuzz(root string) (*bpfFuzz, error) {
	// The lock and the datapath stay open until the process exits: the
	// fuzzing workers share nothing else, and the bpffs directory is
	// removed by the test's cleanup.
	if _, err := datapath.LockRoot(root); err != nil {
		return nil, err
	}
	dp, err := datapath.Load(datapath.Config{BPFRoot: root}, nil)
	if err != nil {
		return nil, err
	}
	m := dp.Maps()
	// One real policy and CIDR entry, so that the inner maps exist and
	// the fuzzer's entries sit beside the agent's.
	if err := m.WriteEndpointPolicy(fuzzPolicyEndpoint, datapath.EndpointPolicy{
		Entries: []datapath.PolicyEntry{{Identity: 1000, Dir: 1, Proto: 6, Port: 80, PortPrefixLen: 16, Verdict: datapath.VerdictAllow, Rule: 1}},
		CIDRs:   []datapath.PolicyCIDR{{Dir: 2, Prefix: netip.MustParsePrefix("192.0.2.0/24"), Class: 1 << 24}},
	}); err != nil {
		return nil, err
	}
	var pm, cm *ebpf.Map
	if err := m.Policy.Lookup(uint32(fuzzPolicyEndpoint), &pm); err != nil {
		return nil, fmt.Errorf("policy map of endpoint %d: %w", fuzzPolicyEndpoint, err)
	}
	if err := m.PolicyCIDR.Lookup(uint32(fuzzPolicyEndpoint), &cm); err != nil {
		return nil, fmt.Errorf("CIDR map of endpoint %d: %w", fuzzPolicyEndpoint, err)
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, err
	}
	o := dp.Objects()
	return &bpfFuzz{root: root, cpus: cpus, maps: []fuzzMap{
		{bpfobj.EndpointMapSlEndpoints, o.SlEndpoints},
		{bpfobj.EndpointMapSlCt, o.SlCt},
		{bpfobj.EndpointMapSlMetrics, o.SlMetrics},
		{bpfobj.EndpointMapSlMetricsFast, o.SlMetricsFast},
		{bpfobj.EndpointMapSlLbSvc, o.SlLbSvc},
		{bpfobj.EndpointMapSlLbBackends, o.SlLbBackends},
		{bpfobj.EndpointMapSlLbSrcRange, o.SlLbSrcRange},
		{bpfobj.EndpointMapSlIpcache, o.SlIpcache},
		{"policy map of endpoint 7", pm},
		{"CIDR map of endpoint 7", cm},
		{bpfobj.EndpointMapSlLayout, o.SlLayout},
	}}, nil
}

// record is one entry FuzzBPFList wrote, and how to undo it.
type record struct {
	m        fuzzMap
	key, old []byte // old: the value the key had (nil: none)
}

// write puts the records encoded in in: each is a map selector byte, then
// the map's key and value bytes (zeros where in runs out; a per-CPU value
// on every CPU). It returns what to undo; entries the kernel refuses (an
// array index out of range, a prefix longer than the trie's) are skipped.
func (s *bpfFuzz) write(in []byte) []record {
	var done []record
	for n := 0; len(in) > 0 && n < 16; n++ {
		fm := s.maps[int(in[0])%len(s.maps)]
		in = in[1:]
		ks, vs := int(fm.m.KeySize()), int(fm.m.ValueSize())
		take := func(n int) []byte {
			b := make([]byte, n)
			in = in[copy(b, in):]
			return b
		}
		key, value := take(ks), take(vs)
		r := record{m: fm, key: key}
		var put any = value
		switch fm.m.Type() {
		case ebpf.PerCPUHash, ebpf.PerCPUArray:
			perCPU := make([][]byte, s.cpus)
			for i := range perCPU {
				perCPU[i] = value
			}
			put = perCPU
		default:
			old := make([]byte, vs)
			if fm.m.Lookup(key, old) == nil {
				r.old = old
			}
		}
		if fm.m.Put(key, put) != nil {
			continue
		}
		done = append(done, r)
	}
	return done
}

// undo puts back what write changed, last first.
func (s *bpfFuzz) undo(t *testing.T, done []record) {
	for i := len(done) - 1; i >= 0; i-- {
		r := done[i]
		var err error
		switch {
		case r.old != nil:
			err = r.m.m.Put(r.key, r.old)
		case r.m.m.Type() == ebpf.PerCPUArray:
			zero := make([][]byte, s.cpus)
			for j := range zero {
				zero[j] = make([]byte, r.m.m.ValueSize())
			}
			err = r.m.m.Put(r.key, zero)
		default:
			err = r.m.m.Delete(r.key)
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				err = nil // written twice in one input
			}
		}
		if err != nil {
			t.Fatalf("undo the fuzzer's entry %x in %s: %v", r.key, r.m.name, err)
		}
	}
}

// bpfListCommands are the `sluice bpf` commands that decode map entries.
var bpfListCommands = []string{"ct", "endpoint", "ipcache", "lb", "metrics", "policy"}

// bpfFuzzSeeds are inputs of the format write reads: an entry of each map
// as the agent or the datapath writes it, and a few it never would (an
// unknown family, state and protocol, an IPv4 prefix of 40 bits, slots
// beyond the count, a frontend's slot whose backend is missing).
func bpfFuzzSeeds() [][]byte {
	le := binary.LittleEndian
	rec := func(sel byte, parts ...any) []byte {
		var b bytes.Buffer
		b.WriteByte(sel)
		for _, p := range parts {
			_ = binary.Write(&b, le, p)
		}
		return b.Bytes()
	}
	now := uint64(time.Now().UnixNano()) // only its order of magnitude matters
	v4 := func(a string) [16]byte {
		var out [16]byte
		b := netip.MustParseAddr(a).As4()
		copy(out[:], b[:])
		return out
	}
	port := func(p uint16) uint16 { return binary.BigEndian.Uint16(binary.LittleEndian.AppendUint16(nil, p)) }
	ep := bpfobj.EndpointSlEndpoint{EpId: 3, Identity: 1000, Flags: uint32(bpfobj.EndpointSlEpFlagSL_EP_F_HAS_IPV4)}
	ep.Ipv4.Addr6 = v4("10.244.1.5")
	ct := bpfobj.EndpointSlCtKey{EpId: 3, Family: 2, Proto: 6, Sport: port(43512), Dport: port(443)}
	ct.Saddr.Addr6, ct.Daddr.Addr6 = v4("10.244.1.5"), v4("192.0.2.10")
	ctv := bpfobj.EndpointSlCtEntry{Expires: now + 1<<40, Created: now, PacketsOrig: 3, State: 3, Origin: 2}
	odd := ct
	odd.Family, odd.Proto, odd.Scope = 77, 200, 9
	oddv := ctv
	oddv.State, oddv.Origin, oddv.Created = 250, 250, ^uint64(0)
	svc := bpfobj.EndpointSlLbKey{Port: port(80), Proto: 6}
	svc.Addr.Addr6 = v4("10.96.0.10")
	slot := svc
	slot.Slot = 40000
	be := bpfobj.EndpointSlLbBackend{Port: port(8080), Proto: 6}
	be.Addr.Addr6 = v4("10.244.1.9")
	ipc := bpfobj.EndpointSlIpcacheKey{Prefixlen: 64, Family: 2}
	ipc.Addr.Addr6 = v4("10.244.1.5")
	ipcBad := ipc
	ipcBad.Prefixlen, ipcBad.Family = 72, 2
	return [][]byte{
		rec(0, uint32(5), ep),
		append(rec(1, ct, ctv), rec(1, odd, oddv)...),
		rec(2, bpfobj.EndpointSlMetricsKey{Metric: 1, Dir: 2, Reason: 133}, bpfobj.EndpointSlMetricsVal{Packets: 1<<64 - 1, Bytes: 7}),
		rec(3, uint32(5), bpfobj.EndpointSlMetricsVal{Packets: 2, Bytes: 120}),
		append(append(rec(4, svc, bpfobj.EndpointSlLbEntry{SvcId: 1, Count: 1, Flags: 0xffff}), rec(4, slot, bpfobj.EndpointSlLbEntry{BackendId: 9})...), rec(5, uint32(10), be)...),
		rec(6, bpfobj.EndpointSlLbSrcRangeKey{Prefixlen: 64, SvcId: 1 << 24}, uint8(1)),
		append(rec(7, ipc, bpfobj.EndpointSlIpcacheVal{Identity: 1000, EpId: 3}), rec(7, ipcBad, bpfobj.EndpointSlIpcacheVal{Identity: 2})...),
		rec(8, bpfobj.EndpointSlPolicyKey{Prefixlen: 56, Identity: 2, Dir: 2, Proto: 17, Dport: port(53)}, bpfobj.EndpointSlPolicyEntry{Verdict: 200, Rule: 9}),
		rec(9, bpfobj.EndpointSlPolicyCidrKey{Prefixlen: 48, Dir: 1, Family: 10}, uint32(1<<24+3)),
		rec(10, [32]byte{'s', 'l', '_', 'c', 't'}, uint64(1)),
	}
}

// Any bytes in the pinned maps, as a corrupted or foreign agent might
// leave them: every `sluice bpf … list` prints them as a table and as
// JSON, or, for a map layout this build does not read, refuses with an
// error naming the map; it never panics.
func FuzzBPFList(f *testing.F) {
	s := loadBPFFuzz(f)
	for _, seed := range bpfFuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		done := s.write(in)
		defer s.undo(t, done)
		for _, c := range bpfListCommands {
			for _, format := range []string{"table", "json"} {
				root := cli.NewRootCommand()
				var out bytes.Buffer
				root.SetOut(&out)
				root.SetErr(&out)
				root.SetArgs([]string{"--bpf-root", s.root, "-o", format, "bpf", c, "list"})
				err := root.ExecuteContext(t.Context())
				if errors.Is(err, datapath.ErrLayoutMismatch) && strings.Contains(err.Error(), "pinned map sl_") {
					continue
				}
				if err != nil {
					t.Fatalf("sluice bpf %s list -o %s: %v (input %x)", c, format, err, in)
				}
				if format == "json" && !json.Valid(out.Bytes()) {
					t.Fatalf("sluice bpf %s list -o json printed invalid JSON (input %x):\n%s", c, in, out.String())
				}
			}
		}
	})
}
