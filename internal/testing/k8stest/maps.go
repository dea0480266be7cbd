package k8stest

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/policysync"
	"github.com/sluice-net/sluice/pkg/servicesync"
)

// ReconcilerOptions tune Reconcilers; the zero value is the agent's
// defaults.
type ReconcilerOptions struct {
	// LBMinInterval is the service reconciler's MinInterval: tests of
	// behaviour shorten it, measurements keep the agent's.
	LBMinInterval time.Duration
}

// Reconcilers runs what the agent runs between the model and the maps:
// the service reconciler (sl_lb_*) and the policy reconciler (sl_ipcache,
// sl_policy) for node, until the test ends. The policy reconciler is
// returned: its Prepare places an endpoint, as the endpoint manager does.
//
//	model.Store ──► servicesync.Reconciler ────► sl_lb_*
//	            └─► policysync ──────► sl_ipcache, sl_policy
func Reconcilers(tb testing.TB, m *datapath.Maps, store *model.Store, node string, o ReconcilerOptions) *policysync.Reconciler {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	lbr, err := servicesync.New(servicesync.Options{Maps: m, Store: store, MinInterval: o.LBMinInterval})
	if err != nil {
		cancel()
		tb.Fatalf("lb reconciler: %v", err)
	}
	pol, err := policysync.New(policysync.Options{NodeName: node, Maps: m, Store: store, StateDir: tb.TempDir()})
	if err != nil {
		cancel()
		tb.Fatalf("policy reconciler: %v", err)
	}
	done := make(chan struct{}, 2)
	go func() { lbr.Run(ctx); done <- struct{}{} }()
	go func() { _ = pol.Run(ctx); done <- struct{}{} }()
	tb.Cleanup(func() { cancel(); <-done; <-done })
	return pol
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
