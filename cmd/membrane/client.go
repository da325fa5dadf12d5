package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"
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

// do sends one request and returns the answer's body once the status is OK.
// The caller closes it.
func (c apiClient) do(ctx context.Context, method, path string, body io.Reader) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://membrane"+path, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach the daemon (is `membrane daemon` running, and are you root?): %w", err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp.Body, nil
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e struct{ Err string }
	if json.Unmarshal(msg, &e) == nil && e.Err != "" {
		return nil, fmt.Errorf("%s", e.Err)
	}
	return nil, fmt.Errorf("%s %s: %s", method, path, resp.Status)
}

func (c apiClient) call(ctx context.Context, method, path string, body io.Reader, out any) error {
	rc, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := json.NewDecoder(rc).Decode(out); err != nil {
		return fmt.Errorf("decode answer of %s: %w", path, err)
	}
	return nil
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

// parse parses args and checks that exactly nargs positional arguments
// remain (-1: any number).
func (cf *clientFlags) parse(fs *pflag.FlagSet, args []string, nargs int, usage string) error {
	if err := parseWithEnv(fs, args); err != nil {
		return err
	}
	if cf.output != "table" && cf.output != "json" {
		return fmt.Errorf("-o %q: want table or json", cf.output)
	}
	if nargs >= 0 && fs.NArg() != nargs {
		return fmt.Errorf("usage: %s", usage)
	}
	return nil
}

func (cf *clientFlags) client() apiClient { return newAPIClient(cf.socket) }

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func table(header string, rows func(tw io.Writer)) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	rows(tw)
	return tw.Flush()
}

func labelString(l map[string]string) string {
	parts := make([]string, 0, len(l))
	for k, v := range l {
		parts = append(parts, k+"="+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// subcommand dispatches `membrane NOUN VERB ...`.
func subcommand(ctx context.Context, noun string, args []string, verbs map[string]func(context.Context, []string) error) error {
	if len(args) > 0 {
		if fn, ok := verbs[args[0]]; ok {
			return fn(ctx, args[1:])
		}
	}
	names := make([]string, 0, len(verbs))
	for v := range verbs {
		names = append(names, v)
	}
	slices.Sort(names)
	return fmt.Errorf("want `membrane %s %s`", noun, strings.Join(names, "|"))
}

// streamLines copies a JSON-lines answer to out, one value per line.
func streamLines(rc io.Reader, each func(line []byte) error) error {
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if err := each(sc.Bytes()); err != nil {
			return err
		}
	}
	return sc.Err()
}

func queryEscape(s string) string { return url.PathEscape(s) }
