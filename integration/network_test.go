package integration

import (
	"net/netip"
	"strings"
	"testing"
)

// TestNetworkCreateShowsBothSubnetsAndRemoves: `docker network create
// --ipv6` yields a network whose inspect output shows one IPv4 and one IPv6
// subnet, each with a gateway inside it (the requested subnets when given);
// `docker network rm` makes it disappear and frees the given subnets for a
// new network.
func TestNetworkCreateShowsBothSubnetsAndRemoves(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d netDriver) {
		for _, tc := range []struct {
			name     string
			explicit bool
		}{
			{"driver-pools", false},
			{"given-subnets", true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var want subnets
				if tc.explicit {
					want = nextSubnets()
				}
				args := d.createArgs(want)
				name := uniqueName("net")
				recordNetwork(docker(t, append([]string{"network", "create", "--label", testLabel}, append(args, name)...)...))
				removed := false
				t.Cleanup(func() {
					if !removed {
						_, _ = dockerErr("network", "rm", name)
					}
				})

				ni := inspectNetwork(t, name)
				if ni.Driver != d.Driver {
					t.Errorf("inspect shows driver %q, want %q", ni.Driver, d.Driver)
				}
				wantIPAM := d.IPAM
				if wantIPAM == "" {
					wantIPAM = "default"
				}
				if ni.IPAM.Driver != wantIPAM {
					t.Errorf("inspect shows IPAM driver %q, want %q", ni.IPAM.Driver, wantIPAM)
				}
				if !ni.EnableIPv6 {
					t.Errorf("inspect shows EnableIPv6 false")
				}
				v4, v6 := networkPools(t, name)
				t.Logf("%s: IPv4 %s gw %s, IPv6 %s gw %s", name, v4.Subnet, v4.Gateway, v6.Subnet, v6.Gateway)
				// Docker shows the gateway of a pool the IPAM driver chose;
				// for a subnet the user gave it shows the user's (absent)
				// gateway, whatever the driver. The bridge baseline always
				// gets a given IPv6 subnet.
				for _, p := range []pool{v4, v6} {
					driverChose := !tc.explicit && (d.isMembrane() || p.Subnet.Addr().Is4())
					if driverChose && !p.Gateway.IsValid() {
						t.Errorf("inspect shows no gateway for subnet %s, which the IPAM driver chose", p.Subnet)
					}
				}
				// Every container still gets a gateway in both families.
				c := runContainer(t, name)
				if ep := containerNetworks(t, c)[name]; ep.Gateway == "" || ep.IPv6Gateway == "" {
					t.Errorf("container on %s: inspect shows gateways %q and %q, want both", name, ep.Gateway, ep.IPv6Gateway)
				} else {
					for _, gw := range []string{ep.Gateway, ep.IPv6Gateway} {
						a, err := netip.ParseAddr(gw)
						if err != nil || !(v4.Subnet.Contains(a) || v6.Subnet.Contains(a)) {
							t.Errorf("container gateway %q is outside the network's subnets", gw)
						}
					}
				}
				docker(t, "rm", "-f", c)
				if tc.explicit {
					if v4.Subnet != want.V4 {
						t.Errorf("IPv4 subnet %s, want the requested %s", v4.Subnet, want.V4)
					}
					if v6.Subnet != want.V6 {
						t.Errorf("IPv6 subnet %s, want the requested %s", v6.Subnet, want.V6)
					}
				}

				docker(t, "network", "rm", name)
				removed = true
				if out, err := dockerErr("network", "inspect", name); err == nil {
					t.Errorf("network still inspectable after rm: %s", out)
				}
				if ls := docker(t, "network", "ls", "--format", "{{.Name}}"); containsLine(ls, name) {
					t.Errorf("network ls still lists %s after rm", name)
				}
				if tc.explicit {
					// The pools went back: the same subnets can be had again.
					again := newNetwork(t, uniqueName("net"), d.createArgs(want)...)
					if a4, a6 := networkPools(t, again); a4.Subnet != want.V4 || a6.Subnet != want.V6 {
						t.Errorf("re-created network has %s and %s, want %s and %s", a4.Subnet, a6.Subnet, want.V4, want.V6)
					}
				}
			})
		}
	})
}

// TestNetworkWithoutIPv6IsRefused: membrane is IPv6-first, so a network
// created without --ipv6 is refused with an error that names the flag, and
// no network is left behind.
func TestNetworkWithoutIPv6IsRefused(t *testing.T) {
	onlyMembrane(t, func(t *testing.T, d netDriver) {
		name := uniqueName("net")
		out, err := dockerErr("network", "create", "--label", testLabel, "-d", d.Driver, "--ipam-driver", d.IPAM, name)
		if err == nil {
			_, _ = dockerErr("network", "rm", name)
			t.Fatalf("network create without --ipv6 succeeded (%s), want it refused", out)
		}
		if !strings.Contains(err.Error(), "--ipv6") {
			t.Errorf("error does not mention --ipv6: %v", err)
		}
		if ls := docker(t, "network", "ls", "--format", "{{.Name}}"); containsLine(ls, name) {
			t.Errorf("refused network %s is listed by network ls", name)
			_, _ = dockerErr("network", "rm", name)
		}
	})
}

func containsLine(s, line string) bool {
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}
