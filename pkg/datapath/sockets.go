package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/datapath/internal/raw"
	"github.com/sluice-net/sluice/pkg/datapath/sockdestroy"
)

// CanDestroySockets reports whether the kernel let the BPF socket iterator
// load, and why not. SocketDestroyer().Method says whether sockets can be
// destroyed at all.
func (dp *Datapath) CanDestroySockets() error { return dp.iterErr }

// SocketDestroyer destroys connected UDP sockets of removed backends with
// this datapath's socket iterator, or through sock_diag.
func (dp *Datapath) SocketDestroyer() *sockdestroy.Destroyer {
	d := &sockdestroy.Destroyer{IterErr: dp.iterErr, ForceSockDiag: dp.cfg.ForceSockDiag,
		SetTargets: dp.setSockDestroyTargets, Counted: dp.countSocketsDestroyed}
	if dp.iterErr == nil {
		d.Iter = dp.iter.SlDestroyUdp
	}
	return d
}

// setSockDestroyTargets lists backends in sl_sock_destroy for the
// iterator; the returned func unlists them.
func (dp *Datapath) setSockDestroyTargets(backends []netip.AddrPort) (func(), error) {
	keys := make([]bpfobj.EndpointSlSockDestroyKey, 0, len(backends))
	vals := make([]uint8, 0, len(backends))
	for _, b := range backends {
		k := bpfobj.EndpointSlSockDestroyKey{Port: raw.Htons(b.Port()), Proto: unix.IPPROTO_UDP}
		k.Addr.Addr6 = raw.AddrTo(b.Addr())
		keys, vals = append(keys, k), append(vals, 1)
	}
	m := dp.objs.SlSockDestroy
	if err := batchUpdate(m, keys, vals); err != nil {
		return nil, err
	}
	return func() { _ = batchDelete(m, keys) }, nil
}

var metricsMu sync.Mutex

// countSocketsDestroyed adds n to the sockets-destroyed counter that the
// socket iterator keeps in BPF, so the metric means the same whichever
// method destroyed the sockets. Only the iterator, which does not run
// while sock_diag is in use, writes this key from BPF; the update cannot
// lose a concurrent BPF increment.
func (dp *Datapath) countSocketsDestroyed(n int) error {
	if n == 0 {
		return nil
	}
	metricsMu.Lock()
	defer metricsMu.Unlock()
	k := bpfobj.EndpointSlMetricsKey{Metric: uint8(bpfobj.EndpointSlMetricSL_METRIC_SOCK_DESTROYED), Dir: uint8(bpfobj.EndpointSlDirSL_DIR_EGRESS)}
	var vs []bpfobj.EndpointSlMetricsVal
	err := dp.objs.SlMetrics.Lookup(&k, &vs)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		cpus, cerr := ebpf.PossibleCPU()
		if cerr != nil {
			return fmt.Errorf("count destroyed sockets: %w", cerr)
		}
		vs, err = make([]bpfobj.EndpointSlMetricsVal, cpus), nil
	}
	if err != nil {
		return fmt.Errorf("count destroyed sockets: read counter: %w", err)
	}
	vs[0].Packets += uint64(n)
	if err := dp.objs.SlMetrics.Update(&k, vs, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("count destroyed sockets: update counter: %w", err)
	}
	return nil
}
