package datapath

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-16 -target bpfel -type endpoint_key -type endpoint_info -type metrics_value -type metric_reason endpoint ../bpf/endpoint.c -- -nostdinc -I../bpf/include -I../bpf/lib -O2 -g -mcpu=v3 -Wall -Werror
