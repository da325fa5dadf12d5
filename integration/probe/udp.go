package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"unsafe"
)

// udpEcho serves one address family ("udp4" or "udp6", the latter IPv6
// only) on the wildcard address. It asks the kernel for each datagram's
// destination address (IP_PKTINFO, IPV6_RECVPKTINFO) and sends the echo
// from that address: a wildcard socket's reply would otherwise leave from
// whatever source address routing prefers, which a client that sent to
// another address of the same host drops.
func udpEcho(family, port string) error {
	addr := net.JoinHostPort("0.0.0.0", port)
	level, opt := syscall.IPPROTO_IP, syscall.IP_PKTINFO
	if family == "udp6" {
		addr = net.JoinHostPort("::", port)
		level, opt = syscall.IPPROTO_IPV6, syscall.IPV6_RECVPKTINFO
	}
	pc, err := net.ListenPacket(family, addr)
	if err != nil {
		return err
	}
	defer pc.Close()
	c := pc.(*net.UDPConn)
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), level, opt, 1) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("%s: ask for destination addresses: %w", family, serr)
	}
	buf := make([]byte, 65535)
	oob := make([]byte, 512)
	for {
		n, oobn, _, from, err := c.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		var reply []byte
		if dst, ok := pktinfoDst(oob[:oobn]); ok {
			reply = pktinfoSrc(dst)
		}
		if _, _, err := c.WriteMsgUDPAddrPort(buf[:n], reply, from); err != nil {
			fmt.Fprintf(os.Stderr, "udp-serve: reply to %s: %v\n", from, err)
		}
	}
}

// pktinfoDst finds a datagram's destination address in its control messages.
func pktinfoDst(oob []byte) (netip.Addr, bool) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}, false
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == syscall.IPPROTO_IP && m.Header.Type == syscall.IP_PKTINFO && len(m.Data) >= syscall.SizeofInet4Pktinfo:
			pi := (*syscall.Inet4Pktinfo)(unsafe.Pointer(&m.Data[0]))
			return netip.AddrFrom4(pi.Addr), true
		case m.Header.Level == syscall.IPPROTO_IPV6 && m.Header.Type == syscall.IPV6_PKTINFO && len(m.Data) >= syscall.SizeofInet6Pktinfo:
			pi := (*syscall.Inet6Pktinfo)(unsafe.Pointer(&m.Data[0]))
			return netip.AddrFrom16(pi.Addr), true
		}
	}
	return netip.Addr{}, false
}

// pktinfoSrc is the control message that sends a datagram from src.
func pktinfoSrc(src netip.Addr) []byte {
	if src.Is4() {
		pi := syscall.Inet4Pktinfo{Spec_dst: src.As4()}
		return cmsg(syscall.IPPROTO_IP, syscall.IP_PKTINFO, unsafe.Slice((*byte)(unsafe.Pointer(&pi)), syscall.SizeofInet4Pktinfo))
	}
	pi := syscall.Inet6Pktinfo{Addr: src.As16()}
	return cmsg(syscall.IPPROTO_IPV6, syscall.IPV6_PKTINFO, unsafe.Slice((*byte)(unsafe.Pointer(&pi)), syscall.SizeofInet6Pktinfo))
}

func cmsg(level, typ int, data []byte) []byte {
	b := make([]byte, syscall.CmsgSpace(len(data)))
	h := (*syscall.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = int32(level), int32(typ)
	h.SetLen(syscall.CmsgLen(len(data)))
	copy(b[syscall.CmsgLen(0):], data)
	return b
}
