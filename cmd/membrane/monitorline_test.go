package main

import (
	"testing"
	"time"

	"github.com/membrane-net/membrane/internal/apiview"
)

func TestEventLine(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	stamp := at.Format("15:04:05.000")
	icmp := uint8(3)
	for _, tc := range []struct {
		ev   apiview.Event
		line string
	}{
		{apiview.Event{Time: at, Type: "drop", Reason: "drop_policy", Hook: "from_container", Endpoint: 4, Src: "10.0.0.2", Dst: "10.0.0.3", Proto: "tcp",
			SrcPort: 1234, DstPort: 80, SrcIdentity: 256, DstIdentity: 257, Direction: "egress", Verdict: "deny", Match: "l4", CT: "new", Length: 60},
			stamp + " drop   from_container 10.0.0.2:1234 -> 10.0.0.3:80 tcp identity 256 -> 257, egress deny (l4) reason drop_policy ct new"},
		{apiview.Event{Time: at, Type: "trace", Hook: "to_container", Src: "fd00::2", Dst: "fd00::3", Proto: "icmpv6", ICMPType: &icmp, Length: 100},
			stamp + " trace  to_container   fd00::2 -> fd00::3 icmpv6 type 3"},
		{apiview.Event{Time: at, Type: "policy", Hook: "from_container"},
			stamp + " policy from_container"},
	} {
		if got := eventLine(tc.ev); got != tc.line {
			t.Errorf("monitor prints %q, want %q", got, tc.line)
		}
	}
}
