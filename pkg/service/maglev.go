package service

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// MaglevTable fills a lookup table of m entries with indexes into backends,
// using the population algorithm of the Maglev paper (Eisenbud et al., NSDI
// 2016, §3.4): each backend has a permutation of the slots given by an
// offset and a skip derived from two hashes of its name, and backends take
// turns claiming their next free preferred slot until the table is full.
//
// Backend names must be stable and unique (BackendKey.String); the result
// does not depend on their order, and the hashes (FNV-1a 64 of the seed and
// name, finalised with two different mixers) do not depend on the process,
// so every node computes the same table from the same inputs. Changing the
// hash changes every table in the cluster: treat it as a wire format.
//
// Properties: every entry is a valid index; each backend gets ⌊m/N⌋ or
// ⌈m/N⌉ entries (backends take one slot per round); removing one of N
// backends moves little more than its own 1/N of the entries, provided m is
// much larger than N. If N > m only m backends receive entries.
//
// It returns nil for no backends. m must be prime (see MaglevTableSizes):
// otherwise a backend's permutation may not reach every slot and the fill
// would not terminate, so MaglevTable panics.
func MaglevTable(backends []string, m uint32, seed string) []int {
	if len(backends) == 0 {
		return nil
	}
	if !isPrime(m) {
		panic(fmt.Sprintf("service: maglev table size %d is not prime", m))
	}
	// Populate in name order so that the caller's order does not matter.
	order := make([]int, len(backends))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmpString(backends[a], backends[b]) })

	n := len(order)
	pos := make([]uint32, n)  // next preferred slot of each backend
	skip := make([]uint32, n) // step through its permutation, in [1, m-1]
	for i, b := range order {
		h := nameHash(seed, backends[b])
		pos[i] = uint32(fmix64(h^0x9e3779b97f4a7c15) % uint64(m))
		skip[i] = uint32(fmix64(h^0xc2b2ae3d27d4eb4f)%uint64(m-1)) + 1
	}

	table := make([]int, m)
	for i := range table {
		table[i] = -1
	}
	for filled := uint32(0); ; {
		for i, b := range order {
			c := pos[i]
			for table[c] >= 0 {
				c = next(c, skip[i], m)
			}
			table[c] = b
			pos[i] = next(c, skip[i], m)
			if filled++; filled == m {
				return table
			}
		}
	}
}

// next steps through a permutation; 64-bit so that c+skip cannot overflow.
func next(c, skip, m uint32) uint32 { return uint32((uint64(c) + uint64(skip)) % uint64(m)) }

// nameHash is FNV-1a 64 over the length-prefixed seed followed by the name,
// so that no (seed, name) pair collides with another by concatenation.
func nameHash(seed, name string) uint64 {
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64)
	var l [8]byte
	binary.LittleEndian.PutUint64(l[:], uint64(len(seed)))
	for _, c := range l {
		h = (h ^ uint64(c)) * prime64
	}
	for i := 0; i < len(seed); i++ {
		h = (h ^ uint64(seed[i])) * prime64
	}
	for i := 0; i < len(name); i++ {
		h = (h ^ uint64(name[i])) * prime64
	}
	return h
}

// fmix64 is MurmurHash3's finaliser: FNV's low bits are weak for short,
// similar names such as addresses in one subnet, and the offset and skip are
// taken modulo m.
func fmix64(k uint64) uint64 {
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	k ^= k >> 33
	return k
}

func isPrime(m uint32) bool {
	if m < 2 {
		return false
	}
	for d := uint64(2); d*d <= uint64(m); d++ {
		if uint64(m)%d == 0 {
			return false
		}
	}
	return true
}
