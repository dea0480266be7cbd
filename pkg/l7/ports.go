package l7

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// PortRange is an inclusive range of proxy ports (--proxy-port-range).
type PortRange struct {
	Min, Max uint16
}

// DefaultPortRange is where proxy listeners listen unless configured.
var DefaultPortRange = PortRange{Min: 15000, Max: 15999}

// ParsePortRange reads "MIN-MAX".
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, ok := strings.Cut(s, "-")
	minPort, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	maxPort, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if !ok || err1 != nil || err2 != nil {
		return PortRange{}, fmt.Errorf("%q is not a port range: write MIN-MAX, e.g. 15000-15999", s)
	}
	r := PortRange{Min: uint16(minPort), Max: uint16(maxPort)}
	return r, r.Validate()
}

// Validate reports a range that holds no port.
func (r PortRange) Validate() error {
	if r.Min == 0 || r.Min > r.Max {
		return fmt.Errorf("proxy port range %s is empty: MIN must be at least 1 and at most MAX", r)
	}
	return nil
}

// String is "MIN-MAX".
func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

// Len is the number of ports in the range.
func (r PortRange) Len() int { return int(r.Max) - int(r.Min) + 1 }

// ErrPortsExhausted is returned when every port of the range is taken.
var ErrPortsExhausted = errors.New("proxy port range exhausted")

// Ports gives each listener key (a stable description of a rule set, see
// pkg/policy) a proxy port from the range: the lowest free one, and the
// same one for as long as the key is in use, across agent restarts too
// (Snapshot, Restore), so that the datapath's entries and Envoy's
// listeners agree after a restart without anything moving. It is not safe
// for concurrent use.
type Ports struct {
	r      PortRange
	byKey  map[string]uint16
	byPort map[uint16]string
}

// NewPorts allocates from r.
func NewPorts(r PortRange) (*Ports, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &Ports{r: r, byKey: map[string]uint16{}, byPort: map[uint16]string{}}, nil
}

// Range is the range ports are allocated from.
func (p *Ports) Range() PortRange { return p.r }

// Get returns key's port, allocating the lowest free one for a new key.
func (p *Ports) Get(key string) (uint16, error) {
	if port, ok := p.byKey[key]; ok {
		return port, nil
	}
	for port := int(p.r.Min); port <= int(p.r.Max); port++ {
		if _, used := p.byPort[uint16(port)]; !used {
			p.byKey[key], p.byPort[uint16(port)] = uint16(port), key
			return uint16(port), nil
		}
	}
	return 0, fmt.Errorf("%w: all %d ports of %s are taken by other rule sets; widen --proxy-port-range",
		ErrPortsExhausted, p.r.Len(), p.r)
}

// Key returns the key port is allocated to.
func (p *Ports) Key(port uint16) (string, bool) {
	k, ok := p.byPort[port]
	return k, ok
}

// Retain frees the ports of the keys keep refuses.
func (p *Ports) Retain(keep func(key string) bool) {
	for k, port := range p.byKey {
		if !keep(k) {
			delete(p.byKey, k)
			delete(p.byPort, port)
		}
	}
}

// Len is the number of ports allocated.
func (p *Ports) Len() int { return len(p.byKey) }

// PortsSnapshot is the saved form of Ports: key to port.
type PortsSnapshot struct {
	Ports map[string]uint16 `json:"ports"`
}

// Snapshot returns the allocations, for saving.
func (p *Ports) Snapshot() PortsSnapshot {
	return PortsSnapshot{Ports: maps.Clone(p.byKey)}
}

// Restore takes over saved allocations, before any Get. Those outside the
// range (it changed) are dropped, so their keys get new ports; so are
// duplicates of a port, whose keys after the first (in key order) do.
func (p *Ports) Restore(s PortsSnapshot) error {
	if len(p.byKey) > 0 {
		return errors.New("restore proxy ports: the allocator is already in use")
	}
	var dropped []string
	for _, k := range slices.Sorted(maps.Keys(s.Ports)) {
		port := s.Ports[k]
		if _, dup := p.byPort[port]; dup || port < p.r.Min || port > p.r.Max {
			dropped = append(dropped, k)
			continue
		}
		p.byKey[k], p.byPort[port] = port, k
	}
	if len(dropped) > 0 {
		return fmt.Errorf("restore proxy ports: %d saved ports are outside %s or taken twice, their rule sets get new ones", len(dropped), p.r)
	}
	return nil
}
