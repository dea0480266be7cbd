// Package bpfobj holds the compiled eBPF objects and the Go types bpf2go
// generates from bpf/include/sluice/types.h, and beside them names.go, the
// one table of the enums' display names. Everything else here is generated
// by `make generate` and committed; CI fails when it is stale. The objects
// are little-endian and serve amd64 and arm64 alike.
package bpfobj

// The endpoint programs (pod interfaces), whose object also carries every
// type and enum that C and Go share (-type): Endpoint* in Go.
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I../../../bpf/include -I/usr/include/${DEB_HOST_MULTIARCH}" -type sl_ct_key -type sl_ct_entry -type sl_endpoint -type sl_event -type sl_metrics_key -type sl_metrics_val -type sl_frag_key -type sl_frag6_key -type sl_frag_val -type sl_layout_key -type sl_dir -type sl_drop_reason -type sl_metric -type sl_ct_state -type sl_event_type -type sl_event_flag -type sl_ct_scope -type sl_lb_key -type sl_lb_entry -type sl_lb_backend -type sl_lb_backend_state -type sl_lb_vip -type sl_lb_affinity_key -type sl_lb_affinity_val -type sl_lb_sock_key -type sl_nat_key -type sl_nat_val -type sl_sock_destroy_key -type sl_ipcache_key -type sl_ipcache_val -type sl_policy_key -type sl_policy_entry -type sl_policy_cidr_key -type sl_policy_verdict -type sl_policy_entry_flag -type sl_identity_reserved -type sl_uplink -type sl_lb_src_range_key -type sl_flow_events -type sl_ep_flag -type sl_ct_pol_flag -type sl_ct_nat_flag -type sl_lb_flag -type sl_lb_backend_flag -type sl_lb_family -type sl_tcp_flag -type sl_mark -type sl_sock_lb_mode Endpoint ../../../bpf/bpf_endpoint.c

// The socket-LB programs share the maps above through their pins; their Go
// types are the Endpoint* ones, so this object exports none of its own.
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -no-global-types -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I../../../bpf/include -I/usr/include/${DEB_HOST_MULTIARCH}" Sock ../../../bpf/bpf_sock.c

// The uplink programs share the maps by their pins too.
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -no-global-types -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I../../../bpf/include -I/usr/include/${DEB_HOST_MULTIARCH}" Host ../../../bpf/bpf_host.c

// The socket iterator (needs kernel BTF and bpf_sock_destroy, Linux 6.5+).
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -no-global-types -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I../../../bpf/include -I/usr/include/${DEB_HOST_MULTIARCH}" Iter ../../../bpf/bpf_iter.c
