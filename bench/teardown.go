package bench

import (
	"fmt"
	"io"
)

// teardown undoes the setup in reverse order. Each step is registered
// right after the thing it removes was created, so a setup that fails
// halfway is undone as far as it got.
type teardown struct {
	steps []teardownStep
	log   io.Writer
}

type teardownStep struct {
	name string
	fn   func() error
}

func (t *teardown) add(name string, fn func() error) {
	t.steps = append(t.steps, teardownStep{name, fn})
}

// run runs every step, last first, and reports the ones that failed; a
// failed step does not stop the others.
func (t *teardown) run() {
	for i := len(t.steps) - 1; i >= 0; i-- {
		s := t.steps[i]
		if err := s.fn(); err != nil {
			fmt.Fprintf(t.log, "bench: teardown: %s: %v\n", s.name, err)
		}
	}
	t.steps = nil
}
