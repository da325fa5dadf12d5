package driver

import "errors"

// Errors the driver returns, wrapped with context. The plugin layer maps them
// to Docker's error classes.
var (
	// ErrInvalidOption: a network or endpoint option has a bad value.
	ErrInvalidOption = errors.New("invalid option")
	// ErrIPv6Required: a network was created without IPv6.
	ErrIPv6Required = errors.New("membrane networks are IPv6-first")
	// ErrInvalidRequest: the request itself is malformed (bad address, missing ID).
	ErrInvalidRequest = errors.New("invalid request")
	// ErrNetworkNotFound: an endpoint names a network membrane does not know.
	ErrNetworkNotFound = errors.New("network not found")
	// ErrEndpointNotFound: Join names an endpoint membrane does not know.
	ErrEndpointNotFound = errors.New("endpoint not found")
)
