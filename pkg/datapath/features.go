package datapath

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// Features are what the kernel offers, probed rather than read off the
// version number (distribution kernels backport).
type Features struct {
	Release string
	TCX     bool
	RingBuf bool
}

// ProbeFeatures checks the kernel for what the datapath needs. It fails
// with a message naming the missing feature when the datapath cannot run.
func ProbeFeatures(dp *Datapath) (Features, error) {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	f := Features{Release: unix.ByteSliceToString(uts.Release[:])}
	f.RingBuf = features.HaveMapType(ebpf.RingBuf) == nil
	if dp != nil {
		f.TCX = HaveTCX(dp)
	}
	if !f.RingBuf {
		return f, fmt.Errorf("kernel %s lacks BPF ring buffers (BPF_MAP_TYPE_RINGBUF, Linux 5.8+): Sluice cannot report events on it", f.Release)
	}
	return f, nil
}
