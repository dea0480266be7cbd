// Package sockdestroy destroys the connected UDP sockets whose peer is a
// backend that was removed, so that their owners notice (ECONNABORTED)
// instead of sending into a void: through the BPF socket iterator that
// calls bpf_sock_destroy (Linux 6.5+), or, before that or when forced,
// through sock_diag netlink's SOCK_DESTROY. Both only see the network
// namespace they run in, so the Destroyer enters each namespace given.
package sockdestroy
