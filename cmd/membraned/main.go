// Command membraned is the membrane daemon: Docker's network and IPAM
// driver for membrane networks, the management API the membrane CLI talks
// to, and the loader of the eBPF datapath. `membrane daemon` runs it.
//
// It is a binary of its own so that the CLI stays small: every `membrane`
// command starts a process, and linking the daemon's dependencies into it
// (the Docker client, Prometheus, cilium/ebpf, netlink) made each start
// several times slower than the daemon's work on a policy change.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := runDaemon(ctx, os.Args[1:])
	stop()
	switch {
	case errors.Is(err, pflag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintf(os.Stderr, "membrane daemon: %v\n", err)
		os.Exit(1)
	}
}
