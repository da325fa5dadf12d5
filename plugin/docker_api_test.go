package plugin

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	ipamalloc "github.com/membrane-net/membrane/ipam"
	"github.com/membrane-net/membrane/state"
)

// newIPAMOnlyHandler serves the Docker protocol with a real store and IPAM.
// The network driver is absent: these tests cover the protocol layer and the
// IPAM calls, which need no privileges (the driver has its own tests).
func newIPAMOnlyHandler(t testing.TB) http.Handler {
	t.Helper()
	store, _, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	alloc, err := ipamalloc.New(store, ipamalloc.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return NewDockerHandler(nil, alloc, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func post(t *testing.T, h http.Handler, path, body string) (int, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("POST %s: answer %q is not a JSON object: %v", path, rec.Body.String(), err)
	}
	if ct := rec.Header().Get("Content-Type"); ct != contentType {
		t.Errorf("POST %s: Content-Type %q, want %q", path, ct, contentType)
	}
	return rec.Code, out
}

func TestActivateAnnouncesBothDrivers(t *testing.T) {
	code, out := post(t, newIPAMOnlyHandler(t), "/Plugin.Activate", "")
	impl, _ := json.Marshal(out["Implements"])
	if code != http.StatusOK || string(impl) != `["NetworkDriver","IpamDriver"]` {
		t.Fatalf("Activate = %d %v", code, out)
	}
}

func TestCapabilitiesAreLocalScope(t *testing.T) {
	code, out := post(t, newIPAMOnlyHandler(t), "/NetworkDriver.GetCapabilities", "")
	if code != http.StatusOK || out["Scope"] != "local" || out["ConnectivityScope"] != "local" {
		t.Fatalf("GetCapabilities = %d %v", code, out)
	}
}

func TestUnknownMethodIs404WithErr(t *testing.T) {
	code, out := post(t, newIPAMOnlyHandler(t), "/NetworkDriver.Teleport", "{}")
	if code != http.StatusNotFound || !strings.Contains(out["Err"].(string), "Teleport") {
		t.Fatalf("unknown method = %d %v", code, out)
	}
}

func TestMalformedAndOversizedBodiesAreBadRequests(t *testing.T) {
	h := newIPAMOnlyHandler(t)
	for name, body := range map[string]string{
		"not JSON":   "{",
		"empty":      "",
		"wrong type": `{"PoolID": 7}`,
		"oversized":  `{"PoolID": "` + strings.Repeat("x", maxRequestBytes) + `"}`,
	} {
		code, out := post(t, h, "/IpamDriver.ReleasePool", body)
		if code != http.StatusBadRequest || out["Err"] == "" {
			t.Errorf("%s body: %d %v, want 400 with Err", name, code, out)
		}
	}
}

func TestIPAMCallsOverTheProtocol(t *testing.T) {
	h := newIPAMOnlyHandler(t)
	code, spaces := post(t, h, "/IpamDriver.GetDefaultAddressSpaces", "")
	if code != http.StatusOK || spaces["LocalDefaultAddressSpace"] == "" {
		t.Fatalf("GetDefaultAddressSpaces = %d %v", code, spaces)
	}
	// Newer Docker adds fields; they must not matter.
	code, pool := post(t, h, "/IpamDriver.RequestPool", `{"AddressSpace":"","Pool":"","SubPool":"","Options":{},"V6":true,"Future":1}`)
	if code != http.StatusOK {
		t.Fatalf("RequestPool = %d %v", code, pool)
	}
	prefix, err := netip.ParsePrefix(pool["Pool"].(string))
	if err != nil || !prefix.Addr().Is6() || prefix.Bits() != 64 {
		t.Fatalf("RequestPool V6 gave %v, want an IPv6 /64", pool["Pool"])
	}
	req, _ := json.Marshal(map[string]any{"PoolID": pool["PoolID"], "Options": map[string]string{"RequestAddressType": "com.docker.network.gateway"}})
	code, gw := post(t, h, "/IpamDriver.RequestAddress", string(req))
	if code != http.StatusOK || gw["Address"] != netip.PrefixFrom(prefix.Addr().Next(), 64).String() {
		t.Fatalf("gateway RequestAddress = %d %v, want the first address of %s", code, gw, prefix)
	}
	req, _ = json.Marshal(map[string]any{"PoolID": pool["PoolID"], "Address": strings.TrimSuffix(gw["Address"].(string), "/64")})
	code, dup := post(t, h, "/IpamDriver.RequestAddress", string(req))
	if code != http.StatusConflict || !strings.Contains(dup["Err"].(string), "in use") {
		t.Fatalf("second request for the gateway address = %d %v, want 409 saying it is in use", code, dup)
	}
	code, bad := post(t, h, "/IpamDriver.RequestPool", `{"Pool":"10.1.2.3/33"}`)
	if code != http.StatusBadRequest || !strings.Contains(bad["Err"].(string), "10.1.2.3/33") {
		t.Fatalf("RequestPool with a bad subnet = %d %v, want 400 naming it", code, bad)
	}
	if code, out := post(t, h, "/IpamDriver.ReleasePool", `{"PoolID":"never-seen"}`); code != http.StatusOK {
		t.Fatalf("ReleasePool of an unknown pool = %d %v, want success", code, out)
	}
}

func TestGenericOptionsAreStringified(t *testing.T) {
	var opts map[string]any
	body := `{"com.docker.network.generic":{"com.docker.network.driver.mtu":"1400","n":1500,"b":true},"com.docker.network.enable_ipv6":true}`
	if err := json.NewDecoder(bytes.NewReader([]byte(body))).Decode(&opts); err != nil {
		t.Fatal(err)
	}
	got := genericOptions(opts)
	want := map[string]string{"com.docker.network.driver.mtu": "1400", "n": "1500", "b": "true"}
	if len(got) != len(want) {
		t.Fatalf("genericOptions = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("genericOptions[%q] = %q, want %q", k, got[k], v)
		}
	}
}
