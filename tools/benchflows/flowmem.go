package main

// `benchflows flowmem`: the Go heap a flow store of N flows holds, in a
// process of its own so that nothing else allocates while it measures.

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-net/sluice/pkg/datapath/events"
	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
)

// flowMemResult is what flowmem prints for one store size.
type flowMemResult struct {
	Flows int `json:"flows"`
	// HeapBytes is the growth of the live heap (HeapAlloc after GC) from
	// before the store was made to after it was filled: the ring and the
	// flows it keeps.
	HeapBytes int64 `json:"heapBytes"`
	// RingBytes is the ring alone (one flow.Entry per entry).
	RingBytes int64 `json:"ringBytes"`
	// ProtoBytes is the flows' total protobuf wire size, for scale.
	ProtoBytes int64 `json:"protoBytes"`
	// Labels is the average number of labels per flow (both ends).
	Labels float64 `json:"labelsPerFlow"`
}

func runFlowMem(args []string) error {
	fs := flag.NewFlagSet("flowmem", flag.ExitOnError)
	sizes := fs.String("flows", "4096,65536", "store sizes to fill")
	_ = fs.Parse(args)
	var ns []int
	for _, s := range splitList(*sizes) {
		var n int
		if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n < 1 {
			return fmt.Errorf("-flows: %q is not a positive number", s)
		}
		ns = append(ns, n)
	}
	var out []flowMemResult
	for _, n := range ns {
		out = append(out, measureFlowMem(n))
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// measureFlowMem fills a store of n entries with n datapath records,
// resolved as the agent resolves them when it reads them, and returns the
// heap it holds: the ring and the ends, services and rules its records
// refer to (made when first seen, then shared). The cluster's state
// (pods, identities, labels) exists before the first measurement, as it
// does in the agent.
func measureFlowMem(n int) flowMemResult {
	cl := newSyntheticCluster()
	conv := &flow.Converter{NodeName: "node1", Version: "bench", Enricher: cl}
	res := flowMemResult{Flows: n, RingBytes: int64(n) * int64(unsafe.Sizeof(flow.Entry{}))}

	before := liveHeap()
	store, err := flow.NewStore(n)
	if err != nil {
		panic(err)
	}
	epoch := time.Unix(1_750_000_000, 0)
	for i := range n {
		ev := cl.event(i)
		rec := ev.Record(epoch)
		r := conv.Record(&rec, epoch)
		store.AddRecord(&r)
	}
	after := liveHeap()
	res.HeapBytes = int64(after) - int64(before)

	evs, _ := store.Snapshot()
	var labels int
	for _, e := range evs {
		f := e.Flow() // built as a client reads it
		res.ProtoBytes += int64(proto.Size(f))
		labels += len(f.GetSource().GetLabels()) + len(f.GetDestination().GetLabels())
	}
	res.Labels = float64(labels) / float64(len(evs))
	runtime.KeepAlive(store)
	return res
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC() // the first one's finalizers and sweep
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// syntheticCluster is a node's view of a mid-sized cluster, answering the
// converter as the agent's enricher does: pods with the labels and owners
// Deployments give them, one identity per Deployment whose labels the
// converter prints for each end (the agent's endpoints carry no labels of
// their own, so every flow gets fresh label strings, as here).
type syntheticCluster struct {
	pods  []*model.Pod
	ids   []identity.ID
	byIP  map[netip.Addr]int
	local int // pods [0, local) are this node's, endpoint ID = index+1
	labs  map[identity.ID]identity.Labels
	ports []uint16
}

// Sizes of the synthetic cluster: 8 namespaces × 6 Deployments × 4 pods,
// 32 of them on this node.
const (
	synthNamespaces  = 8
	synthDeployments = 6
	synthReplicas    = 4
	synthLocal       = 32
)

func newSyntheticCluster() *syntheticCluster {
	c := &syntheticCluster{byIP: map[netip.Addr]int{}, labs: map[identity.ID]identity.Labels{},
		local: synthLocal, ports: []uint16{80, 443, 8080, 5432, 6379, 9090}}
	names := []string{"shop", "payments", "checkout", "catalog", "identity", "search", "monitoring", "ingress"}
	comps := []string{"frontend", "api", "worker", "cache", "db", "gateway"}
	id := identity.MinAllocated
	for n := range synthNamespaces {
		ns := names[n]
		nsLabels := map[string]string{"kubernetes.io/metadata.name": ns, "team": ns + "-team"}
		for d := range synthDeployments {
			dep := fmt.Sprintf("%s-%s", ns, comps[d])
			hash := fmt.Sprintf("%x", 0x5d8c7f9b60+n*16+d)
			for r := range synthReplicas {
				k := len(c.pods)
				p := &model.Pod{
					Namespace: ns, Name: fmt.Sprintf("%s-%s-%c%c%c%c%c", dep, hash, 'a'+r, 'b'+d, 'c'+n, 'x', 'z'),
					Labels: map[string]string{
						"app.kubernetes.io/name": dep, "app.kubernetes.io/instance": dep + "-prod",
						"app.kubernetes.io/component": comps[d], "pod-template-hash": hash,
					},
					NodeName: "node1", Phase: model.PodRunning,
					IPs:    []netip.Addr{netip.AddrFrom4([4]byte{10, 244, byte(k / 250), byte(1 + k%250)})},
					Owners: []model.OwnerRef{{Kind: "ReplicaSet", Name: dep + "-" + hash, Controller: true}},
				}
				if k >= synthLocal {
					p.NodeName = "node2"
				}
				c.pods = append(c.pods, p)
				c.ids = append(c.ids, id)
				c.byIP[p.IPs[0]] = k
				if r == 0 {
					s := identity.SubjectOf(p, nsLabels)
					c.labs[id] = s.Labels()
				}
			}
			id++
		}
	}
	return c
}

// event is the i-th event of a node's connections: pairs of a new
// connection (trace) and its end, from a local pod to any pod.
func (c *syntheticCluster) event(i int) events.Event {
	rng := rand.New(rand.NewPCG(uint64(i/2), 7))
	src := rng.IntN(c.local)
	dst := rng.IntN(len(c.pods))
	sport := uint16(32768 + rng.IntN(28000))
	dport := c.ports[rng.IntN(len(c.ports))]
	ev := events.Event{
		Time: time.Unix(1_750_000_000, int64(i)*10_000), Dir: events.DirEgress, EndpointID: uint32(src + 1),
		IfIndex: uint32(100 + src), Proto: unix.IPPROTO_TCP,
		Src: netip.AddrPortFrom(c.pods[src].IPs[0], sport), Dst: netip.AddrPortFrom(c.pods[dst].IPs[0], dport),
	}
	if i%2 == 0 {
		ev.Type, ev.Len, ev.TCPFlags = events.ConnNew, 74, events.TCPSYN
		return ev
	}
	ev.Type, ev.Len, ev.TCPFlags = events.ConnEnd, 66, events.TCPRST|events.TCPACK
	ev.PacketsOrig, ev.BytesOrig = uint64(5+rng.IntN(20)), uint64(400+rng.IntN(20000))
	ev.PacketsReply, ev.BytesReply = uint64(4+rng.IntN(20)), uint64(300+rng.IntN(200000))
	ev.Duration = time.Duration(rng.IntN(5000)) * time.Millisecond
	return ev
}

func (c *syntheticCluster) endpoint(k int) flow.Endpoint {
	ep := flow.Endpoint{Identity: c.ids[k], Pod: c.pods[k]}
	if k < c.local {
		ep.ID = uint32(k + 1)
	}
	return ep
}

// LocalEndpoint implements flow.Enricher.
func (c *syntheticCluster) LocalEndpoint(id uint32) (flow.Endpoint, bool) {
	if id == 0 || int(id) > c.local {
		return flow.Endpoint{}, false
	}
	return c.endpoint(int(id) - 1), true
}

// EndpointByIP implements flow.Enricher.
func (c *syntheticCluster) EndpointByIP(ip netip.Addr) (flow.Endpoint, bool) {
	k, ok := c.byIP[ip]
	if !ok {
		return flow.Endpoint{}, false
	}
	return c.endpoint(k), true
}

// EndpointByCgroup implements flow.Enricher.
func (c *syntheticCluster) EndpointByCgroup(uint64) (flow.Endpoint, bool) {
	return flow.Endpoint{}, false
}

// IdentityLabels implements flow.Enricher.
func (c *syntheticCluster) IdentityLabels(id identity.ID) (identity.Labels, bool) {
	ls, ok := c.labs[id]
	return ls, ok
}

// Service implements flow.Enricher.
func (c *syntheticCluster) Service(uint32) (flow.Service, bool) { return flow.Service{}, false }

// PolicyRule implements flow.Enricher.
func (c *syntheticCluster) PolicyRule(uint32) (flow.Rule, bool) { return flow.Rule{}, false }
