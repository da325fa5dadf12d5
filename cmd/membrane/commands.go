package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/membrane-net/membrane/internal/apiview"
)

func runStatus(ctx context.Context, args []string) error {
	fs, cf := newClientFlags("membrane status")
	if err := cf.parse(fs, args, 0, "membrane status [-o json]"); err != nil {
		return err
	}
	var st apiview.Status
	if err := cf.client().call(ctx, "GET", "/v1/status", nil, &st); err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(st)
	}
	fmt.Printf("networks:        %d\nendpoints:       %d\nidentities:      %d\npolicy rules:    %d\npolicy revision: %d\n",
		st.Networks, st.Endpoints, st.Identities, st.PolicyRules, st.PolicyRevision)
	if len(st.Lockdown) > 0 {
		fmt.Printf("LOCKDOWN:        identities %v deny all traffic: the policy map is full\n", st.Lockdown)
	}
	fmt.Println()
	return table("REASON\tVERDICT\tPACKETS\tBYTES", func(tw io.Writer) {
		for _, c := range st.Counters {
			verdict := "forward"
			if c.Drop {
				verdict = "drop"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", c.Reason, verdict, c.Packets, c.Bytes)
		}
	})
}

func runEndpoint(ctx context.Context, args []string) error {
	return subcommand(ctx, "endpoint", args, map[string]func(context.Context, []string) error{
		"list": endpointList,
		"get":  endpointGet,
	})
}

func endpointList(ctx context.Context, args []string) error {
	fs, cf := newClientFlags("membrane endpoint list")
	if err := cf.parse(fs, args, 0, "membrane endpoint list [-o json]"); err != nil {
		return err
	}
	var eps []apiview.Endpoint
	if err := cf.client().call(ctx, "GET", "/v1/endpoints", nil, &eps); err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(eps)
	}
	return table("ENDPOINT\tCONTAINER\tIDENTITY\tINGRESS\tEGRESS\tIPV6\tIPV4\tLABELS", func(tw io.Writer) {
		for _, e := range eps {
			fmt.Fprintf(tw, "%.12s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, containerName(e), identityName(e),
				enforcement(e.PolicyIngress, e.Lockdown), enforcement(e.PolicyEgress, e.Lockdown), e.IPv6, e.IPv4, labelString(e.Labels))
		}
	})
}

func containerName(e apiview.Endpoint) string {
	if e.ContainerName != "" {
		return e.ContainerName
	}
	if len(e.ContainerID) > 12 {
		return e.ContainerID[:12]
	}
	return e.ContainerID
}

func identityName(e apiview.Endpoint) string {
	if e.IdentityName != "" {
		return fmt.Sprintf("%d (%s)", e.Identity, e.IdentityName)
	}
	return fmt.Sprint(e.Identity)
}

func enforcement(on, lockdown bool) string {
	switch {
	case lockdown:
		return "lockdown"
	case on:
		return "enforced"
	default:
		return "open"
	}
}

func endpointGet(ctx context.Context, args []string) error {
	fs, cf := newClientFlags("membrane endpoint get")
	if err := cf.parse(fs, args, 1, "membrane endpoint get ENDPOINT|CONTAINER [-o json]"); err != nil {
		return err
	}
	var e apiview.Endpoint
	if err := cf.client().call(ctx, "GET", "/v1/endpoints/"+queryEscape(fs.Arg(0)), nil, &e); err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(e)
	}
	since := "not yet: labels unknown, traffic limited to ARP and neighbour discovery"
	if e.IdentitySince != nil {
		since = e.IdentitySince.Format(time.RFC3339Nano)
	}
	fmt.Printf("endpoint:       %s\nnetwork:        %s\ncontainer:      %s %s\ninterface:      %s\nmac:            %s\nipv6:           %s\nipv4:           %s\n",
		e.ID, e.NetworkID, e.ContainerName, e.ContainerID, e.Interface, e.MAC, e.IPv6, e.IPv4)
	fmt.Printf("identity:       %s\nidentity since: %s\nlabels:         %s\ningress:        %s\negress:         %s\n",
		identityName(e), since, labelString(e.Labels), enforcement(e.PolicyIngress, e.Lockdown), enforcement(e.PolicyEgress, e.Lockdown))
	if len(e.Ports) > 0 {
		fmt.Printf("ports:          %s\n", strings.Join(e.Ports, " "))
	}
	return nil
}

func runIdentity(ctx context.Context, args []string) error {
	return subcommand(ctx, "identity", args, map[string]func(context.Context, []string) error{
		"list": identityList,
		"get":  identityGet,
	})
}

func identityList(ctx context.Context, args []string) error {
	fs, cf := newClientFlags("membrane identity list")
	if err := cf.parse(fs, args, 0, "membrane identity list [-o json]"); err != nil {
		return err
	}
	var ids []apiview.Identity
	if err := cf.client().call(ctx, "GET", "/v1/identities", nil, &ids); err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(ids)
	}
	return table("IDENTITY\tENDPOINTS\tLABELS", func(tw io.Writer) {
		for _, id := range ids {
			l := labelString(id.Labels)
			if id.Reserved != "" {
				l = "reserved:" + id.Reserved
			}
			fmt.Fprintf(tw, "%d\t%d\t%s\n", id.ID, len(id.Endpoints), l)
		}
	})
}

func identityGet(ctx context.Context, args []string) error {
	fs, cf := newClientFlags("membrane identity get")
	if err := cf.parse(fs, args, 1, "membrane identity get NUMBER [-o json]"); err != nil {
		return err
	}
	var id apiview.Identity
	if err := cf.client().call(ctx, "GET", "/v1/identities/"+queryEscape(fs.Arg(0)), nil, &id); err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(id)
	}
	fmt.Printf("identity:  %d\nlabels:    %s\nendpoints: %v\n", id.ID, labelString(id.Labels), id.Endpoints)
	return nil
}

func runPolicy(ctx context.Context, args []string) error {
	return subcommand(ctx, "policy", args, map[string]func(context.Context, []string) error{
		"import": policyImport,
		"get":    policyGet,
		"delete": policyDelete,
	})
}

func policyImport(ctx context.Context, args []string) error {
	fs, cf := newClientFlags("membrane policy import")
	if err := cf.parse(fs, args, 1, "membrane policy import FILE|-"); err != nil {
		return err
	}
	body, done, err := policyBody(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("read policy: %w", err)
	}
	defer done()
	var rev apiview.Revision
	if err := cf.client().call(ctx, "PUT", "/v1/policy", body, &rev); err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(rev)
	}
	fmt.Printf("revision %d\n", rev.Revision)
	return nil
}

// policyBody is the policy to import: the named file, streamed, or
// standard input for "-", read whole (as is a file that is not a regular
// one: its length is not known before). done closes the file.
func policyBody(arg string) (body *requestBody, done func(), err error) {
	if arg == "-" {
		data, err := io.ReadAll(os.Stdin)
		if err != nil {
			return nil, nil, err
		}
		return bytesBody(data), func() {}, nil
	}
	f, err := os.Open(arg)
	if err != nil {
		return nil, nil, err
	}
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		return &requestBody{r: f, size: fi.Size()}, func() { f.Close() }, nil
	}
	data, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		return nil, nil, err
	}
	return bytesBody(data), func() {}, nil
}

func policyGet(ctx context.Context, args []string) error {
	fs, cf := newClientFlags("membrane policy get")
	if err := cf.parse(fs, args, 0, "membrane policy get [-o json]"); err != nil {
		return err
	}
	var p apiview.Policy
	if err := cf.client().call(ctx, "GET", "/v1/policy", nil, &p); err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(p)
	}
	fmt.Printf("# revision %d, %d rules\n", p.Revision, len(p.Rules))
	out, err := json.MarshalIndent(p.Rules, "", "  ")
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}

func policyDelete(ctx context.Context, args []string) error {
	fs, cf := newClientFlags("membrane policy delete")
	all := fs.Bool("all", false, "delete every rule")
	if err := cf.parse(fs, args, -1, "membrane policy delete NAME|--all"); err != nil {
		return err
	}
	path := "/v1/policy"
	switch {
	case *all && fs.NArg() == 0:
	case !*all && fs.NArg() == 1:
		path += "/" + queryEscape(fs.Arg(0))
	default:
		return fmt.Errorf("usage: membrane policy delete NAME|--all")
	}
	var rev apiview.Revision
	if err := cf.client().call(ctx, "DELETE", path, nil, &rev); err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(rev)
	}
	fmt.Printf("revision %d\n", rev.Revision)
	return nil
}

func runMonitor(ctx context.Context, args []string) error {
	fs, cf := newClientFlags("membrane monitor")
	types := fs.StringSlice("type", nil, "event types to show: drop, policy, trace (default: all)")
	if err := cf.parse(fs, args, 0, "membrane monitor [--type drop|policy|trace] [-o json]"); err != nil {
		return err
	}
	path := "/v1/monitor"
	for i, t := range *types {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		path += sep + "type=" + queryEscape(t)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rc, err := cf.client().do(ctx, "GET", path, nil)
	if err != nil {
		return err
	}
	defer rc.Close() // cancelling ctx closes it too, which ends the stream
	err = streamLines(rc, func(line []byte) error {
		if cf.output == "json" {
			_, err := fmt.Printf("%s\n", line)
			return err
		}
		var ev apiview.Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("decode event: %w", err)
		}
		_, err := fmt.Println(eventLine(ev))
		return err
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}
