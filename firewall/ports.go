package firewall

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Errors of port publishing.
var (
	// ErrPortAllocated: the host port is published already, by membrane
	// or by something else listening on the host.
	ErrPortAllocated = errors.New("port is already allocated")
	// ErrInvalidPort: a port binding Docker sent makes no sense.
	ErrInvalidPort = errors.New("invalid port binding")
)

// Request is one port binding as Docker asks for it (`-p`).
type Request struct {
	Proto  Proto
	HostIP netip.Addr // see Mapping.HostIP
	// HostPort and HostPortEnd: one port (equal, or HostPortEnd 0), any
	// free port of a range (`-p 8000-8010:80`), or any free port of the
	// ephemeral range (both 0, `-p 80`).
	HostPort, HostPortEnd uint16
	Port                  uint16 // the container's port
}

// Validate checks what Docker's own parser guarantees, for requests that
// did not come from it.
func (r Request) Validate() error {
	switch r.Proto {
	case TCP, UDP, SCTP:
	default:
		return fmt.Errorf("%w: protocol %q: want tcp, udp or sctp", ErrInvalidPort, r.Proto)
	}
	if r.Port == 0 {
		return fmt.Errorf("%w: container port 0", ErrInvalidPort)
	}
	if r.HostPortEnd != 0 && r.HostPortEnd < r.HostPort {
		return fmt.Errorf("%w: host port range %d-%d ends before it starts", ErrInvalidPort, r.HostPort, r.HostPortEnd)
	}
	if r.HostPort == 0 && r.HostPortEnd != 0 {
		return fmt.Errorf("%w: host port range 0-%d", ErrInvalidPort, r.HostPortEnd)
	}
	if r.HostIP.Is4In6() {
		return fmt.Errorf("%w: host address %s: give IPv4 addresses in IPv4 form", ErrInvalidPort, r.HostIP)
	}
	return nil
}

func (r Request) String() string {
	m := Mapping{Proto: r.Proto, HostIP: r.HostIP, HostPort: r.HostPort, Port: r.Port}.String()
	if r.HostPortEnd > r.HostPort {
		m = strings.Replace(m, strconv.Itoa(int(r.HostPort))+"->", fmt.Sprintf("%d-%d->", r.HostPort, r.HostPortEnd), 1)
	}
	return m
}

// Satisfies reports whether m is a valid answer to r.
func (r Request) Satisfies(m Mapping, ephemeralFirst, ephemeralLast uint16) bool {
	if m.Proto != r.Proto || m.HostIP != r.HostIP || m.Port != r.Port {
		return false
	}
	first, last := r.portRange(ephemeralFirst, ephemeralLast)
	return m.HostPort >= first && m.HostPort <= last
}

func (r Request) portRange(ephemeralFirst, ephemeralLast uint16) (uint16, uint16) {
	switch {
	case r.HostPort == 0:
		return ephemeralFirst, ephemeralLast
	case r.HostPortEnd > r.HostPort:
		return r.HostPort, r.HostPortEnd
	default:
		return r.HostPort, r.HostPort
	}
}

// Conflicts reports whether a and b cannot both be published: the same
// protocol and port on overlapping host addresses.
func Conflicts(a, b Mapping) bool {
	if a.Proto != b.Proto || a.HostPort != b.HostPort {
		return false
	}
	for _, fam := range a.Families() {
		if !slices.Contains(b.Families(), fam) {
			continue
		}
		if !a.HostIP.IsValid() || !b.HostIP.IsValid() || a.HostIP.IsUnspecified() || b.HostIP.IsUnspecified() || a.HostIP == b.HostIP {
			return true
		}
	}
	return false
}

// PortAllocator turns requests into mappings.
type PortAllocator struct {
	// EphemeralFirst and EphemeralLast bound the ports picked for a
	// request that names none (Docker's default is the kernel's
	// ip_local_port_range).
	EphemeralFirst, EphemeralLast uint16
	// InUse reports why the host cannot give a mapping's port (a socket
	// holds it); nil checks nothing.
	InUse func(Mapping) error
}

// Allocate picks a host port for each request: the one it names, or the
// first free one of its range. A port is free when no mapping in taken
// and none picked before conflicts with it, and InUse finds nothing on
// the host. A request for one port that is not free fails the whole call,
// as Docker's bridge does.
func (a PortAllocator) Allocate(reqs []Request, taken []Mapping) ([]Mapping, error) {
	taken = slices.Clone(taken)
	var out []Mapping
	for _, r := range reqs {
		if err := r.Validate(); err != nil {
			return nil, err
		}
		first, last := r.portRange(a.EphemeralFirst, a.EphemeralLast)
		if first == 0 || last < first {
			return nil, fmt.Errorf("%w: %s: no ephemeral port range to pick from", ErrInvalidPort, r)
		}
		var lastErr error
		found := false
		for p := int(first); p <= int(last); p++ {
			m := Mapping{Proto: r.Proto, HostIP: r.HostIP, HostPort: uint16(p), Port: r.Port}
			if err := a.free(m, taken); err != nil {
				if errors.Is(err, ErrInvalidPort) {
					return nil, err
				}
				lastErr = err
				continue
			}
			out, taken, found = append(out, m), append(taken, m), true
			break
		}
		if !found {
			if first == last {
				return nil, lastErr
			}
			return nil, fmt.Errorf("%w: %s: no free host port in %d-%d (last: %v)", ErrPortAllocated, r, first, last, lastErr)
		}
	}
	return out, nil
}

func (a PortAllocator) free(m Mapping, taken []Mapping) error {
	for _, t := range taken {
		if Conflicts(m, t) {
			return fmt.Errorf("bind for %s failed: %w (published as %s)", bindName(m), ErrPortAllocated, t)
		}
	}
	if a.InUse != nil {
		err := a.InUse(m)
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			return fmt.Errorf("%w: %s: %s is not an address of this host", ErrInvalidPort, m, m.HostIP)
		}
		if err != nil {
			return fmt.Errorf("bind for %s failed: %w: %w", bindName(m), ErrPortAllocated, err)
		}
	}
	return nil
}

// bindName is a mapping's host side, as Docker's error messages name it.
func bindName(m Mapping) string {
	host := "0.0.0.0"
	if m.HostIP.IsValid() {
		host = m.HostIP.String()
	}
	return net.JoinHostPort(host, strconv.Itoa(int(m.HostPort))) + "/" + string(m.Proto)
}

// HostPortInUse binds the mapping's host port in every family it publishes
// on, and lets go at once: a socket already bound there (a host service,
// Docker's proxy for a bridge network) makes it fail. The binding itself is
// only a check: published traffic is DNATed before any socket sees it.
// SCTP is not checked.
func HostPortInUse(m Mapping) error {
	if m.Proto == SCTP {
		return nil
	}
	for _, fam := range m.Families() {
		host := m.HostIP
		if !host.IsValid() {
			host = netip.IPv4Unspecified()
			if fam == IPv6 {
				host = netip.IPv6Unspecified()
			}
		}
		network := string(m.Proto) + strconv.Itoa(int(fam))
		addr := netip.AddrPortFrom(host, m.HostPort).String()
		var err error
		if m.Proto == TCP {
			var ln net.Listener
			if ln, err = net.Listen(network, addr); err == nil {
				ln.Close()
			}
		} else {
			var pc net.PacketConn
			if pc, err = net.ListenPacket(network, addr); err == nil {
				pc.Close()
			}
		}
		if err != nil && !m.HostIP.IsValid() && errors.Is(err, syscall.EAFNOSUPPORT) {
			continue // a host without this family: publishing on "every address" skips it
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// EphemeralRange reads the kernel's ip_local_port_range, where Docker also
// picks ports for `-p PORT`.
func EphemeralRange() (uint16, uint16, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, fmt.Errorf("read ephemeral port range: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("read ephemeral port range: %q", b)
	}
	first, err1 := strconv.ParseUint(f[0], 10, 16)
	last, err2 := strconv.ParseUint(f[1], 10, 16)
	if err := errors.Join(err1, err2); err != nil || first == 0 || last < first {
		return 0, 0, fmt.Errorf("read ephemeral port range %q: %w", b, err)
	}
	return uint16(first), uint16(last), nil
}
