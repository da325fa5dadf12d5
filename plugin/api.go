package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/membrane-net/membrane/datapath"
	"github.com/membrane-net/membrane/firewall"
	"github.com/membrane-net/membrane/internal/apiview"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/state"
)

// maxPolicyBytes bounds a policy import.
const maxPolicyBytes = 64 << 20

// apiServer serves the management API.
type apiServer struct {
	store  *state.Store
	dp     *datapath.Datapath
	ctl    *controller
	events *eventHub
}

// NewAPIHandler returns the management API the membrane CLI talks to.
func newAPIHandler(s *apiServer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("GET /v1/endpoints", s.listEndpoints)
	mux.HandleFunc("GET /v1/endpoints/{id}", s.getEndpoint)
	mux.HandleFunc("GET /v1/identities", s.listIdentities)
	mux.HandleFunc("GET /v1/identities/{id}", s.getIdentity)
	mux.HandleFunc("GET /v1/policy", s.getPolicy)
	mux.HandleFunc("PUT /v1/policy", s.importPolicy)
	mux.HandleFunc("DELETE /v1/policy", s.deleteAllPolicy)
	mux.HandleFunc("DELETE /v1/policy/{name...}", s.deletePolicy)
	mux.HandleFunc("GET /v1/monitor", s.monitor)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apiError(w, fmt.Errorf("%w: %s %s: no such API call", errNotFound, r.Method, r.URL.Path))
	})
	return mux
}

var errNotFound = errors.New("not found")

func (s *apiServer) status(w http.ResponseWriter, r *http.Request) {
	txn := s.store.Read()
	var st apiview.Status
	networks, err := state.ListNetworks(txn)
	if err != nil {
		apiError(w, err)
		return
	}
	endpoints, err := state.ListEndpoints(txn)
	if err != nil {
		apiError(w, err)
		return
	}
	identities, err := state.ListIdentities(txn)
	if err != nil {
		apiError(w, err)
		return
	}
	// The controller counts the rules it mirrors; listing 100,000 of them
	// to count them made status take milliseconds.
	rules, ok := s.ctl.ruleCount()
	if !ok {
		rows, err := state.ListPolicies(txn)
		if err != nil {
			apiError(w, err)
			return
		}
		rules = len(rows)
	}
	counters, err := s.dp.Counters()
	if err != nil {
		apiError(w, err)
		return
	}
	st.Counters = make([]apiview.Counter, len(counters))
	for i, c := range counters {
		st.Counters[i] = apiview.Counter(c)
	}
	st.Networks, st.Endpoints, st.Identities, st.PolicyRules = len(networks), len(endpoints), len(identities), rules
	st.PolicyRevision, st.Lockdown = s.ctl.status()
	writeJSON(w, apiContentType, http.StatusOK, st)
}

func (s *apiServer) endpointView(ep *state.Endpoint) apiview.Endpoint {
	v := apiview.Endpoint{
		ID: ep.ID, NetworkID: ep.NetworkID, ContainerID: ep.ContainerID, ContainerName: ep.ContainerName, Interface: ep.HostIfName,
		MAC: ep.MAC, Identity: ep.Identity, IdentityName: labels.Identity(ep.Identity).Reserved(),
		Labels: ep.Labels, SandboxKey: ep.SandboxKey,
	}
	if ep.IPv4.IsValid() {
		v.IPv4 = ep.IPv4.String()
	}
	if ep.IPv6.IsValid() {
		v.IPv6 = ep.IPv6.String()
	}
	for _, p := range ep.Ports {
		m := firewall.Mapping{Proto: firewall.Proto(p.Proto), HostIP: p.HostIP, HostPort: p.HostPort, Port: p.Port}
		v.Ports = append(v.Ports, m.String())
	}
	if !ep.IdentitySince.IsZero() {
		since := ep.IdentitySince
		v.IdentitySince = &since
	}
	enf, lockdown, _ := s.ctl.enforcementOf(ep.Identity)
	v.PolicyIngress, v.PolicyEgress, v.Lockdown = enf.Ingress || lockdown, enf.Egress || lockdown, lockdown
	return v
}

func (s *apiServer) listEndpoints(w http.ResponseWriter, r *http.Request) {
	endpoints, err := state.ListEndpoints(s.store.Read())
	if err != nil {
		apiError(w, err)
		return
	}
	views := make([]apiview.Endpoint, 0, len(endpoints))
	for _, ep := range endpoints {
		views = append(views, s.endpointView(ep))
	}
	writeJSON(w, apiContentType, http.StatusOK, views)
}

// getEndpoint finds an endpoint by ID, unique ID prefix, container name,
// or container ID (prefix).
func (s *apiServer) getEndpoint(w http.ResponseWriter, r *http.Request) {
	want := r.PathValue("id")
	endpoints, err := state.ListEndpoints(s.store.Read())
	if err != nil {
		apiError(w, err)
		return
	}
	var found []*state.Endpoint
	for _, ep := range endpoints {
		if strings.HasPrefix(ep.ID, want) || ep.ContainerName == want || (ep.ContainerID != "" && strings.HasPrefix(ep.ContainerID, want)) {
			found = append(found, ep)
		}
	}
	switch {
	case len(found) == 0:
		apiError(w, fmt.Errorf("%w: no endpoint or container %q (see `membrane endpoint list`)", errNotFound, want))
	case len(found) > 1:
		apiError(w, fmt.Errorf("%w: %q matches %d endpoints: give more of the ID", errBadRequest, want, len(found)))
	default:
		writeJSON(w, apiContentType, http.StatusOK, s.endpointView(found[0]))
	}
}

func (s *apiServer) identityViews() ([]apiview.Identity, error) {
	txn := s.store.Read()
	ids, err := state.ListIdentities(txn)
	if err != nil {
		return nil, err
	}
	endpoints, err := state.ListEndpoints(txn)
	if err != nil {
		return nil, err
	}
	byID := map[uint32][]string{}
	for _, ep := range endpoints {
		byID[ep.Identity] = append(byID[ep.Identity], ep.ID)
	}
	var views []apiview.Identity
	for _, id := range []labels.Identity{labels.IdentityHost, labels.IdentityWorld, labels.IdentityInit} {
		views = append(views, apiview.Identity{ID: uint32(id), Reserved: id.Reserved(), Endpoints: byID[uint32(id)]})
	}
	for _, id := range ids {
		views = append(views, apiview.Identity{ID: id.ID, Labels: id.Labels, Endpoints: byID[id.ID]})
	}
	sort.Slice(views, func(i, j int) bool { return views[i].ID < views[j].ID })
	return views, nil
}

func (s *apiServer) listIdentities(w http.ResponseWriter, r *http.Request) {
	views, err := s.identityViews()
	if err != nil {
		apiError(w, err)
		return
	}
	writeJSON(w, apiContentType, http.StatusOK, views)
}

func (s *apiServer) getIdentity(w http.ResponseWriter, r *http.Request) {
	want, err := strconv.ParseUint(r.PathValue("id"), 10, 32)
	if err != nil {
		apiError(w, fmt.Errorf("%w: identity %q: want a number", errBadRequest, r.PathValue("id")))
		return
	}
	views, err := s.identityViews()
	if err != nil {
		apiError(w, err)
		return
	}
	for _, v := range views {
		if v.ID == uint32(want) {
			writeJSON(w, apiContentType, http.StatusOK, v)
			return
		}
	}
	apiError(w, fmt.Errorf("%w: no identity %d (see `membrane identity list`)", errNotFound, want))
}

func (s *apiServer) getPolicy(w http.ResponseWriter, r *http.Request) {
	txn := s.store.Read()
	rows, err := state.ListPolicies(txn)
	if err != nil {
		apiError(w, err)
		return
	}
	rev, err := policyRevisionTxn(txn)
	if err != nil {
		apiError(w, err)
		return
	}
	v := apiview.Policy{Revision: rev, Rules: make([]json.RawMessage, 0, len(rows))}
	for _, row := range rows {
		v.Rules = append(v.Rules, json.RawMessage(row.Rule))
	}
	writeJSON(w, apiContentType, http.StatusOK, v)
}

func (s *apiServer) importPolicy(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, maxPolicyBytes)
	if err != nil {
		apiError(w, fmt.Errorf("%w: read policy: %w", errBadRequest, err))
		return
	}
	rev, err := s.ctl.ImportPolicy(body)
	if err != nil {
		apiError(w, err)
		return
	}
	writeJSON(w, apiContentType, http.StatusOK, apiview.Revision{Revision: rev})
}

// readBody reads a request's body, up to limit bytes, into a buffer of
// the size the request announces, up to maxBodyPrealloc (a policy of
// 10,000 rules is megabytes: io.ReadAll would copy it again and again as
// it grows; a larger announcement grows from there as the bytes come, so
// that headers alone cannot make the daemon hold the limit).
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body := http.MaxBytesReader(w, r.Body, limit)
	size := int64(bytes.MinRead)
	if n := r.ContentLength; n > 0 && n <= limit {
		size += min(n, maxBodyPrealloc) // the extra MinRead spares a copy to find EOF
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	if _, err := buf.ReadFrom(body); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// maxBodyPrealloc is the most readBody allocates before the bytes come.
const maxBodyPrealloc = 16 << 20

func (s *apiServer) deletePolicy(w http.ResponseWriter, r *http.Request) {
	rev, err := s.ctl.DeletePolicy(r.PathValue("name"), false)
	if err != nil {
		apiError(w, err)
		return
	}
	writeJSON(w, apiContentType, http.StatusOK, apiview.Revision{Revision: rev})
}

func (s *apiServer) deleteAllPolicy(w http.ResponseWriter, r *http.Request) {
	rev, err := s.ctl.DeletePolicy("", true)
	if err != nil {
		apiError(w, err)
		return
	}
	writeJSON(w, apiContentType, http.StatusOK, apiview.Revision{Revision: rev})
}

// apiError is the management API's error answer: {"Err": message}.
func apiError(w http.ResponseWriter, err error) {
	writeJSON(w, apiContentType, httpStatus(err), struct{ Err string }{err.Error()})
}
