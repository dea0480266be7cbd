package model

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The pod address overlay: a CNI ADD's addresses stand in for the status
// the source has not reported yet, and give way to it once it does.
func TestStorePodAddrs(t *testing.T) {
	s := NewStore()
	nn := NamespacedName{"default", "web"}
	ip := netip.MustParseAddr("10.0.0.7")
	pending := pod("default", "web", "n1", PodPending)
	pending.UID = "uid-1"

	// Not in the model yet: the caller waits.
	err := s.SetPodAddrs(nn, PodAddrs{UID: "uid-1", Owner: "c1", IPs: []netip.Addr{ip}})
	require.ErrorIs(t, err, ErrNoSuchPod)
	assert.Equal(t, uint64(0), s.Revision())

	_, err = s.Apply([]Change{{Op: OpUpsert, Object: pending}})
	require.NoError(t, err)
	before := s.Snapshot()
	assert.Empty(t, before.LocalPods("n1"), "no address, no endpoint")

	// An earlier pod of that name (another UID) does not take them.
	err = s.SetPodAddrs(nn, PodAddrs{UID: "uid-0", Owner: "c0", IPs: []netip.Addr{ip}})
	require.ErrorIs(t, err, ErrNoSuchPod)
	assert.Contains(t, err.Error(), "uid-1")

	ch := s.Subscribe()
	defer s.Unsubscribe(ch)
	require.NoError(t, s.SetPodAddrs(nn, PodAddrs{UID: "uid-1", Owner: "c1", IPs: []netip.Addr{ip}}))
	assert.Len(t, ch, 1, "subscribers are told")
	<-ch
	snap := s.Snapshot()
	assert.Equal(t, before.Revision+1, snap.Revision)
	require.Len(t, snap.LocalPods("n1"), 1)
	assert.Equal(t, []netip.Addr{ip}, snap.Pods[nn].IPs)
	assert.Empty(t, before.Pods[nn].IPs, "an earlier snapshot never changes")
	assert.Empty(t, pending.IPs, "the source's object is not modified")
	assert.Equal(t, map[NamespacedName]PodAddrs{nn: {UID: "uid-1", Owner: "c1", IPs: []netip.Addr{ip}}}, s.PodAddrsList())

	// Setting the same again changes nothing.
	require.NoError(t, s.SetPodAddrs(nn, PodAddrs{UID: "uid-1", Owner: "c1", IPs: []netip.Addr{ip}}))
	assert.Same(t, snap, s.Snapshot())

	// Source updates without addresses (labels, phase) keep them.
	relabelled := *pending
	relabelled.Labels = map[string]string{"app": "web"}
	_, err = s.Apply([]Change{{Op: OpUpsert, Object: &relabelled}})
	require.NoError(t, err)
	assert.Equal(t, []netip.Addr{ip}, s.Snapshot().Pods[nn].IPs)
	assert.Equal(t, "web", s.Snapshot().Pods[nn].Labels["app"])

	// A removal for another sandbox leaves them.
	assert.False(t, s.ClearPodAddrs(nn, "c0"))
	assert.Equal(t, []netip.Addr{ip}, s.Snapshot().Pods[nn].IPs)

	// The source catches up: its status counts from now on, and a later
	// status without the address is not overridden.
	running := relabelled
	running.Phase, running.IPs = PodRunning, []netip.Addr{ip, netip.MustParseAddr("fd00::7")}
	_, err = s.Apply([]Change{{Op: OpUpsert, Object: &running}})
	require.NoError(t, err)
	assert.Equal(t, running.IPs, s.Snapshot().Pods[nn].IPs)
	assert.Empty(t, s.PodAddrsList(), "no longer needed")
	_, err = s.Apply([]Change{{Op: OpUpsert, Object: &relabelled}})
	require.NoError(t, err)
	assert.Empty(t, s.Snapshot().Pods[nn].IPs)
}

func TestStorePodAddrsWinOverStaleStatusUntilClearedOrDeleted(t *testing.T) {
	s := NewStore()
	nn := NamespacedName{"default", "db"}
	old, cur := netip.MustParseAddr("10.0.0.8"), netip.MustParseAddr("10.0.0.9")
	// The status still names the previous sandbox's address.
	_, err := s.Apply([]Change{{Op: OpUpsert, Object: pod("default", "db", "n1", PodRunning, old.String())}})
	require.NoError(t, err)
	require.NoError(t, s.SetPodAddrs(nn, PodAddrs{Owner: "c2", IPs: []netip.Addr{cur}}))
	assert.Equal(t, []netip.Addr{cur}, s.Snapshot().Pods[nn].IPs)

	rev := s.Revision()
	assert.True(t, s.ClearPodAddrs(nn, "c2"))
	assert.Equal(t, rev+1, s.Revision())
	assert.Equal(t, []netip.Addr{old}, s.Snapshot().Pods[nn].IPs)
	assert.False(t, s.ClearPodAddrs(nn, "c2"))
	assert.Equal(t, rev+1, s.Revision(), "clearing twice is a no-op")

	// A deleted pod takes them along: a pod of the same name created
	// later starts without them.
	require.NoError(t, s.SetPodAddrs(nn, PodAddrs{Owner: "c3", IPs: []netip.Addr{cur}}))
	_, err = s.Apply([]Change{{Op: OpDelete, Object: &Pod{Namespace: "default", Name: "db"}}})
	require.NoError(t, err)
	_, err = s.Apply([]Change{{Op: OpUpsert, Object: pod("default", "db", "n1", PodPending)}})
	require.NoError(t, err)
	assert.Empty(t, s.Snapshot().Pods[nn].IPs)
}
