package identity

import (
	"strconv"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
)

// ID is a security identity as the datapath carries it.
type ID uint32

// Reserved identities, numbered as in Cilium so that flows read the same in
// Hubble tooling; the datapath's enum sl_identity_reserved defines them.
const (
	// Unknown is no identity: an address the ipcache does not know, or a pod
	// whose identity could not be allocated.
	Unknown ID = 0
	// Host is this node itself, and host-network pods on it.
	Host = ID(bpfobj.EndpointSlIdentityReservedSL_ID_HOST)
	// World is everything outside the cluster.
	World = ID(bpfobj.EndpointSlIdentityReservedSL_ID_WORLD)
	// RemoteNode is any other node of the cluster, and host-network pods on it.
	RemoteNode = ID(bpfobj.EndpointSlIdentityReservedSL_ID_REMOTE_NODE)
)

const (
	// MinAllocated is the first ID the Allocator hands out.
	MinAllocated = ID(bpfobj.EndpointSlIdentityReservedSL_ID_ALLOC_BASE)
	// LocalCIDRBase is the first CIDR-class ID. CIDR classes are local to
	// one endpoint's policy (pkg/policy), so the same number means different
	// address sets for different endpoints; the Allocator never hands them out.
	LocalCIDRBase = ID(bpfobj.EndpointSlIdentityReservedSL_ID_LOCAL_CIDR_BASE)
	// MaxAllocated is the last ID the Allocator hands out.
	MaxAllocated = LocalCIDRBase - 1
)

// IsReserved reports whether id is one of the fixed identities below MinAllocated.
func (id ID) IsReserved() bool { return id != Unknown && id < MinAllocated }

// IsLocalCIDR reports whether id is a per-endpoint CIDR class.
func (id ID) IsLocalCIDR() bool { return id >= LocalCIDRBase }

// String returns the number in decimal.
func (id ID) String() string { return strconv.FormatUint(uint64(id), 10) }

var reservedLabels = map[ID]Labels{
	Host:       {{Source: SourceReserved, Key: "host"}},
	World:      {{Source: SourceReserved, Key: "world"}},
	RemoteNode: {{Source: SourceReserved, Key: "remote-node"}},
}

// ReservedLabels returns the labels of a reserved identity, e.g.
// "reserved:host" for Host.
func ReservedLabels(id ID) (Labels, bool) {
	l, ok := reservedLabels[id]
	return l, ok
}
