package netload

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"
)

// PollUntil says what Poll waits for.
type PollUntil string

const (
	// UntilOpen waits for a connect that succeeds.
	UntilOpen PollUntil = "open"
	// UntilClosed waits for a connect that fails (dropped or refused).
	UntilClosed PollUntil = "closed"
)

// PollConfig says how Poll dials.
type PollConfig struct {
	Addr  string
	Until PollUntil
	// Interval between the starts of two attempts; attempts overlap, so
	// the answer's resolution is Interval, not AttemptTimeout.
	Interval time.Duration
	// AttemptTimeout bounds one connect: a SYN that policy drops fails
	// the attempt after this long.
	AttemptTimeout time.Duration
	// Timeout bounds the whole poll.
	Timeout time.Duration
}

// PollResult says when the awaited state was seen.
type PollResult struct {
	// AtUnixNano is, for UntilOpen, when the first successful connect
	// completed; for UntilClosed, when the first attempt of the final run
	// of failures started (its SYN already met the new state).
	AtUnixNano int64 `json:"atUnixNano"`
	Attempts   int   `json:"attempts"`
	// Failure is why the first failed attempt of the final run failed
	// (UntilClosed): a timeout for a dropped SYN, "refused" for a reset.
	Failure string `json:"failure,omitempty"`
}

// ClosedRun is how many failed attempts in a row, after the last success,
// prove a port closed: one failure can be a lost packet or a slow
// machine, not the change awaited.
const ClosedRun = 10

// maxInFlight bounds the attempts that run at once (a dropped SYN holds
// its attempt for AttemptTimeout).
const maxInFlight = 256

// attempt is one connect, numbered in the order attempts started.
type attempt struct {
	seq        int
	start, end time.Time
	ok         bool
	finished   bool
	err        error
}

// Poll dials cfg.Addr every cfg.Interval, each attempt on a new socket
// (hence a new flow for conntrack and policy), until the attempts show
// the awaited state: for UntilOpen one success; for UntilClosed
// ClosedRun failures in a row with no success after them, among all
// attempts started.
func Poll(ctx context.Context, cfg PollConfig) (PollResult, error) {
	if cfg.Until != UntilOpen && cfg.Until != UntilClosed {
		return PollResult{}, fmt.Errorf("poll: until %q: want open or closed", cfg.Until)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	var wg sync.WaitGroup
	// Cancel first, then wait: the attempts still running give up.
	defer wg.Wait()
	defer cancel()

	results := make(chan attempt)
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	var (
		attempts []attempt
		inFlight int
		// draining: a closed run was seen; no new attempt starts until
		// the running ones show whether a success follows it.
		draining bool
	)
	launch := func() {
		seq := len(attempts)
		attempts = append(attempts, attempt{seq: seq})
		inFlight++
		wg.Go(func() {
			a := dialOnce(ctx, cfg.Addr, cfg.AttemptTimeout)
			a.seq = seq
			select {
			case results <- a:
			case <-ctx.Done():
			}
		})
	}
	launch()
	for {
		select {
		case <-ctx.Done():
			return PollResult{Attempts: len(attempts)}, fmt.Errorf("poll %s until %s: not seen in %s (%d attempts)", cfg.Addr, cfg.Until, cfg.Timeout, len(attempts))
		case a := <-results:
			inFlight--
			attempts[a.seq] = a
			if cfg.Until == UntilOpen && a.ok {
				return PollResult{AtUnixNano: a.end.UnixNano(), Attempts: len(attempts)}, nil
			}
			if cfg.Until == UntilClosed {
				first, closed := closedSince(attempts, ClosedRun)
				if closed && inFlight == 0 {
					return PollResult{AtUnixNano: first.start.UnixNano(), Attempts: len(attempts), Failure: first.err.Error()}, nil
				}
				draining = closed
			}
		case <-tick.C:
			// Attempts start on the ticker only, so they come at a
			// steady rate whatever the answers do.
			if !draining && inFlight < maxInFlight {
				launch()
			}
		}
	}
}

// closedSince finds the last successful attempt and checks that the k
// attempts started after it have all finished (so all failed); it returns
// the first of them.
func closedSince(attempts []attempt, k int) (attempt, bool) {
	last := -1
	for _, a := range attempts {
		if a.finished && a.ok {
			last = a.seq
		}
	}
	if last+k >= len(attempts) {
		return attempt{}, false
	}
	for _, a := range attempts[last+1 : last+1+k] {
		if !a.finished {
			return attempt{}, false
		}
	}
	return attempts[last+1], true
}

func dialOnce(ctx context.Context, addr string, timeout time.Duration) attempt {
	a := attempt{start: time.Now(), finished: true}
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	a.end = time.Now()
	if err != nil {
		a.err = err
		return a
	}
	// Reset rather than close: a probe leaves no TIME_WAIT socket
	// behind, so thousands of them cannot use up the ephemeral ports
	// the measured connections need.
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
	a.ok = true
	return a
}
