package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/membrane-net/membrane/internal/envflag"
)

// apiClient talks to the daemon's management API: HTTP/1.1 over its unix
// socket, one request per connection. It speaks the little HTTP the API
// needs itself (httpclient.go) rather than through net/http's client,
// whose setup cost a CLI call about a millisecond, as much as the daemon
// takes to add a rule to 100,000.
type apiClient struct {
	socket string
}

func newAPIClient(socket string) apiClient { return apiClient{socket: socket} }

// do sends one request and returns the answer's body once the status is OK.
// The caller closes it.
func (c apiClient) do(ctx context.Context, method, path string, body *requestBody) (io.ReadCloser, error) {
	status, rc, err := roundTrip(ctx, c.socket, method, path, body)
	var short *shortBodyError
	if errors.As(err, &short) {
		return nil, err // the daemon was reached; the body was not sent whole
	}
	if err != nil {
		return nil, fmt.Errorf("reach the daemon (is `membrane daemon` running, and are you root?): %w", err)
	}
	if status.code == 200 {
		return rc, nil
	}
	defer rc.Close()
	msg, _ := io.ReadAll(io.LimitReader(rc, 1<<20))
	var e struct{ Err string }
	if json.Unmarshal(msg, &e) == nil && e.Err != "" {
		return nil, fmt.Errorf("%s", e.Err)
	}
	return nil, fmt.Errorf("%s %s: %s", method, path, status.text)
}

func (c apiClient) call(ctx context.Context, method, path string, body *requestBody, out any) error {
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
	if err := envflag.Parse(fs, args); err != nil {
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
