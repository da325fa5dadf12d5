package firewall

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// fakeIPTables records commands; -C and -L fail (nothing exists yet).
type fakeIPTables struct {
	cmds    []string
	restore map[string]string // tool → stdin
	sysctls map[string]string
}

func (f *fakeIPTables) run(name string, stdin []byte, args ...string) ([]byte, error) {
	f.cmds = append(f.cmds, name+" "+strings.Join(args, " "))
	if stdin != nil {
		f.restore[name] = string(stdin)
	}
	for _, a := range args {
		if a == "-C" || a == "-L" {
			return []byte("No chain/target/match by that name."), errors.New("exit status 1")
		}
	}
	return nil, nil
}

func newFake(t *testing.T) (*Firewall, *fakeIPTables) {
	t.Helper()
	fake := &fakeIPTables{restore: map[string]string{}, sysctls: map[string]string{}}
	fw, err := New(Config{Instance: "membrane0", Interfaces: "mbr+", Run: fake.run,
		ReadSysctl: func(path string) (string, error) {
			if strings.Contains(path, "gone") {
				return "", os.ErrNotExist
			}
			if v, ok := fake.sysctls[path]; ok {
				return v, nil
			}
			return "0", nil
		},
		WriteSysctl: func(path, value string) error {
			if strings.Contains(path, "gone") {
				return os.ErrNotExist
			}
			fake.sysctls[path] = value
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	return fw, fake
}

func TestSyncWritesOwnChainsThenStructure(t *testing.T) {
	fw, fake := newFake(t)
	loop := ep
	loop.Ports = []Mapping{{Proto: TCP, HostPort: 8080, Port: 7000}}
	v6only := ep4only
	v6only.Interface = "mbr-v6only"
	v6only.Ports = []Mapping{{Proto: TCP, HostIP: netip.IPv6Unspecified(), HostPort: 8081, Port: 7000}}
	gone := ep4only
	gone.ID, gone.Interface = "ep3", "mbr-gone"
	s := State{
		Networks:  []Network{{ID: "net1", IPv4: netip.MustParsePrefix("10.210.0.0/24"), IPv6: netip.MustParsePrefix("fd00:aa::/64")}},
		Endpoints: []Endpoint{loop, v6only, gone},
	}
	// As if an earlier mapping of this endpoint had published on loopback.
	fake.sysctls["/proc/sys/net/ipv4/conf/mbr-v6only/route_localnet"] = "1"
	if err := fw.Sync(s); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if len(fake.cmds) == 0 || fake.cmds[0] != "iptables-restore -w --noflush" {
		t.Fatalf("first command %q, want iptables-restore of the daemon's chains", fake.cmds)
	}
	if !strings.Contains(fake.restore["iptables-restore"], "\n-A MEMBRANE-INPUT -d 127.0.0.0/8 -i mbr+") {
		t.Errorf("iptables-restore input does not rewrite the loopback guard:\n%s", fake.restore["iptables-restore"])
	}
	for _, tool := range []string{"iptables-restore", "ip6tables-restore"} {
		if !strings.Contains(fake.restore[tool], "-A MBR-membrane0-DNAT -p tcp -m tcp --dport 8080 -j DNAT") {
			t.Errorf("%s input lacks the DNAT rule:\n%s", tool, fake.restore[tool])
		}
	}
	for _, want := range []string{
		"iptables -w -t nat -N MEMBRANE-DNAT",
		"iptables -w -t nat -I PREROUTING 1 -m addrtype --dst-type LOCAL -j MEMBRANE-DNAT",
		"ip6tables -w -t nat -I OUTPUT 1 ! -d ::1/128 -m addrtype --dst-type LOCAL -j MEMBRANE-DNAT",
		"iptables -w -t filter -I MEMBRANE-FORWARD 1 -j MBR-membrane0-FWD",
		"iptables -w -t filter -I INPUT 1 -j MEMBRANE-INPUT",
	} {
		if !containsCmd(fake.cmds, want) {
			t.Errorf("Sync did not run %q; it ran:\n  %s", want, strings.Join(fake.cmds, "\n  "))
		}
	}
	want := map[string]string{
		"/proc/sys/net/ipv4/conf/mbr0123456789ab/route_localnet": "1",
		"/proc/sys/net/ipv4/conf/mbr-v6only/route_localnet":      "0",
	}
	for path, v := range want {
		if fake.sysctls[path] != v {
			t.Errorf("%s = %q, want %q", path, fake.sysctls[path], v)
		}
	}
}

func TestEnableForwardingAppendsAccepts(t *testing.T) {
	fw, fake := newFake(t)
	if err := fw.EnableForwarding(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"iptables -w -t filter -A MEMBRANE-FORWARD -i mbr+ -j ACCEPT",
		"ip6tables -w -t filter -A MEMBRANE-FORWARD -o mbr+ -j ACCEPT",
		"iptables -w -t filter -I FORWARD 1 -j MEMBRANE-FORWARD",
	} {
		if !containsCmd(fake.cmds, want) {
			t.Errorf("EnableForwarding did not run %q", want)
		}
	}
	if fake.sysctls["/proc/sys/net/ipv4/ip_forward"] != "1" || fake.sysctls["/proc/sys/net/ipv6/conf/all/forwarding"] != "1" {
		t.Errorf("forwarding sysctls: %v", fake.sysctls)
	}
}

func containsCmd(cmds []string, want string) bool {
	for _, c := range cmds {
		if c == want {
			return true
		}
	}
	return false
}

// inNewNetns runs the test on a locked thread in a fresh network namespace,
// so that the iptables commands it execs program that namespace, never the
// host's.
func inNewNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("privileged test: needs root to create a network namespace and run iptables in it")
	}
	for _, tool := range []string{"iptables", "ip6tables", "iptables-restore", "ip6tables-restore", "iptables-save", "ip6tables-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.New()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		ns.Close()
		if err := netns.Set(orig); err != nil {
			t.Errorf("restore netns: %v", err)
		}
		orig.Close()
		runtime.UnlockOSThread()
	})
}

func save(t *testing.T, tool string) string {
	t.Helper()
	out, err := exec.Command(tool + "-save").CombinedOutput()
	if err != nil {
		t.Fatalf("%s-save: %v: %s", tool, err, out)
	}
	return string(out)
}

func TestSyncInNetnsIsIdempotentAndKeepsOtherInstances(t *testing.T) {
	inNewNetns(t)
	a, err := New(Config{Instance: "mbtest0", Interfaces: "mbr+"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{Instance: "mbtest1", Interfaces: "mbr+"})
	if err != nil {
		t.Fatal(err)
	}
	e := ep
	e.Interface = "" // no veth here
	e.Ports = []Mapping{{Proto: TCP, HostPort: 8080, Port: 7000}, {Proto: UDP, HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 8081, Port: 7001}}
	sA := State{
		Networks: []Network{{ID: "net1",
			IPv4: netip.MustParsePrefix("10.210.0.0/24"), Gateway4: netip.MustParseAddr("10.210.0.1"),
			IPv6: netip.MustParsePrefix("fd00:aa::/64"), Gateway6: netip.MustParseAddr("fd00:aa::1")}},
		Endpoints: []Endpoint{e},
	}
	sB := State{Networks: []Network{{ID: "net2", IPv4: netip.MustParsePrefix("10.211.0.0/24"), Internal: true}}}
	for range 2 {
		if err := a.Sync(sA); err != nil {
			t.Fatalf("Sync a: %v", err)
		}
		if err := b.Sync(sB); err != nil {
			t.Fatalf("Sync b: %v", err)
		}
		if err := a.EnableForwarding(); err != nil {
			t.Fatalf("EnableForwarding: %v", err)
		}
	}
	v4, v6 := save(t, "iptables"), save(t, "ip6tables")
	for _, want := range []string{
		"-A PREROUTING -m addrtype --dst-type LOCAL -j MEMBRANE-DNAT",
		"-A OUTPUT -m addrtype --dst-type LOCAL -j MEMBRANE-DNAT",
		"-A POSTROUTING -j MEMBRANE-POSTROUTING",
		"-A MEMBRANE-DNAT -j MBR-mbtest0-DNAT",
		"-A MEMBRANE-DNAT -j MBR-mbtest1-DNAT",
		"-A MBR-mbtest0-DNAT -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.210.0.2:7000",
		"-A MBR-mbtest0-DNAT -d 127.0.0.1/32 -p udp -m udp --dport 8081 -j DNAT --to-destination 10.210.0.2:7001",
		"-A MBR-mbtest0-POST -s 10.210.0.0/24 ! -o mbr+ -j MASQUERADE",
		"-A MBR-mbtest0-POST -s 127.0.0.0/8 -d 10.210.0.0/24 -j SNAT --to-source 10.210.0.1",
		"-A MBR-mbtest0-FWD -d 10.210.0.0/24 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
		"-A MBR-mbtest1-FWD -s 10.211.0.0/24 -j DROP",
		"-A MBR-mbtest1-FWD -d 10.211.0.0/24 -j DROP",
		"-A FORWARD -j MEMBRANE-FORWARD",
		"-A MEMBRANE-INPUT -d 127.0.0.0/8 -i mbr+ -m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP",
		"-A MEMBRANE-FORWARD -i mbr+ -j ACCEPT",
	} {
		if n := strings.Count(v4, want+"\n"); n != 1 {
			t.Errorf("iptables-save has %d × %q, want 1:\n%s", n, want, v4)
		}
	}
	for _, want := range []string{
		"-A OUTPUT ! -d ::1/128 -m addrtype --dst-type LOCAL -j MEMBRANE-DNAT",
		"-A MBR-mbtest0-DNAT -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00:aa::2]:7000",
		"-A MBR-mbtest0-POST -s fd00:aa::/64 ! -o mbr+ -j MASQUERADE",
	} {
		if n := strings.Count(v6, want+"\n"); n != 1 {
			t.Errorf("ip6tables-save has %d × %q, want 1:\n%s", n, want, v6)
		}
	}
	// The isolation jumps come before the ACCEPTs.
	fwd := v4[strings.Index(v4, "-A MEMBRANE-FORWARD"):]
	if strings.Index(fwd, "-j ACCEPT") < strings.Index(fwd, "-j MBR-mbtest1-FWD") {
		t.Errorf("MEMBRANE-FORWARD accepts before it isolates:\n%s", v4)
	}

	// Everything of a's gone from state: a's chains empty, b's untouched.
	if err := a.Sync(State{}); err != nil {
		t.Fatalf("Sync a (empty): %v", err)
	}
	v4 = save(t, "iptables")
	if strings.Contains(v4, "-A MBR-mbtest0-") {
		t.Errorf("a's rules are left after an empty Sync:\n%s", v4)
	}
	if !strings.Contains(v4, "-A MBR-mbtest1-FWD -s 10.211.0.0/24 -j DROP") {
		t.Errorf("a's Sync removed b's rules:\n%s", v4)
	}
}
