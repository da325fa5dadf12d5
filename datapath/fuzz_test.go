package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// FuzzFromContainer runs arbitrary frames through from_container and checks
// what must hold for any input: the program passes the verifier's runtime
// checks, returns OK, SHOT or REDIRECT, counts the frame under exactly one
// reason that agrees with the verdict, never modifies a frame it hands to
// the host stack, and only emits well-formed replies.
func FuzzFromContainer(f *testing.F) {
	a := epA
	f.Add(arpFrame(broadcastMAC, a.MAC, 1, a.MAC, a.IPv4, net.HardwareAddr(make([]byte, 6)), gateway4))
	f.Add(arpFrame(broadcastMAC, a.MAC, 1, a.MAC, a.IPv4, broadcastMAC, a.IPv4))
	dst, dstMAC := solicitedNode(gateway6)
	f.Add(icmp6Frame(dstMAC, a.MAC, a.IPv6, dst, 255, icmp6NeighSolicit, nsBody(gateway6, a.MAC)))
	f.Add(icmp6Frame(dstMAC, a.MAC, linkLoc6, dst, 255, icmp6NeighSolicit, nsBody(gateway6, nil)))
	f.Add(icmp6Frame(broadcastMAC, a.MAC, linkLoc6, netip.MustParseAddr("ff02::1"), 255, icmp6RouterAdvert, make([]byte, 12)))
	f.Add(udp4Frame(a.HostMAC, a.MAC, a.IPv4, epB.IPv4, []byte("x")))
	f.Add(udp4Frame(a.HostMAC, a.MAC, a.IPv4, epC.IPv4, []byte("x")))
	f.Add(udp6Frame(a.HostMAC, a.MAC, a.IPv6, epB.IPv6, []byte("x")))
	f.Add(udp6Frame(a.HostMAC, a.MAC, a.IPv6, unknown6, []byte("x")))
	f.Add(append(ethHeader(a.HostMAC, a.MAC, etherTypeIPv6), ipv6Packet(a.IPv6, epB.IPv6, protoHopOpt, 64, []byte{protoICMPv6, 0, 0, 0, 0, 0, 0, 0, 135, 0, 0, 0})...))

	fx := newProgFixture(f, a)
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < 14 || len(frame) > 1500 {
			t.Skip("BPF_PROG_RUN needs an Ethernet header; longer frames add nothing")
		}
		before := fx.counters(t)
		opts := ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)}
		ret, err := fx.progs.FromContainer.Run(&opts)
		if errors.Is(err, unix.EINVAL) {
			t.Skip("the kernel refuses this frame for BPF_PROG_RUN")
		}
		if err != nil {
			t.Fatal(err)
		}
		out := opts.DataOut

		var reason string
		for name, c := range fx.counters(t) {
			switch d := c.Packets - before[name].Packets; {
			case d == 0:
			case d == 1 && reason == "":
				reason = name
			default:
				t.Fatalf("counter %s went up by %d (reason so far %q)", name, d, reason)
			}
		}
		if reason == "" {
			t.Fatal("frame counted under no reason")
		}

		drop := reason[:5] == "drop_"
		switch {
		case ret != tcActOK && ret != tcActShot && ret != tcActRedirect:
			t.Fatalf("verdict %d", ret)
		case drop != (ret == tcActShot):
			t.Fatalf("reason %s with verdict %s", reason, verdictName(ret))
		}
		switch reason {
		case "forward_host":
			if ret != tcActOK || !bytes.Equal(out, frame) {
				t.Fatalf("forward_host: verdict %s, frame modified %v", verdictName(ret), !bytes.Equal(out, frame))
			}
		case "forward_peer":
			if !bytes.Equal(out[12:], frame[12:]) {
				t.Fatal("forward_peer modified more than the MACs")
			}
		case "arp_reply":
			if len(out) != len(frame) || binary.BigEndian.Uint16(out[20:22]) != 2 || !bytes.Equal(out[22:28], a.HostMAC) {
				t.Fatalf("arp_reply: bad reply %x", out)
			}
		case "nd_reply":
			if len(out) != 86 {
				t.Fatalf("nd_reply: %d bytes", len(out))
			}
			src, _ := netip.AddrFromSlice(out[22:38])
			dst, _ := netip.AddrFromSlice(out[38:54])
			if checksum(ipv6Pseudo(src, dst, 32, protoICMPv6), out[54:]) != 0 {
				t.Fatal("nd_reply: bad ICMPv6 checksum")
			}
		}
	})
}

// FuzzDecodeEvent checks that the event decoder never panics and either
// rejects a record with ErrMalformedEvent or decodes a known event type.
func FuzzDecodeEvent(f *testing.F) {
	valid := make([]byte, eventSize)
	valid[8] = byte(EventDrop)
	valid[9] = byte(endpointMetricReasonMETRIC_DROP_POLICY)
	valid[10] = ProtoTCP
	valid[11] = eventFlagPolicy
	valid[13] = byte(endpointPolicyMatchPOLICY_DENY_RULE)
	f.Add(valid)
	f.Add(valid[:eventSize-1])
	f.Add(append(bytes.Clone(valid), 0xff))
	wall := func(uint64) time.Time { return time.Unix(0, 0) }
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := decodeEvent(b, wall)
		if err != nil {
			if !errors.Is(err, ErrMalformedEvent) {
				t.Fatalf("error %v does not wrap ErrMalformedEvent", err)
			}
			return
		}
		switch ev.Type {
		case EventDrop, EventVerdict, EventTrace:
		default:
			t.Fatalf("decoded type %d", ev.Type)
		}
		if ev.Policy != (ev.Match != "") || ev.Policy != (ev.Verdict != 0) {
			t.Fatalf("policy fields half set: %+v", ev)
		}
	})
}
