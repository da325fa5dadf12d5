package plugin

import (
	"net/http"

	"github.com/membrane-net/membrane/datapath"
	"github.com/membrane-net/membrane/state"
)

// Status is the answer of GET /v1/status.
type Status struct {
	Networks  int                `json:"networks"`
	Endpoints int                `json:"endpoints"`
	Counters  []datapath.Counter `json:"counters"`
}

// EndpointView is one row of GET /v1/endpoints.
type EndpointView struct {
	ID         string `json:"id"`
	NetworkID  string `json:"networkId"`
	Interface  string `json:"interface"`
	MAC        string `json:"mac"`
	IPv4       string `json:"ipv4,omitempty"`
	IPv6       string `json:"ipv6,omitempty"`
	SandboxKey string `json:"sandboxKey,omitempty"`
}

// NewAPIHandler returns the management API the membrane CLI talks to.
func NewAPIHandler(store *state.Store, dp *datapath.Datapath) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		txn := store.Read()
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
		counters, err := dp.Counters()
		if err != nil {
			apiError(w, err)
			return
		}
		writeJSON(w, apiContentType, http.StatusOK, Status{Networks: len(networks), Endpoints: len(endpoints), Counters: counters})
	})
	mux.HandleFunc("GET /v1/endpoints", func(w http.ResponseWriter, r *http.Request) {
		endpoints, err := state.ListEndpoints(store.Read())
		if err != nil {
			apiError(w, err)
			return
		}
		views := make([]EndpointView, 0, len(endpoints))
		for _, ep := range endpoints {
			v := EndpointView{ID: ep.ID, NetworkID: ep.NetworkID, Interface: ep.HostIfName, MAC: ep.MAC, SandboxKey: ep.SandboxKey}
			if ep.IPv4.IsValid() {
				v.IPv4 = ep.IPv4.String()
			}
			if ep.IPv6.IsValid() {
				v.IPv6 = ep.IPv6.String()
			}
			views = append(views, v)
		}
		writeJSON(w, apiContentType, http.StatusOK, views)
	})
	return mux
}

// apiError is the management API's error answer: {"Err": message}.
func apiError(w http.ResponseWriter, err error) {
	writeJSON(w, apiContentType, httpStatus(err), struct{ Err string }{err.Error()})
}
