package plugin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
)

// FuzzIPAMRequests sends arbitrary bodies to every IPAM method of the real
// handler (IPAM needs no privileges): the answer must always be a JSON
// object, 200 or an error with a message, never a panic.
func FuzzIPAMRequests(f *testing.F) {
	for _, seed := range []string{
		`{"AddressSpace":"","Pool":"","SubPool":"","Options":{},"V6":true}`,
		`{"Pool":"10.1.0.0/16","SubPool":"10.1.2.0/24"}`,
		`{"PoolID":"membrane-local/10.210.0.0/24#1","Address":"10.210.0.9","Options":{"RequestAddressType":"com.docker.network.gateway"}}`,
		`{"PoolID":"x","Address":"::1/64"}`,
		`{`, `[]`, `null`, ``,
	} {
		f.Add(seed)
	}
	h := newIPAMOnlyHandler(f)
	paths := []string{"/IpamDriver.RequestPool", "/IpamDriver.ReleasePool", "/IpamDriver.RequestAddress", "/IpamDriver.ReleaseAddress"}
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range paths {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
			var out map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
				t.Fatalf("%s: answer %q is not a JSON object", path, rec.Body.String())
			}
			if rec.Code != http.StatusOK {
				if msg, _ := out["Err"].(string); msg == "" {
					t.Fatalf("%s: status %d without an Err message: %s", path, rec.Code, rec.Body.String())
				}
			}
		}
	})
}

// FuzzNetworkDriverDecoding runs arbitrary bodies through the decoding and
// conversion of the network driver's requests (the driver itself needs root
// and has its own tests): errors are fine, panics are not, and whatever is
// accepted converts to well-formed values.
func FuzzNetworkDriverDecoding(f *testing.F) {
	for _, seed := range []string{
		`{"NetworkID":"n","Options":{"com.docker.network.generic":{"com.docker.network.driver.mtu":"1400"}},"IPv4Data":[{"Pool":"10.0.0.0/24","Gateway":"10.0.0.1/24"}],"IPv6Data":[{"Pool":"fd00::/64","Gateway":"fd00::1/64"}]}`,
		`{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.0.0.2/24","AddressIPv6":"fd00::2/64","MacAddress":""}}`,
		`{"Options":{"com.docker.network.generic":[1,2]},"IPv4Data":[null,{"Pool":"x"}]}`,
		`{"Interface":{"Address":"300.1.1.1/24"}}`,
		`{"Options":{"com.docker.network.portmap":[{"Proto":6,"IP":"","Port":7000,"HostIP":"127.0.0.1","HostPort":8100,"HostPortEnd":8105}]}}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		var nr network.CreateNetworkRequest
		if decodeRequest([]byte(body), &nr) == nil {
			_ = genericOptions(nr.Options)
			_, _ = internalOption(nr.Options)
			for _, data := range [][]*network.IPAMData{nr.IPv4Data, nr.IPv6Data} {
				subs, err := ipamData("IPv4Data", data)
				if err != nil {
					continue
				}
				for _, s := range subs {
					if !s.Pool.IsValid() {
						t.Fatalf("accepted an invalid pool from %q", body)
					}
				}
			}
		}
		var pr network.ProgramExternalConnectivityRequest
		if decodeRequest([]byte(body), &pr) == nil {
			reqs, err := portRequests(pr.Options)
			for _, r := range reqs {
				if err != nil || r.Validate() != nil {
					t.Fatalf("accepted an invalid port binding %+v from %q", r, body)
				}
			}
		}
		var er network.CreateEndpointRequest
		if decodeRequest([]byte(body), &er) == nil && er.Interface != nil {
			if p, err := optionalPrefix("Interface.Address", er.Interface.Address); err == nil && er.Interface.Address != "" && !p.IsValid() {
				t.Fatalf("accepted an invalid address from %q", body)
			}
		}
	})
}
