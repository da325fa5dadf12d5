package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// EventType says what an Event reports.
type EventType uint8

const (
	// EventDrop: a dropped packet. Emitted at every monitor level.
	EventDrop EventType = EventType(endpointEventTypeEVENT_DROP)
	// EventVerdict: the policy decision on a new flow (MonitorVerdicts).
	EventVerdict EventType = EventType(endpointEventTypeEVENT_VERDICT)
	// EventTrace: a forwarded packet (MonitorTrace).
	EventTrace EventType = EventType(endpointEventTypeEVENT_TRACE)
)

func (t EventType) String() string {
	switch t {
	case EventDrop:
		return "drop"
	case EventVerdict:
		return "verdict"
	case EventTrace:
		return "trace"
	}
	return fmt.Sprintf("event(%d)", uint8(t))
}

// Hook names the program that saw a packet.
type Hook uint8

const (
	// HookFromContainer: tcx ingress of the host-side veth (what the container sends).
	HookFromContainer Hook = 0
	// HookToContainer: tcx egress of the host-side veth (what the host stack sends it).
	HookToContainer Hook = 1
)

func (h Hook) String() string {
	if h == HookToContainer {
		return "to-container"
	}
	return "from-container"
}

// Policy match names (Event.Match): how a policy decision was reached.
const (
	MatchRule     = "rule"     // an entry matched (allow, or deny)
	MatchDefault  = "default"  // no entry matched: the direction's enforcement decided
	MatchLockdown = "lockdown" // the subject is in lockdown
	MatchInit     = "init"     // the subject has the init identity
)

// Connection tracking states (Event.CT).
const (
	CTNew         = "new"
	CTEstablished = "established"
	CTReply       = "reply"
	CTRelated     = "related"
)

// Event is one monitor event from the datapath.
type Event struct {
	Type EventType
	// Reason is the packet's counter reason (see Counter): for drops why
	// it was dropped ("drop_policy", ...), for traces how it was
	// forwarded ("forward_peer", ...); for verdicts the drop reason when
	// denied, "" when allowed.
	Reason string
	Hook   Hook
	// Endpoint is the host-side ifindex of the endpoint whose program saw
	// the packet.
	Endpoint uint32
	// Src and Dst are the packet's addresses; invalid for non-IP packets.
	Src, Dst netip.Addr
	Proto    uint8
	// Ports in host order. ICMP and ICMPv6: SrcPort is the echo
	// identifier (echo requests), DstPort 0, and ICMPType the message type.
	SrcPort, DstPort uint16
	ICMPType         uint8
	// Policy is set when a policy check ran for the packet: SrcIdentity,
	// DstIdentity (of Src and Dst), Dir (DirIngress, DirEgress: the check
	// that decided), Verdict and Match are then meaningful.
	Policy                   bool
	SrcIdentity, DstIdentity uint32
	Dir                      uint8
	Verdict                  Verdict
	Match                    string
	// CT is the connection tracking state ("new", "established", "reply",
	// "related"), "" when the packet got no further than its headers.
	CT   string
	Len  uint32 // packet length in bytes
	Time time.Time
}

// EventReader reads the datapath's events. There is one event ring buffer
// per host: events go to one reader (two readers would each get part of
// them), which should fan them out. Events emitted while nobody reads stay
// in the ring (1 MiB) until read; when it is full, new ones are lost and
// counted (LostEvents).
type EventReader struct {
	r *ringbuf.Reader
}

// ErrMalformedEvent is returned by Read for a record it cannot decode;
// reading may go on.
var ErrMalformedEvent = errors.New("malformed event")

// Events opens a reader of the datapath's events.
func (d *Datapath) Events() (*EventReader, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, ErrClosed
	}
	r, err := ringbuf.NewReader(d.events)
	if err != nil {
		return nil, fmt.Errorf("open event reader: %w", err)
	}
	return &EventReader{r: r}, nil
}

// Read blocks until the next event, the deadline, or Close: then it
// returns an error wrapping os.ErrDeadlineExceeded or os.ErrClosed.
func (r *EventReader) Read() (Event, error) {
	rec, err := r.r.Read()
	if err != nil {
		return Event{}, fmt.Errorf("read event: %w", err)
	}
	ev, err := decodeEvent(rec.RawSample, monotonicToWall())
	if err != nil {
		return Event{}, fmt.Errorf("read event: %w", err)
	}
	return ev, nil
}

// SetDeadline makes Read return once t has passed (zero: no deadline).
func (r *EventReader) SetDeadline(t time.Time) {
	r.r.SetDeadline(t)
}

// Close stops the reader; a blocked Read returns.
func (r *EventReader) Close() error {
	return r.r.Close()
}

// LostEvents returns how many events the programs could not emit because
// the ring buffer was full, since the events map was created.
func (d *Datapath) LostEvents() (uint64, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return 0, ErrClosed
	}
	var perCPU []uint64
	if err := d.eventsLost.Lookup(uint32(0), &perCPU); err != nil {
		return 0, fmt.Errorf("read lost events: %w", err)
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	return n, nil
}

// monotonicToWall returns a function from CLOCK_MONOTONIC nanoseconds
// (bpf_ktime_get_ns) to wall-clock time.
func monotonicToWall() func(uint64) time.Time {
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return func(uint64) time.Time { return now }
	}
	mono := ts.Nano()
	return func(ns uint64) time.Time {
		return now.Add(time.Duration(int64(ns) - mono))
	}
}

// eventSize is the size of struct event.
var eventSize = binary.Size(endpointEvent{})

// Bits of struct event's flags (bpf/lib/events.h).
const (
	eventFlagIPv6        = 0x1
	eventFlagToContainer = 0x2
	eventFlagPolicy      = 0x4
)

var reasonNames = func() map[endpointMetricReason]string {
	m := make(map[endpointMetricReason]string, len(reasons))
	for _, r := range reasons {
		m[r.id] = r.name
	}
	return m
}()

func reasonName(id uint8) string {
	if n, ok := reasonNames[endpointMetricReason(id)]; ok {
		return n
	}
	return fmt.Sprintf("reason_%d", id)
}

// decodeEvent decodes a struct event record.
func decodeEvent(b []byte, wall func(uint64) time.Time) (Event, error) {
	var raw endpointEvent
	if len(b) < eventSize {
		return Event{}, fmt.Errorf("%w: %d bytes, want %d", ErrMalformedEvent, len(b), eventSize)
	}
	if _, err := binary.Decode(b, binary.NativeEndian, &raw); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrMalformedEvent, err)
	}
	ev := Event{
		Type:     EventType(raw.Type),
		Endpoint: raw.Ifindex,
		Proto:    raw.Proto,
		SrcPort:  raw.Sport,
		DstPort:  raw.Dport,
		Len:      raw.Len,
		Time:     wall(raw.TimeNs),
	}
	switch ev.Type {
	case EventDrop, EventTrace:
		ev.Reason = reasonName(raw.Reason)
	case EventVerdict:
		if endpointPolicyMatch(raw.Match) > endpointPolicyMatchPOLICY_ALLOW_DEFAULT {
			ev.Reason = reasonName(raw.Reason)
		}
	default:
		return Event{}, fmt.Errorf("%w: type %d", ErrMalformedEvent, raw.Type)
	}
	if raw.Flags&eventFlagToContainer != 0 {
		ev.Hook = HookToContainer
	}
	if raw.Proto != 0 || raw.Saddr != [16]byte{} {
		ev.Src, ev.Dst = netip.AddrFrom16(raw.Saddr), netip.AddrFrom16(raw.Daddr)
		if raw.Flags&eventFlagIPv6 == 0 {
			ev.Src, ev.Dst = ev.Src.Unmap(), ev.Dst.Unmap()
		}
	}
	v6 := raw.Flags&eventFlagIPv6 != 0
	if (raw.Proto == ProtoICMP && !v6) || (raw.Proto == ProtoICMPv6 && v6) {
		if raw.Dport&0xff00 == PortICMP {
			ev.ICMPType = uint8(raw.Dport)
			ev.DstPort = 0
		}
	}
	switch endpointCtState(raw.Ct) {
	case endpointCtStateCT_NEW:
		ev.CT = CTNew
	case endpointCtStateCT_ESTABLISHED:
		ev.CT = CTEstablished
	case endpointCtStateCT_REPLY:
		ev.CT = CTReply
	case endpointCtStateCT_RELATED:
		ev.CT = CTRelated
	}
	if raw.Flags&eventFlagPolicy != 0 {
		ev.Policy = true
		ev.SrcIdentity = raw.SrcIdentity
		ev.DstIdentity = raw.DstIdentity
		ev.Dir = raw.Dir
		m := endpointPolicyMatch(raw.Match)
		ev.Verdict = VerdictDeny
		if m == endpointPolicyMatchPOLICY_ALLOW_RULE || m == endpointPolicyMatchPOLICY_ALLOW_DEFAULT {
			ev.Verdict = VerdictAllow
		}
		switch m {
		case endpointPolicyMatchPOLICY_ALLOW_RULE, endpointPolicyMatchPOLICY_DENY_RULE:
			ev.Match = MatchRule
		case endpointPolicyMatchPOLICY_ALLOW_DEFAULT, endpointPolicyMatchPOLICY_DENY_DEFAULT:
			ev.Match = MatchDefault
		case endpointPolicyMatchPOLICY_DENY_LOCKDOWN:
			ev.Match = MatchLockdown
		case endpointPolicyMatchPOLICY_DENY_INIT:
			ev.Match = MatchInit
		default:
			return Event{}, fmt.Errorf("%w: policy match %d", ErrMalformedEvent, raw.Match)
		}
	}
	return ev, nil
}
