package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// walkChunk is how many entries one batch lookup reads.
const walkChunk = 4096

// walk calls fn for every entry of m, reading it in batches
// (BPF_MAP_LOOKUP_BATCH, Linux 5.6+: one system call per walkChunk
// entries, where iterating costs two per entry) and falling back to
// key-by-key iteration where batches are not supported. The CT GC walks a
// table of hundreds of thousands of entries on every pass; the system
// calls were most of its cost. fn returning false stops the walk.
//
// Like iteration, a batch walk of a hash map that changes meanwhile may
// miss or repeat entries that moved; callers re-check before acting.
func walk[K, V any](m *ebpf.Map, fn func(k *K, v *V) bool) error {
	keys := make([]K, walkChunk)
	vals := make([]V, walkChunk)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			if !fn(&keys[i], &vals[i]) {
				return nil
			}
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return nil
		case errors.Is(err, ebpf.ErrNotSupported) && n == 0:
			return walkIterate(m, fn)
		case err != nil:
			return fmt.Errorf("batch lookup: %w", err)
		}
	}
}

func walkIterate[K, V any](m *ebpf.Map, fn func(k *K, v *V) bool) error {
	var (
		k K
		v V
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		if !fn(&k, &v) {
			return nil
		}
	}
	return it.Err()
}
