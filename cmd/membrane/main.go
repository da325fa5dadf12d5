// Command membrane is the CLI of the membrane Docker network plugin: it
// talks to the daemon's management API, and `membrane daemon` starts the
// daemon (membraned) in its place.
package main

import (
	"context"
	"fmt"
	"os"
)

const usage = `membrane: a Docker network plugin with an eBPF datapath

Usage:
  membrane daemon [flags]        run the plugin (Docker's network and IPAM driver)
  membrane status [-o json]      show the daemon's state and datapath counters
  membrane endpoint list|get     endpoints: identity, labels, addresses, enforcement
  membrane identity list|get     identities and the labels they stand for
  membrane policy import FILE|-  validate and apply policy rules (JSON or YAML)
  membrane policy get            show the loaded rules and the policy revision
  membrane policy delete NAME|--all
  membrane monitor [--type drop|policy|trace]
                                 stream datapath events
  membrane help                  show this help

Every command takes --api-socket PATH; listings take -o json.
Run "membrane COMMAND --help" for a command's flags.
`

func main() {
	// Signals keep their default action (the CLI ends at once), but for
	// `membrane monitor`, which ends its stream on SIGINT or SIGTERM:
	// catching them costs a short command a quarter of a millisecond.
	os.Exit(run(context.Background(), os.Args[1:]))
}

func run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "daemon":
		err = execDaemon(args[1:])
	case "status":
		err = runStatus(ctx, args[1:])
	case "endpoint":
		err = runEndpoint(ctx, args[1:])
	case "identity":
		err = runIdentity(ctx, args[1:])
	case "policy":
		err = runPolicy(ctx, args[1:])
	case "monitor":
		err = runMonitor(ctx, args[1:])
	case "help", "-h", "--help":
		fmt.Print(usage)
		return 0
	default:
		fmt.Fprintf(os.Stderr, "membrane: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "membrane %s: %v\n", args[0], err)
		return 1
	}
	return 0
}
