package ipam

import "errors"

var (
	// ErrBadRequest means the request is malformed or contradicts itself:
	// an unparsable prefix or address, a family mismatch, a range outside
	// its pool, an address outside its pool or reserved.
	ErrBadRequest = errors.New("invalid request")
	// ErrUnknownAddressSpace means the address space is not one of ours.
	ErrUnknownAddressSpace = errors.New("unknown address space")
	// ErrNoSuchPool means RequestAddress named a pool ID that does not exist.
	ErrNoSuchPool = errors.New("no such pool")
	// ErrPoolOverlap means an explicit pool overlaps a pool of the same
	// address space.
	ErrPoolOverlap = errors.New("pool overlaps an existing pool")
	// ErrAddressInUse means a specific address (or the default gateway) is
	// already allocated.
	ErrAddressInUse = errors.New("address already in use")
	// ErrNoFreePool means no dynamic pool is left: the IPv4 range or the
	// IPv6 ULA prefix is used up.
	ErrNoFreePool = errors.New("no free pool")
	// ErrPoolExhausted means every usable address of a pool's range is
	// allocated.
	ErrPoolExhausted = errors.New("address pool exhausted")
)

// Kind is the class of an error, for mapping to a reply.
type Kind int

const (
	// KindInternal is a failure of membrane or the host (state, checkpoint,
	// host routes), not of the request.
	KindInternal Kind = iota
	// KindBadRequest: the caller must change the request.
	KindBadRequest
	// KindNotFound: the request names something that does not exist.
	KindNotFound
	// KindConflict: the request collides with an existing allocation.
	KindConflict
	// KindUnavailable: the request is fine but no space is left.
	KindUnavailable
)

func (k Kind) String() string {
	switch k {
	case KindBadRequest:
		return "bad request"
	case KindNotFound:
		return "not found"
	case KindConflict:
		return "conflict"
	case KindUnavailable:
		return "unavailable"
	default:
		return "internal"
	}
}

// Classify returns the kind of a non-nil error returned by this package.
func Classify(err error) Kind {
	switch {
	case errors.Is(err, ErrBadRequest), errors.Is(err, ErrUnknownAddressSpace):
		return KindBadRequest
	case errors.Is(err, ErrNoSuchPool):
		return KindNotFound
	case errors.Is(err, ErrPoolOverlap), errors.Is(err, ErrAddressInUse):
		return KindConflict
	case errors.Is(err, ErrNoFreePool), errors.Is(err, ErrPoolExhausted):
		return KindUnavailable
	default:
		return KindInternal
	}
}

// IsBadRequest reports whether err is the caller's fault (KindBadRequest).
func IsBadRequest(err error) bool { return err != nil && Classify(err) == KindBadRequest }

// IsNotFound reports whether err names a pool that does not exist
// (KindNotFound).
func IsNotFound(err error) bool { return err != nil && Classify(err) == KindNotFound }

// IsConflict reports whether err collides with an existing allocation
// (KindConflict).
func IsConflict(err error) bool { return err != nil && Classify(err) == KindConflict }

// IsUnavailable reports whether err means no space is left
// (KindUnavailable).
func IsUnavailable(err error) bool { return err != nil && Classify(err) == KindUnavailable }
