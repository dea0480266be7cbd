// Package raw converts addresses, ports and times to and from the forms
// the datapath's maps and event records hold them in: addresses in a
// 16-byte union (IPv4 in its first four bytes), ports in network byte
// order, times in CLOCK_MONOTONIC nanoseconds.
package raw

import (
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// AddrFrom reads an address of family (AF_INET, AF_INET6) from a map or
// record's address union.
func AddrFrom(a [16]uint8, family uint8) netip.Addr {
	if family == unix.AF_INET6 {
		return netip.AddrFrom16(a)
	}
	return netip.AddrFrom4([4]byte(a[:4]))
}

// AddrTo is a as an address union: IPv4 in the first four bytes.
func AddrTo(a netip.Addr) [16]uint8 {
	var out [16]uint8
	if a.Is4() {
		b := a.As4()
		copy(out[:], b[:])
	} else if a.IsValid() {
		out = a.As16()
	}
	return out
}

// Ntohs and Htons swap a port between host and network byte order (the
// maps store ports in network order; the host is little-endian).
func Ntohs(v uint16) uint16 { return v<<8 | v>>8 }

// Htons is Ntohs's inverse (the same swap).
func Htons(v uint16) uint16 { return v<<8 | v>>8 }

// MonotonicNow is CLOCK_MONOTONIC in nanoseconds, the datapath's clock.
func MonotonicNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// MonotonicEpoch is the wall-clock time at which CLOCK_MONOTONIC was zero.
func MonotonicEpoch() time.Time {
	return time.Now().Add(-time.Duration(MonotonicNow()))
}
