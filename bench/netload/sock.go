package netload

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// sockaddr turns an address into the family and sockaddr system calls take.
func sockaddr(ap netip.AddrPort) (int, unix.Sockaddr) {
	if a := ap.Addr(); a.Is4() || a.Is4In6() {
		return unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.Unmap().As4()}
	}
	return unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

// parseAddrPort parses "HOST:PORT" with a literal IP address.
func parseAddrPort(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: want IP:PORT: %w", s, err)
	}
	return ap, nil
}

// dialTCP connects a blocking TCP socket with Nagle off. timeout bounds
// the connect and every later read and write (SO_SNDTIMEO also bounds
// connect on Linux), so a dropped SYN fails instead of hanging.
func dialTCP(ap netip.AddrPort, timeoutMicros int64) (int, error) {
	family, sa := sockaddr(ap)
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	tv := unix.NsecToTimeval(timeoutMicros * 1000)
	for _, opt := range []int{unix.SO_SNDTIMEO, unix.SO_RCVTIMEO} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("set socket timeout: %w", err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("set TCP_NODELAY: %w", err)
	}
	if err := connect(fd, sa, timeoutMicros); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect %s: %w", ap, err)
	}
	return fd, nil
}

// connect connects fd. A signal can interrupt a connect that has a timeout
// (SA_RESTART does not apply then); the handshake goes on in the kernel,
// so an interrupted connect is finished by waiting for the socket to
// become writable and reading its error.
func connect(fd int, sa unix.Sockaddr, timeoutMicros int64) error {
	err := unix.Connect(fd, sa)
	if err != unix.EINTR && err != unix.EALREADY && err != unix.EINPROGRESS {
		return err
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	timeoutMillis := int(max(timeoutMicros/1000, 1))
	for {
		n, err := unix.Poll(pfd, timeoutMillis)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return unix.ETIMEDOUT
		}
		break
	}
	soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if soErr != 0 {
		return unix.Errno(soErr)
	}
	return nil
}

// readByte reads exactly one byte; a closed connection is an error.
func readByte(fd int, buf []byte) error {
	for {
		n, err := unix.Read(fd, buf[:1])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return err
		case n == 0:
			return errPeerClosed
		}
		return nil
	}
}

// writeByte writes one byte.
func writeByte(fd int, buf []byte) error {
	for {
		_, err := unix.Write(fd, buf[:1])
		if err == unix.EINTR {
			continue
		}
		return err
	}
}

// retryEINTR runs f until it is not interrupted by a signal (Go's runtime
// preempts threads with signals, which can interrupt blocking calls).
func retryEINTR(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}
