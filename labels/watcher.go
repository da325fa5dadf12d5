package labels

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
)

// Docker is the part of the Docker API client the Watcher uses.
type Docker interface {
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	ContainerInspect(ctx context.Context, containerID string) (container.InspectResponse, error)
	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)
}

var _ Docker = (*client.Client)(nil)

// EndpointLabels tells the container, and all its labels, behind one
// endpoint.
type EndpointLabels struct {
	EndpointID    string
	ContainerID   string
	ContainerName string // without Docker's leading slash
	// Labels are all the container's labels, unfiltered: its configuration
	// labels, which Docker has already merged with its image's (the
	// container's win). Each EndpointLabels has a map of its own.
	Labels map[string]string
}

// Log attribute keys.
const (
	logKeyContainer  = "container"
	logKeyContainers = "containers"
	logKeyEndpoints  = "endpoints"
	logKeyError      = "error"
	logKeyRetryIn    = "retry_in"
)

// Watcher defaults.
const (
	watchMinBackoff  = 500 * time.Millisecond
	watchMaxBackoff  = 30 * time.Second
	watchResyncEvery = 5 * time.Minute
	watchCallTimeout = 30 * time.Second
)

// Watcher learns the container and the labels of every endpoint from
// Docker's API and event stream, outside of any Docker plugin call (Docker
// may hold locks, or be restarting, while it calls the plugin: asking it
// anything from inside such a call can deadlock).
//
// It follows two events, which between them cover every way an endpoint
// comes to exist on a running container:
//
//   - container "start": Docker creates and joins the container's endpoints
//     before it reports the start (restarts, by hand or by restart policy,
//     report a start too);
//   - network "connect" (the container's ID in the event's "container"
//     attribute): `docker network connect` of a running container adds an
//     endpoint. It also comes for every network at start, which is harmless:
//     deliveries are idempotent.
//
// It follows no others. Labels cannot change after a container is created
// ("update" changes resources, "rename" the name, neither a label); stops,
// disconnects and removals take endpoints away, which the driver learns
// from Docker's own Leave and DeleteEndpoint calls.
//
// Events can be lost (Docker drops events for a subscriber that reads too
// slowly; the stream breaks when Docker restarts), so the Watcher also
// lists and inspects every running container: when the stream is opened,
// each time it is reopened, and every few minutes.
type Watcher struct {
	docker   Docker
	log      *slog.Logger
	onChange func(ctx context.Context, eps []EndpointLabels) error

	minBackoff  time.Duration // first wait before reopening a lost stream
	maxBackoff  time.Duration // longest wait; a session that lasted this long resets the wait
	resyncEvery time.Duration // interval of full resyncs while the stream is up
	callTimeout time.Duration // limit of one Docker API call

	// wake cuts a backoff short: Docker is back (see Wake).
	wake chan struct{}
}

// NewWatcher returns a Watcher that reports to onChange. onChange receives
// the endpoints of every network, not just membrane's: it ignores those it
// does not know. It may receive an endpoint again with the same labels, and
// is never called concurrently with itself. When it returns an error the
// Watcher resyncs everything after a backoff, delivering again what it
// failed to apply.
func NewWatcher(d Docker, log *slog.Logger, onChange func(ctx context.Context, eps []EndpointLabels) error) *Watcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Watcher{
		docker:      d,
		log:         log,
		onChange:    onChange,
		minBackoff:  watchMinBackoff,
		maxBackoff:  watchMaxBackoff,
		resyncEvery: watchResyncEvery,
		callTimeout: watchCallTimeout,
		wake:        make(chan struct{}, 1),
	}
}

// Wake tells the Watcher that Docker is up, for instance because dockerd
// just called the plugin: a Watcher waiting to start over does so at once,
// with its wait reset to the shortest. Without it, a dockerd that was down
// for a while would come back to a Watcher still waiting out a long
// backoff, and the containers it restarts would keep the init identity
// (and its policy) until then. Wake never blocks.
func (w *Watcher) Wake() {
	select {
	case w.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// Run subscribes to Docker's events, then resyncs every running container,
// then follows the events. When the stream is lost, or a resync or onChange
// fails, it waits (doubling the wait each time, from half a second up to 30
// seconds, or until Wake) and starts over. It returns only when ctx is done.
func (w *Watcher) Run(ctx context.Context) {
	delay := w.minBackoff
	for {
		start := time.Now()
		err := w.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) >= w.maxBackoff {
			delay = w.minBackoff
		}
		w.log.Warn("docker labels: starting over", logKeyError, err.Error(), logKeyRetryIn, delay.String())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-w.wake:
			t.Stop()
			delay = w.minBackoff
			continue
		case <-t.C:
		}
		delay = min(2*delay, w.maxBackoff)
	}
}

// session follows one event stream until it breaks or something fails.
func (w *Watcher) session(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // closes the stream
	msgs, errs := w.docker.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("type", string(events.NetworkEventType)),
		filters.Arg("event", string(events.ActionStart)),
		filters.Arg("event", string(events.ActionConnect)),
	)})
	// Subscribed first: whatever starts during the resync is in the
	// stream, and is looked at again after it.
	if err := w.resync(ctx, slog.LevelInfo); err != nil {
		return err
	}
	ticker := time.NewTicker(w.resyncEvery)
	defer ticker.Stop()

	var pending []string
	add := func(m events.Message) {
		if id, ok := containerOf(m); ok && !slices.Contains(pending, id) {
			pending = append(pending, id)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err, ok := <-errs:
			if !ok || err == nil {
				err = errors.New("stream closed")
			}
			return fmt.Errorf("docker events: %w", err)
		case <-ticker.C:
			if err := w.resync(ctx, slog.LevelDebug); err != nil {
				return err
			}
			continue
		case m := <-msgs:
			add(m)
		}
		// Take what else is waiting, so that a burst (a compose project
		// starting) is inspected and delivered as one batch.
	drain:
		for {
			select {
			case m := <-msgs:
				add(m)
			default:
				break drain
			}
		}
		if len(pending) == 0 {
			continue
		}
		err := w.update(ctx, pending)
		pending = pending[:0]
		if err != nil {
			return err
		}
	}
}

// containerOf returns the container an event is about, if it is one the
// Watcher follows.
func containerOf(m events.Message) (string, bool) {
	var id string
	switch {
	case m.Type == events.ContainerEventType && m.Action == events.ActionStart:
		id = m.Actor.ID
	case m.Type == events.NetworkEventType && m.Action == events.ActionConnect:
		id = m.Actor.Attributes["container"]
	}
	return id, id != ""
}

// resync delivers the endpoints of every running container, and logs how
// many at level. A container that cannot be inspected is logged and
// skipped.
func (w *Watcher) resync(ctx context.Context, level slog.Level) error {
	listCtx, cancel := context.WithTimeout(ctx, w.callTimeout)
	list, err := w.docker.ContainerList(listCtx, container.ListOptions{})
	cancel()
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	var eps []EndpointLabels
	for _, c := range list {
		got, err := w.inspect(ctx, c.ID)
		if err != nil {
			w.logInspectError(c.ID, err)
			continue
		}
		eps = append(eps, got...)
	}
	w.log.Log(ctx, level, "docker labels: resynced", logKeyContainers, len(list), logKeyEndpoints, len(eps))
	return w.deliver(ctx, eps)
}

// update delivers the endpoints of the containers events named. A
// container that vanished in the meantime is skipped; any other inspect
// error fails the update, so that the session starts over with a resync.
func (w *Watcher) update(ctx context.Context, ids []string) error {
	var eps []EndpointLabels
	for _, id := range ids {
		got, err := w.inspect(ctx, id)
		if cerrdefs.IsNotFound(err) {
			w.logInspectError(id, err)
			continue
		}
		if err != nil {
			return fmt.Errorf("inspect container %s: %w", id, err)
		}
		eps = append(eps, got...)
	}
	return w.deliver(ctx, eps)
}

func (w *Watcher) deliver(ctx context.Context, eps []EndpointLabels) error {
	if len(eps) == 0 {
		return nil
	}
	slices.SortFunc(eps, func(a, b EndpointLabels) int { return strings.Compare(a.EndpointID, b.EndpointID) })
	if err := w.onChange(ctx, eps); err != nil {
		return fmt.Errorf("apply labels of %d endpoints: %w", len(eps), err)
	}
	return nil
}

func (w *Watcher) logInspectError(id string, err error) {
	if cerrdefs.IsNotFound(err) {
		w.log.Debug("docker labels: container gone before it was inspected", logKeyContainer, id)
		return
	}
	w.log.Warn("docker labels: container skipped", logKeyContainer, id, logKeyError, err.Error())
}

// inspect returns the endpoints of one container, with its labels.
func (w *Watcher) inspect(ctx context.Context, id string) ([]EndpointLabels, error) {
	ctx, cancel := context.WithTimeout(ctx, w.callTimeout)
	defer cancel()
	c, err := w.docker.ContainerInspect(ctx, id)
	if err != nil {
		return nil, err
	}
	var name string
	if c.ContainerJSONBase != nil {
		if c.ID != "" {
			id = c.ID
		}
		name = strings.TrimPrefix(c.Name, "/")
	}
	if c.NetworkSettings == nil {
		return nil, nil
	}
	var all map[string]string
	if c.Config != nil {
		all = c.Config.Labels
	}
	var eps []EndpointLabels
	for _, n := range c.NetworkSettings.Networks {
		if n == nil || n.EndpointID == "" {
			continue
		}
		l := maps.Clone(all)
		if l == nil {
			l = map[string]string{}
		}
		eps = append(eps, EndpointLabels{EndpointID: n.EndpointID, ContainerID: id, ContainerName: name, Labels: l})
	}
	return eps, nil
}
