package datapath

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// SkbContext is the head of struct __sk_buff, up to ifindex, as
// BPF_PROG_TEST_RUN takes it for an input context. The kernel accepts only
// Mark, Priority, IngressIfindex and Ifindex set; IngressIfindex 0 is a
// packet the node's own stack sent (the host identity), and Ifindex picks
// the device the run sees as skb->dev.
type SkbContext struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTci, VlanProto uint32
	Priority, IngressIfindex, Ifindex                                           uint32
}

// Encode returns the context as the kernel reads it.
func (c SkbContext) Encode() []byte {
	b, _ := binary.Append(nil, binary.NativeEndian, c) // fixed-size: cannot fail
	return b
}

// progTestRunAttr is the BPF_PROG_TEST_RUN member of union bpf_attr. The
// buffer addresses are unsafe.Pointers (64-bit platforms only, which is
// what Sluice builds for) so the garbage collector sees them.
type progTestRunAttr struct {
	ProgFD      uint32
	Retval      uint32
	DataSizeIn  uint32
	DataSizeOut uint32
	DataIn      unsafe.Pointer
	DataOut     unsafe.Pointer
	Repeat      uint32
	Duration    uint32
	CtxSizeIn   uint32
	CtxSizeOut  uint32
	CtxIn       unsafe.Pointer
	CtxOut      unsafe.Pointer
	Flags       uint32
	CPU         uint32
	BatchSize   uint32
	_           uint32
}

// TestRun runs a tc program once on pkt with the encoded context ctx (see
// SkbContext.Encode) and returns its verdict and the kernel's timing of
// the run. Benchmarks use it beside cilium/ebpf's Program.Run, which
// copies its buffers on every call and reports no timing, and whose
// Benchmark takes no context.
func TestRun(prog *ebpf.Program, pkt, ctx []byte) (uint32, time.Duration, error) {
	attr := progTestRunAttr{
		ProgFD:     uint32(prog.FD()),
		DataSizeIn: uint32(len(pkt)),
		DataIn:     unsafe.Pointer(&pkt[0]),
		Repeat:     1,
		CtxSizeIn:  uint32(len(ctx)),
		CtxIn:      unsafe.Pointer(&ctx[0]),
	}
	for {
		_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		if errno == unix.EINTR {
			continue
		}
		runtime.KeepAlive(pkt)
		runtime.KeepAlive(ctx)
		if errno != 0 {
			return 0, 0, fmt.Errorf("BPF_PROG_TEST_RUN: %w", errno)
		}
		return attr.Retval, time.Duration(attr.Duration), nil
	}
}
