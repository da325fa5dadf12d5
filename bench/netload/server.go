package netload

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Request bytes. The server echoes each one; after ReqClose it closes the
// connection itself.
const (
	ReqKeep  byte = 'R' // rr: answer and wait for the next request
	ReqClose byte = 'C' // crr: answer and close
)

// UDPPayload is the size of the udp load's datagrams.
const UDPPayload = 64

var errPeerClosed = errors.New("connection closed by peer")

// ServerConfig says where the server listens. Port 0 picks a free port
// (tests); Server.Ports reports the ones in use.
type ServerConfig struct {
	// Addr is the address to listen on: "0.0.0.0", "::" (both
	// families), or one address.
	Addr string
	// TCPPorts answer rr and crr requests; the first is the main one.
	TCPPorts []int
	// UDPPort counts the udp load's datagrams.
	UDPPort int
	// ControlPort answers "reset" and "stats" about the UDP counters.
	ControlPort int
}

// Ports are the ports a running server listens on.
type Ports struct {
	TCP     []int
	UDP     int
	Control int
}

// Server is a running netload server.
type Server struct {
	tcpFDs  []int
	udpFD   int
	control net.Listener
	ports   Ports

	udp udpCounter

	wg     sync.WaitGroup
	closed atomic.Bool
}

// udpCounter counts datagrams since the last reset. It is written by the
// receiving goroutine and read by the control connection.
type udpCounter struct {
	packets atomic.Int64
	bytes   atomic.Int64
	firstNs atomic.Int64
	lastNs  atomic.Int64
}

func (c *udpCounter) reset() {
	c.packets.Store(0)
	c.bytes.Store(0)
	c.firstNs.Store(0)
	c.lastNs.Store(0)
}

// UDPStats is the control connection's answer to "stats".
type UDPStats struct {
	Packets int64 `json:"packets"`
	Bytes   int64 `json:"bytes"`
	// FirstNs and LastNs are the Unix times (ns) of the first and last
	// datagram since the reset.
	FirstNs int64 `json:"firstNs"`
	LastNs  int64 `json:"lastNs"`
}

// Listen opens every socket of cfg. Serve then answers on them.
func Listen(cfg ServerConfig) (*Server, error) {
	if len(cfg.TCPPorts) == 0 {
		return nil, errors.New("listen: no TCP port")
	}
	ip, err := netip.ParseAddr(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", cfg.Addr, err)
	}
	s := &Server{udpFD: -1}
	ok := false
	defer func() {
		if !ok {
			s.closeSockets()
		}
	}()
	for _, p := range cfg.TCPPorts {
		fd, port, err := listenSocket(netip.AddrPortFrom(ip, uint16(p)), unix.SOCK_STREAM)
		if err != nil {
			return nil, fmt.Errorf("listen on TCP port %d: %w", p, err)
		}
		s.tcpFDs = append(s.tcpFDs, fd)
		s.ports.TCP = append(s.ports.TCP, port)
	}
	if s.udpFD, s.ports.UDP, err = listenSocket(netip.AddrPortFrom(ip, uint16(cfg.UDPPort)), unix.SOCK_DGRAM); err != nil {
		return nil, fmt.Errorf("listen on UDP port %d: %w", cfg.UDPPort, err)
	}
	// A deep receive buffer keeps bursts from being dropped before the
	// receiver gets to them; the kernel caps it at rmem_max.
	_ = unix.SetsockoptInt(s.udpFD, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	// An IPv4 address, the wildcard included, means IPv4 only: Go
	// would listen on both families for 0.0.0.0, and take the port from
	// a second server on an IPv6 address.
	network := "tcp"
	if ip.Is4() {
		network = "tcp4"
	}
	if s.control, err = net.Listen(network, net.JoinHostPort(ip.String(), strconv.Itoa(cfg.ControlPort))); err != nil {
		return nil, fmt.Errorf("listen on control port %d: %w", cfg.ControlPort, err)
	}
	s.ports.Control = s.control.Addr().(*net.TCPAddr).Port
	ok = true
	return s, nil
}

// listenSocket binds a blocking socket (and listens, for TCP). An IPv6
// wildcard accepts IPv4 too.
func listenSocket(ap netip.AddrPort, typ int) (fd, port int, err error) {
	family, sa := sockaddr(ap)
	fd, err = unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("socket: %w", err)
	}
	if err := setupListenSocket(fd, family, typ, sa); err != nil {
		unix.Close(fd)
		return -1, 0, err
	}
	bound, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("getsockname: %w", err)
	}
	switch b := bound.(type) {
	case *unix.SockaddrInet4:
		port = b.Port
	case *unix.SockaddrInet6:
		port = b.Port
	}
	return fd, port, nil
}

func setupListenSocket(fd, family, typ int, sa unix.Sockaddr) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fmt.Errorf("SO_REUSEADDR: %w", err)
	}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			return fmt.Errorf("IPV6_V6ONLY: %w", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if typ == unix.SOCK_STREAM {
		if err := unix.Listen(fd, 4096); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	return nil
}

// Ports returns the ports the server listens on.
func (s *Server) Ports() Ports { return s.ports }

// Serve answers until ctx is done, then closes every socket.
func (s *Server) Serve(ctx context.Context) error {
	for _, fd := range s.tcpFDs {
		s.wg.Go(func() { s.acceptLoop(fd) })
	}
	s.wg.Go(s.receiveUDP)
	s.wg.Go(s.serveControl)
	<-ctx.Done()
	s.closeSockets()
	s.wg.Wait()
	return nil
}

// closeSockets wakes the goroutines blocked on the sockets and closes them.
// Shutdown, not close, is what wakes a thread blocked in accept or recv.
func (s *Server) closeSockets() {
	if s.closed.Swap(true) {
		return
	}
	for _, fd := range s.tcpFDs {
		_ = unix.Shutdown(fd, unix.SHUT_RDWR)
	}
	if s.udpFD >= 0 {
		_ = unix.Shutdown(s.udpFD, unix.SHUT_RDWR)
	}
	if s.control != nil {
		s.control.Close()
	}
}

func (s *Server) acceptLoop(lfd int) {
	defer unix.Close(lfd)
	for {
		fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		if err != nil || s.closed.Load() {
			if err == nil {
				unix.Close(fd)
			}
			return
		}
		go echo(fd)
	}
}

// echo answers one connection: every request byte comes back; ReqClose
// closes the connection after the answer.
func echo(fd int) {
	defer unix.Close(fd)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	buf := make([]byte, 1)
	for {
		if readByte(fd, buf) != nil {
			return
		}
		if writeByte(fd, buf) != nil || buf[0] == ReqClose {
			return
		}
	}
}

func (s *Server) receiveUDP() {
	defer unix.Close(s.udpFD)
	buf := make([]byte, 65536)
	for {
		n, _, err := unix.Recvfrom(s.udpFD, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil || s.closed.Load() {
			return
		}
		now := time.Now().UnixNano()
		if s.udp.packets.Add(1) == 1 {
			s.udp.firstNs.Store(now)
		}
		s.udp.bytes.Add(int64(n))
		s.udp.lastNs.Store(now)
	}
}

func (s *Server) serveControl() {
	for {
		c, err := s.control.Accept()
		if err != nil {
			return
		}
		go s.control1(c)
	}
}

// control1 answers one control connection, a line per request.
func (s *Server) control1(c net.Conn) {
	defer c.Close()
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		var answer []byte
		switch sc.Text() {
		case "reset":
			s.udp.reset()
			answer = []byte("ok")
		case "stats":
			answer, _ = json.Marshal(UDPStats{
				Packets: s.udp.packets.Load(), Bytes: s.udp.bytes.Load(),
				FirstNs: s.udp.firstNs.Load(), LastNs: s.udp.lastNs.Load(),
			})
		default:
			answer = []byte(`error: unknown request`)
		}
		if _, err := c.Write(append(answer, '\n')); err != nil {
			return
		}
	}
}
