package firewall

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func addr(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}

func TestConflicts(t *testing.T) {
	m := func(proto Proto, host string, port uint16) Mapping {
		return Mapping{Proto: proto, HostIP: addr(host), HostPort: port, Port: 80}
	}
	for _, tc := range []struct {
		a, b Mapping
		want bool
	}{
		{m(TCP, "", 8080), m(TCP, "", 8080), true},
		{m(TCP, "", 8080), m(UDP, "", 8080), false},
		{m(TCP, "", 8080), m(TCP, "", 8081), false},
		{m(TCP, "", 8080), m(TCP, "127.0.0.1", 8080), true},
		{m(TCP, "", 8080), m(TCP, "::", 8080), true},
		{m(TCP, "0.0.0.0", 8080), m(TCP, "::", 8080), false},
		{m(TCP, "0.0.0.0", 8080), m(TCP, "127.0.0.1", 8080), true},
		{m(TCP, "127.0.0.1", 8080), m(TCP, "198.18.0.1", 8080), false},
		{m(TCP, "127.0.0.1", 8080), m(TCP, "127.0.0.1", 8080), true},
		{m(TCP, "::", 8080), m(TCP, "fd00::1", 8080), true},
		{m(TCP, "127.0.0.1", 8080), m(TCP, "fd00::1", 8080), false},
	} {
		if got := Conflicts(tc.a, tc.b); got != tc.want {
			t.Errorf("Conflicts(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := Conflicts(tc.b, tc.a); got != tc.want {
			t.Errorf("Conflicts(%s, %s) = %v, want %v (not symmetric)", tc.b, tc.a, got, tc.want)
		}
	}
}

func TestAllocate(t *testing.T) {
	busy := func(ports ...uint16) func(Mapping) error {
		return func(m Mapping) error {
			for _, p := range ports {
				if m.HostPort == p {
					return errors.New("address already in use")
				}
			}
			return nil
		}
	}
	a := PortAllocator{EphemeralFirst: 32768, EphemeralLast: 32770}
	for _, tc := range []struct {
		name    string
		inUse   func(Mapping) error
		reqs    []Request
		taken   []Mapping
		want    []Mapping
		wantErr string
	}{
		{
			name: "the named port",
			reqs: []Request{{Proto: TCP, HostPort: 8080, HostPortEnd: 8080, Port: 7000}},
			want: []Mapping{{Proto: TCP, HostPort: 8080, Port: 7000}},
		},
		{
			name: "HostPortEnd 0 is one port too; the host address is kept",
			reqs: []Request{{Proto: UDP, HostIP: addr("127.0.0.1"), HostPort: 53, Port: 5353}},
			want: []Mapping{{Proto: UDP, HostIP: addr("127.0.0.1"), HostPort: 53, Port: 5353}},
		},
		{
			name:    "a port another endpoint publishes",
			reqs:    []Request{{Proto: TCP, HostPort: 8080, Port: 7000}},
			taken:   []Mapping{{Proto: TCP, HostIP: addr("0.0.0.0"), HostPort: 8080, Port: 80}},
			wantErr: "bind for 0.0.0.0:8080/tcp failed: port is already allocated (published as 0.0.0.0:8080->80/tcp)",
		},
		{
			name:    "a port a host socket holds",
			inUse:   busy(8080),
			reqs:    []Request{{Proto: TCP, HostIP: addr("127.0.0.1"), HostPort: 8080, Port: 7000}},
			wantErr: "bind for 127.0.0.1:8080/tcp failed: port is already allocated: address already in use",
		},
		{
			name:  "a range gives its first free port",
			inUse: busy(8100),
			reqs:  []Request{{Proto: TCP, HostPort: 8100, HostPortEnd: 8105, Port: 7000}},
			taken: []Mapping{{Proto: TCP, HostPort: 8101, Port: 80}},
			want:  []Mapping{{Proto: TCP, HostPort: 8102, Port: 7000}},
		},
		{
			name:    "a range with nothing free",
			inUse:   busy(8100),
			reqs:    []Request{{Proto: TCP, HostPort: 8100, HostPortEnd: 8101, Port: 7000}},
			taken:   []Mapping{{Proto: TCP, HostPort: 8101, Port: 80}},
			wantErr: "port is already allocated: *:8100-8101->7000/tcp: no free host port in 8100-8101",
		},
		{
			name: "no host port: the ephemeral range; requests of one call do not collide",
			reqs: []Request{{Proto: TCP, Port: 7000}, {Proto: TCP, Port: 7002}, {Proto: UDP, Port: 7001}},
			want: []Mapping{
				{Proto: TCP, HostPort: 32768, Port: 7000},
				{Proto: TCP, HostPort: 32769, Port: 7002},
				{Proto: UDP, HostPort: 32768, Port: 7001},
			},
		},
		{
			name: "the same port on 127.0.0.1 and on every IPv6 address",
			reqs: []Request{
				{Proto: TCP, HostIP: addr("127.0.0.1"), HostPort: 8080, Port: 7000},
				{Proto: TCP, HostIP: addr("::"), HostPort: 8080, Port: 7000},
			},
			want: []Mapping{
				{Proto: TCP, HostIP: addr("127.0.0.1"), HostPort: 8080, Port: 7000},
				{Proto: TCP, HostIP: addr("::"), HostPort: 8080, Port: 7000},
			},
		},
		{
			name: "an address the host does not have",
			inUse: func(Mapping) error {
				return &net.OpError{Op: "listen", Err: os.NewSyscallError("bind", syscall.EADDRNOTAVAIL)}
			},
			reqs:    []Request{{Proto: TCP, HostIP: addr("192.0.2.1"), HostPort: 8080, HostPortEnd: 8090, Port: 7000}},
			wantErr: "invalid port binding: 192.0.2.1:8080->7000/tcp: 192.0.2.1 is not an address of this host",
		},
		{
			name:    "a bad request",
			reqs:    []Request{{Proto: "icmp", HostPort: 1, Port: 1}},
			wantErr: `invalid port binding: protocol "icmp"`,
		},
		{
			name:    "a backwards range",
			reqs:    []Request{{Proto: TCP, HostPort: 9000, HostPortEnd: 8000, Port: 1}},
			wantErr: "invalid port binding: host port range 9000-8000 ends before it starts",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := a
			a.InUse = tc.inUse
			got, err := a.Allocate(tc.reqs, tc.taken)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Allocate = %v, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Allocate: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Allocate:\n got %v\nwant %v", got, tc.want)
			}
			for i, r := range tc.reqs {
				if !r.Satisfies(got[i], a.EphemeralFirst, a.EphemeralLast) {
					t.Errorf("request %s is not satisfied by its own answer %s", r, got[i])
				}
			}
		})
	}
}

func TestAllocateErrorsAreClassified(t *testing.T) {
	a := PortAllocator{EphemeralFirst: 1, EphemeralLast: 2}
	_, err := a.Allocate([]Request{{Proto: TCP, HostPort: 80, Port: 80}}, []Mapping{{Proto: TCP, HostPort: 80, Port: 1}})
	if !errors.Is(err, ErrPortAllocated) {
		t.Errorf("conflict: %v, want ErrPortAllocated", err)
	}
	_, err = a.Allocate([]Request{{Proto: TCP, Port: 0}}, nil)
	if !errors.Is(err, ErrInvalidPort) {
		t.Errorf("container port 0: %v, want ErrInvalidPort", err)
	}
}

// HostPortInUse binds on loopback only: nothing leaves the machine.
func TestHostPortInUseSeesAListener(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no IPv4 loopback: %v", err)
	}
	defer ln.Close()
	port, _ := strconv.Atoi(strings.TrimPrefix(ln.Addr().String(), "127.0.0.1:"))
	held := Mapping{Proto: TCP, HostIP: addr("127.0.0.1"), HostPort: uint16(port), Port: 80}
	if err := HostPortInUse(held); err == nil {
		t.Errorf("HostPortInUse(%s) = nil while a listener holds the port", held)
	}
	// UDP on the same number is another port.
	held.Proto = UDP
	if err := HostPortInUse(held); err != nil {
		t.Errorf("HostPortInUse(%s) = %v, want nil", held, err)
	}
}
