package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// SockLBMode says which sockets socket-level load balancing serves.
type SockLBMode string

const (
	// SockLBAll translates at connect time for pods and the node.
	SockLBAll SockLBMode = "all"
	// SockLBHostOnly translates only the node's own sockets (those in the
	// agent's network namespace); pods use the per-packet path.
	SockLBHostOnly SockLBMode = "hostns-only"
	// SockLBOff leaves every translation to the per-packet path.
	SockLBOff SockLBMode = "off"
)

type sockHook struct {
	name   string
	attach ebpf.AttachType
	prog   func(dp *Datapath) *ebpf.Program
}

var sockHooks = []sockHook{
	{"connect4", ebpf.AttachCGroupInet4Connect, func(dp *Datapath) *ebpf.Program { return dp.sock.SlSockConnect4 }},
	{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, func(dp *Datapath) *ebpf.Program { return dp.sock.SlSockSendmsg4 }},
	{"recvmsg4", ebpf.AttachCGroupUDP4Recvmsg, func(dp *Datapath) *ebpf.Program { return dp.sock.SlSockRecvmsg4 }},
	{"getpeername4", ebpf.AttachCgroupInet4GetPeername, func(dp *Datapath) *ebpf.Program { return dp.sock.SlSockGetpeername4 }},
	// IPv6 frontends, and IPv4 ones at v4-mapped addresses of dual-stack
	// IPv6 sockets.
	{"connect6", ebpf.AttachCGroupInet6Connect, func(dp *Datapath) *ebpf.Program { return dp.sock.SlSockConnect6 }},
	{"sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, func(dp *Datapath) *ebpf.Program { return dp.sock.SlSockSendmsg6 }},
	{"recvmsg6", ebpf.AttachCGroupUDP6Recvmsg, func(dp *Datapath) *ebpf.Program { return dp.sock.SlSockRecvmsg6 }},
	{"getpeername6", ebpf.AttachCgroupInet6GetPeername, func(dp *Datapath) *ebpf.Program { return dp.sock.SlSockGetpeername6 }},
}

func (dp *Datapath) sockPin(h sockHook) string {
	return filepath.Join(dp.cfg.BPFRoot, "links", "cgroup_"+h.name)
}

// AttachSockLB attaches the socket-LB programs to the cgroup at path (the
// node's cgroup root, so every pod's sockets are covered), or updates the
// pinned links of a previous agent in place.
func (dp *Datapath) AttachSockLB(cgroupPath string) error {
	if err := os.MkdirAll(filepath.Join(dp.cfg.BPFRoot, "links"), 0o700); err != nil {
		return fmt.Errorf("create links dir: %w", err)
	}
	for _, h := range sockHooks {
		pin := dp.sockPin(h)
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			uerr := l.Update(h.prog(dp))
			l.Close()
			if uerr == nil {
				continue
			}
			_ = os.Remove(pin)
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: h.attach, Program: h.prog(dp)})
		if err != nil {
			return fmt.Errorf("attach %s to cgroup %s: %w", h.name, cgroupPath, err)
		}
		err = l.Pin(pin)
		l.Close()
		if err != nil {
			return fmt.Errorf("pin %s link: %w", h.name, err)
		}
	}
	return nil
}

// DetachSockLB removes the socket-LB programs (socket LB turned off).
func (dp *Datapath) DetachSockLB() error {
	var errs []error
	for _, h := range sockHooks {
		l, err := link.LoadPinnedLink(dp.sockPin(h), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, l.Unpin(), l.Close())
	}
	return errors.Join(errs...)
}

// NetnsCookie returns the cookie of the calling thread's network namespace
// (SO_NETNS_COOKIE, Linux 5.14+).
func NetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return 0, fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	var cookie uint64
	size := uint32(unsafe.Sizeof(cookie))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_NETNS_COOKIE,
		uintptr(unsafe.Pointer(&cookie)), uintptr(unsafe.Pointer(&size)), 0)
	if errno != 0 {
		return 0, fmt.Errorf("getsockopt SO_NETNS_COOKIE (Linux 5.14+): %w", errno)
	}
	return cookie, nil
}
