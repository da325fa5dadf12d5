// Command probe is the network checker baked into the integration test image.
//
// It is built static (CGO_ENABLED=0) and runs inside busybox containers, so
// each subcommand gives a plain yes/no answer through its exit code (0 = the
// check passed, 1 = it failed, 2 = usage error) and says why on stderr:
//
//	probe serve [flags]                  tcp-serve 7000, udp-serve 7001 and stream-serve 7002 at once
//	                                     (-tcp, -udp, -stream take comma-separated port lists)
//	probe tcp-serve PORT                 TCP echo server, IPv4 and IPv6
//	probe tcp-check [flags] ADDR PORT    connect, send a token, expect it echoed
//	probe udp-serve PORT                 UDP echo server, IPv4 and IPv6
//	probe udp-check [flags] ADDR PORT    send a datagram, expect it echoed
//	probe icmp-check [flags] ADDR        send an ICMP echo request, expect the reply
//	probe checks [-parallel N]           run the checks listed on stdin at once, one JSON result per line
//	probe stream-serve PORT              write a counter line every 50 ms to each client
//	probe stream [flags] ADDR PORT       read that stream until a stop file appears; fail on a gap
//	probe dns NAME                       print every address NAME resolves to, one per line
//
// ADDR may be an IP address or a name; names go through the resolver in
// /etc/resolv.conf (Docker's embedded DNS inside a container).
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2

	streamInterval = 50 * time.Millisecond
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "serve":
		err = serve(args)
	case "tcp-serve":
		err = tcpServe(portArg(cmd, args))
	case "udp-serve":
		err = udpServe(portArg(cmd, args))
	case "stream-serve":
		err = streamServe(portArg(cmd, args))
	case "tcp-check":
		err = tcpCheck(args)
	case "udp-check":
		err = udpCheck(args)
	case "icmp-check":
		err = icmpCheck(args)
	case "checks":
		err = checks(args)
	case "stream":
		err = stream(args)
	case "dns":
		err = dns(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "probe %s: %v\n", cmd, err)
		os.Exit(exitFail)
	}
	os.Exit(exitOK)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: probe serve|tcp-serve|udp-serve|stream-serve|tcp-check|udp-check|icmp-check|checks|stream|dns ...")
	os.Exit(exitUsage)
}

func portArg(cmd string, args []string) string {
	if len(args) != 1 {
		fmt.Fprintf(os.Stderr, "usage: probe %s PORT\n", cmd)
		os.Exit(exitUsage)
	}
	return args[0]
}

// serve runs the echo and stream servers, by default on 7000 (TCP), 7001
// (UDP) and 7002 (stream); each flag takes a comma-separated list of ports.
// Any server failing ends it.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	tcpPorts := fs.String("tcp", "7000", "TCP echo ports, comma-separated")
	udpPorts := fs.String("udp", "7001", "UDP echo ports, comma-separated")
	streamPorts := fs.String("stream", "7002", "stream ports, comma-separated")
	_ = fs.Parse(args)
	var servers []func() error
	for _, s := range []struct {
		ports string
		serve func(string) error
	}{{*tcpPorts, tcpServe}, {*udpPorts, udpServe}, {*streamPorts, streamServe}} {
		for _, p := range strings.Split(s.ports, ",") {
			if p = strings.TrimSpace(p); p != "" {
				servers = append(servers, func() error { return s.serve(p) })
			}
		}
	}
	errc := make(chan error, len(servers))
	for _, srv := range servers {
		go func() { errc <- srv() }()
	}
	return <-errc
}

// listenTCP listens on the wildcard address; on Linux "tcp" with an empty
// host is one dual-stack socket that takes IPv4 and IPv6.
func listenTCP(port string) (net.Listener, error) {
	return net.Listen("tcp", net.JoinHostPort("", port))
}

func tcpServe(port string) error {
	return acceptLoop(port, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		_, _ = io.Copy(c, c)
	})
}

// acceptLoop serves every connection on port with handle, each in its own
// goroutine, and closes it afterwards.
func acceptLoop(port string, handle func(net.Conn)) error {
	ln, err := listenTCP(port)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}

// udpServe echoes datagrams on port, IPv4 and IPv6. Each reply leaves
// from the address its request was sent to, as a client's connected socket
// expects even when the host has several addresses (see udpEcho).
func udpServe(port string) error {
	errc := make(chan error, 2)
	for _, family := range []string{"udp4", "udp6"} {
		go func() { errc <- udpEcho(family, port) }()
	}
	// One family may be missing (a host without IPv6); both failing is
	// an error.
	err := <-errc
	fmt.Fprintf(os.Stderr, "udp-serve: %v\n", err)
	return errors.Join(err, <-errc)
}

func streamServe(port string) error {
	return acceptLoop(port, func(c net.Conn) {
		t := time.NewTicker(streamInterval)
		defer t.Stop()
		for i := 0; ; i++ {
			_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := fmt.Fprintf(c, "%d\n", i); err != nil {
				return
			}
			<-t.C
		}
	})
}

// checkFlags are shared by tcp-check and udp-check.
type checkFlags struct {
	timeout time.Duration
	family  string
}

func parseCheck(name string, args []string) (checkFlags, string, string) {
	var cf checkFlags
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	fs.DurationVar(&cf.timeout, "timeout", 3*time.Second, "give up after this long")
	fs.StringVar(&cf.family, "family", "", "4 or 6: only use addresses of that family when ADDR is a name")
	_ = fs.Parse(args)
	if fs.NArg() != 2 {
		fmt.Fprintf(os.Stderr, "usage: probe %s [-timeout D] [-family 4|6] ADDR PORT\n", name)
		os.Exit(exitUsage)
	}
	return cf, fs.Arg(0), fs.Arg(1)
}

func (cf checkFlags) network(proto string) string {
	switch cf.family {
	case "4":
		return proto + "4"
	case "6":
		return proto + "6"
	}
	return proto
}

func token() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// tcpCheck connects and expects an echo.
func tcpCheck(args []string) error {
	cf, host, port := parseCheck("tcp-check", args)
	ok, err := tcpRoundTrip(cf.network("tcp"), net.JoinHostPort(host, port), cf.timeout)
	if err != nil {
		return err
	}
	fmt.Println(ok)
	return nil
}

// tcpRoundTrip connects and expects an echo. A refused connection is
// retried until the deadline (the server may still be starting); anything
// else that fails ends the check.
func tcpRoundTrip(network, addr string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		d := net.Dialer{Deadline: deadline}
		c, err := d.Dial(network, addr)
		if err != nil {
			lastErr = err
			if errors.Is(err, syscall.ECONNREFUSED) {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return "", fmt.Errorf("connect %s: %w", addr, err)
		}
		defer c.Close()
		_ = c.SetDeadline(deadline)
		tok := token()
		if _, err := io.WriteString(c, tok); err != nil {
			return "", fmt.Errorf("write to %s: %w", c.RemoteAddr(), err)
		}
		got := make([]byte, len(tok))
		if _, err := io.ReadFull(c, got); err != nil {
			return "", fmt.Errorf("read echo from %s: %w", c.RemoteAddr(), err)
		}
		if string(got) != tok {
			return "", fmt.Errorf("echo from %s: got %q, want %q", c.RemoteAddr(), got, tok)
		}
		return fmt.Sprintf("ok %s local %s", c.RemoteAddr(), c.LocalAddr()), nil
	}
	return "", fmt.Errorf("connect %s: timed out after %s: %v", addr, timeout, lastErr)
}

// udpCheck sends a datagram and expects it echoed.
func udpCheck(args []string) error {
	cf, host, port := parseCheck("udp-check", args)
	ok, err := udpRoundTrip(cf.network("udp"), net.JoinHostPort(host, port), cf.timeout)
	if err != nil {
		return err
	}
	fmt.Println(ok)
	return nil
}

// udpRoundTrip sends a token every 250 ms (more often for short timeouts)
// until it comes back or the deadline passes.
func udpRoundTrip(network, addr string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	d := net.Dialer{Deadline: deadline}
	c, err := d.Dial(network, addr)
	if err != nil {
		return "", fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	resend := min(250*time.Millisecond, max(timeout/4, 10*time.Millisecond))
	tok := token()
	buf := make([]byte, 64)
	for time.Now().Before(deadline) {
		if _, err := io.WriteString(c, tok); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			return "", fmt.Errorf("send to %s: %w", addr, err)
		}
		_ = c.SetReadDeadline(minTime(deadline, time.Now().Add(resend)))
		n, err := c.Read(buf)
		if err == nil && string(buf[:n]) == tok {
			return fmt.Sprintf("ok %s local %s", c.RemoteAddr(), c.LocalAddr()), nil
		}
	}
	return "", fmt.Errorf("no echo from %s within %s", addr, timeout)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// stream reads the counter stream of stream-serve until the stop file
// exists. It fails when the connection breaks, when a number is skipped or
// repeated, or when no data arrived for longer than -max-gap.
func stream(args []string) error {
	fs := flag.NewFlagSet("stream", flag.ExitOnError)
	maxGap := fs.Duration("max-gap", time.Second, "longest allowed time without data")
	stopFile := fs.String("stop-file", "/tmp/stop-stream", "stop cleanly once this file exists")
	maxDur := fs.Duration("max-duration", 2*time.Minute, "fail if not stopped by then")
	_ = fs.Parse(args)
	if fs.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: probe stream [-max-gap D] [-stop-file F] [-max-duration D] ADDR PORT")
		os.Exit(exitUsage)
	}
	addr := net.JoinHostPort(fs.Arg(0), fs.Arg(1))
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return fmt.Errorf("connect %s: %w", addr, err)
	}
	defer c.Close()
	// Tell the caller the stream is up before the first byte is counted.
	fmt.Printf("connected %s local %s\n", c.RemoteAddr(), c.LocalAddr())

	start := time.Now()
	last := start
	var worst time.Duration
	var worstAt time.Duration
	lines, want := 0, -1
	var partial []byte
	buf := make([]byte, 4096)
	report := func() string {
		return fmt.Sprintf("lines=%d maxgap=%dms maxgap_at=%dms elapsed=%dms",
			lines, worst.Milliseconds(), worstAt.Milliseconds(), time.Since(start).Milliseconds())
	}
	for {
		if _, err := os.Stat(*stopFile); err == nil {
			// Count the time since the last byte too: a stream that died
			// just before the stop must not pass.
			if g := time.Since(last); g > worst {
				worst, worstAt = g, last.Sub(start)
			}
			fmt.Println(report())
			if worst > *maxGap {
				return fmt.Errorf("gap of %s exceeds %s", worst, *maxGap)
			}
			return nil
		}
		if time.Since(start) > *maxDur {
			return fmt.Errorf("not stopped within %s: %s", *maxDur, report())
		}
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := c.Read(buf)
		if n > 0 {
			now := time.Now()
			if g := now.Sub(last); g > worst {
				worst, worstAt = g, last.Sub(start)
			}
			last = now
			partial = append(partial, buf[:n]...)
			for {
				i := strings.IndexByte(string(partial), '\n')
				if i < 0 {
					break
				}
				v, perr := strconv.Atoi(string(partial[:i]))
				partial = partial[i+1:]
				if perr != nil {
					return fmt.Errorf("bad line: %w", perr)
				}
				if want >= 0 && v != want {
					return fmt.Errorf("counter jumped from %d to %d: %s", want-1, v, report())
				}
				want = v + 1
				lines++
			}
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("stream from %s broke: %w: %s", addr, err, report())
		}
	}
}

func dns(args []string) error {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: probe dns NAME")
		os.Exit(exitUsage)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, args[0])
	if err != nil {
		return err
	}
	w := bufio.NewWriter(os.Stdout)
	for _, a := range addrs {
		fmt.Fprintln(w, a.IP.String())
	}
	return w.Flush()
}
