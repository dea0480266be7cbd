package datapath

import (
	"fmt"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath/sockdestroy"
)

// Kernel feature names, as the probes, the tests' skip messages and the VM
// kernel matrix (vagrant/matrix.yaml) spell them.
const (
	FeatureRingBuf         = "ringbuf"
	FeatureTCX             = "tcx"
	FeatureBPFSockDestroy  = "bpf-sock-destroy"
	FeatureSockDiagDestroy = "sock-diag-destroy"
	FeatureVerifiedInsns   = "verified-insns"
	FeatureSetRetval       = "bpf-set-retval"
)

// KernelFeature describes one probed kernel feature: the README's "Kernel
// support" table, which the VM matrix verifies.
type KernelFeature struct {
	Name string
	// What it is, for messages.
	What string
	// MinKernel is the first mainline release that has it (distribution
	// kernels may backport: the probe decides, never the version).
	MinKernel string
	// Without is what Sluice does on a kernel that lacks it.
	Without string
}

// KernelFeatures lists every feature ProbeFeatures reports.
var KernelFeatures = []KernelFeature{
	{FeatureRingBuf, "BPF ring buffer (BPF_MAP_TYPE_RINGBUF)", "5.8", "the agent refuses to start and names the feature"},
	{FeatureTCX, "tcx links (BPF_LINK_TYPE_TCX)", "6.6", "legacy tc clsact with direct-action cls_bpf filters"},
	{FeatureBPFSockDestroy, "bpf_sock_destroy kfunc in a socket iterator", "6.5", "sockets are destroyed through sock_diag SOCK_DESTROY"},
	{FeatureSockDiagDestroy, "sock_diag SOCK_DESTROY of UDP sockets (CONFIG_INET_DIAG_DESTROY, CONFIG_INET_UDP_DIAG)", "4.9", "connected UDP sockets of removed backends are not destroyed when bpf_sock_destroy is missing too"},
	{FeatureVerifiedInsns, "verified-instruction count in program info", "5.16", "not reported"},
	{FeatureSetRetval, "bpf_set_retval helper in cgroup socket-address programs", "5.18", "socket LB refuses connect() to a service without endpoints with EPERM instead of ECONNREFUSED (still at once)"},
}

// LookupKernelFeature returns the description of the named feature.
func LookupKernelFeature(name string) (KernelFeature, bool) {
	for _, f := range KernelFeatures {
		if f.Name == name {
			return f, true
		}
	}
	return KernelFeature{}, false
}

// Features are what the kernel offers, probed rather than read off the
// version number (distribution kernels backport).
type Features struct {
	Release string
	TCX     bool
	RingBuf bool
	// BPFSockDestroy: the socket iterator calling bpf_sock_destroy loaded.
	BPFSockDestroy bool
	// SockDiagDestroy: sock_diag can dump and destroy UDP sockets.
	SockDiagDestroy bool
	// VerifiedInsns: program info reports verified instructions.
	VerifiedInsns bool
	// SetRetval: cgroup socket-address programs may call bpf_set_retval.
	SetRetval bool
}

// Have reports whether the named feature (one of KernelFeatures) was found.
func (f Features) Have(name string) bool {
	switch name {
	case FeatureRingBuf:
		return f.RingBuf
	case FeatureTCX:
		return f.TCX
	case FeatureBPFSockDestroy:
		return f.BPFSockDestroy
	case FeatureSockDiagDestroy:
		return f.SockDiagDestroy
	case FeatureVerifiedInsns:
		return f.VerifiedInsns
	case FeatureSetRetval:
		return f.SetRetval
	}
	return false
}

// String lists every feature as name=yes|no, sorted by name.
func (f Features) String() string {
	var parts []string
	for _, kf := range KernelFeatures {
		v := "no"
		if f.Have(kf.Name) {
			v = "yes"
		}
		parts = append(parts, kf.Name+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// ProbeSetRetval reports whether cgroup socket-address programs may call
// bpf_set_retval (Linux 5.18). The result is cached.
func ProbeSetRetval() bool {
	return features.HaveProgramHelper(ebpf.CGroupSockAddr, asm.FnSetRetval) == nil
}

// ProbeTCX reports whether the kernel has tcx links, without a loaded
// datapath: it probes with a two-instruction program.
func ProbeTCX() bool {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, License: "GPL", Name: "sl_tcx_probe",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	if err != nil {
		return false
	}
	defer p.Close()
	return haveTCX(p)
}

// ProbeFeatures checks the kernel for what the datapath needs. It fails
// with a message naming the missing feature when the datapath cannot run.
// With a loaded datapath it also probes what depends on its programs
// (tcx, bpf_sock_destroy, verified instruction counts) and sock_diag.
func ProbeFeatures(dp *Datapath) (Features, error) {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	f := Features{Release: unix.ByteSliceToString(uts.Release[:])}
	f.RingBuf = features.HaveMapType(ebpf.RingBuf) == nil
	f.SetRetval = ProbeSetRetval()
	if dp != nil {
		f.TCX = HaveTCX(dp)
		f.BPFSockDestroy = dp.iterErr == nil
		f.SockDiagDestroy = sockdestroy.ProbeSockDiag() == nil
		if info, err := dp.objs.SlFromEp.Info(); err == nil {
			_, f.VerifiedInsns = info.VerifiedInstructions()
		}
	}
	if !f.RingBuf {
		return f, fmt.Errorf("kernel %s lacks BPF ring buffers (BPF_MAP_TYPE_RINGBUF, Linux 5.8+): Sluice cannot report events on it", f.Release)
	}
	return f, nil
}
