// Package identity gives every pod a numeric security identity derived from its
// labels, and maps addresses to identities (the ipcache).
//
// A pod's security labels are its own labels plus its namespace's name and
// labels (see Subject). Pods with the same labels share one ID, so network
// policy is compiled once per label set rather than once per pod, and a pod
// that is created, deleted or moved between nodes changes only the ipcache,
// not the policy of the endpoints that talk to it. The numbering follows
// Cilium's: reserved identities below 256 (Host, World, RemoteNode),
// allocated identities from 256, and per-endpoint CIDR classes from
// LocalCIDRBase, which the allocator never hands out.
//
// The package is pure: no I/O and no kernel. The Allocator assigns IDs
// deterministically and can be saved (Snapshot) and restored so numbers
// survive agent restarts; the SelectorCache answers "which identities does
// this network-policy peer select" incrementally as identities come and go;
// the IPCache tracks the address → identity map the datapath looks peers up in.
package identity
