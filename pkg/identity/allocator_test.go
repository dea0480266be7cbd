package identity

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func lbl(ss ...string) Labels {
	ls, err := ParseLabels(ss)
	if err != nil {
		panic(err)
	}
	return ls
}

func TestAllocatorSharesAndCounts(t *testing.T) {
	a := NewAllocator()
	web := lbl("k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop")
	db := lbl("k8s:app=db", "k8s:io.kubernetes.pod.namespace=shop")

	id1, err := a.Acquire(web)
	require.NoError(t, err)
	assert.Equal(t, MinAllocated, id1)
	id2, err := a.Acquire(web)
	require.NoError(t, err)
	assert.Equal(t, id1, id2, "pods with one label set share an identity")
	id3, err := a.Acquire(db)
	require.NoError(t, err)
	assert.Equal(t, MinAllocated+1, id3)
	assert.Equal(t, 2, a.Refs(id1))

	assert.False(t, a.Release(id1))
	assert.True(t, a.Release(id1), "last reference frees")
	assert.False(t, a.Release(id1))
	_, ok := a.Lookup(web)
	assert.False(t, ok)

	// A freed ID is not handed to the next label set, nor back to the
	// same one: the search goes on from where it stopped.
	id4, err := a.Acquire(web)
	require.NoError(t, err)
	assert.Equal(t, MinAllocated+2, id4)

	got, ok := a.Labels(id3)
	require.True(t, ok)
	assert.True(t, got.Equal(db))
	host, ok := a.Labels(Host)
	require.True(t, ok)
	assert.Equal(t, "reserved:host", host.String())

	list := a.List()
	require.Len(t, list, 5)
	assert.Equal(t, []ID{Host, World, RemoteNode, id3, id4},
		[]ID{list[0].ID, list[1].ID, list[2].ID, list[3].ID, list[4].ID})
}

func TestAllocatorRejects(t *testing.T) {
	a := NewAllocator()
	_, err := a.Acquire(nil)
	assert.Error(t, err)
	_, err = a.Acquire(Labels{{Source: SourceReserved, Key: "host"}})
	assert.Error(t, err)
	_, err = a.Acquire(Labels{{Source: "k8s", Key: "b"}, {Source: "k8s", Key: "a"}})
	assert.ErrorContains(t, err, "not canonical")
}

func TestAllocatorWrapsOnlyWhenExhausted(t *testing.T) {
	a := newAllocator(256, 259) // four IDs
	var ids []ID
	for _, v := range []string{"a", "b", "c", "d"} {
		id, err := a.Acquire(lbl("k8s:x=" + v))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	assert.Equal(t, []ID{256, 257, 258, 259}, ids)
	_, err := a.Acquire(lbl("k8s:x=e"))
	assert.ErrorIs(t, err, ErrExhausted)

	a.Release(257)
	a.Release(256)
	id, err := a.Acquire(lbl("k8s:x=e"))
	require.NoError(t, err)
	assert.Equal(t, ID(256), id, "after the wrap, the lowest free ID")
	id, err = a.Acquire(lbl("k8s:x=f"))
	require.NoError(t, err)
	assert.Equal(t, ID(257), id)
}

func TestAllocatorSnapshotRestore(t *testing.T) {
	a := NewAllocator()
	web := lbl("k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop")
	db := lbl("k8s:app=db", "k8s:io.kubernetes.pod.namespace=shop")
	gone := lbl("k8s:app=gone", "k8s:io.kubernetes.pod.namespace=shop")
	idWeb, _ := a.Acquire(web)
	idGone, _ := a.Acquire(gone)
	idDB, _ := a.Acquire(db)
	a.Release(idGone)

	raw, err := json.Marshal(a.Snapshot())
	require.NoError(t, err)

	var s Snapshot
	require.NoError(t, json.Unmarshal(raw, &s))
	b := NewAllocator()
	require.NoError(t, b.Restore(s))
	assert.Equal(t, 0, b.Refs(idWeb), "restored identities hold no references")

	// After a restart the same labels get the same numbers, and new ones
	// continue after the last ID handed out before the restart.
	got, err := b.Acquire(db)
	require.NoError(t, err)
	assert.Equal(t, idDB, got)
	fresh, err := b.Acquire(gone)
	require.NoError(t, err)
	assert.Equal(t, idDB+1, fresh)

	assert.Equal(t, 1, b.Prune(), "web was not acquired again")
	_, ok := b.Labels(idWeb)
	assert.False(t, ok)

	assert.ErrorContains(t, b.Restore(s), "in use")
}

func TestAllocatorRestoreRejectsBadSnapshots(t *testing.T) {
	web := lbl("k8s:app=web")
	tests := []struct {
		name string
		s    Snapshot
		want string
	}{
		{"reserved range", Snapshot{Identities: []SnapshotEntry{{ID: 6, Labels: web}}}, "outside"},
		{"cidr range", Snapshot{Identities: []SnapshotEntry{{ID: LocalCIDRBase, Labels: web}}}, "outside"},
		{"duplicate id", Snapshot{Identities: []SnapshotEntry{{ID: 300, Labels: web}, {ID: 300, Labels: lbl("k8s:app=db")}}}, "twice"},
		{"duplicate labels", Snapshot{Identities: []SnapshotEntry{{ID: 300, Labels: web}, {ID: 301, Labels: web}}}, "same labels"},
		{"empty labels", Snapshot{Identities: []SnapshotEntry{{ID: 300}}}, "empty"},
		{"bad next", Snapshot{Next: 3}, "next"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := NewAllocator()
			assert.ErrorContains(t, a.Restore(tt.s), tt.want)
		})
	}
}
