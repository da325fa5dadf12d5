package netload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"
)

// startServer runs a server on loopback ports the kernel picks.
func startServer(t *testing.T) Ports {
	t.Helper()
	s, err := Listen(ServerConfig{Addr: "127.0.0.1", TCPPorts: []int{0, 0}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Serve(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("server did not stop within 5s of its context's end")
		}
	})
	return s.Ports()
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

func TestRRCountsTransactionsAndLatency(t *testing.T) {
	p := startServer(t)
	r, err := RR(context.Background(), loopback(p.TCP[0]), 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.Count < 100 || r.Rate <= 0 {
		t.Errorf("rr over loopback: %d transactions at %.0f/s, want at least 100", r.Count, r.Rate)
	}
	if r.P50Micros <= 0 || r.P99Micros < r.P50Micros {
		t.Errorf("latency p50 %.1fµs p99 %.1fµs: want 0 < p50 <= p99", r.P50Micros, r.P99Micros)
	}
	if r.Seconds < 0.2 || r.Seconds > 1 {
		t.Errorf("ran %.3fs, want about 0.2s", r.Seconds)
	}
}

func TestCRRUsesANewConnectionEachTime(t *testing.T) {
	p := startServer(t)
	r, err := CRR(context.Background(), loopback(p.TCP[1]), 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.Count < 20 {
		t.Errorf("crr over loopback: %d connections, want at least 20", r.Count)
	}
}

func TestUDPCountsAtTheReceiver(t *testing.T) {
	p := startServer(t)
	r, err := UDP(context.Background(), loopback(p.UDP), p.Control, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.Count < 100 || r.Count > r.Sent {
		t.Errorf("udp: received %d of %d sent, want 100 <= received <= sent", r.Count, r.Sent)
	}
	if r.Rate <= 0 {
		t.Errorf("udp rate %.0f/s", r.Rate)
	}
}

func TestUDPFailsWhenNothingArrives(t *testing.T) {
	p := startServer(t)
	// A free port: the datagrams go nowhere, the server's counter stays 0.
	ln, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	free := ln.LocalAddr().(*net.UDPAddr).Port
	ln.Close()
	if _, err := UDP(context.Background(), loopback(free), p.Control, 50*time.Millisecond); err == nil {
		t.Error("udp to a port nobody counts reported success")
	}
}

func TestRRFailsWithoutServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := RR(context.Background(), addr, 50*time.Millisecond); err == nil {
		t.Error("rr without a server reported success")
	}
}

func TestPollSeesAPortOpenAndClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	openAt := time.Now().Add(100 * time.Millisecond)
	listening := make(chan net.Listener, 1)
	go func() {
		time.Sleep(time.Until(openAt))
		srv, err := net.Listen("tcp", addr)
		if err != nil {
			panic(fmt.Sprintf("listen again on %s: %v", addr, err))
		}
		listening <- srv
		go func() {
			for {
				c, err := srv.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}()
	cfg := PollConfig{Addr: addr, Until: UntilOpen, Interval: 2 * time.Millisecond, AttemptTimeout: 100 * time.Millisecond, Timeout: 5 * time.Second}
	r, err := Poll(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	seen := time.Unix(0, r.AtUnixNano)
	if seen.Before(openAt) || seen.Sub(openAt) > 50*time.Millisecond {
		t.Errorf("open seen %s after the listen, want within 50ms", seen.Sub(openAt))
	}

	srv := <-listening
	closeAt := time.Now().Add(100 * time.Millisecond)
	go func() { time.Sleep(time.Until(closeAt)); srv.Close() }()
	cfg.Until = UntilClosed
	if r, err = Poll(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	seen = time.Unix(0, r.AtUnixNano)
	if seen.Before(closeAt.Add(-5*time.Millisecond)) || seen.Sub(closeAt) > 50*time.Millisecond {
		t.Errorf("close seen %s after the close, want within 50ms", seen.Sub(closeAt))
	}
}

func TestClosedSinceNeedsARunOfFailuresAfterTheLastSuccess(t *testing.T) {
	t0 := time.Unix(1000, 0)
	mk := func(pattern string) []attempt {
		var as []attempt
		for i, c := range pattern {
			a := attempt{seq: i, start: t0.Add(time.Duration(i) * time.Millisecond)}
			switch c {
			case 'S':
				a.finished, a.ok = true, true
			case 'F':
				a.finished, a.err = true, errors.New("timeout")
			}
			as = append(as, a)
		}
		return as
	}
	tests := []struct {
		pattern string
		k       int
		want    int // index of the reported start, -1 for not yet closed
	}{
		{"SSFFF", 3, 2},
		{"SFSFFF", 3, 3},  // a lone failure before the change does not count
		{"SSFF.F", 3, -1}, // an attempt of the run is still running
		{"SSFF", 3, -1},   // run too short
		{"FFF", 3, 0},     // closed from the start
		{"SFFFS", 3, -1},  // a later success reopens
	}
	for _, tt := range tests {
		first, ok := closedSince(mk(tt.pattern), tt.k)
		switch {
		case tt.want < 0 && ok:
			t.Errorf("%s: closed at %v, want not closed", tt.pattern, first.start)
		case tt.want >= 0 && (!ok || !first.start.Equal(t0.Add(time.Duration(tt.want)*time.Millisecond))):
			t.Errorf("%s: closed=%v at %v, want closed at attempt %d", tt.pattern, ok, first.start, tt.want)
		}
	}
}

func TestPollGivesUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := PollConfig{Addr: ln.Addr().String(), Until: UntilClosed, Interval: 5 * time.Millisecond, AttemptTimeout: 50 * time.Millisecond, Timeout: 100 * time.Millisecond}
	if _, err := Poll(context.Background(), cfg); err == nil {
		t.Error("poll for a close that never happens reported success")
	}
}

// The harness runs an IPv4 server on 0.0.0.0 and an IPv6 server on the
// same ports of one IPv6 address beside it.
func TestAnIPv6ServerSharesTheIPv4WildcardServersPorts(t *testing.T) {
	v4, err := Listen(ServerConfig{Addr: "0.0.0.0", TCPPorts: []int{0}})
	if err != nil {
		t.Fatal(err)
	}
	p := v4.Ports()
	v6, err := Listen(ServerConfig{Addr: "::1", TCPPorts: p.TCP, UDPPort: p.UDP, ControlPort: p.Control})
	if err != nil {
		v4.closeSockets()
		t.Skipf("no IPv6 loopback here, or: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, s := range []*Server{v4, v6} {
		go func() { _ = s.Serve(ctx) }()
	}
	r, err := UDP(context.Background(), net.JoinHostPort("::1", strconv.Itoa(p.UDP)), p.Control, 100*time.Millisecond)
	if err != nil || r.Count < 2 {
		t.Errorf("UDP over IPv6: %+v, %v", r, err)
	}
	if _, err := RR(context.Background(), net.JoinHostPort("127.0.0.1", strconv.Itoa(p.TCP[0])), 50*time.Millisecond); err != nil {
		t.Errorf("rr over IPv4: %v", err)
	}
}
