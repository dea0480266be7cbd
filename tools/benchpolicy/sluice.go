package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/datapath/events"
	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

// sluiceRun is Sluice's datapath loaded in this process and attached to the
// node's pod interfaces, the way the agent's endpoint manager does it:
// endpoint entries first, then the programs (tcx, pinned links), with the
// ipcache and the server's policy written before the first packet. Close
// undoes all of it, also after a partial start.
type sluiceRun struct {
	root     string
	lock     *datapath.RootLock
	dp       *datapath.Datapath
	att      *datapath.Attacher
	attached []int
	rd       *events.Reader
	drained  chan struct{}
	netns    string
}

// endpointSpec is one pod as an endpoint of the node.
type endpointSpec struct {
	pod      *harness.Pod
	id       uint32
	identity uint32
	flags    uint32
}

// startSluice loads the datapath under root, makes eps endpoints with the
// server's policy p (entries are written only for endpoints with policy
// flags) and ipcache ipc, and attaches the programs to each pod's host-side
// veth in the node's netns.
func startSluice(node *harness.Node, root string, rules int, eps []endpointSpec, serverID uint32, p datapath.EndpointPolicy, ipc map[netip.Prefix]datapath.IPCacheEntry) (_ *sluiceRun, err error) {
	s := &sluiceRun{root: root, netns: node.NetnsPath}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()
	if s.lock, err = datapath.LockRoot(root); err != nil {
		return s, err
	}
	cfg := datapath.Config{
		BPFRoot: root,
		// Room for every connection of a run: each has an entry per
		// endpoint, closed entries live 10s, and maps start empty for
		// every run, so no GC is needed.
		CTMax:        524288,
		PolicyMapMax: uint32(max(16384, rules)),
		IPCacheMax:   uint32(max(65536, 2*rules)),
	}
	if s.dp, err = datapath.Load(cfg, nil); err != nil {
		return s, err
	}
	// Drain events as the agent does: every new connection emits one.
	if s.rd, err = events.NewReader(s.dp.EventRing()); err != nil {
		return s, err
	}
	s.drained = make(chan struct{})
	go func() {
		defer close(s.drained)
		for {
			if _, err := s.rd.Read(); errors.Is(err, events.ErrClosed) {
				return
			}
		}
	}()
	// tcx only: the detach check between variants queries tcx links.
	if !datapath.HaveTCX(s.dp) {
		return s, errors.New("this kernel lacks tcx (Linux 6.6+), which the benchmark attaches with")
	}
	if s.att, err = datapath.NewAttacher(s.dp, datapath.AttachTCX, 0); err != nil {
		return s, err
	}
	m := s.dp.Maps()
	want := map[netip.Prefix]datapath.IPCacheEntry{}
	for k, v := range ipc {
		want[k] = v
	}
	ifindex := map[uint32]int{}
	err = harness.InNetns(node.NetnsPath, func() error {
		for _, e := range eps {
			ifc, err := net.InterfaceByName(e.pod.HostIfName)
			if err != nil {
				return fmt.Errorf("find %s's host veth %s: %w", e.pod, e.pod.HostIfName, err)
			}
			ifindex[e.id] = ifc.Index
		}
		return nil
	})
	if err != nil {
		return s, err
	}
	for _, e := range eps {
		entry := datapath.EndpointEntry{IfIndex: uint32(ifindex[e.id]), ID: e.id, IPv4: e.pod.IP, Identity: e.identity, PolicyFlags: e.flags}
		want[netip.PrefixFrom(e.pod.IP, 32)] = datapath.IPCacheEntry{Identity: e.identity, EndpointID: e.id}
		if ip6 := e.pod.IPv6(); ip6.IsValid() {
			// A dual-stack pod: its IPv6 address is its own too
			// (anti-spoofing) and names its identity.
			entry.IPv6 = ip6
			want[netip.PrefixFrom(ip6, 128)] = datapath.IPCacheEntry{Identity: e.identity, EndpointID: e.id}
		}
		if err := m.PutEndpoint(entry); err != nil {
			return s, err
		}
		if e.id == serverID && e.flags != 0 {
			if err := m.WriteEndpointPolicy(e.id, p); err != nil {
				return s, err
			}
		}
	}
	if _, _, err := m.SyncIPCache(want); err != nil {
		return s, err
	}
	if _, err := m.BumpPolicyRevision(); err != nil {
		return s, err
	}
	err = harness.InNetns(node.NetnsPath, func() error {
		for _, e := range eps {
			s.attached = append(s.attached, ifindex[e.id])
			if err := s.att.Attach(ifindex[e.id]); err != nil {
				return err
			}
		}
		return nil
	})
	return s, err
}

// Close detaches the programs, closes the datapath and removes its bpffs
// root (maps and link pins).
func (s *sluiceRun) Close() error {
	var errs []error
	if s.att != nil && len(s.attached) > 0 {
		errs = append(errs, harness.InNetns(s.netns, func() error {
			var errs []error
			for _, idx := range s.attached {
				errs = append(errs, s.att.Detach(idx))
			}
			return errors.Join(errs...)
		}))
		s.attached = nil
	}
	if s.rd != nil {
		s.rd.Close()
		<-s.drained
		s.rd = nil
	}
	if s.dp != nil {
		errs = append(errs, s.dp.Close())
		s.dp = nil
	}
	if s.lock != nil {
		errs = append(errs, s.lock.Close())
		s.lock = nil
	}
	if err := os.RemoveAll(s.root); err != nil {
		errs = append(errs, fmt.Errorf("remove bpf root %s: %w", s.root, err))
	}
	return errors.Join(errs...)
}

// verifyDetached fails if a BPF program is attached (tcx) to one of the
// interfaces of the netns at path.
func verifyDetached(path string) error {
	var found []string
	err := harness.InNetns(path, func() (err error) {
		found, err = benchkit.AttachedTCX()
		return err
	})
	if err != nil {
		return err
	}
	return benchkit.StillAttached(found)
}

// sluiceRoot is where a run's datapath is pinned: below the node's bpffs
// directory, which the harness removes at cleanup whatever happened.
func sluiceRoot(node *harness.Node) string { return filepath.Join(node.BPFRoot, "sluice") }
