package main

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"
)

// icmpCheck sends ICMP echo requests to ADDR until a reply comes back or
// the timeout passes.
func icmpCheck(args []string) error {
	fs := flag.NewFlagSet("icmp-check", flag.ExitOnError)
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: probe icmp-check [-timeout D] ADDR")
		os.Exit(exitUsage)
	}
	ok, err := icmpRoundTrip(fs.Arg(0), *timeout)
	if err != nil {
		return err
	}
	fmt.Println(ok)
	return nil
}

// icmpRoundTrip sends an echo request with a random identifier, sequence
// and payload every 250 ms (more often for short timeouts) over a raw
// socket (CAP_NET_RAW, which root in a container has) and waits for the
// matching reply. Several checks may run at once: each socket sees every
// ICMP packet and keeps only its own reply.
func icmpRoundTrip(host string, timeout time.Duration) (string, error) {
	dst, err := netip.ParseAddr(host)
	if err != nil {
		return "", fmt.Errorf("icmp: want an IP address: %w", err)
	}
	dst = dst.Unmap()
	network, reqType, replyType := "ip4:icmp", byte(8), byte(0)
	if dst.Is6() {
		network, reqType, replyType = "ip6:ipv6-icmp", 128, 129
	}
	pc, err := net.ListenPacket(network, "")
	if err != nil {
		return "", fmt.Errorf("icmp socket: %w", err)
	}
	defer pc.Close()

	var idseq [4]byte
	_, _ = rand.Read(idseq[:])
	payload := []byte(token())
	msg := append([]byte{reqType, 0, 0, 0}, idseq[:]...)
	msg = append(msg, payload...)
	if dst.Is4() {
		// The kernel computes ICMPv6 checksums itself, not ICMPv4 ones.
		binary.BigEndian.PutUint16(msg[2:], checksum(msg))
	}
	to := &net.IPAddr{IP: net.IP(dst.AsSlice())}

	deadline := time.Now().Add(timeout)
	resend := min(250*time.Millisecond, max(timeout/4, 10*time.Millisecond))
	buf := make([]byte, 1500)
	for time.Now().Before(deadline) {
		if _, err := pc.WriteTo(msg, to); err != nil {
			return "", fmt.Errorf("icmp echo to %s: %w", dst, err)
		}
		next := minTime(deadline, time.Now().Add(resend))
		for {
			_ = pc.SetReadDeadline(next)
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				break // resend, or give up at the deadline
			}
			r := buf[:n]
			if len(r) >= 8 && r[0] == replyType && r[1] == 0 && [4]byte(r[4:8]) == idseq && string(r[8:]) == string(payload) {
				return fmt.Sprintf("ok icmp echo reply from %s", from), nil
			}
		}
	}
	return "", fmt.Errorf("no icmp echo reply from %s within %s", dst, timeout)
}

// checksum is the Internet checksum (RFC 1071).
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// checkSpec is one check of `probe checks`.
type checkSpec struct {
	ID      string
	Proto   string // tcp, udp or icmp
	Addr    string // an IP address or a name
	Port    string // ignored for icmp
	Timeout time.Duration
}

// checkResult is the JSON line printed per check.
type checkResult struct {
	ID   string `json:"id"`
	OK   bool   `json:"ok"`
	Info string `json:"info,omitempty"` // what passed, or why it failed
}

func (c checkSpec) run() checkResult {
	var ok string
	var err error
	switch c.Proto {
	case "tcp":
		ok, err = tcpRoundTrip("tcp", net.JoinHostPort(c.Addr, c.Port), c.Timeout)
	case "udp":
		ok, err = udpRoundTrip("udp", net.JoinHostPort(c.Addr, c.Port), c.Timeout)
	case "icmp":
		ok, err = icmpRoundTrip(c.Addr, c.Timeout)
	default:
		err = fmt.Errorf("unknown protocol %q", c.Proto)
	}
	r := checkResult{ID: c.ID, OK: err == nil, Info: ok}
	if err != nil {
		r.Info = err.Error()
	}
	return r
}

// parseCheckLine reads "ID PROTO ADDR PORT TIMEOUT".
func parseCheckLine(line string) (checkSpec, error) {
	f := strings.Fields(line)
	if len(f) != 5 {
		return checkSpec{}, fmt.Errorf("check %q: want ID PROTO ADDR PORT TIMEOUT", line)
	}
	d, err := time.ParseDuration(f[4])
	if err != nil {
		return checkSpec{}, fmt.Errorf("check %q: timeout: %w", line, err)
	}
	return checkSpec{ID: f[0], Proto: f[1], Addr: f[2], Port: f[3], Timeout: d}, nil
}

// checks reads one check per line from stdin, "ID PROTO ADDR PORT TIMEOUT"
// (PROTO tcp, udp or icmp; PORT "-" for icmp), runs them all at once (at
// most -parallel at a time) and prints one checkResult JSON line per check
// as each finishes. A failed check is a result, not an error: the exit code
// is 0 unless the input is bad.
func checks(args []string) error {
	fs := flag.NewFlagSet("checks", flag.ExitOnError)
	parallel := fs.Int("parallel", 64, "checks running at once")
	_ = fs.Parse(args)
	var specs []checkSpec
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		c, err := parseCheckLine(line)
		if err != nil {
			return err
		}
		specs = append(specs, c)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read checks: %w", err)
	}
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	sem := make(chan struct{}, max(*parallel, 1))
	var wg sync.WaitGroup
	for _, c := range specs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			r := c.run()
			<-sem
			mu.Lock()
			_ = enc.Encode(r)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return nil
}
