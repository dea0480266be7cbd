package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

// bpfQueryEffective is BPF_F_QUERY_EFFECTIVE: include programs inherited
// from ancestor cgroups, which is what a pod's sockets actually run.
const bpfQueryEffective = 1

// runVerifyDetached runs in the node's netns and fails if any BPF program
// is still attached to one of its interfaces (tcx, both directions) or
// runs, effectively, for one of the given cgroups (socket LB hooks).
func runVerifyDetached(cgroups []string) error {
	found, err := benchkit.AttachedTCX()
	if err != nil {
		return err
	}
	for _, cg := range cgroups {
		f, err := os.Open(cg)
		if err != nil {
			return err
		}
		for _, at := range []ebpf.AttachType{ebpf.AttachCGroupInet4Connect, ebpf.AttachCGroupUDP4Sendmsg, ebpf.AttachCGroupUDP4Recvmsg, ebpf.AttachCgroupInet4GetPeername} {
			r, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at, QueryFlags: bpfQueryEffective})
			if err != nil {
				f.Close()
				return fmt.Errorf("query %s on %s: %w", at, cg, err)
			}
			for _, p := range r.Programs {
				found = append(found, fmt.Sprintf("cgroup %s %s: program %d", cg, at, p.ID))
			}
		}
		f.Close()
	}
	return benchkit.StillAttached(found)
}

// bpftoolSluiceLinks counts, from `bpftool -j link show` and `bpftool -j
// prog show` output, the links whose program is one of Sluice's (names
// start with "sl_"). bpftool lists the whole machine's links whatever the
// netns it runs in, so concurrent Sluice tests on the same machine show up
// too: this is a report, the per-interface and per-cgroup query above is
// the check.
func bpftoolSluiceLinks(linksJSON, progsJSON []byte) (int, error) {
	var links []struct {
		ProgID int `json:"prog_id"`
	}
	var progs []struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
	}
	if err := json.Unmarshal(linksJSON, &links); err != nil {
		return 0, fmt.Errorf("parse bpftool link show: %w", err)
	}
	if err := json.Unmarshal(progsJSON, &progs); err != nil {
		return 0, fmt.Errorf("parse bpftool prog show: %w", err)
	}
	names := map[int]string{}
	for _, p := range progs {
		names[p.ID] = p.Name
	}
	n := 0
	for _, l := range links {
		if strings.HasPrefix(names[l.ProgID], "sl_") {
			n++
		}
	}
	return n, nil
}
