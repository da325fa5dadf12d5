package labels

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"
)

// fakeDocker is an in-memory Docker: running containers by ID, and event
// streams the test drives by hand. The watcher is tested against it rather
// than against a real dockerd because what matters here is timing a daemon
// will not produce on demand: an event that arrives while the list is being
// read, a stream that breaks between two events, a container that vanishes
// between list and inspect. The real dockerd (its event names, attributes
// and inspect output) is exercised by the integration suite in
// integration/, which runs a daemon of its own.
type fakeDocker struct {
	mu         sync.Mutex
	containers map[string]container.InspectResponse
	listed     []string         // IDs ContainerList returns, in order
	vanished   map[string]bool  // listed, but gone by the time it is inspected
	down       error            // when set, Events and ContainerList fail with it: dockerd is down
	calls      []string         // "events", "list", "inspect <id>", in order
	streams    chan *fakeStream // one per Events call
	inspectErr map[string]error // other inspect failures, by ID
}

type fakeStream struct {
	ctx  context.Context
	opts events.ListOptions
	msgs chan events.Message
	errs chan error
}

// notFoundError is what the Docker client returns for a missing object: an
// error with a NotFound method.
type notFoundError struct{ id string }

func (e notFoundError) Error() string { return "Error: No such container: " + e.id }
func (e notFoundError) NotFound()     {}

var _ Docker = (*fakeDocker)(nil)

func newFakeDocker() *fakeDocker {
	return &fakeDocker{
		containers: map[string]container.InspectResponse{},
		vanished:   map[string]bool{},
		inspectErr: map[string]error{},
		streams:    make(chan *fakeStream, 10000),
	}
}

// run starts (or changes) a running container: its labels and its
// endpoints, by network name.
func (f *fakeDocker) run(id string, labels map[string]string, endpoints map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	nets := map[string]*network.EndpointSettings{}
	for name, ep := range endpoints {
		nets[name] = &network.EndpointSettings{NetworkID: "net-" + name, EndpointID: ep}
	}
	f.containers[id] = container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{ID: id, Name: "/" + id, State: &container.State{Running: true}},
		Config:            &container.Config{Labels: labels},
		NetworkSettings:   &container.NetworkSettings{Networks: nets},
	}
	if !slices.Contains(f.listed, id) {
		f.listed = append(f.listed, id)
	}
}

func (f *fakeDocker) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.containers, id)
	f.listed = slices.DeleteFunc(f.listed, func(x string) bool { return x == id })
}

func (f *fakeDocker) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeDocker) ContainerList(ctx context.Context, opts container.ListOptions) ([]container.Summary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "list")
	if f.down != nil {
		return nil, f.down
	}
	if opts.All {
		return nil, errors.New("fake: the watcher lists running containers only")
	}
	var out []container.Summary
	for _, id := range f.listed {
		out = append(out, container.Summary{ID: id})
	}
	for id := range f.vanished {
		out = append(out, container.Summary{ID: id})
	}
	return out, nil
}

func (f *fakeDocker) ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "inspect "+id)
	if err := f.inspectErr[id]; err != nil {
		return container.InspectResponse{}, err
	}
	c, ok := f.containers[id]
	if !ok {
		return container.InspectResponse{}, notFoundError{id}
	}
	return c, nil
}

func (f *fakeDocker) Events(ctx context.Context, opts events.ListOptions) (<-chan events.Message, <-chan error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "events")
	s := &fakeStream{ctx: ctx, opts: opts, msgs: make(chan events.Message), errs: make(chan error, 1)}
	if f.down != nil {
		s.errs <- f.down
	}
	f.streams <- s
	return s.msgs, s.errs
}

// nextStream returns the stream of the next Events call.
func (f *fakeDocker) nextStream(t *testing.T) *fakeStream {
	t.Helper()
	select {
	case s := <-f.streams:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("the watcher did not subscribe to events")
		return nil
	}
}

// send delivers an event; it returns once the watcher has taken it.
func (s *fakeStream) send(t *testing.T, m events.Message) {
	t.Helper()
	select {
	case s.msgs <- m:
	case <-time.After(5 * time.Second):
		t.Fatalf("the watcher did not read event %s %s", m.Type, m.Action)
	}
}

func startEvent(id string) events.Message {
	return events.Message{Type: events.ContainerEventType, Action: events.ActionStart,
		Actor: events.Actor{ID: id, Attributes: map[string]string{"name": id, "image": "busybox"}}}
}

func connectEvent(networkID, containerID string) events.Message {
	return events.Message{Type: events.NetworkEventType, Action: events.ActionConnect,
		Actor: events.Actor{ID: networkID, Attributes: map[string]string{"container": containerID, "name": networkID, "type": "membrane"}}}
}

// recorder collects onChange calls.
type recorder struct {
	calls chan []EndpointLabels
	fail  chan error // errors for the next calls to return, if any waits
}

func (r *recorder) onChange(ctx context.Context, eps []EndpointLabels) error {
	select {
	case r.calls <- eps:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.fail:
		return err
	default:
		return nil
	}
}

// next returns the next delivery.
func (r *recorder) next(t *testing.T) []EndpointLabels {
	t.Helper()
	select {
	case eps := <-r.calls:
		return eps
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery")
		return nil
	}
}

// none checks that nothing is delivered for a while.
func (r *recorder) none(t *testing.T) {
	t.Helper()
	select {
	case eps := <-r.calls:
		t.Fatalf("unexpected delivery %+v", eps)
	case <-time.After(50 * time.Millisecond):
	}
}

// startWatcher runs a watcher over f until the test ends, with short
// waits, and checks that Run returns once its context is done.
func startWatcher(t *testing.T, f *fakeDocker, tune func(w *Watcher)) *recorder {
	t.Helper()
	r := &recorder{calls: make(chan []EndpointLabels, 100), fail: make(chan error, 10)}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	w := NewWatcher(f, log, r.onChange)
	w.minBackoff, w.maxBackoff = time.Millisecond, 20*time.Millisecond
	if tune != nil {
		tune(w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		w.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context was done")
		}
	})
	return r
}

func ep(endpointID, containerID string, labels map[string]string) EndpointLabels {
	return EndpointLabels{EndpointID: endpointID, ContainerID: containerID, ContainerName: containerID, Labels: labels} // the fake names a container "/"+ID
}

func assertDelivery(t *testing.T, got []EndpointLabels, want ...EndpointLabels) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("delivered\n  %+v\nwant\n  %+v", got, want)
	}
}

var (
	webLabels = map[string]string{
		"com.docker.compose.project": "shop", "com.docker.compose.service": "web",
		"com.docker.compose.container-number": "1", "app": "web",
	}
	dbLabels = map[string]string{"app": "db"}
)

func TestWatcherSubscribesThenResyncsRunningContainers(t *testing.T) {
	f := newFakeDocker()
	f.run("c-web", webLabels, map[string]string{"front": "ep-web-front", "back": "ep-web-back"})
	f.run("c-db", dbLabels, map[string]string{"back": "ep-db"})
	f.run("c-bare", nil, map[string]string{"front": "ep-bare"})
	f.run("c-none", map[string]string{"x": "y"}, map[string]string{"none": ""}) // no endpoint
	r := startWatcher(t, f, nil)

	s := f.nextStream(t)
	got := r.next(t)
	assertDelivery(t, got,
		ep("ep-bare", "c-bare", map[string]string{}),
		ep("ep-db", "c-db", dbLabels),
		ep("ep-web-back", "c-web", webLabels),
		ep("ep-web-front", "c-web", webLabels),
	)
	if calls := f.callLog(); len(calls) < 2 || calls[0] != "events" || calls[1] != "list" {
		t.Errorf("Docker calls = %v, want events first, then list", calls)
	}
	if types, acts := s.opts.Filters.Get("type"), s.opts.Filters.Get("event"); !sameSet(types, []string{"container", "network"}) || !sameSet(acts, []string{"start", "connect"}) {
		t.Errorf("event filters: type=%v event=%v, want type=[container network] event=[start connect]", types, acts)
	}
	// Each endpoint has a map of its own.
	got[2].Labels["app"] = "changed"
	if got[3].Labels["app"] != "web" || webLabels["app"] != "web" {
		t.Error("endpoints of one container share a labels map")
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestWatcherDeliversStartedContainer(t *testing.T) {
	f := newFakeDocker()
	f.run("c-web", webLabels, map[string]string{"front": "ep-web"})
	r := startWatcher(t, f, nil)
	s := f.nextStream(t)
	assertDelivery(t, r.next(t), ep("ep-web", "c-web", webLabels))

	// Events the watcher does not follow are ignored...
	s.send(t, events.Message{Type: events.ContainerEventType, Action: events.ActionDie, Actor: events.Actor{ID: "c-web"}})
	s.send(t, events.Message{Type: events.NetworkEventType, Action: events.ActionDisconnect,
		Actor: events.Actor{ID: "net-front", Attributes: map[string]string{"container": "c-web"}}})
	s.send(t, events.Message{Type: events.ContainerEventType, Action: events.ActionRename, Actor: events.Actor{ID: "c-web"}})
	r.none(t)

	// ...a start is looked at.
	f.run("c-db", dbLabels, map[string]string{"back": "ep-db"})
	s.send(t, startEvent("c-db"))
	assertDelivery(t, r.next(t), ep("ep-db", "c-db", dbLabels))
	if calls := f.callLog(); slices.Contains(calls[3:], "inspect c-web") { // events, list, inspect c-web: the resync
		t.Errorf("Docker calls = %v: c-web inspected again for an event the watcher does not follow", calls)
	}
}

func TestWatcherDeliversNetworkConnect(t *testing.T) {
	f := newFakeDocker()
	f.run("c-web", webLabels, map[string]string{"front": "ep-web-front"})
	r := startWatcher(t, f, nil)
	s := f.nextStream(t)
	assertDelivery(t, r.next(t), ep("ep-web-front", "c-web", webLabels))

	// docker network connect back c-web
	f.run("c-web", webLabels, map[string]string{"front": "ep-web-front", "back": "ep-web-back"})
	s.send(t, connectEvent("net-back", "c-web"))
	assertDelivery(t, r.next(t),
		ep("ep-web-back", "c-web", webLabels),
		ep("ep-web-front", "c-web", webLabels),
	)
}

func TestWatcherReconnectsAndResyncsAfterLostStream(t *testing.T) {
	f := newFakeDocker()
	f.run("c-web", webLabels, map[string]string{"front": "ep-web"})
	r := startWatcher(t, f, nil)
	first := f.nextStream(t)
	assertDelivery(t, r.next(t), ep("ep-web", "c-web", webLabels))

	// While the stream is down (dockerd restarting), c-db starts and
	// c-web goes away; no event says so.
	f.run("c-db", dbLabels, map[string]string{"back": "ep-db"})
	f.remove("c-web")
	first.errs <- io.ErrUnexpectedEOF

	second := f.nextStream(t)
	assertDelivery(t, r.next(t), ep("ep-db", "c-db", dbLabels))
	select {
	case <-first.ctx.Done():
	case <-time.After(5 * time.Second):
		t.Error("the lost stream's context was never cancelled")
	}
	// The new stream is followed.
	f.run("c-api", map[string]string{"app": "api"}, map[string]string{"front": "ep-api"})
	second.send(t, startEvent("c-api"))
	assertDelivery(t, r.next(t), ep("ep-api", "c-api", map[string]string{"app": "api"}))
}

func TestWatcherSkipsVanishedContainers(t *testing.T) {
	f := newFakeDocker()
	f.run("c-web", webLabels, map[string]string{"front": "ep-web"})
	f.vanished["c-gone"] = true // listed, removed before its inspect
	r := startWatcher(t, f, nil)
	s := f.nextStream(t)
	assertDelivery(t, r.next(t), ep("ep-web", "c-web", webLabels))

	// Started and removed before the watcher looked (docker run --rm true).
	s.send(t, startEvent("c-flash"))
	r.none(t)
	f.run("c-db", dbLabels, map[string]string{"back": "ep-db"})
	s.send(t, startEvent("c-db"))
	assertDelivery(t, r.next(t), ep("ep-db", "c-db", dbLabels))

	calls := f.callLog()
	if !slices.Contains(calls, "inspect c-gone") || !slices.Contains(calls, "inspect c-flash") {
		t.Errorf("Docker calls = %v, want c-gone and c-flash inspected", calls)
	}
	if n := countOf(calls, "events"); n != 1 {
		t.Errorf("Docker calls = %v: %d subscriptions, want 1 (a vanished container is no reason to start over)", calls, n)
	}
}

func countOf(calls []string, what string) int {
	n := 0
	for _, c := range calls {
		if c == what {
			n++
		}
	}
	return n
}

func TestWatcherStartsOverWhenInspectFails(t *testing.T) {
	f := newFakeDocker()
	f.run("c-web", webLabels, map[string]string{"front": "ep-web"})
	r := startWatcher(t, f, nil)
	s := f.nextStream(t)
	assertDelivery(t, r.next(t), ep("ep-web", "c-web", webLabels))

	// A failure other than "not found" is not dropped: the watcher starts
	// over, and its resync skips the container while it still fails.
	f.run("c-db", dbLabels, map[string]string{"back": "ep-db"})
	f.mu.Lock()
	f.inspectErr["c-db"] = context.DeadlineExceeded
	f.mu.Unlock()
	s.send(t, startEvent("c-db"))
	second := f.nextStream(t)
	assertDelivery(t, r.next(t), ep("ep-web", "c-web", webLabels))

	f.mu.Lock()
	delete(f.inspectErr, "c-db")
	f.mu.Unlock()
	second.send(t, connectEvent("net-back", "c-db"))
	assertDelivery(t, r.next(t), ep("ep-db", "c-db", dbLabels))
}

func TestWatcherRetriesWhenOnChangeFails(t *testing.T) {
	f := newFakeDocker()
	f.run("c-web", webLabels, map[string]string{"front": "ep-web"})
	r := startWatcher(t, f, nil)
	r.fail <- errors.New("state: disk full")
	f.nextStream(t)
	assertDelivery(t, r.next(t), ep("ep-web", "c-web", webLabels))
	// It failed: delivered again after a fresh subscription and resync.
	f.nextStream(t)
	assertDelivery(t, r.next(t), ep("ep-web", "c-web", webLabels))
}

func TestWatcherResyncsPeriodically(t *testing.T) {
	f := newFakeDocker()
	f.run("c-web", webLabels, map[string]string{"front": "ep-web"})
	r := startWatcher(t, f, func(w *Watcher) { w.resyncEvery = 20 * time.Millisecond })
	f.nextStream(t)
	assertDelivery(t, r.next(t), ep("ep-web", "c-web", webLabels))
	// An event lost by Docker: c-db started, nothing said so.
	f.run("c-db", dbLabels, map[string]string{"back": "ep-db"})
	for {
		got := r.next(t)
		if len(got) == 2 {
			assertDelivery(t, got, ep("ep-db", "c-db", dbLabels), ep("ep-web", "c-web", webLabels))
			break
		}
		assertDelivery(t, got, ep("ep-web", "c-web", webLabels)) // a resync before c-db started
	}
	if n := countOf(f.callLog(), "events"); n != 1 {
		t.Errorf("%d subscriptions, want 1: a periodic resync keeps the stream", n)
	}
}

func TestWatcherKeepsTryingWhileDockerIsDown(t *testing.T) {
	f := newFakeDocker()
	f.down = errors.New("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?")
	f.run("c-web", webLabels, map[string]string{"front": "ep-web"})
	r := startWatcher(t, f, nil)
	for range 3 {
		f.nextStream(t) // each attempt subscribes again
	}
	r.none(t)

	// dockerd is back.
	f.mu.Lock()
	f.down = nil
	f.mu.Unlock()
	assertDelivery(t, r.next(t), ep("ep-web", "c-web", webLabels))
}

func TestWatcherWakeCutsTheBackoffShort(t *testing.T) {
	f := newFakeDocker()
	f.down = errors.New("Cannot connect to the Docker daemon")
	f.run("c-web", webLabels, map[string]string{"front": "ep-web"})
	var w *Watcher
	r := startWatcher(t, f, func(tw *Watcher) {
		// A backoff this long would outlast the test: only Wake can end it.
		tw.minBackoff, tw.maxBackoff = time.Hour, time.Hour
		w = tw
	})
	f.nextStream(t) // the first attempt fails; the watcher waits an hour
	f.mu.Lock()
	f.down = nil
	f.mu.Unlock()
	r.none(t)

	w.Wake()
	f.nextStream(t)
	assertDelivery(t, r.next(t), ep("ep-web", "c-web", webLabels))
}
