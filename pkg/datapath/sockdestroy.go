package datapath

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"runtime"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/datapath/internal/raw"
)

// Methods of destroying sockets, as SockDestroyMethod names them.
const (
	// SockDestroyIterator runs a BPF socket iterator that calls
	// bpf_sock_destroy (Linux 6.5+).
	SockDestroyIterator = "bpf-iterator"
	// SockDestroyDiag dumps sockets and destroys them with SOCK_DESTROY
	// over sock_diag netlink (CONFIG_INET_DIAG_DESTROY).
	SockDestroyDiag = "sock-diag"
)

// errNetnsGone says a namespace vanished (its process exited) between
// being listed and being entered: it has no sockets left to destroy.
var errNetnsGone = errors.New("network namespace is gone")

// CanDestroySockets reports whether the kernel let the BPF socket iterator
// load, and why not. SockDestroyMethod says whether sockets can be
// destroyed at all.
func (dp *Datapath) CanDestroySockets() error { return dp.iterErr }

// SockDestroyMethod names how DestroyUDPSockets destroys sockets: the BPF
// iterator when it loaded (unless Config.ForceSockDiag), else sock_diag
// netlink when the kernel supports SOCK_DESTROY. The error says why
// neither is available.
func (dp *Datapath) SockDestroyMethod() (string, error) {
	if dp.iterErr == nil && !dp.cfg.ForceSockDiag {
		return SockDestroyIterator, nil
	}
	err := probeSockDiagDestroy()
	switch {
	case err == nil:
		return SockDestroyDiag, nil
	case dp.iterErr == nil:
		return "", fmt.Errorf("destroy sockets through sock_diag (forced): %w", err)
	default:
		return "", fmt.Errorf("socket destruction unavailable: %w; fallback: sock_diag: %w", dp.iterErr, err)
	}
}

// DestroyUDPSockets destroys the connected UDP sockets whose peer is one of
// backends, in each of the network namespaces (paths such as
// /proc/<pid>/ns/net): neither method sees beyond its own namespace. A
// namespace that is gone by the time it is entered is skipped. Only AF_INET
// sockets are destroyed for IPv4 backends, as socket LB translates IPv4
// connect() only; sock_diag also destroys AF_INET6 sockets for IPv6 backends.
func (dp *Datapath) DestroyUDPSockets(backends []netip.AddrPort, netns []string) error {
	method, err := dp.SockDestroyMethod()
	if err != nil {
		return err
	}
	if len(backends) == 0 || len(netns) == 0 {
		return nil
	}
	if method == SockDestroyDiag {
		return dp.destroyUDPSockDiag(backends, netns)
	}
	keys := make([]bpfobj.EndpointSlSockDestroyKey, 0, len(backends))
	vals := make([]uint8, 0, len(backends))
	for _, b := range backends {
		k := bpfobj.EndpointSlSockDestroyKey{Port: raw.Htons(b.Port()), Proto: unix.IPPROTO_UDP}
		k.Addr.Addr6 = raw.AddrTo(b.Addr())
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
		if err := runInNetns(ns, func() error { return readIter(it) }); err != nil && !errors.Is(err, errNetnsGone) {
			errs = append(errs, fmt.Errorf("run socket iterator in %s: %w", ns, err))
		}
	}
	return errors.Join(errs...)
}

// readIter runs the iterator over the sockets of the calling thread's
// namespace.
func readIter(it *link.Iter) error {
	rd, err := it.Open()
	if err != nil {
		return fmt.Errorf("open socket iterator: %w", err)
	}
	defer rd.Close()
	if _, err := io.Copy(io.Discard, rd); err != nil {
		return fmt.Errorf("read socket iterator: %w", err)
	}
	return nil
}

// runInNetns calls f on a thread inside netns. The thread is never
// returned to the Go scheduler: it ends with its goroutine. It returns
// errNetnsGone if netns no longer exists.
func runInNetns(netns string, f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := os.Open(netns)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			done <- errNetnsGone
			return
		}
		if err != nil {
			done <- fmt.Errorf("open network namespace: %w", err)
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		done <- f()
	}()
	return <-done
}
