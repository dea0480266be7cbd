package datapath

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
)

// CanDestroySockets reports whether the kernel let the socket iterator
// load, and why not.
func (dp *Datapath) CanDestroySockets() error { return dp.iterErr }

// DestroyUDPSockets destroys the connected UDP sockets whose peer is one of
// backends, in each of the network namespaces (paths such as
// /proc/<pid>/ns/net): a socket iterator sees only its own namespace.
func (dp *Datapath) DestroyUDPSockets(backends []netip.AddrPort, netns []string) error {
	if dp.iterErr != nil {
		return dp.iterErr
	}
	if len(backends) == 0 || len(netns) == 0 {
		return nil
	}
	keys := make([]bpfobj.BpfSlSockDestroyKey, 0, len(backends))
	vals := make([]uint8, 0, len(backends))
	for _, b := range backends {
		k := bpfobj.BpfSlSockDestroyKey{Port: htons(b.Port()), Proto: unix.IPPROTO_UDP}
		k.Addr.Addr6 = addrTo(b.Addr())
		keys, vals = append(keys, k), append(vals, 1)
	}
	m := dp.objs.SlSockDestroy
	if err := batchUpdate(m, keys, vals); err != nil {
		return fmt.Errorf("list backends to destroy sockets of: %w", err)
	}
	defer func() { _ = batchDelete(m, keys) }()

	it, err := link.AttachIter(link.IterOptions{Program: dp.iter.SlDestroyUdp})
	if err != nil {
		return fmt.Errorf("create socket iterator: %w", err)
	}
	defer it.Close()
	var errs []error
	for _, ns := range netns {
		errs = append(errs, runIterIn(it, ns))
	}
	return errors.Join(errs...)
}

// runIterIn reads the iterator on a thread inside netns. The thread is
// never returned to the Go scheduler: it ends with its goroutine.
func runIterIn(it *link.Iter, netns string) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(netns)
		if err != nil {
			done <- fmt.Errorf("open %s: %w", netns, err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("enter %s: %w", netns, err)
			return
		}
		rd, err := it.Open()
		if err != nil {
			done <- fmt.Errorf("open socket iterator in %s: %w", netns, err)
			return
		}
		defer rd.Close()
		_, err = io.Copy(io.Discard, rd)
		done <- err
	}()
	return <-done
}
