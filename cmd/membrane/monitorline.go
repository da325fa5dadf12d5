package main

import (
	"fmt"
	"net"
	"strings"

	"github.com/membrane-net/membrane/internal/apiview"
)

// eventLine is the line `membrane monitor` prints for an event.
func eventLine(v apiview.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-6s %-14s", v.Time.Format("15:04:05.000"), v.Type, v.Hook)
	if v.Src != "" {
		src, dst := v.Src, v.Dst
		if v.SrcPort != 0 || v.DstPort != 0 {
			src, dst = net.JoinHostPort(v.Src, fmt.Sprint(v.SrcPort)), net.JoinHostPort(v.Dst, fmt.Sprint(v.DstPort))
		}
		fmt.Fprintf(&b, " %s -> %s %s", src, dst, v.Proto)
	}
	if v.ICMPType != nil {
		fmt.Fprintf(&b, " type %d", *v.ICMPType)
	}
	if v.Direction != "" {
		fmt.Fprintf(&b, " identity %d -> %d, %s %s (%s)", v.SrcIdentity, v.DstIdentity, v.Direction, v.Verdict, v.Match)
	}
	if v.Reason != "" {
		fmt.Fprintf(&b, " reason %s", v.Reason)
	}
	if v.CT != "" {
		fmt.Fprintf(&b, " ct %s", v.CT)
	}
	return b.String()
}
