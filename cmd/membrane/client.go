package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/membrane-net/membrane/plugin"
)

// apiClient talks to the daemon's management API.
type apiClient struct {
	http *http.Client
}

func newAPIClient(socket string) apiClient {
	return apiClient{http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}}
}

func (c apiClient) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://membrane"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("reach the daemon (is `membrane daemon` running, and are you root?): %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read answer of %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Err string }
		if json.Unmarshal(body, &e) == nil && e.Err != "" {
			return fmt.Errorf("%s", e.Err)
		}
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	return json.Unmarshal(body, out)
}

// clientFlags are the flags every CLI command shares.
type clientFlags struct {
	socket string
	output string
}

func newClientFlags(name string) (*pflag.FlagSet, *clientFlags) {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	cf := &clientFlags{}
	fs.StringVar(&cf.socket, "api-socket", "/run/membrane/membrane.sock", "management API socket")
	fs.StringVarP(&cf.output, "output", "o", "table", "output format: table or json")
	return fs, cf
}

func (cf *clientFlags) parse(fs *pflag.FlagSet, args []string) error {
	if err := parseWithEnv(fs, args); err != nil {
		return err
	}
	if cf.output != "table" && cf.output != "json" {
		return fmt.Errorf("-o %q: want table or json", cf.output)
	}
	return nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func runStatus(ctx context.Context, args []string) error {
	fs, cf := newClientFlags("membrane status")
	if err := cf.parse(fs, args); err != nil {
		return err
	}
	var st plugin.Status
	if err := newAPIClient(cf.socket).get(ctx, "/v1/status", &st); err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(st)
	}
	fmt.Printf("networks:  %d\nendpoints: %d\n\n", st.Networks, st.Endpoints)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REASON\tKIND\tPACKETS\tBYTES")
	for _, c := range st.Counters {
		kind := "forward"
		if c.Drop {
			kind = "drop"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", c.Reason, kind, c.Packets, c.Bytes)
	}
	return tw.Flush()
}

func runEndpoint(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "list" {
		return fmt.Errorf("want `membrane endpoint list`")
	}
	fs, cf := newClientFlags("membrane endpoint list")
	if err := cf.parse(fs, args[1:]); err != nil {
		return err
	}
	var eps []plugin.EndpointView
	if err := newAPIClient(cf.socket).get(ctx, "/v1/endpoints", &eps); err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(eps)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tNETWORK\tINTERFACE\tIPV6\tIPV4")
	for _, e := range eps {
		fmt.Fprintf(tw, "%.12s\t%.12s\t%s\t%s\t%s\n", e.ID, e.NetworkID, e.Interface, e.IPv6, e.IPv4)
	}
	return tw.Flush()
}
