package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// KVM ioctls and constants (linux/kvm.h).
const (
	kvmGetAPIVersion       = 0xAE00
	kvmCreateVM            = 0xAE01
	kvmGetVCPUMmapSize     = 0xAE04
	kvmCreateVCPU          = 0xAE41
	kvmSetUserMemoryRegion = 0x4020AE46
	kvmRun                 = 0xAE80
	kvmExitIO              = 2
)

type kvmMemoryRegion struct {
	slot, flags            uint32
	guestPhys, size, uaddr uint64
}

// kvmUsable reports whether KVM really runs a guest here, not only whether
// /dev/kvm answers: it runs three real-mode instructions (out 0x10; hlt) at
// the reset vector and expects the port I/O exit within a second. A /dev/kvm
// without hardware virtualization underneath can create VMs that never run.
func kvmUsable() error {
	if runtime.GOARCH != "amd64" {
		return fmt.Errorf("the KVM probe knows amd64 hosts only")
	}
	kvm, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/kvm: %w", err)
	}
	if v, err := ioctl(kvm, kvmGetAPIVersion, 0); err != nil || v != 12 {
		unix.Close(kvm)
		return fmt.Errorf("KVM_GET_API_VERSION: %d, %v", v, err)
	}
	vm, err := ioctl(kvm, kvmCreateVM, 0)
	if err != nil {
		unix.Close(kvm)
		return fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	// 64 KiB just below 4 GiB: the CPU starts at CS base 0xffff0000, IP 0xfff0.
	mem, err := unix.Mmap(-1, 0, 0x10000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		return err
	}
	copy(mem[0xfff0:], []byte{0xb0, 0x42, 0xe6, 0x10, 0xf4}) // mov al,0x42; out 0x10,al; hlt
	region := kvmMemoryRegion{guestPhys: 0xffff0000, size: 0x10000, uaddr: uint64(uintptr(unsafe.Pointer(&mem[0])))}
	if _, err := ioctl(vm, kvmSetUserMemoryRegion, uintptr(unsafe.Pointer(&region))); err != nil {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION: %w", err)
	}
	vcpu, err := ioctl(vm, kvmCreateVCPU, 0)
	if err != nil {
		return fmt.Errorf("KVM_CREATE_VCPU: %w", err)
	}
	size, err := ioctl(kvm, kvmGetVCPUMmapSize, 0)
	if err != nil {
		return fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	run, err := unix.Mmap(vcpu, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap kvm_run: %w", err)
	}
	done := make(chan error, 1)
	go func() {
		// Left running (on its own thread) if KVM never returns: the
		// runner's process ends soon enough.
		runtime.LockOSThread()
		_, err := ioctl(vcpu, kvmRun, 0)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("KVM_RUN: %w", err)
		}
	case <-time.After(time.Second):
		return errors.New("KVM_RUN did not return within 1s: /dev/kvm has no working hardware virtualization underneath")
	}
	exit := *(*uint32)(unsafe.Pointer(&run[8]))
	port := *(*uint16)(unsafe.Pointer(&run[34]))
	if exit != kvmExitIO || port != 0x10 {
		return fmt.Errorf("KVM_RUN exited with reason %d (port %#x), not the expected port I/O", exit, port)
	}
	unix.Munmap(run)
	unix.Close(vcpu)
	unix.Close(vm)
	unix.Close(kvm)
	return nil
}

func ioctl(fd int, req, arg uintptr) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if errno != 0 {
		return int(r), errno
	}
	return int(r), nil
}

// accelFor picks qemu's accelerator for a guest of arch: KVM when it really
// works (and the guest is the host's architecture), else TCG.
func accelFor(arch, want string) (accel, why string) {
	switch want {
	case "kvm", "tcg":
		return want, "asked for"
	}
	if arch != runtime.GOARCH {
		return "tcg", fmt.Sprintf("%s guest on an %s host", arch, runtime.GOARCH)
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return "tcg", "no /dev/kvm"
	}
	if err := kvmUsable(); err != nil {
		return "tcg", err.Error()
	}
	return "kvm", "/dev/kvm runs guests"
}
