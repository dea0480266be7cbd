package datapath

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
)

// AttachMode is how programs are hooked to an interface.
type AttachMode string

const (
	// AttachTCX uses tcx links (Linux 6.6+): pinned, anchored, no netlink.
	AttachTCX AttachMode = "tcx"
	// AttachTC uses a clsact qdisc and direct-action cls_bpf filters.
	AttachTC AttachMode = "tc"
)

// Legacy tc filter identity. Sluice only ever replaces or deletes filters
// carrying this priority, handle and a name with our prefix, so filters a
// CNI installed on the same clsact are never touched.
const (
	DefaultTCPriority = 1
	tcHandle          = 0x51CE
	filterNamePrefix  = "sluice"
)

// Attacher attaches the endpoint programs to host-side interfaces.
type Attacher struct {
	mode AttachMode
	root string
	// tag marks this agent's legacy tc filters (a hash of the bpf root), so
	// agents sharing a network namespace never remove each other's filters.
	tag      string
	priority uint16
	// Programs by hook: pod interfaces and uplinks.
	progs map[string]*ebpf.Program
}

// NewAttacher returns an attacher for dp's programs. priority is the legacy
// tc filter priority (lower runs first); 0 means DefaultTCPriority.
func NewAttacher(dp *Datapath, mode AttachMode, priority uint16) (*Attacher, error) {
	if priority == 0 {
		priority = DefaultTCPriority
	}
	if mode != AttachTCX && mode != AttachTC {
		return nil, fmt.Errorf("unknown attach mode %q: use tcx or tc", mode)
	}
	if err := os.MkdirAll(filepath.Join(dp.cfg.BPFRoot, "links"), 0o700); err != nil {
		return nil, fmt.Errorf("create links dir: %w", err)
	}
	h := fnv.New32a()
	h.Write([]byte(dp.cfg.BPFRoot))
	return &Attacher{
		mode: mode, root: dp.cfg.BPFRoot, priority: priority, tag: fmt.Sprintf("%08x", h.Sum32()),
		progs: map[string]*ebpf.Program{
			bpfobj.EndpointProgSlFromEp: dp.objs.SlFromEp, bpfobj.EndpointProgSlToEp: dp.objs.SlToEp,
			bpfobj.HostProgSlFromNetdev: dp.host.SlFromNetdev, bpfobj.HostProgSlToNetdev: dp.host.SlToNetdev,
		},
	}, nil
}

// Mode reports the attach mode in use.
func (a *Attacher) Mode() AttachMode { return a.mode }

type hook struct {
	name     string // "ingress" or "egress" of the interface, with a prefix for uplinks
	progName string
	tcx      ebpf.AttachType
	parent   uint32
}

func (a *Attacher) prog(h hook) *ebpf.Program { return a.progs[h.progName] }

// The host-side interface's ingress carries what the pod sends (pod
// egress); its egress carries what the pod receives (pod ingress).
var hooks = []hook{
	{"ingress", bpfobj.EndpointProgSlFromEp, ebpf.AttachTCXIngress, netlink.HANDLE_MIN_INGRESS},
	{"egress", bpfobj.EndpointProgSlToEp, ebpf.AttachTCXEgress, netlink.HANDLE_MIN_EGRESS},
}

// Uplinks carry the node's traffic with the outside.
var uplinkHooks = []hook{
	{"uplink-ingress", bpfobj.HostProgSlFromNetdev, ebpf.AttachTCXIngress, netlink.HANDLE_MIN_INGRESS},
	{"uplink-egress", bpfobj.HostProgSlToNetdev, ebpf.AttachTCXEgress, netlink.HANDLE_MIN_EGRESS},
}

// Attach hooks the endpoint programs to a pod's interface, replacing in
// place whatever Sluice attached there before (an earlier agent's
// programs), so there is never a moment without a program.
func (a *Attacher) Attach(ifindex int) error { return a.attach(ifindex, hooks) }

// AttachUplink hooks the uplink programs to one of the node's uplinks.
func (a *Attacher) AttachUplink(ifindex int) error { return a.attach(ifindex, uplinkHooks) }

// DetachUplink removes the uplink programs.
func (a *Attacher) DetachUplink(ifindex int) error {
	return errors.Join(a.detachTCX(ifindex, uplinkHooks), a.detachTC(ifindex, uplinkHooks))
}

func (a *Attacher) attach(ifindex int, hs []hook) error {
	var err error
	for _, h := range hs {
		if a.mode == AttachTCX {
			err = a.attachTCX(ifindex, h)
		} else {
			err = a.attachTC(ifindex, h)
		}
		if err != nil {
			return fmt.Errorf("attach %s to ifindex %d %s: %w", h.progName, ifindex, h.name, err)
		}
	}
	// Attaching in one mode after the other (a --attach-mode change across
	// a restart) must not leave both running.
	if a.mode == AttachTCX {
		return a.detachTC(ifindex, hs)
	}
	return a.detachTCX(ifindex, hs)
}

// Detach removes Sluice's endpoint programs from the interface; other
// programs stay.
func (a *Attacher) Detach(ifindex int) error {
	return errors.Join(a.detachTCX(ifindex, hooks), a.detachTC(ifindex, hooks))
}

func (a *Attacher) linkPin(ifindex int, dir string) string {
	return filepath.Join(a.root, "links", fmt.Sprintf("tcx_%d_%s", ifindex, dir))
}

func (a *Attacher) attachTCX(ifindex int, h hook) error {
	pin := a.linkPin(ifindex, h.name)
	prog := a.prog(h)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		info, ierr := l.Info()
		if ierr == nil && info.TCX() != nil && int(info.TCX().Ifindex) == ifindex {
			uerr := l.Update(prog)
			l.Close()
			if uerr == nil {
				return nil
			}
		} else {
			l.Close()
		}
		// A link whose interface is gone (or that cannot be updated):
		// drop the pin and attach afresh.
		_ = os.Remove(pin)
	}
	// Head: Sluice runs before the CNI's programs so that a redirect by the
	// CNI can never bypass our checks; we always pass on with TCX_NEXT.
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex, Program: prog, Attach: h.tcx, Anchor: link.Head(),
	})
	if err != nil {
		return err
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		return fmt.Errorf("pin link %s: %w", pin, err)
	}
	return nil
}

func (a *Attacher) detachTCX(ifindex int, hs []hook) error {
	var errs []error
	for _, h := range hs {
		pin := a.linkPin(ifindex, h.name)
		l, err := link.LoadPinnedLink(pin, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("load link %s: %w", pin, err))
			continue
		}
		if err := l.Unpin(); err != nil {
			errs = append(errs, err)
		}
		l.Close() // last reference: the kernel detaches the program
	}
	return errors.Join(errs...)
}

// PinnedLinkIfindexes lists the interfaces that have a pinned tcx link.
func (a *Attacher) PinnedLinkIfindexes() ([]int, error) {
	entries, err := os.ReadDir(filepath.Join(a.root, "links"))
	if err != nil {
		return nil, err
	}
	seen := map[int]bool{}
	var out []int
	for _, e := range entries {
		parts := strings.Split(e.Name(), "_")
		if len(parts) != 3 || parts[0] != "tcx" {
			continue
		}
		idx, err := strconv.Atoi(parts[1])
		if err != nil || seen[idx] {
			continue
		}
		seen[idx] = true
		out = append(out, idx)
	}
	return out, nil
}

// filterName is "sluice-<program>-<root tag>".
func (a *Attacher) filterName(h hook) string {
	return filterNamePrefix + "-" + h.progName + "-" + a.tag
}

func ensureClsact(ifindex int) error {
	qdiscs, err := netlink.QdiscList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifindex}})
	if err != nil {
		return fmt.Errorf("list qdiscs: %w", err)
	}
	for _, q := range qdiscs {
		if q.Type() == "clsact" {
			return nil
		}
	}
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	return nil
}

// ourFilter finds the filter at Sluice's priority and handle. A filter
// there that this agent did not create (another program, or another
// agent's Sluice filter) is an error: we never replace what is not ours.
func (a *Attacher) ourFilter(ifindex int, h hook) (*netlink.BpfFilter, error) {
	filters, err := netlink.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}, h.parent)
	if err != nil {
		return nil, fmt.Errorf("list %s filters: %w", h.name, err)
	}
	for _, f := range filters {
		attrs := f.Attrs()
		if attrs.Priority != a.priority || attrs.Handle != tcHandle {
			continue
		}
		bf, ok := f.(*netlink.BpfFilter)
		if !ok || !strings.HasPrefix(bf.Name, filterNamePrefix+"-") {
			return nil, fmt.Errorf("a %s filter that Sluice did not create holds priority %d handle %#x: choose another --tc-priority", f.Type(), a.priority, tcHandle)
		}
		if !strings.HasSuffix(bf.Name, "-"+a.tag) {
			return nil, fmt.Errorf("%w: tc filter %q at priority %d belongs to another sluice agent (another --bpf-root) in this network namespace: give each agent its own --tc-priority", errOtherAgent, bf.Name, a.priority)
		}
		return bf, nil
	}
	return nil, nil
}

func (a *Attacher) attachTC(ifindex int, h hook) error {
	if err := ensureClsact(ifindex); err != nil {
		return err
	}
	if _, err := a.ourFilter(ifindex, h); err != nil {
		return err
	}
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex, Parent: h.parent, Handle: tcHandle,
			Priority: a.priority, Protocol: unix.ETH_P_ALL,
		},
		Fd: a.prog(h).FD(), Name: a.filterName(h), DirectAction: true,
	}
	// Replace is atomic: the old program runs until the new one is in.
	if err := netlink.FilterReplace(f); err != nil {
		return fmt.Errorf("replace tc filter: %w", err)
	}
	return nil
}

var errOtherAgent = errors.New("not this agent's filter")

func (a *Attacher) detachTC(ifindex int, hs []hook) error {
	var errs []error
	for _, h := range hs {
		f, err := a.ourFilter(ifindex, h)
		if errors.Is(err, errOtherAgent) {
			continue // another agent's: not ours to remove
		}
		if err != nil {
			if isNoDevice(err) {
				return nil
			}
			errs = append(errs, err)
			continue
		}
		if f == nil || f.Name != a.filterName(h) {
			continue // nothing, or Sluice's filter of another role (uplink vs endpoint)
		}
		if err := netlink.FilterDel(f); err != nil && !isNoDevice(err) {
			errs = append(errs, fmt.Errorf("delete tc filter: %w", err))
		}
	}
	return errors.Join(errs...)
}

func isNoDevice(err error) bool {
	return errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL)
}

// HaveTCX probes for tcx support with an attach to an interface that cannot
// exist: ENODEV means the kernel knows tcx, ErrNotSupported that it does not.
func HaveTCX(dp *Datapath) bool { return haveTCX(dp.objs.SlFromEp) }

// haveTCX probes with prog, any SchedCLS program.
func haveTCX(prog *ebpf.Program) bool {
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: math.MaxInt32, Program: prog, Attach: ebpf.AttachTCXIngress,
	})
	if err == nil {
		l.Close()
		return true
	}
	return !errors.Is(err, ebpf.ErrNotSupported)
}
