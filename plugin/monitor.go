package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/membrane-net/membrane/datapath"
	"github.com/membrane-net/membrane/internal/apiview"
)

// Event types a monitor client can ask for.
const (
	eventTypeDrop   = "drop"
	eventTypePolicy = "policy"
	eventTypeTrace  = "trace"
)

// monitorLevel is the datapath monitor level each event type needs: drops
// are always emitted; policy verdicts and traces only while someone watches.
var monitorLevel = map[string]uint32{eventTypeDrop: 0, eventTypePolicy: 1, eventTypeTrace: 2}

// eventHub reads the datapath's event ring buffer (it has one consumer) and
// fans events out to monitor clients. It raises the datapath's monitor
// level to what the clients ask for and lowers it when they leave.
type eventHub struct {
	dp  *datapath.Datapath
	log *slog.Logger

	mu      sync.Mutex
	clients map[chan datapath.Event]uint32 // client -> level it needs
}

// subscriberBuffer is how many events a slow client may lag behind before
// events are dropped for it (never for the datapath).
const subscriberBuffer = 1024

func (h *eventHub) run(ctx context.Context) error {
	rd, err := h.dp.Events()
	if err != nil {
		return fmt.Errorf("read datapath events: %w", err)
	}
	go func() {
		<-ctx.Done()
		rd.Close()
	}()
	for {
		ev, err := rd.Read()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read datapath events: %w", err)
		}
		h.mu.Lock()
		for c := range h.clients {
			select {
			case c <- ev:
			default: // the client is too slow; it misses this one
			}
		}
		h.mu.Unlock()
	}
}

func (h *eventHub) subscribe(level uint32) (chan datapath.Event, error) {
	c := make(chan datapath.Event, subscriberBuffer)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.clients == nil {
		h.clients = map[chan datapath.Event]uint32{}
	}
	h.clients[c] = level
	return c, h.applyLevelLocked()
}

func (h *eventHub) unsubscribe(c chan datapath.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.clients, c)
	if err := h.applyLevelLocked(); err != nil {
		h.log.Warn("lower monitor level", logKeyError, err.Error())
	}
}

func (h *eventHub) applyLevelLocked() error {
	var level uint32
	for _, l := range h.clients {
		level = max(level, l)
	}
	return h.dp.SetMonitorLevel(level)
}

// monitor streams events as JSON lines until the client goes away.
// ?type=drop|policy|trace selects one kind; without it, every kind.
func (s *apiServer) monitor(w http.ResponseWriter, r *http.Request) {
	kinds := r.URL.Query()["type"]
	level := uint32(0)
	want := map[string]bool{}
	for _, k := range kinds {
		l, ok := monitorLevel[k]
		if !ok {
			apiError(w, fmt.Errorf("%w: --type %q: want drop, policy or trace", errBadRequest, k))
			return
		}
		want[k] = true
		level = max(level, l)
	}
	if len(kinds) == 0 {
		level = monitorLevel[eventTypeTrace]
	}
	c, err := s.events.subscribe(level)
	if err != nil {
		s.events.unsubscribe(c)
		apiError(w, err)
		return
	}
	defer s.events.unsubscribe(c)

	// A monitor stream lives as long as the client wants: lift the
	// server's write timeout for it.
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // not supported: the stream ends at the timeout
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	enc := json.NewEncoder(w)
	for {
		select {
		case <-r.Context().Done():
			return
		case ev := <-c:
			v := eventView(ev)
			if len(want) > 0 && !want[v.Type] {
				continue
			}
			if err := enc.Encode(v); err != nil {
				return
			}
			if len(c) == 0 {
				if err := rc.Flush(); err != nil {
					return
				}
			}
		}
	}
}

var protoNames = map[uint8]string{1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}

func eventView(ev datapath.Event) apiview.Event {
	v := apiview.Event{
		Time: ev.Time, Reason: ev.Reason, Hook: ev.Hook.String(), Endpoint: ev.Endpoint,
		SrcPort: ev.SrcPort, DstPort: ev.DstPort, CT: ev.CT, Length: ev.Len,
	}
	switch ev.Type {
	case datapath.EventDrop:
		v.Type = eventTypeDrop
	case datapath.EventVerdict:
		v.Type = eventTypePolicy
	default:
		v.Type = eventTypeTrace
	}
	if ev.Src.IsValid() {
		v.Src, v.Dst = ev.Src.String(), ev.Dst.String()
	}
	if ev.Proto != 0 {
		v.Proto = protoNames[ev.Proto]
		if v.Proto == "" {
			v.Proto = fmt.Sprint(ev.Proto)
		}
	}
	// Drops decided on the IP header alone carry no ICMP type.
	if (ev.Proto == 1 || ev.Proto == 58) && (ev.CT != "" || ev.ICMPType != 0) {
		t := ev.ICMPType
		v.ICMPType = &t
	}
	if ev.Policy {
		v.SrcIdentity, v.DstIdentity, v.Match = ev.SrcIdentity, ev.DstIdentity, ev.Match
		v.Direction = "ingress"
		if ev.Dir == datapath.DirEgress {
			v.Direction = "egress"
		}
		v.Verdict = "deny"
		if ev.Verdict == datapath.VerdictAllow {
			v.Verdict = "allow"
		}
	}
	return v
}
