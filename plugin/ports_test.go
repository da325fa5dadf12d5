package plugin

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/membrane-net/membrane/firewall"
)

// dockerPortMapRequest is the ProgramExternalConnectivity body Docker
// 20.10.24 sent for
//
//	docker run -p 8080:7000 -p 127.0.0.1:8081:7000 -p [::]:8082:7000 \
//	    -p 8090-8091:7000-7001/udp -p 8100-8105:7000 -p 7002 ...
const dockerPortMapRequest = `{"NetworkID":"1c570076a7d5","EndpointID":"be1866655d4d","Options":{` +
	`"com.docker.network.endpoint.exposedports":[{"Proto":6,"Port":7002},{"Proto":17,"Port":7001},{"Proto":6,"Port":7000},{"Proto":17,"Port":7000}],` +
	`"com.docker.network.portmap":[` +
	`{"Proto":6,"IP":"","Port":7002,"HostIP":"","HostPort":0,"HostPortEnd":0},` +
	`{"Proto":17,"IP":"","Port":7001,"HostIP":"","HostPort":8091,"HostPortEnd":8091},` +
	`{"Proto":6,"IP":"","Port":7000,"HostIP":"","HostPort":8100,"HostPortEnd":8105},` +
	`{"Proto":6,"IP":"","Port":7000,"HostIP":"::","HostPort":8082,"HostPortEnd":8082},` +
	`{"Proto":6,"IP":"","Port":7000,"HostIP":"127.0.0.1","HostPort":8081,"HostPortEnd":8081},` +
	`{"Proto":6,"IP":"","Port":7000,"HostIP":"","HostPort":8080,"HostPortEnd":8080},` +
	`{"Proto":17,"IP":"","Port":7000,"HostIP":"","HostPort":8090,"HostPortEnd":8090}]}}`

func TestPortRequestsFromDockersPortMap(t *testing.T) {
	var req network.ProgramExternalConnectivityRequest
	if err := decodeRequest([]byte(dockerPortMapRequest), &req); err != nil {
		t.Fatal(err)
	}
	got, err := portRequests(req.Options)
	if err != nil {
		t.Fatalf("portRequests: %v", err)
	}
	want := []firewall.Request{
		{Proto: firewall.TCP, Port: 7002},
		{Proto: firewall.UDP, HostPort: 8091, HostPortEnd: 8091, Port: 7001},
		{Proto: firewall.TCP, HostPort: 8100, HostPortEnd: 8105, Port: 7000},
		{Proto: firewall.TCP, HostIP: netip.IPv6Unspecified(), HostPort: 8082, HostPortEnd: 8082, Port: 7000},
		{Proto: firewall.TCP, HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 8081, HostPortEnd: 8081, Port: 7000},
		{Proto: firewall.TCP, HostPort: 8080, HostPortEnd: 8080, Port: 7000},
		{Proto: firewall.UDP, HostPort: 8090, HostPortEnd: 8090, Port: 7000},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("portRequests:\n got %+v\nwant %+v", got, want)
	}
}

func TestPortRequestsRefuseNonsense(t *testing.T) {
	for _, tc := range []struct {
		portmap string
		want    string
	}{
		{`[{"Proto":1,"Port":7,"HostPort":7}]`, "Proto 1"},
		{`[{"Proto":6,"Port":7,"HostIP":"localhost","HostPort":7}]`, `HostIP "localhost"`},
		{`[{"Proto":6,"Port":0,"HostPort":7}]`, "container port 0"},
		{`[{"Proto":6,"Port":7,"HostPort":9,"HostPortEnd":8}]`, "ends before it starts"},
		{`{"Proto":6}`, "want a list of port bindings"},
		{`[{"Proto":6,"Port":70000}]`, "want a list of port bindings"},
	} {
		var opts map[string]any
		if err := json.Unmarshal([]byte(`{"`+optionPortMap+`":`+tc.portmap+`}`), &opts); err != nil {
			t.Fatal(err)
		}
		_, err := portRequests(opts)
		if !errors.Is(err, errBadRequest) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("portRequests(%s) = %v, want a bad request naming %q", tc.portmap, err, tc.want)
		}
	}
	if reqs, err := portRequests(map[string]any{}); err != nil || reqs != nil {
		t.Errorf("no port map: %v, %v; want nothing", reqs, err)
	}
}

func TestInternalOptionAsDockerSendsIt(t *testing.T) {
	for body, want := range map[string]bool{
		`{"com.docker.network.enable_ipv6":true,"com.docker.network.generic":{},"com.docker.network.internal":true}`: true,
		`{"com.docker.network.enable_ipv6":true,"com.docker.network.generic":{}}`:                                    false,
		`{"com.docker.network.internal":"true"}`:                                                                     true,
	} {
		var opts map[string]any
		if err := json.Unmarshal([]byte(body), &opts); err != nil {
			t.Fatal(err)
		}
		if got, err := internalOption(opts); err != nil || got != want {
			t.Errorf("internalOption(%s) = %v, %v; want %v", body, got, err, want)
		}
	}
	for _, body := range []string{`{"com.docker.network.internal":"nonsense"}`, `{"com.docker.network.internal":[1]}`} {
		var opts map[string]any
		if err := json.Unmarshal([]byte(body), &opts); err != nil {
			t.Fatal(err)
		}
		if _, err := internalOption(opts); !errors.Is(err, errBadRequest) {
			t.Errorf("internalOption(%s) = %v, want a bad request", body, err)
		}
	}
}
