package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
)

// Testbed runs crafted packets through the datapath's programs with
// BPF_PROG_RUN, attached nowhere: its maps are unpinned and its own, and
// nothing is sent anywhere. It is for tests in other packages, e.g. a
// differential test of the policy against a reference evaluator:
//
//	tb, err := datapath.NewTestbed() // needs root, like loading any BPF program
//	defer tb.Close()
//	tb.AddEndpoint(ep)                           // endpoints map + programs of ep
//	tb.Datapath().SyncIPCache(prefixes)          // identities of other addresses
//	tb.Datapath().SyncPolicy(state)              // entries and enforcement
//	r, err := tb.RunPacket(ep.ID, datapath.HookFromContainer, datapath.Packet{...})
//	r.Allowed(), r.Reason                        // verdict and counter reason
//
// Connection tracking carries over from one run to the next, as in the
// kernel: call Datapath().FlushConntrack() to judge every packet as a new
// flow. A Testbed is safe for concurrent use; runs are serialised.
type Testbed struct {
	d *Datapath

	mu  sync.Mutex
	eps map[string]*testbedEndpoint
}

type testbedEndpoint struct {
	ep    Endpoint
	progs *endpointProgs
}

// NewTestbed creates a Testbed with empty maps and no endpoint.
func NewTestbed() (*Testbed, error) {
	d, err := newDatapath("")
	if err != nil {
		return nil, fmt.Errorf("new testbed: %w", err)
	}
	return &Testbed{d: d, eps: map[string]*testbedEndpoint{}}, nil
}

// Datapath is the testbed's datapath, for SyncPolicy, SyncIPCache,
// SetIdentity, SetMonitorLevel, Events, Counters and FlushConntrack.
// (Attach and Detach need a pin directory: use AddEndpoint instead.)
func (tb *Testbed) Datapath() *Datapath { return tb.d }

// AddEndpoint puts ep in the endpoints map and loads its programs (again,
// if an endpoint with ep.ID was added before: the new ep replaces it).
func (tb *Testbed) AddEndpoint(ep Endpoint) error {
	if err := ep.validate(); err != nil {
		return fmt.Errorf("add endpoint %s: %w", ep.ID, err)
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
	progs, err := tb.d.loadPrograms(&ep)
	if err != nil {
		return fmt.Errorf("add endpoint %s: %w", ep.ID, err)
	}
	if err := tb.d.putEndpoint(&ep); err != nil {
		progs.Close()
		return fmt.Errorf("add endpoint %s: %w", ep.ID, err)
	}
	if old, ok := tb.eps[ep.ID]; ok {
		old.progs.Close()
	}
	tb.eps[ep.ID] = &testbedEndpoint{ep: ep, progs: progs}
	return nil
}

// RemoveEndpoint takes the endpoint with ID id out of the endpoints map and
// unloads its programs. An unknown id is fine.
func (tb *Testbed) RemoveEndpoint(id string) error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	e, ok := tb.eps[id]
	if !ok {
		return nil
	}
	delete(tb.eps, id)
	e.progs.Close()
	if err := tb.d.deleteEndpoint(&e.ep); err != nil {
		return fmt.Errorf("remove endpoint %s: %w", id, err)
	}
	return nil
}

// Action is what a program did with a packet.
type Action uint8

const (
	// ActionPass: handed on (from_container: to the host stack;
	// to_container: to the container).
	ActionPass Action = iota + 1
	// ActionRedirect: redirected (into a local endpoint, or an ARP or
	// neighbour discovery answer back to the container).
	ActionRedirect
	// ActionDrop: dropped.
	ActionDrop
)

func (a Action) String() string {
	switch a {
	case ActionPass:
		return "pass"
	case ActionRedirect:
		return "redirect"
	case ActionDrop:
		return "drop"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// RunResult is the outcome of one packet.
type RunResult struct {
	Action Action
	// Reason is the counter the packet was counted under, e.g.
	// "forward_peer", "forward_host", "to_container", "drop_policy".
	Reason string
	// Frame is the frame as the program left it.
	Frame []byte
}

// Allowed reports whether the packet was not dropped.
func (r RunResult) Allowed() bool { return r.Action != ActionDrop }

// Return codes of tc programs (linux/pkt_cls.h).
const (
	tcActOK       = 0
	tcActShot     = 2
	tcActRedirect = 7
)

// ErrUnknownEndpoint is returned by Testbed runs for an endpoint never added.
var ErrUnknownEndpoint = errors.New("unknown endpoint")

// Run runs frame (from the Ethernet header on) through the hook program of
// the endpoint with ID endpointID.
func (tb *Testbed) Run(endpointID string, hook Hook, frame []byte) (RunResult, error) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	e, ok := tb.eps[endpointID]
	if !ok {
		return RunResult{}, fmt.Errorf("run: %w %q", ErrUnknownEndpoint, endpointID)
	}
	prog := e.progs.FromContainer
	if hook == HookToContainer {
		prog = e.progs.ToContainer
	}

	before, err := tb.d.counterPackets()
	if err != nil {
		return RunResult{}, fmt.Errorf("run: %w", err)
	}
	opts := ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)}
	ret, err := prog.Run(&opts)
	if err != nil {
		return RunResult{}, fmt.Errorf("run: %w", err)
	}
	after, err := tb.d.counterPackets()
	if err != nil {
		return RunResult{}, fmt.Errorf("run: %w", err)
	}

	res := RunResult{Frame: opts.DataOut}
	switch ret {
	case tcActOK:
		res.Action = ActionPass
	case tcActRedirect:
		res.Action = ActionRedirect
	case tcActShot:
		res.Action = ActionDrop
	default:
		return res, fmt.Errorf("run: program returned %d", ret)
	}
	for i, r := range reasons {
		if after[i] != before[i] {
			if res.Reason != "" {
				return res, fmt.Errorf("run: packet counted under %s and %s", res.Reason, r.name)
			}
			res.Reason = r.name
		}
	}
	return res, nil
}

// RunPacket builds the frame of p and runs it: from_container frames go
// from the endpoint's MAC to its host-side MAC, to_container frames the
// other way.
func (tb *Testbed) RunPacket(endpointID string, hook Hook, p Packet) (RunResult, error) {
	tb.mu.Lock()
	e, ok := tb.eps[endpointID]
	tb.mu.Unlock()
	if !ok {
		return RunResult{}, fmt.Errorf("run: %w %q", ErrUnknownEndpoint, endpointID)
	}
	src, dst := e.ep.MAC, e.ep.HostMAC
	if hook == HookToContainer {
		src, dst = dst, src
	}
	frame, err := p.Frame(dst, src)
	if err != nil {
		return RunResult{}, fmt.Errorf("run: %w", err)
	}
	return tb.Run(endpointID, hook, frame)
}

// Close unloads the programs and closes the maps.
func (tb *Testbed) Close() error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	for id, e := range tb.eps {
		e.progs.Close()
		delete(tb.eps, id)
	}
	return tb.d.Close()
}

// counterPackets returns the packet count of every reason, in reasons order.
func (d *Datapath) counterPackets() ([]uint64, error) {
	cs, err := d.Counters()
	if err != nil {
		return nil, err
	}
	n := make([]uint64, len(cs))
	for i, c := range cs {
		n[i] = c.Packets
	}
	return n, nil
}

// Packet describes an IP packet for Testbed.RunPacket.
type Packet struct {
	Src, Dst netip.Addr // both IPv4 or both IPv6
	Proto    uint8      // ProtoTCP, ProtoUDP, ProtoSCTP, ProtoICMP, ProtoICMPv6, or any
	// TCP, UDP and SCTP ports.
	SrcPort, DstPort uint16
	// TCP flags; 0 sends a SYN.
	TCPFlags uint8
	// ICMP and ICMPv6 (for echo messages, ICMPID is the identifier).
	ICMPType, ICMPCode uint8
	ICMPID             uint16
	Payload            []byte
}

// ErrBadPacket is wrapped by Packet.Frame errors.
var ErrBadPacket = errors.New("bad packet")

// Frame returns the Ethernet frame of p, with valid checksums.
func (p Packet) Frame(dstMAC, srcMAC net.HardwareAddr) ([]byte, error) {
	if !p.Src.IsValid() || !p.Dst.IsValid() || p.Src.Is4() != p.Dst.Is4() {
		return nil, fmt.Errorf("%w: addresses %s, %s", ErrBadPacket, p.Src, p.Dst)
	}
	v6 := !p.Src.Is4()
	var l4 []byte
	switch p.Proto {
	case ProtoTCP:
		l4 = make([]byte, 20, 20+len(p.Payload))
		binary.BigEndian.PutUint16(l4[0:], p.SrcPort)
		binary.BigEndian.PutUint16(l4[2:], p.DstPort)
		l4[12] = 5 << 4
		l4[13] = p.TCPFlags
		if l4[13] == 0 {
			l4[13] = 0x02 // SYN
		}
		binary.BigEndian.PutUint16(l4[14:], 65535)
	case ProtoUDP, ProtoSCTP:
		l4 = make([]byte, 8, 8+len(p.Payload))
		binary.BigEndian.PutUint16(l4[0:], p.SrcPort)
		binary.BigEndian.PutUint16(l4[2:], p.DstPort)
		if p.Proto == ProtoUDP {
			binary.BigEndian.PutUint16(l4[4:], uint16(8+len(p.Payload)))
		}
	case ProtoICMP, ProtoICMPv6:
		l4 = make([]byte, 8, 8+len(p.Payload))
		l4[0], l4[1] = p.ICMPType, p.ICMPCode
		binary.BigEndian.PutUint16(l4[4:], p.ICMPID)
	}
	l4 = append(l4, p.Payload...)

	// Checksums (SCTP's CRC32c is left 0: nothing here checks it).
	var csumOff int
	switch {
	case p.Proto == ProtoTCP:
		csumOff = 16
	case p.Proto == ProtoUDP:
		csumOff = 6
	case p.Proto == ProtoICMP && !v6, p.Proto == ProtoICMPv6 && v6:
		csumOff = 2
	default:
		csumOff = -1
	}
	if csumOff >= 0 {
		var sum uint16
		if p.Proto == ProtoICMP {
			sum = internetChecksum(l4)
		} else {
			sum = internetChecksum(pseudoHeader(p.Src, p.Dst, len(l4), p.Proto), l4)
		}
		if sum == 0 && p.Proto == ProtoUDP {
			sum = 0xffff
		}
		binary.BigEndian.PutUint16(l4[csumOff:], sum)
	}

	frame := make([]byte, 14, 14+40+len(l4))
	copy(frame[0:6], dstMAC)
	copy(frame[6:12], srcMAC)
	if v6 {
		binary.BigEndian.PutUint16(frame[12:], 0x86dd)
		h := make([]byte, 40)
		h[0] = 0x60
		binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
		h[6] = p.Proto
		h[7] = 64
		s, d := p.Src.As16(), p.Dst.As16()
		copy(h[8:], s[:])
		copy(h[24:], d[:])
		frame = append(frame, h...)
	} else {
		binary.BigEndian.PutUint16(frame[12:], 0x0800)
		h := make([]byte, 20)
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
		h[8] = 64
		h[9] = p.Proto
		s, d := p.Src.As4(), p.Dst.As4()
		copy(h[12:], s[:])
		copy(h[16:], d[:])
		binary.BigEndian.PutUint16(h[10:], internetChecksum(h))
		frame = append(frame, h...)
	}
	return append(frame, l4...), nil
}

// pseudoHeader is the IPv4 or IPv6 pseudo-header of an upper-layer checksum.
func pseudoHeader(src, dst netip.Addr, length int, proto uint8) []byte {
	if src.Is4() {
		b := make([]byte, 12)
		s, d := src.As4(), dst.As4()
		copy(b[0:], s[:])
		copy(b[4:], d[:])
		b[9] = proto
		binary.BigEndian.PutUint16(b[10:], uint16(length))
		return b
	}
	b := make([]byte, 40)
	s, d := src.As16(), dst.As16()
	copy(b[0:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint32(b[32:], uint32(length))
	b[39] = proto
	return b
}

// internetChecksum is the RFC 1071 checksum of the concatenated parts.
func internetChecksum(parts ...[]byte) uint16 {
	var sum uint32
	odd := false
	for _, p := range parts {
		for _, c := range p {
			if odd {
				sum += uint32(c)
			} else {
				sum += uint32(c) << 8
			}
			odd = !odd
		}
	}
	for sum > 0xffff {
		sum = (sum & 0xffff) + (sum >> 16)
	}
	return ^uint16(sum)
}
