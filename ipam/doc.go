// Package ipam is membrane's IPAM driver logic: it hands Docker address
// pools and addresses, IPv6 first, keeping every allocation in the state
// database. It is pure logic over [state.Store]: no sockets, no netlink (the
// host's routes come in through Config.HostRoutes) and no logging; the HTTP
// layer in plugin/ calls it and turns its errors into Docker replies.
//
// # Address spaces
//
// Two address spaces, "membrane-local" (the default, also used when Docker
// passes an empty space) and "membrane-global"; the names can be changed in
// Config. Pools never overlap within a space. Any other space is refused
// with ErrUnknownAddressSpace.
//
// # Pools
//
// A RequestPool with an explicit Pool (docker network create --subnet) gets
// exactly that prefix (host bits cleared), with SubPool (--ip-range), if
// given, as the range dynamic addresses come from; it fails with
// ErrPoolOverlap if the prefix overlaps another pool of the space.
// Otherwise:
//
//   - IPv6 (V6 true): the next free /64 (Config.IPv6PoolBits) of the host's
//     unique local /48 (RFC 4193: fd00::/8 plus a random 40-bit global ID).
//     The /48 is generated once per host, on first use of the state
//     directory, and kept in the meta table under "ipam.ula-prefix".
//   - IPv4: the next free /24 (Config.IPv4PoolBits) of Config.IPv4Range
//     (10.210.0.0/16) that overlaps neither a pool of the space nor a prefix
//     routed on the host (Config.HostRoutes; a default route is ignored).
//
// "Next free" always searches from the start, so a released prefix is
// reused.
//
// # Idempotent pool requests (the reuse rule)
//
// Docker retries a call whose reply it did not get. Every pool records the
// canonical key of the request that created it: address space, masked pool
// and sub-pool, options sorted by key, and V6. A RequestPool for an explicit
// subnet (--subnet) whose key equals that of an existing pool which is still
// unused returns that pool instead of failing with ErrPoolOverlap. A pool is
// used once either
//
//   - a network in the state networks table (written by the driver) has an
//     IPv4 or IPv6 Subnet whose Pool equals the pool's prefix, or
//   - any address has been allocated in it (Docker requests the gateway
//     right after the pool, so this closes the window before the driver
//     writes the network).
//
// A lost reply means Docker never learnt the pool ID, so it cannot have
// allocated in it: a retry always finds the pool unused. An identical
// request for a second network finds it used and gets ErrPoolOverlap.
//
// Dynamic requests (no --subnet) always get a new pool. Docker itself sends
// the identical dynamic request again, while still holding the first pool,
// whenever the pool it got overlaps a route of the host (libnetwork's
// requestPoolHelper), and releases the earlier ones afterwards; answering
// with the same pool would loop it. A lost reply to a dynamic request
// therefore leaves one unused pool behind.
//
// Because of this rule the plugin must not ask Docker to replay pool
// requests on restart (IPAM capability RequiresRequestReplay must be false):
// state is restored from the checkpoint instead.
//
// # Addresses
//
// RequestAddress with RequestAddressType "com.docker.network.gateway" is
// the gateway: the requested address, else the first usable address of the
// pool (not of the range). A specific address may be anywhere in the pool,
// like libnetwork (so --ip and --aux-address may lie outside --ip-range),
// and must be free. Other requests get the next free address of the range,
// searching from the pool's cursor and wrapping, so a just-released address
// is not handed straight back. The IPv4 network and broadcast addresses
// (except in /31 and /32 pools, RFC 3021) and the IPv6 subnet-router
// anycast address (the prefix's first address, RFC 4291) are never handed
// out. Unknown options are ignored. An address is recorded as a gateway, an
// aux address (a specific address requested with no options at all, which
// is how Docker reserves --aux-address) or an endpoint address.
//
// # Durability and idempotent releases
//
// Every call is one state.Store.Write: an allocation is on disk before it is
// returned. ReleasePool and ReleaseAddress of unknown pools or addresses
// succeed, since Docker replays them. Pool IDs carry a per-host sequence
// number, so a replayed release of an old pool never hits a newer pool with
// the same prefix.
//
// # Errors
//
// Errors wrap one of the sentinels below, with context naming the pool or
// address and a hint of what to change. [Classify] maps an error to a
// [Kind] for the HTTP layer:
//
//	ErrBadRequest, ErrUnknownAddressSpace   KindBadRequest  (malformed or contradictory input)
//	ErrNoSuchPool                           KindNotFound    (pool ID unknown to RequestAddress)
//	ErrPoolOverlap, ErrAddressInUse         KindConflict    (libnetwork: forbidden)
//	ErrNoFreePool, ErrPoolExhausted         KindUnavailable (libnetwork: unavailable)
//	anything else                           KindInternal    (state or host failure)
//
// IsBadRequest, IsNotFound, IsConflict and IsUnavailable test for one kind.
package ipam
