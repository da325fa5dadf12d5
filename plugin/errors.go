package plugin

import (
	"errors"
	"net/http"

	"github.com/membrane-net/membrane/driver"
	"github.com/membrane-net/membrane/firewall"
	ipamalloc "github.com/membrane-net/membrane/ipam"
	"github.com/membrane-net/membrane/state"
)

// httpStatus classifies an error for Docker and the CLI. Docker shows the
// message either way; the status tells a client whether retrying can help.
func httpStatus(err error) int {
	switch {
	case errors.Is(err, errBadRequest),
		errors.Is(err, driver.ErrInvalidOption),
		errors.Is(err, driver.ErrInvalidRequest),
		errors.Is(err, driver.ErrIPv6Required),
		errors.Is(err, firewall.ErrInvalidPort),
		ipamalloc.IsBadRequest(err):
		return http.StatusBadRequest
	case errors.Is(err, errNotFound),
		errors.Is(err, driver.ErrNetworkNotFound),
		errors.Is(err, driver.ErrEndpointNotFound),
		errors.Is(err, state.ErrNotFound),
		ipamalloc.IsNotFound(err):
		return http.StatusNotFound
	case ipamalloc.IsConflict(err), errors.Is(err, firewall.ErrPortAllocated):
		return http.StatusConflict
	case ipamalloc.IsUnavailable(err):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}
