package state

import (
	"bytes"
	"maps"
	"slices"
)

// Copy returns a deep copy of n, to change and Put.
func (n *Network) Copy() *Network {
	if n == nil {
		return nil
	}
	c := *n
	if n.IPv4 != nil {
		s := *n.IPv4
		c.IPv4 = &s
	}
	if n.IPv6 != nil {
		s := *n.IPv6
		c.IPv6 = &s
	}
	c.Options = maps.Clone(n.Options)
	return &c
}

// Copy returns a deep copy of e, to change and Put.
func (e *Endpoint) Copy() *Endpoint {
	if e == nil {
		return nil
	}
	c := *e
	c.Labels = maps.Clone(e.Labels)
	c.Ports = slices.Clone(e.Ports)
	return &c
}

// Copy returns a copy of p, to change and Put.
func (p *Pool) Copy() *Pool {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}

// Copy returns a copy of a, to change and Put.
func (a *Address) Copy() *Address {
	if a == nil {
		return nil
	}
	c := *a
	return &c
}

// Copy returns a deep copy of id, to change and Put.
func (id *Identity) Copy() *Identity {
	if id == nil {
		return nil
	}
	c := *id
	c.Labels = maps.Clone(id.Labels)
	return &c
}

// Copy returns a deep copy of p, to change and Put.
func (p *Policy) Copy() *Policy {
	if p == nil {
		return nil
	}
	c := *p
	c.Rule = bytes.Clone(p.Rule)
	return &c
}
