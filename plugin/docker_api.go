package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"

	"github.com/membrane-net/membrane/driver"
	"github.com/membrane-net/membrane/firewall"
	ipamalloc "github.com/membrane-net/membrane/ipam"
)

// Media types of Docker's plugin protocol and of the management API.
const (
	contentType    = "application/vnd.docker.plugins.v1.2+json"
	apiContentType = "application/json"
)

// maxRequestBytes bounds a Docker request body; real ones are a few KiB.
const maxRequestBytes = 1 << 20

// requestTimeout bounds one Docker call. Docker itself gives up after 30 s
// and retries, so an answer later than that is wasted.
const requestTimeout = 25 * time.Second

// Log attribute keys.
const (
	logKeyMethod   = "method"
	logKeyDuration = "duration"
	logKeyError    = "error"
	logKeyStatus   = "status"
	logKeyPorts    = "ports"
)

// Keys of the options Docker sends next to the user's generic ones
// (libnetwork's netlabel package).
const (
	optionInternal = "com.docker.network.internal" // CreateNetwork: --internal, a JSON boolean
	optionPortMap  = "com.docker.network.portmap"  // ProgramExternalConnectivity: the -p bindings
)

// dockerAPI answers Docker's NetworkDriver and IpamDriver calls.
type dockerAPI struct {
	drv  *driver.Driver
	ipam *ipamalloc.Allocator
	log  *slog.Logger
}

// call is one protocol method: it decodes its own request from body.
type call func(ctx context.Context, body []byte) (any, error)

// NewDockerHandler returns the handler for Docker's plugin socket.
func NewDockerHandler(drv *driver.Driver, alloc *ipamalloc.Allocator, log *slog.Logger) http.Handler {
	a := &dockerAPI{drv: drv, ipam: alloc, log: log}
	calls := map[string]call{
		"/Plugin.Activate": noRequest(func() (any, error) {
			return map[string][]string{"Implements": {"NetworkDriver", "IpamDriver"}}, nil
		}),

		"/NetworkDriver.GetCapabilities": noRequest(func() (any, error) {
			return network.CapabilitiesResponse{Scope: "local", ConnectivityScope: "local"}, nil
		}),
		"/NetworkDriver.CreateNetwork":               decoded(a.createNetwork),
		"/NetworkDriver.DeleteNetwork":               decoded(a.deleteNetwork),
		"/NetworkDriver.AllocateNetwork":             decoded(a.allocateNetwork),
		"/NetworkDriver.FreeNetwork":                 decoded(ignore[network.FreeNetworkRequest]),
		"/NetworkDriver.CreateEndpoint":              decoded(a.createEndpoint),
		"/NetworkDriver.DeleteEndpoint":              decoded(a.deleteEndpoint),
		"/NetworkDriver.EndpointOperInfo":            decoded(a.endpointInfo),
		"/NetworkDriver.Join":                        decoded(a.join),
		"/NetworkDriver.Leave":                       decoded(a.leave),
		"/NetworkDriver.DiscoverNew":                 decoded(ignore[network.DiscoveryNotification]),
		"/NetworkDriver.DiscoverDelete":              decoded(ignore[network.DiscoveryNotification]),
		"/NetworkDriver.ProgramExternalConnectivity": decoded(a.programExternalConnectivity),
		"/NetworkDriver.RevokeExternalConnectivity":  decoded(a.revokeExternalConnectivity),

		"/IpamDriver.GetCapabilities": noRequest(func() (any, error) {
			return ipam.CapabilitiesResponse{RequiresMACAddress: false}, nil
		}),
		"/IpamDriver.GetDefaultAddressSpaces": noRequest(func() (any, error) {
			local, global := alloc.DefaultAddressSpaces()
			return ipam.AddressSpacesResponse{LocalDefaultAddressSpace: local, GlobalDefaultAddressSpace: global}, nil
		}),
		"/IpamDriver.RequestPool":    decoded(a.requestPool),
		"/IpamDriver.ReleasePool":    decoded(a.releasePool),
		"/IpamDriver.RequestAddress": decoded(a.requestAddress),
		"/IpamDriver.ReleaseAddress": decoded(a.releaseAddress),
	}
	mux := http.NewServeMux()
	for path, c := range calls {
		mux.Handle("POST "+path, a.serve(path, c))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, contentType, http.StatusNotFound, network.ErrorResponse{Err: fmt.Sprintf("%s %s: no such plugin method", r.Method, r.URL.Path)})
	})
	return mux
}

// serve runs one call with a bounded body and time, and writes its answer.
func (a *dockerAPI) serve(method string, c call) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
		defer cancel()
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
		var resp any
		if err != nil {
			err = fmt.Errorf("%w: read request body: %w", errBadRequest, err)
		} else {
			resp, err = c(ctx, body)
		}
		if err != nil {
			status := httpStatus(err)
			a.log.Warn("docker call refused", logKeyMethod, method, logKeyStatus, status,
				logKeyError, err.Error(), logKeyDuration, time.Since(start))
			writeJSON(w, contentType, status, network.ErrorResponse{Err: err.Error()})
			return
		}
		a.log.Debug("docker call", logKeyMethod, method, logKeyDuration, time.Since(start))
		writeJSON(w, contentType, http.StatusOK, resp)
	})
}

func writeJSON(w http.ResponseWriter, mediaType string, status int, v any) {
	w.Header().Set("Content-Type", mediaType)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the peer hung up: nothing left to tell it
}

var errBadRequest = errors.New("bad request")

// decoded adapts a typed method to a call: the body is decoded into Req;
// fields Docker adds in newer versions are ignored.
func decoded[Req any](fn func(context.Context, Req) (any, error)) call {
	return func(ctx context.Context, body []byte) (any, error) {
		var req Req
		if err := decodeRequest(body, &req); err != nil {
			return nil, err
		}
		return fn(ctx, req)
	}
}

func decodeRequest(body []byte, req any) error {
	if len(body) == 0 {
		return fmt.Errorf("%w: empty request body: want a JSON object", errBadRequest)
	}
	if err := json.Unmarshal(body, req); err != nil {
		return fmt.Errorf("%w: decode request: %w", errBadRequest, err)
	}
	return nil
}

func noRequest(fn func() (any, error)) call {
	return func(context.Context, []byte) (any, error) { return fn() }
}

func ignore[Req any](context.Context, Req) (any, error) { return struct{}{}, nil }

func (a *dockerAPI) createNetwork(_ context.Context, req network.CreateNetworkRequest) (any, error) {
	v4, err := ipamData("IPv4Data", req.IPv4Data)
	if err != nil {
		return nil, err
	}
	v6, err := ipamData("IPv6Data", req.IPv6Data)
	if err != nil {
		return nil, err
	}
	internal, err := internalOption(req.Options)
	if err != nil {
		return nil, err
	}
	err = a.drv.CreateNetwork(driver.NetworkRequest{
		ID: req.NetworkID, IPv4: v4, IPv6: v6, Options: genericOptions(req.Options), Internal: internal,
	})
	return struct{}{}, err
}

// ipamData converts Docker's subnets; Docker sends CIDRs for both the pool
// and the gateway.
func ipamData(field string, data []*network.IPAMData) ([]driver.IPAMData, error) {
	var out []driver.IPAMData
	for i, d := range data {
		if d == nil {
			continue
		}
		pool, err := netip.ParsePrefix(d.Pool)
		if err != nil {
			return nil, fmt.Errorf("%w: %s[%d].Pool %q: %w", errBadRequest, field, i, d.Pool, err)
		}
		sub := driver.IPAMData{Pool: pool}
		if d.Gateway != "" {
			gw, err := parseAddr(d.Gateway)
			if err != nil {
				return nil, fmt.Errorf("%w: %s[%d].Gateway %q: %w", errBadRequest, field, i, d.Gateway, err)
			}
			sub.Gateway = gw
		}
		out = append(out, sub)
	}
	return out, nil
}

// parseAddr accepts an address with or without a prefix length.
func parseAddr(s string) (netip.Addr, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr(), nil
	}
	return netip.ParseAddr(s)
}

// genericOptions extracts the user's `-o key=value` options, which Docker
// nests under com.docker.network.generic with values of any JSON type.
func genericOptions(opts map[string]any) map[string]string {
	out := map[string]string{}
	generic, _ := opts["com.docker.network.generic"].(map[string]any)
	for k, v := range generic {
		if s, ok := v.(string); ok {
			out[k] = s
		} else {
			out[k] = fmt.Sprint(v)
		}
	}
	return out
}

// internalOption reads `--internal`, which Docker sends next to the
// generic options as "com.docker.network.internal": true.
func internalOption(opts map[string]any) (bool, error) {
	switch v := opts[optionInternal].(type) {
	case nil:
		return false, nil
	case bool:
		return v, nil
	case string:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("%w: option %s=%q: want true or false", errBadRequest, optionInternal, v)
		}
		return b, nil
	default:
		return false, fmt.Errorf("%w: option %s=%v: want true or false", errBadRequest, optionInternal, v)
	}
}

func (a *dockerAPI) deleteNetwork(_ context.Context, req network.DeleteNetworkRequest) (any, error) {
	return struct{}{}, a.drv.DeleteNetwork(req.NetworkID)
}

func (a *dockerAPI) allocateNetwork(_ context.Context, req network.AllocateNetworkRequest) (any, error) {
	return network.AllocateNetworkResponse{Options: map[string]string{}}, nil
}

func (a *dockerAPI) createEndpoint(_ context.Context, req network.CreateEndpointRequest) (any, error) {
	er := driver.EndpointRequest{NetworkID: req.NetworkID, EndpointID: req.EndpointID}
	if req.Interface != nil {
		var err error
		if er.IPv4, err = optionalPrefix("Interface.Address", req.Interface.Address); err != nil {
			return nil, err
		}
		if er.IPv6, err = optionalPrefix("Interface.AddressIPv6", req.Interface.AddressIPv6); err != nil {
			return nil, err
		}
		er.MAC = req.Interface.MacAddress
	}
	mac, err := a.drv.CreateEndpoint(er)
	if err != nil {
		return nil, err
	}
	if mac == "" {
		return network.CreateEndpointResponse{}, nil
	}
	return network.CreateEndpointResponse{Interface: &network.EndpointInterface{MacAddress: mac}}, nil
}

func optionalPrefix(field, s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: %s %q: %w", errBadRequest, field, s, err)
	}
	return p, nil
}

func (a *dockerAPI) deleteEndpoint(_ context.Context, req network.DeleteEndpointRequest) (any, error) {
	return struct{}{}, a.drv.DeleteEndpoint(req.NetworkID, req.EndpointID)
}

func (a *dockerAPI) endpointInfo(_ context.Context, req network.InfoRequest) (any, error) {
	value, err := a.drv.EndpointInfo(req.NetworkID, req.EndpointID)
	if err != nil {
		return nil, err
	}
	return network.InfoResponse{Value: value}, nil
}

func (a *dockerAPI) join(_ context.Context, req network.JoinRequest) (any, error) {
	j, err := a.drv.Join(req.NetworkID, req.EndpointID, req.SandboxKey)
	if err != nil {
		return nil, err
	}
	resp := network.JoinResponse{InterfaceName: network.InterfaceName{SrcName: j.SrcName, DstPrefix: j.DstPrefix}}
	if j.Gateway.IsValid() {
		resp.Gateway = j.Gateway.String()
	}
	if j.GatewayIPv6.IsValid() {
		resp.GatewayIPv6 = j.GatewayIPv6.String()
	}
	return resp, nil
}

func (a *dockerAPI) leave(_ context.Context, req network.LeaveRequest) (any, error) {
	return struct{}{}, a.drv.Leave(req.NetworkID, req.EndpointID)
}

func (a *dockerAPI) requestPool(_ context.Context, req ipam.RequestPoolRequest) (any, error) {
	resp, err := a.ipam.RequestPool(ipamalloc.PoolRequest{
		AddressSpace: req.AddressSpace, Pool: req.Pool, SubPool: req.SubPool, Options: req.Options, V6: req.V6,
	})
	if err != nil {
		return nil, err
	}
	return ipam.RequestPoolResponse{PoolID: resp.PoolID, Pool: resp.Pool.String(), Data: resp.Data}, nil
}

func (a *dockerAPI) releasePool(_ context.Context, req ipam.ReleasePoolRequest) (any, error) {
	return struct{}{}, a.ipam.ReleasePool(req.PoolID)
}

func (a *dockerAPI) requestAddress(_ context.Context, req ipam.RequestAddressRequest) (any, error) {
	addr, err := a.ipam.RequestAddress(req.PoolID, req.Address, req.Options)
	if err != nil {
		return nil, err
	}
	return ipam.RequestAddressResponse{Address: addr.String()}, nil
}

func (a *dockerAPI) releaseAddress(_ context.Context, req ipam.ReleaseAddressRequest) (any, error) {
	return struct{}{}, a.ipam.ReleaseAddress(req.PoolID, req.Address)
}

// portBinding is one entry of the com.docker.network.portmap option, as
// Docker 20.10 sends it (libnetwork's types.PortBinding):
//
//	{"Proto":6,"IP":"","Port":7000,"HostIP":"","HostPort":8080,"HostPortEnd":8080}
//
// Proto is the IP protocol number; IP (the container's address) is empty;
// HostIP is "" unless the user named one ("127.0.0.1", "::"); a host port
// range (`-p 8000-8010:80`) is HostPort..HostPortEnd, and `-p 80` has both
// 0. Ranges on both sides (`-p 8000-8001:80-81`) arrive as one binding per
// port.
type portBinding struct {
	Proto       uint8
	IP          string
	Port        uint16
	HostIP      string
	HostPort    uint16
	HostPortEnd uint16
}

// portRequests decodes the port bindings of ProgramExternalConnectivity.
func portRequests(opts map[string]any) ([]firewall.Request, error) {
	raw, ok := opts[optionPortMap]
	if !ok || raw == nil {
		return nil, nil
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errBadRequest, optionPortMap, err)
	}
	var bindings []portBinding
	if err := json.Unmarshal(b, &bindings); err != nil {
		return nil, fmt.Errorf("%w: %s: want a list of port bindings: %w", errBadRequest, optionPortMap, err)
	}
	reqs := make([]firewall.Request, 0, len(bindings))
	for i, pb := range bindings {
		r := firewall.Request{Port: pb.Port, HostPort: pb.HostPort, HostPortEnd: pb.HostPortEnd}
		switch pb.Proto {
		case 6:
			r.Proto = firewall.TCP
		case 17:
			r.Proto = firewall.UDP
		case 132:
			r.Proto = firewall.SCTP
		default:
			return nil, fmt.Errorf("%w: %s[%d].Proto %d: want 6 (tcp), 17 (udp) or 132 (sctp)", errBadRequest, optionPortMap, i, pb.Proto)
		}
		if pb.HostIP != "" {
			if r.HostIP, err = netip.ParseAddr(pb.HostIP); err != nil {
				return nil, fmt.Errorf("%w: %s[%d].HostIP %q: %w", errBadRequest, optionPortMap, i, pb.HostIP, err)
			}
		}
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %s[%d]: %w", errBadRequest, optionPortMap, i, err)
		}
		reqs = append(reqs, r)
	}
	return reqs, nil
}

func (a *dockerAPI) programExternalConnectivity(_ context.Context, req network.ProgramExternalConnectivityRequest) (any, error) {
	reqs, err := portRequests(req.Options)
	if err != nil {
		return nil, err
	}
	ports, err := a.drv.ProgramExternalConnectivity(req.NetworkID, req.EndpointID, reqs)
	if err != nil {
		return nil, err
	}
	if len(ports) > 0 {
		shown := make([]string, len(ports))
		for i, p := range ports {
			shown[i] = p.String()
		}
		a.log.Info("ports published", logKeyEndpoint, req.EndpointID, logKeyPorts, strings.Join(shown, " "))
	} else if len(reqs) > 0 {
		a.log.Info("ports not published: the network is internal", logKeyEndpoint, req.EndpointID, logKeyNetwork, req.NetworkID)
	}
	return struct{}{}, nil
}

func (a *dockerAPI) revokeExternalConnectivity(_ context.Context, req network.RevokeExternalConnectivityRequest) (any, error) {
	return struct{}{}, a.drv.RevokeExternalConnectivity(req.NetworkID, req.EndpointID)
}
