package k8stest

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/sluice-net/sluice/pkg/agent/reconcilers"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/policysync"
)

// ReconcilerOptions tune Reconcilers; the zero value is the agent's
// defaults.
type ReconcilerOptions struct {
	// LBMinInterval is the service reconciler's MinInterval: tests of
	// behaviour shorten it, measurements keep the agent's.
	LBMinInterval time.Duration
}

// Reconcilers runs what the agent runs between the model and the maps,
// built by the agent's own assembly (pkg/agent/reconcilers) for node,
// until the test ends: the service reconciler (sl_lb_*) and the policy
// reconciler (sl_ipcache, sl_policy). There is no endpoint manager (no
// interfaces to attach to): the policy reconciler is returned, and its
// Prepare places an endpoint as the endpoint manager does.
//
//	model.Store ──► servicesync ──► sl_lb_*
//	            └─► policysync ───► sl_ipcache, sl_policy
func Reconcilers(tb testing.TB, m *datapath.Maps, store *model.Store, node string, o ReconcilerOptions) *policysync.Reconciler {
	tb.Helper()
	set, err := reconcilers.New(reconcilers.Config{
		NodeName: node, Maps: m, Store: store, StateDir: tb.TempDir(), ServiceMinInterval: o.LBMinInterval,
	})
	if err != nil {
		tb.Fatalf("reconcilers: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- set.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("reconcilers: %v", err)
		}
	})
	return set.Policy
}

// Backends returns the backends sl_lb_svc holds for the frontends of vip,
// one per slot.
func Backends(tb testing.TB, m *datapath.Maps, vip netip.Addr) []netip.AddrPort {
	tb.Helper()
	st, err := m.LBDump()
	if err != nil {
		tb.Fatalf("dump LB maps: %v", err)
	}
	var out []netip.AddrPort
	for k, f := range st.Frontends {
		if k.Addr != vip {
			continue
		}
		for _, id := range f.Slots {
			b := st.Backends[id]
			out = append(out, netip.AddrPortFrom(b.Addr, b.Port))
		}
	}
	return out
}

// PodIdentity returns the identity sl_ipcache maps ip to, 0 if none.
func PodIdentity(tb testing.TB, m *datapath.Maps, ip netip.Addr) uint32 {
	tb.Helper()
	ipc, err := m.DumpIPCache()
	if err != nil {
		tb.Fatalf("dump sl_ipcache: %v", err)
	}
	return ipc[netip.PrefixFrom(ip, ip.BitLen())].Identity
}
