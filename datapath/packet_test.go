package datapath

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// Helpers that craft and check frames for the program and namespace tests.

const (
	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806
	etherTypeIPv6 = 0x86dd
	etherTypeVLAN = 0x8100

	protoICMP   = 1
	protoUDP    = 17
	protoICMPv6 = 58
	protoHopOpt = 0

	icmp6EchoRequest   = 128
	icmp6MLDv2Report   = 143
	icmp6RouterSolicit = 133
	icmp6RouterAdvert  = 134
	icmp6NeighSolicit  = 135
	icmp6NeighAdvert   = 136
	icmp6Redirect      = 137
)

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func ethHeader(dst, src net.HardwareAddr, etherType uint16) []byte {
	b := make([]byte, 14)
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], etherType)
	return b
}

// arpFrame builds an Ethernet/IPv4 ARP frame.
func arpFrame(ethDst, ethSrc net.HardwareAddr, op uint16, sha net.HardwareAddr, sip netip.Addr, tha net.HardwareAddr, tip netip.Addr) []byte {
	b := ethHeader(ethDst, ethSrc, etherTypeARP)
	a := make([]byte, 28)
	binary.BigEndian.PutUint16(a[0:2], 1)      // Ethernet
	binary.BigEndian.PutUint16(a[2:4], 0x0800) // IPv4
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], op)
	copy(a[8:14], sha)
	s4 := sip.As4()
	copy(a[14:18], s4[:])
	copy(a[18:24], tha)
	t4 := tip.As4()
	copy(a[24:28], t4[:])
	return append(b, a...)
}

// checksum is the Internet checksum (RFC 1071) of the concatenated parts.
func checksum(parts ...[]byte) uint16 {
	var sum uint32
	var all []byte
	for _, p := range parts {
		all = append(all, p...)
	}
	if len(all)%2 == 1 {
		all = append(all, 0)
	}
	for i := 0; i < len(all); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(all[i:]))
	}
	for sum > 0xffff {
		sum = (sum & 0xffff) + (sum >> 16)
	}
	return ^uint16(sum)
}

// ipv4Packet builds an IPv4 header (valid checksum) followed by payload.
func ipv4Packet(src, dst netip.Addr, proto uint8, payload []byte) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:4], uint16(20+len(payload)))
	h[8] = 64
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	binary.BigEndian.PutUint16(h[10:12], checksum(h))
	return append(h, payload...)
}

// icmp4Echo builds an ICMP echo request with a valid checksum.
func icmp4Echo(id, seq uint16, data []byte) []byte {
	b := make([]byte, 8, 8+len(data))
	b[0] = 8
	binary.BigEndian.PutUint16(b[4:6], id)
	binary.BigEndian.PutUint16(b[6:8], seq)
	b = append(b, data...)
	binary.BigEndian.PutUint16(b[2:4], checksum(b))
	return b
}

// ipv6Pseudo is the IPv6 pseudo-header for an upper-layer checksum.
func ipv6Pseudo(src, dst netip.Addr, length int, proto uint8) []byte {
	b := make([]byte, 40)
	s, d := src.As16(), dst.As16()
	copy(b[0:16], s[:])
	copy(b[16:32], d[:])
	binary.BigEndian.PutUint32(b[32:36], uint32(length))
	b[39] = proto
	return b
}

// ipv6Packet builds an IPv6 header followed by payload.
func ipv6Packet(src, dst netip.Addr, nextHeader, hopLimit uint8, payload []byte) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:6], uint16(len(payload)))
	h[6] = nextHeader
	h[7] = hopLimit
	s, d := src.As16(), dst.As16()
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	return append(h, payload...)
}

// icmp6Message builds an ICMPv6 message with a valid checksum for src, dst.
func icmp6Message(src, dst netip.Addr, typ, code uint8, body []byte) []byte {
	b := make([]byte, 4, 4+len(body))
	b[0], b[1] = typ, code
	b = append(b, body...)
	binary.BigEndian.PutUint16(b[2:4], checksum(ipv6Pseudo(src, dst, len(b), protoICMPv6), b))
	return b
}

// icmp6Frame builds an Ethernet/IPv6/ICMPv6 frame.
func icmp6Frame(ethDst, ethSrc net.HardwareAddr, src, dst netip.Addr, hopLimit, typ uint8, body []byte) []byte {
	msg := icmp6Message(src, dst, typ, 0, body)
	return append(ethHeader(ethDst, ethSrc, etherTypeIPv6), ipv6Packet(src, dst, protoICMPv6, hopLimit, msg)...)
}

// nsBody is the body of a neighbour solicitation for target, with a source
// link-layer address option when sll is not nil.
func nsBody(target netip.Addr, sll net.HardwareAddr) []byte {
	b := make([]byte, 4, 28)
	t := target.As16()
	b = append(b, t[:]...)
	if sll != nil {
		b = append(b, 1, 1)
		b = append(b, sll...)
	}
	return b
}

// solicitedNode returns the solicited-node multicast address of a and its MAC.
func solicitedNode(a netip.Addr) (netip.Addr, net.HardwareAddr) {
	b := a.As16()
	m := [16]byte{0xff, 0x02, 11: 0x01, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]}
	return netip.AddrFrom16(m), net.HardwareAddr{0x33, 0x33, 0xff, b[13], b[14], b[15]}
}

// udp4Frame builds an Ethernet/IPv4/UDP frame (UDP checksum 0: unused).
func udp4Frame(ethDst, ethSrc net.HardwareAddr, src, dst netip.Addr, payload []byte) []byte {
	u := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(u[0:2], 40000)
	binary.BigEndian.PutUint16(u[2:4], 7777)
	binary.BigEndian.PutUint16(u[4:6], uint16(8+len(payload)))
	u = append(u, payload...)
	return append(ethHeader(ethDst, ethSrc, etherTypeIPv4), ipv4Packet(src, dst, protoUDP, u)...)
}

// udp6Frame builds an Ethernet/IPv6/UDP frame with a valid checksum.
func udp6Frame(ethDst, ethSrc net.HardwareAddr, src, dst netip.Addr, payload []byte) []byte {
	u := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(u[0:2], 40000)
	binary.BigEndian.PutUint16(u[2:4], 7777)
	binary.BigEndian.PutUint16(u[4:6], uint16(8+len(payload)))
	u = append(u, payload...)
	binary.BigEndian.PutUint16(u[6:8], checksum(ipv6Pseudo(src, dst, len(u), protoUDP), u))
	return append(ethHeader(ethDst, ethSrc, etherTypeIPv6), ipv6Packet(src, dst, protoUDP, 64, u)...)
}
