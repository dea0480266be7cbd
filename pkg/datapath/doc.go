// Package datapath owns Sluice's kernel objects: it loads the bpf2go-built
// programs, pins their maps under the agent's bpffs root so they outlive the
// agent, attaches the programs to endpoint interfaces (tcx, or legacy tc
// clsact through netlink), probes kernel features, and gives typed access
// to the maps for the agent and for the CLI's `sluice bpf` commands, which
// work from the pins alone while the agent is down.
//
// Layout under the bpffs root (default /sys/fs/bpf/sluice):
//
//	<root>/sl_ct, sl_endpoints, ...   maps, pinned by name
//	<root>/links/tcx_<ifindex>_<dir>  tcx links (legacy tc filters live in the kernel's tc config)
//
// Restart safety: maps and links are pinned, so an agent that dies leaves
// traffic flowing on its last programs and state. A new agent adopts the pins:
// maps whose layout still matches are reused, a map whose size changed is
// migrated entry by entry, a map whose key/value layout changed is replaced
// (never misread), and every link is updated in place to the new programs.
// The layouts are recorded in sl_layout: a fingerprint per map that covers
// the inner map of a map of maps, and the inner capacity apart (it is
// configuration). A changed inner map replaces its outer map; OpenPinned
// refuses to read a map whose fingerprint is not this build's.
package datapath
