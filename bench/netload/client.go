package netload

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ioTimeout bounds every connect, read and write of a load: a lost packet
// makes the run fail instead of hang.
const ioTimeout = 5 * time.Second

// Result is what a client load reports.
type Result struct {
	Mode    string  `json:"mode"`
	Seconds float64 `json:"seconds"`
	// Count is transactions (rr), connections (crr) or datagrams
	// received (udp).
	Count int64 `json:"count"`
	// Rate is Count per second.
	Rate float64 `json:"rate"`
	// P50Micros and P99Micros are transaction latency quantiles (rr).
	P50Micros float64 `json:"p50Micros,omitempty"`
	P99Micros float64 `json:"p99Micros,omitempty"`
	// Sent is the datagrams the client wrote (udp): Sent - Count were
	// lost on the way or dropped by the receiver.
	Sent int64 `json:"sent,omitempty"`
}

// RR runs request/response transactions on one TCP connection for d.
func RR(ctx context.Context, addr string, d time.Duration) (Result, error) {
	ap, err := parseAddrPort(addr)
	if err != nil {
		return Result{}, err
	}
	fd, err := dialTCP(ap, ioTimeout.Microseconds())
	if err != nil {
		return Result{}, fmt.Errorf("rr: %w", err)
	}
	defer unix.Close(fd)

	buf := []byte{ReqKeep}
	// Enough room for a fast run, so that appending does not reallocate
	// inside the timed loop.
	lat := make([]time.Duration, 0, 1<<20)
	start := time.Now()
	deadline := start.Add(d)
	for now := start; now.Before(deadline); {
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		buf[0] = ReqKeep
		if err := writeByte(fd, buf); err != nil {
			return Result{}, fmt.Errorf("rr: send request %d: %w", len(lat)+1, err)
		}
		if err := readByte(fd, buf); err != nil {
			return Result{}, fmt.Errorf("rr: read response %d: %w", len(lat)+1, err)
		}
		end := time.Now()
		lat = append(lat, end.Sub(now))
		now = end
	}
	elapsed := time.Since(start).Seconds()
	slices.Sort(lat)
	return Result{
		Mode: "rr", Seconds: elapsed, Count: int64(len(lat)), Rate: float64(len(lat)) / elapsed,
		P50Micros: micros(quantile(lat, 0.50)), P99Micros: micros(quantile(lat, 0.99)),
	}, nil
}

// quantile of sorted durations, nearest rank.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return sorted[i]
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

// CRR opens, uses and closes connections for d, one at a time.
func CRR(ctx context.Context, addr string, d time.Duration) (Result, error) {
	ap, err := parseAddrPort(addr)
	if err != nil {
		return Result{}, err
	}
	var n int64
	start := time.Now()
	deadline := start.Add(d)
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		if err := connectRequestResponse(ap); err != nil {
			return Result{}, fmt.Errorf("crr: connection %d: %w", n+1, err)
		}
		n++
	}
	elapsed := time.Since(start).Seconds()
	return Result{Mode: "crr", Seconds: elapsed, Count: n, Rate: float64(n) / elapsed}, nil
}

// connectRequestResponse is one crr transaction: the server answers and
// closes; the client reads the close, then closes its side.
func connectRequestResponse(ap netip.AddrPort) error {
	fd, err := dialTCP(ap, ioTimeout.Microseconds())
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	buf := []byte{ReqClose}
	if err := writeByte(fd, buf); err != nil {
		return fmt.Errorf("send request: %w", err)
	}
	if err := readByte(fd, buf); err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if err := readByte(fd, buf); !errors.Is(err, errPeerClosed) {
		return fmt.Errorf("wait for the server to close: got %v", err)
	}
	return nil
}

// UDP sends UDPPayload-byte datagrams to addr for d and reads the
// receiver's count from the server's control port.
func UDP(ctx context.Context, addr string, controlPort int, d time.Duration) (Result, error) {
	ap, err := parseAddrPort(addr)
	if err != nil {
		return Result{}, err
	}
	ctl, err := dialControl(ctx, netip.AddrPortFrom(ap.Addr(), uint16(controlPort)))
	if err != nil {
		return Result{}, err
	}
	defer ctl.Close()
	if _, err := ctl.ask("reset"); err != nil {
		return Result{}, err
	}
	sent, err := blast(ctx, ap, d)
	if err != nil {
		return Result{}, err
	}
	// Let the receiver drain its socket buffer before asking.
	time.Sleep(100 * time.Millisecond)
	answer, err := ctl.ask("stats")
	if err != nil {
		return Result{}, err
	}
	var st UDPStats
	if err := json.Unmarshal([]byte(answer), &st); err != nil {
		return Result{}, fmt.Errorf("udp: control answer %q: %w", answer, err)
	}
	if st.Packets < 2 || st.LastNs <= st.FirstNs {
		return Result{}, fmt.Errorf("udp: the receiver counted %d of %d datagrams", st.Packets, sent)
	}
	window := float64(st.LastNs-st.FirstNs) / 1e9
	return Result{Mode: "udp", Seconds: window, Count: st.Packets, Rate: float64(st.Packets-1) / window, Sent: sent}, nil
}

// blast writes datagrams on a connected socket until d is over. Errors a
// connected UDP socket reports for earlier datagrams (an ICMP error, a
// full queue) do not stop it: the receiver's count is what matters.
func blast(ctx context.Context, ap netip.AddrPort, d time.Duration) (int64, error) {
	family, sa := sockaddr(ap)
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("udp: socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, sa); err != nil {
		return 0, fmt.Errorf("udp: connect %s: %w", ap, err)
	}
	payload := make([]byte, UDPPayload)
	var sent int64
	deadline := time.Now().Add(d)
	for {
		// Reading the clock every datagram would cost as much as the
		// send itself.
		for range 64 {
			if _, err := unix.Write(fd, payload); err == nil {
				sent++
			}
		}
		if ctx.Err() != nil {
			return sent, ctx.Err()
		}
		if !time.Now().Before(deadline) {
			return sent, nil
		}
	}
}

// controlConn is a connection to a server's control port.
type controlConn struct {
	net.Conn
	r *bufio.Reader
}

func dialControl(ctx context.Context, ap netip.AddrPort) (*controlConn, error) {
	d := net.Dialer{Timeout: ioTimeout}
	c, err := d.DialContext(ctx, "tcp", ap.String())
	if err != nil {
		return nil, fmt.Errorf("udp: control connection: %w", err)
	}
	return &controlConn{Conn: c, r: bufio.NewReader(c)}, nil
}

// ask sends one request line and returns the answer line.
func (c *controlConn) ask(req string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Write([]byte(req + "\n")); err != nil {
		return "", fmt.Errorf("udp: control %s: %w", req, err)
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("udp: control %s: %w", req, err)
	}
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, "error") {
		return "", fmt.Errorf("udp: control %s: %s", req, line)
	}
	return line, nil
}

// String formats a result for logs.
func (r Result) String() string {
	s := r.Mode + " " + strconv.FormatFloat(r.Rate, 'f', 0, 64) + "/s"
	if r.P99Micros > 0 {
		s += fmt.Sprintf(" p50 %.1fµs p99 %.1fµs", r.P50Micros, r.P99Micros)
	}
	return s
}
