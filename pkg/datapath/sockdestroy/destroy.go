package sockdestroy

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"runtime"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Methods of destroying sockets, as Method names them.
const (
	// Iterator runs a BPF socket iterator that calls bpf_sock_destroy
	// (Linux 6.5+).
	Iterator = "bpf-iterator"
	// SockDiag dumps sockets and destroys them with SOCK_DESTROY over
	// sock_diag netlink (CONFIG_INET_DIAG_DESTROY).
	SockDiag = "sock-diag"
)

// Destroyer destroys the connected UDP sockets of removed backends, by
// whichever method the kernel offers. The datapath builds it
// (datapath.Datapath.SocketDestroyer) from its loaded objects.
type Destroyer struct {
	// Iter is the socket iterator program; nil when it did not load,
	// IterErr saying why (kernels before 6.5 lack bpf_sock_destroy).
	Iter    *ebpf.Program
	IterErr error
	// ForceSockDiag uses sock_diag even where the iterator loaded.
	ForceSockDiag bool
	// SetTargets lists backends in sl_sock_destroy, where the iterator
	// looks sockets' peers up; the func it returns unlists them.
	SetTargets func(backends []netip.AddrPort) (unset func(), err error)
	// Counted adds n to the sockets-destroyed counter (the iterator
	// counts its own in BPF).
	Counted func(n int) error
}

// errNetnsGone says a namespace vanished (its process exited) between
// being listed and being entered: it has no sockets left to destroy.
var errNetnsGone = errors.New("network namespace is gone")

// Method names how DestroyUDP destroys sockets: the BPF iterator when it
// loaded (unless ForceSockDiag), else sock_diag netlink when the kernel
// supports SOCK_DESTROY. The error says why neither is available.
func (d *Destroyer) Method() (string, error) {
	if d.IterErr == nil && !d.ForceSockDiag {
		return Iterator, nil
	}
	err := ProbeSockDiag()
	switch {
	case err == nil:
		return SockDiag, nil
	case d.IterErr == nil:
		return "", fmt.Errorf("destroy sockets through sock_diag (forced): %w", err)
	default:
		return "", fmt.Errorf("socket destruction unavailable: %w; fallback: sock_diag: %w", d.IterErr, err)
	}
}

// DestroyUDP destroys the connected UDP sockets whose peer is one of
// backends, in each of the network namespaces (paths such as
// /proc/<pid>/ns/net): neither method sees beyond its own namespace. A
// namespace that is gone by the time it is entered is skipped. Only AF_INET
// sockets are destroyed for IPv4 backends, as socket LB translates IPv4
// connect() only; sock_diag also destroys AF_INET6 sockets for IPv6 backends.
func (d *Destroyer) DestroyUDP(backends []netip.AddrPort, netns []string) error {
	method, err := d.Method()
	if err != nil {
		return err
	}
	if len(backends) == 0 || len(netns) == 0 {
		return nil
	}
	if method == SockDiag {
		return d.destroyUDPSockDiag(backends, netns)
	}
	unset, err := d.SetTargets(backends)
	if err != nil {
		return fmt.Errorf("list backends to destroy sockets of: %w", err)
	}
	defer unset()

	it, err := link.AttachIter(link.IterOptions{Program: d.Iter})
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
