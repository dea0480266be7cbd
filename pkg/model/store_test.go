package model

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStoreApplySnapshotIsolation(t *testing.T) {
	s := NewStore()
	ch := s.Subscribe()

	rev, err := s.Apply([]Change{
		{Op: OpUpsert, Object: pod("default", "a", "n1", PodRunning, "10.0.0.1")},
		{Op: OpUpsert, Object: &Namespace{Name: "default"}},
	})
	require.NoError(t, err)
	assert.Equal(t, uint64(1), rev)
	snap1 := s.Snapshot()
	assert.Equal(t, uint64(1), snap1.Revision)
	assert.Equal(t, 2, snap1.Len())
	assert.Len(t, ch, 1)

	// Applying changes later never alters an earlier snapshot.
	rev, err = s.Apply([]Change{
		{Op: OpDelete, Object: &Pod{Namespace: "default", Name: "a"}},
		{Op: OpUpsert, Object: pod("default", "b", "n1", PodRunning, "10.0.0.2")},
	})
	require.NoError(t, err)
	assert.Equal(t, uint64(2), rev)
	assert.Contains(t, snap1.Pods, NamespacedName{"default", "a"})
	assert.NotContains(t, snap1.Pods, NamespacedName{"default", "b"})
	snap2 := s.Snapshot()
	assert.NotContains(t, snap2.Pods, NamespacedName{"default", "a"})
	assert.Contains(t, snap2.Pods, NamespacedName{"default", "b"})

	// Two changes, one pending notification: they coalesce.
	assert.Len(t, ch, 1)
	<-ch

	// No-ops neither bump the revision nor notify.
	rev, err = s.Apply([]Change{
		{Op: OpUpsert, Object: pod("default", "b", "n1", PodRunning, "10.0.0.2")},
		{Op: OpDelete, Object: &Pod{Namespace: "default", Name: "missing"}},
	})
	require.NoError(t, err)
	assert.Equal(t, uint64(2), rev)
	assert.Empty(t, ch)
	assert.Same(t, snap2, s.Snapshot())

	s.Unsubscribe(ch)
	_, err = s.Apply([]Change{{Op: OpUpsert, Object: &Namespace{Name: "other"}}})
	require.NoError(t, err)
	assert.Empty(t, ch)
}

func TestStoreApplyRejectsInvalid(t *testing.T) {
	s := NewStore()
	_, err := s.Apply([]Change{
		{Op: OpUpsert, Object: &Namespace{Name: "ok"}},
		{Op: OpUpsert, Object: (*Pod)(nil)},
	})
	require.Error(t, err)
	_, err = s.Apply([]Change{{Op: 0, Object: &Namespace{Name: "ok"}}})
	require.Error(t, err)
	assert.Equal(t, 0, s.Snapshot().Len(), "an invalid batch applies nothing")
	assert.Equal(t, uint64(0), s.Revision())
}

func TestStoreConcurrent(t *testing.T) {
	s := NewStore()
	ch := s.Subscribe()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				_, err := s.Apply([]Change{{Op: OpUpsert, Object: &Node{Name: string(rune('a'+i)) + string(rune('a'+j%26))}}})
				assert.NoError(t, err)
				_ = s.Snapshot().Len()
			}
		})
	}
	wg.Wait()
	assert.Equal(t, 8*26, s.Snapshot().Len())
	assert.Len(t, ch, 1)
}
