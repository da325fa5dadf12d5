package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// familyOf is "4" or "6" for an address, "" for a name.
func familyOf(addr string) string {
	a, err := netip.ParseAddr(addr)
	switch {
	case err != nil:
		return ""
	case a.Is4():
		return "4"
	default:
		return "6"
	}
}

// pingFrom pings target (an address, or a name resolved as family) once
// from ctr, waiting up to wait seconds for the reply.
func pingFrom(ctr, target, family string, wait int) error {
	args := []string{"ping", "-c1", fmt.Sprintf("-W%d", wait)}
	if family != "" {
		args = append(args, "-"+family)
	}
	_, err := execErr(ctr, append(args, target)...)
	return err
}

// tcpFrom runs a TCP echo round trip from ctr to target's probe server.
func tcpFrom(ctr, target, family string, timeout time.Duration) error {
	args := []string{"/bin/probe", "tcp-check", "-timeout", timeout.String()}
	if family != "" {
		args = append(args, "-family", family)
	}
	_, err := execErr(ctr, append(args, target, tcpPort)...)
	return err
}

// udpFrom runs a UDP echo round trip from ctr to target's probe server.
func udpFrom(ctr, target, family string, timeout time.Duration) error {
	args := []string{"/bin/probe", "udp-check", "-timeout", timeout.String()}
	if family != "" {
		args = append(args, "-family", family)
	}
	_, err := execErr(ctr, append(args, target, udpPort)...)
	return err
}

// retryOnce runs f, and once more after a pause if it failed; the first
// failure is logged so a flaky first packet stays visible.
func retryOnce(t testing.TB, what string, f func() error) error {
	t.Helper()
	err := f()
	if err == nil {
		return nil
	}
	t.Logf("%s: first attempt failed, retrying: %v", what, err)
	time.Sleep(500 * time.Millisecond)
	return f()
}

// assertReach checks that from reaches every target with ICMP echo and a
// TCP echo round trip. Targets are addresses or container names (a name is
// checked over IPv4 and over IPv6).
func assertReach(t testing.TB, from string, targets ...string) {
	t.Helper()
	for _, target := range targets {
		families := []string{familyOf(target)}
		if families[0] == "" {
			families = []string{"4", "6"}
		}
		for _, fam := range families {
			name := fmt.Sprintf("%s -> %s (IPv%s)", short(from), target, fam)
			if err := retryOnce(t, "ping "+name, func() error { return pingFrom(from, target, nameFamily(target, fam), 2) }); err != nil {
				t.Errorf("ping %s: want a reply: %v", name, err)
			}
			if err := tcpFrom(from, target, nameFamily(target, fam), 3*time.Second); err != nil {
				t.Errorf("TCP %s: want an echo: %v", name, err)
			}
		}
	}
}

// nameFamily forces the family only for names; addresses carry their own.
func nameFamily(target, fam string) string {
	if familyOf(target) != "" {
		return ""
	}
	return fam
}

// assertNoReach checks that from gets neither an ICMP reply nor a TCP echo
// from any of the target addresses.
func assertNoReach(t testing.TB, from string, targets ...string) {
	t.Helper()
	for _, target := range targets {
		name := fmt.Sprintf("%s -> %s", short(from), target)
		if err := pingFrom(from, target, "", 1); err == nil {
			t.Errorf("ping %s: got a reply, want none", name)
		}
		if err := tcpFrom(from, target, "", time.Second); err == nil {
			t.Errorf("TCP %s: got an echo, want none", name)
		}
	}
}

// pingFromHost pings addr from the host's network namespace.
func pingFromHost(addr string) error {
	busybox, err := findBinary("busybox", "/bin/busybox")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, busybox, "ping", "-c1", "-W2", addr).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from the host: %w: %s", addr, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// tcpFromHost does a TCP echo round trip from the host to a probe server.
func tcpFromHost(addr, port string) error {
	deadline := time.Now().Add(3 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, port), time.Until(deadline))
		if err != nil {
			lastErr = err
			if strings.Contains(err.Error(), "connection refused") {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return fmt.Errorf("connect from the host: %w", err)
		}
		defer c.Close()
		_ = c.SetDeadline(deadline)
		const msg = "membrane-it host probe"
		if _, err := io.WriteString(c, msg); err != nil {
			return fmt.Errorf("write from the host: %w", err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			return fmt.Errorf("read echo on the host: %w", err)
		}
		if string(got) != msg {
			return fmt.Errorf("echo on the host: got %q want %q", got, msg)
		}
		return nil
	}
	return fmt.Errorf("connect from the host: timed out: %v", lastErr)
}

// hostEchoServer listens on addr (port 0) in the host's namespace and echoes
// whatever its clients send, until the test ends. It returns the port. An
// IPv6 address can be tentative just after it was added, so binding is
// retried for a few seconds.
func hostEchoServer(t testing.TB, addr string) string {
	t.Helper()
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		ln, err = net.Listen("tcp", net.JoinHostPort(addr, "0"))
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listen on %s in the host namespace (is the gateway address on a host device?): %v", addr, err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}
