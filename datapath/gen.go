package datapath

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-16 -target bpfel -type endpoint_key -type endpoint_info -type metrics_value -type metric_reason -type ipcache_key -type ipcache_value -type policy_key -type policy_value -type policy_enforce_value -type policy_match -type ct_key -type ct_entry -type ct_state -type frag_key -type frag_value -type runtime_config -type event -type event_type endpoint ../bpf/endpoint.c -- -nostdinc -I../bpf/include -I../bpf/lib -O2 -g -mcpu=v3 -Wall -Werror
