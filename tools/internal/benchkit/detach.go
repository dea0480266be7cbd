package benchkit

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// AttachedTCX lists the BPF programs attached with tcx, in either
// direction, to any interface of the calling thread's network namespace,
// as "<interface> <attach type>: program <id>". Between variants it must
// be empty: a program left attached would run in every later
// measurement.
func AttachedTCX() ([]string, error) {
	var found []string
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, ifc := range ifs {
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			r, err := link.QueryPrograms(link.QueryOptions{Target: ifc.Index, Attach: at})
			if err != nil {
				return nil, fmt.Errorf("query %s on %s: %w", at, ifc.Name, err)
			}
			for _, p := range r.Programs {
				found = append(found, fmt.Sprintf("%s %s: program %d", ifc.Name, at, p.ID))
			}
		}
	}
	return found, nil
}

// StillAttached is nil when found, a list of attached programs, is empty,
// and an error naming them otherwise.
func StillAttached(found []string) error {
	if len(found) > 0 {
		return errors.New("still attached: " + strings.Join(found, "; "))
	}
	return nil
}
